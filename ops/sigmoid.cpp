// sigmoid: y = 1 / (1 + e^-x), stable for large |x|.
#include <cmath>

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
    return {std::move(dx)};
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
  // exp of a non-positive argument only: never overflows, and 1 + e stays in [1, 2].
  for (std::size_t i = 0; i < n; ++i) {
    const T v = xp[i];
    if (v >= T(0)) {
      yp[i] = T(1) / (T(1) + std::exp(-v));
    } else {
      const T e = std::exp(v);
      yp[i] = e / (T(1) + e);
    }
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
