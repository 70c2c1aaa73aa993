// Learning-rate schedules applied per epoch, as torch.optim.lr_scheduler.
#pragma once

#include <cstddef>

#include "xgrad/optim/optimizer.hpp"

namespace xgrad::optim {

/// A schedule over epochs. Construction records the optimiser's lr as base_lr and sets the lr for
/// epoch 0; step() (call it once at the end of each epoch) advances the epoch and sets its lr.
/// set_epoch() jumps to an epoch (to resume from a checkpoint).
template <class T>
class LRScheduler {
 public:
  explicit LRScheduler(Optimizer<T>& optimizer);
  virtual ~LRScheduler() = default;

  /// The learning rate of `epoch` (closed form).
  virtual double lr_at(std::size_t epoch) const = 0;

  void step();
  void set_epoch(std::size_t epoch);
  std::size_t epoch() const { return epoch_; }
  double base_lr() const { return base_lr_; }

 protected:
  /// Derived constructors call this once their parameters are set.
  void apply() { optimizer_.set_lr(lr_at(epoch_)); }

 private:
  Optimizer<T>& optimizer_;
  double base_lr_;
  std::size_t epoch_ = 0;
};

/// StepLR: lr = base_lr · gamma^floor(epoch / step_size). Throws xgrad::Error on step_size 0.
template <class T>
class StepLR final : public LRScheduler<T> {
 public:
  StepLR(Optimizer<T>& optimizer, std::size_t step_size, double gamma = 0.1);
  double lr_at(std::size_t epoch) const override;

 private:
  std::size_t step_size_;
  double gamma_;
};

/// CosineAnnealingLR: lr = eta_min + (base_lr − eta_min)·(1 + cos(π·epoch / T_max)) / 2.
/// This is PyTorch's closed form; its recursive form gives the same values, including past
/// T_max, where the cosine rises again. Throws xgrad::Error on T_max 0.
template <class T>
class CosineAnnealingLR final : public LRScheduler<T> {
 public:
  CosineAnnealingLR(Optimizer<T>& optimizer, std::size_t t_max, double eta_min = 0.0);
  double lr_at(std::size_t epoch) const override;

 private:
  std::size_t t_max_;
  double eta_min_;
};

}  // namespace xgrad::optim
