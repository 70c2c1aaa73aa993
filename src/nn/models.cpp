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

template <class T>
std::shared_ptr<Sequential<T>> lenet5() {
  auto m = std::make_shared<Sequential<T>>();
  m->add(conv<T>(1, 6, 5, 2))
      .add(relu_layer<T>())
      .add(max_pool<T>(2))
      .add(conv<T>(6, 16, 5))
      .add(relu_layer<T>())
      .add(max_pool<T>(2))
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
      .add(relu_layer<T>())
      .add(max_pool<T>(2))
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
