// softmax over the last axis of [N, C], stable (the row max is subtracted).
#include <cmath>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

#include "../src/softmax_row.hpp"

namespace xgrad {

namespace {

// dx = y ⊙ (g - Σ_j g_j y_j) per row: needs only the output, so the node keeps a copy of y.
template <class T>
struct SoftmaxNode final : Node<T> {
  explicit SoftmaxNode(Tensor<T> y) : y_(std::move(y)) {}
  const char* name() const override { return "softmax"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const std::size_t n = y_.shape(0), c = y_.shape(1);
    Tensor<T> dx = empty_tensor<T>({n, c});
    for (std::size_t r = 0; r < n; ++r) {
      const T* yp = y_.data() + r * c;
      const T* gp = g.data() + r * c;
      T* dp = dx.data() + r * c;
      T dot = 0;
      for (std::size_t j = 0; j < c; ++j) dot += gp[j] * yp[j];
      for (std::size_t j = 0; j < c; ++j) dp[j] = yp[j] * (gp[j] - dot);
    }
    return gradients(std::move(dx));
  }
  Tensor<T> y_;
};

}  // namespace

template <class T>
Variable<T> softmax(const Variable<T>& x) {
  check_rank("softmax", "input", x.shape(), 2);
  const Tensor<T>& xv = x.value();
  const std::size_t n = xv.shape(0), c = xv.shape(1);
  Tensor<T> y = empty_tensor<T>({n, c});
  for (std::size_t r = 0; c > 0 && r < n; ++r) {
    detail::softmax_row(xv.data() + r * c, c, y.data() + r * c);
  }
  if (!should_record<T>({&x})) return record<SoftmaxNode<T>>(std::move(y), {x}, Tensor<T>());
  Tensor<T> saved = y;
  return record<SoftmaxNode<T>>(std::move(y), {x}, std::move(saved));
}

OpInfo softmax_info() {
  const auto fn = [](const auto& in) { return softmax(in[0]); };
  return {"softmax",
          {make_case("batch", {{"x", {3, 5}, uniform_init(-2, 2)}}, fn),
           make_case("one_row", {{"x", {1, 4}, uniform_init(-3, 3)}}, fn),
           make_case("two_classes", {{"x", {4, 2}, uniform_init(-1, 1)}}, fn),
           make_case("shifted_logits", {{"x", {2, 6}, uniform_init(20, 24)}}, fn)}};
}

#define X(T) template Variable<T> softmax<T>(const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
