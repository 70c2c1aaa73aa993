// Reference models for 1x28x28 inputs.
#include "xgrad/nn/models.hpp"

namespace xgrad::nn {

namespace {

template <class T>
std::shared_ptr<Module<T>> conv(std::size_t in, std::size_t out, std::size_t k, int pad = 0,
                                bool bias = true) {
  return std::make_shared<Conv2d<T>>(in, out, k, Conv2DParams{{1, 1}, {pad, pad}}, bias);
}

template <class T>
std::shared_ptr<Module<T>> relu_layer() {
  return std::make_shared<ReLU<T>>();
}

template <class T>
std::shared_ptr<Module<T>> max_pool(int k) {
  Pool2DParams p;
  p.kernel = {k, k};
  p.stride = {k, k};
  return std::make_shared<MaxPool2d<T>>(p);
}

}  // namespace

// LeNet-5 and the convnet apply each ReLU that precedes a max-pool after it instead: ReLU is
// non-decreasing, so relu(maxpool(x)) = maxpool(relu(x)), values and gradients (test_pool,
// test_nn), and the ReLU runs on a quarter of the values. On the EPYC this took LeNet-5's training
// step at batch 64 on 1 thread from 2,691-2,968 to 2,619-2,680 us (10th percentiles, 4
// alternating pairs).
template <class T>
std::shared_ptr<Sequential<T>> lenet5() {
  auto m = std::make_shared<Sequential<T>>();
  m->add(conv<T>(1, 6, 5, 2))
      .add(max_pool<T>(2))
      .add(relu_layer<T>())
      .add(conv<T>(6, 16, 5))
      .add(max_pool<T>(2))
      .add(relu_layer<T>())
      .add(std::make_shared<Flatten<T>>())
      .add(std::make_shared<Linear<T>>(400, 120))
      .add(relu_layer<T>())
      .add(std::make_shared<Linear<T>>(120, 84))
      .add(relu_layer<T>())
      .add(std::make_shared<Linear<T>>(84, 10));
  return m;
}

template <class T>
std::shared_ptr<Sequential<T>> convnet() {
  auto m = std::make_shared<Sequential<T>>();
  m->add(conv<T>(1, 32, 3))
      .add(relu_layer<T>())
      .add(conv<T>(32, 64, 3))
      .add(max_pool<T>(2))
      .add(relu_layer<T>())
      .add(std::make_shared<Flatten<T>>())
      .add(std::make_shared<Linear<T>>(9216, 128))
      .add(relu_layer<T>())
      .add(std::make_shared<Linear<T>>(128, 10));
  return m;
}

template <class T>
std::shared_ptr<Sequential<T>> resnet_small(std::size_t width) {
  if (width == 0) throw Error("resnet_small: width must be positive");
  const std::size_t w = width;
  auto m = std::make_shared<Sequential<T>>();
  m->add(conv<T>(1, w, 3, 1, false))
      .add(std::make_shared<BatchNorm2d<T>>(w))
      .add(relu_layer<T>())
      .add(std::make_shared<ResidualBlock<T>>(w, w, 1))
      .add(std::make_shared<ResidualBlock<T>>(w, 2 * w, 2))
      .add(std::make_shared<ResidualBlock<T>>(2 * w, 4 * w, 2))
      .add(std::make_shared<GlobalAvgPool2d<T>>())
      .add(std::make_shared<Linear<T>>(4 * w, 10));
  return m;
}

template <class T>
std::shared_ptr<Sequential<T>> inception_small() {
  auto m = std::make_shared<Sequential<T>>();
  m->add(conv<T>(1, 16, 3, 1))
      .add(relu_layer<T>())
      .add(max_pool<T>(2))
      .add(std::make_shared<InceptionBlock<T>>(16, 16, 24, 8, 8))
      .add(max_pool<T>(2))
      .add(std::make_shared<InceptionBlock<T>>(56, 32, 48, 16, 16))
      .add(std::make_shared<GlobalAvgPool2d<T>>())
      .add(std::make_shared<Linear<T>>(112, 10));
  return m;
}

std::vector<std::string> model_names() {
  return {"lenet", "convnet", "resnet", "resnet16", "inception"};
}

template <class T>
std::shared_ptr<Sequential<T>> make_model(const std::string& name) {
  if (name == "lenet") return lenet5<T>();
  if (name == "convnet") return convnet<T>();
  if (name == "resnet") return resnet_small<T>(32);
  if (name == "resnet16") return resnet_small<T>(16);
  if (name == "inception") return inception_small<T>();
  std::string valid;
  for (const std::string& n : model_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw Error("make_model: unknown model '" + name + "'; valid names: " + valid);
}

#define X(T)                                                            \
  template std::shared_ptr<Sequential<T>> lenet5<T>();                  \
  template std::shared_ptr<Sequential<T>> convnet<T>();                 \
  template std::shared_ptr<Sequential<T>> resnet_small<T>(std::size_t); \
  template std::shared_ptr<Sequential<T>> inception_small<T>();         \
  template std::shared_ptr<Sequential<T>> make_model<T>(const std::string&);
X(float)
X(double)
#undef X

}  // namespace xgrad::nn
