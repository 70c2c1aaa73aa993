// The op registry: every built-in op, with sample inputs and gradcheck options.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "xgrad/gradcheck.hpp"
#include "xgrad/variable.hpp"

namespace xgrad {

/// Fills a sample input: how values are drawn matters for kinks and ties.
using SampleInit = std::function<Tensor<double>(const Shape&, std::mt19937_64&)>;

/// Uniform in [lo, hi].
SampleInit uniform_init(double lo = -1.0, double hi = 1.0);
/// Uniform magnitudes in [gap, 1] with random signs: no element near 0 (ReLU kinks).
SampleInit away_from_zero_init(double gap = 0.1);
/// Distinct values spaced `gap` apart, shuffled: no ties (max-pool).
SampleInit distinct_init(double gap = 0.01);

struct SampleInput {
  std::string name;
  Shape shape;
  SampleInit init = uniform_init();
  bool requires_grad = true;
};

/// One configuration of an op: its inputs and the function to check, in both precisions.
struct OpCase {
  std::string label;
  std::vector<SampleInput> inputs;
  std::function<Variable<double>(const std::vector<Variable<double>>&)> fn64;
  std::function<Variable<float>(const std::vector<Variable<float>>&)> fn32;
  GradcheckOptions options;
};

struct OpInfo {
  std::string name;  ///< the public function's name in ops.hpp
  std::vector<OpCase> cases;
};

/// Builds an OpCase from a generic lambda `[](const auto& in) { return op(in[0], ...); }`,
/// instantiated for both precisions.
template <class F>
OpCase make_case(std::string label, std::vector<SampleInput> inputs, F fn,
                 GradcheckOptions options = {}) {
  OpCase c;
  c.label = std::move(label);
  c.inputs = std::move(inputs);
  c.fn64 = [fn](const std::vector<Variable<double>>& in) { return fn(in); };
  c.fn32 = [fn](const std::vector<Variable<float>>& in) { return fn(in); };
  c.options = options;
  return c;
}

/// Draws a case's inputs (deterministic in `seed`).
std::vector<Variable<double>> make_sample_inputs(const OpCase& c, std::uint64_t seed);

/// Every built-in op, listed explicitly in src/registry.cpp.
const std::vector<OpInfo>& op_registry();

// Each op file defines its entry; src/registry.cpp lists them all.
OpInfo add_info();
OpInfo sub_info();
OpInfo mul_info();
OpInfo matmul_info();
OpInfo sum_info();
OpInfo relu_info();
OpInfo leaky_relu_info();
OpInfo sigmoid_info();
OpInfo tanh_info();
OpInfo mean_info();
OpInfo reshape_info();
OpInfo flatten_info();
OpInfo concat_info();
OpInfo softmax_info();
OpInfo log_softmax_info();
OpInfo cross_entropy_info();
OpInfo mse_loss_info();
OpInfo conv2d_info();
OpInfo conv2d_relu_info();
OpInfo zero_pad_info();
OpInfo max_pool2d_info();
OpInfo conv2d_max_pool2d_info();
OpInfo avg_pool2d_info();
OpInfo global_avg_pool2d_info();
OpInfo linear_info();
OpInfo dropout_info();
OpInfo batch_norm2d_info();

}  // namespace xgrad
