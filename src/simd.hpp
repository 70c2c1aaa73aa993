// The float vector of the hand-vectorised kernels (the direct convolutions in conv_direct.cpp):
// 16 lanes with AVX-512, 8 with AVX2 + FMA. The kernels are written once against VecF; the two
// machines this project runs on differ (an AVX-512 Xeon and an AVX2-only AMD EPYC), and each gets
// its own width from -march=native. XGRAD_SIMD is defined when either is available.
#pragma once

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define XGRAD_SIMD 1
#include <immintrin.h>

namespace xgrad::simd {

#ifdef __AVX512F__
struct VecF {
  using Reg = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static constexpr int kRegisters = 32;
  // Accumulators a kernel may keep in registers, leaving room for its operands.
  static constexpr int kAccumulators = 24;

  // The first n lanes (none for n <= 0, all for n >= 16).
  static Mask first(int n) {
    return n <= 0 ? Mask(0) : n >= 16 ? Mask(0xFFFF) : Mask((1u << n) - 1);
  }
  // Lanes lo <= x < hi.
  static Mask range(int lo, int hi) { return Mask(first(hi) & ~first(lo)); }
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float v) { return _mm512_set1_ps(v); }
  static Reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  // Lanes outside m read as 0 and are not accessed.
  static Reg loadu(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void storeu(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static void storeu(float* p, Mask m, Reg v) { _mm512_mask_storeu_ps(p, m, v); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  // Lane x = p[16·x] for the lanes in m, 0 elsewhere.
  static Reg gather16(Mask m, const float* p) {
    const __m512i idx =
        _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, p, 4);
  }
};
#else
struct VecF {
  using Reg = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  static constexpr int kRegisters = 16;
  static constexpr int kAccumulators = 12;

  static Mask first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Mask range(int lo, int hi) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(lo), lane),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane));
  }
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float v) { return _mm256_set1_ps(v); }
  static Reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static Reg loadu(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
  static void storeu(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static void storeu(float* p, Mask m, Reg v) { _mm256_maskstore_ps(p, m, v); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg gather16(Mask m, const float* p) {
    const __m256i idx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, _mm256_castsi256_ps(m), 4);
  }
};
#endif

}  // namespace xgrad::simd

#endif
