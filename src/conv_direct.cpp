// The direct conv2d kernels (declared in conv_kernels.hpp), float only, written once against the
// SIMD vector of simd.hpp (16 lanes with AVX-512, 8 with AVX2). For few input channels, output
// columns are the lanes; for few output channels and short rows, the output channels are. Each
// public entry dispatches through a constexpr table to a kernel specialised on its channel count
// (forward), tap count (dW) or row width (lanes), so the accumulators live in registers; how many
// fit (V::kAccumulators, V::kRegisters) sets the blocking, so each width gets its own.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "conv_kernels.hpp"

namespace xgrad::detail {

#ifdef XGRAD_SIMD

namespace {

using V = simd::VecF;
constexpr int W = V::kLanes;

// The size of the parts when n things are split into as few parts of at most `most` as there can
// be, as even as possible (the last part may be smaller).
int even_part(int n, int most) {
  const int parts = (n + most - 1) / most;
  return (n + parts - 1) / parts;
}

// Whether blocks of 3 vectors fill more of the kAccumulators registers than blocks of 2 over the
// chunks of `channels` (at most kAccumulators / blocks channels each): the convnet's conv1, 32
// channels, 8 chunks of 4 against 6 of at most 6; LeNet's, 6 channels, one chunk of 6 against 2 of
// at most 4.
bool three_blocks_fill_more(int channels) {
  const auto filled = [channels](int blocks) {
    const int most = V::kAccumulators / blocks;
    const int chunks = (channels + most - 1) / most;
    return double(channels) / double(chunks * most);
  };
  return filled(3) > filled(2);
}

// The register block of the direct kernels: NC channels × JB vectors of positions.
// set_bias: acc[o][jb] = b[o] (0 when b is null); fma_tap: acc[o][jb] += w[o]·x[W·jb ...] for one
// tap, whose JB input vectors are loaded once and whose NC weights are broadcast. Always inlined,
// with every loop unrolled and no early exit: with runtime control flow GCC keeps acc in memory and
// stores it after every FMA (measured 2x slower).
template <int NC, int JB>
[[gnu::always_inline]] inline void set_bias(V::Reg (&acc)[NC][JB], const float* b) {
#pragma GCC unroll 32
  for (int o = 0; o < NC; ++o) {
    const V::Reg init = b != nullptr ? V::set1(b[o]) : V::zero();
#pragma GCC unroll 4
    for (int jb = 0; jb < JB; ++jb) acc[o][jb] = init;
  }
}

template <int NC, int JB>
[[gnu::always_inline]] inline void fma_tap(V::Reg (&acc)[NC][JB], const float* x, const float* w) {
  V::Reg xv[JB];
#pragma GCC unroll 4
  for (int jb = 0; jb < JB; ++jb) xv[jb] = V::loadu(x + W * jb);
#pragma GCC unroll 32
  for (int o = 0; o < NC; ++o) {
    const V::Reg wv = V::set1(w[o]);
#pragma GCC unroll 4
    for (int jb = 0; jb < JB; ++jb) acc[o][jb] = V::fmadd(wv, xv[jb], acc[o][jb]);
  }
}

// Stores acc[o][jb] for o < NC at y + o·l + p, whole vectors, masked only where one would pass
// the end l of its plane (lanes past a row's end land in later positions, which are stored after).
template <int NC, int JB>
[[gnu::always_inline]] inline void store_block(const V::Reg (&acc)[NC][JB], int jb, float* y,
                                               Index l, Index p) {
  if (p + W <= l) {
#pragma GCC unroll 32
    for (int o = 0; o < NC; ++o) V::storeu(y + Index(o) * l + p, acc[o][jb]);
  } else {
    const V::Mask m = V::first(int(l - p));
#pragma GCC unroll 32
    for (int o = 0; o < NC; ++o) V::storeu(y + Index(o) * l + p, m, acc[o][jb]);
  }
}

// y[o0 + o, i, :] for o < NC: bias + Σ_t wt[t, o0 + o]·x_t, x_t the input shifted by tap t
// (offset off[t] into the padded image). JB W-lane blocks of a row at once: NC·JB independent
// accumulators hide the FMA latency and each broadcast weight serves JB blocks. The weights are
// read transposed (wt is k × co), so a tap's NC weights sit at fixed offsets from one pointer.
template <int NC, int JB>
void direct_forward_chunk(const float* xp, const float* wt, const float* b, float* y,
                          const ConvGeom& g, int o0, const Index* off) {
  const Index co = g.co, l = g.l;
  for (int i = 0; i < g.ho; ++i) {
    for (int j0 = 0; j0 < g.wo; j0 += W * JB) {
      V::Reg acc[NC][JB];
      set_bias(acc, b != nullptr ? b + o0 : nullptr);
      const float* base = xp + Index(i) * g.wp + j0;
      const float* wk = wt + o0;
      for (int t = 0; t < g.k; ++t, wk += co) fma_tap(acc, base + off[t], wk);
#pragma GCC unroll 4
      for (int jb = 0; jb < JB; ++jb) {
        // Lanes past the row end spill into the next output rows, which are written after this
        // one; only stores that would pass the end of the plane are masked. (Whole-vector loads
        // and stores took LeNet's conv1 from 89 to 107 GFLOP/s with AVX-512.)
        if (j0 + W * jb >= g.wo) continue;  // no all-false-mask stores (see max_pool2d)
        store_block(acc, jb, y + Index(o0) * l, l, Index(i) * g.wo + j0 + W * jb);
      }
    }
  }
}

// The shift kernel: y[o0 + o, P] for o < NC over the flat positions P of the output planes, JB
// vectors at a time, tap t reading s + off[t] + P (shift_stage's planes). Only the plane's last
// vector can be partial: its store is masked.
template <int NC, int JB>
void shift_forward_chunk(const float* s, const float* wt, const float* b, float* y,
                         const ConvGeom& g, int o0, const Index* off) {
  const int k = g.k;
  const Index co = g.co, l = g.l;
  float* yc = y + Index(o0) * l;
  for (Index p0 = 0; p0 < l; p0 += W * JB) {
    V::Reg acc[NC][JB];
    set_bias(acc, b != nullptr ? b + o0 : nullptr);
    const float* wk = wt + o0;
    for (int t = 0; t < k; ++t, wk += co) fma_tap(acc, s + p0 + off[t], wk);
#pragma GCC unroll 4
    for (int jb = 0; jb < JB; ++jb) {
      const Index p = p0 + W * jb;
      if (p >= l) continue;  // no all-false-mask stores (see max_pool2d)
      store_block(acc, jb, yc, l, p);
    }
  }
}

using ForwardChunkFn = void (*)(const float*, const float*, const float*, float*, const ConvGeom&,
                                int, const Index*);

// Chunk<1, JB> ... <sizeof(N), JB> (direct_forward_chunk or shift_forward_chunk), indexed by the
// chunk's channels minus one.
template <bool Shift, int JB, int... N>
constexpr std::array<ForwardChunkFn, sizeof...(N)> forward_chunk_table(
    std::integer_sequence<int, N...>) {
  if constexpr (Shift)
    return {&shift_forward_chunk<N + 1, JB>...};
  else
    return {&direct_forward_chunk<N + 1, JB>...};
}

template <bool Shift, int JB>
void direct_forward_jb(const float* xp, const float* wt, const float* b, float* y,
                       const ConvGeom& g, const Index* off) {
  // Channel chunks of at most kAccumulators / JB accumulators (16 for JB = 1 with AVX-512), as
  // even as possible.
  constexpr int kMax = JB == 1 ? std::min(16, V::kAccumulators) : V::kAccumulators / JB;
  const int per = even_part(g.co, kMax);
  for (int o0 = 0; o0 < g.co; o0 += per) {
    const int nc = std::min(per, g.co - o0);
    static constexpr auto table =
        forward_chunk_table<Shift, JB>(std::make_integer_sequence<int, kMax>{});
    table[std::size_t(nc - 1)](xp, wt, b, y, g, o0, off);
  }
}

// acc = 0: the start of a dW chunk.
template <int OB, int T>
[[gnu::always_inline]] inline void zero_all(V::Reg (&acc)[OB][T]) {
#pragma GCC unroll 32
  for (int o = 0; o < OB; ++o)
#pragma GCC unroll 32
    for (int u = 0; u < T; ++u) acc[o][u] = V::zero();
}

// vacc[o0 + o, t0 + u, :] += acc[o][u] for o < ob, u < T: the end of a dW chunk. Compile-time
// bounds only (a runtime bound here made GCC keep acc in memory, storing it after every FMA).
template <int OB, int T>
[[gnu::always_inline]] inline void add_to_lanes(const V::Reg (&acc)[OB][T], float* vacc,
                                                const ConvGeom& g, int o0, int ob, int t0) {
#pragma GCC unroll 32
  for (int o = 0; o < OB; ++o) {
    if (o >= ob) break;
#pragma GCC unroll 32
    for (int u = 0; u < T; ++u) {
      float* a = vacc + (Index(o0 + o) * g.k + t0 + u) * W;
      V::storeu(a, V::add(V::loadu(a), acc[o][u]));
    }
  }
}

// vacc[o, t0 + t, :] += Σ_{i,j} gy[o, i, j]·x_{t0+t}[i, j] for t < K, lane-wise (lanes are summed
// once at the end of the pass, see direct_dw_finish), for OB channels from o0 at a time: OB·K
// vector accumulators in registers; the taps' offsets come from a table so that the tap loop
// has a compile-time trip count.
template <int K, int OB>
void direct_dw_chunk(const float* xp, const float* gy, float* vacc, const ConvGeom& g, int o0,
                     int ob, int t0, const Index* off) {
  V::Reg acc[OB][K];
  zero_all(acc);
  for (int i = 0; i < g.ho; ++i)
    for (int j0 = 0; j0 < g.wo; j0 += W) {
      const V::Mask m = V::first(g.wo - j0);
      V::Reg gv[OB];
#pragma GCC unroll 32
      for (int o = 0; o < OB; ++o)
        gv[o] = o < ob ? V::loadu(m, gy + Index(o0 + o) * g.l + Index(i) * g.wo + j0) : V::zero();
      const float* base = xp + Index(i) * g.wp + j0;
#pragma GCC unroll 32
      for (int t = 0; t < K; ++t) {
        const V::Reg xv = V::loadu(m, base + off[t0 + t]);
        for (int o = 0; o < OB; ++o) acc[o][t] = V::fmadd(gv[o], xv, acc[o][t]);
      }
    }
  add_to_lanes(acc, vacc, g, o0, ob, t0);
}

// direct_dw_chunk for one input channel and kernel rows p0 .. p0 + PR - 1 of a KH×KW kernel
// known at compile time: taps are addressed from PR row pointers with immediate column offsets,
// so no offset table competes with the accumulators for registers.
template <int PR, int KW, int OB>
void direct_dw_chunk_c1(const float* xp, const float* gy, float* vacc, const ConvGeom& g, int o0,
                        int ob, int p0) {
  constexpr int K = PR * KW;
  V::Reg acc[OB][K];
  zero_all(acc);
  const Index wp = g.wp;
  for (int i = 0; i < g.ho; ++i)
    for (int j0 = 0; j0 < g.wo; j0 += W) {
      const V::Mask m = V::first(g.wo - j0);
      V::Reg gv[OB];
#pragma GCC unroll 32
      for (int o = 0; o < OB; ++o)
        gv[o] = o < ob ? V::loadu(m, gy + Index(o0 + o) * g.l + Index(i) * g.wo + j0) : V::zero();
      const float* base = xp + Index(i + p0) * wp + j0;
#pragma GCC unroll 8
      for (int p = 0; p < PR; ++p) {
        const float* row = base + p * wp;
#pragma GCC unroll 8
        for (int q = 0; q < KW; ++q) {
          const V::Reg xv = V::loadu(m, row + q);
#pragma GCC unroll 32
          for (int o = 0; o < OB; ++o) acc[o][p * KW + q] = V::fmadd(gv[o], xv, acc[o][p * KW + q]);
        }
      }
    }
  add_to_lanes(acc, vacc, g, o0, ob, p0 * KW);
}

template <int K>
void direct_dw_k(const float* xp, const float* gy, float* vacc, const ConvGeom& g) {
  // Accumulators besides the OB gy vectors and one input vector: 28 of 32 registers (AVX-512),
  // 12 of 16 (AVX2).
  constexpr int kBudget = V::kRegisters - 4;
  if constexpr (K == 25 || K == 9) {  // 5×5 (LeNet) and 3×3 (convnet) over one channel
    constexpr int KS = K == 25 ? 5 : 3;
    // AVX-512 keeps the whole kernel's taps in registers; AVX2 one kernel row's, for more
    // channels per pass (fewer input loads per FMA).
    constexpr int PR = W == 16 ? KS : 1;
    constexpr int OB = std::max(1, (kBudget - 1) / (PR * KS));
    if (g.c == 1 && g.kh == KS && g.kw == KS) {
      for (int o0 = 0; o0 < g.co; o0 += OB)
        for (int p0 = 0; p0 < KS; p0 += PR)
          direct_dw_chunk_c1<PR, KS, OB>(xp, gy, vacc, g, o0, std::min(OB, g.co - o0), p0);
      return;
    }
  }
  // Taps in groups of at most kBudget (all K at once with AVX-512, K <= 28), the last group
  // possibly shorter.
  constexpr int kGroups = (K + kBudget - 1) / kBudget;
  constexpr int TB = (K + kGroups - 1) / kGroups;
  constexpr int TL = K - (kGroups - 1) * TB;
  static_assert(TL > 0 && TL <= TB);
  constexpr int OB = std::max(1, kBudget / TB);
  Index off[kDirectMaxK];
  tap_offsets(g, off);
  for (int o0 = 0; o0 < g.co; o0 += OB) {
    const int ob = std::min(OB, g.co - o0);
    for (int t0 = 0; t0 + TB <= K - TL; t0 += TB)
      direct_dw_chunk<TB, OB>(xp, gy, vacc, g, o0, ob, t0, off);
    direct_dw_chunk<TL, OB>(xp, gy, vacc, g, o0, ob, K - TL, off);
  }
}

// An optimisation barrier that keeps v in a register. Without it GCC folds the load of v into
// each FMA that uses it, as a memory operand, so v is loaded once per FMA: LeNet conv1's dW by
// shift_dw_chunk ran at 46-49 GFLOP/s, against 64-69 with it (kernel alone, 1 thread, medians of
// 15 alternating runs, two runs).
[[gnu::always_inline]] inline void keep_in_register(V::Reg& v) {
  asm("" : "+v"(v));
}

// vacc[o0 + o, t0 + u, :] += Σ_P gy[o0 + o, P]·s[off[t0 + u] + P] lane-wise for o < ob, u < T:
// over the flat positions P of shift_stage's planes, whole vectors but the last (masked), OB·T
// accumulators in registers. Channels past ob read the last one again; their sums are dropped.
template <int T, int OB>
void shift_dw_chunk(const float* s, const float* gy, float* vacc, const ConvGeom& g, int o0, int ob,
                    int t0, const Index* off) {
  V::Reg acc[OB][T];
  zero_all(acc);
  const Index l = g.l;
  const float* gyo[OB];
#pragma GCC unroll 8
  for (int o = 0; o < OB; ++o) gyo[o] = gy + Index(o0 + std::min(o, ob - 1)) * l;
  const float* st[T];
#pragma GCC unroll 8
  for (int u = 0; u < T; ++u) st[u] = s + off[t0 + u];
  const auto step = [&](Index p, auto load) {
    V::Reg gv[OB];
#pragma GCC unroll 8
    for (int o = 0; o < OB; ++o) gv[o] = load(gyo[o] + p);
#pragma GCC unroll 8
    for (int u = 0; u < T; ++u) {
      V::Reg xv = load(st[u] + p);
      keep_in_register(xv);
#pragma GCC unroll 8
      for (int o = 0; o < OB; ++o) acc[o][u] = V::fmadd(gv[o], xv, acc[o][u]);
    }
  };
  Index p = 0;
  for (; p + W <= l; p += W) step(p, [](const float* a) { return V::loadu(a); });
  if (p < l) {
    const V::Mask m = V::first(int(l - p));
    step(p, [m](const float* a) { return V::loadu(m, a); });
  }
  add_to_lanes(acc, vacc, g, o0, ob, t0);
}

// Taps per shift_dw_chunk: at most 6, with 2 channels (AVX2: 12 accumulators, 2 gradient vectors
// and an input vector in 16 registers) or 4 (AVX-512: 24 + 4 + 1 of 32).
constexpr int kShiftDwTaps = 6;
constexpr int kShiftDwChannels = V::kAccumulators / kShiftDwTaps;

using ShiftDwFn = void (*)(const float*, const float*, float*, const ConvGeom&, int, int, int,
                           const Index*);

// shift_dw_chunk<1, OB> ... <sizeof(N), OB>, indexed by the taps minus one.
template <int... N>
constexpr std::array<ShiftDwFn, sizeof...(N)> shift_dw_table(std::integer_sequence<int, N...>) {
  return {&shift_dw_chunk<N + 1, kShiftDwChannels>...};
}

using DwFn = void (*)(const float*, const float*, float*, const ConvGeom&);

// direct_dw_k<1> ... <sizeof(N)>, indexed by K minus one.
template <int... N>
constexpr std::array<DwFn, sizeof...(N)> dw_table(std::integer_sequence<int, N...>) {
  return {&direct_dw_k<N + 1>...};
}

// The lanes kernels hold a position's or a tap's kLanesPitch channels in CV = kLanesPitch / W
// vectors (CV = 1 when co <= W).

// Output rows i0 .. i0 + R - 1, columns j0 .. j0 + P - 1 of one image into
// tile[(i·wo + j)·16 + o]: CV accumulators (a position's channels) per position. Each tap loads
// its weights once and broadcasts one input per position.
template <int P, int R, int CV>
void lanes_block(const float* xp, const float* w16, const Index* off, const V::Reg* init,
                 float* tile, const ConvGeom& g, int i0, int j0) {
  V::Reg acc[R][P][CV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < P; ++j)
#pragma GCC unroll 2
      for (int c = 0; c < CV; ++c) acc[r][j][c] = init[c];
  const Index wp = g.wp;
  const float* base = xp + Index(i0) * wp + j0;
  for (int t = 0; t < g.k; ++t) {
    V::Reg wv[CV];
#pragma GCC unroll 2
    for (int c = 0; c < CV; ++c) wv[c] = V::loadu(w16 + Index(t) * kLanesPitch + c * W);
    const float* src = base + off[t];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float* row = src + r * wp;
#pragma GCC unroll 16
      for (int j = 0; j < P; ++j) {
        const V::Reg xv = V::set1(row[j]);
#pragma GCC unroll 2
        for (int c = 0; c < CV; ++c) acc[r][j][c] = V::fmadd(xv, wv[c], acc[r][j][c]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < P; ++j)
#pragma GCC unroll 2
      for (int c = 0; c < CV; ++c)
        V::storeu(tile + (Index(i0 + r) * g.wo + j0 + j) * kLanesPitch + c * W, acc[r][j][c]);
}

// All output rows of one image (WO = wo): whole rows, R at a time, when a row's WO·CV
// accumulators fit (R·WO·CV <= kAccumulators, R <= 4 row pointers); else each row in parts.
template <int WO, int CV>
void lanes_image(const float* xp, const float* w16, const Index* off, const float* b, float* tile,
                 const ConvGeom& g) {
  V::Reg init[CV];
  for (int c = 0; c < CV; ++c)
    init[c] = b != nullptr ? V::loadu(V::first(g.co - c * W), b + c * W) : V::zero();
  constexpr int kPerRow = WO * CV;
  if constexpr (kPerRow <= V::kAccumulators) {
    constexpr int R = std::clamp(V::kAccumulators / kPerRow, 1, 4);
    int i = 0;
    for (; i + R <= g.ho; i += R) lanes_block<WO, R, CV>(xp, w16, off, init, tile, g, i, 0);
    for (; i < g.ho; ++i) lanes_block<WO, 1, CV>(xp, w16, off, init, tile, g, i, 0);
  } else {
    constexpr int kParts = (kPerRow + V::kAccumulators - 1) / V::kAccumulators;
    constexpr int P = (WO + kParts - 1) / kParts;
    constexpr int PL = WO - (kParts - 1) * P;  // the last part
    static_assert(PL > 0 && PL <= P);
    for (int i = 0; i < g.ho; ++i) {
      for (int s = 0; s + 1 < kParts; ++s)
        lanes_block<P, 1, CV>(xp, w16, off, init, tile, g, i, s * P);
      lanes_block<PL, 1, CV>(xp, w16, off, init, tile, g, i, (kParts - 1) * P);
    }
  }
}

using LanesImageFn = void (*)(const float*, const float*, const Index*, const float*, float*,
                              const ConvGeom&);

// lanes_image<1, CV> ... <sizeof(N), CV>, indexed by wo minus one.
template <int CV, int... N>
constexpr std::array<LanesImageFn, sizeof...(N)> lanes_table(std::integer_sequence<int, N...>) {
  return {&lanes_image<N + 1, CV>...};
}

// dwt[t0 + u, o] += Σ_{i,j} xp[off[t0 + u] + i·wp + j]·gyt[(i·wo + j)·16 + o] for u < T: T taps'
// rows of the transposed dW, CV vectors (a tap's 16 channels) each, in registers. Each position
// loads its CV gradient vectors once and broadcasts one input per tap.
template <int T, int CV>
void lanes_dw_block(const float* xp, const float* gyt, const Index* off, float* dwt,
                    const ConvGeom& g, int t0) {
  V::Reg acc[T][CV];
#pragma GCC unroll 32
  for (int u = 0; u < T; ++u)
#pragma GCC unroll 2
    for (int c = 0; c < CV; ++c) acc[u][c] = V::zero();
  Index tap[T];
  for (int u = 0; u < T; ++u) tap[u] = off[t0 + u];
  for (int i = 0; i < g.ho; ++i) {
    const float* row = xp + Index(i) * g.wp;
    const float* gr = gyt + Index(i) * g.wo * kLanesPitch;
    for (int j = 0; j < g.wo; ++j) {
      V::Reg gv[CV];
#pragma GCC unroll 2
      for (int c = 0; c < CV; ++c) gv[c] = V::loadu(gr + j * kLanesPitch + c * W);
#pragma GCC unroll 32
      for (int u = 0; u < T; ++u) {
        const V::Reg xv = V::set1(row[tap[u] + j]);
#pragma GCC unroll 2
        for (int c = 0; c < CV; ++c) acc[u][c] = V::fmadd(xv, gv[c], acc[u][c]);
      }
    }
  }
#pragma GCC unroll 32
  for (int u = 0; u < T; ++u)
#pragma GCC unroll 2
    for (int c = 0; c < CV; ++c) {
      float* d = dwt + Index(t0 + u) * kLanesPitch + c * W;
      V::storeu(d, V::add(V::loadu(d), acc[u][c]));
    }
}

// Taps per block: as many as the accumulators allow (6 with AVX2 and 16 channels), at most 12
// (their offsets stay in general registers).
template <int CV>
constexpr int kLanesDwTaps = std::min(12, V::kAccumulators / CV);

using LanesDwFn = void (*)(const float*, const float*, const Index*, float*, const ConvGeom&, int);

// lanes_dw_block<1, CV> ... <sizeof(N), CV>, indexed by the block's taps minus one.
template <int CV, int... N>
constexpr std::array<LanesDwFn, sizeof...(N)> lanes_dw_table(std::integer_sequence<int, N...>) {
  return {&lanes_dw_block<N + 1, CV>...};
}

template <int CV>
void lanes_dw_image(const float* xp, const float* gyt, const Index* off, float* dwt,
                    const ConvGeom& g) {
  constexpr int kT = kLanesDwTaps<CV>;
  static constexpr auto table = lanes_dw_table<CV>(std::make_integer_sequence<int, kT>{});
  for (int t0 = 0; t0 < g.k; t0 += kT)
    table[std::size_t(std::min(kT, g.k - t0) - 1)](xp, gyt, off, dwt, g, t0);
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

namespace {

// The row kernel: two blocks when a row needs them (a tap then loads 2 input vectors for up to
// kAccumulators FMAs: 24 with AVX-512, 12 with AVX2), else one.
void direct_forward_rows(const float* xp, const float* wt, const float* b, float* y,
                         const ConvGeom& g, const Index* off) {
  if (g.wo > W)
    direct_forward_jb<false, 2>(xp, wt, b, y, g, off);
  else
    direct_forward_jb<false, 1>(xp, wt, b, y, g, off);
}

}  // namespace

void direct_forward(const float* xp, const float* wt, const float* b, float* y, const ConvGeom& g) {
  Index off[kDirectMaxK];
  tap_offsets(g, off);
  direct_forward_rows(xp, wt, b, y, g, off);
}

Index shift_pitch(const ConvGeom& g) {
  return (Index(g.hp) * g.wo + W - 1) / W * W;
}

std::size_t shift_buffer(const ConvGeom& g) {
  return std::size_t(g.c) * std::size_t(g.kw) * std::size_t(shift_pitch(g)) +
         std::size_t(kDirectSlack);
}

void shift_stage(const float* x, const ConvGeom& g, float* s) {
  const Index pitch = shift_pitch(g), wo = g.wo;
  const int vectors = (g.wo + W - 1) / W;  // per row
  const V::Reg zero = V::zero();
  for (int ci = 0; ci < g.c; ++ci) {
    const float* xc = x + Index(ci) * g.h * g.w;
    for (int q = 0; q < g.kw; ++q) {
      float* plane = s + (Index(ci) * g.kw + q) * pitch;
      // Column j reads x's column j + shift, for valid_lo <= j < valid_hi; vectors v wholly
      // inside that range load plainly, the others with a mask (so x is read only in bounds).
      const int shift = q - g.pw;
      const int valid_lo = std::max(0, -shift), valid_hi = std::min(g.wo, g.w - shift);
      const int full_lo = (valid_lo + W - 1) / W, full_hi = valid_hi / W;
      // Whole vectors throughout, so stores spill past a row's end: the zero rows first (their
      // last store spills into the first row), then one column of vectors at a time over all the
      // rows, from the last column (whose stores spill into the next row's first columns, written
      // after) to the first, then the rest of the plane (the last row may spill into it, or into
      // the next plane or the slack, written after). Column by column, with each mask made once,
      // took half the time of row by row (LeNet conv1: 0.77 against 1.55 µs an image).
      for (Index i = 0; i < g.ph * wo; i += W) V::storeu(plane + i, zero);
      float* body = plane + g.ph * wo;
      for (int v = vectors - 1; v >= 0; --v) {
        const int j = W * v;
        float* d = body + j;
        const float* src = xc + shift + j;
        if (v >= full_lo && v < full_hi) {
          for (int r = 0; r < g.h; ++r) V::storeu(d + r * wo, V::loadu(src + Index(r) * g.w));
        } else {
          const V::Mask m = V::range(valid_lo - j, valid_hi - j);
          for (int r = 0; r < g.h; ++r) V::storeu(d + r * wo, V::loadu(m, src + Index(r) * g.w));
        }
      }
      for (Index i = Index(g.ph + g.h) * wo; i < pitch; i += W) V::storeu(plane + i, zero);
    }
  }
  float* end = s + Index(g.c) * g.kw * pitch;
  for (int i = 0; i < kDirectSlack; i += W) V::storeu(end + i, zero);
}

void shift_offsets(const ConvGeom& g, Index* off) {
  const Index pitch = shift_pitch(g);
  int t = 0;
  for (int ci = 0; ci < g.c; ++ci)
    for (int p = 0; p < g.kh; ++p)
      for (int q = 0; q < g.kw; ++q) off[t++] = (Index(ci) * g.kw + q) * pitch + Index(p) * g.wo;
}

void shift_forward(const float* s, const float* wt, const float* b, float* y, const ConvGeom& g) {
  // Taps in direct_forward's order (ci, p, q) (shift_offsets), so that each lane sums the same
  // products in the same order. (On the AVX-512 Xeon the convnet's conv1, 32 channels, was bound
  // by storing its 5.5 MB output: 60 GFLOP/s, 105 when the stores stayed in L1. On the AVX2 EPYC
  // it is not: 8 images, whose output fits in L2, ran no faster per image than 64.)
  Index off[kDirectMaxK];
  shift_offsets(g, off);
  if (three_blocks_fill_more(g.co))
    direct_forward_jb<true, 3>(s, wt, b, y, g, off);
  else
    direct_forward_jb<true, 2>(s, wt, b, y, g, off);
}

namespace {

// fold_dx's layout (conv_kernels.hpp): dY's planes of hw = ho·wo positions staged `front` floats
// in and `pitch` = (ho + kh - 1)·wo apart, so that the zeros around them cover every tap's reach;
// the accumulator planes A[ci, q] (`folded` = c·kw of them) of `pitch` positions, whose row y
// holds what kernel column q adds to row y of dX, shifted left by q, `acc_pitch` apart (whole
// vectors: their stores need no mask).
struct FoldGeom {
  Index hw, pitch, front, acc_pitch;
  int folded;
};

FoldGeom fold_geom(const ConvGeom& g) {
  const Index pitch = Index(g.ho + g.kh - 1) * g.wo;
  return {Index(g.ho) * g.wo, pitch, Index(g.kh - 1) * g.wo, (pitch + W - 1) / W * W, g.c * g.kw};
}

// A[n0 + n][R] for n < NC over the positions R, JB vectors at a time: Σ_{p, o} wq[p·co + o,
// n0 + n]·dY_o[R - p·wo]. The rows p whose reach misses dY for the whole block are skipped; the
// others read the staged zeros where they miss it.
template <int NC, int JB>
void fold_dx_chunk(const float* s, const float* wq, float* acc, const ConvGeom& g,
                   const FoldGeom& f, int n0) {
  const Index wo = g.wo;
  for (Index r0 = 0; r0 < f.pitch; r0 += W * JB) {
    V::Reg a[NC][JB];
    set_bias(a, nullptr);
    // Row p reaches dY where r0 - p·wo <= hw - 1 and r0 + W·JB - 1 - p·wo >= 0.
    const Index below = r0 - f.hw + 1;
    const int p_lo = below <= 0 ? 0 : int((below + wo - 1) / wo);
    const int p_hi = int(std::min<Index>(g.kh - 1, (r0 + W * JB - 1) / wo));
    for (int p = p_lo; p <= p_hi; ++p) {
      const float* x = s + f.front + r0 - Index(p) * wo;
      const float* wk = wq + Index(p) * g.co * f.folded + n0;
      for (int o = 0; o < g.co; ++o, x += f.pitch, wk += f.folded) fma_tap(a, x, wk);
    }
#pragma GCC unroll 4
    for (int jb = 0; jb < JB; ++jb) {
      if (r0 + W * jb >= f.acc_pitch) continue;
      store_block(a, jb, acc + Index(n0) * f.acc_pitch, f.acc_pitch, r0 + W * jb);
    }
  }
}

using FoldChunkFn = void (*)(const float*, const float*, float*, const ConvGeom&, const FoldGeom&,
                             int);

template <int JB, int... N>
constexpr std::array<FoldChunkFn, sizeof...(N)> fold_chunk_table(std::integer_sequence<int, N...>) {
  return {&fold_dx_chunk<N + 1, JB>...};
}

template <int JB>
void fold_dx_jb(const float* s, const float* wq, float* acc, const ConvGeom& g, const FoldGeom& f) {
  constexpr int kMax = V::kAccumulators / JB;
  static constexpr auto table = fold_chunk_table<JB>(std::make_integer_sequence<int, kMax>{});
  const int per = even_part(f.folded, kMax);
  for (int n0 = 0; n0 < f.folded; n0 += per)
    table[std::size_t(std::min(per, f.folded - n0) - 1)](s, wq, acc, g, f, n0);
}

}  // namespace

std::size_t fold_dx_buffer(const ConvGeom& g) {
  const FoldGeom f = fold_geom(g);
  // The staged dY, what the last blocks read past it, and the accumulator planes.
  return std::size_t(f.front + Index(g.co) * f.pitch + kDirectSlack + f.folded * f.acc_pitch);
}

void fold_dx_clear(float* buf, const ConvGeom& g) {
  std::fill(buf, buf + fold_dx_buffer(g), 0.f);
}

void fold_dx_weights(const float* w, const ConvGeom& g, float* wq) {
  const int folded = g.c * g.kw;
  for (int o = 0; o < g.co; ++o)
    for (int ci = 0; ci < g.c; ++ci)
      for (int p = 0; p < g.kh; ++p)
        for (int q = 0; q < g.kw; ++q)
          wq[(Index(p) * g.co + o) * folded + ci * g.kw + q] =
              w[((Index(o) * g.c + ci) * g.kh + p) * g.kw + q];
}

void fold_dx(const float* gy, const float* wq, float* buf, float* dxp, const ConvGeom& g) {
  const FoldGeom f = fold_geom(g);
  float* s = buf;
  float* acc = buf + f.front + Index(g.co) * f.pitch + kDirectSlack;
  for (int o = 0; o < g.co; ++o)  // the zeros around the planes stay from fold_dx_clear
    std::copy(gy + Index(o) * f.hw, gy + Index(o + 1) * f.hw, s + f.front + Index(o) * f.pitch);
  // Blocks of 2 or 3 vectors, whichever fills more accumulators (LeNet conv2: 5 chunks of 6
  // channels × 2 with AVX2).
  if (three_blocks_fill_more(f.folded))
    fold_dx_jb<3>(s, wq, acc, g, f);
  else
    fold_dx_jb<2>(s, wq, acc, g, f);
  // dX[ci, y, x] = Σ_q A[ci, q][y·wo + x - q] over 0 <= x - q < wo: masked loads, each mask made
  // once per column of vectors; a row's last vector moved back to end at wp (overlapping the one
  // before it with the same values), or masked when the row is shorter than a vector.
  const int hp = g.ho + g.kh - 1, wp = g.wo + g.kw - 1;
  for (int ci = 0; ci < g.c; ++ci) {
    const float* a = acc + Index(ci) * g.kw * f.acc_pitch;
    float* d = dxp + Index(ci) * hp * wp;
    for (int x0 = 0; x0 < wp; x0 += W) {
      const int x = wp >= W ? std::min(x0, wp - W) : 0;
      V::Mask m[W];  // kw <= W (fold_dx_eligible)
      for (int q = 0; q < g.kw; ++q) m[q] = V::range(q - x, q - x + g.wo);
      for (int y = 0; y < hp; ++y) {
        const float* ay = a + Index(y) * g.wo + x;
        V::Reg sum = V::loadu(m[0], ay);
        for (int q = 1; q < g.kw; ++q) sum = V::add(sum, V::loadu(m[q], ay + q * f.acc_pitch - q));
        if (wp >= W)
          V::storeu(d + Index(y) * wp + x, sum);
        else
          V::storeu(d + Index(y) * wp, V::first(wp), sum);
      }
    }
  }
}

// One image's contribution to the lane-wise accumulators vacc (co·k·W floats).
void direct_dw(const float* xp, const float* gy, float* vacc, const ConvGeom& g) {
  static constexpr auto table = dw_table(std::make_integer_sequence<int, kDirectMaxK>{});
  table[std::size_t(g.k - 1)](xp, gy, vacc, g);
}

void shift_dw(const float* s, const float* gy, float* vacc, const ConvGeom& g) {
  Index off[kDirectMaxK];
  shift_offsets(g, off);
  // The taps in groups as even as possible, of at most kShiftDwTaps (LeNet's 25: 5 of 5).
  const int per = even_part(g.k, kShiftDwTaps);
  static constexpr auto table = shift_dw_table(std::make_integer_sequence<int, kShiftDwTaps>{});
  for (int o0 = 0; o0 < g.co; o0 += kShiftDwChannels)
    for (int t0 = 0; t0 < g.k; t0 += per)
      table[std::size_t(std::min(per, g.k - t0) - 1)](
          s, gy, vacc, g, o0, std::min(kShiftDwChannels, g.co - o0), t0, off);
}

// dw[i] += the sum of the W lanes of vacc[i], for co·k entries.
void direct_dw_finish(const float* vacc, float* dw, const ConvGeom& g) {
  const Index n = Index(g.co) * g.k;
  for (Index e = 0; e < n; ++e) {
    float s = 0;
    for (int lane = 0; lane < W; ++lane) s += vacc[e * W + lane];
    dw[e] += s;
  }
}

#ifndef __AVX512F__
namespace {

// r[j][i] = r[i][j] for i, j < 8: an 8x8 transpose in registers (unpack within 128-bit lanes,
// shuffle pairs, then swap the 128-bit halves).
inline void transpose8x8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

}  // namespace
#endif

void lanes_dw(const float* xp, const float* gy, const Index* off, float* gyt, float* dwt,
              const ConvGeom& g) {
  // gyt[p, o] = gy[o, p], channels past co zero: with AVX2, 8x8 blocks transposed in registers;
  // then, and with AVX-512 throughout, element by element.
  const Index l = g.l;
  Index p0 = 0;
#ifndef __AVX512F__
  for (; p0 + 8 <= l; p0 += 8)
    for (int c0 = 0; c0 < kLanesPitch; c0 += 8) {
      __m256 r[8];
      for (int j = 0; j < 8; ++j)
        r[j] = c0 + j < g.co ? _mm256_loadu_ps(gy + Index(c0 + j) * l + p0) : _mm256_setzero_ps();
      transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(gyt + (p0 + i) * kLanesPitch + c0, r[i]);
    }
#endif
  for (Index p = p0; p < l; ++p) {
    float* d = gyt + p * kLanesPitch;
    for (int o = 0; o < g.co; ++o) d[o] = gy[Index(o) * l + p];
    for (int o = g.co; o < kLanesPitch; ++o) d[o] = 0.f;
  }
  if (g.co <= W)
    lanes_dw_image<1>(xp, gyt, off, dwt, g);
  else
    lanes_dw_image<kLanesPitch / W>(xp, gyt, off, dwt, g);
}

void lanes_dw_finish(const float* dwt, float* dw, const ConvGeom& g) {
  for (int o = 0; o < g.co; ++o)
    for (int t = 0; t < g.k; ++t) dw[Index(o) * g.k + t] += dwt[Index(t) * kLanesPitch + o];
}

void lanes_forward(const float* xp, const float* w16, const Index* off, const float* b, float* tile,
                   float* y, const ConvGeom& g) {
  constexpr auto rows = std::make_integer_sequence<int, kLanesMaxWo>{};
  static constexpr auto one_vector = lanes_table<1>(rows);
  static constexpr auto all_vectors = lanes_table<kLanesPitch / W>(rows);  // 16 channels
  (g.co <= W ? one_vector : all_vectors)[std::size_t(g.wo - 1)](xp, w16, off, b, tile, g);
  // y[o, p] = tile[p, o]. With AVX2, 8x8 blocks transposed in registers; then, and with AVX-512
  // throughout, gathers of W positions, 16 floats apart.
  const Index l = g.l;
  Index p0 = 0;
#ifndef __AVX512F__
  for (; p0 + 8 <= l; p0 += 8)
    for (int c0 = 0; c0 < g.co; c0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tile + (p0 + i) * kLanesPitch + c0);
      transpose8x8(r);
      for (int j = 0; j < std::min(8, g.co - c0); ++j)
        _mm256_storeu_ps(y + Index(c0 + j) * l + p0, r[j]);
    }
#endif
  for (int o = 0; o < g.co; ++o) {
    float* yo = y + Index(o) * l;
    Index p = p0;
    for (; p + W <= l; p += W)
      V::storeu(yo + p, V::gather16(V::first(W), tile + p * kLanesPitch + o));
    if (p < l) {
      const V::Mask m = V::first(int(l - p));
      V::storeu(yo + p, m, V::gather16(m, tile + p * kLanesPitch + o));
    }
  }
}

#endif  // XGRAD_SIMD

}  // namespace xgrad::detail
