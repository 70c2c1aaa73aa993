// What the convolution ops (conv2d, conv2d_relu, conv2d_max_pool2d) share: validation, the
// gradients their nodes return, the fused ops' node, and the registry's sample inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "conv_driver.hpp"
#include "xgrad/node.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad::detail {

/// Every size of a convolution of an input of shape xs with a weight of shape ws (and a bias of
/// shape *bs, when non-null) under `p`, band_rows included, for elements of `element_size` bytes.
/// Throws xgrad::Error naming `op` and the shapes when they do not fit. (ops/conv2d.cpp)
ConvGeom conv_geometry(const char* op, const Shape& xs, const Shape& ws, const Shape* bs,
                       const Conv2DParams& p, std::size_t element_size);

/// The same for an op's inputs x, w and b (b undefined: no bias).
template <class T>
ConvGeom conv_geometry(const char* op, const Variable<T>& x, const Variable<T>& w,
                       const Variable<T>& b, const Conv2DParams& p) {
  const Shape bs = b.defined() ? b.shape() : Shape{};
  return conv_geometry(op, x.shape(), w.shape(), b.defined() ? &bs : nullptr, p, sizeof(T));
}

/// The gradients of a convolution node with inputs (x, w) or (x, w, b): dx, dw and db for those
/// that need one (no_grad() for the others), by conv_backward from dY at gy, or from `source`
/// image by image.
template <class T>
std::vector<Tensor<T>> conv_gradients(const Node<T>& node, const ConvGeom& g, bool has_bias,
                                      const T* gy, ConvGradSource<T>* source = nullptr) {
  std::vector<Tensor<T>> grads(has_bias ? 3 : 2, no_grad<T>());
  T* d[3] = {nullptr, nullptr, nullptr};
  const Shape shapes[3] = {
      shape_of(node.input_value(0)), shape_of(node.input_value(1)), {std::size_t(g.co)}};
  for (std::size_t i = 0; i < grads.size(); ++i)
    if (node.needs_input_grad(i)) {
      grads[i] = empty_tensor<T>(shapes[i]);
      d[i] = grads[i].data();
    }
  if (d[0] != nullptr || d[1] != nullptr || d[2] != nullptr)
    conv_backward<T>(node.input_value(0).data(), node.input_value(1).data(), gy, d[0], d[1], d[2],
                     g, source);
  return grads;
}

/// The node of a convolution fused with what follows it (conv2d_relu, conv2d_max_pool2d): the
/// convolution's gradients, its dY rebuilt image by image by a Source, a ConvGradSource<T> made
/// as Source(geometry, gradient of the fused output, marks), from the one byte per fused output
/// (`marks`) that the forward kept.
template <class T, class Source>
struct FusedConvNode final : Node<T> {
  FusedConvNode(const char* name, ConvGeom geom, bool has_bias, std::vector<std::uint8_t> marks)
      : name_(name), geom_(geom), has_bias_(has_bias), marks_(std::move(marks)) {}
  const char* name() const override { return name_; }
  std::vector<Tensor<T>> backward(const Tensor<T>& gy) override {
    Source source(geom_, gy.data(), marks_.data());
    return conv_gradients<T>(*this, geom_, has_bias_, nullptr, &source);
  }
  const char* name_;
  ConvGeom geom_;
  bool has_bias_;
  std::vector<std::uint8_t> marks_;
};

/// A registry case's inputs x, w and a bias b of w's output channels, all drawn uniformly.
inline std::vector<SampleInput> conv_sample_inputs(Shape x, Shape w) {
  const std::size_t co = w[0];
  return {{"x", std::move(x)}, {"w", std::move(w)}, {"b", {co}}};
}

}  // namespace xgrad::detail
