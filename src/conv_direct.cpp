// The direct conv2d kernels (declared in conv_kernels.hpp): float with AVX-512 only. For few input
// channels, output columns are the lanes; for few output channels and short rows, the output
// channels are. Each public entry dispatches through a constexpr table to a kernel specialised on
// its channel count (forward), tap count (dW) or row width (lanes), so the accumulators live in
// registers.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <utility>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "conv_kernels.hpp"

namespace xgrad::detail {

#ifdef __AVX512F__

namespace {

inline __mmask16 lanes16(int n) {
  return n <= 0 ? __mmask16(0) : n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

// y[o0 + o, i, :] for o < NC: bias + Σ_t wt[t, o0 + o]·x_t, x_t the input shifted by tap t
// (offset off[t] into the padded image). JB 16-lane blocks of a row at once: NC·JB independent
// accumulators hide the FMA latency and each broadcast weight serves JB blocks. The weights are
// read transposed (wt is k × co), so a tap's NC weights sit at fixed offsets from one pointer.
template <int NC, int JB>
void direct_forward_chunk(const float* xp, const float* wt, const float* b, float* y,
                          const ConvGeom& g, int o0, const Index* off) {
  const int k = g.k;
  const Index co = g.co, l = g.l;
  for (int i = 0; i < g.ho; ++i)
    for (int j0 = 0; j0 < g.wo; j0 += 16 * JB) {
      // Every loop over o and jb is unrolled and has no early exit: with runtime control flow
      // GCC keeps acc in memory and stores it after every FMA (measured 2x slower).
      __mmask16 m[JB];
#pragma GCC unroll 4
      for (int jb = 0; jb < JB; ++jb) m[jb] = lanes16(g.wo - j0 - 16 * jb);
      __m512 acc[NC][JB];
#pragma GCC unroll 32
      for (int o = 0; o < NC; ++o) {
        const __m512 init = b != nullptr ? _mm512_set1_ps(b[o0 + o]) : _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int jb = 0; jb < JB; ++jb) acc[o][jb] = init;
      }
      const float* base = xp + Index(i) * g.wp + j0;
      const float* wk = wt + o0;
      for (int t = 0; t < k; ++t, wk += co) {
        const float* src = base + off[t];
        __m512 xv[JB];
#pragma GCC unroll 4
        for (int jb = 0; jb < JB; ++jb) xv[jb] = _mm512_loadu_ps(src + 16 * jb);
#pragma GCC unroll 32
        for (int o = 0; o < NC; ++o) {
          const __m512 wv = _mm512_set1_ps(wk[o]);
#pragma GCC unroll 4
          for (int jb = 0; jb < JB; ++jb) acc[o][jb] = _mm512_fmadd_ps(wv, xv[jb], acc[o][jb]);
        }
      }
      // Lanes past the row end spill into the next output rows, which are written after this
      // one; only stores that would pass the end of the plane are masked. (Whole-vector loads and
      // stores took LeNet's conv1 from 89 to 107 GFLOP/s.)
      float* yi = y + Index(o0) * l + Index(i) * g.wo + j0;
#pragma GCC unroll 4
      for (int jb = 0; jb < JB; ++jb) {
        if (j0 + 16 * jb >= g.wo) continue;  // no all-false-mask stores (see max_pool2d)
        if (Index(i) * g.wo + j0 + 16 * (jb + 1) > l) {
#pragma GCC unroll 32
          for (int o = 0; o < NC; ++o)
            _mm512_mask_storeu_ps(yi + Index(o) * l + 16 * jb, m[jb], acc[o][jb]);
        } else {
#pragma GCC unroll 32
          for (int o = 0; o < NC; ++o) _mm512_storeu_ps(yi + Index(o) * l + 16 * jb, acc[o][jb]);
        }
      }
    }
}

using ForwardChunkFn = void (*)(const float*, const float*, const float*, float*, const ConvGeom&,
                                int, const Index*);

// direct_forward_chunk<1, JB> ... <sizeof(N), JB>, indexed by the chunk's channels minus one.
template <int JB, int... N>
constexpr std::array<ForwardChunkFn, sizeof...(N)> forward_chunk_table(
    std::integer_sequence<int, N...>) {
  return {&direct_forward_chunk<N + 1, JB>...};
}

template <int JB>
void direct_forward_jb(const float* xp, const float* wt, const float* b, float* y,
                       const ConvGeom& g, const Index* off) {
  // Channel chunks of at most 24 / JB (16 for JB = 1) accumulators, as even as possible.
  constexpr int kMax = JB == 1 ? 16 : 24 / JB;
  const int chunks = (g.co + kMax - 1) / kMax;
  const int per = (g.co + chunks - 1) / chunks;
  for (int o0 = 0; o0 < g.co; o0 += per) {
    const int nc = std::min(per, g.co - o0);
    static constexpr auto table = forward_chunk_table<JB>(std::make_integer_sequence<int, kMax>{});
    table[std::size_t(nc - 1)](xp, wt, b, y, g, o0, off);
  }
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
  Index off[kDirectMaxK];
  tap_offsets(g, off);
  for (int o0 = 0; o0 < g.co; o0 += OB)
    direct_dw_chunk<K, OB>(xp, gy, vacc, g, o0, std::min(OB, g.co - o0), off);
}

using DwFn = void (*)(const float*, const float*, float*, const ConvGeom&);

// direct_dw_k<1> ... <sizeof(N)>, indexed by K minus one.
template <int... N>
constexpr std::array<DwFn, sizeof...(N)> dw_table(std::integer_sequence<int, N...>) {
  return {&direct_dw_k<N + 1>...};
}

// Output rows i0 .. i0 + R - 1 (all WO = wo columns) of one image into tile[(i·WO + j)·16 + o]:
// one accumulator (a position's 16 channels) per position. Each tap loads its 16 weights once
// and broadcasts one input per position.
template <int WO, int R>
void lanes_rows(const float* xp, const float* w16, const Index* off, const __m512 init, float* tile,
                const ConvGeom& g, int i0) {
  __m512 acc[R][WO];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < WO; ++j) acc[r][j] = init;
  const Index wp = g.wp;
  const float* base = xp + Index(i0) * wp;
  for (int t = 0; t < g.k; ++t) {
    const __m512 wv = _mm512_loadu_ps(w16 + Index(t) * 16);
    const float* src = base + off[t];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float* row = src + r * wp;
#pragma GCC unroll 16
      for (int j = 0; j < WO; ++j)
        acc[r][j] = _mm512_fmadd_ps(_mm512_set1_ps(row[j]), wv, acc[r][j]);
    }
  }
  float* out = tile + Index(i0) * WO * 16;
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < WO; ++j) _mm512_storeu_ps(out + (r * WO + j) * 16, acc[r][j]);
}

// All output rows of one image, R at a time: R·WO <= 24 accumulators, R <= 4 row pointers.
template <int WO>
void lanes_image(const float* xp, const float* w16, const Index* off, const float* b, float* tile,
                 const ConvGeom& g) {
  constexpr int R = std::clamp(24 / WO, 1, 4);
  const __m512 init = b != nullptr ? _mm512_maskz_loadu_ps(lanes16(g.co), b) : _mm512_setzero_ps();
  int i = 0;
  for (; i + R <= g.ho; i += R) lanes_rows<WO, R>(xp, w16, off, init, tile, g, i);
  for (; i < g.ho; ++i) lanes_rows<WO, 1>(xp, w16, off, init, tile, g, i);
}

using LanesImageFn = void (*)(const float*, const float*, const Index*, const float*, float*,
                              const ConvGeom&);

// lanes_image<1> ... <sizeof(N)>, indexed by wo minus one.
template <int... N>
constexpr std::array<LanesImageFn, sizeof...(N)> lanes_table(std::integer_sequence<int, N...>) {
  return {&lanes_image<N + 1>...};
}

// y_o[p] = bc[o] + Σ_t wc[t·NC + o]·s_t[p] over the flat positions p of the planes y_o, o < NC,
// where s_t = s + t·ld is tap t's column (im2col row). Every plane y_o starts `a` floats past a
// 64-byte boundary, so the blocks start at p = -a and every store is aligned; the first and last
// are masked. JB vectors at a time: NC·JB accumulators, each load serves NC channels.
template <int NC, int JB>
void flat_chunk(const float* s, Index ld, const float* wc, const float* bc, float* const* yo, int a,
                const ConvGeom& g) {
  const int k = g.k;
  const Index l = g.l;
  for (Index p0 = -a; p0 < l; p0 += 16 * JB) {
    __m512 acc[NC][JB];
#pragma GCC unroll 8
    for (int o = 0; o < NC; ++o) {
      const __m512 init = bc != nullptr ? _mm512_set1_ps(bc[o]) : _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int jb = 0; jb < JB; ++jb) acc[o][jb] = init;
    }
    const float* src = s + p0;
    const float* wk = wc;
    for (int t = 0; t < k; ++t, src += ld, wk += NC) {
      __m512 xv[JB];
#pragma GCC unroll 4
      for (int jb = 0; jb < JB; ++jb) xv[jb] = _mm512_loadu_ps(src + 16 * jb);
#pragma GCC unroll 8
      for (int o = 0; o < NC; ++o) {
        const __m512 wv = _mm512_set1_ps(wk[o]);
#pragma GCC unroll 4
        for (int jb = 0; jb < JB; ++jb) acc[o][jb] = _mm512_fmadd_ps(wv, xv[jb], acc[o][jb]);
      }
    }
#pragma GCC unroll 4
    for (int jb = 0; jb < JB; ++jb) {
      const Index p = p0 + 16 * jb;
      if (p >= l) continue;  // no all-false-mask stores (see max_pool2d)
      if (p >= 0 && p + 16 <= l) {
#pragma GCC unroll 8
        for (int o = 0; o < NC; ++o) _mm512_storeu_ps(yo[o] + p, acc[o][jb]);
      } else {
        const __mmask16 m = __mmask16(lanes16(int(l - p)));
#pragma GCC unroll 8
        for (int o = 0; o < NC; ++o) _mm512_mask_storeu_ps(yo[o] + p, m, acc[o][jb]);
      }
    }
  }
}

using FlatChunkFn = void (*)(const float*, Index, const float*, const float*, float* const*, int,
                             const ConvGeom&);

template <int... N>
constexpr std::array<FlatChunkFn, sizeof...(N)> flat_table(std::integer_sequence<int, N...>) {
  return {&flat_chunk<N + 1, kFlatBlocks>...};
}

}  // namespace

void transpose_weights(const float* w, const ConvGeom& g, int pitch, float* wt) {
  for (int t = 0; t < g.k; ++t)
    for (int o = 0; o < pitch; ++o)
      wt[Index(t) * pitch + o] = o < g.co ? w[Index(o) * g.k + t] : 0.f;
}

void tap_offsets(const ConvGeom& g, Index* off) {
  const Index plane = Index(g.hp) * g.wp;
  int t = 0;
  for (int ci = 0; ci < g.c; ++ci)
    for (int p = 0; p < g.kh; ++p)
      for (int q = 0; q < g.kw; ++q) off[t++] = ci * plane + Index(p) * g.wp + q;
}

void direct_forward(const float* xp, const float* wt, const float* b, float* y, const ConvGeom& g) {
  Index off[kDirectMaxK];
  tap_offsets(g, off);
  // Two blocks when a row needs them: a tap then loads 2 input vectors for up to 24 FMAs. (The
  // convnet's conv1, 32 channels, is bound by storing its 5.5 MB output: 60 GFLOP/s as 2 chunks of
  // 16 channels with one block or 3 chunks of 11 with two; 105 when the stores stay in L1.)
  if (g.wo > 16)
    direct_forward_jb<2>(xp, wt, b, y, g, off);
  else
    direct_forward_jb<1>(xp, wt, b, y, g, off);
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

void lanes_forward(const float* xp, const float* w16, const Index* off, const float* b, float* tile,
                   float* y, const ConvGeom& g) {
  static constexpr auto table = lanes_table(std::make_integer_sequence<int, kLanesMaxWo>{});
  table[std::size_t(g.wo - 1)](xp, w16, off, b, tile, g);
  // y[o, p] = tile[p, o]: gathers of 16 positions, 16 floats apart (masked with a zero source:
  // GCC warns that the plain gather's source is unset).
  const __m512i stride =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(16));
  const Index l = g.l;
  for (int o = 0; o < g.co; ++o) {
    float* yo = y + Index(o) * l;
    Index p = 0;
    for (; p + 16 <= l; p += 16)
      _mm512_storeu_ps(yo + p, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(0xFFFF),
                                                        stride, tile + p * 16 + o, 4));
    if (p < l) {
      const __mmask16 m = lanes16(int(l - p));
      _mm512_mask_storeu_ps(
          yo + p, m,
          _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, stride, tile + p * 16 + o, 4));
    }
  }
}

void flat_stage(const float* xp, const ConvGeom& g, float* s, Index ld) {
  Index off[kDirectMaxK];
  tap_offsets(g, off);
  std::fill(s - kFlatFront, s, 0.f);
  for (int t = 0; t < g.k; ++t) {
    float* st = s + t * ld;
    // Whole vectors: a row's last one spills into the next row, which is written after it (and
    // the last row's into the slack, cleared below).
    for (int i = 0; i < g.ho; ++i) {
      const float* src = xp + off[t] + Index(i) * g.wp;
      float* dst = st + Index(i) * g.wo;
      for (int j = 0; j < g.wo; j += 16) _mm512_storeu_ps(dst + j, _mm512_loadu_ps(src + j));
    }
    std::fill(st + g.l, st + ld, 0.f);
  }
}

void flat_forward(const float* s, Index ld, const float* w, const float* b, float* y,
                  const ConvGeom& g) {
  // Plane o starts (y + o·l) mod 16 floats past a 64-byte boundary, which repeats with period
  // 16 / gcd(l mod 16, 16): channels first, first + period, ... (first < period) share it. Each
  // such class runs in chunks of at most kFlatMaxChannels channels, as even as possible.
  const int period = 16 / std::gcd(int(g.l % 16), 16);
  const int y0 = int((reinterpret_cast<std::uintptr_t>(y) / sizeof(float)) % 16);
  static constexpr auto table = flat_table(std::make_integer_sequence<int, kFlatMaxChannels>{});
  float wc[kDirectMaxK * kFlatMaxChannels];
  float bc[kFlatMaxChannels];
  float* yo[kFlatMaxChannels];
  for (int first = 0; first < std::min(period, g.co); ++first) {
    const int a = int((y0 + Index(first) * g.l) % 16);
    const int count = (g.co - 1 - first) / period + 1;
    const int chunks = (count + kFlatMaxChannels - 1) / kFlatMaxChannels;
    const int per = (count + chunks - 1) / chunks;
    for (int c0 = 0; c0 < count; c0 += per) {
      const int nc = std::min(per, count - c0);
      for (int i = 0; i < nc; ++i) {
        const int o = first + (c0 + i) * period;
        for (int t = 0; t < g.k; ++t) wc[t * nc + i] = w[Index(o) * g.k + t];
        if (b != nullptr) bc[i] = b[o];
        yo[i] = y + Index(o) * g.l;
      }
      table[std::size_t(nc - 1)](s, ld, wc, b != nullptr ? bc : nullptr, yo, a, g);
    }
  }
}
#endif  // __AVX512F__

}  // namespace xgrad::detail
