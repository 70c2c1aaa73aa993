#include "xgrad/tensor.hpp"

#include <sstream>

#include <xtensor/xreducer.hpp>

namespace xgrad {

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << ']';
  return os.str();
}

std::size_t shape_numel(const Shape& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const std::size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::size_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::size_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      throw Error(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) +
                  " do not broadcast (dimension " + std::to_string(i) + ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

template <class T>
Tensor<T> reduce_to_shape(const Tensor<T>& grad, const Shape& target) {
  const Shape g = shape_of(grad);
  if (g == target) return grad;
  const auto fail = [&] {
    return Error("gradient of shape " + shape_str(g) + " cannot be reduced to input shape " +
                 shape_str(target));
  };
  if (target.size() > g.size()) throw fail();
  const std::size_t lead = g.size() - target.size();
  std::vector<std::size_t> axes;
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (i < lead) {
      axes.push_back(i);
    } else if (target[i - lead] != g[i]) {
      if (target[i - lead] != 1) throw fail();
      axes.push_back(i);
    }
  }
  Tensor<T> summed = xt::sum(grad, axes, xt::evaluation_strategy::immediate);
  summed.reshape(target);
  return summed;
}

template Tensor<float> reduce_to_shape(const Tensor<float>&, const Shape&);
template Tensor<double> reduce_to_shape(const Tensor<double>&, const Shape&);

void check_rank(const char* op, const char* what, const Shape& shape, std::size_t rank) {
  if (shape.size() != rank)
    throw Error(std::string(op) + ": " + what + " must have rank " + std::to_string(rank) +
                " but has shape " + shape_str(shape));
}

}  // namespace xgrad
