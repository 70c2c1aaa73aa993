// sum: over all elements, or over given axes.
#include <algorithm>

#include <xtensor/xbroadcast.hpp>
#include <xtensor/xreducer.hpp>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

// The shape of the result with the summed axes kept as size 1.
Shape kept_shape(const Shape& in, const std::vector<std::size_t>& axes) {
  Shape kept = in;
  for (std::size_t a : axes) kept[a] = 1;
  return kept;
}

template <class T>
struct SumNode final : Node<T> {
  explicit SumNode(Shape kept) : kept_(std::move(kept)) {}
  const char* name() const override { return "sum"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> gk = g;
    gk.reshape(kept_);
    Tensor<T> dx = xt::broadcast(gk, this->input_value(0).shape());
    return gradients(std::move(dx));
  }
  Shape kept_;
};

}  // namespace

template <class T>
Variable<T> sum(const Variable<T>& x) {
  const Tensor<T>& xv = x.value();
  Tensor<T> y = empty_tensor<T>({});
  T total = 0;
  for (const T v : xv) total += v;
  *y.data() = total;
  Shape kept(xv.dimension(), 1);
  return record<SumNode<T>>(std::move(y), {x}, std::move(kept));
}

template <class T>
Variable<T> sum(const Variable<T>& x, const std::vector<std::size_t>& axes, bool keepdims) {
  const Shape in = x.shape();
  std::vector<std::size_t> sorted = axes;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i)
    if (sorted[i] >= in.size() || (i > 0 && sorted[i] == sorted[i - 1]))
      throw Error("sum: axis " + std::to_string(sorted[i]) + " is out of range or repeated for " +
                  "input " + shape_str(in));
  Tensor<T> y = xt::sum(x.value(), sorted, xt::evaluation_strategy::immediate);
  Shape kept = kept_shape(in, sorted);
  if (keepdims) y.reshape(kept);
  return record<SumNode<T>>(std::move(y), {x}, std::move(kept));
}

OpInfo sum_info() {
  return {"sum",
          {make_case("all", {{"x", {3, 4}}}, [](const auto& in) { return sum(in[0]); }),
           make_case("axis0", {{"x", {3, 4}}}, [](const auto& in) { return sum(in[0], {0}); }),
           make_case("axes_keepdims", {{"x", {2, 3, 4}}}, [](const auto& in) {
             return sum(in[0], {0, 2}, true);
           })}};
}

#define X(T)                                       \
  template Variable<T> sum<T>(const Variable<T>&); \
  template Variable<T> sum<T>(const Variable<T>&, const std::vector<std::size_t>&, bool);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
