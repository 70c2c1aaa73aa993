// Variable<T>: a cheap handle (shared_ptr) to a value, its gradient, requires_grad and grad_fn.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "xgrad/tensor.hpp"

namespace xgrad {

template <class T>
class Node;

/// A gradient hook: called with the fully summed gradient of a Variable before it flows on
/// (or, for a leaf, before it is added into `.grad`). It may read the gradient or replace it
/// in place with one of the same shape.
template <class T>
using GradHook = std::function<void(Tensor<T>& grad)>;

struct BackwardOptions {
  bool retain_graph = false;  ///< keep the graph so backward can run through it again
};

/// The shared state a Variable points to. Ops and the engine use it; users hold Variables.
template <class T>
struct VariableImpl {
  Tensor<T> value;
  Tensor<T> grad;
  bool has_grad = false;
  bool requires_grad = false;
  std::shared_ptr<Node<T>> grad_fn;  ///< the node that made this value; null for a leaf
  std::string name;
  std::vector<GradHook<T>> hooks;  ///< hooks of a leaf; a non-leaf keeps them on grad_fn
};

/// A handle to a value in the graph. Copies share the same value and gradient.
template <class T>
class Variable {
 public:
  /// An empty handle; `defined()` is false until assigned.
  Variable() = default;
  /// A leaf holding `value`.
  explicit Variable(Tensor<T> value, bool requires_grad = false, std::string name = {});
  static Variable from_impl(std::shared_ptr<VariableImpl<T>> impl);

  bool defined() const { return impl_ != nullptr; }
  const Tensor<T>& value() const { return checked().value; }
  /// The value for in-place updates (optimisers). Graphs already recorded see the change.
  Tensor<T>& mutable_value() { return checked().value; }
  Shape shape() const { return shape_of(value()); }
  std::size_t numel() const { return value().size(); }
  std::size_t dim() const { return value().dimension(); }
  /// The single value of a one-element tensor; throws otherwise.
  T item() const;

  bool requires_grad() const { return checked().requires_grad; }
  /// Marks a leaf as needing a gradient; throws on a non-leaf.
  Variable& set_requires_grad(bool on);
  bool is_leaf() const { return checked().grad_fn == nullptr; }
  const std::shared_ptr<Node<T>>& grad_fn() const { return checked().grad_fn; }

  bool has_grad() const { return checked().has_grad; }
  /// The accumulated gradient; throws when backward has not reached this leaf.
  const Tensor<T>& grad() const;
  Tensor<T>& mutable_grad();
  /// Sets an existing gradient to zeros (keeps its memory); a no-op without one. With
  /// set_to_none, drops it instead, like PyTorch's zero_grad(set_to_none=True): has_grad() turns
  /// false, and the next backward stores its gradient where it would have added it to zeros, the
  /// same values (0 + g = g, up to the sign of a zero) for one pass less over the memory.
  void zero_grad(bool set_to_none = false);

  /// A new leaf sharing no graph with this one, with a copy of the value and no gradient.
  Variable detach() const;
  /// Adds a hook that sees (and may replace) this variable's gradient during backward.
  void register_hook(GradHook<T> hook);

  const std::string& name() const { return checked().name; }
  Variable& set_name(std::string name);

  /// Runs backward from this variable; see xgrad::backward in graph.hpp.
  void backward(BackwardOptions options = {}) const;
  void backward(const Tensor<T>& seed, BackwardOptions options = {}) const;

  const std::shared_ptr<VariableImpl<T>>& impl() const { return impl_; }

 private:
  VariableImpl<T>& checked() const;
  std::shared_ptr<VariableImpl<T>> impl_;
};

extern template class Variable<float>;
extern template class Variable<double>;

}  // namespace xgrad
