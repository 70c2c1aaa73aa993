// The forward and backward drivers of conv2d (src/conv_driver.hpp): per image, the kernel the
// geometry calls for (src/conv_kernels.hpp), with per-thread buffers, over the images of a batch
// on the OpenMP threads or in the helpable chunks of a shard.
#include "conv_driver.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_kernels.hpp"
#include "parallel_loop.hpp"
#include "shard_help.hpp"
#include "xgrad/blas.hpp"
#include "xgrad/runtime.hpp"

namespace xgrad::detail {

namespace {

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

// Row pitch of a column band: whole cache lines, so every row starts aligned.
template <class T>
int band_pitch(const ConvGeom& g) {
  constexpr int line = int(64 / sizeof(T));
  return (g.band_rows * g.wo + line - 1) / line * line;
}

}  // namespace

template <class T>
void conv_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g,
                  ConvOutputSink<T>* sink) {
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
  const bool shift = direct && detail::shift_pays(g);
  lanes = kFloat && !direct && lanes_eligible(g);
  std::vector<float> wt;
  std::vector<Index> offsets;
  if constexpr (kFloat) {
    if (direct || lanes) {
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
  const auto compute_image = [&](int n, T* yn) {
    const T* xn = x + n * x_image;
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
        T* s = conv_scratch<T, 1>(detail::shift_buffer(g));
        detail::shift_stage(xn, g, s);
        detail::shift_forward(s, wt.data(), b, yn, g);
        return;
      }
      if (direct) {  // always staged: the kernels read kDirectSlack floats past the image
        T* xp = conv_scratch<T, 1>(padded_elems + detail::kDirectSlack);
        pad_image(xn, g, xp);
        std::fill(xp + padded_elems, xp + padded_elems + detail::kDirectSlack, T(0));
        direct_forward(xp, wt.data(), b, yn, g);
        return;
      }
    }
#endif
    const T* xp = xn;
    if (g.padded) {
      T* buf = conv_scratch<T, 1>(padded_elems);
      pad_image(xn, g, buf);
      xp = buf;
    }
#ifdef XGRAD_SIMD
    if constexpr (kFloat)
      if (lanes) {
        lanes_forward(xp, wt.data(), offsets.data(), b,
                      conv_scratch<T, 0>(std::size_t(g.l) * detail::kLanesPitch), yn, g);
        return;
      }
#endif
    T* col = conv_scratch<T, 0>(band_elems);
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
  const auto forward_image = [&](int n) {
    if (sink == nullptr) {
      compute_image(n, y + n * y_image);
      return;
    }
    T* yn = sink->output(n);
    compute_image(n, yn);
    sink->finish_output(n, yn);
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

template <class T>
void conv_backward(const T* x, const T* w, const T* gy, T* dx, T* dw, T* db, const ConvGeom& g,
                   ConvGradSource<T>* source) {
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
    T* col = g.pointwise ? nullptr : conv_scratch<T, 0>(band_elems);
#ifdef XGRAD_SIMD
    // The first layer (no dX) of few input channels: direct dW into lane-wise accumulators, from
    // shift_stage's planes where the shift kernel pays (shift_pays), else from the padded image.
    const bool direct_dw_pass = std::is_same_v<T, float> && dx == nullptr && direct_eligible(g);
    const bool shift_dw_pass = direct_dw_pass && dw_t != nullptr && detail::shift_pays(g);
    float* planes = shift_dw_pass ? conv_scratch<float, 1>(detail::shift_buffer(g)) : nullptr;
#else
    constexpr bool shift_dw_pass = false;
#endif
    // With padding, x is staged padded (for dW) and dX accumulates in a padded image: bands of
    // the two interleave, so they get separate halves of the buffer.
    T* pad_buf = g.padded && !shift_dw_pass ? conv_scratch<T, 1>(padded_elems * 2) : nullptr;
#ifdef XGRAD_SIMD
    float* vacc = nullptr;
    if (direct_dw_pass && dw_t != nullptr) {
      const std::size_t vn = std::size_t(g.co) * std::size_t(g.k) * detail::kDirectLanes;
      vacc = conv_scratch<float, 2>(vn);
      std::fill(vacc, vacc + vn, 0.f);
    }
    // Few output channels and short rows (LeNet conv2): dW by the adjoint of the lanes kernel, into
    // a transposed per-thread accumulator, with no column matrix.
    const bool lanes_dw_pass = std::is_same_v<T, float> && dw_t != nullptr && lanes_eligible(g);
    float* dwt = nullptr;
    float* gyt = nullptr;
    if (lanes_dw_pass) {
      const std::size_t dn = std::size_t(g.k) * detail::kLanesPitch;
      dwt = conv_scratch<float, 2>(dn);
      std::fill(dwt, dwt + dn, 0.f);
      gyt = conv_scratch<float, 3>(std::size_t(g.l) * detail::kLanesPitch);
    }
    // fold_dx's staged dY: the zeros around it stay from image to image, so cleared once.
    float* fold_buf = nullptr;
    if (fold_dx_pass) {
      fold_buf = conv_scratch<float, 4>(detail::fold_dx_buffer(g));
      detail::fold_dx_clear(fold_buf, g);
    }
#else
    constexpr bool lanes_dw_pass = false;
#endif
    for (int n = first; n < last; ++n) {
      const T* xn = x + n * x_image;
      const T* gyn = source != nullptr ? source->grad_output(n) : gy + n * y_image;
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

int conv_band_rows(const ConvGeom& g, std::size_t element_size) {
  const std::size_t row_bytes = element_size * std::size_t(g.k) * std::size_t(g.wo);
  return int(std::clamp<std::size_t>(kColBudgetBytes / std::max<std::size_t>(row_bytes, 1), 1,
                                     std::size_t(g.ho)));
}

template void conv_forward<float>(const float*, const float*, const float*, float*, const ConvGeom&,
                                  ConvOutputSink<float>*);
template void conv_forward<double>(const double*, const double*, const double*, double*,
                                   const ConvGeom&, ConvOutputSink<double>*);
template void conv_backward<float>(const float*, const float*, const float*, float*, float*, float*,
                                   const ConvGeom&, ConvGradSource<float>*);
template void conv_backward<double>(const double*, const double*, const double*, double*, double*,
                                    double*, const ConvGeom&, ConvGradSource<double>*);

}  // namespace xgrad::detail
