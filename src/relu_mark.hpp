// The ReLU the fused convolution ops apply to each image while it is in cache, marking what it
// zeroes for their backward.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace xgrad::detail {

/// y = y > 0 ? y : 0 over n floats (relu's rule: a NaN becomes 0), and, when `mark` is non-null,
/// mark[i] += zeroed for each y[i] it zeroes. Eight at a time with AVX2: a scalar loop here took
/// longer than a separate relu pass over the whole batch.
inline void relu_marking(float* y, std::uint8_t* mark, std::size_t n, std::uint8_t zeroed) {
  std::size_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(y + i);
    const __m256 keep = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);
    _mm256_storeu_ps(y + i, _mm256_and_ps(v, keep));
    if (mark != nullptr) {
      // `zeroed` in each lane not kept, packed to 8 bytes and added to the marks.
      const __m256i add = _mm256_andnot_si256(_mm256_castps_si256(keep), _mm256_set1_epi32(zeroed));
      const __m128i add16 =
          _mm_packs_epi32(_mm256_castsi256_si128(add), _mm256_extracti128_si256(add, 1));
      __m128i* m = reinterpret_cast<__m128i*>(mark + i);
      _mm_storel_epi64(m, _mm_add_epi8(_mm_loadl_epi64(m), _mm_packus_epi16(add16, add16)));
    }
  }
#endif
  for (; i < n; ++i) {
    const bool zero = !(y[i] > 0.f);
    y[i] = zero ? 0.f : y[i];
    if (mark != nullptr && zero) mark[i] = std::uint8_t(mark[i] + zeroed);
  }
}

}  // namespace xgrad::detail
