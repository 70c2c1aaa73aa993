// The threads that run a sharded region (for_each_shard in parallel.cpp), kept between calls and
// woken without a system call, in place of an OpenMP parallel region per call.
#pragma once

#include <sched.h>

#include <atomic>

namespace xgrad::detail {

/// How many polls a waiting thread of ours makes (each followed by a pause) before it sleeps or
/// yields, when `threads` threads work at once, as libgomp reads them for its own threads:
/// OMP_WAIT_POLICY=passive none; else GOMP_SPINCOUNT (a count, with an optional suffix k, M, G or
/// T, or "infinite"), else without end for OMP_WAIT_POLICY=active and libgomp's default of 300,000
/// otherwise; with more threads than CPUs at most 1000 (active) or 100. setup_process sets
/// GOMP_SPINCOUNT from how busy the machine is.
long wait_polls(int threads = 1);

/// wait_polls' rule for these settings (either may be null), with more threads than CPUs or not.
long wait_polls_for(const char* policy, const char* spincount, bool oversubscribed);

/// Adds the CPUs of OpenMP place `place` to `cpus`.
void add_place_cpus(int place, cpu_set_t& cpus);

/// A pause for a spinning thread (x86 `pause`).
void spin_pause();

/// A barrier for the threads of one sharded region: each waits until `threads` have arrived,
/// spinning for wait_polls(threads) polls and then yielding its core between polls. Reusable.
class SpinBarrier {
 public:
  void wait(int threads);

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
};

/// Runs work(context, t) for every t in [0, threads): t = 0 in the calling thread, the others on
/// threads kept for that, which wait for the next call spinning (wait_polls()) and then asleep.
/// work marks its thread as in a sharded region itself (ShardRegionScope), as it must in an OpenMP
/// region too.
/// Where OpenMP binds its threads to places, thread t is bound to the place t places after the
/// caller's, as libgomp binds a team's thread t.
/// Returns once every call has returned; work must not throw. Returns false without running
/// anything where it cannot: inside an OpenMP region or a sharded region, when another thread is
/// using the pool, or when a thread cannot be started. The caller then uses an OpenMP region.
///
/// Why not an OpenMP region: libgomp's barriers make a futex_wake system call whenever a thread
/// arrives last, even when no thread sleeps, about three per call of sharded_step (its start, the
/// barrier before the sums, its end). On this VM (kernel page-table isolation without PCID) a
/// system call costs about 1.1 us and flushes the TLB, which the thread then refills: 1,000 pages
/// touched took 3.5 us after a system call and 0.7 us without. In 2-thread LeNet-5 training
/// (bench_models, 8 alternating rounds, the vCPUs far apart) the last shard started 0.8 us into
/// the region instead of 2.6-2.9, the sums and update after the shards took 35-36 us instead of
/// 38-41, and the medians of the img/s ratios were 1.041 at batch 8, 1.009 at 32, 1.014 at 64 and
/// 0.989 at 256 (each within about +-6%); inference and the convnet were level (0.993-1.013).
bool run_on_shard_threads(int threads, void (*work)(const void* context, int thread),
                          const void* context);

template <class Work>
bool run_on_shard_threads(int threads, const Work& work) {
  return run_on_shard_threads(
      threads, [](const void* c, int t) { (*static_cast<const Work*>(c))(t); }, &work);
}

/// How many threads the pool has started in this process, and how many of them are asleep, waiting
/// for a call (tests).
int shard_threads_started();
int shard_threads_asleep();

/// Whether this thread is inside a sharded region (num_threads() then answers 1).
bool in_shard_region();

/// Marks this thread as inside a sharded region for its lifetime. Nests.
class ShardRegionScope {
 public:
  ShardRegionScope();
  ~ShardRegionScope();
  ShardRegionScope(const ShardRegionScope&) = delete;
  ShardRegionScope& operator=(const ShardRegionScope&) = delete;
};

}  // namespace xgrad::detail
