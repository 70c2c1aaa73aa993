// The op registry: one explicit list (self-registering statics get dropped by static linking).
#include "xgrad/registry.hpp"

#include <algorithm>
#include <numeric>

namespace xgrad {

SampleInit uniform_init(double lo, double hi) {
  return [lo, hi](const Shape& shape, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> dist(lo, hi);
    Tensor<double> t = empty_tensor<double>(shape);
    for (double& x : t) x = dist(rng);
    return t;
  };
}

SampleInit away_from_zero_init(double gap) {
  return [gap](const Shape& shape, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> magnitude(gap, 1.0);
    std::bernoulli_distribution negative(0.5);
    Tensor<double> t = empty_tensor<double>(shape);
    for (double& x : t) x = negative(rng) ? -magnitude(rng) : magnitude(rng);
    return t;
  };
}

SampleInit distinct_init(double gap) {
  return [gap](const Shape& shape, std::mt19937_64& rng) {
    Tensor<double> t = empty_tensor<double>(shape);
    std::vector<std::size_t> order(t.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const double mid = 0.5 * gap * double(t.size());
    for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = gap * double(order[i]) - mid;
    return t;
  };
}

std::vector<Variable<double>> make_sample_inputs(const OpCase& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Variable<double>> inputs;
  for (const SampleInput& s : c.inputs)
    inputs.emplace_back(s.init(s.shape, rng), s.requires_grad, s.name);
  return inputs;
}

const std::vector<OpInfo>& op_registry() {
  static const std::vector<OpInfo> registry = {
      // Elementwise and shape
      add_info(),
      sub_info(),
      mul_info(),
      matmul_info(),
      sum_info(),
      mean_info(),
      reshape_info(),
      flatten_info(),
      concat_info(),
      // Activations
      relu_info(),
      leaky_relu_info(),
      sigmoid_info(),
      tanh_info(),
      // Softmax and losses
      softmax_info(),
      log_softmax_info(),
      cross_entropy_info(),
      mse_loss_info(),
      // Convolution
      conv2d_info(),
      conv2d_relu_info(),
      zero_pad_info(),
      // Pooling, dense, regularisation and normalisation
      max_pool2d_info(),
      conv2d_max_pool2d_info(),
      avg_pool2d_info(),
      global_avg_pool2d_info(),
      linear_info(),
      dropout_info(),
      batch_norm2d_info(),
  };
  return registry;
}

}  // namespace xgrad
