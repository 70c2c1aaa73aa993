// cross_entropy: fused log-softmax + negative log-likelihood, mean over the batch.
#include <cmath>
#include <string>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

#include "../src/softmax_row.hpp"

namespace xgrad {

namespace {

// d logits = (softmax - onehot) · g / N. The node keeps the softmax from the forward pass.
template <class T>
struct CrossEntropyNode final : Node<T> {
  CrossEntropyNode(Tensor<T> p, std::vector<int> labels)
      : p_(std::move(p)), labels_(std::move(labels)) {}
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const std::size_t n = p_.shape(0), c = p_.shape(1);
    const T scale = *g.data() / T(n);
    Tensor<T> dx = empty_tensor<T>({n, c});
    const T* pp = p_.data();
    T* dp = dx.data();
    for (std::size_t i = 0; i < n * c; ++i) dp[i] = pp[i] * scale;
    for (std::size_t r = 0; r < n; ++r) dp[r * c + std::size_t(labels_[r])] -= scale;
    return gradients(std::move(dx));
  }
  Tensor<T> p_;
  std::vector<int> labels_;
};

}  // namespace

template <class T>
Variable<T> cross_entropy(const Variable<T>& logits, const std::vector<int>& labels) {
  check_rank("cross_entropy", "logits", logits.shape(), 2);
  const Tensor<T>& xv = logits.value();
  const std::size_t n = xv.shape(0), c = xv.shape(1);
  if (labels.size() != n)
    throw Error("cross_entropy: got " + std::to_string(labels.size()) + " labels for logits " +
                shape_str(xv) + " (one per row expected)");
  if (n == 0) throw Error("cross_entropy: empty batch (logits " + shape_str(xv) + ")");
  for (std::size_t r = 0; r < n; ++r)
    if (labels[r] < 0 || std::size_t(labels[r]) >= c)
      throw Error("cross_entropy: label " + std::to_string(labels[r]) + " at position " +
                  std::to_string(r) + " is out of range [0, " + std::to_string(c) +
                  ") for logits " + shape_str(xv));
  const bool recording = should_record<T>({&logits});
  Tensor<T> p = recording ? empty_tensor<T>({n, c}) : Tensor<T>();
  // Accumulate in double: the loss of a large batch is a long sum.
  double total = 0;
  for (std::size_t r = 0; r < n; ++r) {
    const T* xp = xv.data() + r * c;
    const auto row = detail::softmax_row(xp, c, recording ? p.data() + r * c : nullptr);
    // -log_softmax[label] = (max - x[label]) + log sum; both terms are finite and >= 0.
    total += double(row.max - xp[labels[r]]) + double(std::log(row.sum));
  }
  Tensor<T> y = empty_tensor<T>({});
  *y.data() = T(total / double(n));
  return record<CrossEntropyNode<T>>(std::move(y), {logits}, std::move(p), labels);
}

OpInfo cross_entropy_info() {
  const auto with = [](std::vector<int> labels) {
    return [labels](const auto& in) { return cross_entropy(in[0], labels); };
  };
  return {"cross_entropy",
          {make_case("batch", {{"logits", {4, 5}, uniform_init(-2, 2)}}, with({0, 4, 2, 2})),
           make_case("one_sample", {{"logits", {1, 3}, uniform_init(-3, 3)}}, with({1})),
           make_case("binary", {{"logits", {3, 2}, uniform_init(-1, 1)}}, with({1, 0, 1})),
           make_case("ten_classes", {{"logits", {2, 10}, uniform_init(-4, 4)}}, with({9, 3}))}};
}

#define X(T) template Variable<T> cross_entropy<T>(const Variable<T>&, const std::vector<int>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
