// Data parallelism inside one process: a batch split into shards, one per thread, each shard with
// its own graph. The shards run on threads kept for them between calls (the calling thread and
// num_threads() - 1 others, src/shard_pool.hpp), or in an OpenMP region where those are taken.
//
// Splitting every op over the batch (what the kernels do on their own) costs a fork and a join per
// op, and hands each activation from one core's cache to the other between ops. For a small model
// those dominate: LeNet-5 training at batch 64 ran 20 parallel regions per step and scaled 1.42x
// from 1 to 2 cores of the EPYC. Sharded, each thread runs the whole forward and backward of its
// shard in one parallel region, and the ops inside run single-threaded (num_threads() answers 1
// there): 1.65x in the same benchmark, with libgomp's waiting down from 11 to 3.6 us of
// CPU per image.
#pragma once

#include <cstddef>
#include <functional>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"
#include "xgrad/variable.hpp"

namespace xgrad {

namespace optim {
template <class T>
class Optimizer;
}

/// The smallest shard sharded_backward and sharded_forward make by default.
constexpr std::size_t kMinShard = 4;

/// [begin, end) of each shard of n samples: min(max_shards, n / min_shard) shards (at least one),
/// in order, with sizes differing by at most one.
std::vector<std::pair<std::size_t, std::size_t>> shard_ranges(std::size_t n, int max_shards,
                                                              std::size_t min_shard = kMinShard);

/// [begin, end) of shares.size() shards of n samples, in order, sized in proportion to `shares`
/// (each clamped to between half and 1.5 times an even share, then normalised), every shard at
/// least min_shard samples, rounded by largest remainder so the sizes sum to n. Throws
/// xgrad::Error when there are no shares, a share is not positive and finite, or the shards
/// cannot all get min_shard samples.
std::vector<std::pair<std::size_t, std::size_t>> weighted_shard_ranges(
    std::size_t n, const std::vector<double>& shares, std::size_t min_shard = kMinShard);

/// How sharded_backward and sharded_forward split a batch between the threads.
enum class ShardSplit {
  /// shard_ranges: sizes differ by at most one, so results depend on the thread count but not on
  /// timing (the default).
  even,
  /// weighted_shard_ranges, with each thread's share of the work following its measured speed
  /// (samples per second, from the region's start to the shard's end, averaged over the last calls
  /// with as many shards; kept per calling thread). A step then waits less for a thread that runs
  /// slower for a while, as a vCPU does when its host is busy: in a noisy stretch of the 2-vCPU
  /// EPYC, the wait for the slower shard of a 2-thread LeNet-5 step fell from 349-417 to 130-191
  /// us on average (bench/HISTORY.md, 2026-11-29, evening). Shard sizes, and so the order of the
  /// float sums, then depend on timing: results agree with an even split to float rounding, but
  /// are not bit-identical from run to run.
  adaptive,
};
/// Sets the split for every later sharded_backward and sharded_forward (process-wide), and forgets
/// the speeds the calling thread has measured so far.
void set_shard_split(ShardSplit split);
ShardSplit shard_split();

/// Where the time of a sharded call went: for the last sharded_backward, sharded_step or
/// sharded_forward called from this thread, when each shard's thread started it and when it ended
/// (its forward and backward, with any help it got), and when the call's parallel region ended, in
/// microseconds from its start. shard_end_us[s] - shard_begin_us[s] is shard s's own time, and
/// the latest begin how long the region took to get every thread going. With several shards,
/// max(shard_end_us) - min(shard_end_us) is how long the first thread to end waited for the last
/// (helping it where it could), and region_us - max(shard_end_us) the work in the region after the
/// shards: sharded_step's sums and update, or nothing. bench_models reports all of these.
/// `evicted` tells whether sharded_step evicted from the caches, before its update, the parameters
/// each thread updates from the other threads' caches: it chooses as it goes, by which way its sums
/// and update have been faster lately (see src/parallel.cpp).
struct ShardTimes {
  std::vector<double> shard_begin_us;  // one per shard, in shard order
  std::vector<double> shard_end_us;    // one per shard, in shard order
  double region_us = 0;
  bool evicted = false;
};
/// The calling thread's ShardTimes of its last sharded call (empty before the first).
const ShardTimes& last_shard_times();

/// Computes a value from samples [begin, end) of a batch. Called in a shard's own thread.
template <class T>
using ShardFn = std::function<Variable<T>(std::size_t begin, std::size_t end)>;

/// One backward pass over a batch of n samples, sharded over num_threads() threads.
///
/// For the shards s = [b_s, e_s) of shard_ranges(n, num_threads(), min_shard) (or, with
/// ShardSplit::adaptive, as many shards sized by the threads' speeds), each thread builds
/// its own graph L_s = shard_loss(b_s, e_s) (a scalar) and runs backward on it with the seed n_s /
/// n, where n_s = e_s - b_s, into a LeafGradients of its own. Then each leaf gets the sum over the
/// shards, in shard order (LeafGradients::apply_sum: through its hooks once, into `.grad`), so with
/// the even split the result depends on the thread count but not on timing. The total is the
/// gradient of
///     L = Σ_s (n_s / n) · L_s,
/// which is returned. When L_s is a mean over its samples (cross_entropy), L is the mean over the
/// batch and the gradient equals that of one backward of shard_loss(0, n), up to float rounding.
///
/// A thread whose shard has ended helps the others until they end: the ops that run their work
/// in chunks (conv2d's images, detail::for_chunks) let it take some. Chunks write disjoint outputs
/// and their sums are added in chunk order, so helping changes no bit of the result.
///
/// shard_loss must be safe to call from several threads at once: layers that use batch statistics
/// or a shared random generator in training mode are not (nn::Module::shardable() tells). With one
/// shard it runs in the calling thread, with the kernels' own threading. If any shard throws, no
/// gradient is applied and the first shard's error is rethrown. Throws xgrad::Error when gradient
/// recording is off in the calling thread, or when a shard's loss is not a scalar.
template <class T>
double sharded_backward(std::size_t n, const ShardFn<T>& shard_loss,
                        std::size_t min_shard = kMinShard);

/// sharded_backward(n, shard_loss, min_shard), then opt.step(), in one parallel region: once every
/// shard has ended, each thread sums its part of every parameter's gradient over the shards (in
/// shard order, as apply_sum) and updates that part at once (Optimizer::prepare_update and
/// update_range), while it is in its cache. The same `.grad` and the same parameters, bit for
/// bit, as the two calls; the leaves opt does not hold get their gradients as from
/// sharded_backward. No thread sums the whole gradient alone, and each updates from the sums it
/// has just made itself: LeNet-5's training step at 2 threads of the EPYC ran 1.077x as fast as
/// the two calls at batch 8, 1.01-1.02x at 32, level from 64 (in-process alternating blocks),
/// where the step is long against the sum. With one shard, or when a parameter has hooks (they
/// need its whole gradient) or appears twice, it makes the two calls. Errors as
/// sharded_backward's and step()'s: if a shard throws, nothing is applied; if prepare_update
/// throws, `.grad` holds the sums and no parameter has changed.
template <class T>
double sharded_step(std::size_t n, const ShardFn<T>& shard_loss, optim::Optimizer<T>& opt,
                    std::size_t min_shard = kMinShard);

/// Forward only, with no graph recorded: shard_forward(b_s, e_s) for each shard on its own thread,
/// as in sharded_backward, and the values concatenated along dimension 0. Each shard's value must
/// have n_s rows and the same trailing shape; otherwise throws xgrad::Error naming the shapes.
template <class T>
Tensor<T> sharded_forward(std::size_t n, const ShardFn<T>& shard_forward,
                          std::size_t min_shard = kMinShard);

/// A copy of rows [begin, end) (along dimension 0) of `batch`. Throws xgrad::Error on a range
/// outside the batch or a 0-d tensor.
template <class T>
Tensor<T> batch_rows(const Tensor<T>& batch, std::size_t begin, std::size_t end);

/// Entries [begin, end) of a batch's labels, with the same range check.
std::vector<int> batch_rows(const std::vector<int>& labels, std::size_t begin, std::size_t end);

}  // namespace xgrad
