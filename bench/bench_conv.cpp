// conv2d throughput at the LeNet-5 and convnet layer shapes (batch 64), forward, backward-data
// and backward-weights, next to measured sgemm ceilings on 1 and 2 threads.
//   bench_conv [--repeats N] [--min-time S] [--threads T] [--only LAYER] [--pass 0|1|2]
//              [--cpu-time 1]
// --cpu-time 1 times with process CPU time divided by the thread count instead of wall time: on
// a loaded machine it approximates the figure the code would reach alone (but hides idle waits).
// Each figure is the median of N timed runs; a run repeats the call for at least min-time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include <omp.h>

#include <xgrad/blas.hpp>
#include <xgrad/xgrad.hpp>

using namespace xgrad;

namespace {

struct Layer {
  const char* name;
  int n, c, h, w, co, k, pad;
};

bool g_cpu_time = false;
int g_threads = 1;
double g_last_best = 0;  // the fastest run of the last median_seconds(): shows how noisy it was

double now() {
  if (!g_cpu_time)
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec)) / g_threads;
}

// Median seconds per call of f over `repeats` runs of at least `min_time` seconds each.
template <class F>
double median_seconds(F&& f, int repeats, double min_time) {
  f();  // warm caches, thread pools and scratch buffers
  int iters = 1;
  for (;;) {
    const double t0 = now();
    for (int i = 0; i < iters; ++i) f();
    const double s = now() - t0;
    if (s >= min_time || iters >= (1 << 20)) break;
    iters = s <= 0 ? iters * 16 : std::max(iters * 2, int(iters * 1.2 * min_time / s));
  }
  std::vector<double> runs;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now();
    for (int i = 0; i < iters; ++i) f();
    runs.push_back((now() - t0) / iters);
  }
  std::sort(runs.begin(), runs.end());
  g_last_best = runs.front();
  return runs[runs.size() / 2];
}

std::vector<float> random_vector(std::size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Tensor<float> random_tensor(const Shape& shape, std::mt19937_64& rng) {
  Tensor<float> t = empty_tensor<float>(shape);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (float& x : t) x = d(rng);
  return t;
}

// `threads` independent m×n×k sgemms, one per thread, each repeated `calls` times (beta = 1):
// the aggregate GFLOP/s is the ceiling for per-thread GEMMs of that shape.
double sgemm_gflops(int threads, int m, int n, int k, int calls, int repeats, double min_time) {
  std::mt19937_64 rng(1);
  std::vector<std::vector<float>> a(threads), b(threads), c(threads);
  for (int t = 0; t < threads; ++t) {
    a[t] = random_vector(std::size_t(m) * k, rng);
    b[t] = random_vector(std::size_t(k) * n, rng);
    c[t] = std::vector<float>(std::size_t(m) * n, 0.0f);
  }
  const double s = median_seconds(
      [&] {
#pragma omp parallel num_threads(threads)
        {
          const int t = omp_get_thread_num();
          for (int i = 0; i < calls; ++i)
            blas::gemm(false, false, m, n, k, 1.0f, a[t].data(), k, b[t].data(), n, 1.0f,
                       c[t].data(), n);
        }
      },
      repeats, min_time);
  return 2.0 * m * n * k * calls * threads / s * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  setup_process(argc, argv);
  int repeats = 7;
  double min_time = 0.05;
  int only_threads = 0;
  int only_pass = -1;  // for profiling: 0 fwd, 1 bwd_data, 2 bwd_weights; skips the ceilings
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--min-time")) min_time = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) only_threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    if (!std::strcmp(argv[i], "--pass")) only_pass = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--cpu-time")) g_cpu_time = std::atoi(argv[i + 1]) != 0;
  }
  std::printf("%s\n", runtime_banner().c_str());
  std::printf("%s; ", g_cpu_time ? "CPU time / threads" : "wall time");
  std::printf("median of %d runs; GFLOP/s = 2·N·C_out·Ho·Wo·C_in·kH·kW / time\n", repeats);

  const Layer layers[] = {{"lenet_conv1", 64, 1, 28, 28, 6, 5, 2},
                          {"lenet_conv2", 64, 6, 14, 14, 16, 5, 0},
                          {"convnet_conv1", 64, 1, 28, 28, 32, 3, 0},
                          {"convnet_conv2", 64, 32, 26, 26, 64, 3, 0}};
  const int max_threads = std::max(1, std::min(2, omp_get_num_procs()));
  std::vector<std::string> lines;
  for (int threads = 1; threads <= max_threads; ++threads) {
    if (only_threads > 0 && threads != only_threads) continue;
    set_num_threads(threads);
    g_threads = threads;
    const double peak =
        only_pass >= 0 ? 1 : sgemm_gflops(threads, 1024, 1024, 1024, 1, repeats, min_time);
    std::printf("\n-- %d thread%s: sgemm 1024^3 ceiling %.1f GFLOP/s (%d independent)\n", threads,
                threads > 1 ? "s" : "", peak, threads);
    std::printf("%-16s %-12s %9s %10s %14s %12s %9s\n", "layer", "pass", "GFLOP/s", "% sgemm",
                "layer-GEMM GF", "% layer-GEMM", "best GF/s");
    char buf[256];
    std::snprintf(buf, sizeof buf, "bench sgemm_1024_%dt gflops=%.1f", threads, peak);
    lines.push_back(buf);
    for (const Layer& L : layers) {
      if (!only.empty() && only != L.name) continue;
      const int ho = L.h + 2 * L.pad - L.k + 1, wo = L.w + 2 * L.pad - L.k + 1;
      const int kk = L.c * L.k * L.k, l = ho * wo;
      const double flops = 2.0 * L.n * L.co * l * kk;
      // The GEMM a conv forward runs per image, alone (no im2col), images split over threads.
      const double layer_gemm =
          sgemm_gflops(threads, L.co, l, kk, L.n / threads, repeats, min_time);
      std::mt19937_64 rng(7);
      const Tensor<float> xv = random_tensor(
          {std::size_t(L.n), std::size_t(L.c), std::size_t(L.h), std::size_t(L.w)}, rng);
      const Tensor<float> wv = random_tensor(
          {std::size_t(L.co), std::size_t(L.c), std::size_t(L.k), std::size_t(L.k)}, rng);
      const Tensor<float> bv = random_tensor({std::size_t(L.co)}, rng);
      Conv2DParams p;
      p.padding = {L.pad, L.pad};
      const Tensor<float> gy = random_tensor(
          {std::size_t(L.n), std::size_t(L.co), std::size_t(ho), std::size_t(wo)}, rng);

      double seconds[3] = {1, 1, 1}, best[3] = {1, 1, 1};
      {
        Variable<float> x(xv), w(wv), b(bv);
        NoGradGuard no_grad;
        if (only_pass < 0 || only_pass == 0) {
          seconds[0] = median_seconds([&] { conv2d(x, w, b, p); }, repeats, min_time);
          best[0] = g_last_best;
        }
      }
      {  // backward-data: only x needs a gradient
        Variable<float> x(xv, true), w(wv), b(bv);
        const Variable<float> y = conv2d(x, w, b, p);
        if (only_pass < 0 || only_pass == 1) {
          seconds[1] = median_seconds([&] { y.grad_fn()->backward(gy); }, repeats, min_time);
          best[1] = g_last_best;
        }
      }
      {  // backward-weights: dW and db, the input needs none
        Variable<float> x(xv), w(wv, true), b(bv, true);
        const Variable<float> y = conv2d(x, w, b, p);
        if (only_pass < 0 || only_pass == 2) {
          seconds[2] = median_seconds([&] { y.grad_fn()->backward(gy); }, repeats, min_time);
          best[2] = g_last_best;
        }
      }
      const char* passes[] = {"fwd", "bwd_data", "bwd_weights"};
      for (int i = 0; i < 3; ++i) {
        const double gf = flops / seconds[i] * 1e-9, gf_best = flops / best[i] * 1e-9;
        std::printf("%-16s %-12s %9.1f %9.1f%% %14.1f %11.1f%% %9.1f\n", L.name, passes[i], gf,
                    100 * gf / peak, layer_gemm, 100 * gf / layer_gemm, gf_best);
        std::snprintf(buf, sizeof buf,
                      "bench conv_%s_%s_%dt gflops=%.1f pct_of_sgemm=%.1f pct_of_layer_gemm=%.1f "
                      "best_gflops=%.1f",
                      L.name, passes[i], threads, gf, 100 * gf / peak, 100 * gf / layer_gemm,
                      gf_best);
        lines.push_back(buf);
      }
    }
  }
  std::printf("\n");
  for (const std::string& s : lines) std::printf("%s\n", s.c_str());
  return 0;
}
