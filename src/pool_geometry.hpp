// Window geometry shared by max_pool2d and avg_pool2d: validation and output size.
#pragma once

#include <string>

#include "xgrad/ops.hpp"
#include "xgrad/tensor.hpp"

namespace xgrad::detail {

/// Sizes of a 2-D pool over an NCHW input. Window (i, j) covers input rows
/// [i·sh - ph, i·sh - ph + kh) and columns [j·sw - pw, j·sw - pw + kw), clipped to the input.
struct PoolGeometry {
  int n = 0, c = 0, h = 0, w = 0;  ///< input
  int kh = 0, kw = 0, sh = 0, sw = 0, ph = 0, pw = 0;
  int ho = 0, wo = 0;  ///< output
  std::size_t planes() const { return std::size_t(n) * std::size_t(c); }
  std::size_t in_plane() const { return std::size_t(h) * std::size_t(w); }
  std::size_t out_plane() const { return std::size_t(ho) * std::size_t(wo); }
  Shape out_shape() const {
    return {std::size_t(n), std::size_t(c), std::size_t(ho), std::size_t(wo)};
  }
};

inline std::string pair_str(const std::array<int, 2>& v) {
  return "(" + std::to_string(v[0]) + "," + std::to_string(v[1]) + ")";
}

/// Checks `x` and `p` as PyTorch does and computes the output size
/// floor((H + 2p - k)/s) + 1 per axis. Throws xgrad::Error naming `op` and the shapes.
inline PoolGeometry pool_geometry(const char* op, const Shape& x, const Pool2DParams& p) {
  const std::string where = " (input " + shape_str(x) + ", kernel " + pair_str(p.kernel) +
                            ", stride " + pair_str(p.stride) + ", padding " + pair_str(p.padding) +
                            ")";
  if (x.size() != 4)
    throw Error(std::string(op) + ": input must have rank 4 (NCHW) but has shape " + shape_str(x));
  for (int a = 0; a < 2; ++a) {
    if (p.kernel[a] < 1) throw Error(std::string(op) + ": kernel must be at least 1" + where);
    if (p.stride[a] < 1) throw Error(std::string(op) + ": stride must be at least 1" + where);
    if (p.padding[a] < 0) throw Error(std::string(op) + ": padding must not be negative" + where);
    if (p.padding[a] > p.kernel[a] / 2)
      throw Error(std::string(op) + ": padding must be at most half the kernel size" + where);
  }
  PoolGeometry g;
  g.n = int(x[0]);
  g.c = int(x[1]);
  g.h = int(x[2]);
  g.w = int(x[3]);
  g.kh = p.kernel[0];
  g.kw = p.kernel[1];
  g.sh = p.stride[0];
  g.sw = p.stride[1];
  g.ph = p.padding[0];
  g.pw = p.padding[1];
  if (g.h + 2 * g.ph < g.kh || g.w + 2 * g.pw < g.kw)
    throw Error(std::string(op) + ": window is larger than the padded input" + where);
  g.ho = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.wo = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

/// Whether looping over planes in parallel pays off for `work` element visits.
inline bool pool_parallel_worthwhile(std::size_t planes, std::size_t work) {
  return planes > 1 && work >= (std::size_t(1) << 15);
}

}  // namespace xgrad::detail
