// batch_norm2d: per-channel normalisation of NCHW input, with running statistics.
#include <algorithm>
#include <cmath>

#include "../src/parallel_loop.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

// Sums in double over 8 independent lanes: a single running sum is a serial dependency chain
// the compiler may not reorder (no -ffast-math), the lanes let it vectorise.
constexpr int kLanes = 8;

inline double lane_total(const double* acc) {
  double t = 0;
  for (int l = 0; l < kLanes; ++l) t += acc[l];
  return t;
}

// Σ x[k] - shift and Σ (x[k] - shift)² over n elements.
template <class T>
void add_moments(const T* x, std::size_t n, double shift, double& sum, double& sq) {
  double s1[kLanes] = {}, s2[kLanes] = {};
  std::size_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double d = double(x[k + l]) - shift;
      s1[l] += d;
      s2[l] += d * d;
    }
  for (; k < n; ++k) {
    const double d = double(x[k]) - shift;
    s1[0] += d;
    s2[0] += d * d;
  }
  sum += lane_total(s1);
  sq += lane_total(s2);
}

// Σ g[k] and Σ g[k]·h[k] over n elements.
template <class T>
void add_grad_sums(const T* g, const T* h, std::size_t n, double& sum_g, double& sum_gh) {
  double s1[kLanes] = {}, s2[kLanes] = {};
  std::size_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      s1[l] += double(g[k + l]);
      s2[l] += double(g[k + l]) * double(h[k + l]);
    }
  for (; k < n; ++k) {
    s1[0] += double(g[k]);
    s2[0] += double(g[k]) * double(h[k]);
  }
  sum_g += lane_total(s1);
  sum_gh += lane_total(s2);
}

// Channels are independent; parallelise over them once there is enough work per call.
inline bool channels_parallel(std::size_t channels, std::size_t work) {
  return channels > 1 && work >= (std::size_t(1) << 15);
}

template <class T>
struct BatchNorm2DNode final : Node<T> {
  BatchNorm2DNode(Tensor<T> xhat, std::vector<T> inv_std, bool training)
      : xhat_(std::move(xhat)), inv_std_(std::move(inv_std)), training_(training) {}
  const char* name() const override { return "batch_norm2d"; }

  // Per channel, with m = N·H·W, x̂ = (x - μ)·inv_std and sums over (n, h, w):
  //   dβ = Σ g,  dγ = Σ g·x̂,
  //   training: dx = γ·inv_std/m · (m·g - Σ g - x̂·Σ g·x̂)   (μ and σ² depend on x)
  //   eval:     dx = γ·inv_std · g                           (running stats are constants)
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& gamma = this->input_value(1);
    const std::size_t n = xhat_.shape(0), c = xhat_.shape(1);
    const std::size_t plane = xhat_.shape(2) * xhat_.shape(3);
    const std::size_t m = n * plane;
    const bool need_dx = this->needs_input_grad(0);
    std::vector<Tensor<T>> grads(3, no_grad<T>());
    Tensor<T> dx = need_dx ? empty_tensor<T>(shape_of(xhat_)) : no_grad<T>();
    Tensor<T> dgamma = empty_tensor<T>({c});
    Tensor<T> dbeta = empty_tensor<T>({c});
    const T* gp = g.data();
    const T* hp = xhat_.data();
    const T* gam = gamma.data();
    T* dxp = dx.data();
    T* dgp = dgamma.data();
    T* dbp = dbeta.data();
    detail::for_ranges(
        std::ptrdiff_t(c), channels_parallel(c, n * c * plane),
        [&](std::ptrdiff_t b, std::ptrdiff_t e) {
          for (std::ptrdiff_t ch = b; ch < e; ++ch) {
            double sum_g = 0, sum_gx = 0;
            for (std::size_t i = 0; i < n; ++i) {
              const std::size_t off = (i * c + std::size_t(ch)) * plane;
              add_grad_sums(gp + off, hp + off, plane, sum_g, sum_gx);
            }
            dbp[ch] = T(sum_g);
            dgp[ch] = T(sum_gx);
            if (!need_dx) continue;
            const double scale = double(gam[ch]) * double(inv_std_[std::size_t(ch)]);
            for (std::size_t i = 0; i < n; ++i) {
              const std::size_t off = (i * c + std::size_t(ch)) * plane;
              if (training_) {
                const double mean_g = sum_g / double(m), mean_gx = sum_gx / double(m);
                for (std::size_t k = 0; k < plane; ++k)
                  dxp[off + k] =
                      T(scale * (double(gp[off + k]) - mean_g - double(hp[off + k]) * mean_gx));
              } else {
                for (std::size_t k = 0; k < plane; ++k)
                  dxp[off + k] = T(scale * double(gp[off + k]));
              }
            }
          }
        });
    grads[0] = std::move(dx);
    if (this->needs_input_grad(1)) grads[1] = std::move(dgamma);
    if (this->needs_input_grad(2)) grads[2] = std::move(dbeta);
    return grads;
  }

  Tensor<T> xhat_;  ///< (x - μ)·inv_std, as in the forward
  std::vector<T> inv_std_;
  bool training_;
};

}  // namespace

template <class T>
Variable<T> batch_norm2d(const Variable<T>& x, const Variable<T>& gamma, const Variable<T>& beta,
                         Tensor<T>& running_mean, Tensor<T>& running_var, bool training,
                         const BatchNormParams& params) {
  const auto defined_str = [](const Variable<T>& v) {
    return v.defined() ? shape_str(v.shape()) : std::string("undefined");
  };
  const auto shapes = [&] {
    return " (x " + (x.defined() ? shape_str(x.shape()) : std::string("undefined")) + ", gamma " +
           defined_str(gamma) + ", beta " + defined_str(beta) + ", running_mean " +
           shape_str(running_mean) + ", running_var " + shape_str(running_var) + ")";
  };
  if (!x.defined() || x.dim() != 4)
    throw Error("batch_norm2d: x must have rank 4 (NCHW)" + shapes());
  const Tensor<T>& xv = x.value();
  const std::size_t n = xv.shape(0), c = xv.shape(1), plane = xv.shape(2) * xv.shape(3);
  const std::size_t m = n * plane;
  const Shape cs{c};
  const std::string expect =
      "must have shape [" + std::to_string(c) + "] for " + std::to_string(c) + " channels";
  if (!gamma.defined() || gamma.shape() != cs)
    throw Error("batch_norm2d: gamma " + expect + shapes());
  if (!beta.defined() || beta.shape() != cs) throw Error("batch_norm2d: beta " + expect + shapes());
  if (shape_of(running_mean) != cs) throw Error("batch_norm2d: running_mean " + expect + shapes());
  if (shape_of(running_var) != cs) throw Error("batch_norm2d: running_var " + expect + shapes());
  if (!(params.eps > 0.0)) throw Error("batch_norm2d: eps must be positive" + shapes());
  if (!(params.momentum >= 0.0 && params.momentum <= 1.0))
    throw Error("batch_norm2d: momentum must be in [0, 1]" + shapes());
  if (training && m < 2)
    throw Error("batch_norm2d: training needs more than one value per channel (N·H·W = " +
                std::to_string(m) + ")" + shapes());

  // Per-channel statistics: μ and the biased σ² from the batch (two passes, accumulated in
  // double), or the running ones in eval.
  std::vector<double> mean(c), var(c);
  const T* xp = xv.data();
  if (training) {
    detail::for_ranges(
        std::ptrdiff_t(c), channels_parallel(c, n * c * plane),
        [&](std::ptrdiff_t b, std::ptrdiff_t e) {
          for (std::ptrdiff_t ch = b; ch < e; ++ch) {
            double total = 0, unused = 0;
            for (std::size_t i = 0; i < n; ++i)
              add_moments(xp + (i * c + std::size_t(ch)) * plane, plane, 0.0, total, unused);
            const double mu0 = total / double(m);
            // Second pass about the first mean; its residual sum corrects the rounding of mu0.
            double dev = 0, sq = 0;
            for (std::size_t i = 0; i < n; ++i)
              add_moments(xp + (i * c + std::size_t(ch)) * plane, plane, mu0, dev, sq);
            mean[std::size_t(ch)] = mu0 + dev / double(m);
            var[std::size_t(ch)] = std::max(0.0, (sq - dev * dev / double(m)) / double(m));
          }
        });
  } else {
    for (std::size_t ch = 0; ch < c; ++ch) {
      mean[ch] = double(running_mean.data()[ch]);
      var[ch] = double(running_var.data()[ch]);
    }
  }

  const bool rec = should_record<T>({&x, &gamma, &beta});
  Tensor<T> y = empty_tensor<T>(shape_of(xv));
  Tensor<T> xhat = rec ? empty_tensor<T>(shape_of(xv)) : no_grad<T>();
  std::vector<T> inv_std(c);
  const T* gam = gamma.value().data();
  const T* bet = beta.value().data();
  T* yp = y.data();
  T* hp = rec ? xhat.data() : nullptr;
  detail::for_ranges(std::ptrdiff_t(c), channels_parallel(c, n * c * plane),
                     [&](std::ptrdiff_t b, std::ptrdiff_t e) {
                       for (std::ptrdiff_t ch = b; ch < e; ++ch) {
                         const std::size_t cc = std::size_t(ch);
                         const double is = 1.0 / std::sqrt(var[cc] + params.eps);
                         inv_std[cc] = T(is);
                         const double mu = mean[cc], ga = double(gam[cc]), be = double(bet[cc]);
                         for (std::size_t i = 0; i < n; ++i) {
                           const std::size_t off = (i * c + cc) * plane;
                           for (std::size_t k = 0; k < plane; ++k) {
                             const double h = (double(xp[off + k]) - mu) * is;
                             if (hp) hp[off + k] = T(h);
                             yp[off + k] = T(ga * h + be);
                           }
                         }
                       }
                     });

  if (training) {
    // PyTorch: the running variance takes the unbiased estimate σ²·m/(m-1).
    const double mom = params.momentum;
    T* rm = running_mean.data();
    T* rv = running_var.data();
    for (std::size_t ch = 0; ch < c; ++ch) {
      rm[ch] = T((1.0 - mom) * double(rm[ch]) + mom * mean[ch]);
      rv[ch] = T((1.0 - mom) * double(rv[ch]) + mom * var[ch] * double(m) / double(m - 1));
    }
  }
  return record<BatchNorm2DNode<T>>(std::move(y), {x, gamma, beta}, std::move(xhat),
                                    std::move(inv_std), training);
}

namespace {

// Registry cases use local running statistics, so the many evaluations gradcheck makes are
// all the same function and update nothing outside.
template <class T>
Variable<T> batch_norm_case(const std::vector<Variable<T>>& in, bool training) {
  const std::size_t c = in[0].shape()[1];
  Tensor<T> running_mean = empty_tensor<T>({c});
  Tensor<T> running_var = empty_tensor<T>({c});
  for (std::size_t ch = 0; ch < c; ++ch) {
    running_mean.data()[ch] = T(0.2 * double(ch) - 0.1);
    running_var.data()[ch] = T(0.5 + 0.25 * double(ch));
  }
  return batch_norm2d(in[0], in[1], in[2], running_mean, running_var, training);
}

}  // namespace

OpInfo batch_norm2d_info() {
  const auto train = [](const auto& in) { return batch_norm_case(in, true); };
  const auto eval = [](const auto& in) { return batch_norm_case(in, false); };
  const SampleInit scale = uniform_init(0.5, 1.5);
  const auto inputs = [&](Shape x) {
    const std::size_t c = x[1];
    return std::vector<SampleInput>{{"x", x}, {"gamma", {c}, scale}, {"beta", {c}}};
  };
  return {"batch_norm2d",
          {make_case("train", inputs({2, 3, 2, 2}), train),
           make_case("train_batch1_spatial", inputs({1, 2, 3, 3}), train),
           make_case("train_spatial1", inputs({4, 2, 1, 1}), train),
           make_case("train_odd", inputs({3, 1, 3, 2}), train),
           make_case("eval", inputs({2, 3, 2, 2}), eval),
           make_case("eval_batch1", inputs({1, 2, 3, 1}), eval)}};
}

#define X(T)                                                                                       \
  template Variable<T> batch_norm2d<T>(const Variable<T>&, const Variable<T>&, const Variable<T>&, \
                                       Tensor<T>&, Tensor<T>&, bool, const BatchNormParams&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
