// mul: y = a ⊙ b with broadcasting.
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct MulNode final : Node<T> {
  const char* name() const override { return "mul"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    std::vector<Tensor<T>> grads(2, no_grad<T>());
    if (this->needs_input_grad(0)) grads[0] = g * this->input_value(1);
    if (this->needs_input_grad(1)) grads[1] = g * this->input_value(0);
    return grads;
  }
};

}  // namespace

template <class T>
Variable<T> mul(const Variable<T>& a, const Variable<T>& b) {
  broadcast_shapes(a.shape(), b.shape(), "mul");
  Tensor<T> y = a.value() * b.value();
  return record<MulNode<T>>(std::move(y), {a, b});
}

OpInfo mul_info() {
  const auto fn = [](const auto& in) { return mul(in[0], in[1]); };
  const auto square = [](const auto& in) { return mul(in[0], in[0]); };
  return {"mul",
          {make_case("same_shape", {{"a", {2, 3, 4}}, {"b", {2, 3, 4}}}, fn),
           make_case("broadcast", {{"a", {2, 3, 4}}, {"b", {1, 4}}}, fn),
           make_case("self_fan_out", {{"a", {3, 3}}}, square)}};
}

#define X(T) template Variable<T> mul<T>(const Variable<T>&, const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
