// Activations (relu, leaky_relu, sigmoid, tanh) and shape ops (mean, reshape, flatten, concat):
// hand-computed values, stability, error messages and round trips.
#define BOOST_TEST_MODULE elementwise
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include <xgrad/xgrad.hpp>

using namespace xgrad;
using xgrad::testing::all_finite;
using xgrad::testing::check_close;
using xgrad::testing::contains;
using xgrad::testing::error_of;
using V = Variable<double>;
using F = Variable<float>;

namespace {

V leaf(Tensor<double> t) {
  return V(std::move(t), true);
}

// A tensor of `shape` from row-major values (braces alone are ambiguous for [n,1]).
Tensor<double> of_shape(const Shape& shape, const std::vector<double>& values) {
  Tensor<double> t = empty_tensor<double>(shape);
  BOOST_REQUIRE(values.size() == t.size());
  std::copy(values.begin(), values.end(), t.data());
  return t;
}
}  // namespace

// ---------------------------------------------------------------------------------------- relu

// relu's gradient is g where x > 0 and exactly 0 elsewhere (a select, not g·[x > 0]: an infinite
// or NaN g where x <= 0 gives 0, and a NaN x gives 0), in float on the vectorised loop, below and
// above the size at which it splits over threads, the values cycling through the special cases.
BOOST_AUTO_TEST_CASE(relu_gradient_selects_g_where_x_is_positive) {
  xgrad::testing::Threads two(2);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float xs[] = {1.5f, -2.f, 0.f, -0.f, nan, inf, -inf, 1e-40f, -1e-40f, 3.f, -1.f};
  const float gs[] = {2.f, inf, nan, -3.f, -inf, 0.5f, 7.f};
  for (std::size_t n : {std::size_t(37), std::size_t(40000)}) {
    Tensor<float> xv = empty_tensor<float>({n}), gv = empty_tensor<float>({n});
    for (std::size_t i = 0; i < n; ++i) {
      xv.data()[i] = xs[i % std::size(xs)];
      gv.data()[i] = gs[i % std::size(gs)];
    }
    F x(xv, true);
    const F y = relu(x);
    const Tensor<float> dx = y.grad_fn()->backward(gv)[0];
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float want = xv.data()[i] > 0.f ? gv.data()[i] : 0.f;
      const float v = y.value().data()[i], want_y = xv.data()[i] > 0.f ? xv.data()[i] : 0.f;
      if (std::memcmp(&dx.data()[i], &want, sizeof want) != 0) ++wrong;
      if (std::memcmp(&v, &want_y, sizeof v) != 0) ++wrong;
    }
    BOOST_TEST(wrong == 0u, "n = " << n);
  }
}

// ---------------------------------------------------------------------------------- leaky_relu

BOOST_AUTO_TEST_CASE(leaky_relu_values_and_gradient) {
  V x = leaf({-2.0, -0.5, 0.0, 3.0});
  V y = leaky_relu(x, 0.1);
  check_close(y.value(), Tensor<double>{-0.2, -0.05, 0.0, 3.0});
  y.backward(Tensor<double>{1.0, 2.0, 3.0, 4.0});
  // At x = 0 the slope side is taken (like relu's subgradient 0 at 0).
  check_close(x.grad(), Tensor<double>{0.1, 0.2, 0.3, 4.0});
}

BOOST_AUTO_TEST_CASE(leaky_relu_default_slope_is_0_01) {
  V x = leaf({-100.0, 5.0});
  check_close(leaky_relu(x).value(), Tensor<double>{-1.0, 5.0});
  F xf(Tensor<float>{-100.0f, 5.0f});
  BOOST_TEST(leaky_relu(xf).value()(0) == -1.0f, boost::test_tools::tolerance(1e-6f));
}

// ---------------------------------------------------------------------------------- sigmoid

BOOST_AUTO_TEST_CASE(sigmoid_values_and_gradient) {
  const double ln3 = std::log(3.0);
  V x = leaf({0.0, ln3, -ln3});
  V y = sigmoid(x);
  check_close(y.value(), Tensor<double>{0.5, 0.75, 0.25});
  y.backward(Tensor<double>{1.0, 2.0, -1.0});
  // y(1 - y) = 1/4, 3/16, 3/16
  check_close(x.grad(), Tensor<double>{0.25, 0.375, -0.1875});
}

BOOST_AUTO_TEST_CASE(sigmoid_is_stable_for_large_inputs) {
  V x = leaf({-1000.0, 1000.0, -1e4, 1e4, -40.0});
  V y = sigmoid(x);
  BOOST_TEST(all_finite(y.value()));
  BOOST_TEST(y.value()(0) == 0.0);
  BOOST_TEST(y.value()(1) == 1.0);
  BOOST_TEST(y.value()(4) == std::exp(-40.0) / (1 + std::exp(-40.0)),
             boost::test_tools::tolerance(1e-12));
  y.backward(Tensor<double>{1, 1, 1, 1, 1});
  BOOST_TEST(all_finite(x.grad()));
  BOOST_TEST(x.grad()(1) == 0.0);

  F xf(Tensor<float>{-1000.0f, 1000.0f, -90.0f, 90.0f}, true);
  F yf = sigmoid(xf);
  BOOST_TEST(all_finite(yf.value()));
  BOOST_TEST(yf.value()(0) == 0.0f);
  BOOST_TEST(yf.value()(1) == 1.0f);
  yf.backward(Tensor<float>{1, 1, 1, 1});
  BOOST_TEST(all_finite(xf.grad()));
}

// ---------------------------------------------------------------------------------- tanh

BOOST_AUTO_TEST_CASE(tanh_values_and_gradient) {
  V x = leaf({0.0, std::atanh(0.5), -std::atanh(0.5)});
  V y = xgrad::tanh(x);
  check_close(y.value(), Tensor<double>{0.0, 0.5, -0.5});
  y.backward(Tensor<double>{2.0, 1.0, 4.0});
  // 1 - y² = 1, 3/4, 3/4
  check_close(x.grad(), Tensor<double>{2.0, 0.75, 3.0});
}

BOOST_AUTO_TEST_CASE(tanh_is_stable_for_large_inputs) {
  F x(Tensor<float>{-1000.0f, 1000.0f}, true);
  F y = xgrad::tanh(x);
  BOOST_TEST(y.value()(0) == -1.0f);
  BOOST_TEST(y.value()(1) == 1.0f);
  y.backward(Tensor<float>{1, 1});
  BOOST_TEST(x.grad()(0) == 0.0f);
  BOOST_TEST(x.grad()(1) == 0.0f);
}

BOOST_AUTO_TEST_CASE(activations_record_nothing_without_grad) {
  V x({1.0, -1.0}, true);
  NoGradGuard guard;
  BOOST_TEST(!sigmoid(x).requires_grad());
  BOOST_TEST(!xgrad::tanh(x).requires_grad());
  BOOST_TEST(!leaky_relu(x, 0.2).requires_grad());
}

// ---------------------------------------------------------------------------------- mean

BOOST_AUTO_TEST_CASE(mean_over_all_elements) {
  V x = leaf({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  V y = mean(x);
  BOOST_TEST(y.shape().empty());
  BOOST_TEST(y.item() == 3.5);
  y.backward();
  check_close(x.grad(), filled_tensor<double>({2, 3}, 1.0 / 6.0));
}

BOOST_AUTO_TEST_CASE(mean_over_axes) {
  V x = leaf({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  check_close(mean(x, {0}).value(), Tensor<double>{2.5, 3.5, 4.5});
  V rows = mean(x, {1}, true);
  check_close(rows.value(), of_shape({2, 1}, {2.0, 5.0}));
  rows.backward(of_shape({2, 1}, {3.0, -6.0}));
  check_close(x.grad(), Tensor<double>{{1.0, 1.0, 1.0}, {-2.0, -2.0, -2.0}});
  check_close(mean(x, {}).value(), x.value());
  check_close(mean(x, {1, 0}).value(), Tensor<double>(3.5));
}

BOOST_AUTO_TEST_CASE(mean_over_axes_matches_xtensor) {
  Tensor<double> t = empty_tensor<double>({2, 3, 4, 5});
  for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = std::sin(double(i));
  V x = leaf(t);
  const std::vector<std::vector<std::size_t>> axes_sets = {{0},    {1},    {3},         {0, 2},
                                                           {1, 3}, {2, 3}, {0, 1, 2, 3}};
  for (const auto& axes : axes_sets) {
    Tensor<double> expected = xt::mean(t, axes, xt::evaluation_strategy::immediate);
    check_close(mean(x, axes).value(), expected, 1e-12);
    Shape kept = shape_of(t);
    for (std::size_t a : axes) kept[a] = 1;
    Tensor<double> y = mean(x, axes, true).value();
    BOOST_TEST(shape_of(y) == kept);
    expected.reshape(kept);
    check_close(y, expected, 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(mean_errors_name_the_op_axis_and_shape) {
  V x = leaf({{1.0, 2.0}, {3.0, 4.0}});
  std::string msg = error_of([&] { mean(x, {2}); });
  BOOST_TEST(contains(msg, "mean"));
  BOOST_TEST(contains(msg, "axis 2"));
  BOOST_TEST(contains(msg, "[2,2]"));
  msg = error_of([&] { mean(x, {1, 1}); });
  BOOST_TEST(contains(msg, "mean"));
  BOOST_TEST(contains(msg, "repeated"));
  msg = error_of([&] { mean(V(empty_tensor<double>({0, 3}))); });
  BOOST_TEST(contains(msg, "mean"));
  BOOST_TEST(contains(msg, "[0,3]"));
  msg = error_of([&] { mean(V(empty_tensor<double>({0, 3})), {0}); });
  BOOST_TEST(contains(msg, "[0,3]"));
}

// ---------------------------------------------------------------------------------- reshape

BOOST_AUTO_TEST_CASE(reshape_keeps_row_major_order_and_round_trips) {
  V x = leaf({{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  V y = reshape(x, {3, 2});
  check_close(y.value(), Tensor<double>{{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}});
  V back = reshape(y, {2, 3});
  check_close(back.value(), x.value());
  back.backward(Tensor<double>{{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}});
  check_close(x.grad(), x.value());
}

BOOST_AUTO_TEST_CASE(reshape_error_names_both_shapes) {
  V x = leaf(filled_tensor<double>({2, 3}, 1.0));
  const std::string msg = error_of([&] { reshape(x, {4, 2}); });
  BOOST_TEST(contains(msg, "reshape"));
  BOOST_TEST(contains(msg, "[2,3]"));
  BOOST_TEST(contains(msg, "[4,2]"));
}

// ---------------------------------------------------------------------------------- flatten

BOOST_AUTO_TEST_CASE(flatten_keeps_the_batch_axis) {
  Tensor<double> t = empty_tensor<double>({2, 3, 2, 2});
  for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = double(i);
  V x = leaf(t);
  V y = flatten(x);
  BOOST_TEST(y.shape() == (Shape{2, 12}));
  BOOST_TEST(y.value()(1, 0) == 12.0);
  BOOST_TEST(y.value()(1, 11) == 23.0);
  // Round trip: flatten then reshape back gives the input; the gradient comes back in its shape.
  V back = reshape(y, {2, 3, 2, 2});
  check_close(back.value(), t);
  back.backward(t);
  check_close(x.grad(), t);
  BOOST_TEST(flatten(V(Tensor<double>{1.0, 2.0, 3.0})).shape() == (Shape{3, 1}));
  BOOST_TEST(flatten(V(filled_tensor<double>({4, 7}, 0.0))).shape() == (Shape{4, 7}));
}

BOOST_AUTO_TEST_CASE(flatten_of_a_scalar_throws) {
  const std::string msg = error_of([] { flatten(V(Tensor<double>(2.0))); });
  BOOST_TEST(contains(msg, "flatten"));
  BOOST_TEST(contains(msg, "[]"));
}

// ---------------------------------------------------------------------------------- concat

BOOST_AUTO_TEST_CASE(concat_values_along_each_axis) {
  V a = leaf({{1.0, 2.0}, {3.0, 4.0}});
  V b = leaf({{5.0, 6.0}});
  check_close(concat<double>({a, b}, 0).value(),
              Tensor<double>{{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}});
  V c = leaf(of_shape({2, 1}, {7.0, 8.0}));
  check_close(concat<double>({a, c, a}, 1).value(),
              Tensor<double>{{1.0, 2.0, 7.0, 1.0, 2.0}, {3.0, 4.0, 8.0, 3.0, 4.0}});
}

BOOST_AUTO_TEST_CASE(concat_gradient_of_each_input_is_its_slice) {
  V a = leaf({{1.0, 2.0}, {3.0, 4.0}});
  V c = leaf(of_shape({2, 1}, {7.0, 8.0}));
  V y = concat<double>({a, c, a}, 1);
  y.backward(Tensor<double>{{10.0, 20.0, 30.0, 40.0, 50.0}, {60.0, 70.0, 80.0, 90.0, 100.0}});
  // a appears twice: its slices are summed by the engine.
  check_close(a.grad(), Tensor<double>{{50.0, 70.0}, {150.0, 170.0}});
  check_close(c.grad(), of_shape({2, 1}, {30.0, 80.0}));
}

BOOST_AUTO_TEST_CASE(concat_round_trip_on_nchw_channels) {
  // Inception-style: three branches joined on the channel axis; seeding backward with the output
  // itself hands each branch back exactly its own values.
  std::vector<V> xs;
  for (std::size_t c : {1u, 3u, 2u}) {
    Tensor<double> t = empty_tensor<double>({2, c, 3, 2});
    for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = double(c * 100 + i);
    xs.push_back(leaf(t));
  }
  V y = concat(xs, 1);
  BOOST_TEST(y.shape() == (Shape{2, 6, 3, 2}));
  BOOST_TEST(y.value()(1, 0, 2, 1) == xs[0].value()(1, 0, 2, 1));
  BOOST_TEST(y.value()(1, 3, 0, 0) == xs[1].value()(1, 2, 0, 0));
  BOOST_TEST(y.value()(0, 5, 1, 1) == xs[2].value()(0, 1, 1, 1));
  y.backward(y.value());
  for (const V& x : xs) check_close(x.grad(), x.value());
}

BOOST_AUTO_TEST_CASE(concat_skips_inputs_without_grad) {
  V a = leaf({1.0, 2.0});
  V k({3.0}, false);
  V y = concat<double>({k, a}, 0);
  y.backward(Tensor<double>{5.0, 6.0, 7.0});
  check_close(a.grad(), Tensor<double>{6.0, 7.0});
  BOOST_TEST(!k.has_grad());
}

BOOST_AUTO_TEST_CASE(concat_errors_name_the_op_axis_and_every_shape) {
  V a = leaf(filled_tensor<double>({2, 3, 4, 4}, 1.0));
  V b = leaf(filled_tensor<double>({2, 5, 3, 4}, 1.0));
  V c = leaf(filled_tensor<double>({2, 1, 4, 4}, 1.0));
  std::string msg = error_of([&] { concat<double>({a, c, b}, 1); });
  BOOST_TEST(contains(msg, "concat"));
  BOOST_TEST(contains(msg, "axis 1"));
  BOOST_TEST(contains(msg, "[2,3,4,4]"));
  BOOST_TEST(contains(msg, "[2,1,4,4]"));
  BOOST_TEST(contains(msg, "[2,5,3,4]"));

  msg = error_of([&] { concat<double>({a, c}, 4); });
  BOOST_TEST(contains(msg, "concat"));
  BOOST_TEST(contains(msg, "axis 4"));
  BOOST_TEST(contains(msg, "[2,3,4,4]"));

  msg = error_of([&] { concat<double>({a, leaf(filled_tensor<double>({2, 3, 4}, 1.0))}, 0); });
  BOOST_TEST(contains(msg, "concat"));
  BOOST_TEST(contains(msg, "[2,3,4]"));

  msg = error_of([] { concat(std::vector<V>{}, 0); });
  BOOST_TEST(contains(msg, "concat"));
  BOOST_TEST(contains(msg, "empty"));
}
