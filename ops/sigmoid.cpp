// sigmoid: y = 1 / (1 + e^-x), stable for large |x|.
#include <cmath>

// GCC 12 warns about _mm512_undefined_* inside its own AVX-512 intrinsics that xsimd inlines here
// (a known false positive in the system headers).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <xsimd/xsimd.hpp>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

// The derivative y·(1 - y) needs only the output, so the node keeps a copy of y.
template <class T>
struct SigmoidNode final : Node<T> {
  explicit SigmoidNode(Tensor<T> y) : y_(std::move(y)) {}
  const char* name() const override { return "sigmoid"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> dx = empty_tensor<T>(shape_of(y_));
    const T* yp = y_.data();
    const T* gp = g.data();
    T* dp = dx.data();
    const std::size_t n = y_.size();
    for (std::size_t i = 0; i < n; ++i) dp[i] = gp[i] * yp[i] * (T(1) - yp[i]);
    return gradients(std::move(dx));
  }
  Tensor<T> y_;
};

}  // namespace

template <class T>
Variable<T> sigmoid(const Variable<T>& x) {
  const Tensor<T>& xv = x.value();
  Tensor<T> y = empty_tensor<T>(shape_of(xv));
  const T* xp = xv.data();
  T* yp = y.data();
  const std::size_t n = xv.size();
  // exp of a non-positive argument only: e = e^-|x| never overflows and 1 + e stays in [1, 2];
  // y = 1/(1 + e) for x >= 0 and e/(1 + e) below. xsimd's exp keeps this vectorised.
  using B = xsimd::batch<T>;
  constexpr std::size_t w = B::size;
  std::size_t i = 0;
  for (; i + w <= n; i += w) {
    const B v = B::load_unaligned(xp + i);
    const B e = xsimd::exp(-xsimd::abs(v));
    const B r = B(T(1)) / (B(T(1)) + e);
    xsimd::select(v >= B(T(0)), r, e * r).store_unaligned(yp + i);
  }
  for (; i < n; ++i) {
    const T e = std::exp(-std::abs(xp[i]));
    const T r = T(1) / (T(1) + e);
    yp[i] = xp[i] >= T(0) ? r : e * r;
  }
  if (!should_record<T>({&x})) return record<SigmoidNode<T>>(std::move(y), {x}, Tensor<T>());
  Tensor<T> saved = y;
  return record<SigmoidNode<T>>(std::move(y), {x}, std::move(saved));
}

OpInfo sigmoid_info() {
  const auto fn = [](const auto& in) { return sigmoid(in[0]); };
  return {"sigmoid",
          {make_case("vector", {{"x", {7}, uniform_init(-4, 4)}}, fn),
           make_case("image", {{"x", {2, 3, 4, 4}}}, fn),
           make_case("wide_range", {{"x", {4, 6}, uniform_init(-12, 12)}}, fn)}};
}

#define X(T) template Variable<T> sigmoid<T>(const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
