// linear: y = x·wᵀ + b through BLAS.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

#include <strings.h>

#include "../src/linear_blocks.hpp"
#include "xgrad/blas.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"
#include "xgrad/runtime.hpp"

namespace xgrad {

namespace detail {

// OpenBLAS's small-matrix sgemm (in its SkylakeX, Cooperlake and SapphireRapids kernels)
// multiplies straight from the operands, without packing them first; it takes a product when, in
// its column-major terms, M·N·K <= 10^6, and one transposed like linear's forward (TN there) only
// when C has at most 1200 elements and K >= 32 (sgemm_small_kernel_permit_skylakex.c). For
// LeNet-5's fc1 (400 -> 120) the forward at 16 rows is past that limit: OpenBLAS packs the 192 KB
// weight and takes 20 us, against 4.7 us for 8 rows in the small kernel (1 thread, medians of 21;
// the backward-data is past it from 24 rows). So a forward or backward-data product that the small
// kernel does not take is cut into nearly equal row blocks that it does. Measured on the Zen 5
// EPYC with the SkylakeX core (one call / blocks, us): fc1 forward at 16, 24, 32, 48, 64 rows
// 20.0 / 11.5, 23.1 / 17.0, 31.8 / 22.2, 37.2 / 36.4, 48.1 / 49.9; its backward-data at 24, 32,
// 48, 64, 96 rows 17.5 / 14.1, 25.4 / 18.6, 30.0 / 27.8, 40.7 / 36.4, 56.3 / 60.2. Each block
// reads the whole weight, so beyond 4 blocks the packed call wins, and a small weight packs
// cheaply: fc2 (120 -> 84, 40 KB) gained 1.2 us at 16 rows and lost 0.6-3.2 at 32-64. Hence at
// most 4 blocks, and weights of 64 KB or more.
constexpr int kMaxSmallKernelBlocks = 4;
constexpr double kMinBlockedWeightBytes = 64.0 * 1024.0;

int linear_block_rows(bool trans_b, int m, int n, int k, bool small_matrix_sgemm) {
  if (!small_matrix_sgemm || m <= 1 ||
      double(n) * double(k) * sizeof(float) < kMinBlockedWeightBytes)
    return m;
  double rows = 1e6 / (double(n) * double(k));  // M·N·K <= 10^6
  if (trans_b) {
    if (k < 32) return m;
    rows = std::min(rows, 1200.0 / double(n));  // C of at most 1200 elements
  }
  const int block = int(rows);
  if (block < 1 || block >= m || (m + block - 1) / block > kMaxSmallKernelBlocks) return m;
  return block;
}

namespace {
std::atomic<int> g_forced_blocks{-1};
}  // namespace

void set_linear_small_matrix_blocks(int forced) {
  g_forced_blocks.store(forced < 0 ? -1 : forced > 0 ? 1 : 0);
}

}  // namespace detail

namespace {

// Whether this process's OpenBLAS core has the small-matrix sgemm kernels (linear_block_rows).
bool small_matrix_sgemm() {
  const int forced = detail::g_forced_blocks.load();
  if (forced >= 0) return forced == 1;
  static const bool has = [] {
    const std::string core = blas_core_name();
    for (const char* name : {"SkylakeX", "Cooperlake", "SapphireRapids"})
      if (strcasecmp(core.c_str(), name) == 0) return true;
    return false;
  }();
  return has;
}

// C = alpha·op(A)·op(B) + beta·C, split over the OpenMP threads when the product is big enough to
// pay for a parallel region (OpenBLAS itself stays single-threaded). Each thread packs the whole of
// the operand it shares, so the split goes along the other one: C's columns when op(A) (m×k) is
// the smaller operand, else C's rows. (LeNet's fc1 at batch 64 splits columns, so its 400×120
// weight is packed once instead of by both threads; training speed measured the same within noise.)
template <class T>
void gemm_parallel(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
                   int ldb, T beta, T* c, int ldc) {
  const double work = double(m) * double(n) * double(k);
  const bool by_columns = m < n;
  const int side = by_columns ? n : m;
  int parts = 1;
  if (work >= double(1 << 18)) parts = std::min(num_threads(), std::max(1, side / 8));
  if (parts <= 1) {
    const int block = ta || !std::is_same_v<T, float>
                          ? m
                          : detail::linear_block_rows(tb, m, n, k, small_matrix_sgemm());
    if (block >= m) {
      blas::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
    }
    // Nearly equal blocks of at most `block` rows; row i of A (not transposed) starts at
    // a + i·lda, and of C at c + i·ldc.
    const int blocks = (m + block - 1) / block;
    for (int i = 0; i < blocks; ++i) {
      const int r0 = int(std::int64_t(m) * i / blocks),
                r1 = int(std::int64_t(m) * (i + 1) / blocks);
      blas::gemm(ta, tb, r1 - r0, n, k, alpha, a + std::ptrdiff_t(r0) * lda, lda, b, ldb, beta,
                 c + std::ptrdiff_t(r0) * ldc, ldc);
    }
    return;
  }
#pragma omp parallel for schedule(static) num_threads(parts)
  for (int part = 0; part < parts; ++part) {
    const int r0 = int(std::int64_t(side) * part / parts),
              r1 = int(std::int64_t(side) * (part + 1) / parts);
    if (r1 <= r0) continue;
    if (by_columns) {
      // Column j of op(B) starts at b + j·ldb when B is stored transposed, else at b + j.
      const T* bp = tb ? b + std::ptrdiff_t(r0) * ldb : b + r0;
      blas::gemm(ta, tb, m, r1 - r0, k, alpha, a, lda, bp, ldb, beta, c + r0, ldc);
    } else {
      // Row i of op(A) starts at a + i·lda, or at a + i when A is stored transposed.
      const T* ap = ta ? a + r0 : a + std::ptrdiff_t(r0) * lda;
      blas::gemm(ta, tb, r1 - r0, n, k, alpha, ap, lda, b, ldb, beta, c + std::ptrdiff_t(r0) * ldc,
                 ldc);
    }
  }
}

template <class T>
struct LinearNode final : Node<T> {
  const char* name() const override { return "linear"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& x = this->input_value(0);
    const Tensor<T>& w = this->input_value(1);
    const int n = int(x.shape(0)), in = int(x.shape(1)), out = int(w.shape(0));
    const bool empty = n == 0 || in == 0 || out == 0;
    std::vector<Tensor<T>> grads(this->num_inputs(), no_grad<T>());
    if (this->needs_input_grad(0)) {  // dx = g·w: [N,out]·[out,in]
      // beta = 0 overwrites: no zero fill needed unless the product is empty.
      grads[0] = empty ? filled_tensor<T>(shape_of(x), T(0)) : empty_tensor<T>(shape_of(x));
      if (!empty)
        gemm_parallel(false, false, n, in, out, T(1), g.data(), out, w.data(), in, T(0),
                      grads[0].data(), in);
    }
    if (this->needs_input_grad(1)) {  // dw = gᵀ·x: [out,N]·[N,in]
      grads[1] = empty ? filled_tensor<T>(shape_of(w), T(0)) : empty_tensor<T>(shape_of(w));
      if (!empty)
        gemm_parallel(true, false, out, in, n, T(1), g.data(), out, x.data(), in, T(0),
                      grads[1].data(), in);
    }
    if (this->num_inputs() == 3 && this->needs_input_grad(2)) {  // db = Σ_n g[n, :]
      grads[2] = filled_tensor<T>({std::size_t(out)}, T(0));
      T* db = grads[2].data();
      const T* gp = g.data();
      for (int r = 0; r < n; ++r)
        for (int o = 0; o < out; ++o) db[o] += gp[std::size_t(r) * std::size_t(out) + o];
    }
    return grads;
  }
};

}  // namespace

template <class T>
Variable<T> linear(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b) {
  const auto shapes = [&] {
    return " (x " + shape_str(x.shape()) + ", w " + shape_str(w.shape()) +
           (b.defined() ? ", b " + shape_str(b.shape()) : std::string()) + ")";
  };
  if (x.dim() != 2) throw Error("linear: x must have rank 2 [N, in]" + shapes());
  if (w.dim() != 2) throw Error("linear: w must have rank 2 [out, in]" + shapes());
  const Tensor<T>& xv = x.value();
  const Tensor<T>& wv = w.value();
  const std::size_t n = xv.shape(0), in = xv.shape(1), out = wv.shape(0);
  if (wv.shape(1) != in)
    throw Error("linear: x has " + std::to_string(in) + " features but w expects " +
                std::to_string(wv.shape(1)) + shapes());
  if (b.defined() && (b.dim() != 1 || b.value().shape(0) != out))
    throw Error("linear: b must have shape [" + std::to_string(out) + "]" + shapes());
  Tensor<T> y = empty_tensor<T>({n, out});
  T* yp = y.data();
  // Seed y with the bias and accumulate the product onto it (beta = 1).
  if (b.defined()) {
    const T* bp = b.value().data();
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t o = 0; o < out; ++o) yp[r * out + o] = bp[o];
  } else {
    y.fill(T(0));
  }
  if (n > 0 && in > 0 && out > 0)
    gemm_parallel(false, true, int(n), int(out), int(in), T(1), xv.data(), int(in), wv.data(),
                  int(in), T(1), yp, int(out));
  return record<LinearNode<T>>(std::move(y), {x, w, b});
}

OpInfo linear_info() {
  const auto with_bias = [](const auto& in) { return linear(in[0], in[1], in[2]); };
  const auto no_bias = [](const auto& in) { return linear(in[0], in[1]); };
  return {
      "linear",
      {make_case("bias", {{"x", {4, 5}}, {"w", {3, 5}}, {"b", {3}}}, with_bias),
       make_case("batch1_bias", {{"x", {1, 7}}, {"w", {2, 7}}, {"b", {2}}}, with_bias),
       make_case("no_bias", {{"x", {3, 4}}, {"w", {6, 4}}}, no_bias),
       make_case("x_constant", {{"x", {5, 3}, uniform_init(), false}, {"w", {4, 3}}, {"b", {4}}},
                 with_bias)}};
}

#define X(T) \
  template Variable<T> linear<T>(const Variable<T>&, const Variable<T>&, const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
