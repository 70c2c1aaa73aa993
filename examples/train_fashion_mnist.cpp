// Trains a small CNN on Fashion-MNIST: ./run.sh train [flags], or train_fashion_mnist --help.
//
// Each epoch prints one line on stdout, appends a row to DIR/metrics.csv and saves
// DIR/checkpoint.safetensors atomically (model parameters and buffers, optimiser state, and the
// run's settings and progress as metadata), so --resume DIR/checkpoint.safetensors continues a
// run. At the end it draws DIR/curves.png with gnuplot. The test set is only reported; anything
// chosen (the best.safetensors checkpoint) is chosen on a validation split (--val N) of the
// training images.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/training.hpp"

namespace fs = std::filesystem;
using namespace xgrad;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kProgram = "train_fashion_mnist";

struct Settings {
  std::string model = "lenet";
  std::size_t epochs = 15;
  std::size_t batch_size = 64;
  double lr = 0.0;  // 0: the optimiser's default (see default_lr)
  std::string optimizer = "sgd";
  double momentum = 0.9;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";
  bool augment = false;
  int threads = 0;
  std::string split = "even";
  std::uint64_t seed = 1;
  std::string data_dir = data::default_fashion_mnist_dir();
  std::string out;
  std::string resume;
  std::size_t limit = 0;
  std::size_t val = 0;
  std::size_t test_limit = 0;
  std::size_t eval_batch = 500;
  bool plot = true;
};

double default_lr(const std::string& optimizer) {
  return optimizer == "sgd" ? 0.05 : 1e-3;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(double v, int precision) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

std::string hms(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  std::ostringstream o;
  if (s >= 3600)
    o << s / 3600 << ":" << std::setw(2) << std::setfill('0') << (s / 60) % 60;
  else
    o << s / 60;
  o << ":" << std::setw(2) << std::setfill('0') << s % 60;
  return o.str();
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A one-line progress bar on stderr, redrawn at most ten times a second.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  void update(std::size_t epoch, std::size_t epochs, std::size_t batch, std::size_t batches,
              double running_loss, double img_per_s, double eta_seconds, bool force = false) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * batch / std::max<std::size_t>(1, batches));
    std::string bar(filled, '=');
    if (filled < kWidth) bar += '>' + std::string(kWidth - filled - 1, ' ');
    std::cerr << "\r\033[Kepoch " << epoch << "/" << epochs << " [" << bar << "] " << batch << "/"
              << batches << " loss " << fmt(running_loss, 4) << " " << fmt(img_per_s, 0)
              << " img/s ETA " << hms(eta_seconds) << std::flush;
  }
  void clear() {
    if (enabled_) std::cerr << "\r\033[K" << std::flush;
  }

 private:
  bool enabled_;
  Clock::time_point last_{};
};

struct EpochRow {
  std::size_t epoch = 0;
  double lr = 0, train_loss = 0, train_accuracy = 0;
  double val_loss = NAN, val_accuracy = NAN;
  double test_loss = 0, test_accuracy = 0, seconds = 0, img_per_s = 0;
};

const char* kCsvHeader =
    "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,"
    "epoch_seconds,img_per_s";

std::string csv_row(const EpochRow& r) {
  std::ostringstream s;
  s << r.epoch << "," << r.lr << "," << fmt(r.train_loss, 6) << "," << fmt(r.train_accuracy, 6)
    << ",";
  if (!std::isnan(r.val_loss)) s << fmt(r.val_loss, 6);
  s << ",";
  if (!std::isnan(r.val_accuracy)) s << fmt(r.val_accuracy, 6);
  s << "," << fmt(r.test_loss, 6) << "," << fmt(r.test_accuracy, 6) << "," << fmt(r.seconds, 3)
    << "," << fmt(r.img_per_s, 1);
  return s.str();
}

// Rows of an existing metrics.csv for epochs <= `upto` (a resumed run keeps its history).
std::vector<std::string> kept_csv_rows(const std::string& path, std::size_t upto) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line) || line != kCsvHeader) return rows;
  while (std::getline(in, line)) {
    try {
      if (!line.empty() && std::stoul(line.substr(0, line.find(','))) <= upto) rows.push_back(line);
    } catch (const std::exception&) {
    }
  }
  return rows;
}

void write_csv(const std::string& path, const std::vector<std::string>& rows) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kCsvHeader << "\n";
    for (const auto& r : rows) out << r << "\n";
    out.flush();
    if (!out) throw Error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

// Writes DIR/curves.gp and runs gnuplot on it. Returns a note for stderr when no plot was drawn.
std::string draw_curves(const fs::path& dir, bool with_val) {
  const fs::path script = dir / "curves.gp";
  {
    std::ofstream gp(script, std::ios::trunc);
    gp << "# Draws curves.png from metrics.csv: gnuplot curves.gp (run in this directory)\n"
          "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "  set terminal pngcairo size 1200,450 font ',10'\n"
          "} else {\n"
          "  set terminal png size 1200,450\n"
          "}\n"
          "set output 'curves.png'\n"
          "set datafile separator ','\n"
          "set key autotitle columnhead\n"
          "set grid\n"
          "set xlabel 'epoch'\n"
          "set multiplot layout 1,2\n"
          "set title 'loss (cross-entropy)'\n"
          "plot 'metrics.csv' using 1:3 with linespoints title 'train', \\\n"
          "     '' using 1:7 with linespoints title 'test'"
       << (with_val ? ", \\\n     '' using 1:5 with linespoints title 'validation'\n" : "\n")
       << "set title 'accuracy'\n"
          "set key bottom right\n"
          "plot 'metrics.csv' using 1:4 with linespoints title 'train', \\\n"
          "     '' using 1:8 with linespoints title 'test'"
       << (with_val ? ", \\\n     '' using 1:6 with linespoints title 'validation'\n" : "\n")
       << "unset multiplot\n";
    if (!gp) return "could not write " + script.string() + "; no curves.png";
  }
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "gnuplot not found (apt-get install gnuplot-nox): no curves.png, metrics are in " +
           (dir / "metrics.csv").string();
  const std::string cmd =
      "cd " + shell_quote(dir.string()) + " && gnuplot curves.gp >curves.log 2>&1";
  if (std::system(cmd.c_str()) != 0)
    return "gnuplot failed (see " + (dir / "curves.log").string() + "): no curves.png";
  std::error_code ec;
  fs::remove(dir / "curves.log", ec);
  return "";
}

std::string meta_string(const io::Metadata& m, const std::string& key, const std::string& path) {
  const auto it = m.find(key);
  if (it == m.end()) throw Error("checkpoint: " + path + ": metadata has no '" + key + "'");
  return it->second;
}

// parse(text) for a numeric metadata entry; an entry that does not parse names the key and text.
template <class Parse>
auto meta_number(const io::Metadata& m, const std::string& key, const std::string& path,
                 Parse parse) {
  const std::string text = meta_string(m, key, path);
  try {
    return parse(text);
  } catch (const std::exception&) {
    throw Error("checkpoint: " + path + ": metadata '" + key + "' is not a number: " + text);
  }
}

std::size_t meta_size(const io::Metadata& m, const std::string& key, const std::string& path) {
  return meta_number(m, key, path,
                     [](const std::string& t) { return std::size_t(std::stoull(t)); });
}

double meta_double(const io::Metadata& m, const std::string& key, const std::string& path) {
  return meta_number(m, key, path, [](const std::string& t) { return std::stod(t); });
}

std::string to_meta(double v) {
  std::ostringstream s;
  s << std::setprecision(17) << v;
  return s.str();
}

int run(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "Trains a small CNN on Fashion-MNIST. Defaults are the LeNet-5 recipe (SGD, momentum 0.9, "
      "lr 0.05, batch 64, weight decay 5e-4, cosine schedule, 15 epochs).",
      kProgram};
  app.option_defaults()->always_capture_default();
  auto* o_model =
      app.add_option("--model", s.model, "Model")->check(CLI::IsMember(nn::model_names()));
  auto* o_epochs =
      app.add_option("--epochs", s.epochs, "Total number of epochs")->check(CLI::Range(1, 100000));
  auto* o_batch =
      app.add_option("--batch-size", s.batch_size, "Mini-batch size")->check(CLI::Range(1, 65536));
  auto* o_lr = app.add_option("--lr", s.lr,
                              "Initial learning rate (default: 0.05 for sgd, 0.001 for adam/adamw)")
                   ->check(CLI::PositiveNumber);
  auto* o_opt = app.add_option("--optimizer", s.optimizer, "Optimiser")
                    ->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  auto* o_mom =
      app.add_option("--momentum", s.momentum, "SGD momentum")->check(CLI::Range(0.0, 0.999999));
  auto* o_wd = app.add_option("--weight-decay", s.weight_decay,
                              "Weight decay (L2 for sgd/adam, decoupled for adamw)")
                   ->check(CLI::Range(0.0, 1.0));
  auto* o_sched = app.add_option("--schedule", s.schedule,
                                 "Learning-rate schedule per epoch: cosine (to 0 at the last "
                                 "epoch), step (x0.1 every epochs/3), none")
                      ->check(CLI::IsMember({"cosine", "step", "none"}));
  auto* o_aug = app.add_flag("--augment", s.augment,
                             "Augment training images: random crop after 2-pixel padding, "
                             "horizontal flip");
  app.add_option("--threads", s.threads, "OpenMP threads (0: all cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--split", s.split,
                 "How a batch is split between the threads: even (results reproducible bit for "
                 "bit at a given thread count) or adaptive (by each thread's measured speed: "
                 "faster when other work slows a core, results equal to float rounding)")
      ->check(CLI::IsMember({"even", "adaptive"}));
  auto* o_seed = app.add_option("--seed", s.seed, "Seed for weights, shuffling, augmentation");
  app.add_option("--data-dir", s.data_dir, "Directory of the Fashion-MNIST idx(.gz) files");
  app.add_option("--out", s.out, "Output directory (default: runs/<model>)");
  app.add_option("--resume", s.resume,
                 "Continue from a checkpoint: model, optimiser state and epoch; settings not "
                 "given on the command line come from the checkpoint");
  auto* o_limit =
      app.add_option("--limit", s.limit, "Use only the first N training images (0: all)");
  auto* o_val =
      app.add_option("--val", s.val,
                     "Hold out N training images (seeded random split) for validation; "
                     "the best epoch by validation accuracy is saved to best.safetensors");
  app.add_option("--test-limit", s.test_limit, "Evaluate on the first N test images only (0: all)");
  app.add_option("--eval-batch", s.eval_batch, "Batch size for evaluation")
      ->check(CLI::Range(1, 65536));
  bool no_plot = false;
  app.add_flag("--no-plot", no_plot, "Do not run gnuplot");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << kProgram << ": error: " << e.what() << " (see --help)\n";
    return 2;
  }
  s.plot = !no_plot;

  // A resumed run takes every setting not given on the command line from the checkpoint.
  std::size_t start_epoch = 0;
  io::Metadata resume_meta;
  if (!s.resume.empty()) {
    resume_meta = examples::read_checkpoint_metadata(s.resume);
    const std::string& p = s.resume;
    if (resume_meta.count("format") == 0 || resume_meta.at("format") != examples::kCheckpointFormat)
      throw Error("checkpoint: " + p + ": not a training checkpoint of " + kProgram +
                  " (metadata 'format' is not " + examples::kCheckpointFormat + ")");
    const std::string saved_model = meta_string(resume_meta, "model", p);
    if (o_model->count() > 0 && s.model != saved_model)
      throw Error("checkpoint: " + p + " holds model '" + saved_model + "' but --model is '" +
                  s.model + "'");
    s.model = saved_model;
    start_epoch = meta_size(resume_meta, "epoch", p);
    if (o_epochs->count() == 0) s.epochs = meta_size(resume_meta, "epochs", p);
    if (o_batch->count() == 0) s.batch_size = meta_size(resume_meta, "batch_size", p);
    if (o_opt->count() == 0) s.optimizer = meta_string(resume_meta, "optimizer", p);
    if (o_lr->count() == 0) s.lr = meta_double(resume_meta, "lr", p);
    if (o_mom->count() == 0) s.momentum = meta_double(resume_meta, "momentum", p);
    if (o_wd->count() == 0) s.weight_decay = meta_double(resume_meta, "weight_decay", p);
    if (o_sched->count() == 0) s.schedule = meta_string(resume_meta, "schedule", p);
    if (o_aug->count() == 0) s.augment = meta_size(resume_meta, "augment", p) != 0;
    if (o_seed->count() == 0) s.seed = meta_size(resume_meta, "seed", p);
    if (o_limit->count() == 0) s.limit = meta_size(resume_meta, "limit", p);
    if (o_val->count() == 0) s.val = meta_size(resume_meta, "val", p);
  }
  if (s.lr == 0.0) s.lr = default_lr(s.optimizer);
  if (s.out.empty()) s.out = (fs::path("runs") / s.model).string();

  set_num_threads(s.threads);
  set_shard_split(s.split == "adaptive" ? ShardSplit::adaptive : ShardSplit::even);
  std::cout << runtime_banner() << ", " << s.split << " shard split" << std::endl;

  // Data: the validation split comes from the (limited) training images only.
  data::Dataset train_set, val_set, test_set;
  {
    data::Dataset full = data::load_fashion_mnist(s.data_dir, true);
    if (s.limit > 0) full = full.limit(s.limit);
    if (s.val >= full.size())
      throw Error("--val " + std::to_string(s.val) + " leaves no training images (only " +
                  std::to_string(full.size()) + " available)");
    if (s.val > 0)
      std::tie(train_set, val_set) = full.split(s.val, s.seed);
    else
      train_set = std::move(full);
  }
  test_set = data::load_fashion_mnist(s.data_dir, false);
  if (s.test_limit > 0) test_set = test_set.limit(s.test_limit);

  nn::manual_seed(s.seed);
  auto model = nn::make_model<float>(s.model);
  const auto params = model->parameters();
  std::unique_ptr<optim::Optimizer<float>> opt;
  if (s.optimizer == "sgd") {
    optim::SGDOptions o;
    o.lr = s.lr;
    o.momentum = s.momentum;
    o.weight_decay = s.weight_decay;
    opt = std::make_unique<optim::SGD<float>>(params, o);
  } else {
    optim::AdamOptions o;
    o.lr = s.lr;
    o.weight_decay = s.weight_decay;
    if (s.optimizer == "adam")
      opt = std::make_unique<optim::Adam<float>>(params, o);
    else
      opt = std::make_unique<optim::AdamW<float>>(params, o);
  }
  std::unique_ptr<optim::LRScheduler<float>> sched;
  if (s.schedule == "cosine")
    sched = std::make_unique<optim::CosineAnnealingLR<float>>(*opt, s.epochs);
  else if (s.schedule == "step")
    sched = std::make_unique<optim::StepLR<float>>(*opt, std::max<std::size_t>(1, s.epochs / 3));

  if (!s.resume.empty()) {
    examples::load_training_checkpoint(s.resume, *model, opt.get());
    if (opt->export_state().empty())
      std::cerr << kProgram << ": note: " << s.resume << " holds no " << opt->prefix()
                << " optimiser state; the optimiser starts afresh\n";
    if (start_epoch >= s.epochs)
      throw Error("checkpoint: " + s.resume + " has already done " + std::to_string(start_epoch) +
                  " of " + std::to_string(s.epochs) + " epochs (raise --epochs to go on)");
    if (sched) sched->set_epoch(start_epoch);
  }

  const fs::path out_dir(s.out);
  fs::create_directories(out_dir);
  const std::string csv_path = (out_dir / "metrics.csv").string();
  const std::string ckpt_path = (out_dir / "checkpoint.safetensors").string();
  std::vector<std::string> csv_rows;
  if (start_epoch > 0) {
    // The history of a resumed run: this directory's metrics.csv, else the checkpoint's.
    const fs::path beside = fs::path(s.resume).parent_path() / "metrics.csv";
    csv_rows = kept_csv_rows(fs::exists(csv_path) ? csv_path : beside.string(), start_epoch);
  }
  double best_val = -1.0;
  if (resume_meta.count("best_val_accuracy") > 0)
    best_val = meta_double(resume_meta, "best_val_accuracy", s.resume);

  data::LoaderOptions lo = data::LoaderOptions::fashion_mnist(s.batch_size, s.seed);
  if (s.augment) lo.augment = data::Augment{2, true};
  const data::DataLoader<float> loader(std::make_shared<const data::Dataset>(std::move(train_set)),
                                       lo);

  std::cerr << kProgram << ": model " << s.model << " (" << model->parameter_count()
            << " parameters), " << loader.num_samples() << " training images"
            << (s.val > 0 ? ", " + std::to_string(val_set.size()) + " validation" : "") << ", "
            << test_set.size() << " test; " << s.optimizer << " lr " << s.lr << " (" << s.schedule
            << "), batch " << s.batch_size << ", epochs " << s.epochs
            << (s.augment ? ", augmented" : "") << ", seed " << s.seed << "; output in "
            << out_dir.string() << (start_epoch > 0 ? "; resuming after epoch " : "")
            << (start_epoch > 0 ? std::to_string(start_epoch) : "") << "\n";

  const bool tty = isatty(STDERR_FILENO) != 0;
  Progress progress(tty);
  double train_seconds = 0.0;
  std::size_t images_trained = 0;
  const auto run_start = Clock::now();
  EpochRow last;
  for (std::size_t e = start_epoch; e < s.epochs; ++e) {
    model->train();
    EpochRow row;
    row.epoch = e + 1;
    row.lr = opt->lr();
    const auto epoch_start = Clock::now();
    const auto batches = loader.epoch(e);
    double loss_sum = 0.0;
    std::size_t seen = 0, correct = 0, b = 0;
    for (const data::Batch<float>& batch : batches) {
      const double loss = examples::train_step(*model, *opt, batch, &correct);
      if (!std::isfinite(loss))
        throw Error("training diverged: loss is " + std::to_string(loss) + " at epoch " +
                    std::to_string(e + 1) + ", batch " + std::to_string(b + 1) +
                    " (try a smaller --lr)");
      loss_sum += loss * batch.size();
      seen += batch.size();
      ++b;
      if (tty) {
        const double t = seconds_since(epoch_start);
        const double rate = seen / std::max(t, 1e-9);
        const double left = static_cast<double>(loader.num_samples() - seen) +
                            static_cast<double>(s.epochs - e - 1) * loader.num_samples();
        progress.update(e + 1, s.epochs, b, batches.size(), loss_sum / seen, rate, left / rate,
                        b == batches.size());
      }
    }
    row.seconds = seconds_since(epoch_start);
    progress.clear();
    train_seconds += row.seconds;
    images_trained += seen;
    row.train_loss = loss_sum / static_cast<double>(seen);
    row.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    row.img_per_s = seen / row.seconds;
    if (sched) sched->step();

    const auto eval_start = Clock::now();
    bool best = false;
    if (!val_set.empty()) {
      const examples::EvalResult v = examples::evaluate(*model, val_set, s.eval_batch);
      row.val_loss = v.loss;
      row.val_accuracy = v.accuracy;
      best = v.accuracy > best_val;
      if (best) best_val = v.accuracy;
    }
    const examples::EvalResult t = examples::evaluate(*model, test_set, s.eval_batch);
    row.test_loss = t.loss;
    row.test_accuracy = t.accuracy;
    const double eval_seconds = seconds_since(eval_start);

    std::cout << "epoch " << row.epoch << "/" << s.epochs
              << " train_loss=" << fmt(row.train_loss, 4) << " test_loss=" << fmt(row.test_loss, 4)
              << " test_accuracy=" << fmt(row.test_accuracy, 4);
    if (!val_set.empty()) std::cout << " val_accuracy=" << fmt(row.val_accuracy, 4);
    std::cout << " img_per_s=" << fmt(row.img_per_s, 0) << std::endl;
    if (!tty)
      std::cerr << kProgram << ": epoch " << row.epoch << "/" << s.epochs << " trained in "
                << fmt(row.seconds, 1) << " s, evaluated in " << fmt(eval_seconds, 1) << " s, lr "
                << row.lr << "\n";

    io::Metadata meta{{"model", s.model},
                      {"epoch", std::to_string(e + 1)},
                      {"epochs", std::to_string(s.epochs)},
                      {"batch_size", std::to_string(s.batch_size)},
                      {"optimizer", s.optimizer},
                      {"lr", to_meta(s.lr)},
                      {"momentum", to_meta(s.momentum)},
                      {"weight_decay", to_meta(s.weight_decay)},
                      {"schedule", s.schedule},
                      {"augment", s.augment ? "1" : "0"},
                      {"seed", std::to_string(s.seed)},
                      {"limit", std::to_string(s.limit)},
                      {"val", std::to_string(s.val)},
                      {"train_loss", to_meta(row.train_loss)},
                      {"test_accuracy", to_meta(row.test_accuracy)}};
    if (!val_set.empty()) {
      meta["val_accuracy"] = to_meta(row.val_accuracy);
      meta["best_val_accuracy"] = to_meta(best_val);
    }
    examples::save_training_checkpoint(ckpt_path, *model, opt.get(), meta);
    if (best)
      examples::save_training_checkpoint((out_dir / "best.safetensors").string(), *model, nullptr,
                                         meta);
    csv_rows.push_back(csv_row(row));
    write_csv(csv_path, csv_rows);
    last = row;
  }
  const double wall = seconds_since(run_start);

  bool plotted = false;
  if (s.plot) {
    const std::string note = draw_curves(out_dir, s.val > 0);
    if (!note.empty()) std::cerr << kProgram << ": " << note << "\n";
    plotted = note.empty();
  }
  const double rate = images_trained / std::max(train_seconds, 1e-9);
  std::cout << "final test_accuracy=" << fmt(last.test_accuracy, 4)
            << " train_seconds=" << fmt(train_seconds, 1) << " img_per_s=" << fmt(rate, 0)
            << std::endl;
  std::cerr << kProgram << ": " << fmt(wall, 1) << " s in all (training and evaluation); wrote "
            << csv_path << ", " << ckpt_path
            << (plotted ? ", " + (out_dir / "curves.png").string() : std::string()) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  setup_process(argc, argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << kProgram << ": error: " << e.what() << "\n";
    return 1;
  }
}
