#include "xgrad/data/dataset.hpp"

#include <sys/stat.h>
#include <algorithm>
#include <cstring>

#include "xgrad/data/idx.hpp"

namespace xgrad::data {

// ---- Rng ------------------------------------------------------------------------------------

std::uint64_t Rng::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t Rng::below(std::uint64_t n) {
  if (n == 0) throw Error("Rng::below: n must be > 0");
  // Rejection sampling: accept only draws below the largest multiple of n.
  const std::uint64_t limit = (~std::uint64_t(0)) - (~std::uint64_t(0)) % n;
  std::uint64_t r;
  do r = next();
  while (r >= limit);
  return r % n;
}

std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  Rng r(a);
  std::uint64_t h = r.next();
  Rng r2(h ^ b);
  h = r2.next();
  Rng r3(h ^ c);
  return r3.next();
}

void shuffle(std::vector<std::size_t>& v, Rng& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

// ---- Dataset --------------------------------------------------------------------------------

Dataset::Dataset(Tensor<std::uint8_t> images, std::vector<std::uint8_t> labels,
                 std::size_t num_classes, std::vector<std::string> class_names)
    : images_(std::move(images)),
      labels_(std::move(labels)),
      num_classes_(num_classes),
      class_names_(std::move(class_names)) {
  const Shape s = shape_of(images_);
  if (s.size() != 3)
    throw Error("Dataset: images must have shape [N,H,W] but have shape " + shape_str(s));
  if (s[0] != labels_.size())
    throw Error("Dataset: " + std::to_string(s[0]) + " images " + shape_str(s) + " but " +
                std::to_string(labels_.size()) + " labels");
  rows_ = s[1];
  cols_ = s[2];
  if (!class_names_.empty() && class_names_.size() != num_classes_)
    throw Error("Dataset: " + std::to_string(class_names_.size()) + " class names for " +
                std::to_string(num_classes_) + " classes");
  if (num_classes_ > 0)
    for (std::size_t i = 0; i < labels_.size(); ++i)
      if (labels_[i] >= num_classes_)
        throw Error("Dataset: label " + std::to_string(labels_[i]) + " of sample " +
                    std::to_string(i) + " is not below num_classes " +
                    std::to_string(num_classes_));
}

const std::uint8_t* Dataset::image(std::size_t i) const {
  if (i >= size())
    throw Error("Dataset::image: index " + std::to_string(i) + " out of range for " +
                std::to_string(size()) + " samples");
  return images_.data() + i * rows_ * cols_;
}

std::uint8_t Dataset::label(std::size_t i) const {
  if (i >= size())
    throw Error("Dataset::label: index " + std::to_string(i) + " out of range for " +
                std::to_string(size()) + " samples");
  return labels_[i];
}

Dataset Dataset::subset(const std::vector<std::size_t>& indices) const {
  const std::size_t hw = rows_ * cols_;
  Tensor<std::uint8_t> imgs = empty_tensor<std::uint8_t>({indices.size(), rows_, cols_});
  std::vector<std::uint8_t> labs(indices.size());
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::size_t i = indices[k];
    if (i >= size())
      throw Error("Dataset::subset: index " + std::to_string(i) + " out of range for " +
                  std::to_string(size()) + " samples");
    if (hw) std::memcpy(imgs.data() + k * hw, images_.data() + i * hw, hw);
    labs[k] = labels_[i];
  }
  Dataset d;
  d.images_ = std::move(imgs);
  d.labels_ = std::move(labs);
  d.rows_ = rows_;
  d.cols_ = cols_;
  d.num_classes_ = num_classes_;
  d.class_names_ = class_names_;
  return d;
}

Dataset Dataset::limit(std::size_t n) const {
  std::vector<std::size_t> idx(std::min(n, size()));
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  return subset(idx);
}

std::pair<Dataset, Dataset> Dataset::split(std::size_t n_val, std::uint64_t seed) const {
  if (n_val > size())
    throw Error("Dataset::split: " + std::to_string(n_val) + " validation samples requested from " +
                std::to_string(size()));
  std::vector<std::size_t> perm(size());
  for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = i;
  Rng rng(mix_seed(seed, 0x5b117ULL));
  shuffle(perm, rng);
  std::vector<std::size_t> val(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(n_val));
  std::vector<std::size_t> train(perm.begin() + static_cast<std::ptrdiff_t>(n_val), perm.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {subset(train), subset(val)};
}

// ---- Fashion-MNIST --------------------------------------------------------------------------

std::string default_fashion_mnist_dir() {
  return "/usr/share/datasets/fashion-mnist";
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string pick_file(const std::string& dir, const std::string& name) {
  const std::string base = dir + "/" + name;
  if (file_exists(base + ".gz")) return base + ".gz";
  if (file_exists(base)) return base;
  throw Error("fashion-mnist: missing file " + base + ".gz (nor " + base +
              ") in dataset directory " + dir +
              " (on Debian: apt-get install dataset-fashion-mnist)");
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string img_path = pick_file(dir, prefix + "-images-idx3-ubyte");
  const std::string lab_path = pick_file(dir, prefix + "-labels-idx1-ubyte");
  IdxArray imgs = read_idx_images(img_path);
  IdxArray labs = read_idx_labels(lab_path);
  if (imgs.dims[1] != 28 || imgs.dims[2] != 28)
    throw Error("fashion-mnist: " + img_path + ": images are " + std::to_string(imgs.dims[1]) +
                "x" + std::to_string(imgs.dims[2]) + ", expected 28x28");
  if (imgs.dims[0] != labs.dims[0])
    throw Error("fashion-mnist: count mismatch: " + img_path + " has " +
                std::to_string(imgs.dims[0]) + " images but " + lab_path + " has " +
                std::to_string(labs.dims[0]) + " labels");
  for (std::size_t i = 0; i < labs.data.size(); ++i)
    if (labs.data[i] >= 10)
      throw Error("fashion-mnist: " + lab_path + ": label " + std::to_string(labs.data[i]) +
                  " of sample " + std::to_string(i) + " is not in [0,10)");
  Tensor<std::uint8_t> t = empty_tensor<std::uint8_t>({imgs.dims[0], 28, 28});
  std::memcpy(t.data(), imgs.data.data(), imgs.data.size());
  return Dataset(std::move(t), std::move(labs.data), 10, fashion_mnist_classes());
}

}  // namespace xgrad::data
