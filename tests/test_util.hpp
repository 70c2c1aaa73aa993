// Helpers shared by the Boost.Test suites.
#pragma once

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <xgrad/runtime.hpp>
#include <xgrad/tensor.hpp>

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

}  // namespace xgrad::testing
