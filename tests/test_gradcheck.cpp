#define BOOST_TEST_MODULE gradcheck
#include <boost/test/unit_test.hpp>

#include <sstream>

#include <xgrad/xgrad.hpp>

using namespace xgrad;
using V = Variable<double>;
using Vs = std::vector<V>;

namespace {

// y = x³ with a backward that is wrong at exactly one element: dx[1,2] is doubled.
struct WrongCubeNode final : Node<double> {
  const char* name() const override { return "wrong_cube"; }
  std::vector<Tensor<double>> backward(const Tensor<double>& g) override {
    const Tensor<double>& x = input_value(0);
    Tensor<double> dx = 3.0 * x * x * g;
    dx(1, 2) *= 2.0;
    return {dx};
  }
};

V wrong_cube(const V& x) {
  Tensor<double> y = x.value() * x.value() * x.value();
  return record<WrongCubeNode>(std::move(y), {x});
}

V sample(const Shape& shape, const char* name, std::uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  return V(uniform_init(0.5, 1.5)(shape, rng), true, name);
}

}  // namespace

BOOST_AUTO_TEST_CASE(correct_backward_passes_in_both_modes) {
  const auto fn = [](const Vs& in) { return mul(matmul(in[0], in[1]), in[2]); };
  const Vs inputs = {sample({3, 4}, "a", 1), sample({4, 2}, "b", 2), sample({3, 2}, "c", 3)};
  const GradcheckReport full = gradcheck(fn, inputs);
  BOOST_TEST(full.passed, full);
  BOOST_TEST(full.mode == "full-jacobian");
  BOOST_TEST(full.inputs[0].checked == 12u * 6u);

  GradcheckOptions projection;
  projection.full_jacobian_limit = 0;
  const GradcheckReport proj = gradcheck(fn, inputs, projection);
  BOOST_TEST(proj.passed, proj);
  BOOST_TEST(proj.mode == "projection");
  BOOST_TEST(proj.projections.size() == projection.projections);
  BOOST_TEST(proj.inputs[1].checked == 8u);
}

BOOST_AUTO_TEST_CASE(wrong_backward_is_reported_with_its_worst_element) {
  const auto fn = [](const Vs& in) { return wrong_cube(in[0]); };
  for (const std::size_t limit : {std::size_t(20000), std::size_t(0)}) {
    GradcheckOptions options;
    options.full_jacobian_limit = limit;
    const GradcheckReport r = gradcheck(fn, {sample({3, 4}, "x")}, options);
    BOOST_TEST(!r.passed);
    const InputReport& in = r.inputs.at(0);
    BOOST_TEST(in.failed == 1u);
    BOOST_REQUIRE(!in.worst.empty());
    BOOST_TEST(in.worst[0].input == "x");
    BOOST_TEST(in.worst[0].index == std::vector<std::size_t>({1, 2}),
               boost::test_tools::per_element());
    BOOST_TEST(in.worst[0].analytic == 2.0 * in.worst[0].numeric,
               boost::test_tools::tolerance(1e-6));
    const std::string text = r.str();
    BOOST_TEST(text.find("FAILED") != std::string::npos);
    BOOST_TEST(text.find("x[1,2]") != std::string::npos);
    BOOST_TEST(in.failed_fraction() > 0.0);
  }
}

BOOST_AUTO_TEST_CASE(kinks_are_reported_as_non_differentiable_not_failures) {
  // relu at exactly 0 is a kink: the one-sided differences disagree there.
  V x(Tensor<double>{-0.5, 0.0, 0.7}, true, "x");
  const GradcheckReport r = gradcheck([](const Vs& in) { return relu(in[0]); }, {x});
  BOOST_TEST(r.passed, r);
  BOOST_TEST(r.inputs[0].nondifferentiable >= 1u);
  BOOST_REQUIRE(!r.nondifferentiable.empty());
  BOOST_TEST(r.nondifferentiable[0].index == std::vector<std::size_t>({1}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(upstream_gradient_is_not_all_ones) {
  // Σ_i softmax-like normalisation: y = x / Σx has J^T·1 = 0, which all-ones seeds can't test.
  // A wrong backward that drops the cross term passes with ones, and must fail here.
  struct WrongNormalizeNode final : Node<double> {
    const char* name() const override { return "wrong_normalize"; }
    std::vector<Tensor<double>> backward(const Tensor<double>& g) override {
      const Tensor<double>& x = input_value(0);
      const double s = xt::sum(x)();
      Tensor<double> dx = g / s;  // misses -Σ(g·x)/s²
      return {dx};
    }
  };
  const auto fn = [](const Vs& in) {
    const double s = xt::sum(in[0].value())();
    Tensor<double> y = in[0].value() / s;
    return record<WrongNormalizeNode>(std::move(y), {in[0]});
  };
  GradcheckOptions options;
  options.full_jacobian_limit = 0;  // projection mode uses a single random upstream u
  const GradcheckReport r = gradcheck(fn, {sample({6}, "x")}, options);
  BOOST_TEST(!r.passed);
}

BOOST_AUTO_TEST_CASE(report_leaves_callers_inputs_untouched_and_catches_throws) {
  V x = sample({2, 2}, "x");
  const Tensor<double> before = x.value();
  gradcheck([](const Vs& in) { return mul(in[0], in[0]); }, {x});
  BOOST_TEST(!x.has_grad());
  BOOST_TEST(x.value() == before);
  const GradcheckReport r =
      gradcheck([](const Vs& in) { return matmul(in[0], in[0]); }, {sample({2, 3}, "x")});
  BOOST_TEST(!r.passed);
  BOOST_TEST(r.error.find("matmul") != std::string::npos);
  std::ostringstream os;
  os << r;
  BOOST_TEST(os.str().find("error") != std::string::npos);
}
