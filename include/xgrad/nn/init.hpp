// Weight initialisers (as torch.nn.init) and the global generator layers draw from.
//
// Every layer constructor draws its initial weights from one process-wide generator,
// init_generator(). nn::manual_seed(s) resets it, so the same seed and the same sequence of
// constructions give bit-identical weights (the draws use their own portable uniform and normal
// transforms, not the standard library's distributions, so they agree across compilers). Before
// any manual_seed() the generator starts from a fixed seed, kDefaultInitSeed, so programs are
// reproducible by default. The generator is not thread-safe: build models from one thread.
#pragma once

#include <cstdint>
#include <random>

#include "xgrad/tensor.hpp"

namespace xgrad::nn {

/// The seed of init_generator() before any manual_seed() call.
constexpr std::uint64_t kDefaultInitSeed = 0x5eed'2024ULL;

/// Resets the global init generator to `seed`.
void manual_seed(std::uint64_t seed);
/// The global generator layer constructors draw from.
std::mt19937_64& init_generator();

/// Which fan a Kaiming initialiser keeps the variance for.
enum class FanMode { fan_in, fan_out };

/// fan_in = size(1)·receptive field, fan_out = size(0)·receptive field, where the receptive field
/// is the product of dims 2.. (1 for a [out, in] matrix), as PyTorch. Throws for rank < 2.
std::size_t fan_in(const Shape& shape);
std::size_t fan_out(const Shape& shape);

/// Every element uniform in [lo, hi), drawn in double from 53 random bits.
template <class T>
void uniform(Tensor<T>& t, double lo, double hi, std::mt19937_64& rng);
/// Every element normal(mean, stddev) (Box–Muller in double).
template <class T>
void normal(Tensor<T>& t, double mean, double stddev, std::mt19937_64& rng);

/// Kaiming/He uniform for a leaky-ReLU of negative slope `a` (a = 0: ReLU):
/// U(-b, b), b = gain·sqrt(3 / fan), gain = sqrt(2 / (1 + a²)). a = sqrt(5) with fan_in gives
/// b = 1/sqrt(fan_in), PyTorch's default for Conv2d and Linear weights.
template <class T>
void kaiming_uniform(Tensor<T>& w, std::mt19937_64& rng, double a = 0.0,
                     FanMode mode = FanMode::fan_in);
/// Kaiming/He normal: N(0, std²), std = gain / sqrt(fan), gain as kaiming_uniform.
template <class T>
void kaiming_normal(Tensor<T>& w, std::mt19937_64& rng, double a = 0.0,
                    FanMode mode = FanMode::fan_in);
/// Xavier/Glorot uniform: U(-b, b), b = gain·sqrt(6 / (fan_in + fan_out)).
template <class T>
void xavier_uniform(Tensor<T>& w, std::mt19937_64& rng, double gain = 1.0);
/// Xavier/Glorot normal: N(0, std²), std = gain·sqrt(2 / (fan_in + fan_out)).
template <class T>
void xavier_normal(Tensor<T>& w, std::mt19937_64& rng, double gain = 1.0);
/// All elements 0 / 1.
template <class T>
void zeros(Tensor<T>& t);
template <class T>
void ones(Tensor<T>& t);

// Defined in src/nn/init.cpp for float and double.

}  // namespace xgrad::nn
