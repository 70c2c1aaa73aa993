// The 2x2, stride-2, unpadded max-pool of float planes (LeNet, most CNNs), vectorised with AVX2
// (XGRAD_POOL_2X2 is defined when it is there): used by max_pool2d over a batch and by
// conv2d_max_pool2d image by image. AVX-512 machines take the AVX2 code too: on the AVX-512 Zen 5
// EPYC, an AVX-512 version (16 lanes, masked loads and stores at every row's end) made LeNet-5's
// training step 1.07-1.11x slower on 1 thread and 1.05-1.11x on 2 (session 17).
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>

#ifdef __AVX2__
#define XGRAD_POOL_2X2 1
#include <immintrin.h>
#endif

#include "pool_geometry.hpp"

namespace xgrad::detail {

// The 2x2, stride-2, unpadded pool in float (LeNet, most CNNs) has an AVX2 path: two input rows
// at a time, even/odd columns split by a permute, and the argmax saved as a 2-bit window position
// (0..3 in row-major order) in one byte per output.
#ifdef XGRAD_POOL_2X2
inline bool is_2x2_s2(const PoolGeometry& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0;
}

// Calls f(first, count) over the planes [b, e) in stacks that the 2x2 plane kernels take as one
// plane `count` times as tall (stacked): all of them when h is even, since no window then spans
// two planes (as many as keep the row indices in int), else one at a time. A stack takes the exact
// path (masked loads, store_first) only in its last row instead of each plane's: LeNet's pool2
// (10 x 10 planes, rows of 5 outputs) took it for one row in five.
template <class F>
void for_stacks(const PoolGeometry& s, std::ptrdiff_t b, std::ptrdiff_t e, const F& f) {
  const std::ptrdiff_t most = s.h % 2 == 0 ? std::max<std::ptrdiff_t>(1, (INT32_MAX / 4) / s.h) : 1;
  for (std::ptrdiff_t q = b; q < e; q += most) f(q, std::min(most, e - q));
}

inline PoolGeometry stacked(const PoolGeometry& s, std::ptrdiff_t count) {
  PoolGeometry t = s;
  t.h = s.h * int(count);
  t.ho = s.ho * int(count);
  return t;
}

// dst[0..r) = the low r (<= 8) bytes of c8: the window codes of r outputs, without a masked
// store (see store_first below).
inline void store_codes(std::uint8_t* dst, int r, __m128i c8) {
  if (r == 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), c8);
  } else {
    alignas(16) std::uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), c8);
    std::memcpy(dst, tmp, std::size_t(r));
  }
}

// The first n lanes (none for n <= 0, all for n >= 8), as a maskload/maskstore mask.
inline __m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// p[0..n) = the first n lanes of v. Masked stores (vmaskmovps) are slow on AMD's cores: a pool
// backward of masked stores only took twice its forward's time; the tails go through a copy.
inline void store_first(float* p, int n, __m256 v) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
  } else if (n > 0) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    for (int k = 0; k < n; ++k) p[k] = tmp[k];
  }
}

// Whether v replaces b (see takes_over below), lane-wise, as an all-ones lane. NLE_UQ is
// !(v <= b), true when v > b or either is NaN; the ORD test of b then drops the lanes where b is
// NaN: v > b, or v NaN and b a number, in two compares and an AND instead of five operations.
inline __m256 takes_over_v(__m256 v, __m256 b) {
  return _mm256_and_ps(_mm256_cmp_ps(v, b, _CMP_NLE_UQ), _mm256_cmp_ps(b, b, _CMP_ORD_Q));
}

// The even and the odd elements of the 16 floats lo, hi, in order.
inline void deinterleave(__m256 lo, __m256 hi, __m256& even, __m256& odd) {
  // shuffle gives [l0 l2 h0 h2 | l4 l6 h4 h6]; the 64-bit permute puts the pairs in order.
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(
      _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(
      _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
}

// Where a plane's row i of outputs takes whole vectors: every chunk of 8 outputs is whole when
// wo >= 8 (the last one moved back to end at wo, overlapping the one before it, which writes the
// same values twice). For a shorter row (wo < 8) a whole chunk reads and writes past the row's
// end into the next rows of the same plane, which are computed after it and so overwrite that;
// only the last row, whose excess would leave the plane, takes the exact path (masked loads and
// store_first). Masked stores are slow on AMD's cores: LeNet's 2x2 pools took 12% of its
// training step before.
inline bool whole_chunks(const PoolGeometry& s, int i) {
  return s.wo >= 8 || (s.w >= 8 && i + 1 < s.ho);
}

// The first output of the chunk starting at j0 (a multiple of 8) of a row of wo outputs.
inline int chunk_start(int j0, int wo) {
  return wo >= 8 ? std::min(j0, wo - 8) : j0;
}

// The window codes of 8 outputs (0..3 in the low byte of each lane) as 8 bytes.
inline __m128i pack_codes(__m256 c) {
  const __m256i ci = _mm256_castps_si256(c);
  const __m128i c16 = _mm_packs_epi32(_mm256_castsi256_si128(ci), _mm256_extracti128_si256(ci, 1));
  return _mm_packus_epi16(c16, c16);
}

// One plane: y = the max of each 2x2 window; code (when non-null) its position 0..3.
inline void max_pool_2x2_plane(const PoolGeometry& s, const float* __restrict x,
                               float* __restrict y, std::uint8_t* __restrict code) {
  const std::size_t w = std::size_t(s.w);
  for (int i = 0; i < s.ho; ++i) {
    const float* ra = x + std::size_t(2 * i) * w;
    const float* rb = ra + w;
    float* yr = y + std::size_t(i) * std::size_t(s.wo);
    std::uint8_t* cr = code != nullptr ? code + std::size_t(i) * std::size_t(s.wo) : nullptr;
    const bool whole = whole_chunks(s, i);
    for (int j0 = 0; j0 < s.wo; j0 += 8) {
      const int j = chunk_start(j0, s.wo);
      const int r = whole ? 8 : std::min(8, s.wo - j);  // outputs kept
      __m256 a0, a1, b0, b1;
      if (whole) {
        deinterleave(_mm256_loadu_ps(ra + 2 * j), _mm256_loadu_ps(ra + 2 * j + 8), a0, a1);
        deinterleave(_mm256_loadu_ps(rb + 2 * j), _mm256_loadu_ps(rb + 2 * j + 8), b0, b1);
      } else {
        const __m256i mlo = lanes(2 * r), mhi = lanes(2 * r - 8);
        deinterleave(_mm256_maskload_ps(ra + 2 * j, mlo), _mm256_maskload_ps(ra + 2 * j + 8, mhi),
                     a0, a1);
        deinterleave(_mm256_maskload_ps(rb + 2 * j, mlo), _mm256_maskload_ps(rb + 2 * j + 8, mhi),
                     b0, b1);
      }
      __m256 best = a0;
      const __m256 t1 = takes_over_v(a1, best);
      best = _mm256_blendv_ps(best, a1, t1);
      const __m256 t2 = takes_over_v(b0, best);
      best = _mm256_blendv_ps(best, b0, t2);
      const __m256 t3 = takes_over_v(b1, best);
      best = _mm256_blendv_ps(best, b1, t3);
      store_first(yr + j, r, best);
      if (cr != nullptr) {
        __m256 c = _mm256_and_ps(t1, _mm256_castsi256_ps(_mm256_set1_epi32(1)));
        c = _mm256_blendv_ps(c, _mm256_castsi256_ps(_mm256_set1_epi32(2)), t2);
        c = _mm256_blendv_ps(c, _mm256_castsi256_ps(_mm256_set1_epi32(3)), t3);
        store_codes(cr + j, r, pack_codes(c));
      }
    }
  }
}

// dx of one plane from the window codes: every element of dx is written (no memset needed).
inline void max_pool_2x2_plane_backward(const PoolGeometry& s, const float* __restrict g,
                                        const std::uint8_t* __restrict code, float* __restrict dx) {
  const std::size_t w = std::size_t(s.w);
  for (int i = 0; i < s.ho; ++i) {
    float* ra = dx + std::size_t(2 * i) * w;
    float* rb = ra + w;
    const float* gr = g + std::size_t(i) * std::size_t(s.wo);
    const std::uint8_t* cr = code + std::size_t(i) * std::size_t(s.wo);
    const bool whole = whole_chunks(s, i);
    for (int j0 = 0; j0 < s.wo; j0 += 8) {
      const int j = chunk_start(j0, s.wo);
      const int r = whole ? 8 : std::min(8, s.wo - j);
      std::uint64_t bytes = 0;
      if (whole)  // r == 8, but a copy of constant size is one load, not a call to memcpy
        std::memcpy(&bytes, cr + j, 8);
      else
        std::memcpy(&bytes, cr + j, std::size_t(r));
      const __m256i c = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(std::int64_t(bytes)));
      const __m256 gv = whole ? _mm256_loadu_ps(gr + j) : _mm256_maskload_ps(gr + j, lanes(r));
      const auto pick = [&](int k) {
        return _mm256_and_ps(gv, _mm256_castsi256_ps(_mm256_cmpeq_epi32(c, _mm256_set1_epi32(k))));
      };
      const __m256 a0 = pick(0), a1 = pick(1), b0 = pick(2), b1 = pick(3);
      // unpack interleaves within 128-bit halves; permute2f128 puts the halves in order. Row a
      // is stored before row b: a short row's whole chunk spills into row b, which then
      // overwrites it.
      const __m256 alo = _mm256_unpacklo_ps(a0, a1), ahi = _mm256_unpackhi_ps(a0, a1);
      const __m256 blo = _mm256_unpacklo_ps(b0, b1), bhi = _mm256_unpackhi_ps(b0, b1);
      const int n = whole ? 16 : 2 * r;
      store_first(ra + 2 * j, n, _mm256_permute2f128_ps(alo, ahi, 0x20));
      store_first(ra + 2 * j + 8, n - 8, _mm256_permute2f128_ps(alo, ahi, 0x31));
      store_first(rb + 2 * j, n, _mm256_permute2f128_ps(blo, bhi, 0x20));
      store_first(rb + 2 * j + 8, n - 8, _mm256_permute2f128_ps(blo, bhi, 0x31));
    }
    if (s.w % 2 != 0) ra[w - 1] = rb[w - 1] = 0.f;
  }
  // An odd last row is in no window.
  if (s.h % 2 != 0) std::fill(dx + std::size_t(s.h - 1) * w, dx + std::size_t(s.h) * w, 0.f);
}
#endif

}  // namespace xgrad::detail
