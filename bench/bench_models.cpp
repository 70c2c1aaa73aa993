// xgrad side of the model benchmark: training and inference img/s of LeNet-5 and the convnet on
// synthetic batches, with the same step as bench/torch_bench.py (forward, cross-entropy, backward,
// SGD momentum). The batch is sharded over the threads (xgrad::sharded_step and sharded_forward),
// as the training example does; --no-shard leaves the threading to the kernels,
// and --split even|adaptive picks the shards' sizes (xgrad::ShardSplit; even by default).
// One line per run: `xgrad <model> <mode> threads=<t> batch=<b> split=<s> img_per_s=<x>
// step_us_p10=<p> step_us_p50=<q> shard_gap_us_p50=<g> after_shards_us_p50=<u> evicted=<e>`:
// percentiles of the steps' wall times in microseconds, then medians over the steps of how long
// the first shard to end waited for the last, and of the sums and update after the shards, and
// the share of the steps that evicted the parameters from the caches before updating them
// (xgrad::last_shard_times; 0 with one shard).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

#include <CLI/CLI.hpp>
#include <xgrad/nn/nn.hpp>
#include <xgrad/optim/optimizer.hpp>
#include <xgrad/xgrad.hpp>

using namespace xgrad;

namespace {

struct Args {
  std::string model = "lenet", mode = "train";
  int threads = 2, batch = 64, warmup = 5, repeats = 1;
  double seconds = 2.0;
  bool banner = false;
  bool shard = true;  ///< sharded_backward / sharded_forward (else the kernels' own threading)
  ShardSplit split = ShardSplit::even;
};

// The flags, checked; a bad one throws CLI::ParseError naming it (--help too, with exit code 0).
Args parse(CLI::App& app, int argc, char** argv) {
  Args a;
  std::string split = "even";
  app.add_option("--model", a.model, "Model")->check(CLI::IsMember(nn::model_names()));
  app.add_option("--mode", a.mode, "train (forward, cross-entropy, backward, SGD step) or infer")
      ->check(CLI::IsMember({"train", "infer"}));
  app.add_option("--threads", a.threads, "OpenMP threads")->check(CLI::Range(1, 1024));
  app.add_option("--batch", a.batch, "Batch size")->check(CLI::Range(1, 1 << 20));
  app.add_option("--seconds", a.seconds, "Timed seconds per run")->check(CLI::PositiveNumber);
  app.add_option("--warmup", a.warmup, "Untimed steps first")->check(CLI::Range(0, 1 << 20));
  app.add_option("--repeats", a.repeats, "Runs, one line each")->check(CLI::Range(1, 10000));
  app.add_flag("--banner", a.banner, "Print the runtime banner (BLAS core, threads) and exit");
  bool no_shard = false;
  app.add_flag("--no-shard", no_shard,
               "Leave the threading to the kernels instead of sharding the batch");
  app.add_option("--split", split, "Shard sizes: even or adaptive (xgrad::ShardSplit)")
      ->check(CLI::IsMember({"even", "adaptive"}));
  app.parse(argc, argv);
  a.shard = !no_shard;
  a.split = split == "even" ? ShardSplit::even : ShardSplit::adaptive;
  return a;
}

struct Measured {
  double img_per_s = 0;
  // Percentiles of the steps' wall times. On this project's VM each vCPU runs through phases about
  // 1.5x slower, from one step to whole seconds long; a 2-thread step waits for the slower of its
  // two threads, so it is slow more often than a 1-thread one. The 10th percentile shows the speed
  // with both fast (see bench/HISTORY.md).
  double step_us_p10 = 0, step_us_p50 = 0;
  // Medians over the steps of xgrad::last_shard_times(): how long the first shard to end waited
  // for the last, and the sums and update after them (sharded_step); 0 with one shard.
  double shard_gap_us_p50 = 0, after_shards_us_p50 = 0;
  // The share of the timed steps in which sharded_step evicted the parameters the other thread
  // updates from the caches before its update (ShardTimes::evicted); 0 without shards.
  double evicted_share = 0;
  // Medians over the steps, with --shard (one shard or several): a shard's own time, from when its
  // thread started it to its end (the mean over the step's shards); when the last shard started,
  // from the region's start (0 with one shard); and the step's time outside the sharded call's
  // region (zero_grad, the call's set-up and its end, and with one shard the optimiser's step). A
  // step is then about outside + start + shard + shard_gap + after_shards.
  double shard_us_p50 = 0, start_us_p50 = 0, outside_us_p50 = 0;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::size_t(p * double(v.size() - 1))];
}

Measured measure(nn::Module<float>& model, optim::SGD<float>& opt, const Args& a,
                 const Variable<float>& x, const std::vector<int>& labels) {
  const bool train = a.mode == "train";
  model.train(train);
  const std::size_t n = labels.size();
  const auto shard_logits = [&](std::size_t begin, std::size_t end) {
    return model(Variable<float>(batch_rows(x.value(), begin, end)));
  };
  const auto shard_loss = [&](std::size_t begin, std::size_t end) {
    return cross_entropy(shard_logits(begin, end), batch_rows(labels, begin, end));
  };
  const auto step = [&] {
    if (train) {
      opt.zero_grad(/*set_to_none=*/true);  // as torch_bench.py's opt.zero_grad(set_to_none=True)
      if (a.shard) {
        sharded_step<float>(n, shard_loss, opt);
      } else {
        cross_entropy(model(x), labels).backward();
        opt.step();
      }
    } else if (a.shard) {
      sharded_forward<float>(n, shard_logits);
    } else {
      NoGradGuard guard;
      model(x);
    }
  };
  for (int i = 0; i < a.warmup; ++i) step();
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  std::vector<double> steps, gaps, afters, shard_times, starts, outsides;
  std::size_t evicted = 0;
  for (auto last = start;;) {
    step();
    const auto now = clock::now();
    steps.push_back(std::chrono::duration<double, std::micro>(now - last).count());
    const ShardTimes& times = last_shard_times();
    if (a.shard) {
      double own = 0;
      for (std::size_t s = 0; s < times.shard_end_us.size(); ++s)
        own += times.shard_end_us[s] - times.shard_begin_us[s];
      shard_times.push_back(own / double(times.shard_end_us.size()));
      starts.push_back(*std::max_element(times.shard_begin_us.begin(), times.shard_begin_us.end()));
      outsides.push_back(steps.back() - times.region_us);
    }
    if (a.shard && times.shard_end_us.size() > 1) {
      const auto [first, slowest] =
          std::minmax_element(times.shard_end_us.begin(), times.shard_end_us.end());
      gaps.push_back(*slowest - *first);
      afters.push_back(times.region_us - *slowest);
      evicted += times.evicted ? 1 : 0;
    }
    last = now;
    const double elapsed = std::chrono::duration<double>(now - start).count();
    if (elapsed >= a.seconds && steps.size() >= 3) {
      Measured m;
      m.img_per_s = double(steps.size()) * a.batch / elapsed;
      m.step_us_p10 = percentile(steps, 0.1);
      m.step_us_p50 = percentile(steps, 0.5);
      if (!gaps.empty()) {
        m.shard_gap_us_p50 = percentile(gaps, 0.5);
        m.after_shards_us_p50 = percentile(afters, 0.5);
        m.evicted_share = double(evicted) / double(gaps.size());
      }
      if (!shard_times.empty()) {
        m.shard_us_p50 = percentile(shard_times, 0.5);
        m.start_us_p50 = percentile(starts, 0.5);
        m.outside_us_p50 = percentile(outsides, 0.5);
      }
      return m;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  setup_process(argc, argv);
  CLI::App app{"Training or inference img/s of a reference model on synthetic 28x28 batches",
               "bench_models"};
  Args a;
  try {
    a = parse(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "bench_models: error: " << e.what() << " (see --help)\n";
    return 2;
  }
  try {
    set_num_threads(a.threads);
    set_shard_split(a.split);
    if (a.banner) {
      std::cout << runtime_banner() << "\n";
      return 0;
    }
    nn::manual_seed(0);
    auto model = nn::make_model<float>(a.model);
    optim::SGDOptions options;
    options.lr = 0.01;
    options.momentum = 0.9;
    optim::SGD<float> opt(model->parameters(), options);
    std::mt19937_64 rng(0);
    std::normal_distribution<float> normal(0.f, 1.f);
    Tensor<float> images = empty_tensor<float>({std::size_t(a.batch), 1, 28, 28});
    for (float& v : images) v = normal(rng);
    std::vector<int> labels(a.batch);
    for (int& l : labels) l = int(rng() % 10);
    const Variable<float> x(std::move(images));
    for (int r = 0; r < a.repeats; ++r) {
      const Measured m = measure(*model, opt, a, x, labels);
      std::cout << "xgrad " << a.model << " " << a.mode << " threads=" << a.threads
                << " batch=" << a.batch
                << " split=" << (a.split == ShardSplit::even ? "even" : "adaptive")
                << " img_per_s=" << m.img_per_s << " step_us_p10=" << m.step_us_p10
                << " step_us_p50=" << m.step_us_p50 << " shard_gap_us_p50=" << m.shard_gap_us_p50
                << " after_shards_us_p50=" << m.after_shards_us_p50
                << " shard_us_p50=" << m.shard_us_p50 << " start_us_p50=" << m.start_us_p50
                << " outside_us_p50=" << m.outside_us_p50
                << " evicted=" << std::to_string(m.evicted_share) << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
