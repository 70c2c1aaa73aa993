// Small reference CNNs for 1x28x28 inputs (MNIST / Fashion-MNIST), 10 classes.
// Weights come from nn::init_generator(): call nn::manual_seed() first for reproducible models.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "xgrad/nn/layers.hpp"

namespace xgrad::nn {

/// LeNet-5 (ReLU, max pool): conv 6@5x5 pad 2, ReLU, maxpool 2, conv 16@5x5, ReLU, maxpool 2,
/// flatten, 400->120, ReLU, 120->84, ReLU, 84->10. 61,706 parameters. Each ReLU before a max-pool
/// is applied after it (layers conv, maxpool, ReLU): the same function, values and gradients,
/// since ReLU is non-decreasing (for inputs without NaN), with the ReLU on a quarter of the values.
template <class T>
std::shared_ptr<Sequential<T>> lenet5();

/// The PyTorch MNIST example without dropout: conv 32@3x3, ReLU, conv 64@3x3, ReLU, maxpool 2,
/// flatten, 9216->128, ReLU, 128->10. 1,199,882 parameters. As in lenet5(), the second ReLU is
/// applied after the max-pool.
template <class T>
std::shared_ptr<Sequential<T>> convnet();

/// A small ResNet of base width w: stem conv w@3x3 pad 1 (no bias) + BN + ReLU at 28x28, then
/// ResidualBlock(w,w) at 28x28, ResidualBlock(w,2w, stride 2) at 14x14,
/// ResidualBlock(2w,4w, stride 2) at 7x7, global average pool, 4w->10.
/// make_model("resnet") is width 32 (308,074 parameters); "resnet16" is width 16 (77,754).
template <class T>
std::shared_ptr<Sequential<T>> resnet_small(std::size_t width = 32);

/// A small inception net: stem conv 16@3x3 pad 1 + ReLU, maxpool 2 (14x14),
/// InceptionBlock(16; 16, 24, 8, 8) -> 56 channels, maxpool 2 (7x7),
/// InceptionBlock(56; 32, 48, 16, 16) -> 112 channels, global average pool, 112->10.
template <class T>
std::shared_ptr<Sequential<T>> inception_small();

/// The names make_model() accepts: "lenet", "convnet", "resnet", "resnet16", "inception".
std::vector<std::string> model_names();

/// The model called `name` (see model_names()); throws xgrad::Error listing the valid names
/// for any other.
template <class T>
std::shared_ptr<Sequential<T>> make_model(const std::string& name);

#define XGRAD_NN_MODELS_EXTERN(T)                                              \
  extern template std::shared_ptr<Sequential<T>> lenet5<T>();                  \
  extern template std::shared_ptr<Sequential<T>> convnet<T>();                 \
  extern template std::shared_ptr<Sequential<T>> resnet_small<T>(std::size_t); \
  extern template std::shared_ptr<Sequential<T>> inception_small<T>();         \
  extern template std::shared_ptr<Sequential<T>> make_model<T>(const std::string&);
XGRAD_NN_MODELS_EXTERN(float)
XGRAD_NN_MODELS_EXTERN(double)
#undef XGRAD_NN_MODELS_EXTERN

}  // namespace xgrad::nn
