// The process runtime: flush-to-zero, which setup_process() turns on, the banner, and the CPUs a
// program that setup_process() re-executes may run on.
#define BOOST_TEST_MODULE runtime
#include <boost/test/unit_test.hpp>

#include <sched.h>
#include <stdio.h>
#include <unistd.h>

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

namespace {

const std::string kBenchModels = std::string(XGRAD_BINARY_DIR) + "/bench/bench_models";

// bench_models is built with the benchmarks (XGRAD_BUILD_BENCH, on by default).
boost::test_tools::assertion_result have_bench_models(boost::unit_test::test_unit_id) {
  return access(kBenchModels.c_str(), X_OK) == 0;
}

}  // namespace

// With OMP_PROC_BIND set, libgomp binds the first thread to one CPU before main(), and a program
// that setup_process() re-executes used to inherit that one CPU as all it could use: both OpenMP
// threads then took turns on it (2-thread training 2.2x slower on the 2-vCPU EPYC). The banner
// says how many CPUs the re-executed bench_models may run on; it must be as many as this test may.
// (With OPENBLAS_CORETYPE unset, setup_process() re-executes on any x86 CPU with AVX2.)
BOOST_AUTO_TEST_CASE(a_reexecuted_program_keeps_every_cpu_when_threads_are_bound,
                     *boost::unit_test::precondition(have_bench_models)) {
  cpu_set_t own;
  BOOST_REQUIRE(sched_getaffinity(0, sizeof own, &own) == 0);
  const int cpus = CPU_COUNT(&own);
  const std::string expected = " on " + std::to_string(cpus) + (cpus == 1 ? " CPU " : " CPUs ");
  for (const char* bind : {"true", "close", "spread"}) {
    const std::string command =
        "env -u OPENBLAS_CORETYPE -u XGRAD_SETUP_REEXEC OMP_PROC_BIND=" + std::string(bind) + " " +
        kBenchModels + " --banner --threads 2 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    BOOST_REQUIRE(pipe != nullptr);
    std::string banner;
    char buffer[512];
    while (fgets(buffer, sizeof buffer, pipe) != nullptr) banner += buffer;
    BOOST_TEST(pclose(pipe) == 0, command);
    BOOST_TEST(banner.find(expected) != std::string::npos,
               "OMP_PROC_BIND=" << bind << ": expected" << expected << "in " << banner);
  }
}
