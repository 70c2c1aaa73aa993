// conv2d throughput at the LeNet-5 and convnet layer shapes (batch 64), forward, backward-data
// and backward-weights, next to measured sgemm ceilings on 1 and 2 threads.
//   bench_conv [--repeats N] [--min-time S] [--threads T] [--only LAYER] [--pass 0|1|2]
//              [--cpu-time 1] [--ceiling 1] [--round-trip 1] [--help]
// --cpu-time 1 times with process CPU time divided by the thread count instead of wall time: on
// a loaded machine it approximates the figure the code would reach alone (but hides idle waits).
// Each figure is the median of N timed runs; a run repeats the call for at least min-time. A pass's
// "% sgemm" is the median of its runs' shares of the sgemm ceiling, each against a ceiling run
// made just before it, so that the machine's drift does not enter the share.
// --round-trip 1 only times how long one cache line takes to go from one CPU to another and back
// (two threads pinned to the first two CPUs the process may use, passing a counter): on this
// project's VM it shows where the hypervisor has put the two vCPUs, which changes within minutes
// (130 ns for two cores close together, 430-520 ns as far apart as two dies).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <CLI/CLI.hpp>

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

// Calls of f that take at least min_time together (after one warm-up call).
template <class F>
int calibrate(F&& f, double min_time) {
  f();  // warm caches, thread pools and scratch buffers
  int iters = 1;
  for (;;) {
    const double t0 = now();
    for (int i = 0; i < iters; ++i) f();
    const double s = now() - t0;
    if (s >= min_time || iters >= (1 << 20)) return iters;
    iters = s <= 0 ? iters * 16 : std::max(iters * 2, int(iters * 1.2 * min_time / s));
  }
}

// Seconds per call over one timed run of `iters` calls.
template <class F>
double time_run(F&& f, int iters) {
  const double t0 = now();
  for (int i = 0; i < iters; ++i) f();
  return (now() - t0) / iters;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds per call of f over `repeats` runs of `iters` calls each.
template <class F>
double median_seconds_at(F&& f, int iters, int repeats) {
  std::vector<double> runs;
  for (int r = 0; r < repeats; ++r) runs.push_back(time_run(f, iters));
  g_last_best = *std::min_element(runs.begin(), runs.end());
  return median(runs);
}

// The same over runs of at least `min_time` seconds each.
template <class F>
double median_seconds(F&& f, int repeats, double min_time) {
  return median_seconds_at(f, calibrate(f, min_time), repeats);
}

// `threads` independent m×n×k sgemms, one per thread, each repeated `calls` times (beta = 1):
// the aggregate GFLOP/s is the ceiling for per-thread GEMMs of that shape.
class SgemmLoad {
 public:
  SgemmLoad(int threads, int m, int n, int k, int calls)
      : threads_(threads),
        m_(m),
        n_(n),
        k_(k),
        calls_(calls),
        a_(threads),
        b_(threads),
        c_(threads) {
    std::mt19937_64 rng(1);
    for (int t = 0; t < threads; ++t) {
      a_[t] = random_vector(std::size_t(m) * k, rng);
      b_[t] = random_vector(std::size_t(k) * n, rng);
      c_[t] = std::vector<float>(std::size_t(m) * n, 0.0f);
    }
  }
  void operator()() {
#pragma omp parallel num_threads(threads_)
    {
      const int t = omp_get_thread_num();
      for (int i = 0; i < calls_; ++i)
        blas::gemm(false, false, m_, n_, k_, 1.0f, a_[t].data(), k_, b_[t].data(), n_, 1.0f,
                   c_[t].data(), n_);
    }
  }
  double flops() const {
    return 2.0 * m_ * n_ * k_ * calls_ * threads_;
  }

 private:
  static std::vector<float> random_vector(std::size_t n, std::mt19937_64& rng) {
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
  }
  int threads_, m_, n_, k_, calls_;
  std::vector<std::vector<float>> a_, b_, c_;
};

double sgemm_gflops(int threads, int m, int n, int k, int calls, int repeats, double min_time) {
  SgemmLoad load(threads, m, n, k, calls);
  return load.flops() / median_seconds(load, repeats, min_time) * 1e-9;
}

// A pass timed against the sgemm ceiling: each of the `repeats` runs of the pass follows a run of
// the ceiling, and the pass's share of the ceiling is the median of the per-run shares. On a VM
// whose speed drifts by up to 2x within minutes, a ceiling measured once at the start would make
// the share depend on when each pass happened to run.
struct PairedTiming {
  double seconds = 1;  ///< median seconds per call of the pass
  double best = 1;     ///< fastest run's seconds per call
  double share = 0;    ///< median over runs of (pass GFLOP/s) / (ceiling GFLOP/s of the run before)
};

template <class F>
PairedTiming time_against_ceiling(F&& pass, double pass_flops, SgemmLoad& ceiling,
                                  int ceiling_iters, int repeats, double min_time) {
  const int iters = calibrate(pass, min_time);
  std::vector<double> runs, shares;
  for (int r = 0; r < repeats; ++r) {
    const double ceiling_seconds = time_run(ceiling, ceiling_iters);
    runs.push_back(time_run(pass, iters));
    shares.push_back((pass_flops / runs.back()) / (ceiling.flops() / ceiling_seconds));
  }
  PairedTiming t;
  t.seconds = median(runs);
  t.best = *std::min_element(runs.begin(), runs.end());
  t.share = median(shares);
  return t;
}

Tensor<float> random_tensor(const Shape& shape, std::mt19937_64& rng) {
  Tensor<float> t = empty_tensor<float>(shape);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (float& x : t) x = d(rng);
  return t;
}

// The conv layers of LeNet-5 and the convnet, at batch 64.
constexpr Layer kLayers[] = {{"lenet_conv1", 64, 1, 28, 28, 6, 5, 2},
                             {"lenet_conv2", 64, 6, 14, 14, 16, 5, 0},
                             {"convnet_conv1", 64, 1, 28, 28, 32, 3, 0},
                             {"convnet_conv2", 64, 32, 26, 26, 64, 3, 0}};

// Pins the calling thread to `cpu`; false if it may not run there.
bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

// The median over `repeats` runs of the nanoseconds one cache line takes to go from the first CPU
// this process may use to the second and back: two pinned threads take turns to increment one
// counter, 20,000 times or for 0.2 s (on a busy machine a thread may wait for its CPU), whichever
// ends first; -1 marks the end. Negative with fewer than two CPUs.
double cache_line_round_trip_ns(int repeats) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu)
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  if (cpus.size() < 2) return -1;
  constexpr long kTrips = 20000;
  constexpr double kMaxSeconds = 0.2;
  alignas(64) std::atomic<long> counter{0};
  std::vector<double> runs;
  for (int r = 0; r < repeats; ++r) {
    counter.store(0);
    std::thread other([&] {
      pin_to(cpus[1]);
      for (long i = 0;; ++i) {
        for (long seen; (seen = counter.load(std::memory_order_acquire)) != 2 * i + 1;)
          if (seen < 0) return;
        counter.store(2 * i + 2, std::memory_order_release);
      }
    });
    std::thread self([&] {
      pin_to(cpus[0]);
      const auto start = std::chrono::steady_clock::now();
      const auto seconds = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      long trips = 0;
      while (trips < kTrips && (trips % 256 != 0 || trips == 0 || seconds() < kMaxSeconds)) {
        counter.store(2 * trips + 1, std::memory_order_release);
        while (counter.load(std::memory_order_acquire) != 2 * trips + 2) {
        }
        ++trips;
      }
      runs.push_back(seconds() * 1e9 / double(trips));
      counter.store(-1, std::memory_order_release);
    });
    self.join();
    other.join();
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  setup_process(argc, argv);
  int repeats = 7;
  double min_time = 0.05;
  int only_threads = 0;
  int only_pass = -1;         // for profiling: 0 fwd, 1 bwd_data, 2 bwd_weights; skips the ceilings
  bool ceiling_only = false;  // the sgemm ceiling alone (run_bench's reference for 1 -> 2 threads)
  bool round_trip_only = false;  // a cache line's round trip between two CPUs alone
  std::string only;
  std::vector<std::string> layer_names;
  for (const Layer& L : kLayers) layer_names.push_back(L.name);
  const int max_threads = std::max(1, std::min(2, omp_get_num_procs()));
  CLI::App app{
      "conv2d GFLOP/s at the LeNet-5 and convnet layer shapes (batch 64): forward, "
      "backward-data and backward-weights, against the sgemm ceiling",
      "bench_conv"};
  app.add_option("--repeats", repeats, "Timed runs per figure; the median is reported")
      ->check(CLI::Range(1, 10000));
  app.add_option("--min-time", min_time, "Seconds each timed run lasts at least")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", only_threads,
                 "Only this thread count (0: 1 and 2; any count with --ceiling 1)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--only", only, "Only this layer")->check(CLI::IsMember(layer_names));
  app.add_option("--pass", only_pass,
                 "Only this pass, without the ceilings (for profiling): 0 forward, 1 "
                 "backward-data, 2 backward-weights")
      ->check(CLI::Range(0, 2));
  app.add_option("--cpu-time", g_cpu_time,
                 "1: time with the process's CPU time divided by the threads instead of wall "
                 "time (on a loaded machine, near the figure the code would reach alone)");
  app.add_option("--ceiling", ceiling_only, "1: only the sgemm ceiling, on --threads threads");
  app.add_option("--round-trip", round_trip_only,
                 "1: only the nanoseconds a cache line takes from one CPU to another and back");
  try {
    app.parse(argc, argv);
    if (!ceiling_only && only_threads > max_threads)
      throw CLI::ValidationError("--threads", std::to_string(only_threads) +
                                                  ": the layers are measured on 1 to " +
                                                  std::to_string(max_threads) + " threads here");
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "bench_conv: error: %s (see --help)\n", e.what());
    return 2;
  }
  if (round_trip_only) {
    const double ns = cache_line_round_trip_ns(repeats);
    if (ns < 0)
      std::printf("one CPU: no cache line round trip to time\n");
    else
      std::printf("bench cache_line_round_trip_ns=%.0f\n", ns);
    return 0;
  }
  if (ceiling_only) {
    const int threads = std::max(1, only_threads);
    set_num_threads(threads);
    SgemmLoad ceiling(threads, 1024, 1024, 1024, 1);
    const double seconds = median_seconds(ceiling, repeats, min_time);
    std::printf("bench sgemm_1024_%dt gflops=%.1f\n", threads, ceiling.flops() / seconds * 1e-9);
    return 0;
  }
  std::printf("%s\n", runtime_banner().c_str());
  std::printf("%s; ", g_cpu_time ? "CPU time / threads" : "wall time");
  std::printf("median of %d runs; GFLOP/s = 2·N·C_out·Ho·Wo·C_in·kH·kW / time\n", repeats);

  std::vector<std::string> lines;
  for (int threads = 1; threads <= max_threads; ++threads) {
    if (only_threads > 0 && threads != only_threads) continue;
    set_num_threads(threads);
    g_threads = threads;
    // The ceiling: one 1024^3 sgemm per thread. Its median is printed; each pass's share of it is
    // taken against the ceiling run just before each of the pass's runs (time_against_ceiling).
    SgemmLoad ceiling(threads, 1024, 1024, 1024, 1);
    const int ceiling_iters = only_pass >= 0 ? 0 : calibrate(ceiling, min_time);
    const double peak =
        only_pass >= 0
            ? 1
            : ceiling.flops() / median_seconds_at(ceiling, ceiling_iters, repeats) * 1e-9;
    if (only_pass >= 0)
      std::printf("\n-- %d thread%s (no sgemm ceiling with --pass)\n", threads,
                  threads > 1 ? "s" : "");
    else
      std::printf("\n-- %d thread%s: sgemm 1024^3 ceiling %.1f GFLOP/s (%d independent)\n", threads,
                  threads > 1 ? "s" : "", peak, threads);
    std::printf("%-16s %-12s %9s %10s %14s %12s %9s\n", "layer", "pass", "GFLOP/s", "% sgemm",
                "layer-GEMM GF", "% layer-GEMM", "best GF/s");
    char buf[256];
    if (only_pass < 0) {
      std::snprintf(buf, sizeof buf, "bench sgemm_1024_%dt gflops=%.1f", threads, peak);
      lines.push_back(buf);
    }
    for (const Layer& L : kLayers) {
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

      PairedTiming timing[3];
      const auto measure = [&](int pass, auto&& f) {
        if (only_pass >= 0 && only_pass != pass) return;
        if (only_pass >= 0) {  // profiling: the pass alone
          timing[pass].seconds = median_seconds(f, repeats, min_time);
          timing[pass].best = g_last_best;
        } else {
          timing[pass] = time_against_ceiling(f, flops, ceiling, ceiling_iters, repeats, min_time);
        }
      };
      {
        Variable<float> x(xv), w(wv), b(bv);
        NoGradGuard no_grad;
        measure(0, [&] { conv2d(x, w, b, p); });
      }
      {  // backward-data: only x needs a gradient
        Variable<float> x(xv, true), w(wv), b(bv);
        const Variable<float> y = conv2d(x, w, b, p);
        measure(1, [&] { y.grad_fn()->backward(gy); });
      }
      {  // backward-weights: dW and db, the input needs none
        Variable<float> x(xv), w(wv, true), b(bv, true);
        const Variable<float> y = conv2d(x, w, b, p);
        measure(2, [&] { y.grad_fn()->backward(gy); });
      }
      const char* passes[] = {"fwd", "bwd_data", "bwd_weights"};
      for (int i = 0; i < 3; ++i) {
        if (only_pass >= 0 && i != only_pass) continue;
        const double gf = flops / timing[i].seconds * 1e-9;
        const double gf_best = flops / timing[i].best * 1e-9;
        // With --pass there is no ceiling, so no share of it ("-", and no pct_of_sgemm).
        char pct[32] = "-";
        char pct_field[48] = "";
        if (only_pass < 0) {
          std::snprintf(pct, sizeof pct, "%.1f%%", 100 * timing[i].share);
          std::snprintf(pct_field, sizeof pct_field, " pct_of_sgemm=%.1f", 100 * timing[i].share);
        }
        std::printf("%-16s %-12s %9.1f %10s %14.1f %11.1f%% %9.1f\n", L.name, passes[i], gf, pct,
                    layer_gemm, 100 * gf / layer_gemm, gf_best);
        std::snprintf(buf, sizeof buf,
                      "bench conv_%s_%s_%dt gflops=%.1f%s pct_of_layer_gemm=%.1f best_gflops=%.1f",
                      L.name, passes[i], threads, gf, pct_field, 100 * gf / layer_gemm, gf_best);
        lines.push_back(buf);
      }
    }
  }
  std::printf("\n");
  for (const std::string& s : lines) std::printf("%s\n", s.c_str());
  return 0;
}
