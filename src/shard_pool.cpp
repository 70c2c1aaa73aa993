// The threads that run a sharded region: see shard_pool.hpp.
#include "shard_pool.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace xgrad::detail {

namespace {

thread_local int t_region_depth = 0;

// One thread of the pool. `posted` counts the calls handed to it, `done` those it has finished;
// each on its own cache line, written by one side and read by the other.
struct alignas(64) Worker {
  std::atomic<std::uint64_t> posted{0};
  void (*work)(const void*, int) = nullptr;
  const void* context = nullptr;
  int index = 0;
  alignas(64) std::atomic<std::uint64_t> done{0};
  std::atomic<bool> sleeping{false};
  std::mutex mutex;
  std::condition_variable wake;
};

std::atomic<int> g_asleep{0}, g_started{0};

// The OpenMP place `offset` places after the calling thread's where OpenMP binds its threads
// (OMP_PROC_BIND, OMP_PLACES): where libgomp would bind its own thread `offset` of a team started
// here. -1 where it does not bind.
int openmp_place(int offset) {
  const int places = omp_get_num_places(), here = omp_get_place_num();
  if (omp_get_proc_bind() == omp_proc_bind_false || places <= 0 || here < 0) return -1;
  return (here + offset) % places;
}

// Binds this thread to the CPUs of OpenMP place `place`; -1 leaves it free.
void bind_to_place(int place) {
  if (place < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  add_place_cpus(place, set);
  if (CPU_COUNT(&set) > 0) pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Spins (with pauses) until ready(), for `polls` polls, then yields the core between polls.
template <class Ready>
void wait_until(const Ready& ready, long polls) {
  for (long p = 0; !ready(); ++p) {
    if (p < polls)
      spin_pause();
    else
      std::this_thread::yield();
  }
}

void worker_loop(Worker* w, int place) {
  bind_to_place(place);
  std::uint64_t seen = 0;
  for (;;) {
    const long polls = wait_polls(g_started.load() + 1);
    for (long p = 0; w->posted.load(std::memory_order_acquire) == seen; ++p) {
      if (p < polls) {
        spin_pause();
        continue;
      }
      std::unique_lock<std::mutex> lock(w->mutex);
      w->sleeping.store(true);
      g_asleep.fetch_add(1);
      // After `sleeping` is set (both sequentially consistent): a caller that posts from now on
      // sees it and wakes us; one that posted before is seen here.
      while (w->posted.load() == seen) w->wake.wait(lock);
      w->sleeping.store(false);
      g_asleep.fetch_sub(1);
    }
    seen = w->posted.load(std::memory_order_acquire);
    w->work(w->context, w->index);
    w->done.store(seen, std::memory_order_release);
  }
}

class ShardPool {
 public:
  bool run(int threads, void (*work)(const void*, int), const void* context) {
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    struct Release {
      std::atomic<bool>& busy;
      ~Release() { busy.store(false, std::memory_order_release); }
    } release{busy_};
    while (int(workers_.size()) < threads - 1) {
      try {
        workers_.push_back(std::make_unique<Worker>());
      } catch (const std::exception&) {
        return false;
      }
      Worker* w = workers_.back().get();
      w->index = int(workers_.size());
      try {
        // The thread waits for calls until the process ends.
        std::thread(worker_loop, w, openmp_place(w->index)).detach();
      } catch (const std::exception&) {
        workers_.pop_back();  // no thread has it
        return false;
      }
      g_started.fetch_add(1);
    }
    for (int t = 1; t < threads; ++t) {
      Worker& w = *workers_[std::size_t(t - 1)];
      w.work = work;
      w.context = context;
      w.posted.fetch_add(1);
      if (w.sleeping.load()) {
        std::lock_guard<std::mutex> lock(w.mutex);
        w.wake.notify_one();
      }
    }
    work(context, 0);
    for (int t = 1; t < threads; ++t) {
      Worker& w = *workers_[std::size_t(t - 1)];
      const std::uint64_t posted = w.posted.load(std::memory_order_relaxed);
      wait_until([&] { return w.done.load(std::memory_order_acquire) == posted; },
                 wait_polls(threads));
    }
    return true;
  }

 private:
  std::atomic<bool> busy_{false};
  std::vector<std::unique_ptr<Worker>> workers_;  // worker t - 1 runs thread t
};

// Never destroyed: its threads wait on it until the process ends. A child forked from a process
// that has started them has no such threads, so it starts its own pool.
ShardPool* g_pool = nullptr;
std::once_flag g_pool_once;

ShardPool& pool() {
  std::call_once(g_pool_once, [] {
    g_pool = new ShardPool;
    pthread_atfork(nullptr, nullptr, [] { g_pool = new ShardPool; });
  });
  return *g_pool;
}

}  // namespace

long wait_polls_for(const char* policy, const char* spincount, bool oversubscribed) {
  const auto lower = [](const char* text) {
    std::string out;
    for (; *text != '\0'; ++text) out += char(std::tolower(static_cast<unsigned char>(*text)));
    return out;
  };
  const std::string p = policy != nullptr ? lower(policy) : "";
  if (p == "passive") return 0;
  const bool active = p == "active";
  long polls = active ? LONG_MAX : 300000;
  if (spincount != nullptr) {
    char* end = nullptr;
    const long n = std::strtol(spincount, &end, 10);
    const std::string c = lower(spincount);
    if (c == "infinite" || c == "infinity") {
      polls = LONG_MAX;
    } else if (end != spincount && n >= 0) {
      long scale = 1;
      switch (std::tolower(static_cast<unsigned char>(*end))) {
        case 'k':
          scale = 1000L;
          break;
        case 'm':
          scale = 1000000L;
          break;
        case 'g':
          scale = 1000000000L;
          break;
        case 't':
          scale = 1000000000000L;
          break;
        default:
          break;
      }
      polls = n > LONG_MAX / scale ? LONG_MAX : n * scale;
    }
  }
  return oversubscribed ? std::min(polls, active ? 1000L : 100L) : polls;
}

long wait_polls(int threads) {
  static const long fits =
      wait_polls_for(std::getenv("OMP_WAIT_POLICY"), std::getenv("GOMP_SPINCOUNT"), false);
  static const long oversubscribed =
      wait_polls_for(std::getenv("OMP_WAIT_POLICY"), std::getenv("GOMP_SPINCOUNT"), true);
  static const int cpus = omp_get_num_procs();
  return threads > cpus ? oversubscribed : fits;
}

void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

void SpinBarrier::wait(int threads) {
  const unsigned generation = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    return;
  }
  wait_until([&] { return generation_.load(std::memory_order_acquire) != generation; },
             wait_polls(threads));
}

void add_place_cpus(int place, cpu_set_t& cpus) {
  std::vector<int> ids(std::size_t(std::max(0, omp_get_place_num_procs(place))));
  omp_get_place_proc_ids(place, ids.data());
  for (int id : ids)
    if (id >= 0 && id < CPU_SETSIZE) CPU_SET(id, &cpus);
}

bool run_on_shard_threads(int threads, void (*work)(const void*, int), const void* context) {
  if (threads < 1 || in_shard_region() || omp_in_parallel()) return false;
  return pool().run(threads, work, context);
}

int shard_threads_started() {
  return g_started.load();
}

int shard_threads_asleep() {
  return g_asleep.load();
}

bool in_shard_region() {
  return t_region_depth > 0;
}

ShardRegionScope::ShardRegionScope() {
  ++t_region_depth;
}
ShardRegionScope::~ShardRegionScope() {
  --t_region_depth;
}

}  // namespace xgrad::detail
