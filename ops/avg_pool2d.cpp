// avg_pool2d: the mean over each window; backward spreads each gradient evenly over its window.
#include <algorithm>

#include "../src/parallel_loop.hpp"
#include "../src/pool_geometry.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using detail::PoolGeometry;

// The divisor of window (h0, w0) clipped to [hb, he) x [wb, we): kH·kW with
// count_include_pad (the window never reaches past the padding without ceil mode), else the
// number of real elements.
inline int avg_divisor(const PoolGeometry& s, bool include_pad, int hb, int he, int wb, int we) {
  return include_pad ? s.kh * s.kw : (he - hb) * (we - wb);
}

// Output columns whose window lies inside the input, [lo, hi): w0 = j·sw - pw >= 0 and
// w0 + kw <= W. There the loops run with output columns innermost, which vectorises; the
// clipped edge columns take the plain per-window loop.
struct InteriorColumns {
  int lo, hi;
};

inline InteriorColumns interior_columns(const PoolGeometry& s) {
  const int lo = std::min(s.wo, (s.pw + s.sw - 1) / s.sw);
  const int last = s.w + s.pw - s.kw;  // the largest interior j·sw, when not negative
  return {lo, last < 0 ? lo : std::max(lo, std::min(s.wo, last / s.sw + 1))};
}

template <class T>
void avg_pool_plane(const PoolGeometry& s, bool include_pad, const T* __restrict x,
                    T* __restrict y) {
  const InteriorColumns cols = interior_columns(s);
  const int sw = s.sw, kw = s.kw, pw = s.pw, w = s.w;
  for (int i = 0; i < s.ho; ++i) {
    const int h0 = i * s.sh - s.ph;
    const int hb = std::max(h0, 0), he = std::min(h0 + s.kh, s.h);
    T* yr = y + std::size_t(i) * std::size_t(s.wo);
    const auto window = [&](int j) {
      const int w0 = j * sw - pw;
      const int wb = std::max(w0, 0), we = std::min(w0 + kw, w);
      T total = 0;
      for (int h = hb; h < he; ++h)
        for (int c = wb; c < we; ++c) total += x[h * w + c];
      yr[j] = total / T(avg_divisor(s, include_pad, hb, he, wb, we));
    };
    for (int j = 0; j < cols.lo; ++j) window(j);
    for (int j = cols.lo; j < cols.hi; ++j) yr[j] = T(0);
    // Each output still sums its window in row-major order, as the per-window loop does.
    for (int h = hb; h < he; ++h)
      for (int q = 0; q < kw; ++q) {
        const int base = h * w + q - pw;
        for (int j = cols.lo; j < cols.hi; ++j) yr[j] += x[base + j * sw];
      }
    const T div = T(include_pad ? s.kh * kw : (he - hb) * kw);
    for (int j = cols.lo; j < cols.hi; ++j) yr[j] /= div;
    for (int j = cols.hi; j < s.wo; ++j) window(j);
  }
}

// dx[window] += g / divisor for every window: the course's distribute-value, in place.
template <class T>
void avg_pool_plane_backward(const PoolGeometry& s, bool include_pad, const T* __restrict g,
                             T* __restrict dx) {
  const InteriorColumns cols = interior_columns(s);
  const int sw = s.sw, kw = s.kw, pw = s.pw, w = s.w;
  for (int i = 0; i < s.ho; ++i) {
    const int h0 = i * s.sh - s.ph;
    const int hb = std::max(h0, 0), he = std::min(h0 + s.kh, s.h);
    const T* gr = g + std::size_t(i) * std::size_t(s.wo);
    const auto window = [&](int j) {
      const int w0 = j * sw - pw;
      const int wb = std::max(w0, 0), we = std::min(w0 + kw, w);
      const T share = gr[j] / T(avg_divisor(s, include_pad, hb, he, wb, we));
      for (int h = hb; h < he; ++h)
        for (int c = wb; c < we; ++c) dx[h * w + c] += share;
    };
    for (int j = 0; j < cols.lo; ++j) window(j);
    const T div = T(include_pad ? s.kh * kw : (he - hb) * kw);
    // For a fixed (h, q) the columns j·sw + q are distinct, so the inner loop has no conflicts.
    for (int h = hb; h < he; ++h)
      for (int q = 0; q < kw; ++q) {
        const int base = h * w + q - pw;
        for (int j = cols.lo; j < cols.hi; ++j) dx[base + j * sw] += gr[j] / div;
      }
    for (int j = cols.hi; j < s.wo; ++j) window(j);
  }
}

template <class T>
struct AvgPool2DNode final : Node<T> {
  AvgPool2DNode(PoolGeometry geo, bool include_pad) : geo_(geo), include_pad_(include_pad) {}
  const char* name() const override { return "avg_pool2d"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const PoolGeometry& s = geo_;
    Tensor<T> dx = filled_tensor<T>(
        {std::size_t(s.n), std::size_t(s.c), std::size_t(s.h), std::size_t(s.w)}, T(0));
    const std::size_t planes = s.planes(), in_plane = s.in_plane(), out_plane = s.out_plane();
    const T* gp = g.data();
    T* dp = dx.data();
    const bool parallel = detail::pool_parallel_worthwhile(
        planes, planes * out_plane * std::size_t(s.kh) * std::size_t(s.kw));
    detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      for (std::ptrdiff_t q = b; q < e; ++q)
        avg_pool_plane_backward(s, include_pad_, gp + std::size_t(q) * out_plane,
                                dp + std::size_t(q) * in_plane);
    });
    return gradients(std::move(dx));
  }
  PoolGeometry geo_;
  bool include_pad_;
};

}  // namespace

template <class T>
Variable<T> avg_pool2d(const Variable<T>& x, const Pool2DParams& params) {
  const Tensor<T>& xv = x.value();
  const PoolGeometry s = detail::pool_geometry("avg_pool2d", shape_of(xv), params);
  Tensor<T> y = empty_tensor<T>(s.out_shape());
  const std::size_t planes = s.planes(), in_plane = s.in_plane(), out_plane = s.out_plane();
  const T* xp = xv.data();
  T* yp = y.data();
  const bool parallel = detail::pool_parallel_worthwhile(
      planes, planes * out_plane * std::size_t(s.kh) * std::size_t(s.kw));
  detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
    for (std::ptrdiff_t q = b; q < e; ++q)
      avg_pool_plane(s, params.count_include_pad, xp + std::size_t(q) * in_plane,
                     yp + std::size_t(q) * out_plane);
  });
  return record<AvgPool2DNode<T>>(std::move(y), {x}, s, params.count_include_pad);
}

OpInfo avg_pool2d_info() {
  const auto with = [](Pool2DParams p) {
    return [p](const auto& in) { return avg_pool2d(in[0], p); };
  };
  return {
      "avg_pool2d",
      {make_case("k2s2", {{"x", {1, 1, 4, 4}}}, with({{2, 2}, {2, 2}, {0, 0}})),
       make_case("batch_odd", {{"x", {2, 3, 5, 7}}}, with({{2, 2}, {2, 2}, {0, 0}})),
       make_case("k3s2_overlap", {{"x", {2, 2, 7, 6}}}, with({{3, 3}, {2, 2}, {0, 0}})),
       make_case("k3s3", {{"x", {1, 2, 7, 8}}}, with({{3, 3}, {3, 3}, {0, 0}})),
       make_case("k3s2_pad1_include", {{"x", {2, 2, 5, 5}}}, with({{3, 3}, {2, 2}, {1, 1}, true})),
       make_case("k3s2_pad1_exclude", {{"x", {2, 2, 5, 5}}}, with({{3, 3}, {2, 2}, {1, 1}, false})),
       make_case("rect_k2x3_s1x2_pad1_exclude", {{"x", {1, 2, 5, 6}}},
                 with({{2, 3}, {1, 2}, {1, 1}, false}))}};
}

#define X(T) template Variable<T> avg_pool2d<T>(const Variable<T>&, const Pool2DParams&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
