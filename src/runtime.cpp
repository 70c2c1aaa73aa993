#include "xgrad/runtime.hpp"

#include <cblas.h>
#include <malloc.h>
#include <sched.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "shard_pool.hpp"

namespace xgrad {

std::string preferred_blas_core() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "SkylakeX";
  if (__builtin_cpu_supports("avx2")) return "Haswell";
#endif
  return "";
}

void enable_flush_to_zero() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_setcsr(_mm_getcsr() | 0x8040);  // FTZ (bit 15) and DAZ (bit 6)
#endif
}

bool flush_to_zero_enabled() {
#if defined(__x86_64__) || defined(__i386__)
  return (_mm_getcsr() & 0x8040) == 0x8040;
#else
  return false;
#endif
}

namespace {

// The "cpu" line of /proc/stat: jiffies spent idle (idle + iowait) and in total, over all CPUs.
bool read_cpu_times(double& idle, double& total) {
  std::ifstream file("/proc/stat");
  std::string label;
  if (!(file >> label) || label != "cpu") return false;
  idle = total = 0;
  double v = 0;
  for (int field = 0; field < 8 && file >> v; ++field) {
    total += v;
    if (field == 3 || field == 4) idle += v;
  }
  return total > 0;
}

}  // namespace

double busy_cores() {
  // This process's own CPU time is left out: before setup_process() re-executes, OpenBLAS's
  // freshly started thread pool spins for a while.
  const auto own_seconds = [] {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
  };
  double idle0 = 0, total0 = 0, idle1 = 0, total1 = 0;
  const double own0 = own_seconds();
  if (!read_cpu_times(idle0, total0)) return 0;
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  if (!read_cpu_times(idle1, total1) || total1 <= total0) return 0;
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double own = own_seconds() - own0;
  const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  const double busy = double(cores) * (1.0 - (idle1 - idle0) / (total1 - total0));
  return std::max(0.0, busy - own / wall);
}

namespace {

// With OMP_PROC_BIND or OMP_PLACES set, libgomp binds the initial thread to the first place as it
// loads, before main(). A program re-executed from that thread inherits that one place as its whole
// affinity, and its libgomp then puts every thread there: on the 2-vCPU EPYC, 2-thread LeNet-5
// training ran at 31k img/s instead of 68k, the second thread waiting about 560 µs a step for its
// turn on the CPU. So the re-executed program gets back the CPUs of all the places, which are the
// ones libgomp started from.
void allow_every_place() {
#ifdef _OPENMP
  if (std::getenv("OMP_PROC_BIND") == nullptr && std::getenv("OMP_PLACES") == nullptr) return;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (int place = 0; place < omp_get_num_places(); ++place) detail::add_place_cpus(place, cpus);
  if (CPU_COUNT(&cpus) > 0) sched_setaffinity(0, sizeof cpus, &cpus);
#endif
}

}  // namespace

void setup_process(int /*argc*/, char** argv) {
  enable_flush_to_zero();
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
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr)
    set_if_unset("GOMP_SPINCOUNT", busy_cores() < 0.5 ? "40000" : "1000");  // 200 ms to decide
  if (!changed) return;
  setenv("XGRAD_SETUP_REEXEC", "1", 1);
  allow_every_place();
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
  // A sharded region's threads may be the shard pool's rather than OpenMP's (shard_pool.hpp).
  if (detail::in_shard_region()) return 1;
#ifdef _OPENMP
  // Inside a region at the deepest active level a nested region gets one thread, but
  // omp_get_max_threads() still answers with the top level's count.
  if (omp_get_active_level() >= omp_get_max_active_levels()) return 1;
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::string runtime_banner() {
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const std::string waiting = wait != nullptr   ? std::string("OMP_WAIT_POLICY=") + wait
                              : spin != nullptr ? std::string("GOMP_SPINCOUNT=") + spin
                                                : std::string("libgomp default");
  // A core set in the environment is kept (setup_process() only fills in what is unset); say so
  // where it is not this CPU's own, which may be half as fast (Haswell's sgemm on an AVX-512 EPYC).
  const std::string preferred = preferred_blas_core();
  const bool other_core =
      env != nullptr && !preferred.empty() && strcasecmp(env, preferred.c_str()) != 0;
#ifdef _OPENMP
  const int cpus = omp_get_num_procs();  // those the process could run on when libgomp loaded
#else
  const int cpus = int(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
#endif
  return "xgrad: BLAS core " + blas_core_name() + " (OPENBLAS_CORETYPE=" + (env ? env : "unset") +
         (other_core ? ", set in the environment; this CPU's own is " + preferred : "") +
         "), OpenBLAS threads " + std::to_string(openblas_get_num_threads()) + ", OpenMP threads " +
         std::to_string(num_threads()) + " on " + std::to_string(cpus) +
         (cpus == 1 ? " CPU" : " CPUs") + " (" + waiting + "), denormals " +
         (flush_to_zero_enabled() ? "flushed to zero" : "kept");
}

}  // namespace xgrad
