// Module<T>: the base of every layer and model. It owns named parameters, buffers and child
// modules, switches train/eval mode recursively, and prints a summary table.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"
#include "xgrad/variable.hpp"

namespace xgrad::nn {

/// A layer or a model: y = forward(x).
///
/// State lives in three registries, filled by subclass constructors:
/// - parameters: leaf Variables that require a gradient ("weight", "bias");
/// - buffers: tensors the module updates but does not train (BatchNorm running statistics);
/// - children: sub-modules. Their entries appear under dotted names, "3.conv1.weight".
/// A subclass reads its parameters back through param(slot), so replace_parameter() (used to
/// gradcheck a whole module) reaches the forward pass. Modules are not copyable: hold them in
/// std::shared_ptr.
template <class T>
class Module {
 public:
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The layer's computation. Bad input throws xgrad::Error from the op that rejects it.
  virtual Variable<T> forward(const Variable<T>& x) = 0;
  Variable<T> operator()(const Variable<T>& x) { return forward(x); }

  /// Every parameter of this module and its children, own parameters first, then each child in
  /// registration order, with dotted names ("0.weight", "3.conv1.weight"). A Variable
  /// registered twice (shared weights) is listed once, under its first name.
  std::vector<std::pair<std::string, Variable<T>>> named_parameters() const;
  /// The Variables of named_parameters(), in the same order. They share state with the module:
  /// an optimiser updating their mutable_value() updates the model.
  std::vector<Variable<T>> parameters() const;
  /// Every buffer, named like the parameters ("1.running_mean"). Pointers into the modules.
  std::vector<std::pair<std::string, Tensor<T>*>> named_buffers();
  /// The direct children, in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>>& children() const {
    return children_;
  }

  /// Training mode (the default) or evaluation mode, for this module and all its children.
  /// Dropout drops only in training; BatchNorm uses batch statistics (and updates its running
  /// statistics) in training and the running statistics in evaluation.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Whether forward on disjoint parts of a batch, in several threads at once, computes the same
  /// as one forward on the whole batch, so xgrad::sharded_backward and sharded_forward may run it.
  /// False while any layer of the tree forbids it in its current mode: in training, BatchNorm2d
  /// (batch statistics, running-statistic updates) and Dropout (one shared generator).
  bool shardable() const;

  /// Total number of elements over parameters() (each shared Variable counted once).
  std::size_t parameter_count() const;
  /// Sets the gradient of every parameter to zeros (keeps the memory), or with set_to_none drops
  /// it (Variable::zero_grad).
  void zero_grad(bool set_to_none = false);

  /// The class name, "Conv2d".
  virtual std::string type_name() const { return "Module"; }
  /// One line with the settings, "Conv2d(1, 6, kernel=5, stride=1, padding=2)". Defaults to
  /// type_name().
  virtual std::string describe() const { return type_name(); }

  /// A table with one row per layer (the children of a Sequential, otherwise the module itself):
  /// name, output shape and parameter count, then the total parameter count. `input_shape` is
  /// the full input shape, batch first ({1, 1, 28, 28}). Runs one forward pass on zeros without
  /// recording, in evaluation mode (so running statistics are untouched); the modes are
  /// restored afterwards. A layer that rejects its input makes it throw xgrad::Error naming
  /// that layer and the shape it received.
  std::string summary(const Shape& input_shape);

  /// Replaces the parameter at dotted `name` by `value` (same shape), so that later forward
  /// passes use `value`. Throws xgrad::Error for an unknown name or another shape.
  void replace_parameter(const std::string& name, Variable<T> value);

  /// One row of summary(): a layer's name, description, output shape and parameter count.
  struct SummaryRow {
    std::string name, description;
    Shape output_shape;
    std::size_t params = 0;
  };
  /// Runs forward on `x`, appending summary rows; Sequential adds one row per child.
  virtual Variable<T> forward_with_summary(const Variable<T>& x, std::vector<SummaryRow>& rows,
                                           const std::string& prefix);

 protected:
  Module() = default;

  /// This layer's own part of shardable(), without its children. True unless overridden.
  virtual bool shardable_layer() const { return true; }

  /// Registers a parameter under `name` (no dots, unique in this module) and returns its slot
  /// for param(). A defined Variable is made to require a gradient. An undefined Variable
  /// (an absent bias) is not registered and returns npos.
  std::size_t register_parameter(const std::string& name, Variable<T> value);
  /// Registers a tensor the module owns (it must outlive the module's registration, i.e. be a
  /// member of the subclass).
  void register_buffer(const std::string& name, Tensor<T>& buffer);
  /// Registers a child module; returns it for convenience.
  std::shared_ptr<Module<T>> register_module(const std::string& name,
                                             std::shared_ptr<Module<T>> module);
  /// The parameter in `slot`, or an undefined Variable for npos.
  const Variable<T>& param(std::size_t slot) const;

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

 private:
  void check_new_name(const std::string& name) const;
  void collect_parameters(const std::string& prefix,
                          std::vector<std::pair<std::string, Variable<T>>>& out,
                          std::vector<const void*>& seen) const;
  void collect_buffers(const std::string& prefix,
                       std::vector<std::pair<std::string, Tensor<T>*>>& out);
  void collect_modes(std::vector<std::pair<Module<T>*, bool>>& out);

  std::vector<std::pair<std::string, Variable<T>>> params_;
  std::vector<std::pair<std::string, Tensor<T>*>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>> children_;
  bool training_ = true;
};

extern template class Module<float>;
extern template class Module<double>;

}  // namespace xgrad::nn
