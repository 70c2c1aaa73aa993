// Evaluates a checkpoint written by train_fashion_mnist on the Fashion-MNIST test set: overall
// accuracy, per-class accuracy and the confusion matrix.
//   evaluate runs/lenet/checkpoint.safetensors
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "common/training.hpp"

using namespace xgrad;

namespace {

constexpr const char* kProgram = "evaluate";

int run(int argc, char** argv) {
  std::string checkpoint, model_name, data_dir = data::default_fashion_mnist_dir();
  int threads = 0;
  std::size_t limit = 0, batch = 500;
  bool train_split = false;
  CLI::App app{"Evaluates a train_fashion_mnist checkpoint on the Fashion-MNIST test set.",
               kProgram};
  app.option_defaults()->always_capture_default();
  app.add_option("checkpoint", checkpoint, "A .safetensors checkpoint")->required();
  app.add_option("--model", model_name,
                 "Model to load the weights into (default: the checkpoint's 'model' metadata)")
      ->check(CLI::IsMember(nn::model_names()));
  app.add_option("--data-dir", data_dir, "Directory of the Fashion-MNIST idx(.gz) files");
  app.add_option("--threads", threads, "OpenMP threads (0: all cores)")->check(CLI::Range(0, 1024));
  app.add_option("--limit", limit, "Evaluate the first N images only (0: all)");
  app.add_option("--batch-size", batch, "Evaluation batch size")->check(CLI::Range(1, 65536));
  app.add_flag("--train-split", train_split, "Evaluate on the 60000 training images instead");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << kProgram << ": error: " << e.what() << " (see --help)\n";
    return 2;
  }

  set_num_threads(threads);
  std::cout << runtime_banner() << "\n";
  const io::Metadata meta = examples::read_checkpoint_metadata(checkpoint);
  if (model_name.empty()) {
    const auto it = meta.find("model");
    if (it == meta.end())
      throw Error("checkpoint: " + checkpoint +
                  ": no 'model' in its metadata; name the model with --model");
    model_name = it->second;
  }
  auto model = nn::make_model<float>(model_name);
  examples::load_training_checkpoint(checkpoint, *model, nullptr);

  data::Dataset set = data::load_fashion_mnist(data_dir, train_split);
  if (limit > 0) set = set.limit(limit);
  const examples::EvalResult r = examples::evaluate(*model, set, batch);

  std::vector<std::string> names = set.class_names();
  if (names.empty()) names = data::fashion_mnist_classes();
  const std::size_t k = r.confusion.size();
  const std::string split = train_split ? "train" : "test";
  std::cout << "checkpoint " << checkpoint << ": model " << model_name;
  if (meta.count("epoch")) std::cout << ", epoch " << meta.at("epoch");
  std::cout << "\n"
            << split << " images " << r.samples << "\n"
            << std::fixed << std::setprecision(4) << split << "_loss=" << r.loss << " " << split
            << "_accuracy=" << r.accuracy << "\n\nper-class accuracy:\n";
  std::size_t width = 5;
  for (const auto& n : names) width = std::max(width, n.size());
  for (std::size_t c = 0; c < k; ++c) {
    std::size_t total = 0;
    for (std::size_t p = 0; p < k; ++p) total += r.confusion[c][p];
    const double acc = total ? static_cast<double>(r.confusion[c][c]) / total : 0.0;
    std::cout << "  " << std::left << std::setw(static_cast<int>(width)) << names[c] << std::right
              << "  " << std::setprecision(4) << acc << "  (" << r.confusion[c][c] << "/" << total
              << ")\n";
  }
  std::cout << "\nconfusion matrix (rows: true class, columns: predicted class):\n"
            << std::string(width + 2, ' ');
  for (std::size_t p = 0; p < k; ++p) std::cout << std::setw(6) << p;
  std::cout << "\n";
  for (std::size_t c = 0; c < k; ++c) {
    std::cout << std::setw(2) << c << " " << std::left << std::setw(static_cast<int>(width - 1))
              << names[c] << std::right;
    for (std::size_t p = 0; p < k; ++p) std::cout << std::setw(6) << r.confusion[c][p];
    std::cout << "\n";
  }
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
