// The process runtime: flush-to-zero, which setup_process() turns on.
#define BOOST_TEST_MODULE runtime
#include <boost/test/unit_test.hpp>

#include <cfloat>
#include <cstdlib>
#include <string>
#include <thread>

#include <xgrad/runtime.hpp>

using namespace xgrad;

namespace {

// a·b computed at run time (volatile keeps the compiler from folding it).
float product(float a, float b) {
  volatile float va = a, vb = b;
  return va * vb;
}

}  // namespace

BOOST_AUTO_TEST_CASE(flush_to_zero_turns_denormal_results_into_zero) {
#if defined(__x86_64__) || defined(__i386__)
  BOOST_TEST(!flush_to_zero_enabled());  // a test process starts with IEEE defaults
  const float tiny = product(FLT_MIN, 0.25f);
  BOOST_TEST(tiny > 0.0f);  // a denormal, kept
  BOOST_TEST(tiny < FLT_MIN);
  enable_flush_to_zero();
  BOOST_TEST(flush_to_zero_enabled());
  BOOST_TEST(product(FLT_MIN, 0.25f) == 0.0f);        // FTZ: a denormal result becomes 0
  BOOST_TEST(product(tiny, 1.0f) == 0.0f);            // DAZ: a denormal input counts as 0
  BOOST_TEST(product(FLT_MIN, 2.0f) == 2 * FLT_MIN);  // normal numbers are untouched
  // Threads started afterwards (such as the OpenMP pool) inherit the setting.
  bool in_thread = false;
  std::thread([&] { in_thread = flush_to_zero_enabled(); }).join();
  BOOST_TEST(in_thread);
#else
  BOOST_TEST(!flush_to_zero_enabled());
#endif
}

BOOST_AUTO_TEST_CASE(banner_says_when_the_environment_sets_another_blas_core) {
  const char* old = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = old ? old : "";
  const std::string own = preferred_blas_core();
  const std::string note = "set in the environment; this CPU's own is ";
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  const std::string other = runtime_banner();
  BOOST_TEST(other.find("OPENBLAS_CORETYPE=Prescott") != std::string::npos, other);
  BOOST_TEST((other.find(note + own) != std::string::npos) == !own.empty(), other);
  if (!own.empty()) {
    setenv("OPENBLAS_CORETYPE", own.c_str(), 1);
    const std::string same = runtime_banner();
    BOOST_TEST(same.find(note) == std::string::npos, same);
  }
  if (old)
    setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
}
