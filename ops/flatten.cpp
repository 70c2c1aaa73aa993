// flatten: [N, d1, d2, ...] -> [N, d1·d2·...].
#include <algorithm>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct FlattenNode final : Node<T> {
  const char* name() const override { return "flatten"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> dx = empty_tensor<T>(shape_of(this->input_value(0)));
    std::copy(g.data(), g.data() + g.size(), dx.data());
    return gradients(std::move(dx));
  }
};

}  // namespace

template <class T>
Variable<T> flatten(const Variable<T>& x) {
  const Tensor<T>& xv = x.value();
  if (xv.dimension() < 1)
    throw Error("flatten: input must have rank >= 1 (a batch axis) but has shape " + shape_str(xv));
  const std::size_t n = xv.shape(0);
  std::size_t rest = 1;
  for (std::size_t a = 1; a < xv.dimension(); ++a) rest *= xv.shape(a);
  Tensor<T> y = empty_tensor<T>({n, rest});
  std::copy(xv.data(), xv.data() + xv.size(), y.data());
  return record<FlattenNode<T>>(std::move(y), {x});
}

OpInfo flatten_info() {
  const auto fn = [](const auto& in) { return flatten(in[0]); };
  return {
      "flatten",
      {make_case("image", {{"x", {2, 3, 2, 2}}}, fn),
       make_case("batch_of_one", {{"x", {1, 2, 5}}}, fn), make_case("vector", {{"x", {4}}}, fn)}};
}

#define X(T) template Variable<T> flatten<T>(const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
