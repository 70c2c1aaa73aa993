#include "xgrad/runtime.hpp"

#include <cblas.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace xgrad {

std::string preferred_blas_core() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "SkylakeX";
  if (__builtin_cpu_supports("avx2")) return "Haswell";
#endif
  return "";
}

void setup_process(int /*argc*/, char** argv) {
  // Keep freed large blocks in the heap: otherwise glibc returns each step's big tensors to the
  // OS and faults them in again (about 1.3 µs a page here), which made a concat backward 5x slower.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (std::getenv("XGRAD_SETUP_REEXEC") != nullptr) return;  // already re-executed once
  bool changed = false;
  const auto set_if_unset = [&changed](const char* name, const std::string& value) {
    if (std::getenv(name) != nullptr || value.empty()) return;
    setenv(name, value.c_str(), 1);
    changed = true;
  };
  set_if_unset("OPENBLAS_CORETYPE", preferred_blas_core());
  set_if_unset("OPENBLAS_NUM_THREADS", "1");
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) set_if_unset("GOMP_SPINCOUNT", "1000");
  if (!changed) return;
  setenv("XGRAD_SETUP_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  // execv only returns on failure: run on with the libraries' defaults.
}

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

void set_num_threads(int threads) {
  openblas_set_num_threads(1);
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::string runtime_banner() {
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  return "xgrad: BLAS core " + blas_core_name() + " (OPENBLAS_CORETYPE=" + (env ? env : "unset") +
         "), OpenBLAS threads " + std::to_string(openblas_get_num_threads()) + ", OpenMP threads " +
         std::to_string(num_threads());
}

}  // namespace xgrad
