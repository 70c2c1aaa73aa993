// conv2d: NCHW convolution with per-axis stride, padding and dilation, and groups.
// Per image and group: im2col of a band of output rows into a per-thread buffer that stays in L2,
// then one GEMM on raw pointers. OpenMP runs over the images; OpenBLAS stays single-threaded.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "xgrad/blas.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using Index = std::ptrdiff_t;

// Bytes of im2col buffer per band: large enough for an efficient GEMM, small enough for L2.
constexpr std::size_t kColBudgetBytes = 1024 * 1024;

// The largest C (in entries) for which OpenBLAS 0.3.21 (SkylakeX) runs a transposed-B product
// in its small-matrix kernel.
constexpr int kSmallGemmC = 1200;

// Every size of one convolution, checked once in conv2d().
struct ConvGeom {
  int n, c, h, w;  // input
  int co, kh, kw;  // weight
  int sh, sw, ph, pw, dh, dw, groups;
  int ho, wo;      // output
  int hp, wp;      // padded input: h + 2·ph, w + 2·pw
  bool padded;     // ph or pw > 0: images are staged with zero borders
  int cg, cog;     // channels per group, in and out
  int k;           // rows of a group's column matrix: cg·kh·kw
  Index l;         // output positions per image: ho·wo
  int band_rows;   // output rows per im2col band
  bool pointwise;  // 1x1, stride 1, no padding: the input image is its own column matrix
};

int omp_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int omp_thread() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
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

// d[0..n) = s[0..n) and d[0..n) += s[0..n) for the short rows of im2col and col2im (often under
// 32 elements, where a memcpy call costs more than the copy). AVX-512 masks cover the tail.
inline void copy_row(const float* s, float* d, int n) {
#ifdef __AVX512F__
  int j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(d + j, _mm512_loadu_ps(s + j));
  if (j < n) {
    const __mmask16 m = __mmask16((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(d + j, m, _mm512_maskz_loadu_ps(m, s + j));
  }
#else
  std::memcpy(d, s, sizeof(float) * std::size_t(n));
#endif
}

inline void copy_row(const double* s, double* d, int n) {
#ifdef __AVX512F__
  int j = 0;
  for (; j + 8 <= n; j += 8) _mm512_storeu_pd(d + j, _mm512_loadu_pd(s + j));
  if (j < n) {
    const __mmask8 m = __mmask8((1u << (n - j)) - 1);
    _mm512_mask_storeu_pd(d + j, m, _mm512_maskz_loadu_pd(m, s + j));
  }
#else
  std::memcpy(d, s, sizeof(double) * std::size_t(n));
#endif
}

inline void add_row(const float* s, float* d, int n) {
#ifdef __AVX512F__
  int j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(d + j, _mm512_add_ps(_mm512_loadu_ps(d + j), _mm512_loadu_ps(s + j)));
  if (j < n) {
    const __mmask16 m = __mmask16((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(
        d + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + j), _mm512_maskz_loadu_ps(m, s + j)));
  }
#else
  for (int j = 0; j < n; ++j) d[j] += s[j];
#endif
}

inline void add_row(const double* s, double* d, int n) {
#ifdef __AVX512F__
  int j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_pd(d + j, _mm512_add_pd(_mm512_loadu_pd(d + j), _mm512_loadu_pd(s + j)));
  if (j < n) {
    const __mmask8 m = __mmask8((1u << (n - j)) - 1);
    _mm512_mask_storeu_pd(
        d + j, m, _mm512_add_pd(_mm512_maskz_loadu_pd(m, d + j), _mm512_maskz_loadu_pd(m, s + j)));
  }
#else
  for (int j = 0; j < n; ++j) d[j] += s[j];
#endif
}

// Copies the c planes of an image (h×w) into the interior of hp×wp planes with zero borders.
template <class T>
void pad_image(const T* x, const ConvGeom& g, T* xp) {
  for (int ci = 0; ci < g.c; ++ci) {
    const T* src = x + Index(ci) * g.h * g.w;
    T* dst = xp + Index(ci) * g.hp * g.wp;
    std::fill(dst, dst + Index(g.ph) * g.wp, T(0));
    for (int i = 0; i < g.h; ++i) {
      T* r = dst + Index(i + g.ph) * g.wp;
      std::fill(r, r + g.pw, T(0));
      copy_row(src + Index(i) * g.w, r + g.pw, g.w);
      std::fill(r + g.pw + g.w, r + g.wp, T(0));
    }
    std::fill(dst + Index(g.ph + g.h) * g.wp, dst + Index(g.hp) * g.wp, T(0));
  }
}

// col[(ci·kh + p)·kw + q][(i - i0)·wo + j] = xp[ci, i·sh + p·dh, j·sw + q·dw] for output rows
// i in [i0, i1), rows `lt` apart, where xp is the group's first channel of a padded image (hp×wp
// planes): every read is in bounds, so the rows are plain copies.
template <class T>
void im2col_band(const T* xp, const ConvGeom& g, int i0, int i1, T* col, Index lt) {
  const Index plane = Index(g.hp) * g.wp;
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>) {
    // Short rows (LeNet conv2: 10 floats, the convnet's conv2: 24): one or two masked copies per
    // row with the masks made once.
    if (g.sw == 1 && g.wo <= 32) {
      const __mmask16 m0 = __mmask16(g.wo >= 16 ? 0xFFFFu : (1u << g.wo) - 1);
      const int rest = g.wo - 16;
      const __mmask16 m1 = __mmask16(rest >= 16 ? 0xFFFFu : rest > 0 ? (1u << rest) - 1 : 0u);
      const Index step = Index(g.sh) * g.wp;
      for (int ci = 0; ci < g.cg; ++ci)
        for (int p = 0; p < g.kh; ++p)
          for (int q = 0; q < g.kw; ++q) {
            float* r = col + (Index(ci * g.kh + p) * g.kw + q) * lt;
            const float* s =
                xp + ci * plane + Index(p) * g.dh * g.wp + Index(q) * g.dw + Index(i0) * step;
            if (rest > 0) {
              for (int i = i0; i < i1; ++i, s += step, r += g.wo) {
                _mm512_storeu_ps(r, _mm512_loadu_ps(s));
                _mm512_mask_storeu_ps(r + 16, m1, _mm512_maskz_loadu_ps(m1, s + 16));
              }
            } else {
              for (int i = i0; i < i1; ++i, s += step, r += g.wo)
                _mm512_mask_storeu_ps(r, m0, _mm512_maskz_loadu_ps(m0, s));
            }
          }
      return;
    }
  }
#endif
  for (int ci = 0; ci < g.cg; ++ci)
    for (int p = 0; p < g.kh; ++p)
      for (int q = 0; q < g.kw; ++q) {
        T* row = col + (Index(ci * g.kh + p) * g.kw + q) * lt;
        const T* src = xp + ci * plane + Index(p) * g.dh * g.wp + Index(q) * g.dw;
        for (int i = i0; i < i1; ++i) {
          const T* s = src + Index(i) * g.sh * g.wp;
          T* r = row + Index(i - i0) * g.wo;
          if (g.sw == 1) {
            copy_row(s, r, g.wo);
          } else {
            for (int j = 0; j < g.wo; ++j) r[j] = s[Index(j) * g.sw];
          }
        }
      }
}

#ifdef __AVX512F__
// col2im_band for float, column stride 1 and no column dilation. Each destination row is loaded
// and stored once per band: its kh·kw contributions (shifted column rows) are summed in
// registers, 16 lanes at a time. Rows go even then odd, so a row is never loaded right after
// its neighbour's overlapping store (a store-forwarding stall for masked accesses).
void col2im_band_s1(const float* col, const ConvGeom& g, int i0, int i1, float* dxp, Index lt) {
  const Index plane = Index(g.hp) * g.wp;
  const int span = g.wo + g.kw - 1;  // destination columns touched per row
  const int r0 = i0 * g.sh, r1 = (i1 - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  const int chunks = (span + 15) / 16;
  // masks[c·kw + q]: lanes x of chunk c with 0 <= 16c + x - q < wo, which take row q's element
  // 16c + x - q.
  std::vector<__mmask16> masks(std::size_t(chunks) * std::size_t(g.kw));
  for (int c = 0; c < chunks; ++c)
    for (int q = 0; q < g.kw; ++q) {
      const int lo = std::max(0, q - 16 * c), hi = std::min(16, q - 16 * c + g.wo);
      masks[std::size_t(c * g.kw + q)] =
          hi <= lo ? __mmask16(0)
                   : __mmask16((hi >= 16 ? 0xFFFFu : (1u << hi) - 1) & ~((1u << lo) - 1));
    }
  for (int ci = 0; ci < g.cg; ++ci)
    for (int parity = 0; parity < 2; ++parity)
      for (int r = r0 + parity; r < r1; r += 2) {
        float* d = dxp + ci * plane + Index(r) * g.wp;
        for (int c = 0; c < chunks; ++c) {
          const int c0 = 16 * c;
          const int n = std::min(16, span - c0);
          const __mmask16 ms = __mmask16(n >= 16 ? 0xFFFFu : (1u << n) - 1);
          const __mmask16* mq = masks.data() + std::size_t(c) * std::size_t(g.kw);
          // Two accumulators halve the dependent add chain (kh·kw adds per row).
          __m512 va = _mm512_maskz_loadu_ps(ms, d + c0), vb = _mm512_setzero_ps();
          for (int p = 0; p < g.kh; ++p) {
            const int t = r - p * g.dh;  // = i·sh for the output row i that reads row r
            if (t < i0 * g.sh || t % g.sh != 0) continue;
            const int i = t / g.sh;
            if (i >= i1) continue;
            const float* rows = col + Index(ci * g.kh + p) * g.kw * lt + Index(i - i0) * g.wo + c0;
            int q = 0;
            for (; q + 1 < g.kw; q += 2) {
              va = _mm512_add_ps(va, _mm512_maskz_loadu_ps(mq[q], rows + q * lt - q));
              vb = _mm512_add_ps(vb, _mm512_maskz_loadu_ps(mq[q + 1], rows + (q + 1) * lt - q - 1));
            }
            if (q < g.kw) va = _mm512_add_ps(va, _mm512_maskz_loadu_ps(mq[q], rows + q * lt - q));
          }
          _mm512_mask_storeu_ps(d + c0, ms, _mm512_add_ps(va, vb));
        }
      }
}
#endif

// The adjoint of im2col_band: dxp[ci, ...] += col[...], into a padded gradient image.
template <class T>
void col2im_band(const T* col, const ConvGeom& g, int i0, int i1, T* dxp, Index lt) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>) {
    if (g.sw == 1 && g.dw == 1) {
      col2im_band_s1(col, g, i0, i1, dxp, lt);
      return;
    }
  }
#endif
  const Index plane = Index(g.hp) * g.wp;
  for (int ci = 0; ci < g.cg; ++ci)
    for (int p = 0; p < g.kh; ++p)
      for (int q = 0; q < g.kw; ++q) {
        const T* row = col + (Index(ci * g.kh + p) * g.kw + q) * lt;
        T* dst = dxp + ci * plane + Index(p) * g.dh * g.wp + Index(q) * g.dw;
        for (int i = i0; i < i1; ++i) {
          T* d = dst + Index(i) * g.sh * g.wp;
          const T* r = row + Index(i - i0) * g.wo;
          if (g.sw == 1) {
            add_row(r, d, g.wo);
          } else {
            for (int j = 0; j < g.wo; ++j) d[Index(j) * g.sw] += r[j];
          }
        }
      }
}

// Direct convolution for few input channels (LeNet's and the convnet's first layer, C_in = 1):
// K = C_in·kh·kw <= kDirectMaxK, stride 1, no dilation, one group, float with AVX-512. It reads
// the (padded) image in place, with no column matrix. Output rows are split into 16-lane blocks
// (the last one masked).
constexpr int kDirectMaxK = 28;

bool direct_eligible(const ConvGeom& g) {
  return g.groups == 1 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.k <= kDirectMaxK &&
         !g.pointwise;
}

#ifdef __AVX512F__
inline __mmask16 lanes16(int n) {
  return n <= 0 ? __mmask16(0) : n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

// y[o0 + o, i, :] for o < NC: bias + Σ_k w[o0 + o, k]·x_k, x_k the shifted input rows. JB
// 16-lane blocks of a row at once: NC·JB independent accumulators hide the FMA latency and each
// broadcast weight serves JB blocks.
template <int NC, int JB>
void direct_forward_chunk(const float* xp, const float* w, const float* b, float* y,
                          const ConvGeom& g, int o0) {
  const Index plane = Index(g.hp) * g.wp;
  const int k = g.k;
  for (int i = 0; i < g.ho; ++i)
    for (int j0 = 0; j0 < g.wo; j0 += 16 * JB) {
      __mmask16 m[JB];
      for (int jb = 0; jb < JB; ++jb) m[jb] = lanes16(g.wo - j0 - 16 * jb);
      __m512 acc[NC][JB];
      for (int o = 0; o < NC; ++o) {
        const __m512 init = b != nullptr ? _mm512_set1_ps(b[o0 + o]) : _mm512_setzero_ps();
        for (int jb = 0; jb < JB; ++jb) acc[o][jb] = init;
      }
      int kk = 0;
      for (int ci = 0; ci < g.c; ++ci)
        for (int p = 0; p < g.kh; ++p) {
          const float* row = xp + ci * plane + Index(i + p) * g.wp + j0;
          for (int q = 0; q < g.kw; ++q, ++kk) {
            __m512 xv[JB];
            for (int jb = 0; jb < JB; ++jb)
              xv[jb] = _mm512_maskz_loadu_ps(m[jb], row + q + 16 * jb);
            for (int o = 0; o < NC; ++o) {
              const __m512 wv = _mm512_set1_ps(w[Index(o0 + o) * k + kk]);
              for (int jb = 0; jb < JB; ++jb) acc[o][jb] = _mm512_fmadd_ps(wv, xv[jb], acc[o][jb]);
            }
          }
        }
      for (int jb = 0; jb < JB; ++jb) {
        if (j0 + 16 * jb >= g.wo) break;  // no all-false-mask stores (see max_pool2d)
        for (int o = 0; o < NC; ++o)
          _mm512_mask_storeu_ps(y + Index(o0 + o) * g.l + Index(i) * g.wo + j0 + 16 * jb, m[jb],
                                acc[o][jb]);
      }
    }
}

using ForwardChunkFn = void (*)(const float*, const float*, const float*, float*, const ConvGeom&,
                                int);

// direct_forward_chunk<1, JB> ... <sizeof(N), JB>, indexed by the chunk's channels minus one.
template <int JB, int... N>
constexpr std::array<ForwardChunkFn, sizeof...(N)> forward_chunk_table(
    std::integer_sequence<int, N...>) {
  return {&direct_forward_chunk<N + 1, JB>...};
}

template <int JB>
void direct_forward_jb(const float* xp, const float* w, const float* b, float* y,
                       const ConvGeom& g) {
  // Channel chunks of at most 24 / JB (16 for JB = 1) accumulators, as even as possible.
  constexpr int kMax = JB == 1 ? 16 : 24 / JB;
  const int chunks = (g.co + kMax - 1) / kMax;
  const int per = (g.co + chunks - 1) / chunks;
  for (int o0 = 0; o0 < g.co; o0 += per) {
    const int nc = std::min(per, g.co - o0);
    static constexpr auto table = forward_chunk_table<JB>(std::make_integer_sequence<int, kMax>{});
    table[std::size_t(nc - 1)](xp, w, b, y, g, o0);
  }
}

void direct_forward(const float* xp, const float* w, const float* b, float* y, const ConvGeom& g) {
  // Two blocks when a row needs them and the channels fit one chunk (measured: the convnet's
  // 32 channels ran faster as two chunks of 16 with one block).
  if (g.wo > 16 && g.co <= 12)
    direct_forward_jb<2>(xp, w, b, y, g);
  else
    direct_forward_jb<1>(xp, w, b, y, g);
}

// vacc[o, k, :] += Σ_{i,j} gy[o, i, j]·x_k[i, j], lane-wise (lanes are summed once at the end
// of the pass, see direct_dw_finish), for OB channels from o0 at a time and K = g.k taps: OB·K
// vector accumulators in registers; the taps' offsets come from a table so that the tap loop
// has a compile-time trip count.
template <int K, int OB>
void direct_dw_chunk(const float* xp, const float* gy, float* vacc, const ConvGeom& g, int o0,
                     int ob, const Index* off) {
  __m512 acc[OB][K];
  for (int o = 0; o < OB; ++o)
    for (int t = 0; t < K; ++t) acc[o][t] = _mm512_setzero_ps();
  for (int i = 0; i < g.ho; ++i)
    for (int j0 = 0; j0 < g.wo; j0 += 16) {
      const __mmask16 m = lanes16(g.wo - j0);
      __m512 gv[OB];
#pragma GCC unroll 32
      for (int o = 0; o < OB; ++o)
        gv[o] = o < ob ? _mm512_maskz_loadu_ps(m, gy + Index(o0 + o) * g.l + Index(i) * g.wo + j0)
                       : _mm512_setzero_ps();
      const float* base = xp + Index(i) * g.wp + j0;
#pragma GCC unroll 32
      for (int t = 0; t < K; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(m, base + off[t]);
        for (int o = 0; o < OB; ++o) acc[o][t] = _mm512_fmadd_ps(gv[o], xv, acc[o][t]);
      }
    }
    // Compile-time indices only (a runtime bound here made GCC keep acc in memory, storing it
    // after every FMA).
#pragma GCC unroll 32
  for (int o = 0; o < OB; ++o) {
    if (o >= ob) break;
#pragma GCC unroll 32
    for (int t = 0; t < K; ++t) {
      float* a = vacc + (Index(o0 + o) * K + t) * 16;
      _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), acc[o][t]));
    }
  }
}

// direct_dw_chunk for one input channel and a KH×KW kernel known at compile time: taps are
// addressed from KH row pointers with immediate column offsets, so no offset table competes with
// the K accumulators for registers.
template <int KH, int KW, int OB>
void direct_dw_chunk_c1(const float* xp, const float* gy, float* vacc, const ConvGeom& g, int o0,
                        int ob) {
  constexpr int K = KH * KW;
  __m512 acc[OB][K];
#pragma GCC unroll 32
  for (int o = 0; o < OB; ++o)
#pragma GCC unroll 32
    for (int t = 0; t < K; ++t) acc[o][t] = _mm512_setzero_ps();
  const Index wp = g.wp;
  for (int i = 0; i < g.ho; ++i)
    for (int j0 = 0; j0 < g.wo; j0 += 16) {
      const __mmask16 m = lanes16(g.wo - j0);
      __m512 gv[OB];
#pragma GCC unroll 32
      for (int o = 0; o < OB; ++o)
        gv[o] = o < ob ? _mm512_maskz_loadu_ps(m, gy + Index(o0 + o) * g.l + Index(i) * g.wo + j0)
                       : _mm512_setzero_ps();
      const float* base = xp + Index(i) * wp + j0;
#pragma GCC unroll 8
      for (int p = 0; p < KH; ++p) {
        const float* row = base + p * wp;
#pragma GCC unroll 8
        for (int q = 0; q < KW; ++q) {
          const __m512 xv = _mm512_maskz_loadu_ps(m, row + q);
#pragma GCC unroll 32
          for (int o = 0; o < OB; ++o)
            acc[o][p * KW + q] = _mm512_fmadd_ps(gv[o], xv, acc[o][p * KW + q]);
        }
      }
    }
#pragma GCC unroll 32
  for (int o = 0; o < OB; ++o) {
    if (o >= ob) break;
#pragma GCC unroll 32
    for (int t = 0; t < K; ++t) {
      float* a = vacc + (Index(o0 + o) * K + t) * 16;
      _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), acc[o][t]));
    }
  }
}

template <int K>
void direct_dw_k(const float* xp, const float* gy, float* vacc, const ConvGeom& g) {
  if constexpr (K == 25 || K == 9) {  // 5×5 (LeNet) and 3×3 (convnet) over one channel
    constexpr int KS = K == 25 ? 5 : 3;
    constexpr int OB = std::max(1, 27 / K);
    if (g.c == 1 && g.kh == KS && g.kw == KS) {
      for (int o0 = 0; o0 < g.co; o0 += OB)
        direct_dw_chunk_c1<KS, KS, OB>(xp, gy, vacc, g, o0, std::min(OB, g.co - o0));
      return;
    }
  }
  constexpr int OB = std::max(1, kDirectMaxK / K);
  Index off[K];
  const Index plane = Index(g.hp) * g.wp;
  int t = 0;
  for (int ci = 0; ci < g.c; ++ci)
    for (int p = 0; p < g.kh; ++p)
      for (int q = 0; q < g.kw; ++q) off[t++] = ci * plane + Index(p) * g.wp + q;
  for (int o0 = 0; o0 < g.co; o0 += OB)
    direct_dw_chunk<K, OB>(xp, gy, vacc, g, o0, std::min(OB, g.co - o0), off);
}

using DwFn = void (*)(const float*, const float*, float*, const ConvGeom&);

// direct_dw_k<1> ... <sizeof(N)>, indexed by K minus one.
template <int... N>
constexpr std::array<DwFn, sizeof...(N)> dw_table(std::integer_sequence<int, N...>) {
  return {&direct_dw_k<N + 1>...};
}

// One image's contribution to the lane-wise accumulators vacc (co·k·16 floats).
void direct_dw(const float* xp, const float* gy, float* vacc, const ConvGeom& g) {
  static constexpr auto table = dw_table(std::make_integer_sequence<int, kDirectMaxK>{});
  table[std::size_t(g.k - 1)](xp, gy, vacc, g);
}

// dw[i] += the sum of the 16 lanes of vacc[i], for co·k entries.
void direct_dw_finish(const float* vacc, float* dw, const ConvGeom& g) {
  const Index n = Index(g.co) * g.k;
  for (Index e = 0; e < n; ++e) {
    float s = 0;
    for (int lane = 0; lane < 16; ++lane) s += vacc[e * 16 + lane];
    dw[e] += s;
  }
}
#endif

template <class T>
void conv_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g) {
  const Index x_image = Index(g.c) * g.h * g.w;
  const Index xp_group = Index(g.cg) * g.hp * g.wp;
  const Index y_image = Index(g.co) * g.l;
  const Index w_group = Index(g.cog) * g.k;
  const int ld = band_pitch<T>(g);
  const std::size_t band_elems = std::size_t(g.k + 1) * std::size_t(ld);
  const std::size_t padded_elems = std::size_t(g.c) * std::size_t(g.hp) * std::size_t(g.wp);
  // The bias rides in the GEMM as one more column of W against a row of ones in the band, which
  // saves a pass over the output: wb[gr] = [W_gr | b_gr], cog × (k + 1).
  const int kb = b != nullptr ? g.k + 1 : g.k;
  std::vector<T> wb;
  if (b != nullptr && !g.pointwise) {
    wb.resize(std::size_t(g.co) * std::size_t(kb));
    for (int o = 0; o < g.co; ++o) {
      std::copy(w + Index(o) * g.k, w + Index(o + 1) * g.k, wb.begin() + Index(o) * kb);
      wb[std::size_t(o) * std::size_t(kb) + std::size_t(g.k)] = b[o];
    }
  }
  const T* wk = wb.empty() ? w : wb.data();
#ifdef __AVX512F__
  constexpr bool kFloat = std::is_same_v<T, float>;
  const bool direct = kFloat && direct_eligible(g);
#endif
#pragma omp parallel for schedule(static)
  for (int n = 0; n < g.n; ++n) {
    const T* xn = x + n * x_image;
    T* yn = y + n * y_image;
#ifdef __AVX512F__
    if constexpr (kFloat) {
      if (direct) {
        const T* xp = xn;
        if (g.padded) {
          T* buf = scratch<T, 1>(padded_elems);
          pad_image(xn, g, buf);
          xp = buf;
        }
        direct_forward(xp, w, b, yn, g);
        continue;
      }
    }
#endif
    if (g.pointwise) {
      if (b != nullptr)
        for (int o = 0; o < g.co; ++o) std::fill(yn + o * g.l, yn + (o + 1) * g.l, b[o]);
      const T beta = b != nullptr ? T(1) : T(0);
      for (int gr = 0; gr < g.groups; ++gr)
        blas::gemm(false, false, g.cog, int(g.l), g.k, T(1), w + gr * w_group, g.k,
                   xn + gr * xp_group, int(g.l), beta, yn + Index(gr) * g.cog * g.l, int(g.l));
      continue;
    }
    T* col = scratch<T, 0>(band_elems);
    const T* xp = xn;
    if (g.padded) {
      T* buf = scratch<T, 1>(padded_elems);
      pad_image(xn, g, buf);
      xp = buf;
    }
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
  const int threads = std::max(1, std::min(omp_threads(), g.n));
  // Per-thread dW and db accumulators, summed at the end (no atomics, no false sharing of rows).
  const Index acc_size = (dw != nullptr ? w_size : 0) + (db != nullptr ? g.co : 0);
  std::vector<T> acc(std::size_t(acc_size) * std::size_t(threads), T(0));
#pragma omp parallel num_threads(threads)
  {
    T* acc_t = acc.data() + Index(omp_thread()) * acc_size;
    T* dw_t = dw != nullptr ? acc_t : nullptr;
    T* db_t = db != nullptr ? acc_t + (dw != nullptr ? w_size : 0) : nullptr;
    T* col = g.pointwise ? nullptr : scratch<T, 0>(band_elems);
    // With padding, x is staged padded (for dW) and dX accumulates in a padded image: bands of
    // the two interleave, so they get separate halves of the buffer.
    T* pad_buf = g.padded ? scratch<T, 1>(padded_elems * 2) : nullptr;
#ifdef __AVX512F__
    // The first layer (no dX) of few input channels: direct dW into lane-wise accumulators.
    const bool direct_dw_pass = std::is_same_v<T, float> && dx == nullptr && direct_eligible(g);
    float* vacc = nullptr;
    if (direct_dw_pass && dw_t != nullptr) {
      const std::size_t vn = std::size_t(g.co) * std::size_t(g.k) * 16;
      vacc = scratch<float, 2>(vn);
      std::fill(vacc, vacc + vn, 0.f);
    }
#endif
#pragma omp for schedule(static)
    for (int n = 0; n < g.n; ++n) {
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
#ifdef __AVX512F__
      if constexpr (std::is_same_v<T, float>) {
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
      if (dxp != nullptr) std::fill(dxp, dxp + padded_elems, T(0));
      for (int gr = 0; gr < g.groups; ++gr) {
        const T* wg = w + gr * w_group;
        const T* gyg = gyn + Index(gr) * g.cog * g.l;
        for (int i0 = 0; i0 < g.ho; i0 += g.band_rows) {
          const int i1 = std::min(g.ho, i0 + g.band_rows);
          const int lt = (i1 - i0) * g.wo;
          const T* gyb = gyg + Index(i0) * g.wo;
          if (dw_t != nullptr) {
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
          if (dxp != nullptr) {  // the column buffer is free again: reuse it for d(col)
            blas::gemm(true, false, g.k, lt, g.cog, T(1), wg, g.k, gyb, int(g.l), T(0), col, ld);
            col2im_band(col, g, i0, i1, dxp + gr * xp_group, ld);
          }
        }
      }
      if (dxn != nullptr && g.padded)  // the interior of the padded gradient is dX
        for (int ci = 0; ci < g.c; ++ci)
          for (int i = 0; i < g.h; ++i)
            copy_row(dxp + (Index(ci) * g.hp + i + g.ph) * g.wp + g.pw,
                     dxn + (Index(ci) * g.h + i) * g.w, g.w);
    }
#ifdef __AVX512F__
    if constexpr (std::is_same_v<T, float>)
      if (vacc != nullptr) direct_dw_finish(vacc, dw_t, g);
#endif
  }
  if (dw != nullptr) std::fill(dw, dw + w_size, T(0));
  if (db != nullptr) std::fill(db, db + g.co, T(0));
  for (int t = 0; t < threads; ++t) {
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
