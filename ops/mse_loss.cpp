// mse_loss: mean of the squared difference.
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

// d pred = 2(pred - target)·g/n, d target = -d pred; the difference is recomputed from the
// inputs rather than saved.
template <class T>
struct MseLossNode final : Node<T> {
  const char* name() const override { return "mse_loss"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& pred = this->input_value(0);
    const Tensor<T>& target = this->input_value(1);
    const std::size_t n = pred.size();
    const T scale = T(2) * *g.data() / T(n);
    const T* pp = pred.data();
    const T* tp = target.data();
    Tensor<T> dp = empty_tensor<T>(shape_of(pred));
    T* d = dp.data();
    for (std::size_t i = 0; i < n; ++i) d[i] = scale * (pp[i] - tp[i]);
    std::vector<Tensor<T>> grads(2, no_grad<T>());
    if (this->needs_input_grad(1)) {
      Tensor<T> dt = empty_tensor<T>(shape_of(target));
      T* e = dt.data();
      for (std::size_t i = 0; i < n; ++i) e[i] = -d[i];
      grads[1] = std::move(dt);
    }
    grads[0] = std::move(dp);
    return grads;
  }
};

}  // namespace

template <class T>
Variable<T> mse_loss(const Variable<T>& pred, const Variable<T>& target) {
  const Tensor<T>& pv = pred.value();
  const Tensor<T>& tv = target.value();
  if (shape_of(pv) != shape_of(tv))
    throw Error("mse_loss: pred and target shapes differ (pred " + shape_str(pv) + ", target " +
                shape_str(tv) + ")");
  if (pv.size() == 0) throw Error("mse_loss: inputs " + shape_str(pv) + " have no elements");
  const std::size_t n = pv.size();
  const T* pp = pv.data();
  const T* tp = tv.data();
  T total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const T d = pp[i] - tp[i];
    total += d * d;
  }
  Tensor<T> y = empty_tensor<T>({});
  *y.data() = total / T(n);
  return record<MseLossNode<T>>(std::move(y), {pred, target});
}

OpInfo mse_loss_info() {
  const auto fn = [](const auto& in) { return mse_loss(in[0], in[1]); };
  return {"mse_loss",
          {make_case("vector", {{"pred", {6}}, {"target", {6}}}, fn),
           make_case("matrix", {{"pred", {3, 4}}, {"target", {3, 4}}}, fn),
           make_case("constant_target",
                     {{"pred", {2, 3, 2}}, {"target", {2, 3, 2}, uniform_init(), false}}, fn)}};
}

#define X(T) template Variable<T> mse_loss<T>(const Variable<T>&, const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
