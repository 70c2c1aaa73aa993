// leaky_relu: y = x for x > 0, slope·x otherwise.
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct LeakyReluNode final : Node<T> {
  explicit LeakyReluNode(T slope) : slope_(slope) {}
  const char* name() const override { return "leaky_relu"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& x = this->input_value(0);
    Tensor<T> dx = empty_tensor<T>(shape_of(x));
    const T* xp = x.data();
    const T* gp = g.data();
    T* dp = dx.data();
    const T slope = slope_;
    const std::size_t n = x.size();
    for (std::size_t i = 0; i < n; ++i) dp[i] = xp[i] > T(0) ? gp[i] : slope * gp[i];
    return gradients(std::move(dx));
  }
  T slope_;
};

}  // namespace

template <class T>
Variable<T> leaky_relu(const Variable<T>& x, T slope) {
  const Tensor<T>& xv = x.value();
  Tensor<T> y = empty_tensor<T>(shape_of(xv));
  const T* xp = xv.data();
  T* yp = y.data();
  const std::size_t n = xv.size();
  for (std::size_t i = 0; i < n; ++i) yp[i] = xp[i] > T(0) ? xp[i] : slope * xp[i];
  return record<LeakyReluNode<T>>(std::move(y), {x}, slope);
}

OpInfo leaky_relu_info() {
  return {"leaky_relu",
          {make_case("vector_default_slope", {{"x", {7}, away_from_zero_init()}},
                     [](const auto& in) { return leaky_relu(in[0]); }),
           make_case("image_slope_0.2", {{"x", {2, 3, 4, 4}, away_from_zero_init()}},
                     [](const auto& in) {
                       using T = typename std::decay_t<decltype(in[0].value())>::value_type;
                       return leaky_relu(in[0], T(0.2));
                     }),
           make_case("matrix_slope_above_1", {{"x", {3, 5}, away_from_zero_init()}},
                     [](const auto& in) {
                       using T = typename std::decay_t<decltype(in[0].value())>::value_type;
                       return leaky_relu(in[0], T(1.5));
                     })}};
}

#define X(T) template Variable<T> leaky_relu<T>(const Variable<T>&, T);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
