// The engine: backward(), NoGradGuard and gradient mode.
#pragma once

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

/// detach(v) == v.detach(): a new leaf with a copy of the value, cut from the graph.
template <class T>
Variable<T> detach(const Variable<T>& v) {
  return v.detach();
}

}  // namespace xgrad
