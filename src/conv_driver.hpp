// The drivers of conv2d's kernels over a batch (src/conv_driver.cpp): each image through the
// kernel its geometry calls for (src/conv_kernels.hpp), with per-thread buffers, on the OpenMP
// threads or, inside a shard, in chunks that the threads of finished shards can help with
// (detail::for_chunks). Raw NCHW pointers; used by conv2d and conv2d_max_pool2d.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "conv_kernels.hpp"

namespace xgrad::detail {

/// Where the forward puts each image's output, for an op that consumes the convolution image by
/// image (conv2d_max_pool2d pools it, conv2d_relu applies its ReLU, while it is in cache). Called
/// from whichever thread runs the image, so implementations use per-thread buffers (conv_scratch).
template <class T>
struct ConvOutputSink {
  virtual ~ConvOutputSink() = default;
  /// The forward writes image n's output (co×ho×wo) here...
  virtual T* output(int n) = 0;
  /// ...and then calls this with the same pointer.
  virtual void finish_output(int n, T* y) = 0;
};

/// Where the backward finds each image's dY (co×ho×wo), for such an op: it stays valid until the
/// next call in the same thread.
template <class T>
struct ConvGradSource {
  virtual ~ConvGradSource() = default;
  virtual const T* grad_output(int n) = 0;
};

/// A per-thread buffer of at least `elements` elements that only grows, 64-byte aligned (GEMM
/// packs aligned rows faster): no allocation per image on the hot path. Each slot is one buffer
/// per thread; the drivers use slots 0-4 (0: the column band, 1: a padded image or staged planes,
/// 2-4: the direct kernels' accumulators and staging), the ops that drive them kOpScratchSlot and
/// up.
constexpr int kOpScratchSlot = 8;
template <class T, int Slot>
T* conv_scratch(std::size_t elements) {
  thread_local std::vector<T> buffer;
  constexpr std::size_t extra = 64 / sizeof(T);
  if (buffer.size() < elements + extra) buffer.resize(elements + extra);
  const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(buffer.data());
  return reinterpret_cast<T*>((p + 63) & ~std::uintptr_t(63));
}

/// y[n] = conv(x[n], w) + b for the g.n images (x n×c×h×w, w co×(c/groups)×kh×kw, b co or null).
/// Image n's output goes to y + n·co·ho·wo, or, with a sink, to sink->output(n) (y unused).
template <class T>
void conv_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g,
                  ConvOutputSink<T>* sink = nullptr);

/// dx (when non-null) = Σ_gr col2im(W_grᵀ·dY_gr); dw, db (when non-null) = Σ_n dY·colᵀ and
/// Σ_n,l dY; dY of image n at gy + n·co·ho·wo, or, with a source, source->grad_output(n) (gy
/// unused).
/// dW and db are summed in chunks fixed by the geometry, in chunk order: the result does not
/// depend on the threads' timing.
template <class T>
void conv_backward(const T* x, const T* w, const T* gy, T* dx, T* dw, T* db, const ConvGeom& g,
                   ConvGradSource<T>* source = nullptr);

/// Output rows per im2col band for elements of `element_size` bytes (ConvGeom::band_rows): as
/// many as keep a band's column matrix within 1 MB (L2).
int conv_band_rows(const ConvGeom& g, std::size_t element_size);

}  // namespace xgrad::detail
