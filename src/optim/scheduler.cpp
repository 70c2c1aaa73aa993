#include "xgrad/optim/scheduler.hpp"

#include <cmath>

namespace xgrad::optim {

template <class T>
LRScheduler<T>::LRScheduler(Optimizer<T>& optimizer)
    : optimizer_(optimizer), base_lr_(optimizer.lr()) {}

template <class T>
void LRScheduler<T>::step() {
  ++epoch_;
  apply();
}

template <class T>
void LRScheduler<T>::set_epoch(std::size_t epoch) {
  epoch_ = epoch;
  apply();
}

template <class T>
StepLR<T>::StepLR(Optimizer<T>& optimizer, std::size_t step_size, double gamma)
    : LRScheduler<T>(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size == 0) throw Error("StepLR: step_size must be > 0");
  this->apply();
}

template <class T>
double StepLR<T>::lr_at(std::size_t epoch) const {
  return this->base_lr() * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

template <class T>
CosineAnnealingLR<T>::CosineAnnealingLR(Optimizer<T>& optimizer, std::size_t t_max, double eta_min)
    : LRScheduler<T>(optimizer), t_max_(t_max), eta_min_(eta_min) {
  if (t_max == 0) throw Error("CosineAnnealingLR: T_max must be > 0");
  this->apply();
}

template <class T>
double CosineAnnealingLR<T>::lr_at(std::size_t epoch) const {
  const double pi = std::acos(-1.0);
  const double c = std::cos(pi * static_cast<double>(epoch) / static_cast<double>(t_max_));
  return eta_min_ + (this->base_lr() - eta_min_) * (1.0 + c) / 2.0;
}

template class LRScheduler<float>;
template class LRScheduler<double>;
template class StepLR<float>;
template class StepLR<double>;
template class CosineAnnealingLR<float>;
template class CosineAnnealingLR<double>;

}  // namespace xgrad::optim
