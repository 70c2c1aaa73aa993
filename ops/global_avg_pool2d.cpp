// global_avg_pool2d: [N,C,H,W] -> [N,C], the mean of each plane.
#include "../src/parallel_loop.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct GlobalAvgPool2DNode final : Node<T> {
  explicit GlobalAvgPool2DNode(Shape in_shape) : in_shape_(std::move(in_shape)) {}
  const char* name() const override { return "global_avg_pool2d"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> dx = empty_tensor<T>(in_shape_);
    const std::size_t planes = in_shape_[0] * in_shape_[1];
    const std::size_t plane = in_shape_[2] * in_shape_[3];
    const T inv = T(1) / T(plane);
    const T* gp = g.data();
    T* dp = dx.data();
    const bool parallel = planes > 1 && planes * plane >= (1u << 16);
    detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      for (std::ptrdiff_t q = b; q < e; ++q) {
        const T share = gp[q] * inv;
        T* dq = dp + std::size_t(q) * plane;
        for (std::size_t k = 0; k < plane; ++k) dq[k] = share;
      }
    });
    return gradients(std::move(dx));
  }
  Shape in_shape_;
};

}  // namespace

template <class T>
Variable<T> global_avg_pool2d(const Variable<T>& x) {
  const Tensor<T>& xv = x.value();
  const Shape in = shape_of(xv);
  if (in.size() != 4)
    throw Error("global_avg_pool2d: input must have rank 4 (NCHW) but has shape " + shape_str(in));
  if (in[2] == 0 || in[3] == 0)
    throw Error("global_avg_pool2d: input has an empty plane (input " + shape_str(in) + ")");
  const std::size_t planes = in[0] * in[1], plane = in[2] * in[3];
  Tensor<T> y = empty_tensor<T>({in[0], in[1]});
  const T* xp = xv.data();
  T* yp = y.data();
  const bool parallel = planes > 1 && planes * plane >= (1u << 16);
  detail::for_ranges(std::ptrdiff_t(planes), parallel, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
    for (std::ptrdiff_t q = b; q < e; ++q) {
      const T* xq = xp + std::size_t(q) * plane;
      T total = 0;
      for (std::size_t k = 0; k < plane; ++k) total += xq[k];
      yp[q] = total / T(plane);
    }
  });
  return record<GlobalAvgPool2DNode<T>>(std::move(y), {x}, in);
}

OpInfo global_avg_pool2d_info() {
  const auto fn = [](const auto& in) { return global_avg_pool2d(in[0]); };
  return {"global_avg_pool2d",
          {make_case("single", {{"x", {1, 1, 3, 3}}}, fn),
           make_case("batch_odd", {{"x", {2, 3, 5, 7}}}, fn),
           make_case("one_pixel", {{"x", {3, 2, 1, 1}}}, fn)}};
}

#define X(T) template Variable<T> global_avg_pool2d<T>(const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
