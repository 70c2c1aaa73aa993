#include "xgrad/optim/optimizer.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <omp.h>

#include "../parallel_loop.hpp"
#include "xgrad/graph.hpp"

namespace xgrad::optim {

namespace {

// Updates of at least this many elements in all run on all OpenMP threads (elementwise, so the
// result does not depend on the thread count); smaller ones are not worth waking them for.
constexpr std::size_t kParallelElements = 1 << 14;

std::string num_str(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_non_negative(const char* who, const char* what, double v) {
  if (!(v >= 0.0) || !std::isfinite(v))
    throw Error(std::string(who) + ": " + what + " must be finite and >= 0 but is " + num_str(v));
}

// Splits "<prefix>.<kind>.<index>" into kind and index; false when the name lacks the prefix.
bool parse_state_name(const std::string& name, const std::string& prefix, std::string& kind,
                      std::size_t& index, const char* who) {
  const std::string head = prefix + ".";
  if (name.compare(0, head.size(), head) != 0) return false;
  const std::string rest = name.substr(head.size());
  const std::size_t dot = rest.rfind('.');
  const std::string digits = dot == std::string::npos ? "" : rest.substr(dot + 1);
  bool ok = !digits.empty() && digits.size() < 18;
  for (char c : digits) ok = ok && c >= '0' && c <= '9';
  if (!ok)
    throw Error(std::string(who) + ": state entry '" + name + "' is not of the form " + prefix +
                ".<kind>.<parameter index>");
  kind = rest.substr(0, dot);
  index = std::strtoull(digits.c_str(), nullptr, 10);
  return true;
}

template <class T>
void check_state_tensor(const char* who, const std::string& name, const Tensor<T>& t,
                        const Shape& want, std::size_t index, std::size_t n_params) {
  if (index >= n_params)
    throw Error(std::string(who) + ": state entry '" + name + "' names parameter " +
                std::to_string(index) + " but the optimiser has " + std::to_string(n_params));
  if (shape_of(t) != want)
    throw Error(std::string(who) + ": state entry '" + name + "' has shape " + shape_str(t) +
                " but parameter " + std::to_string(index) + " has shape " + shape_str(want));
}

}  // namespace

// ---- Optimizer ------------------------------------------------------------------------------

template <class T>
Optimizer<T>::Optimizer(std::vector<Variable<T>> params, double lr, std::string prefix)
    : params_(std::move(params)), lr_(0.0), prefix_(std::move(prefix)) {
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (!params_[i].defined())
      throw Error(prefix_ + ": parameter " + std::to_string(i) + " is an empty Variable");
  set_lr(lr);
}

template <class T>
void Optimizer<T>::step() {
  NoGradGuard no_grad;
  prepare_update();
  std::vector<std::size_t> active;
  std::size_t total = 0;
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].has_grad()) {
      active.push_back(i);
      total += params_[i].numel();
    }
  const int threads = total >= kParallelElements ? num_threads() : 1;
  if (threads <= 1) {
    for (std::size_t i : active) update_range(i, 0, params_[i].numel());
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const std::size_t t = std::size_t(omp_get_thread_num()), count = omp_get_num_threads();
    for (std::size_t i : active) {
      const auto [begin, end] = detail::thread_part(params_[i].numel(), t, count, sizeof(T));
      if (begin < end) update_range(i, begin, end);
    }
  }
}

template <class T>
void Optimizer<T>::check_gradient_shapes() const {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Variable<T>& p = params_[i];
    if (p.has_grad() && shape_of(p.grad()) != shape_of(p.value()))
      throw Error(prefix_ + ": parameter " + std::to_string(i) + " has shape " +
                  shape_str(p.value()) + " but its gradient has shape " + shape_str(p.grad()));
  }
}

template <class T>
void Optimizer<T>::zero_grad(bool set_to_none) {
  for (Variable<T>& p : params_) p.zero_grad(set_to_none);
}

template <class T>
void Optimizer<T>::set_lr(double lr) {
  check_non_negative(prefix_.c_str(), "lr", lr);
  lr_ = lr;
}

// ---- SGD ------------------------------------------------------------------------------------

template <class T>
SGD<T>::SGD(std::vector<Variable<T>> params, SGDOptions options)
    : Optimizer<T>(std::move(params), options.lr, "sgd"), options_(options) {
  check_non_negative("sgd", "momentum", options.momentum);
  check_non_negative("sgd", "weight_decay", options.weight_decay);
  if (!std::isfinite(options.dampening))
    throw Error("sgd: dampening must be finite but is " + num_str(options.dampening));
  if (options.nesterov && (options.momentum <= 0.0 || options.dampening != 0.0))
    throw Error("sgd: nesterov needs momentum > 0 and dampening = 0 (momentum " +
                num_str(options.momentum) + ", dampening " + num_str(options.dampening) + ")");
  momentum_.resize(this->params_.size());
  has_momentum_.assign(this->params_.size(), false);
}

template <class T>
void SGD<T>::prepare_update() {
  this->check_gradient_shapes();
  const std::size_t n = this->params_.size();
  first_.assign(n, 0);
  if (options_.momentum == 0.0) return;
  for (std::size_t i = 0; i < n; ++i)
    if (this->params_[i].has_grad() && !has_momentum_[i]) {
      momentum_[i] = empty_tensor<T>(this->params_[i].shape());
      has_momentum_[i] = true;
      first_[i] = 1;  // the buffer starts as this step's d
    }
}

template <class T>
void SGD<T>::update_range(std::size_t i, std::size_t begin, std::size_t end) {
  const T lr = static_cast<T>(this->lr_);
  const T wd = static_cast<T>(options_.weight_decay);
  const T mu = static_cast<T>(options_.momentum);
  const T keep = static_cast<T>(1.0 - options_.dampening);
  const bool nesterov = options_.nesterov;
  Variable<T>& p = this->params_[i];
  T* wp = p.mutable_value().data();
  const T* gp = p.grad().data();
  if (options_.momentum == 0.0) {
#pragma omp simd
    for (std::size_t k = begin; k < end; ++k) wp[k] -= lr * (gp[k] + wd * wp[k]);
    return;
  }
  T* bp = momentum_[i].data();
  const bool first = first_[i] != 0;
#pragma omp simd
  for (std::size_t k = begin; k < end; ++k) {
    const T d = gp[k] + wd * wp[k];
    const T b = first ? d : mu * bp[k] + keep * d;
    bp[k] = b;
    wp[k] -= lr * (nesterov ? d + mu * b : b);
  }
}

template <class T>
NamedTensors<T> SGD<T>::export_state() const {
  NamedTensors<T> out;
  for (std::size_t i = 0; i < momentum_.size(); ++i)
    if (has_momentum_[i]) out.emplace_back("sgd.momentum." + std::to_string(i), momentum_[i]);
  return out;
}

template <class T>
void SGD<T>::import_state(const NamedTensors<T>& state) {
  const std::size_t n = this->params_.size();
  std::vector<Tensor<T>> momentum(n);
  std::vector<bool> has(n, false);
  for (const auto& [name, t] : state) {
    std::string kind;
    std::size_t index = 0;
    if (!parse_state_name(name, "sgd", kind, index, "sgd")) continue;
    if (kind != "momentum")
      throw Error("sgd: unknown state entry '" + name + "' (expected sgd.momentum.<index>)");
    check_state_tensor("sgd", name, t, this->params_[index < n ? index : 0].shape(), index, n);
    momentum[index] = t;
    has[index] = true;
  }
  momentum_ = std::move(momentum);
  has_momentum_ = std::move(has);
}

// ---- Adam / AdamW ---------------------------------------------------------------------------

template <class T>
Adam<T>::Adam(std::vector<Variable<T>> params, AdamOptions options)
    : Adam(std::move(params), options, false) {}

template <class T>
Adam<T>::Adam(std::vector<Variable<T>> params, AdamOptions options, bool decoupled)
    : Optimizer<T>(std::move(params), options.lr, decoupled ? "adamw" : "adam"),
      options_(options),
      decoupled_(decoupled) {
  const char* who = decoupled ? "adamw" : "adam";
  check_non_negative(who, "eps", options.eps);
  check_non_negative(who, "weight_decay", options.weight_decay);
  for (double beta : {options.beta1, options.beta2})
    if (!(beta >= 0.0 && beta < 1.0))
      throw Error(std::string(who) + ": betas must be in [0, 1) but are (" +
                  num_str(options.beta1) + ", " + num_str(options.beta2) + ")");
  exp_avg_.resize(this->params_.size());
  exp_avg_sq_.resize(this->params_.size());
  steps_.assign(this->params_.size(), 0);
}

template <class T>
void Adam<T>::prepare_update() {
  this->check_gradient_shapes();
  const std::size_t n = this->params_.size();
  step_size_.assign(n, T(0));
  sqrt_bc2_.assign(n, T(1));
  for (std::size_t i = 0; i < n; ++i) {
    const Variable<T>& p = this->params_[i];
    if (!p.has_grad()) continue;
    if (steps_[i] == 0) {
      exp_avg_[i] = filled_tensor<T>(p.shape(), T(0));
      exp_avg_sq_[i] = filled_tensor<T>(p.shape(), T(0));
    }
    const double t = static_cast<double>(++steps_[i]);
    step_size_[i] = static_cast<T>(this->lr_ / (1.0 - std::pow(options_.beta1, t)));
    sqrt_bc2_[i] = static_cast<T>(std::sqrt(1.0 - std::pow(options_.beta2, t)));
  }
}

template <class T>
void Adam<T>::update_range(std::size_t i, std::size_t begin, std::size_t end) {
  const T beta1 = static_cast<T>(options_.beta1);
  const T beta2 = static_cast<T>(options_.beta2);
  const T one_m_beta1 = static_cast<T>(1.0 - options_.beta1);
  const T one_m_beta2 = static_cast<T>(1.0 - options_.beta2);
  const T eps = static_cast<T>(options_.eps);
  const T l2 = decoupled_ ? T(0) : static_cast<T>(options_.weight_decay);
  const T decay = static_cast<T>(decoupled_ ? 1.0 - this->lr_ * options_.weight_decay : 1.0);
  const T step_size = step_size_[i];
  const T sqrt_bc2 = sqrt_bc2_[i];
  Variable<T>& p = this->params_[i];
  T* wp = p.mutable_value().data();
  const T* gp = p.grad().data();
  T* mp = exp_avg_[i].data();
  T* vp = exp_avg_sq_[i].data();
#pragma omp simd
  for (std::size_t k = begin; k < end; ++k) {
    const T d = gp[k] + l2 * wp[k];
    const T m = beta1 * mp[k] + one_m_beta1 * d;
    const T v = beta2 * vp[k] + one_m_beta2 * d * d;
    mp[k] = m;
    vp[k] = v;
    const T denom = std::sqrt(v) / sqrt_bc2 + eps;
    wp[k] = wp[k] * decay - step_size * m / denom;
  }
}

template <class T>
NamedTensors<T> Adam<T>::export_state() const {
  NamedTensors<T> out;
  const std::string& pre = this->prefix_;
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    if (steps_[i] == 0) continue;
    const std::string idx = std::to_string(i);
    out.emplace_back(pre + ".exp_avg." + idx, exp_avg_[i]);
    out.emplace_back(pre + ".exp_avg_sq." + idx, exp_avg_sq_[i]);
    Tensor<T> s = empty_tensor<T>(Shape{});
    *s.data() = static_cast<T>(steps_[i]);
    out.emplace_back(pre + ".step." + idx, std::move(s));
  }
  return out;
}

template <class T>
void Adam<T>::import_state(const NamedTensors<T>& state) {
  const std::string& pre = this->prefix_;
  const char* who = pre.c_str();
  const std::size_t n = this->params_.size();
  std::vector<Tensor<T>> m(n), v(n);
  std::vector<bool> has_m(n, false), has_v(n, false), has_s(n, false);
  std::vector<std::size_t> steps(n, 0);
  for (const auto& [name, t] : state) {
    std::string kind;
    std::size_t index = 0;
    if (!parse_state_name(name, pre, kind, index, who)) continue;
    if (kind == "exp_avg" || kind == "exp_avg_sq") {
      check_state_tensor(who, name, t, this->params_[index < n ? index : 0].shape(), index, n);
      (kind == "exp_avg" ? m : v)[index] = t;
      (kind == "exp_avg" ? has_m : has_v)[index] = true;
    } else if (kind == "step") {
      check_state_tensor(who, name, t, Shape{}, index, n);
      const double s = static_cast<double>(*t.data());
      if (!(s >= 1.0) || s != std::floor(s))
        throw Error(pre + ": state entry '" + name + "' must be a whole step count >= 1 but is " +
                    num_str(s));
      steps[index] = static_cast<std::size_t>(s);
      has_s[index] = true;
    } else {
      throw Error(pre + ": unknown state entry '" + name + "' (expected " + pre +
                  ".exp_avg/exp_avg_sq/step.<index>)");
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    if (has_m[i] != has_v[i] || has_m[i] != has_s[i])
      throw Error(pre + ": state for parameter " + std::to_string(i) +
                  " is incomplete: needs exp_avg, exp_avg_sq and step together");
  exp_avg_ = std::move(m);
  exp_avg_sq_ = std::move(v);
  steps_ = std::move(steps);
}

template <class T>
AdamW<T>::AdamW(std::vector<Variable<T>> params, AdamOptions options)
    : Adam<T>(std::move(params), options, true) {}

// ---- clipping -------------------------------------------------------------------------------

template <class T>
double clip_grad_norm(const std::vector<Variable<T>>& params, double max_norm) {
  if (!(max_norm > 0.0))
    throw Error("clip_grad_norm: max_norm must be > 0 but is " + num_str(max_norm));
  double sq = 0.0;
  for (const Variable<T>& p : params) {
    if (!p.defined() || !p.has_grad()) continue;
    const Tensor<T>& g = p.grad();
    const T* gp = g.data();
    for (std::size_t k = 0; k < g.size(); ++k) sq += static_cast<double>(gp[k]) * gp[k];
  }
  const double total = std::sqrt(sq);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {
    const T c = static_cast<T>(coef);
    for (Variable<T> p : params) {
      if (!p.defined() || !p.has_grad()) continue;
      Tensor<T>& g = p.mutable_grad();
      T* gp = g.data();
      for (std::size_t k = 0; k < g.size(); ++k) gp[k] *= c;
    }
  }
  return total;
}

template class Optimizer<float>;
template class Optimizer<double>;
template class SGD<float>;
template class SGD<double>;
template class Adam<float>;
template class Adam<double>;
template class AdamW<float>;
template class AdamW<double>;
template double clip_grad_norm<float>(const std::vector<Variable<float>>&, double);
template double clip_grad_norm<double>(const std::vector<Variable<double>>&, double);

}  // namespace xgrad::optim
