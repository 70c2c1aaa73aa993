#include "xgrad/data/loader.hpp"

#include <cmath>
#include <cstring>

namespace xgrad::data {

void crop_flip(const std::uint8_t* in, std::size_t h, std::size_t w, std::size_t pad,
               std::size_t dy, std::size_t dx, bool flip, std::uint8_t* out) {
  // Output pixel (r, c) reads padded pixel (r + dy, c' + dx) with c' the (flipped) column, i.e.
  // source pixel (r + dy − pad, c' + dx − pad), zero outside the image.
  for (std::size_t r = 0; r < h; ++r) {
    const std::ptrdiff_t sr =
        static_cast<std::ptrdiff_t>(r + dy) - static_cast<std::ptrdiff_t>(pad);
    std::uint8_t* o = out + r * w;
    if (sr < 0 || sr >= static_cast<std::ptrdiff_t>(h)) {
      std::memset(o, 0, w);
      continue;
    }
    const std::uint8_t* src = in + static_cast<std::size_t>(sr) * w;
    for (std::size_t c = 0; c < w; ++c) {
      const std::size_t cc = flip ? w - 1 - c : c;
      const std::ptrdiff_t sc =
          static_cast<std::ptrdiff_t>(cc + dx) - static_cast<std::ptrdiff_t>(pad);
      o[c] = (sc < 0 || sc >= static_cast<std::ptrdiff_t>(w)) ? 0 : src[sc];
    }
  }
}

template <class T>
DataLoader<T>::DataLoader(Dataset dataset, LoaderOptions options)
    : DataLoader(std::make_shared<const Dataset>(std::move(dataset)), options) {}

template <class T>
DataLoader<T>::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) throw Error("DataLoader: null dataset");
  if (options_.batch_size == 0) throw Error("DataLoader: batch_size must be > 0");
  if (!(options_.std > 0.0) || !std::isfinite(options_.std) || !std::isfinite(options_.mean))
    throw Error("DataLoader: std must be finite and > 0 and mean finite (mean " +
                std::to_string(options_.mean) + ", std " + std::to_string(options_.std) + ")");
  if (options_.augment.pad > 8)
    throw Error("DataLoader: augment pad " + std::to_string(options_.augment.pad) +
                " is too large (at most 8)");
}

template <class T>
std::size_t DataLoader<T>::num_batches() const {
  const std::size_t n = dataset_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

template <class T>
std::size_t DataLoader<T>::num_samples() const {
  const std::size_t n = dataset_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b * b : n;
}

template <class T>
std::vector<std::size_t> DataLoader<T>::order(std::size_t epoch) const {
  std::vector<std::size_t> idx(dataset_->size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  if (options_.shuffle) {
    Rng rng(mix_seed(options_.seed, epoch, 0x0de5ULL));
    shuffle(idx, rng);
  }
  return idx;
}

template <class T>
Batch<T> DataLoader<T>::make_batch(const std::vector<std::size_t>& indices,
                                   std::size_t epoch) const {
  const Dataset& ds = *dataset_;
  const std::size_t h = ds.rows(), w = ds.cols(), hw = h * w, n = indices.size();
  Batch<T> b;
  b.images = empty_tensor<T>({n, 1, h, w});
  b.labels.resize(n);
  b.indices = indices;
  // y = (x/255 − mean)/std = x·scale + shift, per pixel value via a 256-entry table.
  T table[256];
  for (int v = 0; v < 256; ++v)
    table[v] = static_cast<T>((v / 255.0 - options_.mean) / options_.std);
  const Augment& aug = options_.augment;
  std::vector<std::uint8_t> tmp(aug.enabled() ? hw : 0);
  T* out = b.images.data();
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = indices[k];
    const std::uint8_t* src = ds.image(i);
    b.labels[k] = ds.label(i);
    if (aug.enabled()) {
      Rng rng(mix_seed(options_.seed ^ 0xa06e47ULL, epoch, i));
      const std::size_t dy = aug.pad ? rng.below(2 * aug.pad + 1) : 0;
      const std::size_t dx = aug.pad ? rng.below(2 * aug.pad + 1) : 0;
      const bool flip = aug.hflip && (rng.next() >> 63);
      crop_flip(src, h, w, aug.pad, dy, dx, flip, tmp.data());
      src = tmp.data();
    }
    T* o = out + k * hw;
    for (std::size_t p = 0; p < hw; ++p) o[p] = table[src[p]];
  }
  return b;
}

template <class T>
DataLoader<T>::Epoch::Epoch(const DataLoader* loader, std::size_t epoch)
    : loader_(loader),
      epoch_(epoch),
      order_(loader->order(epoch)),
      n_batches_(loader->num_batches()) {}

template <class T>
Batch<T> DataLoader<T>::Epoch::operator[](std::size_t b) const {
  if (b >= n_batches_)
    throw Error("DataLoader: batch " + std::to_string(b) + " out of range for " +
                std::to_string(n_batches_) + " batches");
  const std::size_t bs = loader_->options_.batch_size;
  const std::size_t begin = b * bs;
  const std::size_t end = std::min(begin + bs, order_.size());
  std::vector<std::size_t> idx(order_.begin() + static_cast<std::ptrdiff_t>(begin),
                               order_.begin() + static_cast<std::ptrdiff_t>(end));
  return loader_->make_batch(idx, epoch_);
}

template <class T>
DataLoader<T>::Epoch::iterator::iterator(const Epoch* epoch, std::size_t b) : epoch_(epoch), b_(b) {
  load();
}

template <class T>
typename DataLoader<T>::Epoch::iterator& DataLoader<T>::Epoch::iterator::operator++() {
  ++b_;
  load();
  return *this;
}

template <class T>
void DataLoader<T>::Epoch::iterator::load() {
  if (b_ < epoch_->n_batches_) batch_ = (*epoch_)[b_];
}

template class DataLoader<float>;
template class DataLoader<double>;

}  // namespace xgrad::data
