// max_pool2d: the maximum over each window; backward scatters to the saved argmax.
#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../src/max_pool_2x2.hpp"
#include "../src/parallel_loop.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using detail::PoolGeometry;
#ifdef XGRAD_POOL_2X2
using detail::for_stacks;
using detail::is_2x2_s2;
using detail::max_pool_2x2_plane;
using detail::max_pool_2x2_plane_backward;
using detail::stacked;
#endif

template <class T>
struct MaxPool2DNode final : Node<T> {
  MaxPool2DNode(PoolGeometry geo, std::vector<std::int32_t> argmax,
                std::vector<std::uint8_t> code = {})
      : geo_(geo), argmax_(std::move(argmax)), code_(std::move(code)) {}
  const char* name() const override { return "max_pool2d"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const PoolGeometry& s = geo_;
#ifdef XGRAD_POOL_2X2
    if constexpr (std::is_same_v<T, float>) {
      if (!code_.empty()) {
        Tensor<T> dx = empty_tensor<T>(
            {std::size_t(s.n), std::size_t(s.c), std::size_t(s.h), std::size_t(s.w)});
        const std::size_t planes = s.planes(), in_plane = s.in_plane(), out_plane = s.out_plane();
        const bool parallel = detail::pool_parallel_worthwhile(planes, planes * in_plane);
        detail::for_ranges(
            std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
              for_stacks(s, b, e, [&](std::ptrdiff_t q, std::ptrdiff_t count) {
                max_pool_2x2_plane_backward(stacked(s, count),
                                            g.data() + std::size_t(q) * out_plane,
                                            code_.data() + std::size_t(q) * out_plane,
                                            dx.data() + std::size_t(q) * in_plane);
              });
            });
        return gradients(std::move(dx));
      }
    }
#endif
    Tensor<T> dx = filled_tensor<T>(
        {std::size_t(s.n), std::size_t(s.c), std::size_t(s.h), std::size_t(s.w)}, T(0));
    const std::size_t planes = s.planes(), in_plane = s.in_plane(), out_plane = s.out_plane();
    const T* gp = g.data();
    T* dp = dx.data();
    const std::int32_t* ap = argmax_.data();
    const bool parallel = detail::pool_parallel_worthwhile(planes, planes * out_plane);
    // Each plane's scatter touches only that plane, so planes run independently.
    detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      for (std::ptrdiff_t q = b; q < e; ++q) {
        const T* gq = gp + std::size_t(q) * out_plane;
        const std::int32_t* aq = ap + std::size_t(q) * out_plane;
        T* dq = dp + std::size_t(q) * in_plane;
        for (std::size_t o = 0; o < out_plane; ++o) dq[aq[o]] += gq[o];
      }
    });
    return gradients(std::move(dx));
  }
  PoolGeometry geo_;
  std::vector<std::int32_t> argmax_;  ///< per output, the flat h·W + w of its maximum
  std::vector<std::uint8_t> code_;    ///< 2x2/s2 float path: per output, its window position
};

// Whether v replaces the running maximum b: strictly greater (so the first maximum in
// row-major order wins ties), or a NaN replacing a number (NaN propagates, as in PyTorch).
template <class T>
inline bool takes_over(T v, T b) {
  return (v > b) | ((v != v) & (b == b));
}

// One plane: writes the max of every window to y and, with kIndex, its index h·W + w in the
// plane to am. Windows are visited row-major. Columns whose window lies inside the input run
// with output columns innermost (branch-free selects the compiler vectorises); edge columns,
// clipped by padding, take the plain per-window loop.
template <bool kIndex, class T>
void max_pool_plane(const PoolGeometry& s, const T* __restrict x, T* __restrict y,
                    std::int32_t* __restrict am) {
  // Interior columns: w0 = j·sw - pw >= 0 and w0 + kw <= W.
  const int j_lo = std::min(s.wo, (s.pw + s.sw - 1) / s.sw);
  const int last = s.w + s.pw - s.kw;  // the largest interior j·sw, when not negative
  const int j_hi = last < 0 ? j_lo : std::max(j_lo, std::min(s.wo, last / s.sw + 1));
  for (int i = 0; i < s.ho; ++i) {
    const int h0 = i * s.sh - s.ph;
    const int hb = std::max(h0, 0), he = std::min(h0 + s.kh, s.h);
    T* yr = y + std::size_t(i) * std::size_t(s.wo);
    std::int32_t* ar = kIndex ? am + std::size_t(i) * std::size_t(s.wo) : nullptr;
    const auto window = [&](int j) {
      const int w0 = j * s.sw - s.pw;
      const int wb = std::max(w0, 0), we = std::min(w0 + s.kw, s.w);
      // Padding <= kernel/2 guarantees every window holds at least one real element.
      int best_i = hb * s.w + wb;
      T best = x[best_i];
      for (int h = hb; h < he; ++h)
        for (int w = wb; w < we; ++w)
          if (takes_over(x[h * s.w + w], best)) {
            best = x[h * s.w + w];
            best_i = h * s.w + w;
          }
      yr[j] = best;
      if (kIndex) ar[j] = std::int32_t(best_i);
    };
    for (int j = 0; j < j_lo; ++j) window(j);
    if (j_hi > j_lo) {
      const int first = hb * s.w - s.pw;
      for (int j = j_lo; j < j_hi; ++j) yr[j] = x[first + j * s.sw];
      if (kIndex)
        for (int j = j_lo; j < j_hi; ++j) ar[j] = std::int32_t(hb * s.w + j * s.sw - s.pw);
      // Locals, not s.*: an int32 store into ar could alias the geometry's ints and stop the
      // vectoriser.
      const int sw = s.sw, kw = s.kw, pw = s.pw, w = s.w;
      for (int h = hb; h < he; ++h)
        for (int q = 0; q < kw; ++q) {
          const int base = h * w + q - pw;
          if (kIndex) {
            for (int j = j_lo; j < j_hi; ++j) {
              const T v = x[base + j * sw], b = yr[j];
              const bool take = takes_over(v, b);
              yr[j] = take ? v : b;
              ar[j] = take ? std::int32_t(base + j * sw) : ar[j];
            }
          } else {
            for (int j = j_lo; j < j_hi; ++j) {
              const T v = x[base + j * sw], b = yr[j];
              yr[j] = takes_over(v, b) ? v : b;
            }
          }
        }
    }
    for (int j = j_hi; j < s.wo; ++j) window(j);
  }
}

}  // namespace

template <class T>
Variable<T> max_pool2d(const Variable<T>& x, const Pool2DParams& params) {
  const Tensor<T>& xv = x.value();
  const PoolGeometry s = detail::pool_geometry("max_pool2d", shape_of(xv), params);
  if (s.in_plane() > std::size_t(INT32_MAX))
    throw Error("max_pool2d: input plane too large for int32 indices (input " + shape_str(xv) +
                ")");
  Tensor<T> y = empty_tensor<T>(s.out_shape());
  const bool rec = should_record<T>({&x});
#ifdef XGRAD_POOL_2X2
  if constexpr (std::is_same_v<T, float>) {
    if (is_2x2_s2(s)) {
      std::vector<std::uint8_t> code(rec ? s.planes() * s.out_plane() : 0);
      const std::size_t planes = s.planes(), in_plane = s.in_plane(), out_plane = s.out_plane();
      const bool parallel = detail::pool_parallel_worthwhile(planes, planes * in_plane);
      const float* xp = xv.data();
      float* yp = y.data();
      std::uint8_t* cp = rec ? code.data() : nullptr;
      detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
        for_stacks(s, b, e, [&](std::ptrdiff_t q, std::ptrdiff_t count) {
          max_pool_2x2_plane(stacked(s, count), xp + std::size_t(q) * in_plane,
                             yp + std::size_t(q) * out_plane,
                             cp != nullptr ? cp + std::size_t(q) * out_plane : nullptr);
        });
      });
      return record<MaxPool2DNode<T>>(std::move(y), {x}, s, std::vector<std::int32_t>(),
                                      std::move(code));
    }
  }
#endif
  std::vector<std::int32_t> argmax(rec ? s.planes() * s.out_plane() : 0);
  const std::size_t planes = s.planes(), in_plane = s.in_plane(), out_plane = s.out_plane();
  const T* xp = xv.data();
  T* yp = y.data();
  std::int32_t* ap = rec ? argmax.data() : nullptr;
  const bool parallel = detail::pool_parallel_worthwhile(
      planes, planes * out_plane * std::size_t(s.kh) * std::size_t(s.kw));
  detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
    for (std::ptrdiff_t q = b; q < e; ++q)
      if (ap)
        max_pool_plane<true>(s, xp + std::size_t(q) * in_plane, yp + std::size_t(q) * out_plane,
                             ap + std::size_t(q) * out_plane);
      else
        max_pool_plane<false>(s, xp + std::size_t(q) * in_plane, yp + std::size_t(q) * out_plane,
                              nullptr);
  });
  return record<MaxPool2DNode<T>>(std::move(y), {x}, s, std::move(argmax));
}

OpInfo max_pool2d_info() {
  const auto with = [](Pool2DParams p) {
    return [p](const auto& in) { return max_pool2d(in[0], p); };
  };
  const SampleInit init = distinct_init();
  return {"max_pool2d",
          {make_case("k2s2", {{"x", {1, 1, 4, 4}, init}}, with({{2, 2}, {2, 2}, {0, 0}})),
           make_case("batch_odd", {{"x", {2, 3, 5, 7}, init}}, with({{2, 2}, {2, 2}, {0, 0}})),
           make_case("k3s2_overlap", {{"x", {2, 2, 7, 6}, init}}, with({{3, 3}, {2, 2}, {0, 0}})),
           make_case("k3s3", {{"x", {1, 2, 7, 8}, init}}, with({{3, 3}, {3, 3}, {0, 0}})),
           make_case("k3s2_pad1", {{"x", {2, 2, 5, 5}, init}}, with({{3, 3}, {2, 2}, {1, 1}})),
           make_case("rect_k2x3_s1x2_pad1", {{"x", {1, 2, 5, 6}, init}},
                     with({{2, 3}, {1, 2}, {1, 1}}))}};
}

#define X(T) template Variable<T> max_pool2d<T>(const Variable<T>&, const Pool2DParams&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
