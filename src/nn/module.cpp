// Module<T>: registries, recursive mode switches and summary().
#include "xgrad/nn/module.hpp"

#include <algorithm>
#include <iomanip>
#include <sstream>

#include "xgrad/graph.hpp"

namespace xgrad::nn {

namespace {

// "61706" -> "61,706"
std::string with_commas(std::size_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

template <class T>
Module<T>::~Module() = default;

template <class T>
void Module<T>::check_new_name(const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos)
    throw Error(type_name() + ": registered name '" + name + "' must be non-empty without dots");
  const auto taken = [&name](const auto& entries) {
    return std::any_of(entries.begin(), entries.end(),
                       [&name](const auto& e) { return e.first == name; });
  };
  if (taken(params_) || taken(buffers_) || taken(children_))
    throw Error(type_name() + ": name '" + name + "' is already registered");
}

template <class T>
std::size_t Module<T>::register_parameter(const std::string& name, Variable<T> value) {
  if (!value.defined()) return npos;
  check_new_name(name);
  if (!value.is_leaf())
    throw Error(type_name() + ": parameter '" + name + "' must be a leaf Variable");
  value.set_requires_grad(true);
  if (value.name().empty()) value.set_name(name);
  params_.emplace_back(name, std::move(value));
  return params_.size() - 1;
}

template <class T>
void Module<T>::register_buffer(const std::string& name, Tensor<T>& buffer) {
  check_new_name(name);
  buffers_.emplace_back(name, &buffer);
}

template <class T>
std::shared_ptr<Module<T>> Module<T>::register_module(const std::string& name,
                                                      std::shared_ptr<Module<T>> module) {
  if (!module) throw Error(type_name() + ": child module '" + name + "' is null");
  check_new_name(name);
  children_.emplace_back(name, module);
  return module;
}

template <class T>
const Variable<T>& Module<T>::param(std::size_t slot) const {
  static const Variable<T> undefined;
  if (slot == npos) return undefined;
  return params_.at(slot).second;
}

template <class T>
void Module<T>::collect_parameters(const std::string& prefix,
                                   std::vector<std::pair<std::string, Variable<T>>>& out,
                                   std::vector<const void*>& seen) const {
  for (const auto& [name, v] : params_) {
    const void* id = v.impl().get();
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    out.emplace_back(prefix + name, v);
  }
  for (const auto& [name, child] : children_)
    child->collect_parameters(prefix + name + ".", out, seen);
}

template <class T>
std::vector<std::pair<std::string, Variable<T>>> Module<T>::named_parameters() const {
  std::vector<std::pair<std::string, Variable<T>>> out;
  std::vector<const void*> seen;
  collect_parameters("", out, seen);
  return out;
}

template <class T>
std::vector<Variable<T>> Module<T>::parameters() const {
  std::vector<Variable<T>> out;
  for (auto& entry : named_parameters()) out.push_back(std::move(entry.second));
  return out;
}

template <class T>
void Module<T>::collect_buffers(const std::string& prefix,
                                std::vector<std::pair<std::string, Tensor<T>*>>& out) {
  for (const auto& [name, b] : buffers_) out.emplace_back(prefix + name, b);
  for (const auto& [name, child] : children_) child->collect_buffers(prefix + name + ".", out);
}

template <class T>
std::vector<std::pair<std::string, Tensor<T>*>> Module<T>::named_buffers() {
  std::vector<std::pair<std::string, Tensor<T>*>> out;
  collect_buffers("", out);
  return out;
}

template <class T>
void Module<T>::train(bool on) {
  training_ = on;
  for (auto& entry : children_) entry.second->train(on);
}

template <class T>
bool Module<T>::shardable() const {
  if (!shardable_layer()) return false;
  for (const auto& entry : children_)
    if (!entry.second->shardable()) return false;
  return true;
}

template <class T>
std::size_t Module<T>::parameter_count() const {
  std::size_t n = 0;
  for (const auto& entry : named_parameters()) n += entry.second.numel();
  return n;
}

template <class T>
void Module<T>::zero_grad(bool set_to_none) {
  for (auto& entry : named_parameters()) entry.second.zero_grad(set_to_none);
}

template <class T>
void Module<T>::replace_parameter(const std::string& name, Variable<T> value) {
  const std::size_t dot = name.find('.');
  if (dot != std::string::npos) {
    const std::string head = name.substr(0, dot);
    for (auto& [child_name, child] : children_)
      if (child_name == head) return child->replace_parameter(name.substr(dot + 1), value);
  } else {
    for (auto& [param_name, v] : params_) {
      if (param_name != name) continue;
      if (!value.defined() || value.shape() != v.shape())
        throw Error(type_name() + ": replace_parameter('" + name + "') needs shape " +
                    shape_str(v.shape()) + " but got " +
                    (value.defined() ? shape_str(value.shape()) : std::string("undefined")));
      v = std::move(value);
      return;
    }
  }
  throw Error(type_name() + ": replace_parameter: no parameter named '" + name + "'");
}

template <class T>
Variable<T> Module<T>::forward_with_summary(const Variable<T>& x, std::vector<SummaryRow>& rows,
                                            const std::string& prefix) {
  Variable<T> y;
  try {
    y = forward(x);
  } catch (const std::exception& e) {
    throw Error("summary: layer " + (prefix.empty() ? std::string() : prefix + " ") + "(" +
                describe() + ") failed on input " + shape_str(x.shape()) + ": " + e.what());
  }
  rows.push_back({prefix.empty() ? type_name() : prefix, describe(), y.shape(), parameter_count()});
  return y;
}

template <class T>
void Module<T>::collect_modes(std::vector<std::pair<Module<T>*, bool>>& out) {
  out.emplace_back(this, training_);
  for (auto& entry : children_) entry.second->collect_modes(out);
}

template <class T>
std::string Module<T>::summary(const Shape& input_shape) {
  std::vector<std::pair<Module<T>*, bool>> modes;
  collect_modes(modes);
  std::vector<SummaryRow> rows;
  {
    NoGradGuard no_grad;
    eval();
    try {
      forward_with_summary(Variable<T>(filled_tensor<T>(input_shape, T(0))), rows, "");
    } catch (...) {
      for (auto& [m, on] : modes) m->training_ = on;
      throw;
    }
    for (auto& [m, on] : modes) m->training_ = on;
  }

  std::size_t name_w = 5, desc_w = 5, shape_w = 12;
  for (const SummaryRow& r : rows) {
    name_w = std::max(name_w, r.name.size());
    desc_w = std::max(desc_w, r.description.size());
    shape_w = std::max(shape_w, shape_str(r.output_shape).size());
  }
  const std::size_t width = name_w + desc_w + shape_w + 12 + 6;
  std::ostringstream os;
  os << type_name() << " summary, input " << shape_str(input_shape) << "\n";
  os << std::left << std::setw(int(name_w)) << "Name"
     << "  " << std::setw(int(desc_w)) << "Layer"
     << "  " << std::setw(int(shape_w)) << "Output shape"
     << "  " << std::right << std::setw(12) << "Params"
     << "\n";
  os << std::string(width, '-') << "\n";
  for (const SummaryRow& r : rows)
    os << std::left << std::setw(int(name_w)) << r.name << "  " << std::setw(int(desc_w))
       << r.description << "  " << std::setw(int(shape_w)) << shape_str(r.output_shape) << "  "
       << std::right << std::setw(12) << with_commas(r.params) << "\n";
  os << std::string(width, '-') << "\n";
  os << "Total params: " << with_commas(parameter_count()) << "\n";
  return os.str();
}

template class Module<float>;
template class Module<double>;

}  // namespace xgrad::nn
