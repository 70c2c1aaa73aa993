// record<NodeT>(): how an op attaches its node to the graph.
#pragma once

#include <initializer_list>
#include <memory>
#include <utility>
#include <vector>

#include "xgrad/graph.hpp"
#include "xgrad/node.hpp"
#include "xgrad/variable.hpp"

namespace xgrad {

/// True when an op over `inputs` must record a node: gradients are enabled and some input
/// requires one. Ops use it to skip saving tensors in inference.
template <class T>
bool should_record(std::initializer_list<const Variable<T>*> inputs) {
  if (!grad_enabled()) return false;
  for (const Variable<T>* v : inputs)
    if (v->defined() && v->requires_grad()) return true;
  return false;
}

/// Wraps an op's computed `value` in a Variable and, when recording, attaches a NodeT built from
/// `node_args` whose inputs are `inputs` (in order). Undefined Variables (an absent bias) are
/// skipped, so a node's inputs are the defined ones in order.
template <class NodeT, class T, class... Args>
Variable<T> record(Tensor<T> value, std::vector<Variable<T>> inputs, Args&&... node_args) {
  bool recording = false;
  if (grad_enabled())
    for (const Variable<T>& v : inputs)
      if (v.defined() && v.requires_grad()) recording = true;
  auto impl = std::make_shared<VariableImpl<T>>();
  impl->value = std::move(value);
  if (recording) {
    auto node = std::make_shared<NodeT>(std::forward<Args>(node_args)...);
    std::vector<std::shared_ptr<VariableImpl<T>>> impls;
    impls.reserve(inputs.size());
    for (const Variable<T>& v : inputs)
      if (v.defined()) impls.push_back(v.impl());
    node->set_inputs(std::move(impls));
    impl->grad_fn = std::move(node);
    impl->requires_grad = true;
  }
  return Variable<T>::from_impl(std::move(impl));
}

/// Explicitly instantiates a templated op (or anything taking one type) for float and double:
/// `#define X(T) template Variable<T> relu<T>(const Variable<T>&);` then
/// `XGRAD_FOR_FLOAT_AND_DOUBLE(X)`.
#define XGRAD_FOR_FLOAT_AND_DOUBLE(X) X(float) X(double)

}  // namespace xgrad
