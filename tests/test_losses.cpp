// softmax, log_softmax, cross_entropy and mse_loss: values worked on paper, stability at ±1e4,
// error messages.
#define BOOST_TEST_MODULE losses
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <cmath>
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
const double ln2 = std::log(2.0);
const double ln3 = std::log(3.0);

}  // namespace

// ---------------------------------------------------------------------------------- softmax

BOOST_AUTO_TEST_CASE(softmax_values_worked_on_paper) {
  V x = leaf({{0.0, ln2}, {ln3, 0.0}});
  V y = softmax(x);
  check_close(y.value(), Tensor<double>{{1.0 / 3, 2.0 / 3}, {0.75, 0.25}});
  // dx = y ⊙ (g - Σ g⊙y): row 0 with g = [1, 0]: Σ = 1/3, dx = [1/3·2/3, 2/3·(-1/3)].
  y.backward(Tensor<double>{{1.0, 0.0}, {2.0, 2.0}});
  check_close(x.grad(), Tensor<double>{{2.0 / 9, -2.0 / 9}, {0.0, 0.0}});
}

BOOST_AUTO_TEST_CASE(softmax_is_shift_invariant_and_stable) {
  V x = leaf({{1e4, -1e4, 0.0}, {1000.0, 1000.0 + ln2, -1000.0}});
  V y = softmax(x);
  BOOST_TEST(all_finite(y.value()));
  check_close(y.value(), Tensor<double>{{1.0, 0.0, 0.0}, {1.0 / 3, 2.0 / 3, 0.0}}, 1e-9);
  y.backward(Tensor<double>{{0.5, -1.0, 2.0}, {1.0, -1.0, 3.0}});
  BOOST_TEST(all_finite(x.grad()));

  F xf(Tensor<float>{{1e4f, -1e4f, 0.0f}, {-1e4f, -1e4f, -1e4f}}, true);
  F yf = softmax(xf);
  BOOST_TEST(all_finite(yf.value()));
  BOOST_TEST(yf.value()(0, 0) == 1.0f);
  BOOST_TEST(yf.value()(1, 1) == 1.0f / 3, boost::test_tools::tolerance(1e-6f));
  yf.backward(Tensor<float>{{1.0f, 2.0f, 3.0f}, {1.0f, 2.0f, 3.0f}});
  BOOST_TEST(all_finite(xf.grad()));
}

BOOST_AUTO_TEST_CASE(softmax_needs_rank_2) {
  std::string msg = error_of([] { softmax(V(Tensor<double>{1.0, 2.0, 3.0})); });
  BOOST_TEST(contains(msg, "softmax"));
  BOOST_TEST(contains(msg, "[3]"));
  msg = error_of([] { softmax(V(filled_tensor<double>({2, 3, 4}, 0.0))); });
  BOOST_TEST(contains(msg, "[2,3,4]"));
}

// ---------------------------------------------------------------------------------- log_softmax

BOOST_AUTO_TEST_CASE(log_softmax_values_worked_on_paper) {
  V x = leaf({{0.0, ln2}});
  V y = log_softmax(x);
  check_close(y.value(), Tensor<double>{{std::log(1.0 / 3), std::log(2.0 / 3)}});
  // dx = g - softmax·Σg: g = [1, 0] gives [1 - 1/3, -2/3].
  y.backward(Tensor<double>{{1.0, 0.0}});
  check_close(x.grad(), Tensor<double>{{2.0 / 3, -2.0 / 3}});
}

BOOST_AUTO_TEST_CASE(log_softmax_matches_log_of_softmax) {
  Tensor<double> t = {{0.3, -1.2, 2.5, 0.0}, {-0.7, 0.1, 0.9, -2.0}, {1.0, 1.0, 1.0, 1.5}};
  Tensor<double> expected = xt::log(softmax(V(t)).value());
  check_close(log_softmax(V(t)).value(), expected, 1e-12);
}

BOOST_AUTO_TEST_CASE(log_softmax_is_stable_at_1e4) {
  V x = leaf({{1e4, -1e4}, {-1e4, -1e4}});
  V y = log_softmax(x);
  BOOST_TEST(all_finite(y.value()));
  check_close(y.value(), Tensor<double>{{0.0, -2e4}, {-ln2, -ln2}}, 1e-12);
  y.backward(Tensor<double>{{1.0, 2.0}, {3.0, -1.0}});
  BOOST_TEST(all_finite(x.grad()));
  check_close(x.grad(), Tensor<double>{{1.0 - 3.0, 2.0}, {3.0 - 1.0, -1.0 - 1.0}}, 1e-12);

  F xf(Tensor<float>{{1e4f, -1e4f, 0.0f}}, true);
  F yf = log_softmax(xf);
  BOOST_TEST(all_finite(yf.value()));
  BOOST_TEST(yf.value()(0, 1) == -2e4f);
}

BOOST_AUTO_TEST_CASE(log_softmax_needs_rank_2) {
  const std::string msg = error_of([] { log_softmax(V(filled_tensor<double>({2, 1, 3}, 1.0))); });
  BOOST_TEST(contains(msg, "log_softmax"));
  BOOST_TEST(contains(msg, "[2,1,3]"));
}

// ---------------------------------------------------------------------------------- cross_entropy

BOOST_AUTO_TEST_CASE(cross_entropy_worked_on_paper) {
  // Row 0: softmax [1/3, 2/3], label 1: -log(2/3) = log 1.5.
  // Row 1: softmax [3/4, 1/4], label 0: -log(3/4) = log(4/3).
  // Mean: (log 1.5 + log 4/3) / 2 = log(2) / 2.
  V x = leaf({{0.0, ln2}, {ln3, 0.0}});
  V loss = cross_entropy(x, {1, 0});
  BOOST_TEST(loss.shape().empty());
  BOOST_TEST(loss.item() == ln2 / 2, boost::test_tools::tolerance(1e-12));
  // d logits = (softmax - onehot) / N.
  loss.backward();
  check_close(x.grad(), Tensor<double>{{1.0 / 6, -1.0 / 6}, {-1.0 / 8, 1.0 / 8}});
}

BOOST_AUTO_TEST_CASE(cross_entropy_scales_with_the_upstream_gradient) {
  V x = leaf({{0.0, ln2}, {ln3, 0.0}});
  cross_entropy(x, {1, 0}).backward(Tensor<double>(4.0));
  check_close(x.grad(), Tensor<double>{{4.0 / 6, -4.0 / 6}, {-0.5, 0.5}});
}

BOOST_AUTO_TEST_CASE(cross_entropy_equals_nll_of_log_softmax) {
  Tensor<double> t = {{0.3, -1.2, 2.5, 0.0}, {-0.7, 0.1, 0.9, -2.0}, {1.0, 1.0, 1.0, 1.5}};
  const std::vector<int> labels = {2, 0, 3};
  const Tensor<double> ls = log_softmax(V(t)).value();
  const double expected = -(ls(0, 2) + ls(1, 0) + ls(2, 3)) / 3;
  BOOST_TEST(cross_entropy(V(t), labels).item() == expected, boost::test_tools::tolerance(1e-12));
  F tf(xt::cast<float>(t));
  BOOST_TEST(double(cross_entropy(tf, labels).item()) == expected,
             boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(cross_entropy_is_stable_at_1e4) {
  // Row 0 is confidently wrong (loss 2e4), row 1 confidently right (loss 0): mean 1e4.
  const std::vector<int> labels = {1, 1};
  V x = leaf({{1e4, -1e4, 0.0}, {-1e4, 1e4, 0.0}});
  V loss = cross_entropy(x, labels);
  BOOST_TEST(std::isfinite(loss.item()));
  BOOST_TEST(loss.item() == 1e4, boost::test_tools::tolerance(1e-12));
  loss.backward();
  BOOST_TEST(all_finite(x.grad()));
  check_close(x.grad(), Tensor<double>{{0.5, -0.5, 0.0}, {0.0, 0.0, 0.0}}, 1e-12);

  F xf(Tensor<float>{{1e4f, -1e4f, 0.0f}, {-1e4f, 1e4f, 0.0f}}, true);
  F lf = cross_entropy(xf, labels);
  BOOST_TEST(std::isfinite(lf.item()));
  BOOST_TEST(lf.item() == 1e4f, boost::test_tools::tolerance(1e-6f));
  lf.backward();
  BOOST_TEST(all_finite(xf.grad()));
  BOOST_TEST(xf.grad()(0, 0) == 0.5f);
  BOOST_TEST(xf.grad()(0, 1) == -0.5f);
  BOOST_TEST(xf.grad()(1, 1) == 0.0f);
}

BOOST_AUTO_TEST_CASE(cross_entropy_label_errors) {
  V x = leaf(filled_tensor<double>({2, 3}, 0.5));
  std::string msg = error_of([&] { cross_entropy(x, {0, -1}); });
  BOOST_TEST(contains(msg, "cross_entropy"));
  BOOST_TEST(contains(msg, "label -1"));
  BOOST_TEST(contains(msg, "position 1"));
  BOOST_TEST(contains(msg, "[2,3]"));

  msg = error_of([&] { cross_entropy(x, {3, 0}); });
  BOOST_TEST(contains(msg, "cross_entropy"));
  BOOST_TEST(contains(msg, "label 3"));
  BOOST_TEST(contains(msg, "position 0"));
  BOOST_TEST(contains(msg, "[2,3]"));

  msg = error_of([&] { cross_entropy(x, {0, 1, 2}); });
  BOOST_TEST(contains(msg, "cross_entropy"));
  BOOST_TEST(contains(msg, "3 labels"));
  BOOST_TEST(contains(msg, "[2,3]"));

  msg = error_of([&] { cross_entropy(V(Tensor<double>{1.0, 2.0}), {0}); });
  BOOST_TEST(contains(msg, "cross_entropy"));
  BOOST_TEST(contains(msg, "[2]"));
}

// ---------------------------------------------------------------------------------- mse_loss

BOOST_AUTO_TEST_CASE(mse_loss_values_and_both_gradients) {
  V pred = leaf({1.0, 2.0, 3.0});
  V target = leaf({1.0, 0.0, 0.0});
  V loss = mse_loss(pred, target);
  BOOST_TEST(loss.item() == 13.0 / 3, boost::test_tools::tolerance(1e-12));
  loss.backward();
  // 2(pred - target)/n
  check_close(pred.grad(), Tensor<double>{0.0, 4.0 / 3, 2.0});
  check_close(target.grad(), Tensor<double>{0.0, -4.0 / 3, -2.0});
}

BOOST_AUTO_TEST_CASE(mse_loss_with_a_constant_target) {
  V pred = leaf({{0.5, -0.5}, {1.5, 2.0}});
  V target({{0.0, 0.0}, {1.0, 1.0}}, false);
  V loss = mse_loss(pred, target);
  BOOST_TEST(loss.item() == (0.25 + 0.25 + 0.25 + 1.0) / 4, boost::test_tools::tolerance(1e-12));
  loss.backward();
  check_close(pred.grad(), Tensor<double>{{0.25, -0.25}, {0.25, 0.5}});
  BOOST_TEST(!target.has_grad());
}

BOOST_AUTO_TEST_CASE(mse_loss_shape_mismatch_names_both_shapes) {
  V pred = leaf(filled_tensor<double>({3}, 1.0));
  V target = leaf(filled_tensor<double>({3, 1}, 1.0));
  const std::string msg = error_of([&] { mse_loss(pred, target); });
  BOOST_TEST(contains(msg, "mse_loss"));
  BOOST_TEST(contains(msg, "[3]"));
  BOOST_TEST(contains(msg, "[3,1]"));
}
