// The float fast paths (2x2/s2 max-pool, direct convolution for few input channels, short-row
// im2col/col2im) against the step-by-step references in double, on shapes that hit full vectors,
// masked tails, odd sizes and the OpenMP split.
#define BOOST_TEST_MODULE fast_kernels
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <xgrad/xgrad.hpp>

#include "reference/conv_reference.hpp"
#include "reference/pool_reference.hpp"

#include "../src/conv_kernels.hpp"

using namespace xgrad;
using xgrad::testing::random_tensor;

namespace {

Tensor<float> to_float(const Tensor<double>& t) {
  Tensor<float> f = empty_tensor<float>(shape_of(t));
  for (std::size_t i = 0; i < t.size(); ++i) f.data()[i] = float(t.data()[i]);
  return f;
}

// max |a - b| / max(1, max |b|).
double rel_diff(const Tensor<float>& a, const Tensor<double>& b) {
  BOOST_REQUIRE(shape_of(a) == shape_of(b));
  double m = 0, scale = 1;
  for (std::size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::abs(double(a.data()[i]) - b.data()[i]));
    scale = std::max(scale, std::abs(b.data()[i]));
  }
  return m / scale;
}

}  // namespace

BOOST_AUTO_TEST_CASE(max_pool_2x2_float_matches_reference) {
  std::mt19937_64 rng(3);
  const Pool2DParams p{{2, 2}, {2, 2}, {0, 0}};
  // Widths around the 8-, 16- and 32-lane boundaries (AVX2 and AVX-512), odd sizes, and a batch
  // big enough for OpenMP. With AVX2, rows of 8 or more outputs take whole, overlapping chunks
  // (24 wide: 12 outputs); shorter rows of 4 to 7 spill into the next rows of their plane (10,
  // 9 and 11 wide, odd heights); rows narrower than 8 inputs never do (6 wide).
  for (const Shape& shape :
       {Shape{2, 3, 28, 28}, Shape{3, 2, 10, 10}, Shape{1, 2, 5, 7}, Shape{1, 1, 2, 2},
        Shape{2, 1, 4, 33}, Shape{1, 2, 9, 64}, Shape{1, 1, 3, 31}, Shape{1, 1, 4, 17},
        Shape{64, 6, 28, 28}, Shape{2, 2, 4, 24}, Shape{2, 3, 6, 6}, Shape{2, 2, 11, 9},
        Shape{3, 2, 7, 11}, Shape{1, 3, 10, 16}, Shape{64, 16, 10, 10}}) {
    BOOST_TEST_CONTEXT("shape " << shape_str(shape)) {
      const Tensor<double> x = random_tensor(shape, rng);
      const Tensor<double> y_ref = reference::pool_forward_ref(x, p, reference::PoolMode::max);
      const Tensor<double> g = random_tensor(shape_of(y_ref), rng);
      const Tensor<double> dx_ref = reference::pool_backward_ref(g, x, p, reference::PoolMode::max);
      Variable<float> xf(to_float(x), true);
      Variable<float> y = max_pool2d(xf, p);
      BOOST_TEST(rel_diff(y.value(), y_ref) < 1e-6);
      y.backward(to_float(g));
      BOOST_TEST(rel_diff(xf.grad(), dx_ref) < 1e-6);
      // Without a graph (inference) the values are the same.
      NoGradGuard guard;
      BOOST_TEST(rel_diff(max_pool2d(Variable<float>(to_float(x)), p).value(), y_ref) < 1e-6);
    }
  }
}

BOOST_AUTO_TEST_CASE(max_pool_2x2_float_ties_and_nan) {
  // Ties go to the first element in row-major order; a NaN wins its window.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor<float> x = empty_tensor<float>({1, 1, 2, 36});
  for (std::size_t j = 0; j < 36; ++j) {
    x(0, 0, 0, j) = 1.f;
    x(0, 0, 1, j) = 1.f;
  }
  x(0, 0, 1, 3) = nan;   // window 1
  x(0, 0, 0, 34) = 5.f;  // window 17 (in the masked tail), top-left
  x(0, 0, 1, 35) = 5.f;
  Variable<float> xv(x, true);
  Variable<float> y = max_pool2d(xv, Pool2DParams{{2, 2}, {2, 2}, {0, 0}});
  BOOST_TEST(std::isnan(y.value()(0, 0, 0, 1)));
  BOOST_TEST(y.value()(0, 0, 0, 17) == 5.f);
  Tensor<float> g = filled_tensor<float>({1, 1, 1, 18}, 1.f);
  y.backward(g);
  const Tensor<float>& dx = xv.grad();
  for (std::size_t j = 0; j < 36; ++j) {
    const bool top_left = j % 2 == 0 && j != 2;
    BOOST_TEST(dx(0, 0, 0, j) == (top_left ? 1.f : 0.f), "row 0 col " << j);
    BOOST_TEST(dx(0, 0, 1, j) == (j == 3 ? 1.f : 0.f), "row 1 col " << j);
  }
}

BOOST_AUTO_TEST_CASE(conv_few_channels_float_matches_reference) {
  std::mt19937_64 rng(11);
  struct Case {
    Shape x, w;
    int pad;
    bool bias, x_grad;
  };
  // LeNet conv1 and the convnet's conv1 (C_in = 1), and more channels with small kernels.
  for (const Case& c : {Case{{3, 1, 28, 28}, {6, 1, 5, 5}, 2, true, false},
                        Case{{2, 1, 28, 28}, {32, 1, 3, 3}, 0, true, false},
                        Case{{2, 2, 9, 37}, {11, 2, 3, 3}, 1, true, true},
                        Case{{1, 3, 6, 5}, {4, 3, 2, 2}, 0, false, true},
                        Case{{2, 2, 9, 37}, {5, 2, 3, 3}, 1, true, false},
                        Case{{2, 3, 7, 6}, {3, 3, 2, 2}, 0, false, false},
                        // Rows of exactly one and two 16-lane blocks, and stores that spill
                        // over several short rows (wo 4).
                        Case{{2, 1, 10, 18}, {7, 1, 3, 3}, 0, true, false},
                        Case{{1, 2, 5, 34}, {9, 2, 3, 3}, 0, true, false},
                        Case{{3, 1, 9, 5}, {13, 1, 2, 2}, 0, true, false},
                        // K <= 12 with planes of 35 and 64 floats.
                        Case{{3, 1, 7, 9}, {20, 1, 3, 3}, 0, true, false},
                        Case{{2, 1, 8, 8}, {17, 1, 3, 3}, 1, false, true},
                        // K > 28: im2col + GEMM with short rows (wo 10 and 20) and col2im (the
                        // forward of the first takes the lanes kernel below).
                        Case{{2, 4, 9, 12}, {3, 4, 3, 3}, 0, true, true},
                        Case{{2, 4, 8, 22}, {5, 4, 3, 3}, 0, true, true},
                        Case{{2, 6, 14, 14}, {16, 6, 5, 5}, 0, true, true},
                        // K > 28, C_out <= 16, wo <= 16: output channels as lanes (LeNet conv2),
                        // with blocks of 1 to 4 rows and leftover rows.
                        Case{{3, 8, 9, 9}, {16, 8, 2, 2}, 1, true, true},
                        Case{{2, 4, 11, 20}, {5, 4, 5, 5}, 0, true, false},
                        Case{{1, 2, 9, 7}, {1, 2, 5, 5}, 1, false, true},
                        Case{{2, 3, 6, 6}, {7, 3, 4, 4}, 0, false, false},
                        // With 8-lane vectors (AVX2): dW taps in groups of unequal size (K 15
                        // and 26), and 9-16 channels as two vectors with rows in parts (wo 7
                        // in 4 + 3 positions, wo 16 in 6 + 6 + 4).
                        Case{{2, 1, 9, 21}, {5, 1, 3, 5}, 1, true, false},
                        Case{{1, 1, 6, 30}, {3, 1, 2, 13}, 0, false, false},
                        Case{{2, 4, 9, 9}, {12, 4, 3, 3}, 0, true, true},
                        Case{{1, 4, 18, 18}, {10, 4, 3, 3}, 0, true, false},
                        Case{{64, 1, 28, 28}, {6, 1, 5, 5}, 2, true, false}}) {
    BOOST_TEST_CONTEXT("x " << shape_str(c.x) << " w " << shape_str(c.w)) {
      Conv2DParams p;
      p.padding = {c.pad, c.pad};
      const Tensor<double> x = random_tensor(c.x, rng);
      const Tensor<double> w = random_tensor(c.w, rng);
      const Tensor<double> b = random_tensor({c.w[0]}, rng);
      const Tensor<double> y_ref = reference::conv_forward_ref(x, w, c.bias ? &b : nullptr, p);
      const Tensor<double> g = random_tensor(shape_of(y_ref), rng);
      const auto ref = reference::conv_backward_ref(g, x, w, p);
      Variable<float> xf(to_float(x), c.x_grad), wf(to_float(w), true), bf(to_float(b), true);
      Variable<float> y = conv2d(xf, wf, c.bias ? bf : Variable<float>(), p);
      BOOST_TEST(rel_diff(y.value(), y_ref) < 1e-5);
      y.backward(to_float(g));
      BOOST_TEST(rel_diff(wf.grad(), ref.dW) < 1e-5);
      if (c.bias) BOOST_TEST(rel_diff(bf.grad(), ref.db) < 1e-5);
      if (c.x_grad) BOOST_TEST(rel_diff(xf.grad(), ref.dA_prev) < 1e-5);
    }
  }
}

#ifdef XGRAD_SIMD
namespace {

detail::ConvGeom direct_geom(int c, int h, int w, int co, int kh, int kw, int pad) {
  detail::ConvGeom g{};
  g.n = 1, g.c = c, g.h = h, g.w = w, g.co = co, g.kh = kh, g.kw = kw;
  g.sh = g.sw = g.dh = g.dw = g.groups = 1, g.ph = g.pw = pad;
  g.hp = h + 2 * pad, g.wp = w + 2 * pad;
  g.ho = g.hp - kh + 1, g.wo = g.wp - kw + 1;
  g.padded = pad > 0, g.cg = c, g.cog = co, g.k = c * kh * kw;
  g.l = detail::Index(g.ho) * g.wo, g.band_rows = g.ho, g.pointwise = false;
  return g;
}

// A padded image of random values, followed by kDirectSlack zeros (as conv2d stages it).
std::vector<float> padded_input(const detail::ConvGeom& g, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> xp(std::size_t(g.c * g.hp * g.wp + detail::kDirectSlack), 0.f);
  for (int ci = 0; ci < g.c; ++ci)
    for (int i = 0; i < g.h; ++i)
      for (int j = 0; j < g.w; ++j)
        xp[std::size_t((ci * g.hp + i + g.ph) * g.wp + j + g.pw)] = u(rng);
  return xp;
}

// The largest |y - (b + Σ w·x)| over the output, the sum by loops in double (b may be null).
double direct_conv_error(const std::vector<float>& xp, const std::vector<float>& w, const float* b,
                         const float* y, const detail::ConvGeom& g) {
  double worst = 0;
  for (int o = 0; o < g.co; ++o)
    for (int i = 0; i < g.ho; ++i)
      for (int j = 0; j < g.wo; ++j) {
        double r = b != nullptr ? b[o] : 0.0;
        for (int ci = 0; ci < g.c; ++ci)
          for (int p = 0; p < g.kh; ++p)
            for (int q = 0; q < g.kw; ++q)
              r += double(w[std::size_t(((o * g.c + ci) * g.kh + p) * g.kw + q)]) *
                   xp[std::size_t((ci * g.hp + i + p) * g.wp + j + q)];
        worst = std::max(worst, std::abs(y[o * g.l + i * g.wo + j] - r));
      }
  return worst;
}

// The unpadded image inside a padded one (c×hp×wp): the input of shift_stage.
std::vector<float> unpadded(const std::vector<float>& xp, const detail::ConvGeom& g) {
  std::vector<float> x(std::size_t(g.c * g.h * g.w));
  for (int ci = 0; ci < g.c; ++ci)
    for (int i = 0; i < g.h; ++i)
      for (int j = 0; j < g.w; ++j)
        x[std::size_t((ci * g.h + i) * g.w + j)] =
            xp[std::size_t((ci * g.hp + i + g.ph) * g.wp + j + g.pw)];
  return x;
}

}  // namespace

// direct_forward (the row kernel) and shift_stage + shift_forward against loops, with guards around
// the output and past the staged planes. The shift kernel must give the row kernel's floats bit for
// bit (the same products summed in the same order), and its staging must read only inside the
// unpadded image: x is a vector of exactly c·h·w floats, so the sanitizer build checks the plain
// loads (the masked ones leave the masked-off lanes untouched).
BOOST_AUTO_TEST_CASE(direct_conv_row_and_shift_kernels_match_loops) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  struct Case {
    int c, h, w, co, kh, kw, pad;
    bool bias;
  };
  int shifts = 0;
  for (const Case& cs : {Case{1, 28, 28, 32, 3, 3, 0, true},    // the convnet's conv1: 26 of 32
                         Case{1, 28, 28, 6, 5, 5, 2, true},     // LeNet's conv1: 28 of 32
                         Case{1, 13, 13, 7, 3, 3, 0, false},    // wp 13, wo 11
                         Case{1, 20, 20, 9, 5, 5, 1, true},     // wp 22, wo 18
                         Case{2, 17, 30, 5, 3, 3, 0, true},     // two input channels, wo 28
                         Case{1, 28, 27, 3, 4, 4, 0, true},     // wo 24
                         Case{1, 5, 40, 13, 2, 7, 0, true},     // wo 34, 5 rows
                         Case{1, 9, 9, 4, 2, 2, 0, false},      // wo 8 = one AVX2 vector
                         Case{1, 3, 17, 2, 3, 1, 1, true},      // kw 1
                         Case{3, 7, 7, 11, 3, 3, 3, true},      // padding wider than the kernel
                         Case{1, 4, 3, 5, 5, 5, 2, true},       // 4x3 output, every tap row cut
                         Case{1, 30, 61, 8, 1, 5, 2, true}}) {  // kh 1, wo 61: a long row
    const detail::ConvGeom g = direct_geom(cs.c, cs.h, cs.w, cs.co, cs.kh, cs.kw, cs.pad);
    BOOST_REQUIRE(detail::direct_eligible(g));
    shifts += detail::shift_pays(g) ? 1 : 0;
    const std::vector<float> xp = padded_input(g, rng);
    const std::vector<float> x = unpadded(xp, g);
    std::vector<float> w(std::size_t(g.co * g.k)), b(std::size_t(g.co)), wt(w.size());
    for (float& v : w) v = u(rng);
    for (float& v : b) v = u(rng);
    detail::transpose_weights(w.data(), g, g.co, wt.data());
    const float* bias = cs.bias ? b.data() : nullptr;
    BOOST_TEST_CONTEXT("c " << cs.c << " " << cs.h << "x" << cs.w << " co " << cs.co << " k "
                            << cs.kh << "x" << cs.kw << " pad " << cs.pad << " shift pays "
                            << detail::shift_pays(g)) {
      constexpr float guard = 12345.f;
      const std::size_t out = std::size_t(g.co) * std::size_t(g.l);
      std::vector<float> row_buf(out + 64, guard), shift_buf(out + 64, guard);
      float* y_row = row_buf.data() + 32;
      float* y_shift = shift_buf.data() + 32;
      detail::direct_forward(xp.data(), wt.data(), bias, y_row, g);
      BOOST_TEST(direct_conv_error(xp, w, bias, y_row, g) < 1e-5);

      const std::size_t staged = detail::shift_buffer(g);
      std::vector<float> s_buf(staged + 16 + 64, guard);  // room to align s to 64 bytes
      const std::size_t lead = (64 - reinterpret_cast<std::uintptr_t>(s_buf.data()) % 64) % 64 / 4;
      float* s = s_buf.data() + lead;
      detail::shift_stage(x.data(), g, s);
      BOOST_TEST(std::all_of(s_buf.begin(), s_buf.begin() + std::ptrdiff_t(lead),
                             [](float v) { return v == guard; }));
      BOOST_TEST(
          std::all_of(s + staged, s_buf.data() + s_buf.size(), [](float v) { return v == guard; }));
      detail::shift_forward(s, wt.data(), bias, y_shift, g);
      BOOST_TEST(std::memcmp(y_row, y_shift, out * sizeof(float)) == 0);

      for (const std::vector<float>* buf : {&row_buf, &shift_buf}) {
        BOOST_TEST(
            std::all_of(buf->begin(), buf->begin() + 32, [](float v) { return v == guard; }));
        BOOST_TEST(std::all_of(buf->end() - 32, buf->end(), [](float v) { return v == guard; }));
      }
    }
  }
  BOOST_TEST(shifts >= 9);  // with 8 lanes (AVX2) and with 16 (AVX-512)
}

#endif
