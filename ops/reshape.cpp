// reshape: the same elements (row-major) in a new shape.
#include <algorithm>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
Tensor<T> copy_as(const Tensor<T>& t, const Shape& shape) {
  Tensor<T> out = empty_tensor<T>(shape);
  std::copy(t.data(), t.data() + t.size(), out.data());
  return out;
}

template <class T>
struct ReshapeNode final : Node<T> {
  const char* name() const override { return "reshape"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    return gradients(copy_as(g, shape_of(this->input_value(0))));
  }
};

}  // namespace

template <class T>
Variable<T> reshape(const Variable<T>& x, const Shape& shape) {
  const Tensor<T>& xv = x.value();
  if (shape_numel(shape) != xv.size())
    throw Error("reshape: cannot reshape input " + shape_str(xv) + " (" +
                std::to_string(xv.size()) + " elements) to " + shape_str(shape) + " (" +
                std::to_string(shape_numel(shape)) + " elements)");
  return record<ReshapeNode<T>>(copy_as(xv, shape), {x});
}

OpInfo reshape_info() {
  return {
      "reshape",
      {make_case("matrix_to_vector", {{"x", {3, 4}}},
                 [](const auto& in) { return reshape(in[0], {12}); }),
       make_case("image_to_rows", {{"x", {2, 3, 2, 2}}},
                 [](const auto& in) {
                   return reshape(in[0], {6, 4});
                 }),
       make_case("vector_to_3d", {{"x", {12}}},
                 [](const auto& in) {
                   return reshape(in[0], {2, 1, 6});
                 }),
       make_case("to_scalar", {{"x", {1, 1}}}, [](const auto& in) { return reshape(in[0], {}); })}};
}

#define X(T) template Variable<T> reshape<T>(const Variable<T>&, const Shape&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
