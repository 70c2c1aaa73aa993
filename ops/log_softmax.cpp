// log_softmax over the last axis of [N, C], stable (the row max is subtracted).
#include <cmath>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

#include "../src/softmax_row.hpp"

namespace xgrad {

namespace {

// dx = g - softmax ⊙ Σ_j g_j per row. The forward already has the softmax at hand, so the node
// keeps it rather than exponentiating the output again.
template <class T>
struct LogSoftmaxNode final : Node<T> {
  explicit LogSoftmaxNode(Tensor<T> p) : p_(std::move(p)) {}
  const char* name() const override { return "log_softmax"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const std::size_t n = p_.shape(0), c = p_.shape(1);
    Tensor<T> dx = empty_tensor<T>({n, c});
    for (std::size_t r = 0; r < n; ++r) {
      const T* pp = p_.data() + r * c;
      const T* gp = g.data() + r * c;
      T* dp = dx.data() + r * c;
      T gs = 0;
      for (std::size_t j = 0; j < c; ++j) gs += gp[j];
      for (std::size_t j = 0; j < c; ++j) dp[j] = gp[j] - pp[j] * gs;
    }
    return gradients(std::move(dx));
  }
  Tensor<T> p_;
};

}  // namespace

template <class T>
Variable<T> log_softmax(const Variable<T>& x) {
  check_rank("log_softmax", "input", x.shape(), 2);
  const Tensor<T>& xv = x.value();
  const std::size_t n = xv.shape(0), c = xv.shape(1);
  const bool recording = should_record<T>({&x});
  Tensor<T> y = empty_tensor<T>({n, c});
  Tensor<T> p = recording ? empty_tensor<T>({n, c}) : Tensor<T>();
  for (std::size_t r = 0; c > 0 && r < n; ++r) {
    const T* xp = xv.data() + r * c;
    T* yp = y.data() + r * c;
    const auto row = detail::softmax_row(xp, c, recording ? p.data() + r * c : nullptr);
    const T shift = row.max + std::log(row.sum);  // sum >= 1, so its log is finite
    for (std::size_t j = 0; j < c; ++j) yp[j] = xp[j] - shift;
  }
  return record<LogSoftmaxNode<T>>(std::move(y), {x}, std::move(p));
}

OpInfo log_softmax_info() {
  const auto fn = [](const auto& in) { return log_softmax(in[0]); };
  return {"log_softmax",
          {make_case("batch", {{"x", {3, 5}, uniform_init(-2, 2)}}, fn),
           make_case("one_row", {{"x", {1, 4}, uniform_init(-3, 3)}}, fn),
           make_case("two_classes", {{"x", {4, 2}, uniform_init(-1, 1)}}, fn),
           make_case("shifted_logits", {{"x", {2, 6}, uniform_init(-24, -20)}}, fn)}};
}

#define X(T) template Variable<T> log_softmax<T>(const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
