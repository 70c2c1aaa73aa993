// Sharded forward and backward (parallel.hpp) and the engine's leaf-gradient capture.
#define BOOST_TEST_MODULE parallel
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include <xgrad/xgrad.hpp>

#include <omp.h>

#include "../src/parallel_loop.hpp"
#include "../src/shard_help.hpp"
#include "../src/shard_pool.hpp"

using namespace xgrad;
using xgrad::testing::check_close;
using xgrad::testing::Threads;
using xgrad::testing::throws_with;

namespace {

template <class T>
Tensor<T> random_images(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  Tensor<T> x = empty_tensor<T>({n, 1, 28, 28});
  for (T& v : x) v = T(normal(rng));
  return x;
}

std::vector<int> random_labels(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> labels(n);
  for (int& l : labels) l = int(rng() % 10);
  return labels;
}

template <class T>
std::vector<Tensor<T>> grads_of(const nn::Module<T>& model) {
  std::vector<Tensor<T>> out;
  for (const Variable<T>& p : model.parameters()) out.push_back(p.grad());
  return out;
}

// Every element within tol of the other, relative to the largest magnitude in the tensor (a
// gradient's small entries carry the rounding of its large ones).
template <class T>
void check_close_scaled(const Tensor<T>& a, const Tensor<T>& b, double tol) {
  BOOST_REQUIRE(shape_of(a) == shape_of(b));
  double scale = 0.0, worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(double(b.data()[i])));
    worst = std::max(worst, std::abs(double(a.data()[i]) - double(b.data()[i])));
  }
  BOOST_TEST(worst <= tol * scale, "max difference " << worst << " against scale " << scale);
}

// LeNet-5 gradients on a batch of n, once by one backward and once sharded over two threads.
// `sizes`, when given, gets the size of the first shard.
template <class T>
void check_sharded_matches_whole(std::size_t n, double tol,
                                 std::vector<std::size_t>* sizes = nullptr) {
  Threads two(2);
  nn::manual_seed(3);
  auto model = nn::lenet5<T>();
  const Tensor<T> images = random_images<T>(n, 1);
  const std::vector<int> labels = random_labels(n, 2);

  model->zero_grad();
  const T whole = cross_entropy(model->forward(Variable<T>(images)), labels).item();
  cross_entropy(model->forward(Variable<T>(images)), labels).backward();
  const std::vector<Tensor<T>> expected = grads_of(*model);

  model->zero_grad();
  std::atomic<int> shards{0};
  std::mutex m;
  const double loss = sharded_backward<T>(n, [&](std::size_t begin, std::size_t end) {
    ++shards;
    if (sizes != nullptr && begin == 0) {
      std::lock_guard<std::mutex> lock(m);
      sizes->push_back(end);
    }
    return cross_entropy(model->forward(Variable<T>(batch_rows(images, begin, end))),
                         batch_rows(labels, begin, end));
  });
  BOOST_TEST(shards.load() == 2);
  BOOST_TEST(loss == double(whole), boost::test_tools::tolerance(tol));
  const std::vector<Tensor<T>> got = grads_of(*model);
  BOOST_REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) check_close_scaled(got[i], expected[i], tol);
}

}  // namespace

BOOST_AUTO_TEST_CASE(shard_ranges_cover_the_batch_in_order) {
  using R = std::vector<std::pair<std::size_t, std::size_t>>;
  BOOST_TEST((shard_ranges(64, 2) == R{{0, 32}, {32, 64}}));
  BOOST_TEST((shard_ranges(11, 3, 2) == R{{0, 4}, {4, 8}, {8, 11}}));
  BOOST_TEST((shard_ranges(7, 2, 4) == R{{0, 7}}));  // two shards would be under 4
  BOOST_TEST((shard_ranges(8, 2, 4) == R{{0, 4}, {4, 8}}));
  BOOST_TEST((shard_ranges(1, 2, 4) == R{{0, 1}}));
  BOOST_TEST((shard_ranges(5, 0, 1) == R{{0, 5}}));
}

BOOST_AUTO_TEST_CASE(weighted_shard_ranges_follow_the_shares) {
  using R = std::vector<std::pair<std::size_t, std::size_t>>;
  // Equal shares split as shard_ranges does, the first shards taking the remainder.
  BOOST_TEST((weighted_shard_ranges(64, {1.0, 1.0}) == shard_ranges(64, 2)));
  BOOST_TEST((weighted_shard_ranges(11, {2.0, 2.0, 2.0}, 2) == shard_ranges(11, 3, 2)));
  BOOST_TEST((weighted_shard_ranges(64, {1.0, 3.0}) == R{{0, 16}, {16, 64}}));
  BOOST_TEST((weighted_shard_ranges(64, {0.6, 0.4}) == R{{0, 38}, {38, 64}}));  // 38.4 and 25.6
  // A share is held within [0.5, 1.5] times an even one.
  BOOST_TEST((weighted_shard_ranges(64, {1.0, 100.0}) == R{{0, 16}, {16, 64}}));
  BOOST_TEST((weighted_shard_ranges(60, {1.0, 1.0, 100.0}) == R{{0, 12}, {12, 24}, {24, 60}}));
  // Every shard keeps min_shard samples: 2.5 of 10 would be under 4.
  BOOST_TEST((weighted_shard_ranges(10, {1.0, 3.0}, 4) == R{{0, 4}, {4, 10}}));
  BOOST_TEST((weighted_shard_ranges(5, {1.0}) == R{{0, 5}}));
  BOOST_TEST(throws_with([] { weighted_shard_ranges(8, {}); }, {"no shares"}));
  BOOST_TEST(throws_with([] { weighted_shard_ranges(8, {1.0, 0.0}); }, {"0.0", "positive"}));
  BOOST_TEST(throws_with([] { weighted_shard_ranges(8, {1.0, std::nan("")}); }, {"nan"}));
  BOOST_TEST(throws_with(
      [] {
        weighted_shard_ranges(7, {1.0, 1.0}, 4);
      },
      {"7 samples", "2 shards", "at least 4"}));
}

namespace {

// Sets the split for one test; the previous one is restored on leaving (as Threads does).
struct SplitScope {
  ShardSplit previous = shard_split();
  explicit SplitScope(ShardSplit s) { set_shard_split(s); }
  ~SplitScope() { set_shard_split(previous); }
  SplitScope(const SplitScope&) = delete;
  SplitScope& operator=(const SplitScope&) = delete;
};

}  // namespace

// With ShardSplit::adaptive, a shard whose samples take 4x as long gets fewer of them: after a few
// calls the first shard holds the least its share allows (a quarter of 40 samples, with a margin
// of one step's rounding), and every call's shards still cover the batch in order. The samples
// sleep milliseconds, so that a thread scheduled late on a busy machine (ctest -j2) moves the
// measured speeds little: with 400 and 100 us, the first shard once ended at 13 samples there.
BOOST_AUTO_TEST_CASE(adaptive_split_gives_a_slow_thread_fewer_samples) {
  Threads two(2);
  SplitScope adaptive(ShardSplit::adaptive);
  BOOST_TEST((shard_split() == ShardSplit::adaptive));
  const std::size_t n = 40;
  std::mutex m;
  for (int call = 0; call < 8; ++call) {
    std::vector<std::pair<std::size_t, std::size_t>> seen;
    sharded_forward<float>(n, [&](std::size_t begin, std::size_t end) {
      const auto per_sample = std::chrono::microseconds(begin == 0 ? 1600 : 400);
      std::this_thread::sleep_for(per_sample * (end - begin));
      std::lock_guard<std::mutex> lock(m);
      seen.emplace_back(begin, end);
      return Variable<float>(filled_tensor<float>({end - begin, 1}, 1.f));
    });
    std::sort(seen.begin(), seen.end());
    BOOST_REQUIRE(seen.size() == 2u);
    BOOST_TEST(seen[0].first == 0u);
    BOOST_TEST(seen[0].second == seen[1].first);
    BOOST_TEST(seen[1].second == n);
    if (call == 0) BOOST_TEST(seen[0].second == n / 2);  // no measurement yet: even
    if (call == 7) BOOST_TEST(seen[0].second <= 12u, "first shard " << seen[0].second);
  }
}

// last_shard_times: when each shard began and ended and when the region did, for the calling
// thread's last sharded call; shards that sleep 1 and 30 ms end in that order, the region after
// both, and each shard's own time holds its sleep.
BOOST_AUTO_TEST_CASE(last_shard_times_say_when_each_shard_ended) {
  Threads two(2);
  const auto sleeper = [](std::size_t begin, std::size_t end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(begin == 0 ? 1 : 30));
    return Variable<float>(filled_tensor<float>({end - begin, 1}, 1.f));
  };
  sharded_forward<float>(8, sleeper);
  const ShardTimes& times = last_shard_times();
  BOOST_REQUIRE(times.shard_end_us.size() == 2u);
  BOOST_TEST(!times.evicted);  // only sharded_step updates parameters
  BOOST_TEST(times.shard_end_us[0] >= 1000.0);
  BOOST_TEST(times.shard_end_us[1] >= 30000.0);
  BOOST_TEST(times.shard_end_us[0] < times.shard_end_us[1]);
  BOOST_TEST(times.region_us >= times.shard_end_us[1]);
  BOOST_REQUIRE(times.shard_begin_us.size() == 2u);
  for (std::size_t s = 0; s < 2; ++s) BOOST_TEST(times.shard_begin_us[s] >= 0.0);
  BOOST_TEST(times.shard_end_us[0] - times.shard_begin_us[0] >= 1000.0);
  BOOST_TEST(times.shard_end_us[1] - times.shard_begin_us[1] >= 30000.0);

  // One shard (a batch too small to split): its end is the region's.
  sharded_forward<float>(3, sleeper);
  BOOST_REQUIRE(last_shard_times().shard_end_us.size() == 1u);
  BOOST_REQUIRE(last_shard_times().shard_begin_us.size() == 1u);
  BOOST_TEST(last_shard_times().shard_begin_us[0] == 0.0);
  BOOST_TEST(last_shard_times().shard_end_us[0] >= 1000.0);
  BOOST_TEST(last_shard_times().shard_end_us[0] == last_shard_times().region_us);

  // sharded_step's region ends after its sums and update, after both shards.
  nn::manual_seed(2);
  auto model = nn::lenet5<float>();
  optim::SGD<float> opt(model->parameters(), optim::SGDOptions{});
  const Tensor<float> images = random_images<float>(8, 3);
  const std::vector<int> labels{0, 1, 2, 3, 4, 5, 6, 7};
  sharded_step<float>(
      8,
      [&](std::size_t begin, std::size_t end) {
        return cross_entropy(model->forward(Variable<float>(batch_rows(images, begin, end))),
                             batch_rows(labels, begin, end));
      },
      opt);
  const ShardTimes& step = last_shard_times();
  BOOST_REQUIRE(step.shard_end_us.size() == 2u);
  BOOST_REQUIRE(step.shard_begin_us.size() == 2u);
  for (std::size_t s = 0; s < 2; ++s) {
    BOOST_TEST(step.shard_end_us[s] > step.shard_begin_us[s]);
    BOOST_TEST(step.region_us >= step.shard_end_us[s]);
  }
}

// The gradient of an uneven, adaptive split is still the batch's, up to rounding: shards of 16 and
// 48 (set_shard_split forgets the speeds measured before, so each test starts from even).
BOOST_AUTO_TEST_CASE(adaptive_split_gradients_match_one_backward) {
  Threads two(2);
  SplitScope adaptive(ShardSplit::adaptive);
  for (int call = 0; call < 6; ++call)
    sharded_forward<float>(64, [&](std::size_t begin, std::size_t end) {
      std::this_thread::sleep_for(std::chrono::microseconds(begin == 0 ? 300 : 50) * (end - begin));
      return Variable<float>(filled_tensor<float>({end - begin, 1}, 1.f));
    });
  std::vector<std::size_t> first;
  check_sharded_matches_whole<float>(64, 1e-5, &first);
  BOOST_REQUIRE(first.size() == 1u);
  BOOST_TEST(first[0] < 32u, "first shard " << first[0]);
  check_sharded_matches_whole<double>(16, 1e-12);
}

BOOST_AUTO_TEST_CASE(sharded_gradients_match_one_backward_double) {
  check_sharded_matches_whole<double>(16, 1e-12);
  check_sharded_matches_whole<double>(9, 1e-12);  // shards of 5 and 4: weights 5/9 and 4/9
}

BOOST_AUTO_TEST_CASE(sharded_gradients_match_one_backward_float) {
  // The float kernels (direct and lanes convolutions) run on the shards too.
  check_sharded_matches_whole<float>(64, 1e-5);
}

namespace {

// The gradients of one sharded backward of `model` (cross-entropy) over images and labels, after
// zero_grad(set_to_none); the shard that starts at sample `late_begin`, if any, sleeps 30 ms first.
std::vector<Tensor<float>> sharded_grads(nn::Module<float>& model, const Tensor<float>& images,
                                         const std::vector<int>& labels, bool set_to_none,
                                         std::size_t late_begin = std::size_t(-1)) {
  model.zero_grad(set_to_none);
  sharded_backward<float>(labels.size(), [&](std::size_t begin, std::size_t end) {
    if (begin == late_begin) std::this_thread::sleep_for(std::chrono::milliseconds(30));
    return cross_entropy(model.forward(Variable<float>(batch_rows(images, begin, end))),
                         batch_rows(labels, begin, end));
  });
  return grads_of(model);
}

}  // namespace

BOOST_AUTO_TEST_CASE(sharded_runs_are_bit_identical) {
  Threads two(2);
  nn::manual_seed(5);
  auto model = nn::lenet5<float>();
  const Tensor<float> images = random_images<float>(32, 7);
  const std::vector<int> labels = random_labels(32, 8);
  const auto run = [&](bool set_to_none) {
    return sharded_grads(*model, images, labels, set_to_none);
  };
  const auto a = run(false);
  const auto b = run(false);
  // With the gradients dropped, the shards' sum is stored instead of added to zeros: the same.
  const auto c = run(true);
  for (std::size_t i = 0; i < a.size(); ++i) {
    BOOST_TEST(std::equal(a[i].begin(), a[i].end(), b[i].begin()));
    BOOST_TEST(std::equal(a[i].begin(), a[i].end(), c[i].begin()));
  }
}

// The shard threads wait as long as libgomp's own threads would (its GOMP_SPINCOUNT documentation).
BOOST_AUTO_TEST_CASE(shard_threads_wait_as_libgomp_reads_its_settings) {
  BOOST_TEST(detail::wait_polls_for(nullptr, nullptr, false) == 300000);
  BOOST_TEST(detail::wait_polls_for("PASSIVE", "40000", false) == 0);
  BOOST_TEST(detail::wait_polls_for("active", nullptr, false) == LONG_MAX);
  BOOST_TEST(detail::wait_polls_for("active", "1000", false) == 1000);
  BOOST_TEST(detail::wait_polls_for(nullptr, "40000", false) == 40000);
  BOOST_TEST(detail::wait_polls_for(nullptr, "10k", false) == 10000);
  BOOST_TEST(detail::wait_polls_for(nullptr, "2M", false) == 2000000);
  BOOST_TEST(detail::wait_polls_for(nullptr, "3g", false) == 3000000000L);
  BOOST_TEST(detail::wait_polls_for(nullptr, "INFINITE", false) == LONG_MAX);
  BOOST_TEST(detail::wait_polls_for(nullptr, "infinity", false) == LONG_MAX);
  BOOST_TEST(detail::wait_polls_for(nullptr, "many", false) == 300000);
  // More threads than CPUs: at most 100 spins, or 1000 with OMP_WAIT_POLICY=active.
  BOOST_TEST(detail::wait_polls_for(nullptr, "40000", true) == 100);
  BOOST_TEST(detail::wait_polls_for(nullptr, "50", true) == 50);
  BOOST_TEST(detail::wait_polls_for("ACTIVE", nullptr, true) == 1000);
  BOOST_TEST(detail::wait_polls_for("passive", nullptr, true) == 0);
}

// The shard pool's threads wait for the next call spinning, then asleep: a call after they have
// gone to sleep must wake them (and not wait for ever), with the same gradients as before.
BOOST_AUTO_TEST_CASE(sharded_calls_wake_the_shard_threads_from_sleep) {
  if (detail::wait_polls() == LONG_MAX) {
    BOOST_TEST_MESSAGE(
        "the shard threads never sleep here (OMP_WAIT_POLICY=active or "
        "GOMP_SPINCOUNT=infinite): nothing to check");
    return;
  }
  Threads two(2);
  nn::manual_seed(5);
  auto model = nn::lenet5<float>();
  const Tensor<float> images = random_images<float>(16, 7);
  const std::vector<int> labels = random_labels(16, 8);
  const auto expected = sharded_grads(*model, images, labels, true);
  for (int call = 0; call < 3; ++call) {
    const auto all_asleep = [] {
      return detail::shard_threads_asleep() == detail::shard_threads_started();
    };
    for (int ms = 0; ms < 10000 && !all_asleep(); ms += 5)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    BOOST_REQUIRE_MESSAGE(detail::shard_threads_started() >= 1 && all_asleep(),
                          "the shard threads did not all go to sleep within 10 s");
    const auto got = sharded_grads(*model, images, labels, true);
    for (std::size_t i = 0; i < got.size(); ++i)
      BOOST_TEST(std::equal(got[i].begin(), got[i].end(), expected[i].begin()));
  }
}

// One caller at a time has the shard pool; another, from its own thread at the same time, runs its
// shards in an OpenMP region. Either way the gradients are those of the calls made one at a time.
// A call from inside an OpenMP region runs as one shard, as on one thread.
BOOST_AUTO_TEST_CASE(sharded_calls_at_once_match_the_calls_one_at_a_time) {
  Threads two(2);
  set_shard_split(ShardSplit::even);
  const Tensor<float> images = random_images<float>(32, 7);
  const std::vector<int> labels = random_labels(32, 8);
  nn::manual_seed(5);
  auto reference = nn::lenet5<float>();
  const auto expected = sharded_grads(*reference, images, labels, true);
  const auto check = [&](const std::vector<Tensor<float>>& got) {
    BOOST_REQUIRE(got.size() == expected.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      BOOST_TEST(std::equal(got[i].begin(), got[i].end(), expected[i].begin()));
  };
  std::vector<std::shared_ptr<nn::Sequential<float>>> models;
  for (int m = 0; m < 2; ++m) {
    nn::manual_seed(5);
    models.push_back(nn::lenet5<float>());
  }
  std::vector<std::vector<Tensor<float>>> results(2 * 20);
  std::vector<std::thread> callers;
  for (int m = 0; m < 2; ++m)
    callers.emplace_back([&, m] {
      set_num_threads(2);
      for (int call = 0; call < 20; ++call)
        results[std::size_t(m * 20 + call)] =
            sharded_grads(*models[std::size_t(m)], images, labels, true);
    });
  for (std::thread& t : callers) t.join();
  for (const auto& got : results) check(got);

  std::vector<Tensor<float>> one_shard;
  {
    Threads one(1);
    one_shard = sharded_grads(*reference, images, labels, true);
  }
  std::vector<std::vector<Tensor<float>>> nested(2);
#pragma omp parallel num_threads(2)
  {
    const int t = omp_get_thread_num();
    if (t < 2)
      nested[std::size_t(t)] = sharded_grads(*models[std::size_t(t)], images, labels, true);
  }
  for (const auto& got : nested) {
    if (got.empty()) continue;  // the region had one thread
    BOOST_REQUIRE(got.size() == one_shard.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      BOOST_TEST(std::equal(got[i].begin(), got[i].end(), one_shard[i].begin()));
  }
}

// Inside a shard, nested regions run on one thread, and num_threads() must say so: the kernels
// size their per-thread splits by it (linear's GEMM split in two parts run one after the other
// before it did).
BOOST_AUTO_TEST_CASE(num_threads_is_one_inside_a_shard) {
  Threads two(2);
  BOOST_TEST(num_threads() == 2);
  std::atomic<int> shards{0}, inside_one{0};
  const Tensor<float> out = sharded_forward<float>(8, [&](std::size_t begin, std::size_t end) {
    ++shards;
    if (num_threads() == 1) ++inside_one;
    return Variable<float>(filled_tensor<float>({end - begin, 1}, 1.f));
  });
  BOOST_TEST(out.shape()[0] == 8u);
  BOOST_TEST(shards.load() == 2);
  BOOST_TEST(inside_one.load() == 2);
  BOOST_TEST(num_threads() == 2);
}

BOOST_AUTO_TEST_CASE(a_failing_shard_changes_no_gradient) {
  Threads two(2);
  Variable<double> w(Tensor<double>{1.0, 2.0}, true, "w");
  sum(mul(w, w)).backward();  // .grad = 2w
  const auto throws_in_second = [&](std::size_t begin, std::size_t) -> Variable<double> {
    if (begin > 0) throw Error("shard exploded");
    return sum(mul(w, w));
  };
  BOOST_TEST(
      throws_with([&] { sharded_backward<double>(8, throws_in_second); }, {"shard exploded"}));
  check_close(w.grad(), Tensor<double>{2.0, 4.0});
  // Any exception type comes through, not only xgrad::Error.
  BOOST_CHECK_THROW(sharded_backward<double>(8,
                                             [&](std::size_t, std::size_t) -> Variable<double> {
                                               throw std::runtime_error("other");
                                             }),
                    std::runtime_error);
}

BOOST_AUTO_TEST_CASE(sharded_backward_rejects_bad_use) {
  Threads two(2);
  Variable<double> w(Tensor<double>{1.0, 2.0}, true, "w");
  BOOST_TEST(throws_with(
      [&] { sharded_backward<double>(8, [&](std::size_t, std::size_t) { return mul(w, w); }); },
      {"samples [0, 4)", "[2]", "scalar"}));
  BOOST_TEST(throws_with(
      [&] {
        NoGradGuard guard;
        sharded_backward<double>(8, [&](std::size_t, std::size_t) { return sum(w); });
      },
      {"NoGradGuard"}));
  BOOST_TEST(throws_with(
      [&] { sharded_backward<double>(0, [&](std::size_t, std::size_t) { return sum(w); }); },
      {"empty"}));
}

namespace {

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return shape_of(a) == shape_of(b) && std::equal(a.begin(), a.end(), b.begin());
}

// sharded_step's steps that evicted the parameters from the caches before the update, and those
// that did not (ShardTimes::evicted), as check_sharded_step_matches counted them.
struct EvictionCounts {
  int evicted = 0, kept = 0;
};

// Three training steps of two copies of LeNet-5 on the same batches, one by sharded_backward and
// opt.step(), the other by sharded_step: the same losses, gradients and parameters, bit for bit.
template <class MakeOptimizer>
void check_sharded_step_matches(const MakeOptimizer& make, bool set_to_none,
                                EvictionCounts& counts) {
  nn::manual_seed(21);
  auto by_two_calls = nn::lenet5<float>();
  nn::manual_seed(21);
  auto fused = nn::lenet5<float>();
  auto opt_a = make(by_two_calls->parameters());
  auto opt_b = make(fused->parameters());
  for (unsigned step = 0; step < 3; ++step) {
    const Tensor<float> images = random_images<float>(24, 30 + step);
    const std::vector<int> labels = random_labels(24, 40 + step);
    const auto loss_of = [&](nn::Module<float>& model) {
      return [&](std::size_t begin, std::size_t end) {
        return cross_entropy(model.forward(Variable<float>(batch_rows(images, begin, end))),
                             batch_rows(labels, begin, end));
      };
    };
    opt_a->zero_grad(set_to_none);
    const double a = sharded_backward<float>(24, loss_of(*by_two_calls));
    opt_a->step();
    opt_b->zero_grad(set_to_none);
    const double b = sharded_step<float>(24, loss_of(*fused), *opt_b);
    (last_shard_times().evicted ? counts.evicted : counts.kept) += 1;
    BOOST_TEST(a == b);
    const auto pa = by_two_calls->parameters(), pb = fused->parameters();
    for (std::size_t i = 0; i < pa.size(); ++i) {
      BOOST_TEST(same_bits(pa[i].grad(), pb[i].grad()), "step " << step << " gradient " << i);
      BOOST_TEST(same_bits(pa[i].value(), pb[i].value()), "step " << step << " parameter " << i);
    }
  }
}

// An optimiser that fails in prepare_update (a custom one, through the elementwise protocol).
struct FailingOptimizer final : optim::Optimizer<double> {
  using Optimizer::Optimizer;
  void prepare_update() override { throw Error("prepare failed"); }
  void update_range(std::size_t i, std::size_t begin, std::size_t end) override {
    std::fill(params_[i].mutable_value().begin() + begin, params_[i].mutable_value().begin() + end,
              0.0);
  }
  optim::NamedTensors<double> export_state() const override { return {}; }
  void import_state(const optim::NamedTensors<double>&) override {}
};

}  // namespace

BOOST_AUTO_TEST_CASE(sharded_step_matches_sharded_backward_then_step) {
  using Params = std::vector<Variable<float>>;
  const auto sgd = [](optim::SGDOptions o) {
    return [o](Params p) { return std::make_unique<optim::SGD<float>>(std::move(p), o); };
  };
  for (int threads : {2, 1}) {
    Threads count(threads);
    EvictionCounts counts;
    for (bool set_to_none : {true, false}) {
      BOOST_TEST_CONTEXT("threads " << threads << ", set_to_none " << set_to_none) {
        check_sharded_step_matches(sgd({0.05, 0.0, 0.0, false, 0.0}), set_to_none, counts);
        check_sharded_step_matches(sgd({0.05, 0.9, 0.0, false, 0.0}), set_to_none, counts);
        check_sharded_step_matches(sgd({0.05, 0.9, 0.0, true, 1e-3}), set_to_none, counts);
        check_sharded_step_matches(sgd({0.05, 0.5, 0.25, false, 1e-2}), set_to_none, counts);
        check_sharded_step_matches(
            [](Params p) {
              return std::make_unique<optim::Adam<float>>(std::move(p), optim::AdamOptions{});
            },
            set_to_none, counts);
        check_sharded_step_matches(
            [](Params p) { return std::make_unique<optim::AdamW<float>>(std::move(p)); },
            set_to_none, counts);
      }
    }
    // Both ways of updating ran and matched: sharded_step tries each in turn at first, then the
    // other one now and then. One thread has one shard, so nothing to evict.
    BOOST_TEST_CONTEXT("threads " << threads) {
      BOOST_TEST(counts.kept > 0);
#ifdef __CLFLUSHOPT__
      BOOST_TEST((counts.evicted > 0) == (threads > 1));
#else
      BOOST_TEST(counts.evicted == 0);
#endif
    }
  }
}

BOOST_AUTO_TEST_CASE(sharded_step_applies_other_leaves_hooks_and_failures_as_the_two_calls) {
  Threads two(2);
  const Tensor<double> c = {{1.0, 0.0}, {2.0, 1.0}, {0.0, 3.0}, {1.0, 1.0},
                            {4.0, 0.0}, {0.0, 0.0}, {1.0, 2.0}, {3.0, 1.0}};
  // Loss: mean over rows r of Σ_j c[r, j]·w_j²·e_j, so dL/dw_j = 2·w_j·e_j·m_j and
  // dL/de_j = w_j²·m_j with m = mean_r c[r, :] = (1.5, 1).
  Variable<double> w(Tensor<double>{1.0, 2.0}, true, "w");
  Variable<double> e(Tensor<double>{3.0, -1.0}, true, "e");  // not the optimiser's
  const auto loss = [&](std::size_t begin, std::size_t end) {
    return mean(sum(mul(Variable<double>(batch_rows(c, begin, end)), mul(mul(w, w), e)), {1}));
  };
  optim::SGD<double> sgd({w}, optim::SGDOptions{0.1, 0.9});
  BOOST_TEST(sharded_step<double>(8, loss, sgd) == 1.5 * 3.0 - 4.0,
             boost::test_tools::tolerance(1e-12));
  check_close(w.grad(), Tensor<double>{9.0, -4.0});
  check_close(w.value(), Tensor<double>{1.0 - 0.9, 2.0 + 0.4});
  check_close(e.grad(), Tensor<double>{1.5, 4.0});
  check_close(e.value(), Tensor<double>{3.0, -1.0});

  // A hook on a parameter sees its whole gradient once (sharded_step makes the two calls).
  int hooked = 0;
  w.register_hook([&](Tensor<double>& g) {
    ++hooked;
    g *= 2.0;
  });
  w.zero_grad(true);
  e.zero_grad(true);
  sharded_step<double>(8, loss, sgd);
  BOOST_TEST(hooked == 1);
  check_close(w.grad(), Tensor<double>{2.0 * 2.0 * 0.1 * 3.0 * 1.5, 2.0 * 2.0 * 2.4 * -1.0});

  // A failing shard applies nothing; a failing prepare_update leaves .grad summed and the
  // parameters as they were.
  Variable<double> v(Tensor<double>{1.0, 2.0}, true, "v");
  bool explode = true;
  const auto v_loss = [&](std::size_t begin, std::size_t end) -> Variable<double> {
    if (begin > 0 && explode) throw Error("shard exploded");
    return mean(sum(mul(Variable<double>(batch_rows(c, begin, end)), mul(v, v)), {1}));
  };
  optim::SGD<double> v_sgd({v}, optim::SGDOptions{0.1});
  BOOST_TEST(throws_with([&] { sharded_step<double>(8, v_loss, v_sgd); }, {"shard exploded"}));
  BOOST_TEST(!v.has_grad());
  check_close(v.value(), Tensor<double>{1.0, 2.0});
  explode = false;
  FailingOptimizer failing({v}, 0.1, "failing");
  BOOST_TEST(throws_with([&] { sharded_step<double>(8, v_loss, failing); }, {"prepare failed"}));
  check_close(v.grad(), Tensor<double>{2.0 * 1.0 * 1.5, 2.0 * 2.0 * 1.0});
  check_close(v.value(), Tensor<double>{1.0, 2.0});

  // A parameter listed twice is updated twice, as step() does.
  v.zero_grad(true);
  optim::SGD<double> twice({v, v}, optim::SGDOptions{0.1});
  sharded_step<double>(8, v_loss, twice);
  check_close(v.value(), Tensor<double>{1.0 - 2 * 0.1 * 3.0, 2.0 - 2 * 0.1 * 4.0});
  BOOST_TEST(
      throws_with([&] { sharded_step<double>(0, v_loss, twice); }, {"sharded_step", "empty"}));
}

BOOST_AUTO_TEST_CASE(sharded_forward_concatenates_shards) {
  Threads two(2);
  nn::manual_seed(4);
  auto model = nn::lenet5<float>();
  model->eval();
  const Tensor<float> images = random_images<float>(20, 9);
  Tensor<float> whole;
  {
    NoGradGuard guard;
    whole = model->forward(Variable<float>(images)).value();
  }
  std::atomic<bool> recorded{false};
  const Tensor<float> got = sharded_forward<float>(20, [&](std::size_t begin, std::size_t end) {
    const Variable<float> y = model->forward(Variable<float>(batch_rows(images, begin, end)));
    if (y.grad_fn() != nullptr) recorded = true;
    return y;
  });
  BOOST_TEST(!recorded.load());  // no graph in any shard's thread
  check_close_scaled(got, whole, 1e-6);
  BOOST_TEST(throws_with(
      [&] {
        sharded_forward<float>(8, [&](std::size_t, std::size_t) {
          return Variable<float>(empty_tensor<float>({3, 10}));
        });
      },
      {"samples [0, 4)", "[3,10]", "4 rows"}));
  BOOST_TEST(throws_with(
      [&] {
        sharded_forward<float>(8, [&](std::size_t begin, std::size_t) {
          return Variable<float>(empty_tensor<float>({4, begin == 0 ? 3u : 5u}));
        });
      },
      {"[4,3]", "[4,5]", "beyond dimension 0"}));
}

BOOST_AUTO_TEST_CASE(batch_rows_copies_a_range) {
  const Tensor<double> t = {{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}};
  check_close(batch_rows(t, 1, 3), Tensor<double>{{3.0, 4.0}, {5.0, 6.0}});
  BOOST_TEST(batch_rows(t, 2, 2).shape()[0] == 0u);
  BOOST_TEST(throws_with([&] { batch_rows(t, 2, 4); }, {"[2, 4)", "[3,2]"}));
  BOOST_TEST(throws_with([&] { batch_rows(t, 2, 1); }, {"[2, 1)"}));
  const std::vector<int> labels = {7, 8, 9};
  BOOST_TEST((batch_rows(labels, 1, 3) == std::vector<int>{8, 9}));
  BOOST_TEST(throws_with([&] { batch_rows(labels, 1, 4); }, {"[1, 4)", "3 labels"}));
}

BOOST_AUTO_TEST_CASE(captured_leaf_gradients_wait_for_apply) {
  Variable<double> w(Tensor<double>{1.0, 2.0}, true, "w");
  int hook_calls = 0;
  w.register_hook([&](Tensor<double>&) { ++hook_calls; });
  LeafGradients<double> held;
  {
    CaptureGuard<double> guard(held);
    sum(mul(w, w)).backward();  // 2w
    sum(w).backward();          // 1, summed into the same entry
  }
  BOOST_TEST(!w.has_grad());
  BOOST_TEST(held.size() == 1u);
  BOOST_TEST(hook_calls == 0);
  held.apply();
  check_close(w.grad(), Tensor<double>{3.0, 5.0});
  BOOST_TEST(hook_calls == 1);
  BOOST_TEST(held.size() == 0u);
  sum(w).backward();  // the guard is gone: straight into .grad again
  check_close(w.grad(), Tensor<double>{4.0, 6.0});
}

BOOST_AUTO_TEST_CASE(sharded_hooks_see_the_batch_gradient_once) {
  Threads two(2);
  Variable<double> w(Tensor<double>{1.0, 2.0}, true, "w");
  const Tensor<double> c = {{1.0, 0.0}, {2.0, 1.0}, {0.0, 3.0}, {1.0, 1.0},
                            {4.0, 0.0}, {0.0, 0.0}, {1.0, 2.0}, {3.0, 1.0}};
  std::vector<Tensor<double>> seen;
  w.register_hook([&](Tensor<double>& g) { seen.push_back(g); });
  // Loss: mean over rows r of Σ_j c[r, j]·w_j², so dL/dw_j = 2·w_j·mean_r c[r, j].
  const double loss = sharded_backward<double>(8, [&](std::size_t begin, std::size_t end) {
    const Variable<double> rows(batch_rows(c, begin, end));
    return mean(sum(mul(rows, mul(w, w)), {1}));
  });
  BOOST_TEST(loss == (1.5 * 1.0 + 1.0 * 4.0), boost::test_tools::tolerance(1e-12));
  BOOST_REQUIRE(seen.size() == 1u);
  check_close(seen[0], Tensor<double>{2.0 * 1.0 * 1.5, 2.0 * 2.0 * 1.0});
  check_close(w.grad(), seen[0]);
  // A second step adds into the existing gradient (the hook still sees one batch's gradient).
  sharded_backward<double>(8, [&](std::size_t begin, std::size_t end) {
    return mean(sum(mul(Variable<double>(batch_rows(c, begin, end)), mul(w, w)), {1}));
  });
  BOOST_REQUIRE(seen.size() == 2u);
  check_close(seen[1], seen[0]);
  check_close(w.grad(), Tensor<double>{6.0, 8.0});
}

BOOST_AUTO_TEST_CASE(apply_sum_of_a_large_leaf_matches_the_serial_order) {
  // 300,000 elements: summed by all threads (from 2^18), each element in part order, so the
  // result equals (grad + part 0) + part 1 bit for bit.
  Threads two(2);
  const std::size_t n = 300000;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Tensor<float> a = empty_tensor<float>({n}), b = empty_tensor<float>({n}),
                g = empty_tensor<float>({n});
  for (std::size_t i = 0; i < n; ++i)
    a.data()[i] = u(rng), b.data()[i] = u(rng), g.data()[i] = u(rng);
  Variable<float> w(filled_tensor<float>({n}, 0.f), true, "w");
  w.backward(g);  // w.grad = g
  std::vector<LeafGradients<float>> parts(2);
  {
    CaptureGuard<float> guard(parts[0]);
    w.backward(a);
  }
  {
    CaptureGuard<float> guard(parts[1]);
    w.backward(b);
  }
  LeafGradients<float>::apply_sum(parts);
  bool same = true;
  for (std::size_t i = 0; i < n; ++i)
    same = same && w.grad().data()[i] == (g.data()[i] + a.data()[i]) + b.data()[i];
  BOOST_TEST(same);
  BOOST_TEST(parts[0].size() == 0u);
  BOOST_TEST(parts[1].size() == 0u);
}

BOOST_AUTO_TEST_CASE(capture_guards_nest) {
  Variable<double> w(Tensor<double>{1.0}, true, "w");
  LeafGradients<double> outer, inner;
  {
    CaptureGuard<double> a(outer);
    {
      CaptureGuard<double> b(inner);
      sum(w).backward();
    }
    sum(w).backward();
  }
  BOOST_TEST(inner.size() == 1u);
  BOOST_TEST(outer.size() == 1u);
  BOOST_TEST(!w.has_grad());
}

BOOST_AUTO_TEST_CASE(shardable_follows_layers_and_mode) {
  BOOST_TEST(nn::lenet5<float>()->shardable());
  BOOST_TEST(nn::convnet<float>()->shardable());
  auto resnet = nn::make_model<float>("resnet16");  // batch norm
  BOOST_TEST(!resnet->shardable());
  resnet->eval();
  BOOST_TEST(resnet->shardable());
  nn::Sequential<float> with_dropout{std::make_shared<nn::Linear<float>>(4, 4),
                                     std::make_shared<nn::Dropout<float>>(0.5)};
  BOOST_TEST(!with_dropout.shardable());
  with_dropout.eval();
  BOOST_TEST(with_dropout.shardable());
  nn::Sequential<float> no_drop{std::make_shared<nn::Dropout<float>>(0.0)};
  BOOST_TEST(no_drop.shardable());
}

// --- A finished shard's thread helps the others (detail::for_chunks) ----------------------------

namespace {

// A chunk body for the help tests: records which thread ran each chunk, and holds every chunk until
// two threads have run chunks (or 10 s have passed), so that the other shard's thread, once its
// own shard has ended, is sure to take some.
struct ChunkLog {
  explicit ChunkLog(int chunks) : runs(std::size_t(chunks)), by(std::size_t(chunks)) {}
  std::mutex m;
  std::vector<int> runs;
  std::vector<std::thread::id> by;
  std::vector<std::thread::id> threads;

  void record(int c) {
    std::lock_guard<std::mutex> lock(m);
    ++runs[std::size_t(c)];
    by[std::size_t(c)] = std::this_thread::get_id();
    if (std::find(threads.begin(), threads.end(), by[std::size_t(c)]) == threads.end())
      threads.push_back(by[std::size_t(c)]);
  }
  void wait_for_two_threads() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(m);
        if (threads.size() >= 2) return;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(for_chunks_outside_a_shard_runs_here_in_order) {
  Threads two(2);
  std::vector<int> order;
  std::vector<std::thread::id> by;
  detail::for_chunks(5, [&](int c) {
    order.push_back(c);
    by.push_back(std::this_thread::get_id());
  });
  BOOST_TEST((order == std::vector<int>{0, 1, 2, 3, 4}));
  BOOST_TEST(std::count(by.begin(), by.end(), std::this_thread::get_id()) == 5);
  detail::for_chunks(0, [&](int) { BOOST_FAIL("a loop of no chunks ran one"); });
}

// The second shard's loop of 8 chunks: the first shard's thread, done at once, runs some of them,
// and each chunk runs exactly once.
BOOST_AUTO_TEST_CASE(a_finished_shard_helps_with_the_others_chunks) {
  Threads two(2);
  ChunkLog log(8);
  const long helped_before = detail::helped_chunks();
  std::thread::id owner;
  sharded_forward<float>(8, [&](std::size_t begin, std::size_t end) {
    if (begin > 0) {
      owner = std::this_thread::get_id();
      detail::for_chunks(8, [&](int c) {
        log.record(c);
        log.wait_for_two_threads();
      });
    }
    return Variable<float>(filled_tensor<float>({end - begin, 1}, 1.f));
  });
  BOOST_TEST((log.runs == std::vector<int>(8, 1)));
  BOOST_TEST(log.threads.size() == 2u);
  const long by_helper =
      std::count_if(log.by.begin(), log.by.end(), [&](std::thread::id id) { return id != owner; });
  BOOST_TEST(by_helper >= 1);
  BOOST_TEST(detail::helped_chunks() - helped_before == by_helper);
}

// A chunk that throws on the helping thread: the shard that owns the loop rethrows it, and the
// call reports it as any failing shard's.
BOOST_AUTO_TEST_CASE(an_exception_in_a_helped_chunk_reaches_the_caller) {
  Threads two(2);
  ChunkLog log(8);
  const auto run = [&] {
    sharded_forward<float>(8, [&](std::size_t begin, std::size_t end) {
      if (begin > 0) {
        const std::thread::id owner = std::this_thread::get_id();
        detail::for_chunks(8, [&](int c) {
          log.record(c);
          log.wait_for_two_threads();
          if (std::this_thread::get_id() != owner) throw Error("chunk " + std::to_string(c));
        });
      }
      return Variable<float>(filled_tensor<float>({end - begin, 1}, 1.f));
    });
  };
  BOOST_TEST(throws_with(run, {"chunk "}));
  for (int r : log.runs) BOOST_TEST(r <= 1);  // the loop ended at the first failure
}

// --- Each thread on its own share first (detail::for_each_own_first) ----------------------------

namespace {

// Polls `done` until it holds or 10 s have passed; returns whether it held.
template <class Pred>
bool wait_until(const Pred& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(thread_parts_cover_the_range_in_whole_cache_lines) {
  for (std::size_t element : {4u, 8u})
    for (std::size_t threads : {1u, 2u, 3u, 8u})
      for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 150u, 1000u}) {
        std::size_t next = 0;
        for (std::size_t t = 0; t < threads; ++t) {
          const auto [begin, end] = detail::thread_part(n, t, threads, element);
          BOOST_TEST(begin == next, "n " << n << " part " << t << " of " << threads);
          BOOST_TEST(begin <= end);
          if (end < n) BOOST_TEST((end * element) % 64 == 0u, "part ends at " << end);
          next = end;
        }
        BOOST_TEST(next == n, "n " << n << " covered to " << next);
      }
  // 150 floats over two threads: 80 (five lines) and 70.
  BOOST_TEST(detail::thread_part(150, 0, 2, 4).second == 80u);
}

BOOST_AUTO_TEST_CASE(cache_lines_cover_every_byte_wherever_the_bytes_start) {
  alignas(64) static char buffer[64 * 8];
  for (std::size_t offset = 0; offset < 64; ++offset)
    for (std::size_t bytes : {0u, 1u, 4u, 63u, 64u, 65u, 128u, 200u, 320u}) {
      const char* p = buffer + offset;
      std::vector<const char*> lines;
      detail::for_each_cache_line(
          p, bytes, [&](const void* l) { lines.push_back(static_cast<const char*>(l)); });
      // The line of p's first byte, the line of its last, and every one between, once each
      // (offset 16 with 128 bytes: three lines, not the two that 64-byte steps from p reach).
      const std::size_t expected = bytes == 0 ? 0 : (offset + bytes - 1) / 64 + 1;
      BOOST_TEST_REQUIRE(lines.size() == expected,
                         "offset " << offset << ", " << bytes << " bytes");
      for (std::size_t i = 0; i < lines.size(); ++i)
        BOOST_TEST(lines[i] == buffer + 64 * i, "offset " << offset << ", line " << i);
    }
}

BOOST_AUTO_TEST_CASE(for_each_own_first_runs_every_index_once) {
  for (int threads : {1, 2, 3, 8})
    for (int n : {0, 1, 2, 5, 64}) {
      std::vector<std::atomic<int>> runs(std::size_t(n) + 1);
      detail::for_each_own_first(n, threads, [&](int i) { ++runs[std::size_t(i)]; });
      for (int i = 0; i < n; ++i) BOOST_TEST(runs[std::size_t(i)].load() == 1);
      BOOST_TEST(runs[std::size_t(n)].load() == 0);  // nothing past the end
    }
  std::vector<int> order;  // one thread: here, in order
  detail::for_each_own_first(4, 1, [&](int i) { order.push_back(i); });
  BOOST_TEST((order == std::vector<int>{0, 1, 2, 3}));
}

// 2 threads, 8 indices: the shares are 0-3 and 4-7. Index 4 waits until index 7 has started, so its
// thread cannot take any of 5-7: the thread of share 0, once done with 0-3, must take them. The
// indices of share 0 wait until index 4 has started, so neither thread takes the other's share
// before its own.
BOOST_AUTO_TEST_CASE(for_each_own_first_starts_on_its_share_and_helps_a_slow_thread) {
  std::vector<std::atomic<bool>> started(8);
  std::vector<std::thread::id> by(8);
  bool waits_ended = true;
  std::mutex m;
  detail::for_each_own_first(8, 2, [&](int i) {
    started[std::size_t(i)] = true;
    by[std::size_t(i)] = std::this_thread::get_id();
    const bool ok = i < 4    ? wait_until([&] { return started[4].load(); })
                    : i == 4 ? wait_until([&] { return started[7].load(); })
                             : true;
    std::lock_guard<std::mutex> lock(m);
    waits_ended = waits_ended && ok;
  });
  BOOST_TEST(waits_ended);
  for (int i = 1; i < 4; ++i) BOOST_TEST((by[std::size_t(i)] == by[0]));
  BOOST_TEST((by[4] != by[0]));
  for (int i = 5; i < 8; ++i) BOOST_TEST((by[std::size_t(i)] == by[0]));  // helped
}

// The conv layers' images run in helpable chunks whose dW sums are added in chunk order, so the
// gradients are the same bit for bit whichever thread ran which chunk: here one shard starts
// 30 ms late, so the other one's thread has long ended and takes chunks of its conv layers. By
// then that thread yields its core between polls; on a machine that other processes keep busy
// (ctest -j2) it may not run again before a short late shard ends, so the shards are 128 images
// and the attempts many (20 attempts of 32-image shards all missed there, 4 times in 60).
BOOST_AUTO_TEST_CASE(helped_conv_gradients_are_bit_identical) {
  Threads two(2);
  nn::manual_seed(9);
  auto model = nn::lenet5<float>();
  const std::size_t n = 256;
  const Tensor<float> images = random_images<float>(n, 11);
  const std::vector<int> labels = random_labels(n, 12);
  const auto run = [&](std::size_t late_begin) {
    return sharded_grads(*model, images, labels, true, late_begin);
  };
  const auto plain = run(n);  // no shard starts late
  long helped = 0;
  for (int attempt = 0; attempt < 100 && helped == 0; ++attempt) {
    const long before = detail::helped_chunks();
    const auto first_late = run(0);
    const auto second_late = run(n / 2);
    helped = detail::helped_chunks() - before;
    for (std::size_t i = 0; i < plain.size(); ++i) {
      BOOST_TEST(std::equal(plain[i].begin(), plain[i].end(), first_late[i].begin()));
      BOOST_TEST(std::equal(plain[i].begin(), plain[i].end(), second_late[i].begin()));
    }
  }
  BOOST_TEST(helped > 0);
}
