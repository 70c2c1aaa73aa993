// The float fast paths (2x2/s2 max-pool, direct convolution for few input channels, short-row
// im2col/col2im) against the step-by-step references in double, on shapes that hit full vectors,
// masked tails, odd sizes and the OpenMP split.
#define BOOST_TEST_MODULE fast_kernels
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <cmath>
#include <limits>
#include <random>

#include <xgrad/xgrad.hpp>

#include "reference/conv_reference.hpp"
#include "reference/pool_reference.hpp"

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
  // Widths around the 16- and 32-lane boundaries, odd sizes, and a batch big enough for OpenMP.
  for (const Shape& shape :
       {Shape{2, 3, 28, 28}, Shape{3, 2, 10, 10}, Shape{1, 2, 5, 7}, Shape{1, 1, 2, 2},
        Shape{2, 1, 4, 33}, Shape{1, 2, 9, 64}, Shape{1, 1, 3, 31}, Shape{64, 6, 28, 28}}) {
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
