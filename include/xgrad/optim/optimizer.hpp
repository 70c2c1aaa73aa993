// Optimisers (SGD, Adam, AdamW) with PyTorch's update rules, and gradient-norm clipping.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"
#include "xgrad/variable.hpp"

namespace xgrad::optim {

/// Named tensors, as optimiser state is exported and imported ("sgd.momentum.3").
template <class T>
using NamedTensors = std::vector<std::pair<std::string, Tensor<T>>>;

/// Base of every optimiser: holds the parameters and the learning rate.
///
/// step() updates every parameter that has a gradient (parameters without one are skipped, as
/// PyTorch skips `p.grad is None`), in place through mutable_value() under a NoGradGuard.
/// State (momentum buffers, moments, step counts) is exported as named tensors whose names start
/// with prefix() + "." and end with the parameter's index in the list given to the constructor,
/// so a checkpoint can hold it next to the model's tensors.
template <class T>
class Optimizer {
 public:
  /// Throws xgrad::Error on an undefined parameter or a negative learning rate.
  Optimizer(std::vector<Variable<T>> params, double lr, std::string prefix);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// One update of every parameter that has a gradient: prepare_update(), then update_range()
  /// over each such parameter's elements, split between the threads when there are enough.
  void step();

  /// The elementwise update step() is made of, which sharded_step() (parallel.hpp) runs on each
  /// thread's part of the parameters as soon as it has summed that part of their gradients.
  /// prepare_update() runs once per step, before any update_range(): it checks every gradient's
  /// shape against its parameter (xgrad::Error naming both, before anything changes), creates the
  /// state of parameters updated for the first time and advances step counts, for the parameters
  /// that have a gradient. It may look at which parameters have one and at its shape, not at its
  /// values (sharded_step has not summed them yet). Then update_range(i, begin, end) updates
  /// elements [begin, end) of parameter i, which has a gradient, from the same elements of the
  /// parameter, its gradient and its state only; calls on disjoint ranges may run at once.
  virtual void prepare_update() = 0;
  virtual void update_range(std::size_t i, std::size_t begin, std::size_t end) = 0;
  /// Sets every existing gradient to zeros (keeps its memory, like PyTorch's set_to_none=False),
  /// or with set_to_none drops them (Variable::zero_grad). The updates are the same for every
  /// parameter the next backward reaches. One it does not reach is still updated with a zero
  /// gradient after zero_grad() (momentum and weight decay go on), and skipped by step() after
  /// zero_grad(true), as in PyTorch.
  void zero_grad(bool set_to_none = false);

  double lr() const { return lr_; }
  /// Throws xgrad::Error on a negative or non-finite value.
  void set_lr(double lr);

  const std::vector<Variable<T>>& params() const { return params_; }
  /// "sgd", "adam" or "adamw": the first component of every state name.
  const std::string& prefix() const { return prefix_; }

  /// A copy of the optimiser's state as named tensors. Buffers not created yet (no step taken
  /// for that parameter) are absent, as in PyTorch's state dict.
  virtual NamedTensors<T> export_state() const = 0;
  /// Replaces the state from named tensors. Entries whose name does not start with prefix() + "."
  /// are ignored (a checkpoint also holds the model); an entry with the prefix that is not
  /// understood, names a parameter index out of range, or has the wrong shape throws xgrad::Error
  /// naming it. State absent from `state` is cleared (as before the first step).
  virtual void import_state(const NamedTensors<T>& state) = 0;

 protected:
  /// Throws xgrad::Error naming the parameter and both shapes when a gradient's shape is not its
  /// parameter's (the first check of every prepare_update, before anything changes).
  void check_gradient_shapes() const;

  std::vector<Variable<T>> params_;
  double lr_;
  std::string prefix_;
};

/// PyTorch's SGD options. Defaults as torch.optim.SGD (lr has no default there; 0.01 here).
struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;  ///< L2 penalty: g += weight_decay·p
};

/// torch.optim.SGD, exactly:
///   g = grad + wd·p
///   if momentum ≠ 0: b = g on the first step, else b = momentum·b + (1 − dampening)·g
///                    g = g + momentum·b (nesterov) or g = b
///   p = p − lr·g
/// State: "sgd.momentum.<i>" (shape of parameter i), only with momentum ≠ 0.
/// Throws xgrad::Error when nesterov is set without momentum > 0 and dampening = 0, or on
/// negative lr / momentum / weight_decay.
template <class T>
class SGD final : public Optimizer<T> {
 public:
  SGD(std::vector<Variable<T>> params, SGDOptions options);
  void prepare_update() override;
  void update_range(std::size_t i, std::size_t begin, std::size_t end) override;
  NamedTensors<T> export_state() const override;
  void import_state(const NamedTensors<T>& state) override;
  const SGDOptions& options() const { return options_; }

 private:
  SGDOptions options_;
  std::vector<Tensor<T>> momentum_;
  std::vector<bool> has_momentum_;
  std::vector<char> first_;  ///< per parameter: this step is its first with momentum (b = g)
};

/// Adam / AdamW options. Defaults as torch.optim.Adam; AdamW's default weight_decay is 1e-2
/// (use AdamOptions::adamw_defaults()).
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  static AdamOptions adamw_defaults() {
    AdamOptions o;
    o.weight_decay = 1e-2;
    return o;
  }
};

/// torch.optim.Adam (amsgrad = false), per parameter with its own step count t:
///   t = t + 1;  g = grad + wd·p   (L2 penalty, Adam only)
///   m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²
///   p = p − (lr / (1 − β1ᵗ)) · m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps)
/// torch.optim.AdamW: the same without the L2 term, after a decoupled decay p = p·(1 − lr·wd).
/// State: "<prefix>.exp_avg.<i>", "<prefix>.exp_avg_sq.<i>" (shape of parameter i) and
/// "<prefix>.step.<i>" (shape [], the step count) with prefix "adam" or "adamw".
/// Throws xgrad::Error on lr < 0, eps < 0, betas outside [0, 1), weight_decay < 0.
template <class T>
class Adam : public Optimizer<T> {
 public:
  Adam(std::vector<Variable<T>> params, AdamOptions options);
  void prepare_update() override;
  void update_range(std::size_t i, std::size_t begin, std::size_t end) override;
  NamedTensors<T> export_state() const override;
  void import_state(const NamedTensors<T>& state) override;
  const AdamOptions& options() const { return options_; }
  /// Steps taken for parameter i (0 before its first update).
  std::size_t step_count(std::size_t i) const { return steps_.at(i); }

 protected:
  Adam(std::vector<Variable<T>> params, AdamOptions options, bool decoupled);

 private:
  AdamOptions options_;
  bool decoupled_;
  std::vector<Tensor<T>> exp_avg_, exp_avg_sq_;
  std::vector<std::size_t> steps_;
  /// Per parameter, this step's lr / (1 − β1ᵗ) and sqrt(1 − β2ᵗ) (prepare_update).
  std::vector<T> step_size_, sqrt_bc2_;
};

/// torch.optim.AdamW: Adam with decoupled weight decay (see Adam).
template <class T>
class AdamW final : public Adam<T> {
 public:
  AdamW(std::vector<Variable<T>> params, AdamOptions options = AdamOptions::adamw_defaults());
};

/// torch.nn.utils.clip_grad_norm_ (2-norm): total = sqrt(Σ‖grad_i‖²) over the parameters that
/// have a gradient; when max_norm / (total + 1e-6) < 1 every such gradient is scaled by it.
/// Returns the total norm before clipping. Throws xgrad::Error on max_norm ≤ 0.
template <class T>
double clip_grad_norm(const std::vector<Variable<T>>& params, double max_norm);

}  // namespace xgrad::optim
