// Node<T>: one recorded op in the dynamic graph.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "xgrad/variable.hpp"

namespace xgrad {

/// A recorded op. It holds its inputs in order and a sequence number (creation order).
/// `backward(grad_out)` returns one gradient per input, in input order; `no_grad<T>()` may stand
/// in where `needs_input_grad(i)` is false. A node never accumulates: only the engine sums.
template <class T>
class Node {
 public:
  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  /// Tears down the chain of nodes above this one iteratively, so a graph of 100,000 ops
  /// is destroyed without deep recursion.
  virtual ~Node();

  /// The op's name, as in the registry ("conv2d").
  virtual const char* name() const = 0;
  /// d(loss)/d(input_i) for each input, given d(loss)/d(output).
  virtual std::vector<Tensor<T>> backward(const Tensor<T>& grad_out) = 0;

  std::size_t num_inputs() const { return inputs_.size(); }
  const Tensor<T>& input_value(std::size_t i) const { return inputs_.at(i)->value; }
  /// Whether input i takes part in the gradient: an op may skip computing grads others don't need.
  bool needs_input_grad(std::size_t i) const { return inputs_.at(i)->requires_grad; }
  std::uint64_t sequence_nr() const { return sequence_nr_; }

  // Used by record() and the engine.
  void set_inputs(std::vector<std::shared_ptr<VariableImpl<T>>> inputs);
  const std::vector<std::shared_ptr<VariableImpl<T>>>& inputs() const { return inputs_; }
  void add_hook(GradHook<T> hook) { hooks_.push_back(std::move(hook)); }
  const std::vector<GradHook<T>>& hooks() const { return hooks_; }
  /// Drops the inputs (and with them the graph above); later backward calls throw.
  void release();
  bool released() const { return released_; }

 private:
  static void unlink(std::vector<std::shared_ptr<VariableImpl<T>>> stack);

  std::vector<std::shared_ptr<VariableImpl<T>>> inputs_;
  std::vector<GradHook<T>> hooks_;
  std::uint64_t sequence_nr_ = 0;
  bool released_ = false;
};

/// A backward's result built by moving each gradient in. (`return {std::move(dx)};` would copy
/// the tensor: the elements of an initializer list are const.)
template <class T, class... More>
std::vector<Tensor<T>> gradients(Tensor<T>&& first, More&&... more) {
  std::vector<Tensor<T>> grads;
  grads.reserve(1 + sizeof...(more));
  grads.push_back(std::move(first));
  (grads.push_back(std::move(more)), ...);
  return grads;
}

/// The "no gradient" placeholder a backward returns for inputs that need none.
template <class T>
Tensor<T> no_grad() {
  return Tensor<T>::from_shape({0});
}

extern template class Node<float>;
extern template class Node<double>;

}  // namespace xgrad
