// Tensor<T> and shape helpers: the one place xtensor is included from.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

namespace xgrad {

/// A dense, row-major, N-dimensional array. Layout for images is NCHW.
template <class T>
using Tensor = xt::xarray<T>;

/// A tensor shape, outermost dimension first.
using Shape = std::vector<std::size_t>;

/// The error every op throws for bad input: the message names the op and the shapes.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// "[8,3,28,28]"
std::string shape_str(const Shape& shape);

/// Number of elements of a shape (1 for a scalar shape []).
std::size_t shape_numel(const Shape& shape);

template <class T>
Shape shape_of(const Tensor<T>& t) {
  return Shape(t.shape().begin(), t.shape().end());
}

template <class T>
std::string shape_str(const Tensor<T>& t) {
  return shape_str(shape_of(t));
}

/// An uninitialised tensor of the given shape (callers fill every element).
template <class T>
Tensor<T> empty_tensor(const Shape& shape) {
  return Tensor<T>::from_shape(shape);
}

/// A tensor of the given shape filled with `value`.
template <class T>
Tensor<T> filled_tensor(const Shape& shape, T value) {
  Tensor<T> t = Tensor<T>::from_shape(shape);
  t.fill(value);
  return t;
}

/// The shape two operands broadcast to (NumPy rules); throws naming `op` when they cannot.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

/// Sums `grad` over broadcast dimensions so it takes `target` shape: the reverse of broadcasting.
/// Throws when `grad` could not have come from broadcasting `target`.
template <class T>
Tensor<T> reduce_to_shape(const Tensor<T>& grad, const Shape& target);

/// Throws xgrad::Error "<op>: <what> must have rank <rank> but has shape <shape>".
void check_rank(const char* op, const char* what, const Shape& shape, std::size_t rank);

}  // namespace xgrad
