// Zero padding and the im2col / col2im bands of conv2d (declared in conv_kernels.hpp), for float
// and double. The short-row copies stay in this file so that they inline into the band loops.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "conv_kernels.hpp"

namespace xgrad::detail {

namespace {

// d[0..n) = s[0..n) and d[0..n) += s[0..n) for the short rows of im2col and col2im (often under
// 32 elements, where a memcpy call costs more than the copy). AVX-512 masks cover the tail; with
// AVX2, whose masked stores are slow on AMD's cores, the last vector overlaps the one before.
inline void copy_row(const float* s, float* d, int n) {
#ifdef __AVX512F__
  int j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(d + j, _mm512_loadu_ps(s + j));
  if (j < n) {
    const __mmask16 m = __mmask16((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(d + j, m, _mm512_maskz_loadu_ps(m, s + j));
  }
#elif defined(__AVX2__)
  if (n >= 8) {
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(d + j, _mm256_loadu_ps(s + j));
    if (j < n) _mm256_storeu_ps(d + n - 8, _mm256_loadu_ps(s + n - 8));
  } else if (n >= 4) {
    _mm_storeu_ps(d, _mm_loadu_ps(s));
    _mm_storeu_ps(d + n - 4, _mm_loadu_ps(s + n - 4));
  } else {
    for (int j = 0; j < n; ++j) d[j] = s[j];
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
#elif defined(__AVX2__)
  // The overlapping last vector is summed from d's values before any store and stored last, so
  // the elements it shares with the vector before get d + s once.
  if (n >= 8) {
    const __m256 last = _mm256_add_ps(_mm256_loadu_ps(d + n - 8), _mm256_loadu_ps(s + n - 8));
    for (int j = 0; j + 8 < n; j += 8)
      _mm256_storeu_ps(d + j, _mm256_add_ps(_mm256_loadu_ps(d + j), _mm256_loadu_ps(s + j)));
    _mm256_storeu_ps(d + n - 8, last);
  } else if (n >= 4) {
    const __m128 last = _mm_add_ps(_mm_loadu_ps(d + n - 4), _mm_loadu_ps(s + n - 4));
    _mm_storeu_ps(d, _mm_add_ps(_mm_loadu_ps(d), _mm_loadu_ps(s)));
    _mm_storeu_ps(d + n - 4, last);
  } else {
    for (int j = 0; j < n; ++j) d[j] += s[j];
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

#if defined(__AVX512F__) || defined(__AVX2__)
// The most kernel rows col2im_band_s1 takes (col2im_band runs its loops beyond).
constexpr int kCol2imMaxKh = 32;

// The column rows of channel ci that add into destination row r of the band [i0, i1): kernel row
// p of output row i, with i·sh + p·dh = r, in order of p, each at its first column. Writes them to
// `from` (kh <= kCol2imMaxKh) and returns how many. Found once per row: per chunk, the divisions
// cost more than the adds.
inline int col2im_row_sources(const float* col, const ConvGeom& g, int i0, int i1, Index lt, int ci,
                              int r, const float** from) {
  int count = 0;
  for (int p = 0; p < g.kh; ++p) {
    const int t = r - p * g.dh;  // = i·sh for the output row i that reads row r
    if (t < i0 * g.sh || t % g.sh != 0) continue;
    const int i = t / g.sh;
    if (i >= i1) continue;
    from[count++] = col + Index(ci * g.kh + p) * g.kw * lt + Index(i - i0) * g.wo;
  }
  return count;
}

// Calls row(d, from, count) for every destination row of the band [i0, i1): d the row (channel
// ci < cg, padded row r) in dxp, and from / count its column rows (col2im_row_sources). Rows go
// even then odd, so a row is never loaded right after its neighbour's overlapping store (a
// store-forwarding stall for masked accesses).
template <class RowFn>
inline void for_each_col2im_row(const float* col, const ConvGeom& g, int i0, int i1, float* dxp,
                                Index lt, const RowFn& row) {
  const Index plane = Index(g.hp) * g.wp;
  const int r0 = i0 * g.sh, r1 = (i1 - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  for (int ci = 0; ci < g.cg; ++ci)
    for (int parity = 0; parity < 2; ++parity)
      for (int r = r0 + parity; r < r1; r += 2) {
        const float* from[kCol2imMaxKh];
        const int count = col2im_row_sources(col, g, i0, i1, lt, ci, r, from);
        row(dxp + ci * plane + Index(r) * g.wp, from, count);
      }
}
#endif

#ifdef __AVX512F__
// col2im_band for float, column stride 1 and no column dilation. Each destination row is loaded
// and stored once per band: its kh·kw contributions (shifted column rows) are summed in
// registers, 16 lanes at a time.
void col2im_band_s1(const float* col, const ConvGeom& g, int i0, int i1, float* dxp, Index lt) {
  const int span = g.wo + g.kw - 1;  // destination columns touched per row
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
  for_each_col2im_row(col, g, i0, i1, dxp, lt, [&](float* d, const float* const* from, int count) {
    for (int c = 0; c < chunks; ++c) {
      const int c0 = 16 * c;
      const int n = std::min(16, span - c0);
      const __mmask16 ms = __mmask16(n >= 16 ? 0xFFFFu : (1u << n) - 1);
      const __mmask16* mq = masks.data() + std::size_t(c) * std::size_t(g.kw);
      // Two accumulators halve the dependent add chain (kh·kw adds per row).
      __m512 va = _mm512_maskz_loadu_ps(ms, d + c0), vb = _mm512_setzero_ps();
      for (int k = 0; k < count; ++k) {
        const float* rows = from[k] + c0;
        int q = 0;
        for (; q + 1 < g.kw; q += 2) {
          va = _mm512_add_ps(va, _mm512_maskz_loadu_ps(mq[q], rows + q * lt - q));
          vb = _mm512_add_ps(vb, _mm512_maskz_loadu_ps(mq[q + 1], rows + (q + 1) * lt - q - 1));
        }
        if (q < g.kw) va = _mm512_add_ps(va, _mm512_maskz_loadu_ps(mq[q], rows + q * lt - q));
      }
      _mm512_mask_storeu_ps(d + c0, ms, _mm512_add_ps(va, vb));
    }
  });
}
#elif defined(__AVX2__)
// The same for AVX2, 8 lanes at a time, for rows that span at least 8 columns. A row's last chunk
// is moved back to end at the row's span instead of being masked (masked stores are slow on AMD's
// cores), and it is summed from the row's values before any chunk of the row is stored: the
// columns it shares with the chunk before it then get the same sum from both. Before, each of
// the kh·kw column rows was added to its destination row on its own, in short rows of overlapping
// vectors: col2im took 10.3% of LeNet's training profile (1 thread), 7.1% with this kernel, and
// the 64-image step's 10th percentile went from 2.95-3.05 to 2.83-2.87 ms (4 alternating runs).
void col2im_band_s1(const float* col, const ConvGeom& g, int i0, int i1, float* dxp, Index lt) {
  const int span = g.wo + g.kw - 1;  // destination columns touched per row, >= 8
  const int chunks = (span + 7) / 8;
  const auto start = [span](int c) { return std::min(8 * c, span - 8); };
  // masks[c·kw + q]: lanes x of chunk c with 0 <= start(c) + x - q < wo, which take row q's
  // element start(c) + x - q.
  struct Mask {
    __m256i lanes;
  };
  std::vector<Mask> masks(std::size_t(chunks) * std::size_t(g.kw));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int c = 0; c < chunks; ++c)
    for (int q = 0; q < g.kw; ++q) {
      const int lo = q - start(c), hi = q - start(c) + g.wo;  // lanes lo <= x < hi
      masks[std::size_t(c * g.kw + q)].lanes =
          _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(lo), lane),
                              _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane));
    }
  for_each_col2im_row(col, g, i0, i1, dxp, lt, [&](float* d, const float* const* from, int count) {
    const auto sum_chunk = [&](int c) {
      const int c0 = start(c);
      const Mask* mq = masks.data() + std::size_t(c) * std::size_t(g.kw);
      // Two accumulators halve the dependent add chain (kh·kw adds per row).
      __m256 va = _mm256_loadu_ps(d + c0), vb = _mm256_setzero_ps();
      for (int k = 0; k < count; ++k) {
        const float* rows = from[k] + c0;
        int q = 0;
        for (; q + 1 < g.kw; q += 2) {
          va = _mm256_add_ps(va, _mm256_maskload_ps(rows + q * lt - q, mq[q].lanes));
          vb = _mm256_add_ps(vb, _mm256_maskload_ps(rows + (q + 1) * lt - q - 1, mq[q + 1].lanes));
        }
        if (q < g.kw) va = _mm256_add_ps(va, _mm256_maskload_ps(rows + q * lt - q, mq[q].lanes));
      }
      return _mm256_add_ps(va, vb);
    };
    const __m256 last = sum_chunk(chunks - 1);
    for (int c = 0; c + 1 < chunks; ++c) _mm256_storeu_ps(d + start(c), sum_chunk(c));
    _mm256_storeu_ps(d + start(chunks - 1), last);
  });
}
#endif

}  // namespace

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

template <class T>
void unpad_image(const T* xp, const ConvGeom& g, T* x) {
  for (int ci = 0; ci < g.c; ++ci)
    for (int i = 0; i < g.h; ++i)
      copy_row(xp + (Index(ci) * g.hp + i + g.ph) * g.wp + g.pw, x + (Index(ci) * g.h + i) * g.w,
               g.w);
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

// The adjoint of im2col_band: dxp[ci, ...] += col[...], into a padded gradient image.
template <class T>
void col2im_band(const T* col, const ConvGeom& g, int i0, int i1, T* dxp, Index lt) {
#if defined(__AVX512F__) || defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
#ifdef __AVX512F__
    if (g.sw == 1 && g.dw == 1 && g.kh <= kCol2imMaxKh) {
#else
    if (g.sw == 1 && g.dw == 1 && g.wo + g.kw - 1 >= 8 && g.kh <= kCol2imMaxKh) {
#endif
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

#define X(T)                                                                    \
  template void pad_image<T>(const T*, const ConvGeom&, T*);                    \
  template void unpad_image<T>(const T*, const ConvGeom&, T*);                  \
  template void im2col_band<T>(const T*, const ConvGeom&, int, int, T*, Index); \
  template void col2im_band<T>(const T*, const ConvGeom&, int, int, T*, Index);
X(float)
X(double)
#undef X

}  // namespace xgrad::detail
