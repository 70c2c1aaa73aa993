// sub: y = a - b with broadcasting.
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct SubNode final : Node<T> {
  const char* name() const override { return "sub"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> minus_g = -g;
    return gradients(Tensor<T>(g), std::move(minus_g));
  }
};

}  // namespace

template <class T>
Variable<T> sub(const Variable<T>& a, const Variable<T>& b) {
  broadcast_shapes(a.shape(), b.shape(), "sub");
  Tensor<T> y = a.value() - b.value();
  return record<SubNode<T>>(std::move(y), {a, b});
}

OpInfo sub_info() {
  const auto fn = [](const auto& in) { return sub(in[0], in[1]); };
  return {"sub",
          {make_case("same_shape", {{"a", {3, 5}}, {"b", {3, 5}}}, fn),
           make_case("broadcast", {{"a", {2, 3, 4}}, {"b", {3, 1}}}, fn)}};
}

#define X(T) template Variable<T> sub<T>(const Variable<T>&, const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
