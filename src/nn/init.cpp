// Initialisers and the global init generator. The uniform and normal transforms are written out
// (53-bit uniform, Box–Muller) so that a seed gives the same weights with any standard library.
#include "xgrad/nn/init.hpp"

#include <cmath>

namespace xgrad::nn {

namespace {

std::mt19937_64& global_generator() {
  static std::mt19937_64 rng(kDefaultInitSeed);
  return rng;
}

// Uniform in [0, 1) from the top 53 bits.
double unit_uniform(std::mt19937_64& rng) {
  return double(rng() >> 11) * 0x1.0p-53;
}

Shape checked_fan_shape(const Shape& shape, const char* what) {
  if (shape.size() < 2)
    throw Error(std::string("nn::init: ") + what + " needs a tensor of rank >= 2 but got shape " +
                shape_str(shape));
  return shape;
}

std::size_t receptive_field(const Shape& shape) {
  std::size_t r = 1;
  for (std::size_t d = 2; d < shape.size(); ++d) r *= shape[d];
  return r;
}

double kaiming_std(const Shape& shape, double a, FanMode mode) {
  const std::size_t fan = mode == FanMode::fan_in ? fan_in(shape) : fan_out(shape);
  if (fan == 0) throw Error("nn::init: kaiming init of an empty tensor " + shape_str(shape));
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  return gain / std::sqrt(double(fan));
}

double xavier_std(const Shape& shape, double gain) {
  const std::size_t fans = fan_in(shape) + fan_out(shape);
  if (fans == 0) throw Error("nn::init: xavier init of an empty tensor " + shape_str(shape));
  return gain * std::sqrt(2.0 / double(fans));
}

}  // namespace

void manual_seed(std::uint64_t seed) {
  global_generator().seed(seed);
}

std::mt19937_64& init_generator() {
  return global_generator();
}

std::size_t fan_in(const Shape& shape) {
  return checked_fan_shape(shape, "fan_in")[1] * receptive_field(shape);
}

std::size_t fan_out(const Shape& shape) {
  return checked_fan_shape(shape, "fan_out")[0] * receptive_field(shape);
}

template <class T>
void uniform(Tensor<T>& t, double lo, double hi, std::mt19937_64& rng) {
  T* p = t.data();
  for (std::size_t i = 0; i < t.size(); ++i) p[i] = T(lo + (hi - lo) * unit_uniform(rng));
}

template <class T>
void normal(Tensor<T>& t, double mean, double stddev, std::mt19937_64& rng) {
  constexpr double two_pi = 6.283185307179586476925286766559;
  T* p = t.data();
  const std::size_t n = t.size();
  for (std::size_t i = 0; i < n; i += 2) {
    const double u1 = 1.0 - unit_uniform(rng);  // in (0, 1]: log is finite
    const double u2 = unit_uniform(rng);
    const double r = std::sqrt(-2.0 * std::log(u1));
    p[i] = T(mean + stddev * r * std::cos(two_pi * u2));
    if (i + 1 < n) p[i + 1] = T(mean + stddev * r * std::sin(two_pi * u2));
  }
}

template <class T>
void kaiming_uniform(Tensor<T>& w, std::mt19937_64& rng, double a, FanMode mode) {
  const double bound = std::sqrt(3.0) * kaiming_std(shape_of(w), a, mode);
  uniform(w, -bound, bound, rng);
}

template <class T>
void kaiming_normal(Tensor<T>& w, std::mt19937_64& rng, double a, FanMode mode) {
  normal(w, 0.0, kaiming_std(shape_of(w), a, mode), rng);
}

template <class T>
void xavier_uniform(Tensor<T>& w, std::mt19937_64& rng, double gain) {
  const double bound = std::sqrt(3.0) * xavier_std(shape_of(w), gain);
  uniform(w, -bound, bound, rng);
}

template <class T>
void xavier_normal(Tensor<T>& w, std::mt19937_64& rng, double gain) {
  normal(w, 0.0, xavier_std(shape_of(w), gain), rng);
}

template <class T>
void zeros(Tensor<T>& t) {
  t.fill(T(0));
}

template <class T>
void ones(Tensor<T>& t) {
  t.fill(T(1));
}

#define X(T)                                                                       \
  template void uniform<T>(Tensor<T>&, double, double, std::mt19937_64&);          \
  template void normal<T>(Tensor<T>&, double, double, std::mt19937_64&);           \
  template void kaiming_uniform<T>(Tensor<T>&, std::mt19937_64&, double, FanMode); \
  template void kaiming_normal<T>(Tensor<T>&, std::mt19937_64&, double, FanMode);  \
  template void xavier_uniform<T>(Tensor<T>&, std::mt19937_64&, double);           \
  template void xavier_normal<T>(Tensor<T>&, std::mt19937_64&, double);            \
  template void zeros<T>(Tensor<T>&);                                              \
  template void ones<T>(Tensor<T>&);
X(float)
X(double)
#undef X

}  // namespace xgrad::nn
