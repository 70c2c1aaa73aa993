// Helpers shared by the training examples and tests/test_training.cpp: one training step,
// evaluation (loss, accuracy, confusion matrix) and checkpoints that hold a model (parameters and
// buffers under "model.<name>"), an optimiser's state ("sgd.*", "adam.*", "adamw.*") and string
// metadata.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/data/loader.hpp>
#include <xgrad/io/checkpoint.hpp>
#include <xgrad/nn/nn.hpp>
#include <xgrad/optim/optimizer.hpp>
#include <xgrad/optim/scheduler.hpp>
#include <xgrad/xgrad.hpp>

namespace xgrad::examples {

/// Prefix of the model's tensors in a checkpoint ("model.0.weight", "model.1.running_mean").
inline const std::string kModelPrefix = "model.";
/// Value of the "format" metadata key of checkpoints written here.
inline const std::string kCheckpointFormat = "xgrad-train-1";

/// The predicted class of row i of `logits` [n, classes]: the first arg-max.
inline std::size_t predicted_class(const Tensor<float>& logits, std::size_t i) {
  const std::size_t c = logits.shape()[1];
  const float* row = logits.data() + i * c;
  return static_cast<std::size_t>(std::max_element(row, row + c) - row);
}

/// The number of correct arg-max predictions among the rows of `logits` [n, classes].
inline std::size_t count_correct(const Tensor<float>& logits, const std::vector<int>& labels) {
  const std::size_t n = logits.shape()[0];
  std::size_t correct = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (static_cast<int>(predicted_class(logits, i)) == labels[i]) ++correct;
  return correct;
}

/// One SGD-style step on a batch: forward in training mode, mean cross-entropy, backward, update.
/// Returns the batch loss and adds the number of correct predictions to `correct`.
/// When the model is shardable() (no batch norm or dropout in training), the batch is split over
/// the threads by sharded_step (sharded_backward and the update in one parallel region): the same
/// gradient up to float rounding, and for LeNet-5 on the 2-core EPYC 1.56-1.86x the speed of one
/// thread, as the VM allows, instead of 1.42x with the kernels threading alone (./run.sh bench,
/// README). Otherwise the kernels thread alone.
inline double train_step(nn::Module<float>& model, optim::Optimizer<float>& opt,
                         const data::Batch<float>& batch, std::size_t* correct = nullptr) {
  // Dropping the gradients saves filling them with zeros and adding the new ones to the zeros:
  // LeNet-5's median step at 2 threads fell by 27-112 of 1,850-2,220 us (bench/HISTORY.md,
  // 2026-11-29, night).
  opt.zero_grad(/*set_to_none=*/true);
  if (model.shardable()) {
    std::atomic<std::size_t> right{0};
    const double loss = sharded_step<float>(
        batch.size(),
        [&](std::size_t begin, std::size_t end) {
          const std::vector<int> labels = batch_rows(batch.labels, begin, end);
          const Variable<float> logits =
              model.forward(Variable<float>(batch_rows(batch.images, begin, end)));
          right += count_correct(logits.value(), labels);
          return cross_entropy(logits, labels);
        },
        opt);
    if (correct != nullptr) *correct += right;
    return loss;
  }
  const Variable<float> logits = model.forward(Variable<float>(batch.images, false));
  const Variable<float> l = cross_entropy(logits, batch.labels);
  l.backward();
  if (correct != nullptr) *correct += count_correct(logits.value(), batch.labels);
  opt.step();
  return static_cast<double>(l.item());
}

struct EvalResult {
  double loss = 0.0;      ///< mean cross-entropy over the samples
  double accuracy = 0.0;  ///< fraction of correct arg-max predictions
  std::size_t samples = 0;
  /// confusion[true][predicted] counts (num_classes x num_classes).
  std::vector<std::vector<std::size_t>> confusion;
};

/// Evaluates `model` on `dataset` in evaluation mode under NoGradGuard (the model's training
/// mode is restored afterwards), each batch sharded over the threads (sharded_forward) when the
/// model allows it (every model here does in evaluation mode). Images are normalised as in
/// training, never augmented.
inline EvalResult evaluate(nn::Module<float>& model, const data::Dataset& dataset,
                           std::size_t batch_size = 500) {
  EvalResult r;
  const std::size_t k = dataset.num_classes() > 0 ? dataset.num_classes() : 10;
  r.confusion.assign(k, std::vector<std::size_t>(k, 0));
  if (dataset.empty()) return r;
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  data::LoaderOptions lo = data::LoaderOptions::fashion_mnist(batch_size, 0);
  lo.shuffle = false;
  const data::DataLoader<float> loader(std::make_shared<const data::Dataset>(dataset), lo);
  double loss_sum = 0.0;
  std::size_t correct = 0;
  for (const data::Batch<float>& b : loader.epoch(0)) {
    const auto forward_rows = [&](std::size_t i, std::size_t j) {
      return model.forward(Variable<float>(batch_rows(b.images, i, j)));
    };
    const Variable<float> logits(model.shardable() ? sharded_forward<float>(b.size(), forward_rows)
                                                   : forward_rows(0, b.size()).value());
    loss_sum += static_cast<double>(cross_entropy(logits, b.labels).item()) * b.size();
    const Tensor<float>& z = logits.value();
    const std::size_t c = z.shape()[1];
    if (c != k)
      throw Error("evaluate: the model gives " + std::to_string(c) +
                  " classes but the dataset has " + std::to_string(k));
    for (std::size_t i = 0; i < b.size(); ++i) {
      const std::size_t best = predicted_class(z, i);
      const auto truth = static_cast<std::size_t>(b.labels[i]);
      if (best == truth) ++correct;
      ++r.confusion[truth][best];
    }
    r.samples += b.size();
  }
  model.train(was_training);
  r.loss = loss_sum / static_cast<double>(r.samples);
  r.accuracy = static_cast<double>(correct) / static_cast<double>(r.samples);
  return r;
}

/// Saves the model (parameters and buffers), the optimiser's state (when given) and `metadata`
/// to `path`, atomically (see io::save_checkpoint).
inline void save_training_checkpoint(const std::string& path, nn::Module<float>& model,
                                     const optim::Optimizer<float>* opt, io::Metadata metadata) {
  std::vector<std::pair<std::string, Tensor<float>>> owned;  // optimiser state copies
  if (opt != nullptr) owned = opt->export_state();
  io::TensorRefs<float> refs;
  for (const auto& [name, p] : model.named_parameters())
    refs.emplace_back(kModelPrefix + name, &p.value());
  for (const auto& [name, b] : model.named_buffers()) refs.emplace_back(kModelPrefix + name, b);
  for (const auto& [name, t] : owned) refs.emplace_back(name, &t);
  metadata["format"] = kCheckpointFormat;
  io::save_checkpoint<float>(path, refs, metadata);
}

/// The metadata of a checkpoint (validates the header, reads no tensor data).
inline io::Metadata read_checkpoint_metadata(const std::string& path) {
  return io::read_checkpoint_header(path).metadata;
}

/// Loads the model's parameters and buffers from `path` (every one must be present with its
/// shape; nothing changes when a check fails) and, when `opt` is given, the optimiser's state.
/// Returns the metadata.
inline io::Metadata load_training_checkpoint(const std::string& path, nn::Module<float>& model,
                                             optim::Optimizer<float>* opt) {
  const io::Checkpoint<float> ck = io::load_checkpoint<float>(path);
  std::vector<std::pair<std::string, Tensor<float>*>> dests;
  for (const auto& [name, p] : model.named_parameters()) {
    Variable<float> v = p;
    dests.emplace_back(kModelPrefix + name, &v.mutable_value());
  }
  for (const auto& [name, b] : model.named_buffers()) dests.emplace_back(kModelPrefix + name, b);
  // Check everything before writing anything.
  std::string missing;
  for (const auto& [name, dst] : dests) {
    if (!ck.contains(name)) {
      missing += (missing.empty() ? "" : ", ") + name;
      continue;
    }
    const Tensor<float>& src = ck.at(name);
    if (shape_of(src) != shape_of(*dst))
      throw Error("checkpoint: " + path + ": tensor '" + name + "' has shape " + shape_str(src) +
                  " in the file but the model expects " + shape_str(*dst) +
                  " (was it saved from another model?)");
  }
  if (!missing.empty())
    throw Error("checkpoint: " + path + ": missing model tensors: " + missing +
                " (was it saved from another model?)");
  for (const auto& [name, dst] : dests) *dst = ck.at(name);
  if (opt != nullptr) {
    optim::NamedTensors<float> state;
    const std::string prefix = opt->prefix() + ".";
    for (const auto& [name, t] : ck.tensors)
      if (name.compare(0, prefix.size(), prefix) == 0) state.emplace_back(name, t);
    opt->import_state(state);
  }
  return ck.metadata;
}

}  // namespace xgrad::examples
