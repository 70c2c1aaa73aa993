// dropout: inverted dropout, y = x ⊙ m / (1 - p) in training, identity in eval.
#include <cmath>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct DropoutNode final : Node<T> {
  explicit DropoutNode(Tensor<T> mask) : mask_(std::move(mask)) {}
  const char* name() const override { return "dropout"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> dx = empty_tensor<T>(shape_of(mask_));
    const T* gp = g.data();
    const T* mp = mask_.data();
    T* dp = dx.data();
    const std::size_t n = mask_.size();
    for (std::size_t i = 0; i < n; ++i) dp[i] = gp[i] * mp[i];
    return gradients(std::move(dx));
  }
  Tensor<T> mask_;  ///< 0 or 1/(1 - p) per element: the same scaled mask as the forward
};

// The identity in the graph: dx = g.
template <class T>
struct IdentityNode final : Node<T> {
  const char* name() const override { return "dropout"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override { return {g}; }
};

}  // namespace

template <class T>
Variable<T> dropout(const Variable<T>& x, double p, bool training, std::mt19937_64& rng) {
  if (!(p >= 0.0 && p < 1.0))
    throw Error("dropout: p must be in [0, 1) but is " + std::to_string(p) + " (input " +
                shape_str(x.shape()) + ")");
  const Tensor<T>& xv = x.value();
  // Eval, or nothing to drop: the identity, and the generator is left untouched.
  if (!training || p == 0.0) return record<IdentityNode<T>>(Tensor<T>(xv), {x});
  const std::size_t n = xv.size();
  Tensor<T> mask = empty_tensor<T>(shape_of(xv));
  Tensor<T> y = empty_tensor<T>(shape_of(xv));
  const T scale = T(1.0 / (1.0 - p));
  // Drawn in double from the generator, so float and double runs get the same mask.
  std::bernoulli_distribution keep(1.0 - p);
  const T* xp = xv.data();
  T* mp = mask.data();
  T* yp = y.data();
  for (std::size_t i = 0; i < n; ++i) {
    mp[i] = keep(rng) ? scale : T(0);
    yp[i] = xp[i] * mp[i];
  }
  return record<DropoutNode<T>>(std::move(y), {x}, std::move(mask));
}

OpInfo dropout_info() {
  // The generator is built inside the function, so every gradcheck evaluation draws the
  // same mask and the function is deterministic.
  const auto with = [](double p, bool training) {
    return [p, training](const auto& in) {
      std::mt19937_64 rng(1234);
      return dropout(in[0], p, training, rng);
    };
  };
  return {"dropout",
          {make_case("train_p0.3", {{"x", {4, 5}}}, with(0.3, true)),
           make_case("train_p0.5_image", {{"x", {2, 2, 3, 3}}}, with(0.5, true)),
           make_case("eval", {{"x", {3, 4}}}, with(0.5, false))}};
}

#define X(T) template Variable<T> dropout<T>(const Variable<T>&, double, bool, std::mt19937_64&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
