// Layers: thin Modules over the ops in ops.hpp, plus Sequential and two composite blocks.
// Weights are drawn from nn::init_generator() at construction (see init.hpp): Conv2d and Linear
// weights kaiming_uniform(a = sqrt(5)), biases U(±1/sqrt(fan_in)), as PyTorch.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>

#include "xgrad/nn/module.hpp"
#include "xgrad/ops.hpp"

namespace xgrad::nn {

/// conv2d(x, weight, bias, params). weight [out, in/groups, k, k], bias [out].
/// x [N, in, H, W] -> [N, out, Ho, Wo] (see conv2d in ops.hpp).
template <class T>
class Conv2d : public Module<T> {
 public:
  Conv2d(std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
         Conv2DParams params = {}, bool bias = true);
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "Conv2d"; }
  std::string describe() const override;
  const Variable<T>& weight() const { return this->param(weight_); }
  /// Undefined when built without bias.
  const Variable<T>& bias() const { return this->param(bias_); }
  const Conv2DParams& params() const { return params_; }

 private:
  std::size_t in_, out_, kernel_;
  Conv2DParams params_;
  std::size_t weight_, bias_;
};

/// max_pool2d(x, params).
template <class T>
class MaxPool2d : public Module<T> {
 public:
  explicit MaxPool2d(Pool2DParams params = {}) : params_(params) {}
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "MaxPool2d"; }
  std::string describe() const override;
  const Pool2DParams& params() const { return params_; }

 private:
  Pool2DParams params_;
};

/// avg_pool2d(x, params).
template <class T>
class AvgPool2d : public Module<T> {
 public:
  explicit AvgPool2d(Pool2DParams params = {}) : params_(params) {}
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "AvgPool2d"; }
  std::string describe() const override;

 private:
  Pool2DParams params_;
};

/// global_avg_pool2d(x): [N, C, H, W] -> [N, C].
template <class T>
class GlobalAvgPool2d : public Module<T> {
 public:
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "GlobalAvgPool2d"; }
};

/// relu(x).
template <class T>
class ReLU : public Module<T> {
 public:
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "ReLU"; }
};

/// linear(x, weight, bias): x [N, in] -> [N, out]; weight [out, in], bias [out].
template <class T>
class Linear : public Module<T> {
 public:
  Linear(std::size_t in_features, std::size_t out_features, bool bias = true);
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "Linear"; }
  std::string describe() const override;
  const Variable<T>& weight() const { return this->param(weight_); }
  const Variable<T>& bias() const { return this->param(bias_); }

 private:
  std::size_t in_, out_;
  std::size_t weight_, bias_;
};

/// flatten(x): [N, d1, d2, ...] -> [N, d1·d2·...].
template <class T>
class Flatten : public Module<T> {
 public:
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "Flatten"; }
};

/// dropout(x, p, is_training(), rng) with its own generator, so masks are reproducible.
/// Without a seed, the generator's seed is drawn from init_generator() (so manual_seed()
/// fixes it too).
template <class T>
class Dropout : public Module<T> {
 public:
  explicit Dropout(double p = 0.5);
  Dropout(double p, std::uint64_t seed);
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "Dropout"; }
  std::string describe() const override;
  double p() const { return p_; }

 protected:
  bool shardable_layer() const override { return !this->is_training() || p_ == 0.0; }

 private:
  double p_;
  std::mt19937_64 rng_;
};

/// batch_norm2d over the channels of x [N, C, H, W]. Parameters "weight" (γ, ones) and "bias"
/// (β, zeros); buffers "running_mean" (zeros) and "running_var" (ones).
template <class T>
class BatchNorm2d : public Module<T> {
 public:
  explicit BatchNorm2d(std::size_t channels, BatchNormParams params = {});
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string describe() const override;
  const Variable<T>& weight() const { return this->param(weight_); }
  const Variable<T>& bias() const { return this->param(bias_); }
  const Tensor<T>& running_mean() const { return running_mean_; }
  const Tensor<T>& running_var() const { return running_var_; }

 protected:
  bool shardable_layer() const override { return !this->is_training(); }

 private:
  std::size_t channels_;
  BatchNormParams params_;
  std::size_t weight_, bias_;
  Tensor<T> running_mean_, running_var_;
};

/// Children applied in order; they are named "0", "1", ... In summary() each child is a row.
template <class T>
class Sequential : public Module<T> {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module<T>>> modules);
  /// Appends a module; returns *this so calls chain.
  Sequential& add(std::shared_ptr<Module<T>> module);
  Variable<T> forward(const Variable<T>& x) override;
  Variable<T> forward_with_summary(const Variable<T>& x,
                                   std::vector<typename Module<T>::SummaryRow>& rows,
                                   const std::string& prefix) override;
  std::string type_name() const override { return "Sequential"; }
  std::size_t size() const { return this->children().size(); }
  /// The i-th module; throws xgrad::Error when out of range.
  std::shared_ptr<Module<T>> at(std::size_t i) const;
  /// Whether forward runs a Conv2d and the layers right after it as one fused op: a MaxPool2d, and
  /// a ReLU after it if there is one, as conv2d_max_pool2d; else a ReLU as conv2d_relu (all of
  /// exactly those classes). The same values and gradients, bit for bit, without storing the
  /// convolution's output or making passes of their own over it. On by default;
  /// forward_with_summary runs every layer apart.
  void set_fusion(bool fuse) { fuse_ = fuse; }
  bool fusion() const { return fuse_; }

 private:
  bool fuse_ = true;
};

/// A basic ResNet block (He et al. 2016, as torchvision's BasicBlock):
///   y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
/// conv1: 3x3, stride `stride`, pad 1; conv2: 3x3, stride 1, pad 1 (both without bias, BN
/// follows). shortcut(x) = x when in == out and stride == 1, else the projection
/// "downsample" = 1x1 conv (stride `stride`, no bias) + BatchNorm2d.
/// x [N, in, H, W] -> [N, out, floor((H-1)/stride)+1, floor((W-1)/stride)+1].
template <class T>
class ResidualBlock : public Module<T> {
 public:
  ResidualBlock(std::size_t in_channels, std::size_t out_channels, std::size_t stride = 1);
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "ResidualBlock"; }
  std::string describe() const override;
  bool has_projection() const { return downsample_ != nullptr; }

 private:
  std::size_t in_, out_, stride_;
  std::shared_ptr<Module<T>> conv1_, bn1_, conv2_, bn2_, downsample_;
};

/// A GoogLeNet inception block (Szegedy et al. 2015): four parallel branches, each conv followed
/// by ReLU, concatenated on the channel axis:
///   branch1:     1x1 conv -> c1
///   branch3:     1x1 conv -> c3_reduce, 3x3 conv (pad 1) -> c3
///   branch5:     1x1 conv -> c5_reduce, 5x5 conv (pad 2) -> c5
///   branch_pool: 3x3 max pool (stride 1, pad 1), 1x1 conv -> cpool
/// x [N, in, H, W] -> [N, c1 + c3 + c5 + cpool, H, W]. A reduce width of 0 means max(1, c/2).
template <class T>
class InceptionBlock : public Module<T> {
 public:
  InceptionBlock(std::size_t in_channels, std::size_t c1, std::size_t c3, std::size_t c5,
                 std::size_t cpool, std::size_t c3_reduce = 0, std::size_t c5_reduce = 0);
  Variable<T> forward(const Variable<T>& x) override;
  std::string type_name() const override { return "InceptionBlock"; }
  std::string describe() const override;
  std::size_t out_channels() const { return c1_ + c3_ + c5_ + cpool_; }

 private:
  std::size_t in_, c1_, c3_, c5_, cpool_, c3_reduce_, c5_reduce_;
  std::shared_ptr<Module<T>> branch1_, branch3_, branch5_, branch_pool_;
};

#define XGRAD_NN_LAYERS_EXTERN(T)           \
  extern template class Conv2d<T>;          \
  extern template class MaxPool2d<T>;       \
  extern template class AvgPool2d<T>;       \
  extern template class GlobalAvgPool2d<T>; \
  extern template class ReLU<T>;            \
  extern template class Linear<T>;          \
  extern template class Flatten<T>;         \
  extern template class Dropout<T>;         \
  extern template class BatchNorm2d<T>;     \
  extern template class Sequential<T>;      \
  extern template class ResidualBlock<T>;   \
  extern template class InceptionBlock<T>;
XGRAD_NN_LAYERS_EXTERN(float)
XGRAD_NN_LAYERS_EXTERN(double)
#undef XGRAD_NN_LAYERS_EXTERN

}  // namespace xgrad::nn
