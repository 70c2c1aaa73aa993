// Internal kernels of conv2d (ops/conv2d.cpp, which owns validation, the drivers, threading and
// the per-thread buffers): zero padding and im2col/col2im bands (src/conv_im2col.cpp) and the
// direct kernels for few input channels or few output channels (src/conv_direct.cpp). All work on
// one image at a time with raw NCHW pointers; none allocates per call except col2im's mask table.
#pragma once

#include <cstddef>

#include "simd.hpp"

namespace xgrad::detail {

using Index = std::ptrdiff_t;

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

// --- Padding and im2col / col2im (float and double), src/conv_im2col.cpp -----------------------

// Copies the c planes of an image x (c×h×w) into the interior of xp (c×hp×wp) with zero borders.
template <class T>
void pad_image(const T* x, const ConvGeom& g, T* xp);

// The reverse copy: x (c×h×w) = the interior of xp (c×hp×wp); the borders are ignored.
template <class T>
void unpad_image(const T* xp, const ConvGeom& g, T* x);

// col[(ci·kh + p)·kw + q][(i - i0)·wo + j] = xp[ci, i·sh + p·dh, j·sw + q·dw] for ci < cg and
// output rows i in [i0, i1): a (cg·kh·kw) × ((i1 - i0)·wo) band with rows `lt` apart, where xp is
// the group's first channel of a padded image (hp×wp planes), so every read is in bounds.
template <class T>
void im2col_band(const T* xp, const ConvGeom& g, int i0, int i1, T* col, Index lt);

// The adjoint of im2col_band: dxp[ci, i·sh + p·dh, j·sw + q·dw] += col[(ci·kh + p)·kw + q]
// [(i - i0)·wo + j] for the same band, into a padded gradient image (cg planes of hp×wp).
template <class T>
void col2im_band(const T* col, const ConvGeom& g, int i0, int i1, T* dxp, Index lt);

// --- Direct convolution for few input channels (float, AVX-512 or AVX2), src/conv_direct.cpp ----

// LeNet's and the convnet's first layer (C_in = 1): K = C_in·kh·kw <= kDirectMaxK, stride 1, no
// dilation, one group. The kernels read the (padded) image in place, with no column matrix, and
// split output rows into blocks of simd::VecF::kLanes (16 or 8) lanes (the last one masked).
constexpr int kDirectMaxK = 28;
// Floats the kernels may read past the padded image (the row kernel's last block: up to 2·W + kw
// - 2, kw <= W) or past the shift kernel's staged planes (its last block: up to 3·W - 1), 47 with
// AVX-512.
constexpr int kDirectSlack = 64;

inline bool direct_eligible(const ConvGeom& g) {
  return g.groups == 1 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.k <= kDirectMaxK &&
         !g.pointwise;
}

#ifdef XGRAD_SIMD
// Lanes of the direct kernels' vectors, and of direct_dw's accumulators.
constexpr int kDirectLanes = simd::VecF::kLanes;
static_assert(kDirectSlack >= 3 * kDirectLanes - 1, "a last block reads past the slack");

// wt[t, o] = w[o, t] for o < co and 0 for co <= o < pitch: the transpose of w (co × k) with rows
// `pitch` apart (pitch >= co), the weight layout of both direct kernels.
void transpose_weights(const float* w, const ConvGeom& g, int pitch, float* wt);

// off[t] = the offset of tap t = (ci, p, q) in a padded image, ci·hp·wp + p·wp + q, for t < k.
void tap_offsets(const ConvGeom& g, Index* off);

// y[o, i, j] = b[o] (0 when b is null) + Σ_{ci,p,q} w[o, ci, p, q]·xp[ci, i + p, j + q] for one
// image: xp is c×hp×wp (padded) followed by kDirectSlack finite floats (the kernel loads whole
// vectors past row ends), wt = wᵀ (k × co: transpose_weights with pitch co), b co, y co×ho×wo.
// Requires direct_eligible(g).
void direct_forward(const float* xp, const float* wt, const float* b, float* y, const ConvGeom& g);

// --- The shift kernel: output positions flat over the image, no lane lost to row ends ------------
// The row kernel rounds every output row up to whole blocks of two vectors: LeNet's conv1 (rows of
// 28 in 32 lanes) loses 12.5% of its FMAs to lanes past the row end, the convnet's conv1 (26 in
// 32) 19%. The shift kernel instead stages, for each input channel ci and kernel column q, the
// plane s[ci, q] = the input shifted left by q - pw, zero-padded to hp rows of exactly wo columns
// (shift_stage). Tap (ci, p, q) of output position P = i·wo + j is then s[ci, q][P + p·wo], so
// every output plane is one flat run of l = ho·wo positions: whole vectors but the last, loads at
// fixed offsets, nothing to mask or permute. Staging writes c·kw·hp·wo floats per image, in place
// of the padded copy the row kernel needs.
//   On the AVX2 EPYC (1 thread, batch 64, medians of 21 alternating runs in one process, three
// runs, staging included against the row kernel's padded copy): LeNet conv1's forward ran at
// 1.04-1.09x the row kernel's speed (staging costs about half of what its 12.5% fewer FMAs save),
// the convnet's conv1 at 1.34-1.40x (and at 1.10-1.17x the strip kernel's that it replaces, flat
// over the padded rows with 26 lanes of 28, in a first measurement with a staging loop much like
// this one); their dW (shift_dw) at 1.44-1.86x and 1.54-1.79x direct_dw's.
// Blocks of 2 or 3 vectors, whichever fills more accumulators (4 spilled registers with AVX2:
// 0.74-0.83x).
// Taken when the row kernel would use less than 15/16 of its lanes; the row kernel runs elsewhere.
// (Until session 21 a flat variant, one staged column matrix, took layers of at most 12 taps with
// AVX-512 where the shift kernel does not pay. On the Zen 5 EPYC the shift kernel ran the
// convnet's conv1 at 1.16-1.29x its speed, and the row kernel, on 1 thread at batch 64, was level
// with it for 30- and 32-wide 3x3 layers of one channel, 1.3x faster for 16-wide ones, and 2.5x
// faster with a 2x2 kernel; on 2 threads the flat variant was 4-6% faster on the 30- and
// 32-wide layers only, so it went.)
inline bool shift_pays(const ConvGeom& g) {
  constexpr int W = simd::VecF::kLanes;
  const int block = g.wo > W ? 2 * W : W;  // the row kernel's
  const int rounded = (g.wo + block - 1) / block * block;
  return direct_eligible(g) && 16 * g.wo < 15 * rounded;
}
// Floats per staged plane: hp·wo rounded up to whole vectors, so that every plane is aligned.
Index shift_pitch(const ConvGeom& g);
// Floats of shift_stage's output: c·kw planes and kDirectSlack more.
std::size_t shift_buffer(const ConvGeom& g);
// s[(ci·kw + q)·shift_pitch(g) + r·wo + j] = x[ci, r - ph, j + q - pw] (0 outside x) for r < hp,
// j < wo, then zeros to the end of each plane and kDirectSlack zeros: the planes of one image x
// (c×h×w, unpadded; read only inside its bounds) for shift_forward. Any s works; one aligned to a
// whole vector (64 bytes suffice) keeps every plane aligned. Requires direct_eligible(g).
void shift_stage(const float* x, const ConvGeom& g, float* s);
// y[o, P] = b[o] (0 when b is null) + Σ_{ci,p,q} wt[(ci·kh + p)·kw + q, o]·s[ci, q][P + p·wo] for
// the l positions P of each output plane, o < co: the same sums as direct_forward, tap by tap in
// the same order, so the same floats. wt = wᵀ (transpose_weights with pitch co), y co×ho×wo.
// Requires direct_eligible(g).
void shift_forward(const float* s, const float* wt, const float* b, float* y, const ConvGeom& g);
// off[t] = the offset of tap t = (ci, p, q) in shift_stage's planes: (ci·kw + q)·shift_pitch(g) +
// p·wo, for t < k.
void shift_offsets(const ConvGeom& g, Index* off);
// One image's contribution to dW from its staged planes s, lane-wise as direct_dw's:
// vacc[o, t, lane] += Σ over the flat positions P of lane `lane` of gy[o, P]·s[off[t] + P], gy
// co×ho×wo, vacc co×k×kDirectLanes (direct_dw_finish adds it to dw). Requires direct_eligible(g).
void shift_dw(const float* s, const float* gy, float* vacc, const ConvGeom& g);

// One image's contribution to dW, kept lane-wise: vacc[o, t, lane] += Σ over the positions
// (i, j) of lane `lane` of gy[o, i, j]·x_t[i, j], x_t the input shifted by tap t = (ci, p, q).
// xp is c×hp×wp (padded), gy co×ho×wo, vacc co×k×kDirectLanes. Requires direct_eligible(g).
void direct_dw(const float* xp, const float* gy, float* vacc, const ConvGeom& g);

// dw[e] += the sum of the kDirectLanes lanes of vacc[e], for the co·k entries of dw.
void direct_dw_finish(const float* vacc, float* dw, const ConvGeom& g);
#endif

// dX by the folded kernel, for layers with few output channels (LeNet's: 6 and 16), whose dX the
// im2col path computes with a GEMM of K = co and col2im. The gradient of the padded input is
//     dX[ci, y, x] = Σ_{o, p, q} w[o, ci, p, q]·dY[o, y - p, x - q]   (dY zero outside ho × wo).
// Each kernel column q gets accumulator planes of its own (one per ci: c·kw "folded" channels),
// with rows as wide as dY's, so that in flat positions R = y·wo + j
//     A[ci, q][R] = Σ_{p, o} w[o, ci, p, q]·dY_o[R - p·wo]
// is a one-dimensional correlation of the flat dY planes, run by the direct block kernel over
// whole vectors: no lanes lost to row ends, and no products with the zero columns a padded dY
// would have (LeNet conv2: 35k vector FMAs an image against 48k for the row kernel on dY padded to
// 18 x 18, whose rows of 14 filled 14 of 16 lanes). The taps of a row p that misses dY for a whole
// block are skipped. Then dX[ci, y, x] = Σ_q A[ci, q][y·wo + x - q] over 0 <= x - q < wo.
#ifdef XGRAD_SIMD
// At most 32 output channels, where it beat GEMM and col2im in every geometry measured (1 thread,
// batch 64, medians of 21 alternating blocks): LeNet conv2 1.31x, LeNet conv1's dX 2.2x (17.8 ->
// 39.5 GFLOP/s), the convnet's conv1 (32 channels) 1.07x, 3 -> 32 channels 3x3 1.04x, 8 -> 32
// 1.35x, 2 -> 16 5x5 1.56x. kw <= lanes: the final sum's masks.
inline bool fold_dx_eligible(const ConvGeom& g) {
  return g.groups == 1 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && !g.pointwise &&
         g.co <= 32 && g.kw <= simd::VecF::kLanes;
}

// Floats of fold_dx's buffer: dY staged with zeros around its planes, and the accumulator planes.
std::size_t fold_dx_buffer(const ConvGeom& g);

// Zeroes fold_dx's buffer (fold_dx_buffer(g) floats): the zeros around the staged dY planes, which
// fold_dx reads and never writes, so a run of images needs it once.
void fold_dx_clear(float* buf, const ConvGeom& g);

// wq[p·co + o, ci·kw + q] = w[o, ci, p, q]: the weights of fold_dx, a tap (p, o) per row.
void fold_dx_weights(const float* w, const ConvGeom& g, float* wq);

// dxp[ci, y, x] (the formula above) for every element of one padded input image's gradient
// (c×hp×wp), from gy (co×ho×wo), wq from fold_dx_weights and buf a buffer of fold_dx_buffer(g)
// floats that fold_dx_clear(buf, g) zeroed, written since only by fold_dx with the same geometry.
// Requires fold_dx_eligible(g).
void fold_dx(const float* gy, const float* wq, float* buf, float* dxp, const ConvGeom& g);
#endif

// --- Direct convolution with output channels as lanes (float, AVX-512 or AVX2), conv_direct.cpp -

// LeNet's conv2 (6 -> 16 channels, 5×5, 10×10 output): at most 16 output channels, many taps
// (K > kDirectMaxK) and short output rows (wo <= 16), where im2col's short-row copies cost a
// third of the time. One vector (two with AVX2) holds a position's 16 channels; blocks of output
// rows keep a position's channels in registers.
constexpr int kLanesMaxWo = 16;
// Floats per tap of the lanes kernels' transposed weights and per position of their tiles: the
// 16 channels they handle at most (those past co are zero).
constexpr int kLanesPitch = 16;

inline bool lanes_eligible(const ConvGeom& g) {
  return g.groups == 1 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.co <= kLanesPitch &&
         g.k > kDirectMaxK && g.wo <= kLanesMaxWo && !g.pointwise;
}

#ifdef XGRAD_SIMD
// y[o, i, j] = b[o] (0 when b is null) + Σ_t w16[t, o]·xp[off[t] + i·wp + j] for one image, with
// xp c×hp×wp (padded), w16 = wᵀ (transpose_weights with pitch kLanesPitch), off from tap_offsets,
// tile a buffer of ho·wo·kLanesPitch floats, y co×ho×wo. Requires lanes_eligible(g).
void lanes_forward(const float* xp, const float* w16, const Index* off, const float* b, float* tile,
                   float* y, const ConvGeom& g);

// Its dW, for one image: dwt[t, o] += Σ_{i,j} xp[off[t] + i·wp + j]·gy[o, i, j], with xp c×hp×wp
// (padded), gy co×ho×wo, gyt a buffer of ho·wo·kLanesPitch floats (gy transposed), dwt
// k×kLanesPitch (dW transposed, summed over the images; lanes_dw_finish adds it to dw, co×k). No
// column matrix: LeNet conv2's dW went from 24-33 to 55-80 GFLOP/s on the EPYC (1 thread). Requires
// lanes_eligible(g).
void lanes_dw(const float* xp, const float* gy, const Index* off, float* gyt, float* dwt,
              const ConvGeom& g);
void lanes_dw_finish(const float* dwt, float* dw, const ConvGeom& g);
#endif

}  // namespace xgrad::detail
