// Sharded forward and backward: one graph per OpenMP thread, leaf gradients applied in shard order.
#include "xgrad/parallel.hpp"

#include <algorithm>
#include <exception>
#include <string>

#include "xgrad/graph.hpp"
#include "xgrad/runtime.hpp"

namespace xgrad {

namespace {

using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;

// Runs body(s) for every shard, shard s on the s-th thread of one parallel region (or all in this
// thread for a single shard). Exceptions are caught per shard and the first is rethrown after the
// region: an exception escaping an OpenMP region would terminate the program.
template <class Body>
void for_each_shard(const Ranges& shards, const Body& body) {
  const int count = static_cast<int>(shards.size());
  if (count == 1) {
    body(0);
    return;
  }
  std::vector<std::exception_ptr> errors(shards.size());
#pragma omp parallel for schedule(static, 1) num_threads(count)
  for (int s = 0; s < count; ++s) {
    try {
      body(s);
    } catch (...) {
      errors[std::size_t(s)] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

std::string range_str(std::size_t begin, std::size_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

}  // namespace

Ranges shard_ranges(std::size_t n, int max_shards, std::size_t min_shard) {
  const std::size_t by_size = n / std::max<std::size_t>(min_shard, 1);
  const std::size_t count =
      std::max<std::size_t>(1, std::min(std::size_t(std::max(max_shards, 1)), by_size));
  Ranges shards;
  std::size_t begin = 0;
  for (std::size_t s = 0; s < count; ++s) {
    const std::size_t size = n / count + (s < n % count ? 1 : 0);
    shards.emplace_back(begin, begin + size);
    begin += size;
  }
  return shards;
}

template <class T>
double sharded_backward(std::size_t n, const ShardFn<T>& shard_loss, std::size_t min_shard) {
  if (!grad_enabled())
    throw Error(
        "sharded_backward: gradient recording is off in this thread (a NoGradGuard is "
        "alive), so there is no graph to run backward on");
  if (n == 0) throw Error("sharded_backward: the batch is empty");
  const Ranges shards = shard_ranges(n, num_threads(), min_shard);
  std::vector<LeafGradients<T>> captured(shards.size());
  std::vector<double> losses(shards.size(), 0.0);
  const bool single = shards.size() == 1;
  for_each_shard(shards, [&](int s) {
    const auto [begin, end] = shards[std::size_t(s)];
    const double weight = double(end - begin) / double(n);
    const Variable<T> loss = shard_loss(begin, end);
    if (!loss.defined() || loss.numel() != 1)
      throw Error("sharded_backward: the loss of samples " + range_str(begin, end) + " has shape " +
                  (loss.defined() ? shape_str(loss.shape()) : "(undefined)") +
                  "; it must be a scalar");
    losses[std::size_t(s)] = weight * double(loss.item());
    if (single) {
      loss.backward();
      return;
    }
    CaptureGuard<T> capture(captured[std::size_t(s)]);
    loss.backward(filled_tensor<T>(loss.shape(), T(weight)));
  });
  LeafGradients<T>::apply_sum(captured);
  double total = 0.0;
  for (double l : losses) total += l;
  return total;
}

template <class T>
Tensor<T> sharded_forward(std::size_t n, const ShardFn<T>& shard_forward, std::size_t min_shard) {
  if (n == 0) throw Error("sharded_forward: the batch is empty");
  const Ranges shards = shard_ranges(n, num_threads(), min_shard);
  std::vector<Tensor<T>> parts(shards.size());
  for_each_shard(shards, [&](int s) {
    NoGradGuard no_grad;  // grad mode is per thread: every shard's thread needs its own guard
    const auto [begin, end] = shards[std::size_t(s)];
    const Variable<T> out = shard_forward(begin, end);
    if (!out.defined() || out.dim() == 0 || out.shape()[0] != end - begin)
      throw Error("sharded_forward: the output for samples " + range_str(begin, end) +
                  " has shape " + (out.defined() ? shape_str(out.shape()) : "(undefined)") +
                  "; it must have " + std::to_string(end - begin) + " rows");
    parts[std::size_t(s)] = out.value();
  });
  if (parts.size() == 1) return std::move(parts[0]);
  Shape shape = shape_of(parts[0]);
  for (const Tensor<T>& p : parts) {
    Shape rest = shape_of(p);
    rest[0] = shape[0];
    if (rest != shape)
      throw Error("sharded_forward: shard outputs " + shape_str(parts[0]) + " and " + shape_str(p) +
                  " differ beyond dimension 0");
  }
  shape[0] = n;
  Tensor<T> out = empty_tensor<T>(shape);
  T* dst = out.data();
  for (const Tensor<T>& p : parts) dst = std::copy(p.data(), p.data() + p.size(), dst);
  return out;
}

template <class T>
Tensor<T> batch_rows(const Tensor<T>& batch, std::size_t begin, std::size_t end) {
  if (batch.dimension() == 0) throw Error("batch_rows: a 0-d tensor has no rows");
  const std::size_t rows = batch.shape()[0];
  if (begin > end || end > rows)
    throw Error("batch_rows: rows " + range_str(begin, end) + " are outside the batch " +
                shape_str(batch));
  Shape shape = shape_of(batch);
  shape[0] = end - begin;
  Tensor<T> out = empty_tensor<T>(shape);
  const std::size_t row = rows == 0 ? 0 : batch.size() / rows;
  std::copy(batch.data() + begin * row, batch.data() + end * row, out.data());
  return out;
}

std::vector<int> batch_rows(const std::vector<int>& labels, std::size_t begin, std::size_t end) {
  if (begin > end || end > labels.size())
    throw Error("batch_rows: rows " + range_str(begin, end) + " are outside the " +
                std::to_string(labels.size()) + " labels");
  return std::vector<int>(labels.begin() + std::ptrdiff_t(begin),
                          labels.begin() + std::ptrdiff_t(end));
}

#define XGRAD_INSTANTIATE_PARALLEL(T)                                                 \
  template double sharded_backward<T>(std::size_t, const ShardFn<T>&, std::size_t);   \
  template Tensor<T> sharded_forward<T>(std::size_t, const ShardFn<T>&, std::size_t); \
  template Tensor<T> batch_rows<T>(const Tensor<T>&, std::size_t, std::size_t);
XGRAD_INSTANTIATE_PARALLEL(float)
XGRAD_INSTANTIATE_PARALLEL(double)

}  // namespace xgrad
