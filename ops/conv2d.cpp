// conv2d: NCHW convolution with per-axis stride, padding and dilation, and groups.
// Per image and group: im2col of a band of output rows into a per-thread buffer that stays in L2,
// then one GEMM on raw pointers; few-channel float layers use direct kernels instead. OpenMP runs
// over the images; OpenBLAS stays single-threaded. The kernels are in src/conv_kernels.hpp
// (src/conv_im2col.cpp, src/conv_direct.cpp); this file owns validation, the forward and backward
// drivers, the per-thread buffers and the registry entry.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../src/conv_kernels.hpp"
#include "../src/parallel_loop.hpp"
#include "../src/shard_help.hpp"
#include "xgrad/blas.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"
#include "xgrad/runtime.hpp"

namespace xgrad {

namespace {

using detail::col2im_band;
using detail::ConvGeom;
using detail::direct_eligible;
using detail::im2col_band;
using detail::Index;
using detail::pad_image;
using detail::unpad_image;
#ifdef XGRAD_SIMD
using detail::direct_dw;
using detail::direct_dw_finish;
using detail::direct_forward;
using detail::lanes_eligible;
using detail::lanes_forward;
using detail::tap_offsets;
using detail::transpose_weights;
#endif

// Bytes of im2col buffer per band: large enough for an efficient GEMM, small enough for L2.
constexpr std::size_t kColBudgetBytes = 1024 * 1024;

// The largest C (in entries) for which OpenBLAS 0.3.21 (SkylakeX) runs a transposed-B product
// in its small-matrix kernel.
constexpr int kSmallGemmC = 1200;

// Images per chunk of a shard's loop over the images (detail::for_chunks), for `passes` passes
// over each image of 2·co·k·l flops each (the forward: 1; the backward: dX and dW): about
// kChunkFlops, 50-80 us of work on the EPYC. It depends only on the geometry, so the
// backward's per-chunk dW sums do too. Chosen on LeNet-5 training steps at 2 threads, batch 64,
// blocks of 50 steps alternating in one process (medians, 3,510 steps each): against one chunk
// per call, 1.5 MFLOP chunks took 1.9-3.6% off, 3 MFLOP 4.4%, 4 MFLOP 5.6%; 4 MFLOP beat 8 by
// 4.0%, 0.5 MFLOP lost 3.5% to 1.5, and 2.5 and 4 MFLOP were level. (Smaller chunks share the
// work out more finely but cost more; not measured why: perhaps the outputs a helper writes stay
// in the other core's cache, and more partial dW sums.)
constexpr double kChunkFlops = 3e6;
constexpr int kMaxBackwardChunks = 8;
int images_per_chunk(const ConvGeom& g, int passes) {
  const double flops = 2.0 * double(g.co) * double(g.k) * double(g.l) * double(passes);
  return std::clamp(int(kChunkFlops / std::max(flops, 1.0)) + 1, 1, std::max(g.n, 1));
}

// Per-thread buffers that only grow: no allocation per image on the hot path. Slot 0 holds the
// column band, slot 1 a zero-padded image. 64-byte aligned: GEMM packs aligned rows faster.
template <class T, int Slot>
T* scratch(std::size_t elements) {
  thread_local std::vector<T> buffer;
  constexpr std::size_t extra = 64 / sizeof(T);
  if (buffer.size() < elements + extra) buffer.resize(elements + extra);
  const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(buffer.data());
  return reinterpret_cast<T*>((p + 63) & ~std::uintptr_t(63));
}

// Row pitch of a column band: whole cache lines, so every row starts aligned.
template <class T>
int band_pitch(const ConvGeom& g) {
  constexpr int line = int(64 / sizeof(T));
  return (g.band_rows * g.wo + line - 1) / line * line;
}

template <class T>
void conv_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g) {
  const Index x_image = Index(g.c) * g.h * g.w;
  const Index xp_group = Index(g.cg) * g.hp * g.wp;
  const Index y_image = Index(g.co) * g.l;
  const Index w_group = Index(g.cog) * g.k;
  const int ld = band_pitch<T>(g);
  const std::size_t band_elems = std::size_t(g.k + 1) * std::size_t(ld);
  const std::size_t padded_elems = std::size_t(g.c) * std::size_t(g.hp) * std::size_t(g.wp);
  // Float kernels that need no column matrix (AVX-512 or AVX2): for few input channels, and for few
  // output channels with short rows. Both read the weights transposed.
  bool direct = false, lanes = false;
#ifdef XGRAD_SIMD
  constexpr bool kFloat = std::is_same_v<T, float>;
  direct = kFloat && direct_eligible(g);
  const bool flat = detail::kFlatPays && direct && detail::flat_eligible(g);
  const bool shift = direct && !flat && detail::shift_pays(g);
  lanes = kFloat && !direct && lanes_eligible(g);
  std::vector<float> wt;
  std::vector<Index> offsets;
  if constexpr (kFloat) {
    if ((direct && !flat) || lanes) {
      const int pitch = direct ? g.co : detail::kLanesPitch;
      wt.resize(std::size_t(g.k) * std::size_t(pitch));
      transpose_weights(w, g, pitch, wt.data());
    }
    if (lanes) {
      offsets.resize(std::size_t(g.k));
      tap_offsets(g, offsets.data());
    }
  }
#endif
  // In the GEMM the bias rides as one more column of W against a row of ones in the band, which
  // saves a pass over the output: wb[gr] = [W_gr | b_gr], cog × (k + 1).
  const int kb = b != nullptr ? g.k + 1 : g.k;
  std::vector<T> wb;
  if (b != nullptr && !g.pointwise && !direct && !lanes) {
    wb.resize(std::size_t(g.co) * std::size_t(kb));
    for (int o = 0; o < g.co; ++o) {
      std::copy(w + Index(o) * g.k, w + Index(o + 1) * g.k, wb.begin() + Index(o) * kb);
      wb[std::size_t(o) * std::size_t(kb) + std::size_t(g.k)] = b[o];
    }
  }
  const T* wk = wb.empty() ? w : wb.data();
  // Images are independent, so a thread that finishes early takes images from the other's share:
  // the output does not depend on which thread computes an image, and a slower core (this VM's
  // vCPUs each run through phases about 1.5x slower) does not hold the other back. Against a
  // static split, 2 threads took the forwards from a median of 71% to 86% of the sgemm ceiling for
  // LeNet conv2, 57% to 62% for convnet conv1 and 76% to 81% for convnet conv2 (schedule(dynamic),
  // 5 alternating runs). Each thread starting on its own share (detail::for_each_own_first) keeps
  // an image's output on one core from call to call, which schedule(dynamic) did not: the
  // convnet's conv1 forward 1.12-1.28x again. The backward keeps a static split: its per-thread dW
  // sums must not depend on timing.
  const auto forward_image = [&](int n) {
    const T* xn = x + n * x_image;
    T* yn = y + n * y_image;
    if (g.pointwise) {
      if (b != nullptr)
        for (int o = 0; o < g.co; ++o) std::fill(yn + o * g.l, yn + (o + 1) * g.l, b[o]);
      const T beta = b != nullptr ? T(1) : T(0);
      for (int gr = 0; gr < g.groups; ++gr)
        blas::gemm(false, false, g.cog, int(g.l), g.k, T(1), w + gr * w_group, g.k,
                   xn + gr * xp_group, int(g.l), beta, yn + Index(gr) * g.cog * g.l, int(g.l));
      return;
    }
#ifdef XGRAD_SIMD
    if constexpr (kFloat) {
      if (shift) {  // its own staged planes, no padded copy
        T* s = scratch<T, 1>(detail::shift_buffer(g));
        detail::shift_stage(xn, g, s);
        detail::shift_forward(s, wt.data(), b, yn, g);
        return;
      }
      if (direct) {  // always staged: the kernels read kDirectSlack floats past the image
        T* xp = scratch<T, 1>(padded_elems + detail::kDirectSlack);
        pad_image(xn, g, xp);
        std::fill(xp + padded_elems, xp + padded_elems + detail::kDirectSlack, T(0));
        if (flat) {
          const Index ld = detail::flat_pitch(g);
          T* s0 = scratch<T, 0>(std::size_t(detail::kFlatFront + g.k * ld)) + detail::kFlatFront;
          detail::flat_stage(xp, g, s0, ld);
          detail::flat_forward(s0, ld, w, b, yn, g);
        } else {
          direct_forward(xp, wt.data(), b, yn, g);
        }
        return;
      }
    }
#endif
    const T* xp = xn;
    if (g.padded) {
      T* buf = scratch<T, 1>(padded_elems);
      pad_image(xn, g, buf);
      xp = buf;
    }
#ifdef XGRAD_SIMD
    if constexpr (kFloat)
      if (lanes) {
        lanes_forward(xp, wt.data(), offsets.data(), b,
                      scratch<T, 0>(std::size_t(g.l) * detail::kLanesPitch), yn, g);
        return;
      }
#endif
    T* col = scratch<T, 0>(band_elems);
    if (b != nullptr) std::fill(col + Index(g.k) * ld, col + Index(g.k + 1) * ld, T(1));
    for (int gr = 0; gr < g.groups; ++gr) {
      const T* wg = wk + Index(gr) * g.cog * kb;
      T* yg = yn + Index(gr) * g.cog * g.l;
      for (int i0 = 0; i0 < g.ho; i0 += g.band_rows) {
        const int i1 = std::min(g.ho, i0 + g.band_rows);
        const int lt = (i1 - i0) * g.wo;
        im2col_band(xp + gr * xp_group, g, i0, i1, col, ld);
        blas::gemm(false, false, g.cog, lt, kb, T(1), wg, kb, col, ld, T(0), yg + Index(i0) * g.wo,
                   int(g.l));
      }
    }
  };
  // Inside a shard there is one thread: the images then run here, without an OpenMP region of one
  // thread, which costs more than a small image (detail::for_ranges), in chunks that the threads
  // of shards that have ended can take (detail::for_chunks).
  if (num_threads() > 1) {
    detail::for_each_own_first(g.n, num_threads(), forward_image);
  } else {
    const int per_chunk = images_per_chunk(g, 1);
    detail::for_chunks((g.n + per_chunk - 1) / per_chunk, [&](int c) {
      for (int n = c * per_chunk; n < std::min(g.n, (c + 1) * per_chunk); ++n) forward_image(n);
    });
  }
}

// dx (when non-null) = Σ_gr col2im(W_grᵀ·dY_gr); dw, db (when non-null) = Σ_n dY·colᵀ and Σ_n,l dY.
template <class T>
void conv_backward(const T* x, const T* w, const T* gy, T* dx, T* dw, T* db, const ConvGeom& g) {
  const Index x_image = Index(g.c) * g.h * g.w;
  const Index xp_group = Index(g.cg) * g.hp * g.wp;
  const Index y_image = Index(g.co) * g.l;
  const Index w_group = Index(g.cog) * g.k;
  const Index w_size = Index(g.co) * g.k;
  const int ld = band_pitch<T>(g);
  const std::size_t band_elems = std::size_t(g.k) * std::size_t(ld);
  const std::size_t padded_elems = std::size_t(g.c) * std::size_t(g.hp) * std::size_t(g.wp);
  const int threads = std::max(1, std::min(num_threads(), g.n));
  // With one thread (in a shard, or alone), the images run in chunks (detail::for_chunks) of a size
  // set by the geometry; with more, one share per thread, split as schedule(static) splits them.
  // At most kMaxBackwardChunks chunks, each with its own dW: with chunks of one image, a batch of
  // 256 through a 3x3 layer of 64 channels would zero and add 256 copies of its 37k weights. (8
  // against 16, LeNet-5 at 2 threads, blocks alternating in one process: the median step was 0.5%
  // shorter at batch 256 and 1.4% at 128; at 64 and below the two are the same.)
  const int per_chunk =
      std::max(images_per_chunk(g, (dx != nullptr ? 1 : 0) + (dw != nullptr ? 1 : 0)),
               (g.n + kMaxBackwardChunks - 1) / kMaxBackwardChunks);
  const int parts = threads > 1 ? threads : (g.n + per_chunk - 1) / per_chunk;
  // dW and db accumulators per part, summed at the end in part order (no atomics, no false sharing
  // of rows): the result depends on the parts, not on which thread ran them.
  const Index acc_size = (dw != nullptr ? w_size : 0) + (db != nullptr ? g.co : 0);
  std::vector<T> acc(std::size_t(acc_size) * std::size_t(parts), T(0));
#ifdef XGRAD_SIMD
  // Few output channels (LeNet conv2): dX by the folded kernel (detail::fold_dx), no GEMM of
  // K = co and no col2im.
  const bool fold_dx_pass =
      std::is_same_v<T, float> && dx != nullptr && detail::fold_dx_eligible(g);
  std::vector<float> wfold;
  if constexpr (std::is_same_v<T, float>)
    if (fold_dx_pass) {
      wfold.resize(std::size_t(g.k) * std::size_t(g.co));
      detail::fold_dx_weights(w, g, wfold.data());
    }
#else
  constexpr bool fold_dx_pass = false;
#endif
#ifdef XGRAD_SIMD
  std::vector<Index> offsets;  // the lanes dW kernel's tap offsets
  if (std::is_same_v<T, float> && dw != nullptr && lanes_eligible(g)) {
    offsets.resize(std::size_t(g.k));
    tap_offsets(g, offsets.data());
  }
#endif
  // The images [first, last) of part t, into its accumulators.
  const auto backward_images = [&](int t, int first, int last) {
    T* acc_t = acc.data() + Index(t) * acc_size;
    T* dw_t = dw != nullptr ? acc_t : nullptr;
    T* db_t = db != nullptr ? acc_t + (dw != nullptr ? w_size : 0) : nullptr;
    T* col = g.pointwise ? nullptr : scratch<T, 0>(band_elems);
#ifdef XGRAD_SIMD
    // The first layer (no dX) of few input channels: direct dW into lane-wise accumulators, from
    // shift_stage's planes where the shift kernel pays (shift_pays), else from the padded image.
    const bool direct_dw_pass = std::is_same_v<T, float> && dx == nullptr && direct_eligible(g);
    const bool shift_dw_pass = direct_dw_pass && dw_t != nullptr && detail::shift_pays(g);
    float* planes = shift_dw_pass ? scratch<float, 1>(detail::shift_buffer(g)) : nullptr;
#else
    constexpr bool shift_dw_pass = false;
#endif
    // With padding, x is staged padded (for dW) and dX accumulates in a padded image: bands of
    // the two interleave, so they get separate halves of the buffer.
    T* pad_buf = g.padded && !shift_dw_pass ? scratch<T, 1>(padded_elems * 2) : nullptr;
#ifdef XGRAD_SIMD
    float* vacc = nullptr;
    if (direct_dw_pass && dw_t != nullptr) {
      const std::size_t vn = std::size_t(g.co) * std::size_t(g.k) * detail::kDirectLanes;
      vacc = scratch<float, 2>(vn);
      std::fill(vacc, vacc + vn, 0.f);
    }
    // Few output channels and short rows (LeNet conv2): dW by the adjoint of the lanes kernel, into
    // a transposed per-thread accumulator, with no column matrix.
    const bool lanes_dw_pass = std::is_same_v<T, float> && dw_t != nullptr && lanes_eligible(g);
    float* dwt = nullptr;
    float* gyt = nullptr;
    if (lanes_dw_pass) {
      const std::size_t dn = std::size_t(g.k) * detail::kLanesPitch;
      dwt = scratch<float, 2>(dn);
      std::fill(dwt, dwt + dn, 0.f);
      gyt = scratch<float, 3>(std::size_t(g.l) * detail::kLanesPitch);
    }
    // fold_dx's staged dY: the zeros around it stay from image to image, so cleared once.
    float* fold_buf = nullptr;
    if (fold_dx_pass) {
      fold_buf = scratch<float, 4>(detail::fold_dx_buffer(g));
      detail::fold_dx_clear(fold_buf, g);
    }
#else
    constexpr bool lanes_dw_pass = false;
#endif
    for (int n = first; n < last; ++n) {
      const T* xn = x + n * x_image;
      const T* gyn = gy + n * y_image;
      T* dxn = dx != nullptr ? dx + n * x_image : nullptr;
      if (db_t != nullptr)
        for (int o = 0; o < g.co; ++o) {
          const T* r = gyn + o * g.l;
          T s = 0;
#pragma omp simd reduction(+ : s)
          for (Index j = 0; j < g.l; ++j) s += r[j];
          db_t[o] += s;
        }
      if (g.pointwise) {
        const int l = int(g.l);
        for (int gr = 0; gr < g.groups; ++gr) {
          const T* gyg = gyn + Index(gr) * g.cog * g.l;
          if (dw_t != nullptr)
            blas::gemm(false, true, g.cog, g.k, l, T(1), gyg, l, xn + gr * xp_group, l, T(1),
                       dw_t + gr * w_group, g.k);
          if (dxn != nullptr)
            blas::gemm(true, false, g.k, l, g.cog, T(1), w + gr * w_group, g.k, gyg, l, T(0),
                       dxn + gr * xp_group, l);
        }
        continue;
      }
#ifdef XGRAD_SIMD
      if constexpr (std::is_same_v<T, float>) {
        if (shift_dw_pass) {
          detail::shift_stage(xn, g, planes);
          detail::shift_dw(planes, gyn, vacc, g);
          continue;
        }
        if (direct_dw_pass) {
          if (dw_t != nullptr) {
            const T* xp = xn;
            if (g.padded) {
              pad_image(xn, g, pad_buf);
              xp = pad_buf;
            }
            direct_dw(xp, gyn, vacc, g);
          }
          continue;
        }
      }
#endif
      const T* xp = xn;
      T* dxp = dxn;
      if (g.padded) {
        if (dw_t != nullptr) {
          pad_image(xn, g, pad_buf);
          xp = pad_buf;
        }
        if (dxn != nullptr) dxp = pad_buf + padded_elems;
      }
#ifdef XGRAD_SIMD
      if constexpr (std::is_same_v<T, float>) {
        if (lanes_dw_pass) detail::lanes_dw(xp, gyn, offsets.data(), gyt, dwt, g);
        if (fold_dx_pass && dxp != nullptr)  // writes every element of dxp
          detail::fold_dx(gyn, wfold.data(), fold_buf, dxp, g);
      }
#endif
      if (dxp != nullptr && !fold_dx_pass) std::fill(dxp, dxp + padded_elems, T(0));
      for (int gr = 0; gr < g.groups; ++gr) {
        const T* wg = w + gr * w_group;
        const T* gyg = gyn + Index(gr) * g.cog * g.l;
        for (int i0 = 0; i0 < g.ho; i0 += g.band_rows) {
          const int i1 = std::min(g.ho, i0 + g.band_rows);
          const int lt = (i1 - i0) * g.wo;
          const T* gyb = gyg + Index(i0) * g.wo;
          if (dw_t != nullptr && !lanes_dw_pass) {
            im2col_band(xp + gr * xp_group, g, i0, i1, col, ld);
            // dW_gr += dY·colᵀ in column blocks of at most kSmallGemmC / cog: OpenBLAS's small-
            // matrix kernel takes this transposed product only when C has at most 1200 entries
            // (and K = lt >= 32); otherwise it packs both operands, which costs more here.
            int kc = std::max(1, kSmallGemmC / g.cog);
            if (lt < 32 || (g.k + kc - 1) / kc > 4) kc = g.k;  // else many thin products
            for (int k0 = 0; k0 < g.k; k0 += kc)
              blas::gemm(false, true, g.cog, std::min(kc, g.k - k0), lt, T(1), gyb, int(g.l),
                         col + Index(k0) * ld, ld, T(1), dw_t + gr * w_group + k0, g.k);
          }
          if (dxp != nullptr && !fold_dx_pass) {
            // The column buffer is free again: reuse it for d(col).
            blas::gemm(true, false, g.k, lt, g.cog, T(1), wg, g.k, gyb, int(g.l), T(0), col, ld);
            col2im_band(col, g, i0, i1, dxp + gr * xp_group, ld);
          }
        }
      }
      if (dxn != nullptr && g.padded)  // the interior of the padded gradient is dX
        unpad_image(dxp, g, dxn);
    }
#ifdef XGRAD_SIMD
    if constexpr (std::is_same_v<T, float>) {
      if (vacc != nullptr) direct_dw_finish(vacc, dw_t, g);
      if (dwt != nullptr) detail::lanes_dw_finish(dwt, dw_t, g);
    }
#endif
  };
  // Inside a shard there is one thread: it then runs here, without an OpenMP region of one thread
  // (detail::for_ranges says what that costs).
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
      // The images split as schedule(static) splits them: the first n % T threads take one more.
      const int t = omp_get_thread_num(), count = omp_get_num_threads();
      const int q = g.n / count, r = g.n % count;
      const int first = t * q + std::min(t, r);
      backward_images(t, first, first + q + (t < r ? 1 : 0));
    }
  } else {
    detail::for_chunks(parts, [&](int c) {
      backward_images(c, c * per_chunk, std::min(g.n, (c + 1) * per_chunk));
    });
  }
  if (dw != nullptr) std::fill(dw, dw + w_size, T(0));
  if (db != nullptr) std::fill(db, db + g.co, T(0));
  for (int t = 0; t < parts; ++t) {
    const T* acc_t = acc.data() + Index(t) * acc_size;
    if (dw != nullptr)
      for (Index i = 0; i < w_size; ++i) dw[i] += acc_t[i];
    if (db != nullptr) {
      const T* db_t = acc_t + (dw != nullptr ? w_size : 0);
      for (int o = 0; o < g.co; ++o) db[o] += db_t[o];
    }
  }
}

template <class T>
struct Conv2DNode final : Node<T> {
  Conv2DNode(ConvGeom geom, bool has_bias) : geom_(geom), has_bias_(has_bias) {}
  const char* name() const override { return "conv2d"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& gy) override {
    const Tensor<T>& x = this->input_value(0);
    const Tensor<T>& w = this->input_value(1);
    const std::size_t n_in = has_bias_ ? 3 : 2;
    std::vector<Tensor<T>> grads(n_in, no_grad<T>());
    T* dx = nullptr;
    T* dw = nullptr;
    T* db = nullptr;
    if (this->needs_input_grad(0)) {
      grads[0] = empty_tensor<T>(shape_of(x));
      dx = grads[0].data();
    }
    if (this->needs_input_grad(1)) {
      grads[1] = empty_tensor<T>(shape_of(w));
      dw = grads[1].data();
    }
    if (has_bias_ && this->needs_input_grad(2)) {
      grads[2] = empty_tensor<T>({std::size_t(geom_.co)});
      db = grads[2].data();
    }
    if (dx != nullptr || dw != nullptr || db != nullptr)
      conv_backward(x.data(), w.data(), gy.data(), dx, dw, db, geom_);
    return grads;
  }
  ConvGeom geom_;
  bool has_bias_;
};

std::string conv_shapes(const Shape& x, const Shape& w) {
  return "(input " + shape_str(x) + ", weight " + shape_str(w) + ")";
}

std::string pair_str(const std::array<int, 2>& v) {
  return "{" + std::to_string(v[0]) + "," + std::to_string(v[1]) + "}";
}

// Validates everything and derives the output size; throws xgrad::Error naming conv2d.
ConvGeom conv_geometry(const Shape& xs, const Shape& ws, const Shape* bs, const Conv2DParams& p) {
  if (xs.size() != 4) throw Error("conv2d: input must be 4-D [N,C,H,W] " + conv_shapes(xs, ws));
  if (ws.size() != 4)
    throw Error("conv2d: weight must be 4-D [C_out,C_in/groups,kH,kW] " + conv_shapes(xs, ws));
  for (int a = 0; a < 2; ++a) {
    if (p.stride[a] < 1)
      throw Error("conv2d: stride must be >= 1 but is " + pair_str(p.stride) + " " +
                  conv_shapes(xs, ws));
    if (p.padding[a] < 0)
      throw Error("conv2d: padding must be >= 0 but is " + pair_str(p.padding) + " " +
                  conv_shapes(xs, ws));
    if (p.dilation[a] < 1)
      throw Error("conv2d: dilation must be >= 1 but is " + pair_str(p.dilation) + " " +
                  conv_shapes(xs, ws));
  }
  if (ws[0] == 0 || ws[1] == 0 || ws[2] == 0 || ws[3] == 0)
    throw Error("conv2d: weight has a zero dimension " + conv_shapes(xs, ws));
  if (p.groups < 1)
    throw Error("conv2d: groups must be >= 1 but is " + std::to_string(p.groups) + " " +
                conv_shapes(xs, ws));
  const std::size_t groups = std::size_t(p.groups);
  if (xs[1] % groups != 0 || ws[0] % groups != 0)
    throw Error("conv2d: groups = " + std::to_string(p.groups) +
                " must divide both input channels " + std::to_string(xs[1]) +
                " and output channels " + std::to_string(ws[0]) + " " + conv_shapes(xs, ws));
  if (xs[1] != ws[1] * groups)
    throw Error("conv2d: input has " + std::to_string(xs[1]) + " channels but weight expects " +
                std::to_string(ws[1] * groups) + " " + conv_shapes(xs, ws) +
                (groups > 1 ? " with groups = " + std::to_string(p.groups) : std::string()));
  if (bs != nullptr && (bs->size() != 1 || (*bs)[0] != ws[0]))
    throw Error("conv2d: bias must be 1-D of C_out = " + std::to_string(ws[0]) + " but has shape " +
                shape_str(*bs) + " " + conv_shapes(xs, ws));
  ConvGeom g{};
  g.n = int(xs[0]);
  g.c = int(xs[1]);
  g.h = int(xs[2]);
  g.w = int(xs[3]);
  g.co = int(ws[0]);
  g.kh = int(ws[2]);
  g.kw = int(ws[3]);
  g.sh = p.stride[0];
  g.sw = p.stride[1];
  g.ph = p.padding[0];
  g.pw = p.padding[1];
  g.dh = p.dilation[0];
  g.dw = p.dilation[1];
  g.groups = p.groups;
  const long span_h = long(g.dh) * (g.kh - 1) + 1, span_w = long(g.dw) * (g.kw - 1) + 1;
  const long padded_h = long(g.h) + 2L * g.ph, padded_w = long(g.w) + 2L * g.pw;
  if (span_h > padded_h || span_w > padded_w)
    throw Error("conv2d: kernel (dilated " + std::to_string(span_h) + "x" + std::to_string(span_w) +
                ") is larger than the padded input " + std::to_string(padded_h) + "x" +
                std::to_string(padded_w) + " " + conv_shapes(xs, ws) + " padding " +
                pair_str(p.padding) + " dilation " + pair_str(p.dilation));
  g.ho = int((padded_h - span_h) / g.sh + 1);
  g.wo = int((padded_w - span_w) / g.sw + 1);
  g.hp = int(padded_h);
  g.wp = int(padded_w);
  g.padded = g.ph > 0 || g.pw > 0;
  g.cg = g.c / g.groups;
  g.cog = g.co / g.groups;
  g.k = g.cg * g.kh * g.kw;
  g.l = Index(g.ho) * g.wo;
  g.pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  return g;
}

}  // namespace

template <class T>
Variable<T> conv2d(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                   const Conv2DParams& params) {
  const Shape bshape = b.defined() ? b.shape() : Shape{};
  ConvGeom g = conv_geometry(x.shape(), w.shape(), b.defined() ? &bshape : nullptr, params);
  const std::size_t row_bytes = sizeof(T) * std::size_t(g.k) * std::size_t(g.wo);
  g.band_rows = int(std::clamp<std::size_t>(kColBudgetBytes / std::max<std::size_t>(row_bytes, 1),
                                            1, std::size_t(g.ho)));
  Tensor<T> y =
      empty_tensor<T>({std::size_t(g.n), std::size_t(g.co), std::size_t(g.ho), std::size_t(g.wo)});
  conv_forward(x.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr,
               y.data(), g);
  return record<Conv2DNode<T>>(std::move(y), {x, w, b}, g, b.defined());
}

OpInfo conv2d_info() {
  const auto conv = [](Conv2DParams p) {
    return [p](const auto& in) { return conv2d(in[0], in[1], in[2], p); };
  };
  const auto conv_nb = [](Conv2DParams p) {
    return [p](const auto& in) { return conv2d(in[0], in[1], {}, p); };
  };
  const auto io = [](Shape x, Shape w) {
    const std::size_t co = w[0];
    return std::vector<SampleInput>{{"x", std::move(x)}, {"w", std::move(w)}, {"b", {co}}};
  };
  Conv2DParams s2;
  s2.stride = {2, 2};
  Conv2DParams s3p1;
  s3p1.stride = {3, 3};
  s3p1.padding = {1, 1};
  Conv2DParams pad12;
  pad12.padding = {1, 2};
  Conv2DParams dil2;
  dil2.dilation = {2, 2};
  dil2.padding = {1, 1};
  Conv2DParams dil_mixed;
  dil_mixed.dilation = {2, 1};
  dil_mixed.stride = {1, 2};
  Conv2DParams g2;
  g2.groups = 2;
  Conv2DParams dw3;
  dw3.groups = 3;
  dw3.padding = {1, 1};
  Conv2DParams dw2_mult;
  dw2_mult.groups = 2;
  dw2_mult.stride = {2, 2};
  Conv2DParams k4s2;
  k4s2.stride = {2, 2};
  k4s2.padding = {1, 1};
  Conv2DParams nonsq;
  nonsq.stride = {1, 2};
  nonsq.padding = {1, 0};
  Conv2DParams g2_1x1;
  g2_1x1.groups = 2;
  std::vector<SampleInput> x_fixed = io({2, 2, 5, 5}, {3, 2, 3, 3});
  x_fixed[0].requires_grad = false;
  return {"conv2d",
          {make_case("basic_batch2", io({2, 2, 6, 5}, {3, 2, 3, 3}), conv({})),
           make_case("batch1", io({1, 3, 5, 5}, {2, 3, 3, 3}), conv({})),
           make_case("odd_7x5_stride2", io({2, 2, 7, 5}, {3, 2, 3, 3}), conv(s2)),
           make_case("stride3_pad1", io({1, 2, 7, 8}, {2, 2, 3, 3}), conv(s3p1)),
           make_case("padding_1_2", io({2, 1, 4, 4}, {2, 1, 3, 3}), conv(pad12)),
           make_case("dilation2", io({1, 2, 7, 7}, {2, 2, 3, 3}), conv(dil2)),
           make_case("dilation_stride_mixed", io({1, 2, 7, 6}, {2, 2, 3, 2}), conv(dil_mixed)),
           make_case("groups2", io({2, 4, 5, 5}, {4, 2, 3, 3}), conv(g2)),
           make_case("depthwise", io({2, 3, 5, 5}, {3, 1, 3, 3}), conv(dw3)),
           make_case("depthwise_multiplier", io({1, 2, 6, 6}, {4, 1, 3, 3}), conv(dw2_mult)),
           make_case("no_bias", {{"x", {2, 2, 5, 5}}, {"w", {3, 2, 3, 3}}}, conv_nb({})),
           make_case("kernel4_stride2", io({1, 2, 6, 6}, {2, 2, 4, 4}), conv(k4s2)),
           make_case("nonsquare_kernel", io({2, 2, 5, 6}, {2, 2, 2, 3}), conv(nonsq)),
           make_case("pointwise_1x1", io({2, 3, 4, 4}, {2, 3, 1, 1}), conv({})),
           make_case("pointwise_groups2", io({1, 4, 3, 3}, {4, 2, 1, 1}), conv(g2_1x1)),
           make_case("input_without_grad", x_fixed, conv({}))}};
}

#define X(T)                                                                                 \
  template Variable<T> conv2d<T>(const Variable<T>&, const Variable<T>&, const Variable<T>&, \
                                 const Conv2DParams&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
