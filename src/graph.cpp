// The backward engine: dependency counts, a ready queue ordered by sequence number, no recursion.
#include "xgrad/graph.hpp"

#include <algorithm>
#include <cstdint>
#include <queue>
#include <unordered_map>

#include "parallel_loop.hpp"

namespace xgrad {

namespace {

thread_local bool grad_mode_enabled = true;

// Leaves of at least this many elements get their shard gradients summed by all threads.
constexpr std::size_t kParallelSumElements = std::size_t(1) << 18;

// The LeafGradients a CaptureGuard installed in this thread, or null.
template <class T>
thread_local LeafGradients<T>* active_capture = nullptr;

template <class T>
Error freed_graph_error(const Node<T>& node) {
  return Error("backward: the graph through '" + std::string(node.name()) + "' (node #" +
               std::to_string(node.sequence_nr()) +
               ") was freed by an earlier backward; pass BackwardOptions{true} (retain_graph) "
               "to the first call to run backward through it again");
}

template <class T>
void apply_hooks(const std::vector<GradHook<T>>& hooks, Tensor<T>& grad, const char* where) {
  const Shape before = shape_of(grad);
  for (const GradHook<T>& hook : hooks) {
    hook(grad);
    if (shape_of(grad) != before)
      throw Error(std::string("backward: a hook on ") + where +
                  " changed the gradient shape from " + shape_str(before) + " to " +
                  shape_str(grad));
  }
}

// Gradients reaching add_into already have the receiver's shape (reduced before), so the sum is
// a flat loop; xtensor's broadcasting `+=` was a third of a concat backward's time.
template <class T>
void add_into(Tensor<T>& sum, bool& has, Tensor<T>&& g) {
  if (has) {
    T* s = sum.data();
    const T* a = g.data();
    const std::size_t n = sum.size();
    for (std::size_t i = 0; i < n; ++i) s[i] += a[i];
  } else {
    sum = std::move(g);
    has = true;
  }
}

template <class T>
struct PendingNode {
  std::shared_ptr<Node<T>> node;
  std::size_t dependencies = 0;  // consumers that have not yet sent their gradient
  Tensor<T> grad;
  bool has_grad = false;
};

template <class T>
struct PendingLeaf {
  std::shared_ptr<VariableImpl<T>> leaf;
  Tensor<T> grad;
  bool has_grad = false;
};

template <class T>
void accumulate_leaf(VariableImpl<T>& leaf, Tensor<T>&& grad) {
  apply_hooks(leaf.hooks, grad, "a leaf");
  add_into(leaf.grad, leaf.has_grad, std::move(grad));
}

// Where a backward pass's leaf gradient goes: into the leaf, or into this thread's capture.
template <class T>
void deliver_leaf(const std::shared_ptr<VariableImpl<T>>& leaf, Tensor<T>&& grad) {
  if (LeafGradients<T>* capture = active_capture<T>)
    capture->add(leaf, std::move(grad));
  else
    accumulate_leaf(*leaf, std::move(grad));
}

template <class T>
void run_backward(const Variable<T>& root, Tensor<T> seed, BackwardOptions options) {
  VariableImpl<T>& root_impl = *root.impl();
  if (!root_impl.requires_grad)
    throw Error("backward: the root " + shape_str(root_impl.value) +
                " does not require a gradient (no input of its graph requires one)");
  if (shape_of(seed) != shape_of(root_impl.value))
    throw Error("backward: seed gradient has shape " + shape_str(seed) +
                " but the root has shape " + shape_str(root_impl.value));
  if (!root_impl.grad_fn) {
    deliver_leaf(root.impl(), std::move(seed));
    return;
  }

  // 1. Count, for every node reachable from the root, how many recorded uses of its output wait
  //    to send a gradient. An explicit stack: a 100,000-op chain must not recurse.
  std::unordered_map<const Node<T>*, PendingNode<T>> pending;
  std::vector<Node<T>*> stack;
  const std::shared_ptr<Node<T>>& root_node = root_impl.grad_fn;
  if (root_node->released()) throw freed_graph_error(*root_node);
  pending[root_node.get()].node = root_node;
  stack.push_back(root_node.get());
  while (!stack.empty()) {
    Node<T>* node = stack.back();
    stack.pop_back();
    for (const auto& input : node->inputs()) {
      const std::shared_ptr<Node<T>>& producer = input->grad_fn;
      if (!producer) continue;
      if (producer->released()) throw freed_graph_error(*producer);
      auto [it, inserted] = pending.try_emplace(producer.get());
      ++it->second.dependencies;
      if (inserted) {
        it->second.node = producer;
        stack.push_back(producer.get());
      }
    }
  }

  // 2. Run nodes as their counts reach zero, latest-created first among the ready ones.
  const auto later_first = [](const Node<T>* a, const Node<T>* b) {
    return a->sequence_nr() < b->sequence_nr();
  };
  std::priority_queue<Node<T>*, std::vector<Node<T>*>, decltype(later_first)> ready(later_first);
  {
    PendingNode<T>& r = pending[root_node.get()];
    r.grad = std::move(seed);
    r.has_grad = true;
  }
  ready.push(root_node.get());

  std::vector<PendingLeaf<T>> leaves;
  std::unordered_map<const VariableImpl<T>*, std::size_t> leaf_slot;

  while (!ready.empty()) {
    Node<T>* node = ready.top();
    ready.pop();
    PendingNode<T>& entry = pending.at(node);
    Tensor<T> grad_out = std::move(entry.grad);
    entry.has_grad = false;
    apply_hooks(node->hooks(), grad_out, node->name());
    std::vector<Tensor<T>> grads = node->backward(grad_out);
    grad_out = Tensor<T>();
    const auto& inputs = node->inputs();
    if (grads.size() != inputs.size())
      throw Error("backward: op '" + std::string(node->name()) + "' returned " +
                  std::to_string(grads.size()) + " gradients for " + std::to_string(inputs.size()) +
                  " inputs");
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const std::shared_ptr<VariableImpl<T>>& input = inputs[i];
      if (!input->requires_grad) continue;
      Tensor<T>& g = grads[i];
      if (g.size() == 0 && input->value.size() != 0)
        throw Error("backward: op '" + std::string(node->name()) +
                    "' returned no gradient for input " + std::to_string(i) + " " +
                    shape_str(input->value) + ", which requires one");
      if (shape_of(g) != shape_of(input->value)) {
        try {
          g = reduce_to_shape(g, shape_of(input->value));
        } catch (const Error& e) {
          throw Error("backward: op '" + std::string(node->name()) + "' input " +
                      std::to_string(i) + ": " + e.what());
        }
      }
      if (input->grad_fn) {
        PendingNode<T>& consumer = pending.at(input->grad_fn.get());
        add_into(consumer.grad, consumer.has_grad, std::move(g));
        if (--consumer.dependencies == 0) ready.push(input->grad_fn.get());
      } else {
        auto [slot, inserted] = leaf_slot.try_emplace(input.get(), leaves.size());
        if (inserted) leaves.push_back({input, {}, false});
        PendingLeaf<T>& leaf = leaves[slot->second];
        add_into(leaf.grad, leaf.has_grad, std::move(g));
      }
    }
    if (!options.retain_graph) node->release();
  }

  // 3. Leaves get their fully summed gradient once, through their hooks.
  for (PendingLeaf<T>& leaf : leaves) deliver_leaf(leaf.leaf, std::move(leaf.grad));
}

}  // namespace

template <class T>
void LeafGradients<T>::add(const std::shared_ptr<VariableImpl<T>>& leaf, Tensor<T>&& grad) {
  // A model has tens of parameters: a linear search is cheaper than hashing.
  for (auto& [held_leaf, held] : grads_)
    if (held_leaf == leaf) {
      bool has = true;
      add_into(held, has, std::move(grad));
      return;
    }
  grads_.emplace_back(leaf, std::move(grad));
}

template <class T>
Tensor<T>* LeafGradients<T>::find(const VariableImpl<T>* leaf) {
  for (auto& [held_leaf, held] : grads_)
    if (held_leaf.get() == leaf) return &held;
  return nullptr;
}

template <class T>
void LeafGradients<T>::erase(const VariableImpl<T>* leaf) {
  grads_.erase(std::remove_if(grads_.begin(), grads_.end(),
                              [&](const auto& held) { return held.first.get() == leaf; }),
               grads_.end());
}

template <class T>
void LeafGradients<T>::apply() {
  for (auto& [leaf, grad] : grads_) accumulate_leaf(*leaf, std::move(grad));
  grads_.clear();
}

template <class T>
void LeafGradients<T>::apply_sum(std::vector<LeafGradients>& parts) {
  // One job per leaf: its gradients in part order. A leaf that has a gradient and no hooks gets
  // them all added straight into .grad; otherwise the first one becomes their sum, which then goes
  // through accumulate_leaf (hooks, then into .grad).
  struct Job {
    std::shared_ptr<VariableImpl<T>> leaf;
    std::vector<Tensor<T>*> grads;
    bool into_leaf = false;
  };
  std::vector<Job> jobs;
  for (LeafGradients& part : parts)
    for (auto& [leaf, grad] : part.grads_) {
      auto it =
          std::find_if(jobs.begin(), jobs.end(), [&](const Job& j) { return j.leaf == leaf; });
      if (it == jobs.end()) it = jobs.insert(jobs.end(), Job{leaf, {}, false});
      it->grads.push_back(&grad);
    }
  // Each element is summed in part order, so the result does not depend on how the elements are
  // split between threads. Small leaves are summed in this thread: split over two threads, LeNet's
  // 61,706 parameters from two parts took 60 us against 31 (best of 2,000), too little work to pay
  // for a parallel region and for moving the parts' cache lines between the cores. The convnet's
  // (1.2M parameters) took a median of 680 us on two threads against 1,000 on one.
  for (Job& job : jobs) {
    job.into_leaf = job.leaf->has_grad && job.leaf->hooks.empty();
    T* dst = job.into_leaf ? job.leaf->grad.data() : job.grads[0]->data();
    const std::size_t n = job.grads[0]->size();
    const std::size_t first = job.into_leaf ? 0 : 1;
    const std::ptrdiff_t pieces = n >= kParallelSumElements ? 64 : 1;
    detail::for_ranges(pieces, pieces > 1, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t piece = begin; piece < end; ++piece) {
        const std::size_t lo = n * std::size_t(piece) / std::size_t(pieces);
        const std::size_t hi = n * std::size_t(piece + 1) / std::size_t(pieces);
        for (std::size_t k = first; k < job.grads.size(); ++k) {
          const T* src = job.grads[k]->data();
          for (std::size_t i = lo; i < hi; ++i) dst[i] += src[i];
        }
      }
    });
  }
  for (Job& job : jobs)
    if (!job.into_leaf) accumulate_leaf(*job.leaf, std::move(*job.grads[0]));
  for (LeafGradients& part : parts) part.grads_.clear();
}

template <class T>
CaptureGuard<T>::CaptureGuard(LeafGradients<T>& into) : previous_(active_capture<T>) {
  active_capture<T> = &into;
}

template <class T>
CaptureGuard<T>::~CaptureGuard() {
  active_capture<T> = previous_;
}

template <class T>
void backward(const Variable<T>& root, BackwardOptions options) {
  if (!root.defined()) throw Error("backward: the root is an empty Variable");
  if (root.numel() != 1)
    throw Error("backward: the root has shape " + shape_str(root.shape()) +
                "; a non-scalar root needs a seed gradient of that shape");
  run_backward(root, filled_tensor<T>(root.shape(), T(1)), options);
}

template <class T>
void backward(const Variable<T>& root, const Tensor<T>& seed, BackwardOptions options) {
  if (!root.defined()) throw Error("backward: the root is an empty Variable");
  run_backward(root, Tensor<T>(seed), options);
}

template <class T>
void Variable<T>::backward(BackwardOptions options) const {
  xgrad::backward(*this, options);
}

template <class T>
void Variable<T>::backward(const Tensor<T>& seed, BackwardOptions options) const {
  xgrad::backward(*this, seed, options);
}

bool grad_enabled() {
  return grad_mode_enabled;
}

NoGradGuard::NoGradGuard() : previous_(grad_mode_enabled) {
  grad_mode_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  grad_mode_enabled = previous_;
}

#define XGRAD_INSTANTIATE_BACKWARD(T)                                               \
  template void backward<T>(const Variable<T>&, BackwardOptions);                   \
  template void backward<T>(const Variable<T>&, const Tensor<T>&, BackwardOptions); \
  template void Variable<T>::backward(BackwardOptions) const;                       \
  template void Variable<T>::backward(const Tensor<T>&, BackwardOptions) const;
template class LeafGradients<float>;
template class LeafGradients<double>;
template class CaptureGuard<float>;
template class CaptureGuard<double>;
XGRAD_INSTANTIATE_BACKWARD(float)
XGRAD_INSTANTIATE_BACKWARD(double)

}  // namespace xgrad
