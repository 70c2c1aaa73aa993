// mean: over all elements, or over given axes.
#include <algorithm>
#include <string>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

// Walks the input row by row (a row is its innermost axis) with the offset of the output element
// the row's first element is averaged into; reduced axes have output stride 0. The callback gets
// (input offset, output offset, row length, output stride along the row), so a row reduced into
// one element is a plain sum rather than a chain of dependent adds into memory.
struct ReduceMap {
  Shape in_shape;
  std::vector<std::size_t> out_stride;  // per input axis; 0 on reduced axes

  template <class F>
  void for_each_row(F&& f) const {
    const std::size_t rank = in_shape.size();
    const std::size_t n = shape_numel(in_shape);
    if (n == 0) return;
    std::vector<std::size_t> idx(rank, 0);
    std::size_t out = 0;
    const std::size_t inner = rank ? in_shape[rank - 1] : 1;
    const std::size_t inner_stride = rank ? out_stride[rank - 1] : 0;
    for (std::size_t i = 0; i < n; i += inner) {
      f(i, out, inner, inner_stride);
      for (std::size_t a = rank ? rank - 1 : 0; a-- > 0;) {
        out += out_stride[a];
        if (++idx[a] < in_shape[a]) break;
        out -= out_stride[a] * in_shape[a];
        idx[a] = 0;
      }
    }
  }
};

ReduceMap make_map(const Shape& in, const Shape& kept) {
  ReduceMap m{in, std::vector<std::size_t>(in.size(), 0)};
  std::size_t stride = 1;
  for (std::size_t a = in.size(); a-- > 0;) {
    m.out_stride[a] = kept[a] == 1 ? 0 : stride;
    stride *= kept[a];
  }
  return m;
}

template <class T>
struct MeanAllNode final : Node<T> {
  const char* name() const override { return "mean"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& x = this->input_value(0);
    const T v = *g.data() / T(x.size());
    return gradients(filled_tensor<T>(shape_of(x), v));
  }
};

template <class T>
struct MeanAxesNode final : Node<T> {
  MeanAxesNode(ReduceMap map, std::size_t count) : map_(std::move(map)), count_(count) {}
  const char* name() const override { return "mean"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    Tensor<T> dx = empty_tensor<T>(map_.in_shape);
    const T scale = T(1) / T(count_);
    const T* gp = g.data();
    T* dp = dx.data();
    map_.for_each_row([&](std::size_t i, std::size_t o, std::size_t len, std::size_t stride) {
      if (stride == 0) {
        const T v = gp[o] * scale;
        for (std::size_t j = 0; j < len; ++j) dp[i + j] = v;
      } else {
        for (std::size_t j = 0; j < len; ++j) dp[i + j] = gp[o + j] * scale;
      }
    });
    return gradients(std::move(dx));
  }
  ReduceMap map_;
  std::size_t count_;
};

}  // namespace

template <class T>
Variable<T> mean(const Variable<T>& x) {
  const Tensor<T>& xv = x.value();
  if (xv.size() == 0) throw Error("mean: input " + shape_str(xv) + " has no elements");
  const T* xp = xv.data();
  T total = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) total += xp[i];
  Tensor<T> y = empty_tensor<T>({});
  *y.data() = total / T(xv.size());
  return record<MeanAllNode<T>>(std::move(y), {x});
}

template <class T>
Variable<T> mean(const Variable<T>& x, const std::vector<std::size_t>& axes, bool keepdims) {
  const Shape in = x.shape();
  std::vector<std::size_t> sorted = axes;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] >= in.size())
      throw Error("mean: axis " + std::to_string(sorted[i]) + " is out of range for input " +
                  shape_str(in) + " of rank " + std::to_string(in.size()));
    if (i > 0 && sorted[i] == sorted[i - 1])
      throw Error("mean: axis " + std::to_string(sorted[i]) + " is repeated (input " +
                  shape_str(in) + ")");
  }
  Shape kept = in;
  std::size_t count = 1;
  for (std::size_t a : sorted) {
    count *= in[a];
    kept[a] = 1;
  }
  if (count == 0)
    throw Error("mean: the reduced axes of input " + shape_str(in) + " have no elements");
  const ReduceMap map = make_map(in, kept);
  Tensor<T> y = filled_tensor<T>(kept, T(0));
  const T* xp = x.value().data();
  T* yp = y.data();
  map.for_each_row([&](std::size_t i, std::size_t o, std::size_t len, std::size_t stride) {
    if (stride == 0) {
      T row = 0;
      for (std::size_t j = 0; j < len; ++j) row += xp[i + j];
      yp[o] += row;
    } else {
      for (std::size_t j = 0; j < len; ++j) yp[o + j] += xp[i + j];
    }
  });
  const T scale = T(1) / T(count);
  for (std::size_t o = 0; o < y.size(); ++o) yp[o] *= scale;
  if (!keepdims) {
    Shape out;
    for (std::size_t a = 0; a < in.size(); ++a)
      if (!std::binary_search(sorted.begin(), sorted.end(), a)) out.push_back(in[a]);
    y.reshape(out);
  }
  return record<MeanAxesNode<T>>(std::move(y), {x}, map, count);
}

OpInfo mean_info() {
  return {
      "mean",
      {make_case("all", {{"x", {3, 4}}}, [](const auto& in) { return mean(in[0]); }),
       make_case("axis0", {{"x", {3, 4}}}, [](const auto& in) { return mean(in[0], {0}); }),
       make_case("last_axis", {{"x", {2, 3, 5}}}, [](const auto& in) { return mean(in[0], {2}); }),
       make_case("axes_keepdims", {{"x", {2, 3, 4}}},
                 [](const auto& in) {
                   return mean(in[0], {2, 0}, true);
                 }),
       make_case("spatial_nchw", {{"x", {2, 3, 3, 2}}},
                 [](const auto& in) {
                   return mean(in[0], {2, 3});
                 }),
       make_case("all_axes_keepdims", {{"x", {2, 1, 3}}}, [](const auto& in) {
         return mean(in[0], {0, 1, 2}, true);
       })}};
}

#define X(T)                                        \
  template Variable<T> mean<T>(const Variable<T>&); \
  template Variable<T> mean<T>(const Variable<T>&, const std::vector<std::size_t>&, bool);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
