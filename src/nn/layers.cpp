// The layers of layers.hpp, instantiated for float and double.
#include "xgrad/nn/layers.hpp"

#include <cmath>
#include <sstream>
#include <typeinfo>

#include "xgrad/nn/init.hpp"

namespace xgrad::nn {

namespace {

std::string pair_str(const std::array<int, 2>& a) {
  return a[0] == a[1] ? std::to_string(a[0])
                      : "(" + std::to_string(a[0]) + ", " + std::to_string(a[1]) + ")";
}

std::string pool_describe(const char* type, const Pool2DParams& p) {
  std::ostringstream os;
  os << type << "(kernel=" << pair_str(p.kernel) << ", stride=" << pair_str(p.stride);
  if (p.padding[0] || p.padding[1]) os << ", padding=" << pair_str(p.padding);
  os << ")";
  return os.str();
}

// A weight drawn as PyTorch's Conv2d/Linear: kaiming_uniform(a = sqrt(5)).
template <class T>
Variable<T> default_weight(const Shape& shape) {
  Tensor<T> w = empty_tensor<T>(shape);
  kaiming_uniform(w, init_generator(), std::sqrt(5.0));
  return Variable<T>(std::move(w), true);
}

// A bias U(±1/sqrt(fan_in)) of the weight, as PyTorch; undefined when absent.
template <class T>
Variable<T> default_bias(bool on, std::size_t n, const Shape& weight_shape) {
  if (!on) return {};
  Tensor<T> b = empty_tensor<T>({n});
  const double bound = 1.0 / std::sqrt(double(fan_in(weight_shape)));
  uniform(b, -bound, bound, init_generator());
  return Variable<T>(std::move(b), true);
}

}  // namespace

// ------------------------------------------------------------------------------------- Conv2d

template <class T>
Conv2d<T>::Conv2d(std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
                  Conv2DParams params, bool bias)
    : in_(in_channels), out_(out_channels), kernel_(kernel), params_(params) {
  const int g = params.groups;
  if (in_channels == 0 || out_channels == 0 || kernel == 0 || g < 1 ||
      in_channels % std::size_t(g) != 0 || out_channels % std::size_t(g) != 0)
    throw Error("Conv2d: invalid configuration (in " + std::to_string(in_channels) + ", out " +
                std::to_string(out_channels) + ", kernel " + std::to_string(kernel) + ", groups " +
                std::to_string(g) + "): sizes must be positive and divisible by groups");
  const Shape wshape{out_channels, in_channels / std::size_t(g), kernel, kernel};
  weight_ = this->register_parameter("weight", default_weight<T>(wshape));
  bias_ = this->register_parameter("bias", default_bias<T>(bias, out_channels, wshape));
}

template <class T>
Variable<T> Conv2d<T>::forward(const Variable<T>& x) {
  return conv2d(x, weight(), bias(), params_);
}

template <class T>
std::string Conv2d<T>::describe() const {
  std::ostringstream os;
  os << "Conv2d(" << in_ << ", " << out_ << ", kernel=" << kernel_
     << ", stride=" << pair_str(params_.stride);
  if (params_.padding[0] || params_.padding[1]) os << ", padding=" << pair_str(params_.padding);
  if (params_.dilation[0] != 1 || params_.dilation[1] != 1)
    os << ", dilation=" << pair_str(params_.dilation);
  if (params_.groups != 1) os << ", groups=" << params_.groups;
  if (bias_ == this->npos) os << ", bias=false";
  os << ")";
  return os.str();
}

// ---------------------------------------------------------------------------------- Pooling

template <class T>
Variable<T> MaxPool2d<T>::forward(const Variable<T>& x) {
  return max_pool2d(x, params_);
}

template <class T>
std::string MaxPool2d<T>::describe() const {
  return pool_describe("MaxPool2d", params_);
}

template <class T>
Variable<T> AvgPool2d<T>::forward(const Variable<T>& x) {
  return avg_pool2d(x, params_);
}

template <class T>
std::string AvgPool2d<T>::describe() const {
  return pool_describe("AvgPool2d", params_);
}

template <class T>
Variable<T> GlobalAvgPool2d<T>::forward(const Variable<T>& x) {
  return global_avg_pool2d(x);
}

// ---------------------------------------------------------------------- ReLU, Flatten, Dropout

template <class T>
Variable<T> ReLU<T>::forward(const Variable<T>& x) {
  return relu(x);
}

template <class T>
Variable<T> Flatten<T>::forward(const Variable<T>& x) {
  return flatten(x);
}

template <class T>
Dropout<T>::Dropout(double p) : Dropout(p, init_generator()()) {}

template <class T>
Dropout<T>::Dropout(double p, std::uint64_t seed) : p_(p), rng_(seed) {
  if (!(p >= 0.0 && p < 1.0))
    throw Error("Dropout: p must be in [0, 1) but is " + std::to_string(p));
}

template <class T>
Variable<T> Dropout<T>::forward(const Variable<T>& x) {
  return dropout(x, p_, this->is_training(), rng_);
}

template <class T>
std::string Dropout<T>::describe() const {
  std::ostringstream os;
  os << "Dropout(p=" << p_ << ")";
  return os.str();
}

// ----------------------------------------------------------------------------------- Linear

template <class T>
Linear<T>::Linear(std::size_t in_features, std::size_t out_features, bool bias)
    : in_(in_features), out_(out_features) {
  if (in_features == 0 || out_features == 0)
    throw Error("Linear: sizes must be positive (in " + std::to_string(in_features) + ", out " +
                std::to_string(out_features) + ")");
  const Shape wshape{out_features, in_features};
  weight_ = this->register_parameter("weight", default_weight<T>(wshape));
  bias_ = this->register_parameter("bias", default_bias<T>(bias, out_features, wshape));
}

template <class T>
Variable<T> Linear<T>::forward(const Variable<T>& x) {
  return linear(x, weight(), bias());
}

template <class T>
std::string Linear<T>::describe() const {
  std::string s = "Linear(" + std::to_string(in_) + ", " + std::to_string(out_);
  if (bias_ == this->npos) s += ", bias=false";
  return s + ")";
}

// ------------------------------------------------------------------------------ BatchNorm2d

template <class T>
BatchNorm2d<T>::BatchNorm2d(std::size_t channels, BatchNormParams params)
    : channels_(channels),
      params_(params),
      running_mean_(filled_tensor<T>({channels}, T(0))),
      running_var_(filled_tensor<T>({channels}, T(1))) {
  if (channels == 0) throw Error("BatchNorm2d: channels must be positive");
  weight_ =
      this->register_parameter("weight", Variable<T>(filled_tensor<T>({channels}, T(1)), true));
  bias_ = this->register_parameter("bias", Variable<T>(filled_tensor<T>({channels}, T(0)), true));
  this->register_buffer("running_mean", running_mean_);
  this->register_buffer("running_var", running_var_);
}

template <class T>
Variable<T> BatchNorm2d<T>::forward(const Variable<T>& x) {
  return batch_norm2d(x, weight(), bias(), running_mean_, running_var_, this->is_training(),
                      params_);
}

template <class T>
std::string BatchNorm2d<T>::describe() const {
  std::ostringstream os;
  os << "BatchNorm2d(" << channels_ << ", eps=" << params_.eps << ", momentum=" << params_.momentum
     << ")";
  return os.str();
}

// ------------------------------------------------------------------------------- Sequential

template <class T>
Sequential<T>::Sequential(std::initializer_list<std::shared_ptr<Module<T>>> modules) {
  for (const auto& m : modules) add(m);
}

template <class T>
Sequential<T>& Sequential<T>::add(std::shared_ptr<Module<T>> module) {
  this->register_module(std::to_string(size()), std::move(module));
  return *this;
}

template <class T>
Variable<T> Sequential<T>::forward(const Variable<T>& x) {
  Variable<T> y = x;
  const auto& children = this->children();
  // Whether child k exists and is of exactly that class (a subclass may have a forward of its own).
  const auto is = [&](std::size_t k, const std::type_info& layer) {
    return k < children.size() && typeid(*children[k].second) == layer;
  };
  for (std::size_t i = 0; i < children.size(); ++i) {
    if (fuse_ && is(i, typeid(Conv2d<T>))) {
      const auto& conv = static_cast<const Conv2d<T>&>(*children[i].second);
      if (is(i + 1, typeid(MaxPool2d<T>))) {
        const auto& pool = static_cast<const MaxPool2d<T>&>(*children[i + 1].second);
        const bool relu = is(i + 2, typeid(ReLU<T>));
        y = conv2d_max_pool2d(y, conv.weight(), conv.bias(), conv.params(), pool.params(), relu);
        i += relu ? 2 : 1;
        continue;
      }
      if (is(i + 1, typeid(ReLU<T>))) {
        y = conv2d_relu(y, conv.weight(), conv.bias(), conv.params());
        ++i;
        continue;
      }
    }
    y = children[i].second->forward(y);
  }
  return y;
}

template <class T>
Variable<T> Sequential<T>::forward_with_summary(const Variable<T>& x,
                                                std::vector<typename Module<T>::SummaryRow>& rows,
                                                const std::string& prefix) {
  Variable<T> y = x;
  for (const auto& [name, child] : this->children())
    y = child->forward_with_summary(y, rows, prefix.empty() ? name : prefix + "." + name);
  return y;
}

template <class T>
std::shared_ptr<Module<T>> Sequential<T>::at(std::size_t i) const {
  if (i >= size())
    throw Error("Sequential::at: index " + std::to_string(i) + " out of range for " +
                std::to_string(size()) + " modules");
  return this->children()[i].second;
}

// ---------------------------------------------------------------------------- ResidualBlock

template <class T>
ResidualBlock<T>::ResidualBlock(std::size_t in_channels, std::size_t out_channels,
                                std::size_t stride)
    : in_(in_channels), out_(out_channels), stride_(stride) {
  if (stride == 0) throw Error("ResidualBlock: stride must be positive");
  const int s = int(stride);
  conv1_ = this->register_module("conv1",
                                 std::make_shared<Conv2d<T>>(in_channels, out_channels, 3,
                                                             Conv2DParams{{s, s}, {1, 1}}, false));
  bn1_ = this->register_module("bn1", std::make_shared<BatchNorm2d<T>>(out_channels));
  conv2_ = this->register_module("conv2",
                                 std::make_shared<Conv2d<T>>(out_channels, out_channels, 3,
                                                             Conv2DParams{{1, 1}, {1, 1}}, false));
  bn2_ = this->register_module("bn2", std::make_shared<BatchNorm2d<T>>(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    auto projection = std::make_shared<Sequential<T>>();
    projection->add(std::make_shared<Conv2d<T>>(in_channels, out_channels, 1,
                                                Conv2DParams{{s, s}, {0, 0}}, false));
    projection->add(std::make_shared<BatchNorm2d<T>>(out_channels));
    downsample_ = this->register_module("downsample", projection);
  }
}

template <class T>
Variable<T> ResidualBlock<T>::forward(const Variable<T>& x) {
  Variable<T> h = relu(bn1_->forward(conv1_->forward(x)));
  h = bn2_->forward(conv2_->forward(h));
  const Variable<T> skip = downsample_ ? downsample_->forward(x) : x;
  return relu(add(h, skip));
}

template <class T>
std::string ResidualBlock<T>::describe() const {
  std::string s = "ResidualBlock(" + std::to_string(in_) + ", " + std::to_string(out_) +
                  ", stride=" + std::to_string(stride_);
  if (downsample_) s += ", projection";
  return s + ")";
}

// --------------------------------------------------------------------------- InceptionBlock

template <class T>
InceptionBlock<T>::InceptionBlock(std::size_t in_channels, std::size_t c1, std::size_t c3,
                                  std::size_t c5, std::size_t cpool, std::size_t c3_reduce,
                                  std::size_t c5_reduce)
    : in_(in_channels),
      c1_(c1),
      c3_(c3),
      c5_(c5),
      cpool_(cpool),
      c3_reduce_(c3_reduce ? c3_reduce : std::max<std::size_t>(1, c3 / 2)),
      c5_reduce_(c5_reduce ? c5_reduce : std::max<std::size_t>(1, c5 / 2)) {
  if (in_channels == 0 || c1 == 0 || c3 == 0 || c5 == 0 || cpool == 0)
    throw Error("InceptionBlock: every channel count must be positive");
  const auto conv = [](std::size_t in, std::size_t out, std::size_t k) {
    const int pad = int(k / 2);
    return std::make_shared<Conv2d<T>>(in, out, k, Conv2DParams{{1, 1}, {pad, pad}});
  };
  const auto relu_layer = [] { return std::make_shared<ReLU<T>>(); };
  branch1_ = this->register_module(
      "branch1", std::make_shared<Sequential<T>>(std::initializer_list<std::shared_ptr<Module<T>>>{
                     conv(in_, c1, 1), relu_layer()}));
  branch3_ = this->register_module(
      "branch3",
      std::make_shared<Sequential<T>>(std::initializer_list<std::shared_ptr<Module<T>>>{
          conv(in_, c3_reduce_, 1), relu_layer(), conv(c3_reduce_, c3, 3), relu_layer()}));
  branch5_ = this->register_module(
      "branch5",
      std::make_shared<Sequential<T>>(std::initializer_list<std::shared_ptr<Module<T>>>{
          conv(in_, c5_reduce_, 1), relu_layer(), conv(c5_reduce_, c5, 5), relu_layer()}));
  Pool2DParams pool;
  pool.kernel = {3, 3};
  pool.stride = {1, 1};
  pool.padding = {1, 1};
  branch_pool_ = this->register_module(
      "branch_pool",
      std::make_shared<Sequential<T>>(std::initializer_list<std::shared_ptr<Module<T>>>{
          std::make_shared<MaxPool2d<T>>(pool), conv(in_, cpool, 1), relu_layer()}));
}

template <class T>
Variable<T> InceptionBlock<T>::forward(const Variable<T>& x) {
  return concat<T>(
      {branch1_->forward(x), branch3_->forward(x), branch5_->forward(x), branch_pool_->forward(x)},
      1);
}

template <class T>
std::string InceptionBlock<T>::describe() const {
  std::ostringstream os;
  os << "InceptionBlock(" << in_ << "; 1x1 " << c1_ << ", 3x3 " << c3_reduce_ << "->" << c3_
     << ", 5x5 " << c5_reduce_ << "->" << c5_ << ", pool " << cpool_ << "; out " << out_channels()
     << ")";
  return os.str();
}

#define X(T)                         \
  template class Conv2d<T>;          \
  template class MaxPool2d<T>;       \
  template class AvgPool2d<T>;       \
  template class GlobalAvgPool2d<T>; \
  template class ReLU<T>;            \
  template class Linear<T>;          \
  template class Flatten<T>;         \
  template class Dropout<T>;         \
  template class BatchNorm2d<T>;     \
  template class Sequential<T>;      \
  template class ResidualBlock<T>;   \
  template class InceptionBlock<T>;
X(float)
X(double)
#undef X

}  // namespace xgrad::nn
