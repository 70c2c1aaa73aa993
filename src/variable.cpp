#include "xgrad/variable.hpp"

#include <atomic>

#include "xgrad/node.hpp"

namespace xgrad {

namespace {
std::atomic<std::uint64_t> next_sequence_nr{1};
}

template <class T>
Variable<T>::Variable(Tensor<T> value, bool requires_grad, std::string name)
    : impl_(std::make_shared<VariableImpl<T>>()) {
  impl_->value = std::move(value);
  impl_->requires_grad = requires_grad;
  impl_->name = std::move(name);
}

template <class T>
Variable<T> Variable<T>::from_impl(std::shared_ptr<VariableImpl<T>> impl) {
  Variable v;
  v.impl_ = std::move(impl);
  return v;
}

template <class T>
VariableImpl<T>& Variable<T>::checked() const {
  if (!impl_) throw Error("Variable: use of an empty (default-constructed) Variable");
  return *impl_;
}

template <class T>
T Variable<T>::item() const {
  const Tensor<T>& v = value();
  if (v.size() != 1)
    throw Error("Variable::item: needs exactly one element but shape is " + shape_str(v));
  return *v.data();
}

template <class T>
Variable<T>& Variable<T>::set_requires_grad(bool on) {
  if (!is_leaf())
    throw Error("Variable::set_requires_grad: '" + checked().name +
                "' is not a leaf; detach() it first");
  checked().requires_grad = on;
  return *this;
}

template <class T>
const Tensor<T>& Variable<T>::grad() const {
  if (!checked().has_grad)
    throw Error("Variable::grad: '" + impl_->name + "' " + shape_str(impl_->value) +
                " has no gradient (not a leaf reached by backward, or zeroed)");
  return impl_->grad;
}

template <class T>
Tensor<T>& Variable<T>::mutable_grad() {
  const Tensor<T>& g = grad();
  return const_cast<Tensor<T>&>(g);
}

template <class T>
void Variable<T>::zero_grad(bool set_to_none) {
  VariableImpl<T>& impl = checked();
  if (!impl.has_grad) return;
  if (!set_to_none) {
    impl.grad.fill(T(0));
    return;
  }
  impl.grad = Tensor<T>();
  impl.has_grad = false;
}

template <class T>
Variable<T> Variable<T>::detach() const {
  return Variable(value(), false, checked().name);
}

template <class T>
void Variable<T>::register_hook(GradHook<T> hook) {
  VariableImpl<T>& impl = checked();
  if (!impl.requires_grad)
    throw Error("Variable::register_hook: '" + impl.name + "' " + shape_str(impl.value) +
                " does not require a gradient");
  if (impl.grad_fn)
    impl.grad_fn->add_hook(std::move(hook));
  else
    impl.hooks.push_back(std::move(hook));
}

template <class T>
Variable<T>& Variable<T>::set_name(std::string name) {
  checked().name = std::move(name);
  return *this;
}

template <class T>
void Node<T>::set_inputs(std::vector<std::shared_ptr<VariableImpl<T>>> inputs) {
  inputs_ = std::move(inputs);
  sequence_nr_ = next_sequence_nr.fetch_add(1, std::memory_order_relaxed);
}

template <class T>
void Node<T>::unlink(std::vector<std::shared_ptr<VariableImpl<T>>> stack) {
  // Move each solely-owned input's node's inputs onto this local stack before they die, so no
  // destructor recurses into the next.
  while (!stack.empty()) {
    std::shared_ptr<VariableImpl<T>> v = std::move(stack.back());
    stack.pop_back();
    if (v.use_count() != 1 || !v->grad_fn) continue;
    std::shared_ptr<Node<T>> n = std::move(v->grad_fn);
    if (n.use_count() != 1) continue;
    for (auto& in : n->inputs_) stack.push_back(std::move(in));
    n->inputs_.clear();
  }
}

template <class T>
void Node<T>::release() {
  released_ = true;
  hooks_.clear();
  auto inputs = std::move(inputs_);
  inputs_.clear();
  unlink(std::move(inputs));
}

template <class T>
Node<T>::~Node() {
  unlink(std::move(inputs_));
}

template class Variable<float>;
template class Variable<double>;
template class Node<float>;
template class Node<double>;

}  // namespace xgrad
