// linear, dropout and batch_norm2d: values against plain loops and hand-computed numbers,
// mask reproducibility, running statistics, and errors.
#define BOOST_TEST_MODULE norm_dropout_linear
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xgrad/xgrad.hpp>

#include "../src/linear_blocks.hpp"

using namespace xgrad;
using xgrad::testing::make;
using xgrad::testing::max_abs_diff;
using xgrad::testing::random_tensor;
using xgrad::testing::throws_with;
namespace tt = boost::test_tools;

namespace {}  // namespace

// ---------------------------------------------------------------------------------------------
// linear
// ---------------------------------------------------------------------------------------------

// Small, then large enough that the products split over threads: by columns (LeNet's fc1 at batch
// 64: every product has m < n) and by rows (a batch of 300 into 20 outputs).
BOOST_AUTO_TEST_CASE(linear_matches_loops) {
  for (const auto& [n, in, out] :
       std::vector<std::array<std::size_t, 3>>{{5, 7, 3}, {64, 400, 120}, {300, 100, 20}})
    BOOST_TEST_CONTEXT("x [" << n << "," << in << "], w [" << out << "," << in << "]") {
      std::mt19937_64 rng(1);
      Variable<double> x(random_tensor({n, in}, rng), true);
      Variable<double> w(random_tensor({out, in}, rng), true);
      Variable<double> b(random_tensor({out}, rng), true);
      const Tensor<double> g = random_tensor({n, out}, rng);
      Variable<double> y = linear(x, w, b);
      y.backward(g);
      Tensor<double> y_ref = filled_tensor<double>({n, out}, 0.0);
      Tensor<double> dx = filled_tensor<double>({n, in}, 0.0);
      Tensor<double> dw = filled_tensor<double>({out, in}, 0.0);
      Tensor<double> db = filled_tensor<double>({out}, 0.0);
      for (std::size_t r = 0; r < n; ++r)
        for (std::size_t o = 0; o < out; ++o) {
          y_ref(r, o) = b.value()(o);
          for (std::size_t k = 0; k < in; ++k) {
            y_ref(r, o) += x.value()(r, k) * w.value()(o, k);
            dx(r, k) += g(r, o) * w.value()(o, k);
            dw(o, k) += g(r, o) * x.value()(r, k);
          }
          db(o) += g(r, o);
        }
      BOOST_TEST(max_abs_diff(y.value(), y_ref) < 1e-12);
      BOOST_TEST(max_abs_diff(x.grad(), dx) < 1e-12);
      BOOST_TEST(max_abs_diff(w.grad(), dw) < 1e-12);
      BOOST_TEST(max_abs_diff(b.grad(), db) < 1e-12);
    }
}

// The row blocks for OpenBLAS's small-matrix sgemm (ops/linear.cpp): only with those kernels, only
// for products they do not take whole, in at most 4 blocks, and only for weights of 64 KB or more.
BOOST_AUTO_TEST_CASE(linear_block_rows_follow_the_small_kernels_limits) {
  using xgrad::detail::linear_block_rows;
  // LeNet-5's fc1 (400 -> 120) forward: C of at most 1200 elements, so 10 rows a call.
  BOOST_TEST(linear_block_rows(true, 16, 120, 400, true) == 10);
  BOOST_TEST(linear_block_rows(true, 32, 120, 400, true) == 10);
  BOOST_TEST(linear_block_rows(true, 16, 120, 400, false) == 16);  // no small kernels
  BOOST_TEST(linear_block_rows(true, 8, 120, 400, true) == 8);     // taken whole
  BOOST_TEST(linear_block_rows(true, 48, 120, 400, true) == 48);   // 5 blocks: packing wins
  // Its backward-data (dx = g·w: n = 400, k = 120): M·N·K <= 10^6, so 20 rows.
  BOOST_TEST(linear_block_rows(false, 16, 400, 120, true) == 16);
  BOOST_TEST(linear_block_rows(false, 32, 400, 120, true) == 20);
  BOOST_TEST(linear_block_rows(false, 64, 400, 120, true) == 20);
  BOOST_TEST(linear_block_rows(false, 96, 400, 120, true) == 96);
  // fc2's 40 KB weight packs cheaply; the convnet's fc1 is beyond the small kernel at any rows;
  // a forward of depth below 32 is not taken.
  BOOST_TEST(linear_block_rows(true, 16, 84, 120, true) == 16);
  BOOST_TEST(linear_block_rows(true, 16, 128, 9216, true) == 16);
  BOOST_TEST(linear_block_rows(false, 16, 9216, 128, true) == 16);
  BOOST_TEST(linear_block_rows(true, 16, 1000, 20, true) == 16);
}

// linear in float with the row blocks forced on and off, at shapes that are cut (fc1's forward at
// 16 and 32 rows, its backward-data at 32 and 64): the same values as loops in double, within
// float rounding, both ways. On one thread, as in a shard: with more, these products are split
// over the threads instead.
BOOST_AUTO_TEST_CASE(linear_in_row_blocks_matches_loops) {
  xgrad::testing::Threads one(1);
  const std::size_t in = 400, out = 120;
  for (const std::size_t n : {16, 32, 64})
    for (const int forced : {1, 0})
      BOOST_TEST_CONTEXT("x [" << n << "," << in << "], blocks " << forced) {
        xgrad::detail::set_linear_small_matrix_blocks(forced);
        std::mt19937_64 rng(7);
        const Tensor<double> xd = random_tensor({n, in}, rng), wd = random_tensor({out, in}, rng),
                             bd = random_tensor({out}, rng), gd = random_tensor({n, out}, rng);
        const auto to_float = [](const Tensor<double>& t) {
          Tensor<float> f = empty_tensor<float>(shape_of(t));
          std::copy(t.begin(), t.end(), f.begin());
          return f;
        };
        Variable<float> x(to_float(xd), true), w(to_float(wd), true), b(to_float(bd), true);
        Variable<float> y = linear(x, w, b);
        y.backward(to_float(gd));
        double y_err = 0, dx_err = 0;
        for (std::size_t r = 0; r < n; ++r) {
          for (std::size_t o = 0; o < out; ++o) {
            double ref = double(b.value()(o));
            for (std::size_t k = 0; k < in; ++k)
              ref += double(x.value()(r, k)) * double(w.value()(o, k));
            y_err = std::max(y_err, std::abs(double(y.value()(r, o)) - ref));
          }
          for (std::size_t k = 0; k < in; ++k) {
            double ref = 0;
            for (std::size_t o = 0; o < out; ++o)
              ref += double(float(gd(r, o))) * double(w.value()(o, k));
            dx_err = std::max(dx_err, std::abs(double(x.grad()(r, k)) - ref));
          }
        }
        // Sums of 400 and 120 products of values in [-1, 1]: float rounding stays far below 1e-4.
        BOOST_TEST(y_err < 1e-4);
        BOOST_TEST(dx_err < 1e-4);
      }
  xgrad::detail::set_linear_small_matrix_blocks(-1);
}

BOOST_AUTO_TEST_CASE(linear_without_bias) {
  // x = [[1, 2]], w = [[3, 4], [5, 6]]: y = [[11, 17]].
  Variable<double> x(make({1, 2}, {1, 2}), true);
  Variable<double> w(make({2, 2}, {3, 4, 5, 6}), true);
  Variable<double> y = linear(x, w);
  BOOST_TEST(y.value()(0, 0) == 11.0);
  BOOST_TEST(y.value()(0, 1) == 17.0);
  BOOST_TEST(y.grad_fn()->num_inputs() == 2u);
  y.backward(make({1, 2}, {1, -1}));
  BOOST_TEST(max_abs_diff(x.grad(), make({1, 2}, {-2, -2})) == 0.0);
  BOOST_TEST(max_abs_diff(w.grad(), make({2, 2}, {1, 2, -1, -2})) == 0.0);
}

BOOST_AUTO_TEST_CASE(linear_errors) {
  const Variable<double> x(filled_tensor<double>({4, 3}, 1.0));
  const Variable<double> w(filled_tensor<double>({2, 3}, 1.0));
  const Variable<double> b(filled_tensor<double>({2}, 1.0));
  const Variable<double> x3(filled_tensor<double>({4, 3, 1}, 1.0));
  const Variable<double> w5(filled_tensor<double>({2, 5}, 1.0));
  const Variable<double> b3(filled_tensor<double>({3}, 1.0));
  const Variable<double> w1(filled_tensor<double>({3}, 1.0));
  BOOST_TEST(throws_with([&] { linear(x3, w, b); }, {"linear", "rank 2", "[4,3,1]"}));
  BOOST_TEST(throws_with([&] { linear(x, w1, b); }, {"linear", "rank 2", "w [3]"}));
  BOOST_TEST(throws_with([&] { linear(x, w5, b); },
                         {"linear", "3 features", "expects 5", "[4,3]", "[2,5]"}));
  BOOST_TEST(throws_with([&] { linear(x, w, b3); }, {"linear", "b must have shape [2]", "b [3]"}));
}

// ---------------------------------------------------------------------------------------------
// dropout
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(dropout_eval_is_identity_and_draws_nothing) {
  std::mt19937_64 rng(7), untouched(7);
  std::mt19937_64 rng_fresh(3);
  Variable<double> x(random_tensor({3, 4}, rng_fresh), true);
  Variable<double> y = dropout(x, 0.5, false, rng);
  BOOST_TEST(max_abs_diff(y.value(), x.value()) == 0.0);
  BOOST_TEST(rng() == untouched());
  const Tensor<double> g = random_tensor({3, 4}, rng_fresh);
  y.backward(g);
  BOOST_TEST(max_abs_diff(x.grad(), g) == 0.0);
}

BOOST_AUTO_TEST_CASE(dropout_rejects_bad_p) {
  std::mt19937_64 rng(0);
  const Variable<double> x(filled_tensor<double>({2, 3}, 1.0));
  for (double p : {1.0, -0.1, 1.5, std::numeric_limits<double>::quiet_NaN()})
    BOOST_TEST(throws_with([&] { dropout(x, p, true, rng); }, {"dropout", "p", "[2,3]"}),
               "p = " << p);
  // p = 1 is rejected in eval too: it is a bad setting, not a training detail.
  BOOST_TEST(throws_with([&] { dropout(x, 1.0, false, rng); }, {"dropout"}));
}

BOOST_AUTO_TEST_CASE(dropout_preserves_the_mean) {
  std::mt19937_64 rng(11);
  const double p = 0.3;
  const std::size_t n = 200000;
  const Variable<double> x(filled_tensor<double>({n}, 1.0));
  const Tensor<double> y = dropout(x, p, true, rng).value();
  double total = 0;
  std::size_t zeros = 0;
  for (const double v : y) {
    total += v;
    if (v == 0.0)
      ++zeros;
    else
      BOOST_REQUIRE(std::abs(v - 1.0 / (1.0 - p)) < 1e-12);  // survivors are scaled
  }
  // Standard deviations: mean ≈ 0.0023, zero fraction ≈ 0.001; allow about 4 of them.
  BOOST_TEST(std::abs(total / double(n) - 1.0) < 0.01);
  BOOST_TEST(std::abs(double(zeros) / double(n) - p) < 0.005);
}

BOOST_AUTO_TEST_CASE(dropout_mask_is_reproducible_and_used_by_backward) {
  std::mt19937_64 data(2);
  const Tensor<double> xv = random_tensor({4, 50}, data);
  const Tensor<double> g = random_tensor({4, 50}, data);
  std::mt19937_64 a(99), b(99), c(100);
  Variable<double> xa(xv, true);
  Variable<double> ya = dropout(xa, 0.5, true, a);
  const Tensor<double> yb = dropout(Variable<double>(xv), 0.5, true, b).value();
  const Tensor<double> yc = dropout(Variable<double>(xv), 0.5, true, c).value();
  BOOST_TEST(max_abs_diff(ya.value(), yb) == 0.0);
  BOOST_TEST(max_abs_diff(ya.value(), yc) > 0.0);
  // Float draws the same mask as double from the same seed.
  std::mt19937_64 f(99);
  const Tensor<float> yf = dropout(Variable<float>(xt::cast<float>(xv)), 0.5, true, f).value();
  for (std::size_t i = 0; i < yf.size(); ++i)
    BOOST_REQUIRE((yf.data()[i] == 0.0f) == (yb.data()[i] == 0.0));
  // dx = g·m/(1-p): zero exactly where the output was dropped, 2g elsewhere.
  ya.backward(g);
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const bool kept = ya.value().data()[i] != 0.0;
    dropped += kept ? 0 : 1;
    BOOST_REQUIRE(xa.grad().data()[i] == (kept ? 2.0 * g.data()[i] : 0.0));
  }
  BOOST_TEST(dropped > 0u);
  BOOST_TEST(dropped < xv.size());
}

// ---------------------------------------------------------------------------------------------
// batch_norm2d
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(batch_norm_training_normalises_each_channel) {
  std::mt19937_64 rng(4);
  const std::size_t n = 4, c = 3, h = 5, w = 6;
  Tensor<double> xv = random_tensor({n, c, h, w}, rng);
  for (std::size_t i = 0; i < xv.size(); ++i) xv.data()[i] = 3.0 * xv.data()[i] + 7.0;
  const Variable<double> x(xv);
  const Variable<double> gamma(filled_tensor<double>({c}, 1.0));
  const Variable<double> beta(filled_tensor<double>({c}, 0.0));
  Tensor<double> rm = filled_tensor<double>({c}, 0.0), rv = filled_tensor<double>({c}, 1.0);
  const Tensor<double> y = batch_norm2d(x, gamma, beta, rm, rv, true).value();
  const double m = double(n * h * w);
  for (std::size_t ch = 0; ch < c; ++ch) {
    double s = 0, sq = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 0; k < h * w; ++k) {
        const double v = y.data()[(i * c + ch) * h * w + k];
        s += v;
        sq += v * v;
      }
    BOOST_TEST(std::abs(s / m) < 1e-12);
    BOOST_TEST(sq / m == 1.0, tt::tolerance(1e-4));  // var/(var + eps), var ≈ 3
  }
}

BOOST_AUTO_TEST_CASE(batch_norm_running_stats_after_one_step) {
  // Channel 0 holds {1, 2, 3, 4} (over n and w), channel 1 holds {0, 0, 2, 6}.
  // Channel 0: mean 2.5, biased var 1.25, unbiased 5/3.
  // Channel 1: mean 2, biased var (4 + 4 + 0 + 16)/4 = 6, unbiased 8.
  const Tensor<double> xv = make({2, 2, 1, 2}, {1, 2, 0, 0, 3, 4, 2, 6});
  Tensor<double> rm = make({2}, {0.0, 1.0}), rv = make({2}, {1.0, 2.0});
  const Variable<double> gamma(make({2}, {2.0, 1.0}));
  const Variable<double> beta(make({2}, {0.5, -1.0}));
  const BatchNormParams params{0.1, 1e-5};
  const Tensor<double> y =
      batch_norm2d(Variable<double>(xv), gamma, beta, rm, rv, true, params).value();
  BOOST_TEST(rm(0) == 0.9 * 0.0 + 0.1 * 2.5, tt::tolerance(1e-14));
  BOOST_TEST(rm(1) == 0.9 * 1.0 + 0.1 * 2.0, tt::tolerance(1e-14));
  BOOST_TEST(rv(0) == 0.9 * 1.0 + 0.1 * 5.0 / 3.0, tt::tolerance(1e-14));
  BOOST_TEST(rv(1) == 0.9 * 2.0 + 0.1 * 8.0, tt::tolerance(1e-14));
  // The output uses the biased batch variance: x=1 in channel 0 -> 2·(1-2.5)/sqrt(1.25+eps)+0.5.
  BOOST_TEST(y(0, 0, 0, 0) == 2.0 * (1.0 - 2.5) / std::sqrt(1.25 + 1e-5) + 0.5,
             tt::tolerance(1e-12));
  BOOST_TEST(y(1, 1, 0, 1) == (6.0 - 2.0) / std::sqrt(6.0 + 1e-5) - 1.0, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(batch_norm_eval_uses_running_stats) {
  const Tensor<double> xv = make({1, 2, 1, 2}, {1, 2, 3, 4});
  Tensor<double> rm = make({2}, {0.5, -1.0}), rv = make({2}, {4.0, 0.25});
  const Tensor<double> rm0 = rm, rv0 = rv;
  Variable<double> x(xv, true);
  Variable<double> gamma(make({2}, {2.0, 3.0}), true);
  Variable<double> beta(make({2}, {1.0, 0.0}), true);
  const double eps = 1e-5;
  Variable<double> y = batch_norm2d(x, gamma, beta, rm, rv, false, BatchNormParams{0.1, eps});
  BOOST_TEST(max_abs_diff(rm, rm0) == 0.0);  // eval leaves the running stats alone
  BOOST_TEST(max_abs_diff(rv, rv0) == 0.0);
  const double s0 = 1.0 / std::sqrt(4.0 + eps), s1 = 1.0 / std::sqrt(0.25 + eps);
  const Tensor<double> want = make({1, 2, 1, 2}, {2 * (1 - 0.5) * s0 + 1, 2 * (2 - 0.5) * s0 + 1,
                                                  3 * (3 + 1.0) * s1, 3 * (4 + 1.0) * s1});
  BOOST_TEST(max_abs_diff(y.value(), want) < 1e-12);
  // Eval backward: dx = γ·g/sqrt(σ² + eps), dγ = Σ g·x̂, dβ = Σ g.
  y.backward(make({1, 2, 1, 2}, {1, -1, 2, 0.5}));
  BOOST_TEST(max_abs_diff(x.grad(), make({1, 2, 1, 2}, {2 * s0, -2 * s0, 6 * s1, 1.5 * s1})) <
             1e-12);
  BOOST_TEST(max_abs_diff(gamma.grad(), make({2}, {(0.5 - 1.5) * s0, (2 * 4.0 + 0.5 * 5.0) * s1})) <
             1e-12);
  BOOST_TEST(max_abs_diff(beta.grad(), make({2}, {0.0, 2.5})) < 1e-12);
}

BOOST_AUTO_TEST_CASE(batch_norm_training_gradient_sums_to_zero) {
  // Shifting every x of a channel by the same amount leaves y unchanged, so Σ dx = 0 per
  // channel. (Scaling is not exact with eps > 0, so Σ dx·x̂ is only nearly 0.)
  std::mt19937_64 rng(8);
  const std::size_t n = 3, c = 2, plane = 4;
  Variable<double> x(random_tensor({n, c, 2, 2}, rng), true);
  Variable<double> gamma(make({2}, {1.5, -0.7}), true);
  Variable<double> beta(make({2}, {0.1, 0.2}), true);
  Tensor<double> rm = filled_tensor<double>({c}, 0.0), rv = filled_tensor<double>({c}, 1.0);
  Variable<double> y = batch_norm2d(x, gamma, beta, rm, rv, true);
  y.backward(random_tensor({n, c, 2, 2}, rng));
  for (std::size_t ch = 0; ch < c; ++ch) {
    double s = 0, total = 0;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 0; k < plane; ++k) {
        const double d = x.grad().data()[(i * c + ch) * plane + k];
        s += d;
        total += std::abs(d);
      }
    BOOST_TEST(total > 0.1);
    BOOST_TEST(std::abs(s) < 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(batch_norm_errors) {
  const Variable<double> x(filled_tensor<double>({2, 3, 2, 2}, 1.0));
  const Variable<double> g3(filled_tensor<double>({3}, 1.0)), g2(filled_tensor<double>({2}, 1.0));
  Tensor<double> r3 = filled_tensor<double>({3}, 1.0), r4 = filled_tensor<double>({4}, 1.0);
  const Variable<double> x3(filled_tensor<double>({2, 3, 4}, 1.0));
  BOOST_TEST(throws_with([&] { batch_norm2d(x3, g3, g3, r3, r3, true); },
                         {"batch_norm2d", "rank 4", "[2,3,4]"}));
  BOOST_TEST(throws_with([&] { batch_norm2d(x, g2, g3, r3, r3, true); },
                         {"batch_norm2d", "gamma", "3 channels", "[2,3,2,2]", "gamma [2]"}));
  BOOST_TEST(throws_with([&] { batch_norm2d(x, g3, g2, r3, r3, true); },
                         {"batch_norm2d", "beta", "beta [2]"}));
  BOOST_TEST(throws_with([&] { batch_norm2d(x, g3, g3, r4, r3, false); },
                         {"batch_norm2d", "running_mean", "running_mean [4]"}));
  BOOST_TEST(throws_with([&] { batch_norm2d(x, g3, g3, r3, r4, false); },
                         {"batch_norm2d", "running_var", "running_var [4]"}));
  const Variable<double> one(filled_tensor<double>({1, 3, 1, 1}, 1.0));
  BOOST_TEST(throws_with([&] { batch_norm2d(one, g3, g3, r3, r3, true); },
                         {"batch_norm2d", "more than one value", "[1,3,1,1]"}));
  // A single value per channel is fine in eval.
  BOOST_TEST(!throws_with([&] { batch_norm2d(one, g3, g3, r3, r3, false); }, {}));
}
