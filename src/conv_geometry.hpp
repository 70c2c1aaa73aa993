// conv2d's validation, shared with the ops that run its drivers (conv2d_max_pool2d).
#pragma once

#include "conv_kernels.hpp"
#include "xgrad/ops.hpp"

namespace xgrad::detail {

/// Every size of a convolution of an input of shape xs with a weight of shape ws (and a bias of
/// shape *bs, when non-null) under `p`, band_rows included, for elements of `element_size` bytes.
/// Throws xgrad::Error naming `op` and the shapes when they do not fit.
ConvGeom conv_geometry(const char* op, const Shape& xs, const Shape& ws, const Shape* bs,
                       const Conv2DParams& p, std::size_t element_size);

}  // namespace xgrad::detail
