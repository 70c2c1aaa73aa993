// What the convolution ops (conv2d, conv2d_relu, conv2d_max_pool2d) share: validation, and the
// gradients their nodes return.
#pragma once

#include <cstddef>
#include <vector>

#include "conv_driver.hpp"
#include "xgrad/node.hpp"
#include "xgrad/ops.hpp"

namespace xgrad::detail {

/// Every size of a convolution of an input of shape xs with a weight of shape ws (and a bias of
/// shape *bs, when non-null) under `p`, band_rows included, for elements of `element_size` bytes.
/// Throws xgrad::Error naming `op` and the shapes when they do not fit. (ops/conv2d.cpp)
ConvGeom conv_geometry(const char* op, const Shape& xs, const Shape& ws, const Shape* bs,
                       const Conv2DParams& p, std::size_t element_size);

/// The gradients of a convolution node with inputs (x, w) or (x, w, b): dx, dw and db for those
/// that need one (no_grad() for the others), by conv_backward from dY at gy, or with `io` from
/// io->grad_output(n) image by image.
template <class T>
std::vector<Tensor<T>> conv_gradients(const Node<T>& node, const ConvGeom& g, bool has_bias,
                                      const T* gy, ConvImageIo<T>* io = nullptr) {
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
                     g, io);
  return grads;
}

}  // namespace xgrad::detail
