// Sharded forward and backward: one graph per shard thread, leaf gradients applied in shard order.
#include "xgrad/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <string>
#include <thread>

#include <omp.h>
#include <unistd.h>

#include "parallel_loop.hpp"
#include "shard_help.hpp"
#include "shard_pool.hpp"
#include "xgrad/graph.hpp"
#include "xgrad/optim/optimizer.hpp"
#include "xgrad/runtime.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace xgrad {

namespace {

using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;

// A shard's place in a sharded region: the loop its thread offers for help (for_chunks), how many
// helpers are inside it, and whether the shard has ended. One cache line each, so that a helper
// polling one slot does not disturb the thread that owns another.
struct alignas(64) ShardSlot {
  std::atomic<detail::HelpableLoop*> loop{nullptr};
  std::atomic<int> helpers{0};
  std::atomic<bool> ended{false};
};

// The slot of the shard this thread runs, null outside shards.
thread_local ShardSlot* t_slot = nullptr;

std::atomic<long> g_helped_chunks{0};

// Runs chunks of the loop that `slot` offers, if any, until it has none left, and says whether it
// ran any. A helper counts itself in before it looks at the loop, so that withdraw_loop() can wait
// for it to leave.
bool help(ShardSlot& slot) {
  if (slot.loop.load(std::memory_order_acquire) == nullptr) return false;
  bool ran = false;
  slot.helpers.fetch_add(1);
  if (detail::HelpableLoop* loop = slot.loop.load()) {
    for (int c = loop->next.fetch_add(1); c < loop->chunks; c = loop->next.fetch_add(1)) {
      ran = true;
      try {
        loop->run(loop->body, c);
        g_helped_chunks.fetch_add(1, std::memory_order_relaxed);
      } catch (...) {
        if (!loop->failed.exchange(true)) loop->error = std::current_exception();
        loop->next.store(loop->chunks);
      }
    }
  }
  slot.helpers.fetch_sub(1);
  return ran;
}

// Polls of the other shards' slots, with a pause (25-30 ns on the EPYC) after each, before a
// waiting thread starts to yield its core instead (about 0.6 us a call there): a few hundred us,
// longer than the usual wait for the slower shard, after which a shard that takes long (a slow
// loss of the caller's, more threads than cores) should not compete with a spinning thread.
constexpr int kSpinPolls = 10000;

// for_each_shard's `after` for callers with nothing to do once the shards have ended.
constexpr auto kNothingAfter = [](int, int, bool, detail::SpinBarrier&) {};

// What last_shard_times() returns: the calling thread's last for_each_shard.
thread_local ShardTimes t_times;

double micros_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

// Runs body(s) for every shard, shard s on the s-th thread of one sharded region (or all in this
// thread for a single shard), and records in t_times when each shard began and ended and when the
// region did, in microseconds from the start. The region runs on detail::run_on_shard_threads'
// threads, or in an OpenMP region where those cannot run it; every thread in it counts as inside a
// sharded region (num_threads() is 1 there). A thread whose shards have ended helps the others with
// their for_chunks loops until they end too. With several shards, every thread of the region then
// calls after(thread, threads, failed, barrier) once all shards have ended, `failed` telling
// whether one threw, and `barrier` a barrier for the region's threads (barrier.wait(threads)).
// Exceptions are caught per shard and the first is rethrown after the region: an exception
// escaping the region would terminate the program (so `after` must not throw).
template <class Body, class After>
void for_each_shard(const Ranges& shards, const Body& body, const After& after) {
  const int count = static_cast<int>(shards.size());
  std::vector<double> begin_us(shards.size(), 0.0), end_us(shards.size(), 0.0);
  t_times.shard_begin_us.assign(shards.size(), 0.0);
  t_times.shard_end_us.assign(shards.size(), 0.0);
  t_times.region_us = 0;
  t_times.evicted = false;
  if (count == 1) {
    const auto start = std::chrono::steady_clock::now();
    body(0);
    t_times.shard_end_us[0] = t_times.region_us = micros_since(start);
    return;
  }
  std::vector<std::exception_ptr> errors(shards.size());
  std::vector<ShardSlot> slots(shards.size());
  detail::SpinBarrier barrier;
  // From the region's start, so that a thread that joins late (waking from sleep) counts as slow:
  // what the split must even out is when the shards end.
  const auto start = std::chrono::steady_clock::now();
  const auto region = [&](int thread, int threads) {
    detail::ShardRegionScope scope;
    for (int s = thread; s < count; s += threads) {
      t_slot = &slots[std::size_t(s)];
      begin_us[std::size_t(s)] = micros_since(start);
      try {
        body(s);
      } catch (...) {
        errors[std::size_t(s)] = std::current_exception();
      }
      t_slot = nullptr;
      end_us[std::size_t(s)] = micros_since(start);
      slots[std::size_t(s)].ended.store(true, std::memory_order_release);
    }
    for (int idle = 0;;) {
      bool waiting = false, helped = false;
      for (ShardSlot& slot : slots)
        if (!slot.ended.load(std::memory_order_acquire)) {
          waiting = true;
          helped = help(slot) || helped;
        }
      if (!waiting) break;
      if (helped) idle = 0;
      if (++idle < kSpinPolls)
        detail::spin_pause();
      else
        std::this_thread::yield();
    }
    const bool failed = std::any_of(errors.begin(), errors.end(), [](const auto& e) { return e; });
    after(thread, threads, failed, barrier);
  };
  if (!detail::run_on_shard_threads(count, [&](int thread) { region(thread, count); })) {
#pragma omp parallel num_threads(count)
    region(omp_get_thread_num(), omp_get_num_threads());
  }
  t_times.region_us = micros_since(start);
  t_times.shard_begin_us = std::move(begin_us);
  t_times.shard_end_us = std::move(end_us);
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

std::atomic<ShardSplit> g_split{ShardSplit::even};

// ShardSplit::adaptive's memory, per calling thread: each shard thread's share of the samples
// processed per second, averaged over the last calls with the same number of shards. How much the
// latest call counts was chosen on a trace of 3,500 two-thread LeNet steps in a noisy stretch of
// the EPYC (the share of one thread's speed has a lag-1 autocorrelation of 0.79 there): replaying
// it, the mean step was 2,144 us with even shards, and with adaptive ones 2,064 / 2,053 / 2,043 /
// 2,045 us for a weight of 0.1 / 0.2 / 0.5 / 1.
constexpr double kLatestWeight = 0.5;
thread_local std::vector<double> t_speed_shares;

// The shards of n samples under the current split.
Ranges split_batch(std::size_t n, std::size_t min_shard) {
  Ranges even = shard_ranges(n, num_threads(), min_shard);
  if (g_split.load() != ShardSplit::adaptive || even.size() == 1) return even;
  if (t_speed_shares.size() != even.size())
    t_speed_shares.assign(even.size(), 1.0 / double(even.size()));
  return weighted_shard_ranges(n, t_speed_shares, min_shard);
}

// Folds the shards' measured speeds (samples per µs, from their ends in t_times) into
// t_speed_shares.
void record_speeds(const Ranges& shards) {
  const std::vector<double>& end_us = t_times.shard_end_us;
  if (g_split.load() != ShardSplit::adaptive || shards.size() != t_speed_shares.size()) return;
  std::vector<double> speed(shards.size());
  double total = 0.0;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    if (!(end_us[s] > 0.0)) return;  // a clock too coarse to tell
    speed[s] = double(shards[s].second - shards[s].first) / end_us[s];
    total += speed[s];
  }
  for (std::size_t s = 0; s < shards.size(); ++s)
    t_speed_shares[s] =
        (1.0 - kLatestWeight) * t_speed_shares[s] + kLatestWeight * speed[s] / total;
}

std::string range_str(std::size_t begin, std::size_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

}  // namespace

namespace detail {

bool publish_loop(HelpableLoop* loop) {
  if (t_slot == nullptr || t_slot->loop.load(std::memory_order_relaxed) != nullptr) return false;
  t_slot->loop.store(loop, std::memory_order_release);
  return true;
}

long helped_chunks() {
  return g_helped_chunks.load();
}

void withdraw_loop() {
  t_slot->loop.store(nullptr);
  while (t_slot->helpers.load() != 0) spin_pause();
}

}  // namespace detail

const ShardTimes& last_shard_times() {
  return t_times;
}

Ranges shard_ranges(std::size_t n, int max_shards, std::size_t min_shard) {
  const std::size_t by_size = n / std::max<std::size_t>(min_shard, 1);
  const std::size_t count =
      std::max<std::size_t>(1, std::min(std::size_t(std::max(max_shards, 1)), by_size));
  Ranges shards;
  std::size_t begin = 0;
  for (std::size_t s = 0; s < count; ++s) {
    const std::size_t size = n / count + (s < n % count ? 1 : 0);
    shards.emplace_back(begin, begin + size);
    begin += size;
  }
  return shards;
}

Ranges weighted_shard_ranges(std::size_t n, const std::vector<double>& shares,
                             std::size_t min_shard) {
  const std::size_t count = shares.size();
  if (count == 0) throw Error("weighted_shard_ranges: no shares");
  for (double s : shares)
    if (!(s > 0.0) || !std::isfinite(s))
      throw Error("weighted_shard_ranges: a share is " + std::to_string(s) +
                  "; shares must be positive and finite");
  if (n < count * min_shard)
    throw Error("weighted_shard_ranges: " + std::to_string(n) + " samples cannot make " +
                std::to_string(count) + " shards of at least " + std::to_string(min_shard));
  // Clamp each share to [0.5, 1.5] times an even one, then normalise.
  const double even = 1.0 / double(count);
  double sum = 0.0, total = 0.0;
  for (double x : shares) sum += x;
  std::vector<double> share(count);
  for (std::size_t s = 0; s < count; ++s) {
    share[s] = std::clamp(shares[s] / sum, 0.5 * even, 1.5 * even);
    total += share[s];
  }
  // Every shard gets min_shard; the rest goes by share beyond that, largest remainder first.
  const std::size_t rest = n - count * min_shard;
  std::vector<double> want(count);
  double want_total = 0.0;
  for (std::size_t s = 0; s < count; ++s) {
    want[s] = std::max(0.0, double(n) * share[s] / total - double(min_shard));
    want_total += want[s];
  }
  std::vector<std::size_t> size(count, min_shard);
  std::vector<std::pair<double, std::size_t>> remainders;
  std::size_t given = 0;
  for (std::size_t s = 0; s < count; ++s) {
    const double exact = want_total > 0.0 ? double(rest) * want[s] / want_total : 0.0;
    const auto whole = std::size_t(std::floor(exact));
    size[s] += whole;
    given += whole;
    remainders.emplace_back(exact - double(whole), s);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t i = 0; given < rest; ++i, ++given) ++size[remainders[i % count].second];
  Ranges shards;
  std::size_t begin = 0;
  for (std::size_t s = 0; s < count; ++s) {
    shards.emplace_back(begin, begin + size[s]);
    begin += size[s];
  }
  return shards;
}

void set_shard_split(ShardSplit split) {
  g_split.store(split);
  t_speed_shares.clear();
}
ShardSplit shard_split() {
  return g_split.load();
}

namespace {

// Runs shard_loss and backward for every shard of n samples: a single shard straight into the
// leaves, each of several into its own capture. `after` as in for_each_shard. Returns the loss
// Σ_s (n_s / n)·L_s.
template <class T, class After>
double backward_shards(const char* who, std::size_t n, const Ranges& shards,
                       const ShardFn<T>& shard_loss, std::vector<LeafGradients<T>>& captured,
                       const After& after) {
  std::vector<double> losses(shards.size(), 0.0);
  const bool single = shards.size() == 1;
  for_each_shard(
      shards,
      [&](int s) {
        const auto [begin, end] = shards[std::size_t(s)];
        const double weight = double(end - begin) / double(n);
        const Variable<T> loss = shard_loss(begin, end);
        if (!loss.defined() || loss.numel() != 1)
          throw Error(std::string(who) + ": the loss of samples " + range_str(begin, end) +
                      " has shape " + (loss.defined() ? shape_str(loss.shape()) : "(undefined)") +
                      "; it must be a scalar");
        losses[std::size_t(s)] = weight * double(loss.item());
        if (single) {
          loss.backward();
          return;
        }
        CaptureGuard<T> capture(captured[std::size_t(s)]);
        loss.backward(filled_tensor<T>(loss.shape(), T(weight)));
      },
      after);
  record_speeds(shards);
  double total = 0.0;
  for (double l : losses) total += l;
  return total;
}

// Whether sharded_step evicts the parameters the other threads update before its update (see
// evict_others_parts), per calling thread: an average, for each choice, of how long the sums and
// update after the shards took with it. It takes the faster choice, and the other one every
// kEvictProbe-th step, so as to notice when the vCPUs have moved.
class EvictChoice {
 public:
  bool next() {
    ++step_;
    if (samples_[0] < kWarmup || samples_[1] < kWarmup)
      evict_ = samples_[1] < samples_[0];  // each choice in turn at first
    else
      evict_ = (after_us_[1] < after_us_[0]) != (step_ % kEvictProbe == 0);
    return evict_;
  }
  void record(double after_us) {
    const int c = evict_ ? 1 : 0;
    after_us_[c] =
        samples_[c] == 0 ? after_us : (1.0 - kWeight) * after_us_[c] + kWeight * after_us;
    ++samples_[c];
  }

 private:
  static constexpr int kWarmup = 4;
  static constexpr unsigned long kEvictProbe = 16;
  static constexpr double kWeight = 0.25;
  double after_us_[2] = {0.0, 0.0};  // [keep, evict]
  int samples_[2] = {0, 0};
  unsigned long step_ = 0;
  bool evict_ = false;
};
thread_local EvictChoice t_evict_choice;

// Before sharded_step's update, each thread can evict from every core's caches (clflushopt) the
// lines of the parameters that the other threads are about to update. Every shard has read every
// parameter, so each line is held by both vCPUs, and writing a line the other vCPU holds waits for
// it to give the line up. How long that takes depends on where the hypervisor has put the two
// vCPUs, and that changes within minutes on this VM. In a test of its own, two threads updating
// half each of LeNet-5's 61,706 parameters (SGD with momentum) after both had read all of them:
// - with the vCPUs far apart (a cache line's round trip between them 445-470 ns), 31-33 us, against
//   3-8 us when each had read only its own half. Evicted first (4-5 us), 9 us. In LeNet-5's
//   2-thread step the sums and update after the shards went from 51-53 to 37-40 us, flush
//   included, and training at batch 32 and 64 was 3.3% and 2.0-2.6% faster (medians of 8
//   alternating runs);
// - with them close (a round trip of 130 ns), 8 us without evicting. There evicting made the sums
//   and update slower (22 to 33 us) and training 1.6-2.6% slower.
// So whether to evict is chosen as the step goes (EvictChoice). Only parameters that fit in the L2
// cache are evicted: a larger one (the convnet's 4.7 MB fc1) is mostly not in the other vCPU's
// cache any more, and evicting it cost 55 us a step for nothing.
#ifdef __CLFLUSHOPT__
constexpr bool kCanEvict = true;
#else
constexpr bool kCanEvict = false;
#endif

template <class T>
void evict_others_parts(const std::vector<VariableImpl<T>*>& leaves, int thread, int threads) {
#ifdef __CLFLUSHOPT__
  static const std::size_t l2_bytes = [] {
    const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return bytes > 0 ? std::size_t(bytes) : std::size_t(1) << 20;
  }();
  for (const VariableImpl<T>* leaf : leaves) {
    const std::size_t size = leaf->value.size();
    if (size * sizeof(T) > l2_bytes) continue;
    for (int other = 0; other < threads; ++other) {
      if (other == thread) continue;
      const auto [begin, end] =
          detail::thread_part(size, std::size_t(other), std::size_t(threads), sizeof(T));
      detail::for_each_cache_line(
          leaf->value.data() + begin, (end - begin) * sizeof(T),
          [](const void* line) { _mm_clflushopt(const_cast<void*>(line)); });
    }
  }
  _mm_sfence();
#else
  (void)leaves, (void)thread, (void)threads;
#endif
}

void check_backward_call(const char* who, std::size_t n) {
  if (!grad_enabled())
    throw Error(std::string(who) +
                ": gradient recording is off in this thread (a NoGradGuard is alive), so there "
                "is no graph to run backward on");
  if (n == 0) throw Error(std::string(who) + ": the batch is empty");
}

}  // namespace

template <class T>
double sharded_backward(std::size_t n, const ShardFn<T>& shard_loss, std::size_t min_shard) {
  check_backward_call("sharded_backward", n);
  const Ranges shards = split_batch(n, min_shard);
  std::vector<LeafGradients<T>> captured(shards.size());
  const double loss =
      backward_shards("sharded_backward", n, shards, shard_loss, captured, kNothingAfter);
  LeafGradients<T>::apply_sum(captured);
  return loss;
}

template <class T>
double sharded_step(std::size_t n, const ShardFn<T>& shard_loss, optim::Optimizer<T>& opt,
                    std::size_t min_shard) {
  check_backward_call("sharded_step", n);
  const Ranges shards = split_batch(n, min_shard);
  std::vector<LeafGradients<T>> captured(shards.size());
  std::vector<VariableImpl<T>*> leaves;
  for (const Variable<T>& p : opt.params()) leaves.push_back(p.impl().get());
  std::vector<VariableImpl<T>*> sorted = leaves;
  std::sort(sorted.begin(), sorted.end());
  // Hooks need a leaf's whole sum, one shard has nothing to sum, and a gradient of another shape
  // than its parameter's (step() names it) must not be summed over the parameter's size.
  const bool fusable =
      shards.size() > 1 && std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end() &&
      std::all_of(leaves.begin(), leaves.end(), [](const VariableImpl<T>* l) {
        return l->hooks.empty() && (!l->has_grad || shape_of(l->grad) == shape_of(l->value));
      });
  if (!fusable) {
    const double loss =
        backward_shards("sharded_step", n, shards, shard_loss, captured, kNothingAfter);
    LeafGradients<T>::apply_sum(captured);
    opt.step();
    return loss;
  }
  // A parameter's gradient: the tensor that becomes the sum (its .grad), the shards' gradients to
  // add to it in shard order (as apply_sum), its size.
  struct Sum {
    std::size_t param;
    T* into;
    std::vector<const T*> parts;
    std::size_t size;
  };
  std::vector<Sum> sums;
  bool prepared = false;
  std::exception_ptr prepare_error;
  // One thread's work once every shard has ended, before the others sum and update: each sum goes
  // into its parameter's .grad (the first shard's gradient becomes it), then the optimiser
  // prepares its step. An error waits for the region's end.
  const auto plan = [&] {
    try {
      for (std::size_t i = 0; i < leaves.size(); ++i) {
        VariableImpl<T>& leaf = *leaves[i];
        Sum sum{i, leaf.has_grad ? leaf.grad.data() : nullptr, {}, leaf.value.size()};
        for (LeafGradients<T>& part : captured)
          if (Tensor<T>* g = part.find(&leaf)) {
            if (sum.into != nullptr) {
              sum.parts.push_back(g->data());
              continue;
            }
            leaf.grad = std::move(*g);
            leaf.has_grad = true;
            sum.into = leaf.grad.data();
          }
        if (sum.into != nullptr) sums.push_back(std::move(sum));
      }
      NoGradGuard no_grad;
      opt.prepare_update();
      prepared = true;
    } catch (...) {
      prepare_error = std::current_exception();
    }
  };
  const bool evict = kCanEvict && t_evict_choice.next();
  const double loss = backward_shards(
      "sharded_step", n, shards, shard_loss, captured,
      [&](int thread, int threads, bool failed, detail::SpinBarrier& barrier) {
        if (failed) return;  // nothing is applied: the shard's error is rethrown after the region
        if (thread == 0) plan();
        if (evict) evict_others_parts(leaves, thread, threads);
        barrier.wait(threads);
        // Each thread sums its part of each gradient and, with that part in its cache, updates it.
        for (const Sum& sum : sums) {
          const auto [begin, end] =
              detail::thread_part(sum.size, std::size_t(thread), std::size_t(threads), sizeof(T));
          if (begin == end) continue;
          for (const T* part : sum.parts)
            for (std::size_t k = begin; k < end; ++k) sum.into[k] += part[k];
          if (prepared) opt.update_range(sum.param, begin, end);
        }
      });
  t_times.evicted = evict;
  t_evict_choice.record(t_times.region_us - *std::max_element(t_times.shard_end_us.begin(),
                                                              t_times.shard_end_us.end()));
  for (LeafGradients<T>& part : captured)
    for (VariableImpl<T>* leaf : leaves) part.erase(leaf);
  LeafGradients<T>::apply_sum(captured);  // leaves the optimiser does not hold
  if (prepare_error) std::rethrow_exception(prepare_error);
  return loss;
}

template <class T>
Tensor<T> sharded_forward(std::size_t n, const ShardFn<T>& shard_forward, std::size_t min_shard) {
  if (n == 0) throw Error("sharded_forward: the batch is empty");
  const Ranges shards = split_batch(n, min_shard);
  std::vector<Tensor<T>> parts(shards.size());
  for_each_shard(
      shards,
      [&](int s) {
        NoGradGuard no_grad;  // grad mode is per thread: every shard's thread needs its own guard
        const auto [begin, end] = shards[std::size_t(s)];
        const Variable<T> out = shard_forward(begin, end);
        if (!out.defined() || out.dim() == 0 || out.shape()[0] != end - begin)
          throw Error("sharded_forward: the output for samples " + range_str(begin, end) +
                      " has shape " + (out.defined() ? shape_str(out.shape()) : "(undefined)") +
                      "; it must have " + std::to_string(end - begin) + " rows");
        parts[std::size_t(s)] = out.value();
      },
      kNothingAfter);
  record_speeds(shards);
  if (parts.size() == 1) return std::move(parts[0]);
  Shape shape = shape_of(parts[0]);
  for (const Tensor<T>& p : parts) {
    Shape rest = shape_of(p);
    rest[0] = shape[0];
    if (rest != shape)
      throw Error("sharded_forward: shard outputs " + shape_str(parts[0]) + " and " + shape_str(p) +
                  " differ beyond dimension 0");
  }
  shape[0] = n;
  Tensor<T> out = empty_tensor<T>(shape);
  T* dst = out.data();
  for (const Tensor<T>& p : parts) dst = std::copy(p.data(), p.data() + p.size(), dst);
  return out;
}

template <class T>
Tensor<T> batch_rows(const Tensor<T>& batch, std::size_t begin, std::size_t end) {
  if (batch.dimension() == 0) throw Error("batch_rows: a 0-d tensor has no rows");
  const std::size_t rows = batch.shape()[0];
  if (begin > end || end > rows)
    throw Error("batch_rows: rows " + range_str(begin, end) + " are outside the batch " +
                shape_str(batch));
  Shape shape = shape_of(batch);
  shape[0] = end - begin;
  Tensor<T> out = empty_tensor<T>(shape);
  const std::size_t row = rows == 0 ? 0 : batch.size() / rows;
  std::copy(batch.data() + begin * row, batch.data() + end * row, out.data());
  return out;
}

std::vector<int> batch_rows(const std::vector<int>& labels, std::size_t begin, std::size_t end) {
  if (begin > end || end > labels.size())
    throw Error("batch_rows: rows " + range_str(begin, end) + " are outside the " +
                std::to_string(labels.size()) + " labels");
  return std::vector<int>(labels.begin() + std::ptrdiff_t(begin),
                          labels.begin() + std::ptrdiff_t(end));
}

#define XGRAD_INSTANTIATE_PARALLEL(T)                                                   \
  template double sharded_backward<T>(std::size_t, const ShardFn<T>&, std::size_t);     \
  template double sharded_step<T>(std::size_t, const ShardFn<T>&, optim::Optimizer<T>&, \
                                  std::size_t);                                         \
  template Tensor<T> sharded_forward<T>(std::size_t, const ShardFn<T>&, std::size_t);   \
  template Tensor<T> batch_rows<T>(const Tensor<T>&, std::size_t, std::size_t);
XGRAD_INSTANTIATE_PARALLEL(float)
XGRAD_INSTANTIATE_PARALLEL(double)

}  // namespace xgrad
