// Pooling: the fast kernels against the course's step-by-step reference, hand-worked cases,
// the tie rule, and errors.
#define BOOST_TEST_MODULE pool
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include <xgrad/xgrad.hpp>

#include "reference/pool_reference.hpp"

using namespace xgrad;
using reference::PoolMode;
using xgrad::testing::check_same_bits_as_separate_ops;
using xgrad::testing::FusedCase;
using xgrad::testing::make;
using xgrad::testing::max_abs_diff;
using xgrad::testing::random_tensor;
using xgrad::testing::throws_with;

namespace {

void check_close(const Tensor<double>& got, const std::vector<double>& want) {
  BOOST_REQUIRE_EQUAL(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    BOOST_TEST(got.data()[i] == want[i], boost::test_tools::tolerance(1e-12));
}

Variable<double> pool(PoolMode mode, const Variable<double>& x, const Pool2DParams& p) {
  return mode == PoolMode::max ? max_pool2d(x, p) : avg_pool2d(x, p);
}

// Runs the fast op forward and backward with upstream `g`; returns {y, dx}.
std::pair<Tensor<double>, Tensor<double>> run(PoolMode mode, const Tensor<double>& x,
                                              const Pool2DParams& p, const Tensor<double>* g) {
  Variable<double> xv(x, true, "x");
  Variable<double> y = pool(mode, xv, p);
  if (!g) return {y.value(), Tensor<double>()};
  y.backward(*g);
  return {y.value(), xv.grad()};
}

}  // namespace

BOOST_AUTO_TEST_CASE(fast_matches_reference_on_random_shapes) {
  std::mt19937_64 rng(2024);
  std::uniform_int_distribution<int> small(1, 3), kernel(1, 4), stride(1, 3), extra(0, 5);
  std::bernoulli_distribution coin(0.5);
  int checked = 0;
  for (int trial = 0; trial < 120; ++trial) {
    Pool2DParams p;
    for (int a = 0; a < 2; ++a) {
      p.kernel[a] = kernel(rng);
      p.stride[a] = stride(rng);
      p.padding[a] = std::uniform_int_distribution<int>(0, p.kernel[a] / 2)(rng);
    }
    p.count_include_pad = coin(rng);
    // H + 2p >= k always; odd and even sizes both occur.
    const std::size_t h = std::size_t(std::max(1, p.kernel[0] - 2 * p.padding[0]) + extra(rng));
    const std::size_t w = std::size_t(std::max(1, p.kernel[1] - 2 * p.padding[1]) + extra(rng));
    const Tensor<double> x =
        random_tensor({std::size_t(small(rng)), std::size_t(small(rng)), h, w}, rng);
    for (PoolMode mode : {PoolMode::max, PoolMode::average}) {
      BOOST_TEST_CONTEXT("trial " << trial << (mode == PoolMode::max ? " max" : " avg") << " x "
                                  << shape_str(x) << " k " << p.kernel[0] << "x" << p.kernel[1]
                                  << " s " << p.stride[0] << "x" << p.stride[1] << " p "
                                  << p.padding[0] << "x" << p.padding[1] << " include_pad "
                                  << p.count_include_pad) {
        const Tensor<double> y_ref = reference::pool_forward_ref(x, p, mode);
        const Tensor<double> g = random_tensor(shape_of(y_ref), rng);
        const auto [y, dx] = run(mode, x, p, &g);
        BOOST_TEST(max_abs_diff(y, y_ref) < 1e-12);
        const Tensor<double> dx_ref = reference::pool_backward_ref(g, x, p, mode);
        BOOST_TEST(max_abs_diff(dx, dx_ref) < 1e-12);
        ++checked;
      }
    }
  }
  BOOST_TEST(checked == 240);
}

BOOST_AUTO_TEST_CASE(fast_matches_reference_on_a_large_batch) {
  // Enough planes and work for the OpenMP path.
  std::mt19937_64 rng(5);
  const Tensor<double> x = random_tensor({8, 16, 24, 24}, rng);
  for (PoolMode mode : {PoolMode::max, PoolMode::average}) {
    const Pool2DParams p{{3, 3}, {2, 2}, {1, 1}, false};
    const Tensor<double> y_ref = reference::pool_forward_ref(x, p, mode);
    const Tensor<double> g = random_tensor(shape_of(y_ref), rng);
    const auto [y, dx] = run(mode, x, p, &g);
    BOOST_TEST(max_abs_diff(y, y_ref) < 1e-12);
    BOOST_TEST(max_abs_diff(dx, reference::pool_backward_ref(g, x, p, mode)) < 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(float_matches_reference) {
  std::mt19937_64 rng(9);
  const Tensor<double> x = random_tensor({2, 3, 7, 6}, rng);
  const Pool2DParams p{{3, 2}, {2, 1}, {1, 1}, true};
  for (PoolMode mode : {PoolMode::max, PoolMode::average}) {
    const Tensor<double> y_ref = reference::pool_forward_ref(x, p, mode);
    const Tensor<double> g = random_tensor(shape_of(y_ref), rng);
    Variable<float> xf(xt::cast<float>(x), true);
    Variable<float> y = mode == PoolMode::max ? max_pool2d(xf, p) : avg_pool2d(xf, p);
    y.backward(Tensor<float>(xt::cast<float>(g)));
    const Tensor<double> yd = xt::cast<double>(y.value());
    const Tensor<double> dxd = xt::cast<double>(xf.grad());
    BOOST_TEST(max_abs_diff(yd, y_ref) < 1e-6);
    BOOST_TEST(max_abs_diff(dxd, reference::pool_backward_ref(g, x, p, mode)) < 1e-6);
  }
}

// The float 2x2 kernels (AVX2 / AVX-512) against the reference, exactly (a max and its scattered
// gradient round nothing), on several planes of every height and width class: even heights, whose
// planes run as one stacked plane, and odd ones, whose last row belongs to no window, so that
// their planes run one at a time; rows shorter than, as long as and longer than a vector.
BOOST_AUTO_TEST_CASE(float_2x2_kernels_match_reference_on_many_planes) {
  std::mt19937_64 rng(77);
  const Pool2DParams p{{2, 2}, {2, 2}, {0, 0}};
  int checked = 0;
  for (std::size_t h : {2, 3, 4, 5, 10, 11})
    for (std::size_t w : {2, 3, 5, 9, 10, 16, 17, 28, 33}) {
      const Tensor<double> x = random_tensor({2, 3, h, w}, rng);
      const Tensor<double> y_ref = reference::pool_forward_ref(x, p, PoolMode::max);
      const Tensor<double> g = random_tensor(shape_of(y_ref), rng);
      Variable<float> xf(xt::cast<float>(x), true);
      Variable<float> y = max_pool2d(xf, p);
      y.backward(Tensor<float>(xt::cast<float>(g)));
      const Tensor<double> y_want = xt::cast<double>(xt::cast<float>(y_ref));
      const Tensor<double> dx_want =
          xt::cast<double>(xt::cast<float>(reference::pool_backward_ref(g, x, p, PoolMode::max)));
      BOOST_TEST(max_abs_diff(xt::cast<double>(y.value()), y_want) == 0.0, "h " << h << " w " << w);
      BOOST_TEST(max_abs_diff(xt::cast<double>(xf.grad()), dx_want) == 0.0,
                 "h " << h << " w " << w);
      ++checked;
    }
  BOOST_TEST(checked == 54);
}

// x = 1..16 in a 4x4 plane, 2x2 windows, stride 2:
//   windows {1,2,5,6} {3,4,7,8} {9,10,13,14} {11,12,15,16}.
BOOST_AUTO_TEST_CASE(hand_computed_k2s2) {
  std::vector<double> v(16);
  for (int i = 0; i < 16; ++i) v[std::size_t(i)] = i + 1;
  const Tensor<double> x = make({1, 1, 4, 4}, v);
  const Tensor<double> g = make({1, 1, 2, 2}, {1, 2, 3, 4});
  const Pool2DParams p{{2, 2}, {2, 2}, {0, 0}};
  const auto [ymax, dmax] = run(PoolMode::max, x, p, &g);
  check_close(ymax, {6, 8, 14, 16});
  // Each gradient lands on its window's bottom-right element.
  check_close(dmax, {0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4});
  const auto [yavg, davg] = run(PoolMode::average, x, p, &g);
  check_close(yavg, {3.5, 5.5, 11.5, 13.5});
  check_close(davg, {.25, .25, .5, .5, .25, .25, .5, .5, .75, .75, 1, 1, .75, .75, 1, 1});
}

// x = 1..9 in a 3x3 plane, 2x2 windows, stride 2, padding 1: the windows cover rows/columns
// {-1,0} and {1,2}, so the real parts are {1} {2,3} / {4,7} {5,6,8,9}.
BOOST_AUTO_TEST_CASE(hand_computed_padding) {
  const Tensor<double> x = make({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Tensor<double> g = make({1, 1, 2, 2}, {1, 2, 3, 4});
  Pool2DParams p{{2, 2}, {2, 2}, {1, 1}, true};
  const auto [ymax, dmax] = run(PoolMode::max, x, p, &g);
  check_close(ymax, {1, 3, 7, 9});  // the -inf padding never wins
  check_close(dmax, {1, 0, 2, 0, 0, 0, 3, 0, 4});
  // count_include_pad: divisor 4 everywhere.
  const auto [yin, din] = run(PoolMode::average, x, p, &g);
  check_close(yin, {1.0 / 4, 5.0 / 4, 11.0 / 4, 28.0 / 4});
  check_close(din, {.25, .5, .5, .75, 1, 1, .75, 1, 1});
  // Without the padding in the divisor: 1, 2, 2, 4 real elements.
  p.count_include_pad = false;
  const auto [yex, dex] = run(PoolMode::average, x, p, &g);
  check_close(yex, {1, 2.5, 5.5, 7});
  check_close(dex, {1, 1, 1, 1.5, 1, 1, 1.5, 1, 1});
}

// Overlapping windows (k2 s1 on 3x3): with a unit upstream gradient, each input gets
// (number of windows covering it)/4 from the average, and the max counts how often it wins.
BOOST_AUTO_TEST_CASE(hand_computed_overlap) {
  const Tensor<double> x = make({1, 1, 3, 3}, {1, 2, 3, 4, 9, 6, 7, 8, 5});
  const Tensor<double> g = filled_tensor<double>({1, 1, 2, 2}, 1.0);
  const Pool2DParams p{{2, 2}, {1, 1}, {0, 0}};
  const auto [yavg, davg] = run(PoolMode::average, x, p, &g);
  check_close(yavg, {4, 5, 7, 7});
  check_close(davg, {.25, .5, .25, .5, 1, .5, .25, .5, .25});
  const auto [ymax, dmax] = run(PoolMode::max, x, p, &g);
  check_close(ymax, {9, 9, 9, 9});
  check_close(dmax, {0, 0, 0, 0, 4, 0, 0, 0, 0});  // the centre wins all four windows
}

BOOST_AUTO_TEST_CASE(ties_go_to_the_first_maximum) {
  const Pool2DParams p{{2, 2}, {2, 2}, {0, 0}};
  const Tensor<double> g = make({1, 1, 1, 1}, {1});
  {
    const Tensor<double> x = make({1, 1, 2, 2}, {5, 5, 5, 5});
    const auto [y, dx] = run(PoolMode::max, x, p, &g);
    check_close(y, {5});
    check_close(dx, {1, 0, 0, 0});
  }
  {
    const Tensor<double> x = make({1, 1, 2, 2}, {1, 3, 3, 2});
    const auto [y, dx] = run(PoolMode::max, x, p, &g);
    check_close(dx, {0, 1, 0, 0});  // (0,1) precedes (1,0) in row-major order
    // The course's mask would mark both, doubling the gradient that flows back.
    const Tensor<double> window = make({2, 2}, {1, 3, 3, 2});
    check_close(reference::create_mask_all_ties(window), {0, 1, 1, 0});
    check_close(reference::create_mask_from_window(window), {0, 1, 0, 0});
  }
  {
    // Deterministic across runs and with the parallel path: a constant large batch.
    const Tensor<double> x = filled_tensor<double>({4, 32, 16, 16}, 1.0);
    const Tensor<double> gg = filled_tensor<double>({4, 32, 8, 8}, 1.0);
    const auto [y, dx] = run(PoolMode::max, x, p, &gg);
    for (std::size_t i = 0; i < dx.size(); ++i) {
      const std::size_t r = (i / 16) % 16, c = i % 16;
      BOOST_REQUIRE(dx.data()[i] == ((r % 2 == 0 && c % 2 == 0) ? 1.0 : 0.0));
    }
  }
}

namespace {

// relu(max_pool2d(x)) against max_pool2d(relu(x)): the same values and the same gradient, bit for
// bit, on small integers (many ties, zeros, windows with no positive value) and on continuous
// values. The reference models rely on it (nn::lenet5 applies each ReLU after its pool).
template <class T>
void check_relu_commutes_with_max_pool(const Shape& shape, const Pool2DParams& p, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> small(-3, 2);
  std::uniform_real_distribution<double> wide(-1.0, 1.0);
  for (const bool ties : {true, false}) {
    Tensor<T> x = empty_tensor<T>(shape);
    for (T& v : x) v = ties ? T(small(rng)) : T(wide(rng));
    Variable<T> a(x, true, "a"), b(x, true, "b");
    const Variable<T> pool_first = relu(max_pool2d(a, p));
    const Variable<T> relu_first = max_pool2d(relu(b), p);
    BOOST_REQUIRE(shape_of(pool_first.value()) == shape_of(relu_first.value()));
    Tensor<T> g = empty_tensor<T>(shape_of(pool_first.value()));
    for (T& v : g) v = T(wide(rng));
    pool_first.backward(g);
    relu_first.backward(g);
    BOOST_TEST(std::equal(pool_first.value().begin(), pool_first.value().end(),
                          relu_first.value().begin()),
               shape_str(shape) << (ties ? " ties" : " continuous") << ": values differ");
    BOOST_TEST(std::equal(a.grad().begin(), a.grad().end(), b.grad().begin()),
               shape_str(shape) << (ties ? " ties" : " continuous") << ": gradients differ");
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(relu_commutes_with_max_pool) {
  const Pool2DParams k2{{2, 2}, {2, 2}, {0, 0}};
  check_relu_commutes_with_max_pool<float>({4, 6, 28, 28}, k2, 1);  // the AVX2 / AVX-512 kernel
  check_relu_commutes_with_max_pool<float>({3, 5, 10, 9}, k2, 2);   // odd width, short rows
  check_relu_commutes_with_max_pool<double>({2, 3, 8, 8}, k2, 3);
  // Overlapping windows with padding (padding never wins a max): the general kernel.
  check_relu_commutes_with_max_pool<float>({2, 4, 9, 11}, Pool2DParams{{3, 3}, {2, 2}, {1, 1}}, 4);
}

BOOST_AUTO_TEST_CASE(max_pool_propagates_nan) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor<double> x = make({1, 1, 2, 2}, {1, nan, 3, 2});
  Variable<double> y = max_pool2d(Variable<double>(x), Pool2DParams{{2, 2}, {2, 2}, {0, 0}});
  BOOST_TEST(std::isnan(y.value()(0, 0, 0, 0)));
}

// The float 2x2 kernels (AVX2 / AVX-512) against the rule of the scalar path: a NaN takes over a
// number and then stays (the first NaN of a window wins, as its gradient shows), else the first
// maximum in row-major order wins. NaNs at every window position, alone, in pairs and beside ties,
// in rows of whole vectors (28 wide), of a last chunk that overlaps the one before (18) and of
// outputs shorter than a vector (10).
BOOST_AUTO_TEST_CASE(float_2x2_kernel_propagates_the_first_nan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Pool2DParams k2{{2, 2}, {2, 2}, {0, 0}};
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> small(-2, 2), pick(0, 9);
  for (const std::size_t w : {28u, 18u, 10u}) {
    const std::size_t h = 6, planes = 3;
    Tensor<float> x = empty_tensor<float>({2, planes, h, w});
    for (float& v : x) v = pick(rng) < 3 ? nan : float(small(rng));  // ties and NaNs
    Variable<float> xv(x, true);
    const Variable<float> y = max_pool2d(xv, k2);
    Tensor<float> g = empty_tensor<float>(shape_of(y.value()));
    for (std::size_t i = 0; i < g.size(); ++i) g.data()[i] = float(i + 1);
    y.backward(g);
    std::size_t nan_windows = 0;
    for (std::size_t n = 0; n < 2 * planes; ++n)
      for (std::size_t i = 0; i < h / 2; ++i)
        for (std::size_t j = 0; j < w / 2; ++j) {
          const float* plane = x.data() + n * h * w;
          std::size_t best = (2 * i) * w + 2 * j;  // the rule, window element by element
          for (const std::size_t e :
               {(2 * i) * w + 2 * j + 1, (2 * i + 1) * w + 2 * j, (2 * i + 1) * w + 2 * j + 1}) {
            const float v = plane[e], b = plane[best];
            if (v > b || (std::isnan(v) && !std::isnan(b))) best = e;
          }
          const std::size_t out = (n * (h / 2) + i) * (w / 2) + j;
          const float got = y.value().data()[out];
          nan_windows += std::isnan(plane[best]) ? 1 : 0;
          BOOST_TEST((std::isnan(plane[best]) ? std::isnan(got) : got == plane[best]),
                     "w " << w << " plane " << n << " window " << i << "," << j);
          for (std::size_t e : {(2 * i) * w + 2 * j, (2 * i) * w + 2 * j + 1,
                                (2 * i + 1) * w + 2 * j, (2 * i + 1) * w + 2 * j + 1})
            BOOST_TEST(xv.grad().data()[n * h * w + e] == (e == best ? g.data()[out] : 0.f),
                       "w " << w << " plane " << n << " element " << e);
        }
    BOOST_TEST(nan_windows > 10);
  }
}

BOOST_AUTO_TEST_CASE(global_avg_pool) {
  const Tensor<double> x = make({1, 2, 2, 2}, {1, 2, 3, 4, -1, 0, 5, 8});
  Variable<double> xv(x, true);
  Variable<double> y = global_avg_pool2d(xv);
  BOOST_TEST((y.shape() == Shape{1, 2}));
  check_close(y.value(), {2.5, 3});
  y.backward(make({1, 2}, {4, -8}));
  check_close(xv.grad(), {1, 1, 1, 1, -2, -2, -2, -2});
  // The same as an average pool whose window is the whole plane.
  std::mt19937_64 rng(1);
  const Tensor<double> z = random_tensor({3, 4, 5, 7}, rng);
  const Tensor<double> a = global_avg_pool2d(Variable<double>(z)).value();
  Tensor<double> b = avg_pool2d(Variable<double>(z), Pool2DParams{{5, 7}, {1, 1}, {0, 0}}).value();
  b.reshape({3, 4});
  BOOST_TEST(max_abs_diff(a, b) < 1e-12);
}

BOOST_AUTO_TEST_CASE(errors_name_the_op_and_shapes) {
  const Variable<double> x(filled_tensor<double>({1, 1, 2, 2}, 1.0));
  const Variable<double> x3(filled_tensor<double>({1, 2, 2}, 1.0));
  for (const char* op : {"max_pool2d", "avg_pool2d"}) {
    const auto call = [op](const Variable<double>& v, Pool2DParams p) {
      return [op, v, p] {
        if (std::string(op) == "max_pool2d")
          max_pool2d(v, p);
        else
          avg_pool2d(v, p);
      };
    };
    BOOST_TEST_CONTEXT(op) {
      BOOST_TEST(throws_with(call(x3, {}), {op, "rank 4", "[1,2,2]"}));
      BOOST_TEST(throws_with(call(x, {{0, 2}, {1, 1}, {0, 0}}), {op, "kernel", "[1,1,2,2]"}));
      BOOST_TEST(throws_with(call(x, {{2, 2}, {0, 1}, {0, 0}}), {op, "stride", "[1,1,2,2]"}));
      BOOST_TEST(throws_with(call(x, {{2, 2}, {1, 1}, {0, -1}}), {op, "negative", "[1,1,2,2]"}));
      BOOST_TEST(throws_with(call(x, {{2, 2}, {1, 1}, {2, 0}}), {op, "half", "[1,1,2,2]"}));
      BOOST_TEST(throws_with(call(x, {{3, 3}, {1, 1}, {0, 0}}), {op, "larger", "[1,1,2,2]"}));
      // Padding makes room for the same window.
      BOOST_TEST(!throws_with(call(x, {{3, 3}, {1, 1}, {1, 1}}), {}));
    }
  }
  BOOST_TEST(throws_with([&] { global_avg_pool2d(x3); }, {"global_avg_pool2d", "[1,2,2]"}));
}

// The fused op's 2x2 float path against conv2d then max_pool2d (then relu): the same kernels image
// by image, so the same bits, on 1 and 2 threads, over batches of several chunks, with the layers
// of LeNet-5 and the convnet and odd output sizes (whose last row or column is in no window).
BOOST_AUTO_TEST_CASE(conv2d_max_pool2d_matches_the_separate_ops_bit_for_bit) {
  Conv2DParams pad2;
  pad2.padding = {2, 2};
  Conv2DParams s2;
  s2.stride = {2, 2};
  const std::vector<FusedCase> cases{{"lenet_conv1", {30, 1, 28, 28}, {6, 1, 5, 5}, pad2, true},
                                     {"lenet_conv2", {19, 6, 14, 14}, {16, 6, 5, 5}, {}, true},
                                     {"convnet_conv2", {3, 32, 26, 26}, {64, 32, 3, 3}, {}, true},
                                     {"odd_9x7_no_bias", {5, 3, 11, 9}, {4, 3, 3, 3}, {}, false},
                                     {"stride2_im2col", {4, 3, 17, 17}, {5, 3, 3, 3}, s2, true}};
  std::mt19937_64 rng(2026);
  using V = Variable<float>;
  for (bool relu : {false, true}) {
    BOOST_TEST_CONTEXT((relu ? "with relu" : "without relu")) {
      const auto separate = [relu](const FusedCase& c, const V& x, const V& w, const V& b) {
        const V pooled = max_pool2d(conv2d(x, w, b, c.conv), Pool2DParams{});
        return relu ? xgrad::relu(pooled) : pooled;
      };
      const auto fused = [relu](const FusedCase& c, const V& x, const V& w, const V& b) {
        return conv2d_max_pool2d(x, w, b, c.conv, Pool2DParams{}, relu);
      };
      BOOST_TEST(check_same_bits_as_separate_ops(cases, fused, separate, rng) == 10);
    }
  }
}

BOOST_AUTO_TEST_CASE(conv2d_max_pool2d_errors_name_the_op_and_shapes) {
  const Variable<float> x(filled_tensor<float>({1, 2, 6, 6}, 1.f));
  const Variable<float> w(filled_tensor<float>({3, 2, 3, 3}, 1.f));
  const Variable<float> w_bad(filled_tensor<float>({3, 4, 3, 3}, 1.f));
  const Variable<float> b_bad(filled_tensor<float>({2}, 1.f));
  BOOST_TEST(throws_with([&] { conv2d_max_pool2d(x, w_bad, {}, {}); },
                         {"conv2d_max_pool2d", "channels", "[1,2,6,6]", "[3,4,3,3]"}));
  BOOST_TEST(throws_with([&] { conv2d_max_pool2d(x, w, b_bad, {}); },
                         {"conv2d_max_pool2d", "bias", "[2]"}));
  // The convolution's output is 4x4: a 5x5 window does not fit.
  BOOST_TEST(throws_with(
      [&] {
        conv2d_max_pool2d(x, w, {}, {}, Pool2DParams{{5, 5}, {1, 1}});
      },
      {"conv2d_max_pool2d", "larger", "[1,3,4,4]"}));
}
