// DataLoader: seeded shuffled mini-batches of normalised, optionally augmented images.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <vector>

#include "xgrad/data/dataset.hpp"
#include "xgrad/tensor.hpp"

namespace xgrad::data {

/// Training-time augmentation, applied to the uint8 image before normalisation (as torchvision's
/// RandomCrop(padding=pad, fill=0) and RandomHorizontalFlip(0.5) before ToTensor/Normalize).
struct Augment {
  std::size_t pad = 0;  ///< random crop after zero padding by `pad` on each side (0: none)
  bool hflip = false;   ///< horizontal flip with probability 1/2
  bool enabled() const { return pad > 0 || hflip; }
};

struct LoaderOptions {
  std::size_t batch_size = 64;
  bool shuffle = true;
  std::uint64_t seed = 0;
  bool drop_last = false;  ///< drop a last batch smaller than batch_size
  double mean = 0.0;       ///< x = (pixel/255 − mean) / std
  double std = 1.0;
  Augment augment{};
  /// Fashion-MNIST's training-set statistics: mean 0.2860, std 0.3530.
  static LoaderOptions fashion_mnist(std::size_t batch_size = 64, std::uint64_t seed = 0) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.seed = seed;
    o.mean = 0.2860;
    o.std = 0.3530;
    return o;
  }
};

/// One mini-batch: images [B, 1, H, W], labels and the dataset indices they came from.
template <class T>
struct Batch {
  Tensor<T> images;
  std::vector<int> labels;
  std::vector<std::size_t> indices;
  std::size_t size() const { return labels.size(); }
};

/// Draws batches from a Dataset. Each epoch visits every sample exactly once (minus the tail
/// with drop_last), in an order shuffled with a seed mixed from (options.seed, epoch), or in
/// dataset order without shuffle. Augmentation of sample i in epoch e is seeded from
/// (seed, e, i), so a batch does not depend on which batches were drawn before it.
///
///   DataLoader<float> loader(train_set, LoaderOptions::fashion_mnist(64, 1));
///   for (std::size_t e = 0; e < epochs; ++e)
///     for (const Batch<float>& b : loader.epoch(e)) { ... b.images, b.labels ... }
template <class T>
class DataLoader {
 public:
  /// Throws xgrad::Error on batch_size 0, std <= 0, or a pad > 8.
  DataLoader(Dataset dataset, LoaderOptions options);
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);

  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }
  std::size_t num_batches() const;
  /// Samples visited per epoch (size(), less the dropped tail with drop_last).
  std::size_t num_samples() const;

  /// The sample order of an epoch.
  std::vector<std::size_t> order(std::size_t epoch) const;
  /// Builds the batch of the given dataset indices (normalised, augmented when enabled).
  Batch<T> make_batch(const std::vector<std::size_t>& indices, std::size_t epoch) const;

  /// One epoch: its order is computed once; batches are built as they are drawn.
  class Epoch {
   public:
    class iterator {
     public:
      using iterator_category = std::input_iterator_tag;
      using value_type = Batch<T>;
      using difference_type = std::ptrdiff_t;
      using pointer = const Batch<T>*;
      using reference = const Batch<T>&;
      iterator(const Epoch* epoch, std::size_t b);
      reference operator*() const { return batch_; }
      pointer operator->() const { return &batch_; }
      iterator& operator++();
      bool operator==(const iterator& o) const { return b_ == o.b_; }
      bool operator!=(const iterator& o) const { return b_ != o.b_; }

     private:
      void load();
      const Epoch* epoch_;
      std::size_t b_;
      Batch<T> batch_;
    };
    Epoch(const DataLoader* loader, std::size_t epoch);
    std::size_t size() const { return n_batches_; }
    /// Batch b of this epoch; throws on b >= size().
    Batch<T> operator[](std::size_t b) const;
    iterator begin() const { return iterator(this, 0); }
    iterator end() const { return iterator(this, n_batches_); }
    const std::vector<std::size_t>& order() const { return order_; }

   private:
    const DataLoader* loader_;
    std::size_t epoch_;
    std::vector<std::size_t> order_;
    std::size_t n_batches_;
  };

  /// The batches of epoch `epoch` (keep the loader alive while using it).
  Epoch epoch(std::size_t epoch) const { return Epoch(this, epoch); }

 private:
  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
};

/// Pads a uint8 H×W image by `pad` zeros on each side and crops H×W at (dy, dx) of the padded
/// image (0 <= dy, dx <= 2·pad), then flips it horizontally when `flip`. `out` holds H·W bytes.
void crop_flip(const std::uint8_t* in, std::size_t h, std::size_t w, std::size_t pad,
               std::size_t dy, std::size_t dx, bool flip, std::uint8_t* out);

extern template class DataLoader<float>;
extern template class DataLoader<double>;

}  // namespace xgrad::data
