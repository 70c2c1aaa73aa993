// Helpers shared by the Boost.Test suites.
#pragma once

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

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

}  // namespace xgrad::testing
