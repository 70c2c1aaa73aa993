// Every public op. Layout is NCHW; conv weights are [C_out, C_in/groups, kH, kW] as in PyTorch.
// Each op is defined in ops/<name>.cpp (forward, node with backward, registry entry) and
// instantiated for float and double. Bad input throws xgrad::Error naming the op and shapes.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "xgrad/variable.hpp"

namespace xgrad {

// =============================================================================================
// Elementwise and shape ops
// =============================================================================================

/// y = a + b, with NumPy broadcasting. Gradients are summed back to each input's shape.
template <class T>
Variable<T> add(const Variable<T>& a, const Variable<T>& b);

/// y = a - b, with broadcasting. da = g, db = -g (each reduced to its input's shape).
template <class T>
Variable<T> sub(const Variable<T>& a, const Variable<T>& b);

/// y = a ⊙ b (elementwise), with broadcasting. da = g ⊙ b, db = g ⊙ a.
template <class T>
Variable<T> mul(const Variable<T>& a, const Variable<T>& b);

/// y = a·b for a [M,K] and b [K,N], giving [M,N], through BLAS. da = g·bᵀ, db = aᵀ·g.
template <class T>
Variable<T> matmul(const Variable<T>& a, const Variable<T>& b);

/// y = Σ x over all elements, a tensor of shape [] (one element). dx = g broadcast.
template <class T>
Variable<T> sum(const Variable<T>& x);

/// y = Σ x over `axes` (each in [0, rank), no repeats); `keepdims` keeps them as size 1.
template <class T>
Variable<T> sum(const Variable<T>& x, const std::vector<std::size_t>& axes, bool keepdims = false);

/// y = (1/n) Σ x over all n elements, shape []. dx = g/n everywhere. Throws when n = 0.
template <class T>
Variable<T> mean(const Variable<T>& x);

/// y = mean of x over `axes` (each in [0, rank), no repeats; order does not matter); `keepdims`
/// keeps them as size 1. dx = g/count broadcast back, count = product of the reduced sizes.
/// Throws for a bad or repeated axis, or when the reduced axes hold no elements.
template <class T>
Variable<T> mean(const Variable<T>& x, const std::vector<std::size_t>& axes, bool keepdims = false);

/// The same elements (row-major) in a new shape with the same element count; throws naming both
/// shapes otherwise. dx = g reshaped back.
template <class T>
Variable<T> reshape(const Variable<T>& x, const Shape& shape);

/// [N, d1, d2, ...] -> [N, d1·d2·...]: keeps the batch axis, as before a Dense layer. Rank >= 1
/// ([N] -> [N, 1]); a scalar throws. dx = g in x's shape.
template <class T>
Variable<T> flatten(const Variable<T>& x);

/// Joins tensors along `axis`; all other dimensions must match. Used by inception blocks.
/// The gradient of each input is its slice of g. Throws for an empty list, an axis >= rank, or
/// inputs whose ranks or other dimensions differ (the message lists every shape).
template <class T>
Variable<T> concat(const std::vector<Variable<T>>& xs, std::size_t axis);

// =============================================================================================
// Activations
// =============================================================================================

/// y = max(x, 0). dx = g where x > 0, else 0 (subgradient 0 at x = 0).
template <class T>
Variable<T> relu(const Variable<T>& x);

/// y = x for x > 0, slope·x otherwise. dx = g for x > 0, slope·g otherwise (also at x = 0).
template <class T>
Variable<T> leaky_relu(const Variable<T>& x, T slope = T(0.01));

/// y = 1 / (1 + e^-x), computed stably for large |x|. dx = g·y·(1 - y).
template <class T>
Variable<T> sigmoid(const Variable<T>& x);

/// y = tanh(x). dx = g·(1 - y²).
template <class T>
Variable<T> tanh(const Variable<T>& x);

// =============================================================================================
// Dense
// =============================================================================================

/// y = x·wᵀ + b. x [N, in], w [out, in], b [out] (optional: pass an empty Variable), y [N, out].
/// dx = g·w, dw = gᵀ·x, db = Σ_n g. Through BLAS (bias seeds y, then GEMM with beta = 1).
/// Throws when x or w is not rank 2, the in-features differ, or b is not [out].
template <class T>
Variable<T> linear(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b = {});

// =============================================================================================
// Convolution and pooling (NCHW)
// =============================================================================================

/// Per-axis (height, width) settings of a convolution. Signed so that bad values can be named.
struct Conv2DParams {
  std::array<int, 2> stride{1, 1};
  std::array<int, 2> padding{0, 0};  ///< zeros added on each side
  std::array<int, 2> dilation{1, 1};
  int groups = 1;
};

/// y[n, co, i, j] = b[co] + Σ_{ci in group(co), p, q} w[co, ci, p, q] ·
///                   xpad[n, ci, i·s_h + p·d_h, j·s_w + q·d_w]
/// x [N, C_in, H, W], w [C_out, C_in/groups, kH, kW], b [C_out] (optional), y [N, C_out, Ho, Wo]
/// with Ho = floor((H + 2·p_h - d_h·(kH-1) - 1)/s_h) + 1, likewise Wo.
/// Groups split C_in and C_out into `groups` independent convolutions (groups = C_in: depthwise).
/// Backward gives dx, dw and db. Per-image im2col + GEMM, OpenMP over the batch.
template <class T>
Variable<T> conv2d(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b = {},
                   const Conv2DParams& params = {});

/// relu(conv2d(x, w, b, conv)) in one pass over each image: the same values and gradients, bit for
/// bit (test_conv). With float (and AVX2) each image's output gets its ReLU while in cache, and
/// the backward masks each image's gradient just before the convolution's backward reads it;
/// otherwise it runs the two ops. Errors as conv2d's, naming this op. nn::Sequential uses it for a
/// Conv2d followed by a ReLU. Shapes as conv2d.
template <class T>
Variable<T> conv2d_relu(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                        const Conv2DParams& conv = {});

/// Zeros added to each spatial side of an NCHW tensor.
struct Pads {
  int top = 0, bottom = 0, left = 0, right = 0;
};

/// y = x with `pads` zeros around H and W: [N, C, H, W] -> [N, C, H+top+bottom, W+left+right].
/// dx = the interior of g.
template <class T>
Variable<T> zero_pad(const Variable<T>& x, const Pads& pads);

/// Window, stride and padding of a 2-D pool, per axis (height, width). As in PyTorch:
/// kernel >= 1, stride >= 1, 0 <= padding <= kernel/2 (so every window holds a real element),
/// and the padded input must hold one window; otherwise the pools throw xgrad::Error.
struct Pool2DParams {
  std::array<int, 2> kernel{2, 2};
  std::array<int, 2> stride{2, 2};
  std::array<int, 2> padding{0, 0};
  /// avg_pool2d only: when true (PyTorch's default) padded zeros count in the divisor, which is
  /// always kH·kW; when false the divisor is the number of real input elements in the window.
  bool count_include_pad = true;
};

/// y[n,c,i,j] = max over the window at (i·s - p, j·s - p) of x; padding counts as -infinity.
/// dx routes each g to the window's maximum (the course's create-mask); on ties, to the first
/// maximum in row-major order. x [N,C,H,W] -> [N,C,Ho,Wo], Ho = floor((H + 2p - k)/s) + 1.
/// The forward saves the argmax (int32 index in the plane) so the backward is a scatter.
/// A NaN in a window propagates to its output, as in PyTorch.
template <class T>
Variable<T> max_pool2d(const Variable<T>& x, const Pool2DParams& params = {});

/// max_pool2d(conv2d(x, w, b, conv), pool), then relu of it when `relu`, in one pass over each
/// image: the same values and gradients, bit for bit (test_pool). With float and a 2x2, stride-2,
/// unpadded pool, each image's convolution is pooled while in cache and never stored (the backward
/// rebuilds its dY from the saved window positions); otherwise it runs the separate ops. Errors as
/// theirs, naming this op. nn::Sequential uses it for a Conv2d followed by such a MaxPool2d (and a
/// ReLU). x [N, C_in, H, W] -> [N, C_out, Ho', Wo'], the pool's output size over the
/// convolution's Ho × Wo.
template <class T>
Variable<T> conv2d_max_pool2d(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                              const Conv2DParams& conv, const Pool2DParams& pool = {},
                              bool relu = false);

/// y[n,c,i,j] = mean over the window (see count_include_pad). dx spreads each g evenly over its
/// window (the course's distribute-value). Shapes as max_pool2d.
template <class T>
Variable<T> avg_pool2d(const Variable<T>& x, const Pool2DParams& params = {});

/// y[n,c] = mean over H and W of x[n,c]: [N,C,H,W] -> [N,C]. dx[n,c,h,w] = g[n,c]/(H·W).
template <class T>
Variable<T> global_avg_pool2d(const Variable<T>& x);

// =============================================================================================
// Softmax and losses
// =============================================================================================

/// y[n,i] = exp(x[n,i] - m_n) / Σ_j exp(x[n,j] - m_n), m_n = max_j x[n,j]; x [N, C] (other
/// ranks throw). dx[n] = y[n] ⊙ (g[n] - Σ_j g[n,j]·y[n,j]).
template <class T>
Variable<T> softmax(const Variable<T>& x);

/// y[n,i] = x[n,i] - m_n - log Σ_j exp(x[n,j] - m_n); x [N, C] (other ranks throw).
/// dx[n] = g[n] - softmax(x)[n]·Σ_j g[n,j].
template <class T>
Variable<T> log_softmax(const Variable<T>& x);

/// L = -(1/N) Σ_n log_softmax(logits)[n, labels[n]]; logits [N, C], labels N ints in [0, C).
/// Fused and stable for logits of ±1e4. d logits = (softmax - onehot)·g/N. Throws for logits not
/// of rank 2, a label count other than N, N = 0, or a label outside [0, C) (naming the label,
/// its position and the logits shape).
template <class T>
Variable<T> cross_entropy(const Variable<T>& logits, const std::vector<int>& labels);

/// L = (1/n) Σ (pred - target)², over all n elements; shapes must match exactly (no
/// broadcasting; the error names both). d pred = 2(pred - target)·g/n = -d target.
template <class T>
Variable<T> mse_loss(const Variable<T>& pred, const Variable<T>& target);

// =============================================================================================
// Regularisation and normalisation
// =============================================================================================

/// Inverted dropout: in training y = x ⊙ m / (1 - p) with m ~ Bernoulli(1 - p) drawn from `rng`;
/// in eval (training = false) y = x. p in [0, 1), else throws (in eval too).
/// dx = g ⊙ m / (1 - p) with the forward's mask. Eval and p = 0 are the identity and draw
/// nothing from `rng`; otherwise one Bernoulli draw per element in row-major order, the same
/// for float and double, so a seeded `rng` reproduces the mask.
template <class T>
Variable<T> dropout(const Variable<T>& x, double p, bool training, std::mt19937_64& rng);

struct BatchNormParams {
  double momentum = 0.1;  ///< running = (1 - momentum)·running + momentum·batch statistic
  double eps = 1e-5;
};

/// Per channel c of x [N, C, H, W]:
///   training: μ, σ² = mean and biased variance over (N, H, W); running stats updated with the
///             unbiased variance, as PyTorch;
///   eval:     μ, σ² = running_mean, running_var.
///   y = γ[c]·(x - μ)/sqrt(σ² + eps) + β[c].  gamma, beta, running_mean, running_var: [C].
/// Backward, with x̂ = (x - μ)/sqrt(σ² + eps), m = N·H·W, sums over (n, h, w) per channel:
///   dβ = Σ g, dγ = Σ g·x̂;  training: dx = γ/(m·sqrt(σ² + eps))·(m·g - Σ g - x̂·Σ g·x̂);
///   eval: dx = γ·g/sqrt(σ² + eps).
/// Throws on rank ≠ 4, gamma/beta/running stats not [C], eps <= 0, momentum outside [0, 1], or
/// training with N·H·W = 1 (no variance to estimate). gamma and beta must be defined.
template <class T>
Variable<T> batch_norm2d(const Variable<T>& x, const Variable<T>& gamma, const Variable<T>& beta,
                         Tensor<T>& running_mean, Tensor<T>& running_var, bool training,
                         const BatchNormParams& params = {});

}  // namespace xgrad
