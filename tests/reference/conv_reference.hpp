// The course's step-by-step convolution, written plainly as an oracle for the fast kernels.
// Slow on purpose: loops over n, h, w, c and one window at a time. Use it in double.
#pragma once

#include <array>
#include <cstddef>

#include <xgrad/ops.hpp>
#include <xgrad/tensor.hpp>

namespace xgrad::reference {

/// x [N,C,H,W] -> [N,C,H+top+bottom,W+left+right] with zeros around each image.
template <class T>
Tensor<T> zero_pad_ref(const Tensor<T>& x, int top, int bottom, int left, int right) {
  const std::size_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
  Tensor<T> out = filled_tensor<T>({n, c, h + top + bottom, w + left + right}, T(0));
  for (std::size_t a = 0; a < n; ++a)
    for (std::size_t b = 0; b < c; ++b)
      for (std::size_t i = 0; i < h; ++i)
        for (std::size_t j = 0; j < w; ++j) out(a, b, i + top, j + left) = x(a, b, i, j);
  return out;
}

/// One output value: Σ a_slice ⊙ W + b, over a window and its filter of the same shape.
template <class T>
T conv_single_step(const Tensor<T>& a_slice, const Tensor<T>& W, T b) {
  T s = 0;
  for (std::size_t i = 0; i < a_slice.size(); ++i) s += a_slice.data()[i] * W.data()[i];
  return s + b;
}

namespace detail {

// The window of padded image `n` seen by output (h, w): channels [c0, c0 + cg), rows
// vert_start + p·dh, columns horiz_start + q·dw.
template <class T>
Tensor<T> window(const Tensor<T>& a_pad, std::size_t n, std::size_t c0, std::size_t cg,
                 std::size_t vert_start, std::size_t horiz_start, std::size_t kh, std::size_t kw,
                 std::size_t dh, std::size_t dw) {
  Tensor<T> s = empty_tensor<T>({cg, kh, kw});
  for (std::size_t c = 0; c < cg; ++c)
    for (std::size_t p = 0; p < kh; ++p)
      for (std::size_t q = 0; q < kw; ++q)
        s(c, p, q) = a_pad(n, c0 + c, vert_start + p * dh, horiz_start + q * dw);
  return s;
}

template <class T>
Tensor<T> filter(const Tensor<T>& W, std::size_t c) {
  Tensor<T> f = empty_tensor<T>({W.shape(1), W.shape(2), W.shape(3)});
  for (std::size_t i = 0; i < f.size(); ++i) f.data()[i] = W.data()[c * f.size() + i];
  return f;
}

}  // namespace detail

/// The course's conv_forward with stride, padding, dilation and groups (per axis).
/// A_prev [N,C,H,W], W [C_out,C/groups,kH,kW], b [C_out] or empty -> Z [N,C_out,Ho,Wo].
template <class T>
Tensor<T> conv_forward_ref(const Tensor<T>& A_prev, const Tensor<T>& W, const Tensor<T>* b,
                           const Conv2DParams& p) {
  const std::size_t m = A_prev.shape(0), c_in = A_prev.shape(1);
  const std::size_t c_out = W.shape(0), kh = W.shape(2), kw = W.shape(3);
  const std::size_t groups = std::size_t(p.groups), cg = c_in / groups, cog = c_out / groups;
  const std::size_t sh = p.stride[0], sw = p.stride[1], dh = p.dilation[0], dw = p.dilation[1];
  const Tensor<T> A_pad =
      zero_pad_ref(A_prev, p.padding[0], p.padding[0], p.padding[1], p.padding[1]);
  const std::size_t n_H = (A_pad.shape(2) - dh * (kh - 1) - 1) / sh + 1;
  const std::size_t n_W = (A_pad.shape(3) - dw * (kw - 1) - 1) / sw + 1;
  Tensor<T> Z = filled_tensor<T>({m, c_out, n_H, n_W}, T(0));
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t h = 0; h < n_H; ++h)
      for (std::size_t w = 0; w < n_W; ++w)
        for (std::size_t c = 0; c < c_out; ++c) {
          const Tensor<T> a_slice =
              detail::window(A_pad, i, (c / cog) * cg, cg, h * sh, w * sw, kh, kw, dh, dw);
          Z(i, c, h, w) = conv_single_step(a_slice, detail::filter(W, c), b ? (*b)(c) : T(0));
        }
  return Z;
}

template <class T>
struct ConvGradsRef {
  Tensor<T> dA_prev, dW, db;
};

/// The course's conv_backward: for each window, dA_prev_pad[window] += W[c]·dZ, dW[c] +=
/// a_slice·dZ, db[c] += dZ; then dA_prev is the interior of dA_prev_pad.
template <class T>
ConvGradsRef<T> conv_backward_ref(const Tensor<T>& dZ, const Tensor<T>& A_prev, const Tensor<T>& W,
                                  const Conv2DParams& p) {
  const std::size_t m = A_prev.shape(0), c_in = A_prev.shape(1), H = A_prev.shape(2),
                    Wd = A_prev.shape(3);
  const std::size_t c_out = W.shape(0), kh = W.shape(2), kw = W.shape(3);
  const std::size_t groups = std::size_t(p.groups), cg = c_in / groups, cog = c_out / groups;
  const std::size_t sh = p.stride[0], sw = p.stride[1], dh = p.dilation[0], dw = p.dilation[1];
  const std::size_t ph = p.padding[0], pw = p.padding[1];
  const Tensor<T> A_pad = zero_pad_ref(A_prev, int(ph), int(ph), int(pw), int(pw));
  Tensor<T> dA_pad = filled_tensor<T>(shape_of(A_pad), T(0));
  ConvGradsRef<T> r;
  r.dW = filled_tensor<T>(shape_of(W), T(0));
  r.db = filled_tensor<T>({c_out}, T(0));
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t h = 0; h < dZ.shape(2); ++h)
      for (std::size_t w = 0; w < dZ.shape(3); ++w)
        for (std::size_t c = 0; c < c_out; ++c) {
          const std::size_t c0 = (c / cog) * cg;
          const T dz = dZ(i, c, h, w);
          for (std::size_t ci = 0; ci < cg; ++ci)
            for (std::size_t a = 0; a < kh; ++a)
              for (std::size_t q = 0; q < kw; ++q) {
                const std::size_t y = h * sh + a * dh, x = w * sw + q * dw;
                dA_pad(i, c0 + ci, y, x) += W(c, ci, a, q) * dz;
                r.dW(c, ci, a, q) += A_pad(i, c0 + ci, y, x) * dz;
              }
          r.db(c) += dz;
        }
  r.dA_prev = empty_tensor<T>(shape_of(A_prev));
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t c = 0; c < c_in; ++c)
      for (std::size_t y = 0; y < H; ++y)
        for (std::size_t x = 0; x < Wd; ++x) r.dA_prev(i, c, y, x) = dA_pad(i, c, y + ph, x + pw);
  return r;
}

}  // namespace xgrad::reference
