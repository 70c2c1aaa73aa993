// An in-memory image classification dataset (uint8 images and labels) and Fashion-MNIST.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xgrad::data {

/// Images as uint8 [N, H, W] (0..255) and one uint8 label per image. Kept as bytes: the
/// DataLoader converts each batch to floating point when it is drawn.
class Dataset {
 public:
  Dataset() = default;
  /// Throws xgrad::Error when `images` is not rank 3, the counts differ, or a label is
  /// >= num_classes (when num_classes > 0), or class_names is non-empty and not num_classes long.
  Dataset(Tensor<std::uint8_t> images, std::vector<std::uint8_t> labels, std::size_t num_classes,
          std::vector<std::string> class_names = {});

  std::size_t size() const { return labels_.size(); }
  bool empty() const { return labels_.empty(); }
  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  std::size_t num_classes() const { return num_classes_; }
  const std::vector<std::string>& class_names() const { return class_names_; }

  /// [N, H, W] bytes.
  const Tensor<std::uint8_t>& images() const { return images_; }
  const std::vector<std::uint8_t>& labels() const { return labels_; }
  /// Pointer to image i's H·W bytes; throws on i >= size().
  const std::uint8_t* image(std::size_t i) const;
  std::uint8_t label(std::size_t i) const;

  /// The samples at `indices`, in that order (repeats allowed); throws on an index out of range.
  Dataset subset(const std::vector<std::size_t>& indices) const;
  /// The first min(n, size()) samples.
  Dataset limit(std::size_t n) const;
  /// A seeded random split: {train, validation} with n_val samples in validation and the rest
  /// in train, each in ascending original order. Throws when n_val > size().
  std::pair<Dataset, Dataset> split(std::size_t n_val, std::uint64_t seed) const;

 private:
  Tensor<std::uint8_t> images_ = Tensor<std::uint8_t>::from_shape({0, 0, 0});
  std::vector<std::uint8_t> labels_;
  std::size_t rows_ = 0, cols_ = 0, num_classes_ = 0;
  std::vector<std::string> class_names_;
};

/// "/usr/share/datasets/fashion-mnist", where Debian's dataset-fashion-mnist package puts
/// train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
/// t10k-labels-idx1-ubyte.gz.
std::string default_fashion_mnist_dir();

/// The ten Fashion-MNIST class names, label order: "T-shirt/top", "Trouser", ... "Ankle boot".
const std::vector<std::string>& fashion_mnist_classes();

/// Loads Fashion-MNIST (or MNIST: same files) from `dir`: the train (60000) or test (10000)
/// split. Reads "<prefix>-images-idx3-ubyte.gz", or the file without ".gz" when only that
/// exists. Throws xgrad::Error naming the files on a missing file, a bad file, image and label
/// counts that differ, images that are not 28x28, or a label >= 10.
Dataset load_fashion_mnist(const std::string& dir = default_fashion_mnist_dir(), bool train = true);

/// A small deterministic 64-bit generator (splitmix64) with unbiased bounded draws, so shuffles
/// and augmentations are identical on every platform (std::shuffle is not).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  /// Uniform in [0, n); n > 0.
  std::uint64_t below(std::uint64_t n);

 private:
  std::uint64_t state_;
};

/// Mixes several values into one seed (splitmix64 finaliser over each).
std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b, std::uint64_t c = 0);

/// Fisher–Yates shuffle of `v` with `rng`.
void shuffle(std::vector<std::size_t>& v, Rng& rng);

}  // namespace xgrad::data
