// concat: joins tensors along one axis.
#include <algorithm>
#include <string>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

// Row-major, each input is `outer` contiguous blocks of block[i] = shape[axis]·inner elements,
// and the output interleaves them: outer × (block[0], block[1], ...).
template <class T>
struct ConcatNode final : Node<T> {
  ConcatNode(std::size_t outer, std::vector<std::size_t> blocks)
      : outer_(outer), blocks_(std::move(blocks)) {}
  const char* name() const override { return "concat"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const std::size_t k = blocks_.size();
    std::size_t row = 0;
    for (std::size_t b : blocks_) row += b;
    std::vector<Tensor<T>> grads(k, no_grad<T>());
    std::size_t offset = 0;
    for (std::size_t i = 0; i < k; offset += blocks_[i], ++i) {
      if (!this->needs_input_grad(i)) continue;
      grads[i] = empty_tensor<T>(shape_of(this->input_value(i)));
      const std::size_t b = blocks_[i];
      const T* src = g.data() + offset;
      T* dst = grads[i].data();
      for (std::size_t o = 0; o < outer_; ++o)
        std::copy(src + o * row, src + o * row + b, dst + o * b);
    }
    return grads;
  }
  std::size_t outer_;
  std::vector<std::size_t> blocks_;
};

std::string shapes_list(const std::vector<Shape>& shapes) {
  std::string s;
  for (std::size_t i = 0; i < shapes.size(); ++i) s += (i ? ", " : "") + shape_str(shapes[i]);
  return s;
}

}  // namespace

template <class T>
Variable<T> concat(const std::vector<Variable<T>>& xs, std::size_t axis) {
  if (xs.empty()) throw Error("concat: needs at least one input, got an empty list");
  std::vector<Shape> shapes;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].defined())
      throw Error("concat: input " + std::to_string(i) + " is an empty Variable");
    shapes.push_back(xs[i].shape());
  }
  const Shape& first = shapes[0];
  if (axis >= first.size())
    throw Error("concat: axis " + std::to_string(axis) + " is out of range for inputs of rank " +
                std::to_string(first.size()) + " (shapes " + shapes_list(shapes) + ")");
  for (const Shape& s : shapes) {
    bool ok = s.size() == first.size();
    for (std::size_t a = 0; ok && a < s.size(); ++a)
      if (a != axis && s[a] != first[a]) ok = false;
    if (!ok)
      throw Error("concat: inputs must have the same rank and match in every dimension but axis " +
                  std::to_string(axis) + " (shapes " + shapes_list(shapes) + ")");
  }
  std::size_t outer = 1, inner = 1;
  for (std::size_t a = 0; a < axis; ++a) outer *= first[a];
  for (std::size_t a = axis + 1; a < first.size(); ++a) inner *= first[a];
  Shape out_shape = first;
  out_shape[axis] = 0;
  std::vector<std::size_t> blocks;
  for (const Shape& s : shapes) {
    out_shape[axis] += s[axis];
    blocks.push_back(s[axis] * inner);
  }
  const std::size_t row = out_shape[axis] * inner;
  Tensor<T> y = empty_tensor<T>(out_shape);
  std::size_t offset = 0;
  for (std::size_t i = 0; i < xs.size(); offset += blocks[i], ++i) {
    const T* src = xs[i].value().data();
    T* dst = y.data() + offset;
    const std::size_t b = blocks[i];
    for (std::size_t o = 0; o < outer; ++o) std::copy(src + o * b, src + o * b + b, dst + o * row);
  }
  return record<ConcatNode<T>>(std::move(y), xs, outer, std::move(blocks));
}

OpInfo concat_info() {
  const auto fn0 = [](const auto& in) { return concat(in, 0); };
  const auto fn1 = [](const auto& in) { return concat(in, 1); };
  const auto fn_last = [](const auto& in) { return concat(in, in[0].dim() - 1); };
  const auto self = [](const auto& in) {
    auto xs = in;
    xs.push_back(in[0]);
    return concat(xs, 1);
  };
  return {
      "concat",
      {make_case("rows", {{"a", {2, 3}}, {"b", {1, 3}}}, fn0),
       make_case("channels_nchw", {{"a", {2, 1, 2, 2}}, {"b", {2, 3, 2, 2}}, {"c", {2, 2, 2, 2}}},
                 fn1),
       make_case("last_axis", {{"a", {2, 2, 1}}, {"b", {2, 2, 3}}}, fn_last),
       make_case("single_input", {{"a", {3, 2}}}, fn1),
       make_case("same_input_twice", {{"a", {2, 2}}, {"b", {2, 1}}}, self),
       make_case("constant_input", {{"a", {2, 2}}, {"b", {2, 3}, uniform_init(), false}}, fn1)}};
}

#define X(T) template Variable<T> concat<T>(const std::vector<Variable<T>>&, std::size_t);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
