// for_ranges and for_each_own_first: loops over [0, n) split over the threads; thread_part;
// for_each_cache_line.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include <omp.h>

#include "xgrad/runtime.hpp"

namespace xgrad::detail {

/// [begin, end) of the t-th of `threads` contiguous parts of [0, n): each part but the last ones
/// is a whole number of 64-byte cache lines of elements of `element_size` bytes, so that threads
/// writing their parts of an array share at most the lines where the parts meet (none when the
/// array starts on a line). Parts past the end are empty.
inline std::pair<std::size_t, std::size_t> thread_part(std::size_t n, std::size_t t,
                                                       std::size_t threads,
                                                       std::size_t element_size) {
  const std::size_t line = std::max<std::size_t>(1, 64 / element_size);
  const std::size_t per = ((n + threads - 1) / threads + line - 1) / line * line;
  const std::size_t begin = std::min(n, t * per);
  return {begin, std::min(n, begin + per)};
}

/// Calls line(address) for each 64-byte cache line that the `bytes` bytes from p touch, in order.
/// The first line starts before p when p is not on a line (xtensor's arrays start 16, 32 or 48
/// bytes into one).
template <class Line>
void for_each_cache_line(const void* p, std::size_t bytes, const Line& line) {
  if (bytes == 0) return;
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(p), end = begin + bytes;
  for (std::uintptr_t at = begin & ~std::uintptr_t(63); at < end; at += 64)
    line(reinterpret_cast<const void*>(at));
}

/// Calls body(begin, end) on contiguous ranges that cover [0, n) in order, one per thread, of
/// ceil(n / threads) indices each (the last ones shorter or empty), when `worthwhile` and
/// num_threads() > 1; else body(0, n) in this thread. Unlike `#pragma omp parallel for if (...)`,
/// the single-thread case does not enter the OpenMP runtime: on the 2-vCPU EPYC a region that runs
/// on one thread cost 0.5 us a call, and 0.85-1.07 us nested inside a shard (more when both
/// shards' threads enter one at once). The body must not depend on how [0, n) is split.
template <class Body>
void for_ranges(std::ptrdiff_t n, bool worthwhile, const Body& body) {
  const int threads = worthwhile && n > 1 ? num_threads() : 1;
  if (threads <= 1) {
    body(std::ptrdiff_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const std::ptrdiff_t t = omp_get_thread_num(), count = omp_get_num_threads();
    const std::ptrdiff_t chunk = (n + count - 1) / count;
    const std::ptrdiff_t begin = std::min(n, t * chunk), end = std::min(n, begin + chunk);
    if (begin < end) body(begin, end);
  }
}

/// Calls body(i) once for every i in [0, n), on `threads` threads (1: here, in order, without
/// entering the OpenMP runtime). Thread t first takes the indices of its own share, the t-th of
/// `threads` contiguous shares, in order; then it helps with the indices the other threads have not
/// taken yet, from their shares' current fronts. So index i runs on the same thread call after
/// call unless a thread falls behind, and a slower core still gets help.
///
/// On the 2-vCPU EPYC a cache line takes about 225 ns from one vCPU to the other (a ping-pong of
/// one line: 430-530 ns a round trip), as between two dies, not two cores of one. With
/// schedule(dynamic), an image whose output the other thread wrote in the last call has its lines
/// fetched from there first: the convnet's conv1 forward (86 KB of output an image for 9 FMAs per
/// output element) ran at medians of 70-81 GFLOP/s that way against 90-100 with this loop (2
/// threads, batch 64, 21 alternating blocks, three runs); its conv2 (288 FMAs per element) was
/// level. The body must not depend on which thread runs an index.
template <class Body>
void for_each_own_first(int n, int threads, const Body& body) {
  threads = std::max(1, std::min(threads, n));
  if (threads == 1) {
    for (int i = 0; i < n; ++i) body(i);
    return;
  }
  struct alignas(64) Share {  // one cache line each: the owner's taking does not evict the other's
    std::atomic<int> next{0};
    int end = 0;
  };
  std::vector<Share> shares(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    shares[std::size_t(t)].next.store(int(std::int64_t(n) * t / threads));
    shares[std::size_t(t)].end = int(std::int64_t(n) * (t + 1) / threads);
  }
#pragma omp parallel num_threads(threads)
  {
    // Every thread goes round all the shares, so with fewer threads than asked for (a nested or
    // limited region) the missing threads' shares are still run.
    const int me = omp_get_thread_num();
    for (int k = 0; k < threads; ++k) {
      Share& s = shares[std::size_t((me + k) % threads)];
      for (int i = s.next.fetch_add(1); i < s.end; i = s.next.fetch_add(1)) body(i);
    }
  }
}

}  // namespace xgrad::detail
