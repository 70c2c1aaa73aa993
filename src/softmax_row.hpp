// One row of a numerically stable softmax, shared by softmax, log_softmax and cross_entropy.
#pragma once

#include <cmath>
#include <cstddef>

namespace xgrad::detail {

/// The row's maximum m and s = Σ_j exp(x_j - m); s >= 1 because the max term is exp(0).
template <class T>
struct SoftmaxRow {
  T max;
  T sum;
};

/// Computes m and s over the c >= 1 values at x and, when `probs` is not null, writes
/// probs_j = exp(x_j - m) / s there.
template <class T>
SoftmaxRow<T> softmax_row(const T* x, std::size_t c, T* probs) {
  T m = x[0];
  for (std::size_t j = 1; j < c; ++j) m = x[j] > m ? x[j] : m;
  T s = 0;
  if (probs == nullptr) {
    for (std::size_t j = 0; j < c; ++j) s += std::exp(x[j] - m);
    return {m, s};
  }
  for (std::size_t j = 0; j < c; ++j) {
    probs[j] = std::exp(x[j] - m);
    s += probs[j];
  }
  const T inv = T(1) / s;
  for (std::size_t j = 0; j < c; ++j) probs[j] *= inv;
  return {m, s};
}

}  // namespace xgrad::detail
