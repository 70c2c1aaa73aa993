// Sweeps the whole op registry through gradcheck (double), and checks that the float
// instantiation agrees with the double one.
#define BOOST_TEST_MODULE gradcheck_all
#include <boost/test/unit_test.hpp>

#include <cmath>

#include <xgrad/xgrad.hpp>

using namespace xgrad;

BOOST_AUTO_TEST_CASE(registry_is_not_empty) {
  BOOST_TEST(op_registry().size() >= 6u);
}

BOOST_AUTO_TEST_CASE(every_op_passes_gradcheck) {
  std::size_t cases = 0;
  for (const OpInfo& op : op_registry()) {
    BOOST_TEST(!op.cases.empty(), op.name << " has no sample cases");
    for (const OpCase& c : op.cases) {
      BOOST_TEST_CONTEXT(op.name << "/" << c.label) {
        const GradcheckReport r = gradcheck(c.fn64, make_sample_inputs(c, 42), c.options);
        BOOST_TEST(r.passed, op.name << "/" << c.label << "\n" << r);
        std::size_t checked = 0;
        for (const InputReport& in : r.inputs) checked += in.checked;
        BOOST_TEST(checked > 0u, op.name << "/" << c.label << " checked nothing");
        ++cases;
      }
    }
  }
  BOOST_TEST_MESSAGE("gradchecked " << cases << " cases");
}

namespace {

double relative_error(const Tensor<float>& a32, const Tensor<double>& a64) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a64.size(); ++i) {
    const double d = double(a32.data()[i]) - a64.data()[i];
    diff += d * d;
    norm += a64.data()[i] * a64.data()[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

}  // namespace

BOOST_AUTO_TEST_CASE(float_agrees_with_double) {
  for (const OpInfo& op : op_registry()) {
    for (const OpCase& c : op.cases) {
      BOOST_TEST_CONTEXT(op.name << "/" << c.label) {
        const std::vector<Variable<double>> in64 = make_sample_inputs(c, 7);
        std::vector<Variable<float>> in32;
        for (const Variable<double>& v : in64)
          in32.emplace_back(xt::cast<float>(v.value()), v.requires_grad(), v.name());
        const Variable<double> y64 = c.fn64(in64);
        const Variable<float> y32 = c.fn32(in32);
        BOOST_REQUIRE(y32.shape() == y64.shape());
        BOOST_TEST(relative_error(y32.value(), y64.value()) < 1e-5);
        // Same random upstream gradient for both precisions.
        std::mt19937_64 rng(3);
        const Tensor<double> seed64 = uniform_init()(y64.shape(), rng);
        const Tensor<float> seed32 = xt::cast<float>(seed64);
        y64.backward(seed64);
        y32.backward(seed32);
        for (std::size_t i = 0; i < in64.size(); ++i) {
          if (!in64[i].requires_grad() || !in64[i].has_grad()) continue;
          BOOST_TEST(relative_error(in32[i].grad(), in64[i].grad()) < 1e-5,
                     "gradient of " << in64[i].name());
        }
      }
    }
  }
}
