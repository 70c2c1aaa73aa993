// The drivers of conv2d's kernels over a batch (src/conv_driver.cpp): each image through the
// kernel its geometry calls for (src/conv_kernels.hpp), with per-thread buffers, on the OpenMP
// threads or, inside a shard, in chunks that the threads of finished shards can help with
// (detail::for_chunks). Raw NCHW pointers; used by conv2d and conv2d_max_pool2d.
#pragma once

#include <cstddef>

#include "conv_kernels.hpp"

namespace xgrad::detail {

/// Where the drivers put each image's output and find each image's output gradient, for an op that
/// consumes the convolution image by image (conv2d_max_pool2d pools it while it is in cache).
/// Called from whichever thread runs the image, so implementations use thread_local buffers.
template <class T>
struct ConvImageIo {
  virtual ~ConvImageIo() = default;
  /// The forward writes image n's output (co×ho×wo) here...
  virtual T* output(int n) = 0;
  /// ...and then calls this with the same pointer.
  virtual void finish_output(int n, T* y) = 0;
  /// The backward reads image n's dY (co×ho×wo) from here; it stays valid until the next call
  /// in the same thread.
  virtual const T* grad_output(int n) = 0;
};

/// y[n] = conv(x[n], w) + b for the g.n images (x n×c×h×w, w co×(c/groups)×kh×kw, b co or null).
/// Image n's output goes to y + n·co·ho·wo, or, with `io`, to io->output(n) (y unused).
template <class T>
void conv_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g,
                  ConvImageIo<T>* io = nullptr);

/// dx (when non-null) = Σ_gr col2im(W_grᵀ·dY_gr); dw, db (when non-null) = Σ_n dY·colᵀ and
/// Σ_n,l dY; dY of image n at gy + n·co·ho·wo, or, with `io`, io->grad_output(n) (gy unused).
/// dW and db are summed in chunks fixed by the geometry, in chunk order: the result does not
/// depend on the threads' timing.
template <class T>
void conv_backward(const T* x, const T* w, const T* gy, T* dx, T* dw, T* db, const ConvGeom& g,
                   ConvImageIo<T>* io = nullptr);

/// Output rows per im2col band for elements of `element_size` bytes (ConvGeom::band_rows): as
/// many as keep a band's column matrix within 1 MB (L2).
int conv_band_rows(const ConvGeom& g, std::size_t element_size);

}  // namespace xgrad::detail
