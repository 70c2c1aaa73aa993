// add: y = a + b with broadcasting.
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct AddNode final : Node<T> {
  const char* name() const override { return "add"; }
  // The engine sums g over broadcast dimensions back to each input's shape.
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override { return {g, g}; }
};

}  // namespace

template <class T>
Variable<T> add(const Variable<T>& a, const Variable<T>& b) {
  broadcast_shapes(a.shape(), b.shape(), "add");
  Tensor<T> y = a.value() + b.value();
  return record<AddNode<T>>(std::move(y), {a, b});
}

OpInfo add_info() {
  const auto fn = [](const auto& in) { return add(in[0], in[1]); };
  return {"add",
          {make_case("same_shape", {{"a", {2, 3, 4}}, {"b", {2, 3, 4}}}, fn),
           make_case("broadcast_row", {{"a", {3, 4}}, {"b", {4}}}, fn),
           make_case("broadcast_both", {{"a", {2, 1, 3}}, {"b", {4, 1}}}, fn)}};
}

#define X(T) template Variable<T> add<T>(const Variable<T>&, const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
