#define BOOST_TEST_MODULE engine
#include <boost/test/unit_test.hpp>

#include <algorithm>

#include "test_util.hpp"

#include <xgrad/xgrad.hpp>

using namespace xgrad;
using xgrad::testing::check_close;
using V = Variable<double>;

namespace {
V leaf(Tensor<double> t, const char* name) {
  return V(std::move(t), true, name);
}
V constant(Tensor<double> t) {
  return V(std::move(t), false);
}
}  // namespace

BOOST_AUTO_TEST_CASE(scalar_root_defaults_to_seed_one) {
  V x = leaf({1.0, 2.0, 3.0}, "x");
  V y = sum(mul(x, x));  // y = Σ x², dy/dx = 2x
  y.backward();
  check_close(x.grad(), Tensor<double>{2.0, 4.0, 6.0});
}

BOOST_AUTO_TEST_CASE(fan_out_accumulates) {
  V x = leaf({1.5, -2.0}, "x");
  // x used three times: y = Σ (x + x + x·c), dy/dx = 2 + c.
  V c = constant({3.0, 5.0});
  V y = sum(add(add(x, x), mul(x, c)));
  y.backward();
  check_close(x.grad(), Tensor<double>{5.0, 7.0});
}

BOOST_AUTO_TEST_CASE(diamond_graph) {
  // a -> b = a·a, c = relu(a) ; d = b + c ; dd/da = 2a + 1 (a > 0)
  V a = leaf({2.0, 0.5}, "a");
  V b = mul(a, a);
  V c = relu(a);
  V d = sum(add(b, c));
  d.backward();
  check_close(a.grad(), Tensor<double>{5.0, 2.0});
}

BOOST_AUTO_TEST_CASE(gradients_accumulate_across_backward_calls_and_zero_grad_clears) {
  V x = leaf({1.0, 2.0}, "x");
  sum(mul(x, x)).backward();
  sum(mul(x, x)).backward();
  check_close(x.grad(), Tensor<double>{4.0, 8.0});
  x.zero_grad();
  check_close(x.grad(), Tensor<double>{0.0, 0.0});
}

BOOST_AUTO_TEST_CASE(zero_grad_set_to_none_drops_the_gradient) {
  V x = leaf({1.0, 2.0}, "x");
  x.zero_grad(true);  // no gradient yet: a no-op
  BOOST_TEST(!x.has_grad());
  sum(mul(x, x)).backward();
  x.zero_grad(true);
  BOOST_TEST(!x.has_grad());
  BOOST_CHECK_EXCEPTION(x.grad(), Error, [](const Error& e) {
    const std::string m = e.what();
    return m.find("'x'") != std::string::npos && m.find("no gradient") != std::string::npos;
  });
  // The next backward stores its gradient: the same as after zero_grad(), not added to the last.
  V y = leaf({1.0, 2.0}, "y");
  sum(mul(y, y)).backward();
  y.zero_grad();
  sum(mul(x, mul(x, x))).backward();
  sum(mul(y, mul(y, y))).backward();
  check_close(x.grad(), Tensor<double>{3.0, 12.0});
  BOOST_TEST(std::equal(x.grad().begin(), x.grad().end(), y.grad().begin()));
}

BOOST_AUTO_TEST_CASE(non_scalar_root_needs_a_seed_of_its_shape) {
  V x = leaf({1.0, 2.0, 3.0}, "x");
  V y = mul(x, x);
  BOOST_CHECK_EXCEPTION(y.backward(), Error, [](const Error& e) {
    return std::string(e.what()).find("seed") != std::string::npos;
  });
  BOOST_CHECK_EXCEPTION(y.backward(Tensor<double>{1.0, 1.0}), Error, [](const Error& e) {
    const std::string m = e.what();
    return m.find("[2]") != std::string::npos && m.find("[3]") != std::string::npos;
  });
  y.backward(Tensor<double>{1.0, 0.5, -1.0});
  check_close(x.grad(), Tensor<double>{2.0, 2.0, -6.0});
}

BOOST_AUTO_TEST_CASE(second_backward_through_freed_graph_throws) {
  V x = leaf({1.0, 2.0}, "x");
  V y = sum(mul(x, x));
  y.backward();
  BOOST_CHECK_EXCEPTION(y.backward(), Error, [](const Error& e) {
    return std::string(e.what()).find("freed") != std::string::npos;
  });
}

BOOST_AUTO_TEST_CASE(retain_graph_allows_a_second_backward) {
  V x = leaf({1.0, 2.0}, "x");
  V y = sum(mul(x, x));
  y.backward(BackwardOptions{true});
  y.backward();
  check_close(x.grad(), Tensor<double>{4.0, 8.0});
  BOOST_CHECK_THROW(y.backward(), Error);
}

BOOST_AUTO_TEST_CASE(no_grad_guard_records_nothing) {
  V x = leaf({1.0, 2.0}, "x");
  {
    NoGradGuard guard;
    BOOST_TEST(!grad_enabled());
    { NoGradGuard nested; }
    BOOST_TEST(!grad_enabled());
    V y = mul(x, x);
    BOOST_TEST(!y.requires_grad());
    BOOST_TEST(y.grad_fn() == nullptr);
    BOOST_CHECK_THROW(sum(y).backward(), Error);
  }
  BOOST_TEST(grad_enabled());
  BOOST_TEST(mul(x, x).requires_grad());
}

BOOST_AUTO_TEST_CASE(ops_on_constants_record_nothing) {
  V a = constant({1.0, 2.0});
  V y = mul(a, a);
  BOOST_TEST(!y.requires_grad());
  BOOST_TEST(y.is_leaf());
}

BOOST_AUTO_TEST_CASE(detach_cuts_the_graph) {
  V x = leaf({3.0}, "x");
  V h = mul(x, x);
  V d = h.detach();
  BOOST_TEST(d.is_leaf());
  BOOST_TEST(!d.requires_grad());
  // y = h·detach(h): only one path carries gradient, dy/dx = 2x·h = 2·3·9.
  V y = sum(mul(h, d));
  y.backward();
  check_close(x.grad(), Tensor<double>{54.0});
  BOOST_TEST(!d.has_grad());
  V free_function = detach(h);
  BOOST_TEST(free_function.value()(0) == 9.0);
}

BOOST_AUTO_TEST_CASE(hooks_inspect_and_replace_gradients) {
  V x = leaf({1.0, 2.0}, "x");
  V h = mul(x, x);
  Tensor<double> seen;
  h.register_hook([&seen](Tensor<double>& g) { seen = g; });
  x.register_hook([](Tensor<double>& g) { g *= 10.0; });
  V y = sum(add(h, h));  // dy/dh = 2 (summed before the hook sees it), dy/dx = 4x
  y.backward();
  check_close(seen, Tensor<double>{2.0, 2.0});
  check_close(x.grad(), Tensor<double>{40.0, 80.0});
}

BOOST_AUTO_TEST_CASE(hook_changing_the_shape_throws) {
  V x = leaf({1.0, 2.0}, "x");
  x.register_hook([](Tensor<double>& g) { g = Tensor<double>{1.0}; });
  BOOST_CHECK_THROW(sum(mul(x, x)).backward(), Error);
  V c = constant({1.0});
  BOOST_CHECK_THROW(c.register_hook([](Tensor<double>&) {}), Error);
}

BOOST_AUTO_TEST_CASE(broadcast_gradients_are_reduced_to_input_shape) {
  V a = leaf(Tensor<double>{{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}, "a");
  V b = leaf(Tensor<double>{10.0, 20.0, 30.0}, "b");
  sum(mul(a, b)).backward();
  check_close(b.grad(), Tensor<double>{5.0, 7.0, 9.0});
  check_close(a.grad(), Tensor<double>{{10.0, 20.0, 30.0}, {10.0, 20.0, 30.0}});
}

BOOST_AUTO_TEST_CASE(backward_order_is_reverse_topological_by_sequence) {
  // Record the order in which nodes run through hooks on their outputs.
  V x = leaf({1.0}, "x");
  std::vector<int> order;
  V a = mul(x, x);
  a.register_hook([&](Tensor<double>&) { order.push_back(1); });
  V b = add(x, x);
  b.register_hook([&](Tensor<double>&) { order.push_back(2); });
  V c = add(a, b);
  c.register_hook([&](Tensor<double>&) { order.push_back(3); });
  sum(c).backward();
  // c runs first; a and b are both ready after it, and the later-created b goes first.
  BOOST_TEST(order == std::vector<int>({3, 2, 1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(long_chain_runs_and_is_destroyed_without_recursion) {
  const int n = 100000;
  V x = leaf({1.0}, "x");
  V one = constant({1.0});
  {
    V y = x;
    for (int i = 0; i < n; ++i) y = add(y, one);
    BOOST_TEST(y.value()(0) == 1.0 + n);
    y.backward(Tensor<double>{1.0}, BackwardOptions{true});
    BOOST_TEST(x.grad()(0) == 1.0);
  }  // y and its retained 100k-node graph are destroyed here
  {
    V y = x;
    for (int i = 0; i < n; ++i) y = mul(y, one);
  }  // destroyed without ever running backward
  BOOST_TEST(x.grad()(0) == 1.0);
}

BOOST_AUTO_TEST_CASE(leaf_root_and_errors_on_empty_variables) {
  V x = leaf({2.0}, "x");
  x.backward();
  BOOST_TEST(x.grad()(0) == 1.0);
  V empty;
  BOOST_CHECK_THROW(empty.value(), Error);
  BOOST_CHECK_THROW(constant({1.0}).grad(), Error);
  V h = mul(x, x);
  BOOST_CHECK_THROW(h.set_requires_grad(false), Error);
}

BOOST_AUTO_TEST_CASE(float_instantiation_runs_the_same_code) {
  Variable<float> x(Tensor<float>{1.0f, -2.0f, 3.0f}, true, "x");
  sum(relu(mul(x, x))).backward();
  BOOST_TEST(x.grad()(1) == -4.0f);
}
