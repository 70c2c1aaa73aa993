// The course's step-by-step pooling ("Convolutional Model, step by step"), kept as plain,
// slow oracles for the fast kernels in ops/max_pool2d.cpp and ops/avg_pool2d.cpp.
//
// Differences from the course, all deliberate:
// - Layout is NCHW (the course uses NHWC), but the loops still run over n, h, w, c and work on
//   one window slice at a time.
// - Padding is supported: the input is padded first (-inf for max, 0 for average), as the
//   course does with zero_pad for convolution. With count_include_pad = false the average slice
//   is the window clipped to the real input.
// - create_mask_from_window marks only the FIRST maximum in row-major order, to match our tie
//   rule. The course's `mask = (x == np.max(x))` marks every tied maximum, which sends the full
//   gradient to each of them; create_mask_all_ties keeps that version for comparison.
#pragma once

#include <algorithm>
#include <limits>

#include <xtensor/xview.hpp>

#include "xgrad/ops.hpp"
#include "xgrad/tensor.hpp"

namespace xgrad::reference {

enum class PoolMode { max, average };

/// x [N,C,H,W] with `ph` rows and `pw` columns of `value` added on each side.
template <class T>
Tensor<T> pad_ref(const Tensor<T>& x, int ph, int pw, T value) {
  const std::size_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
  Tensor<T> out = filled_tensor<T>({n, c, h + 2 * std::size_t(ph), w + 2 * std::size_t(pw)}, value);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t ch = 0; ch < c; ++ch)
      for (std::size_t r = 0; r < h; ++r)
        for (std::size_t q = 0; q < w; ++q) out(i, ch, r + ph, q + pw) = x(i, ch, r, q);
  return out;
}

/// A window-shaped mask with a single 1 at the first maximum of `x` (row-major), 0 elsewhere.
template <class T>
Tensor<T> create_mask_from_window(const Tensor<T>& x) {
  Tensor<T> mask = filled_tensor<T>(shape_of(x), T(0));
  const T m = *std::max_element(x.begin(), x.end());
  for (std::size_t k = 0; k < x.size(); ++k)
    if (x.data()[k] == m) {
      mask.data()[k] = T(1);
      break;
    }
  return mask;
}

/// The course's original mask, x == max(x): every tied maximum is marked.
template <class T>
Tensor<T> create_mask_all_ties(const Tensor<T>& x) {
  Tensor<T> mask = filled_tensor<T>(shape_of(x), T(0));
  const T m = *std::max_element(x.begin(), x.end());
  for (std::size_t k = 0; k < x.size(); ++k) mask.data()[k] = x.data()[k] == m ? T(1) : T(0);
  return mask;
}

/// dz spread evenly over a (n_H, n_W) window: every element gets dz / (n_H·n_W).
template <class T>
Tensor<T> distribute_value(T dz, std::size_t n_h, std::size_t n_w) {
  return filled_tensor<T>({n_h, n_w}, dz / T(n_h * n_w));
}

namespace detail {

// The rows/columns [start, end) of window (h, w) in padded coordinates; for an average without
// padding in the divisor, clipped to the real input at [pad, pad + size).
struct WindowRange {
  std::size_t v0, v1, h0, h1;
};

inline WindowRange window_range(std::size_t h, std::size_t w, const Pool2DParams& p,
                                std::size_t in_h, std::size_t in_w, bool clip) {
  WindowRange r{
      h * std::size_t(p.stride[0]), h * std::size_t(p.stride[0]) + std::size_t(p.kernel[0]),
      w * std::size_t(p.stride[1]), w * std::size_t(p.stride[1]) + std::size_t(p.kernel[1])};
  if (clip) {
    const std::size_t ph = std::size_t(p.padding[0]), pw = std::size_t(p.padding[1]);
    r.v0 = std::max(r.v0, ph);
    r.v1 = std::min(r.v1, ph + in_h);
    r.h0 = std::max(r.h0, pw);
    r.h1 = std::min(r.h1, pw + in_w);
  }
  return r;
}

inline std::size_t out_size(std::size_t in, int k, int s, int p) {
  return (in + 2 * std::size_t(p) - std::size_t(k)) / std::size_t(s) + 1;
}

}  // namespace detail

/// The course's pool_forward on NCHW: for each n, h, w, c take the window slice and reduce it
/// with max or mean.
template <class T>
Tensor<T> pool_forward_ref(const Tensor<T>& a_prev, const Pool2DParams& p, PoolMode mode) {
  const std::size_t m = a_prev.shape(0), n_c = a_prev.shape(1);
  const std::size_t h_prev = a_prev.shape(2), w_prev = a_prev.shape(3);
  const std::size_t n_h = detail::out_size(h_prev, p.kernel[0], p.stride[0], p.padding[0]);
  const std::size_t n_w = detail::out_size(w_prev, p.kernel[1], p.stride[1], p.padding[1]);
  const T pad_value = mode == PoolMode::max ? -std::numeric_limits<T>::infinity() : T(0);
  const Tensor<T> a_pad = pad_ref(a_prev, p.padding[0], p.padding[1], pad_value);
  const bool clip = mode == PoolMode::average && !p.count_include_pad;
  Tensor<T> a = empty_tensor<T>({m, n_c, n_h, n_w});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t h = 0; h < n_h; ++h)
      for (std::size_t w = 0; w < n_w; ++w)
        for (std::size_t c = 0; c < n_c; ++c) {
          const detail::WindowRange r = detail::window_range(h, w, p, h_prev, w_prev, clip);
          const Tensor<T> slice =
              xt::view(a_pad, i, c, xt::range(r.v0, r.v1), xt::range(r.h0, r.h1));
          if (mode == PoolMode::max) {
            a(i, c, h, w) = *std::max_element(slice.begin(), slice.end());
          } else {
            T total = 0;
            for (const T v : slice) total += v;
            a(i, c, h, w) = total / T(slice.size());
          }
        }
  return a;
}

/// The course's pool_backward on NCHW: for max, dA_prev[window] += mask·dA; for average,
/// dA_prev[window] += distribute_value(dA, window shape). Accumulated on the padded input,
/// then cropped.
template <class T>
Tensor<T> pool_backward_ref(const Tensor<T>& d_a, const Tensor<T>& a_prev, const Pool2DParams& p,
                            PoolMode mode) {
  const std::size_t m = a_prev.shape(0), n_c = a_prev.shape(1);
  const std::size_t h_prev = a_prev.shape(2), w_prev = a_prev.shape(3);
  const std::size_t n_h = d_a.shape(2), n_w = d_a.shape(3);
  const int ph = p.padding[0], pw = p.padding[1];
  const T pad_value = mode == PoolMode::max ? -std::numeric_limits<T>::infinity() : T(0);
  const Tensor<T> a_pad = pad_ref(a_prev, ph, pw, pad_value);
  Tensor<T> d_pad = filled_tensor<T>(shape_of(a_pad), T(0));
  const bool clip = mode == PoolMode::average && !p.count_include_pad;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t h = 0; h < n_h; ++h)
      for (std::size_t w = 0; w < n_w; ++w)
        for (std::size_t c = 0; c < n_c; ++c) {
          const detail::WindowRange r = detail::window_range(h, w, p, h_prev, w_prev, clip);
          auto d_slice = xt::view(d_pad, i, c, xt::range(r.v0, r.v1), xt::range(r.h0, r.h1));
          if (mode == PoolMode::max) {
            const Tensor<T> slice =
                xt::view(a_pad, i, c, xt::range(r.v0, r.v1), xt::range(r.h0, r.h1));
            const Tensor<T> mask = create_mask_from_window(slice);
            const Tensor<T> contribution = mask * d_a(i, c, h, w);
            d_slice += contribution;
          } else {
            const Tensor<T> spread = distribute_value(d_a(i, c, h, w), r.v1 - r.v0, r.h1 - r.h0);
            d_slice += spread;
          }
        }
  Tensor<T> d_prev = empty_tensor<T>({m, n_c, h_prev, w_prev});
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t c = 0; c < n_c; ++c)
      for (std::size_t r = 0; r < h_prev; ++r)
        for (std::size_t q = 0; q < w_prev; ++q) d_prev(i, c, r, q) = d_pad(i, c, r + ph, q + pw);
  return d_prev;
}

}  // namespace xgrad::reference
