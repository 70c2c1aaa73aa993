// Training end to end: overfitting a small batch, run-to-run reproducibility, checkpoint
// save/resume of model and optimiser state, and a short run on the real Fashion-MNIST.
#define BOOST_TEST_MODULE training
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../examples/common/training.hpp"

using namespace xgrad;
namespace fs = std::filesystem;

namespace {

// A fixed synthetic dataset: n images of 28x28 bytes with labels 0..9 in turn.
data::Dataset synthetic(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto images = Tensor<std::uint8_t>::from_shape({n, 28, 28});
  for (std::size_t i = 0; i < images.size(); ++i) images.data()[i] = rng() & 0xff;
  std::vector<std::uint8_t> labels(n);
  for (std::size_t i = 0; i < n; ++i) labels[i] = static_cast<std::uint8_t>(i % 10);
  return data::Dataset(std::move(images), std::move(labels), 10);
}

std::shared_ptr<nn::Sequential<float>> small_cnn() {
  Pool2DParams pool;
  pool.kernel = {2, 2};
  pool.stride = {2, 2};
  auto m = std::make_shared<nn::Sequential<float>>();
  m->add(std::make_shared<nn::Conv2d<float>>(1, 8, 3, Conv2DParams{{1, 1}, {1, 1}}))
      .add(std::make_shared<nn::ReLU<float>>())
      .add(std::make_shared<nn::MaxPool2d<float>>(pool))
      .add(std::make_shared<nn::Conv2d<float>>(8, 16, 3, Conv2DParams{{1, 1}, {1, 1}}))
      .add(std::make_shared<nn::ReLU<float>>())
      .add(std::make_shared<nn::MaxPool2d<float>>(pool))
      .add(std::make_shared<nn::Flatten<float>>())
      .add(std::make_shared<nn::Linear<float>>(16 * 7 * 7, 10));
  return m;
}

// A unique scratch directory, removed at the end of the scope.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() /
           ("xgrad_test_training_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool same_tensor(const Tensor<float>& a, const Tensor<float>& b) {
  if (shape_of(a) != shape_of(b)) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a.data()[i] != b.data()[i]) return false;
  return true;
}

// Losses of `steps` training steps of LeNet-5 from seed `seed`, with `threads` threads.
std::vector<double> lenet_losses(std::uint64_t seed, int threads, std::size_t steps,
                                 std::vector<Tensor<float>>* final_params = nullptr) {
  set_num_threads(threads);
  nn::manual_seed(seed);
  auto model = nn::make_model<float>("lenet");
  optim::SGDOptions so;
  so.lr = 0.05;
  so.momentum = 0.9;
  so.weight_decay = 5e-4;
  optim::SGD<float> opt(model->parameters(), so);
  data::LoaderOptions lo = data::LoaderOptions::fashion_mnist(16, seed);
  lo.augment = data::Augment{2, true};
  const data::DataLoader<float> loader(synthetic(64, 7), lo);
  std::vector<double> losses;
  for (std::size_t e = 0; losses.size() < steps; ++e)
    for (const auto& b : loader.epoch(e)) {
      if (losses.size() == steps) break;
      losses.push_back(examples::train_step(*model, opt, b));
    }
  if (final_params)
    for (const auto& p : model->parameters()) final_params->push_back(p.value());
  return losses;
}

}  // namespace

BOOST_AUTO_TEST_CASE(small_cnn_overfits_32_images) {
  set_num_threads(2);
  nn::manual_seed(3);
  auto model = small_cnn();
  optim::Adam<float> opt(model->parameters(), optim::AdamOptions{});
  data::LoaderOptions lo = data::LoaderOptions::fashion_mnist(32, 0);
  lo.shuffle = false;
  const data::DataLoader<float> loader(synthetic(32, 11), lo);
  const data::Batch<float> batch = loader.epoch(0)[0];
  BOOST_REQUIRE_EQUAL(batch.size(), 32u);
  double first = 0, loss = 0;
  for (int step = 0; step < 300; ++step) {
    loss = examples::train_step(*model, opt, batch);
    if (step == 0) first = loss;
  }
  BOOST_TEST_MESSAGE("overfit: loss " << first << " -> " << loss);
  BOOST_TEST(first > 2.0);  // about log(10) at the start
  BOOST_TEST(loss < 0.05);
  // The evaluation helper agrees: every one of the 32 images is classified right.
  const examples::EvalResult r = examples::evaluate(*model, loader.dataset());
  BOOST_TEST(r.samples == 32u);
  BOOST_TEST(r.accuracy == 1.0);
  BOOST_TEST(r.loss < 0.05);
  BOOST_TEST(model->is_training());  // evaluate() restores the mode
}

BOOST_AUTO_TEST_CASE(same_seed_and_threads_give_bit_identical_losses) {
  for (int threads : {1, 2}) {
    std::vector<Tensor<float>> pa, pb;
    const std::vector<double> a = lenet_losses(5, threads, 6, &pa);
    const std::vector<double> b = lenet_losses(5, threads, 6, &pb);
    BOOST_REQUIRE_EQUAL(a.size(), 6u);
    for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(a[i] == b[i], "step " << i);
    BOOST_REQUIRE_EQUAL(pa.size(), pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) BOOST_TEST(same_tensor(pa[i], pb[i]));
    // Training actually moves: the losses are not all the same.
    BOOST_TEST(a.front() != a.back());
  }
  // Another seed gives another run.
  BOOST_TEST(lenet_losses(5, 2, 2)[0] != lenet_losses(6, 2, 2)[0]);
}

BOOST_AUTO_TEST_CASE(checkpoint_round_trip_resumes_exactly) {
  set_num_threads(2);
  TempDir dir("ckpt");
  const std::string path = (dir.path / "ck.safetensors").string();
  data::LoaderOptions lo = data::LoaderOptions::fashion_mnist(8, 1);
  const data::DataLoader<float> loader(synthetic(32, 9), lo);

  // The small ResNet has BatchNorm buffers; AdamW has per-parameter moments and step counts.
  nn::manual_seed(1);
  auto a = nn::make_model<float>("resnet");
  optim::AdamW<float> opt_a(a->parameters());
  const auto epoch0 = loader.epoch(0);
  examples::train_step(*a, opt_a, epoch0[0]);
  examples::train_step(*a, opt_a, epoch0[1]);
  examples::save_training_checkpoint(path, *a, &opt_a, {{"epoch", "1"}, {"model", "resnet"}});
  BOOST_REQUIRE(fs::exists(path));
  BOOST_TEST(!fs::exists(path + ".tmp"));

  // A differently seeded model and a fresh optimiser take everything from the file.
  nn::manual_seed(2);
  auto b = nn::make_model<float>("resnet");
  optim::AdamW<float> opt_b(b->parameters());
  BOOST_TEST(!same_tensor(a->parameters()[0].value(), b->parameters()[0].value()));
  const io::Metadata meta = examples::load_training_checkpoint(path, *b, &opt_b);
  BOOST_TEST(meta.at("epoch") == "1");
  BOOST_TEST(meta.at("model") == "resnet");
  BOOST_TEST(meta.at("format") == examples::kCheckpointFormat);
  BOOST_TEST(examples::read_checkpoint_metadata(path).at("epoch") == "1");

  const auto pa = a->named_parameters(), pb = b->named_parameters();
  BOOST_REQUIRE_EQUAL(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    BOOST_TEST(pa[i].first == pb[i].first);
    BOOST_TEST(same_tensor(pa[i].second.value(), pb[i].second.value()), pa[i].first);
  }
  const auto ba = a->named_buffers(), bb = b->named_buffers();
  BOOST_REQUIRE_EQUAL(ba.size(), bb.size());
  BOOST_TEST(!ba.empty());
  for (std::size_t i = 0; i < ba.size(); ++i)
    BOOST_TEST(same_tensor(*ba[i].second, *bb[i].second), ba[i].first);
  const auto sa = opt_a.export_state(), sb = opt_b.export_state();
  BOOST_REQUIRE_EQUAL(sa.size(), sb.size());
  BOOST_TEST(!sa.empty());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    BOOST_TEST(sa[i].first == sb[i].first);
    BOOST_TEST(same_tensor(sa[i].second, sb[i].second), sa[i].first);
  }
  BOOST_TEST(opt_b.step_count(0) == 2u);

  // Resuming continues exactly as the uninterrupted run.
  const double la = examples::train_step(*a, opt_a, epoch0[2]);
  const double lb = examples::train_step(*b, opt_b, epoch0[2]);
  BOOST_TEST(la == lb);
  for (std::size_t i = 0; i < pa.size(); ++i)
    BOOST_TEST(same_tensor(pa[i].second.value(), pb[i].second.value()), pa[i].first);

  // A checkpoint of another model is rejected and leaves the model untouched.
  nn::manual_seed(3);
  auto lenet = nn::make_model<float>("lenet");
  const Tensor<float> before = lenet->parameters()[0].value();
  BOOST_CHECK_THROW(examples::load_training_checkpoint(path, *lenet, nullptr), Error);
  BOOST_TEST(same_tensor(before, lenet->parameters()[0].value()));
  // So is a file that is not a checkpoint.
  const std::string junk = (dir.path / "junk.safetensors").string();
  { std::ofstream(junk) << "not a checkpoint"; }
  BOOST_CHECK_THROW(examples::load_training_checkpoint(junk, *b, &opt_b), Error);
  BOOST_CHECK_THROW(examples::read_checkpoint_metadata((dir.path / "absent").string()), Error);
}

BOOST_AUTO_TEST_CASE(short_real_fashion_mnist_run_beats_chance) {
  const std::string dir = data::default_fashion_mnist_dir();
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz") &&
      !fs::exists(fs::path(dir) / "train-images-idx3-ubyte")) {
    BOOST_TEST_MESSAGE("skipped: Fashion-MNIST not found in " << dir << " (dataset-fashion-mnist)");
    return;
  }
  set_num_threads(2);
  const data::Dataset train = data::load_fashion_mnist(dir, true).limit(2000);
  const data::Dataset test = data::load_fashion_mnist(dir, false).limit(1000);
  nn::manual_seed(1);
  auto model = nn::make_model<float>("lenet");
  optim::AdamOptions ao;
  ao.lr = 2e-3;
  optim::Adam<float> opt(model->parameters(), ao);
  const data::DataLoader<float> loader(train, data::LoaderOptions::fashion_mnist(32, 1));
  double first = 0, last = 0;
  std::size_t steps = 0;
  for (std::size_t e = 0; e < 2; ++e)
    for (const auto& b : loader.epoch(e)) {
      last = examples::train_step(*model, opt, b);
      if (steps++ == 0) first = last;
    }
  const examples::EvalResult r = examples::evaluate(*model, test);
  BOOST_TEST_MESSAGE("2000 images x 2 epochs: loss " << first << " -> " << last
                                                     << ", test accuracy on 1000: " << r.accuracy);
  BOOST_TEST(r.samples == 1000u);
  BOOST_TEST(r.accuracy > 0.65);
  std::size_t diag = 0, total = 0;
  for (std::size_t i = 0; i < r.confusion.size(); ++i)
    for (std::size_t j = 0; j < r.confusion.size(); ++j) {
      total += r.confusion[i][j];
      if (i == j) diag += r.confusion[i][j];
    }
  BOOST_TEST(total == 1000u);
  BOOST_TEST(static_cast<double>(diag) / total == r.accuracy);
}
