// Helpers shared by the Boost.Test suites.
#pragma once

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xgrad/runtime.hpp>
#include <xgrad/xgrad.hpp>

namespace xgrad::testing {

/// Checks equal shapes and every element within a relative/absolute tolerance `tol`.
template <class T>
void check_close(const Tensor<T>& a, const Tensor<T>& b, double tol = 1e-12) {
  BOOST_REQUIRE_MESSAGE(shape_of(a) == shape_of(b),
                        "shapes " << shape_str(a) << " and " << shape_str(b));
  for (std::size_t i = 0; i < a.size(); ++i)
    BOOST_TEST(double(a.data()[i]) == double(b.data()[i]), boost::test_tools::tolerance(tol));
}

/// The message of the xgrad::Error `f` throws, or "" when it throws none.
template <class Fn>
std::string error_of(Fn f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// True when `f` throws an xgrad::Error whose message contains every one of `parts`.
template <class Fn>
bool throws_with(Fn f, const std::vector<std::string>& parts) {
  const std::string msg = error_of(f);
  if (msg.empty()) {
    BOOST_TEST_MESSAGE("no xgrad::Error thrown");
    return false;
  }
  for (const std::string& s : parts)
    if (!contains(msg, s)) {
      BOOST_TEST_MESSAGE("message lacks '" << s << "': " << msg);
      return false;
    }
  return true;
}

template <class T>
bool all_finite(const Tensor<T>& t) {
  for (const T v : t)
    if (!std::isfinite(v)) return false;
  return true;
}

/// Uniform values in [-1, 1].
inline Tensor<double> random_tensor(const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  Tensor<double> t = empty_tensor<double>(shape);
  for (double& v : t) v = dist(rng);
  return t;
}

/// A tensor of `shape` holding `values` in row-major order.
inline Tensor<double> make(const Shape& shape, const std::vector<double>& values) {
  Tensor<double> t = empty_tensor<double>(shape);
  BOOST_REQUIRE_EQUAL(values.size(), t.size());
  std::copy(values.begin(), values.end(), t.begin());
  return t;
}

inline double max_abs_diff(const Tensor<double>& a, const Tensor<double>& b) {
  BOOST_REQUIRE(shape_of(a) == shape_of(b));
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a.data()[i] - b.data()[i]));
  return m;
}

/// n OpenMP threads for one test (set_num_threads); the previous count is restored on leaving,
/// also when a check throws.
struct Threads {
  int previous = num_threads();
  explicit Threads(int n) { set_num_threads(n); }
  ~Threads() { set_num_threads(previous); }
  Threads(const Threads&) = delete;
  Threads& operator=(const Threads&) = delete;
};

/// A convolution's input and weight shapes, parameters and whether it has a bias.
struct FusedCase {
  const char* label;
  Shape x, w;
  Conv2DParams conv;
  bool bias;
};

/// Checks a fused op against the ops it fuses, in float, for each case on 1 and 2 threads: y =
/// f(c, x, w, b) (b undefined without bias), and the gradients of x, w and b for a random upstream
/// gradient, must have the same bits from `fused` as from `separate`, and so must y from `fused`
/// with no graph recorded. Returns how many (case, threads) pairs it compared.
template <class Fused, class Separate>
int check_same_bits_as_separate_ops(const std::vector<FusedCase>& cases, const Fused& fused,
                                    const Separate& separate, std::mt19937_64& rng) {
  const auto run = [](const auto& f, const FusedCase& c, const Tensor<float>& x,
                      const Tensor<float>& w, const Tensor<float>& b, const Tensor<float>& g) {
    Variable<float> xv(x, true), wv(w, true), bv;
    if (c.bias) bv = Variable<float>(b, true);
    const Variable<float> y = f(c, xv, wv, bv);
    y.backward(g);
    std::vector<Tensor<float>> out{y.value(), xv.grad(), wv.grad()};
    if (c.bias) out.push_back(bv.grad());
    return out;
  };
  const auto same_bits = [](const Tensor<float>& a, const Tensor<float>& b) {
    return shape_of(a) == shape_of(b) &&
           std::equal(a.begin(), a.end(), b.begin(),
                      [](float u, float v) { return std::memcmp(&u, &v, sizeof u) == 0; });
  };
  int compared = 0;
  for (const FusedCase& c : cases)
    for (int threads : {1, 2}) {
      BOOST_TEST_CONTEXT(c.label << ", " << threads << " threads") {
        const Threads use(threads);
        const Tensor<float> x = xt::cast<float>(random_tensor(c.x, rng));
        const Tensor<float> w = xt::cast<float>(random_tensor(c.w, rng));
        const Tensor<float> b = xt::cast<float>(random_tensor({c.w[0]}, rng));
        const Variable<float> bias = c.bias ? Variable<float>(b) : Variable<float>();
        const Shape y_shape = separate(c, Variable<float>(x), Variable<float>(w), bias).shape();
        const Tensor<float> g = xt::cast<float>(random_tensor(y_shape, rng));
        const auto want = run(separate, c, x, w, b, g);
        const auto got = run(fused, c, x, w, b, g);
        BOOST_REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < got.size(); ++i)
          BOOST_TEST(same_bits(got[i], want[i]), "output " << i << " (y, dx, dw, db) differs");
        NoGradGuard no_grad;
        BOOST_TEST(
            same_bits(fused(c, Variable<float>(x), Variable<float>(w), bias).value(), want[0]),
            "y with no graph recorded differs");
        ++compared;
      }
    }
  return compared;
}

}  // namespace xgrad::testing
