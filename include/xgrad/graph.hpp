// The engine: backward(), NoGradGuard and gradient mode.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "xgrad/node.hpp"
#include "xgrad/variable.hpp"

namespace xgrad {

/// Runs reverse-mode differentiation from `root`.
/// - A one-element root defaults to a seed of 1; any other root needs `seed` of its shape.
/// - Nodes run in reverse topological order (dependency counts, no recursion); ties go to the
///   later-created node first, so runs are reproducible.
/// - Gradients of a value used several times are summed by the engine, reduced over broadcast
///   dimensions to the input's shape, passed through hooks, and added into leaf `.grad`.
/// - Without `retain_graph`, the graph is freed; backward through it again throws.
template <class T>
void backward(const Variable<T>& root, BackwardOptions options = {});
template <class T>
void backward(const Variable<T>& root, const Tensor<T>& seed, BackwardOptions options = {});

/// Whether ops record nodes on this thread (true unless a NoGradGuard is alive).
bool grad_enabled();

/// Disables recording for its lifetime (inference, optimiser updates). Nests.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// Leaf gradients held back from the leaves: what the backward passes of a thread under a
/// CaptureGuard would have added into leaf `.grad`, summed per leaf. apply() adds them in, through
/// the leaves' hooks. Data parallelism (parallel.hpp) gives each thread its own LeafGradients, so
/// no two threads write a shared parameter's gradient, and applies them in shard order afterwards.
template <class T>
class LeafGradients {
 public:
  /// Adds `grad` to what is held for `leaf` (the engine calls this).
  void add(const std::shared_ptr<VariableImpl<T>>& leaf, Tensor<T>&& grad);
  /// Adds every held gradient into its leaf's `.grad` (running the leaf's hooks), in the order the
  /// leaves were first captured, and empties this object.
  void apply();
  /// Number of leaves held.
  std::size_t size() const { return grads_.size(); }
  /// The gradient held for `leaf`, or null.
  Tensor<T>* find(const VariableImpl<T>* leaf);
  /// Forgets what is held for `leaf` (sharded_step applies its parameters' gradients itself).
  void erase(const VariableImpl<T>* leaf);

  /// Applies several captures as one backward: for each leaf (in the order first captured), the
  /// sum of its gradients over `parts`, in part order, goes through the leaf's hooks once and is
  /// added into `.grad`. Empties the parts.
  static void apply_sum(std::vector<LeafGradients>& parts);

 private:
  std::vector<std::pair<std::shared_ptr<VariableImpl<T>>, Tensor<T>>> grads_;
};

/// For its lifetime, backward passes in this thread put leaf gradients into `into` instead of the
/// leaves' `.grad`. Nests; other threads are unaffected.
template <class T>
class CaptureGuard {
 public:
  explicit CaptureGuard(LeafGradients<T>& into);
  ~CaptureGuard();
  CaptureGuard(const CaptureGuard&) = delete;
  CaptureGuard& operator=(const CaptureGuard&) = delete;

 private:
  LeafGradients<T>* previous_;
};

/// detach(v) == v.detach(): a new leaf with a copy of the value, cut from the graph.
template <class T>
Variable<T> detach(const Variable<T>& v) {
  return v.detach();
}

}  // namespace xgrad
