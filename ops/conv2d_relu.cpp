// conv2d_relu: relu(conv2d(x, w, b)) in one pass over each image. Each image's output gets its ReLU
// while it is still in the running thread's cache, instead of in a pass of its own over the whole
// batch's output; the forward keeps one byte per output (whether it passed), and the backward
// masks each image's gradient in cache just before the convolution's backward reads it. Float with
// AVX2 takes this path; otherwise it runs the two ops.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "../src/conv_driver.hpp"
#include "../src/conv_op.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using detail::ConvGeom;

#if defined(__AVX2__)
// y = y > 0 ? y : 0 over n floats (relu's rule: a NaN becomes 0), and, when `passed` is non-null,
// passed[i] = 1 where y[i] > 0, else 0.
void relu_in_place(float* y, std::uint8_t* passed, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(y + i);
    const __m256 keep = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);
    _mm256_storeu_ps(y + i, _mm256_and_ps(v, keep));
    if (passed != nullptr) {
      const __m256i one = _mm256_and_si256(_mm256_castps_si256(keep), _mm256_set1_epi32(1));
      const __m128i one16 =
          _mm_packs_epi32(_mm256_castsi256_si128(one), _mm256_extracti128_si256(one, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(passed + i), _mm_packus_epi16(one16, one16));
    }
  }
  for (; i < n; ++i) {
    const bool keep = y[i] > 0.f;
    y[i] = keep ? y[i] : 0.f;
    if (passed != nullptr) passed[i] = keep ? 1 : 0;
  }
}

// d[i] = passed[i] ? g[i] : 0 over n floats.
void mask_gradient(const float* g, const std::uint8_t* passed, float* d, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t bytes;
    std::memcpy(&bytes, passed + i, 8);
    const __m256i m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(std::int64_t(bytes)));
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(m, _mm256_setzero_si256()));
    _mm256_storeu_ps(d + i, _mm256_and_ps(_mm256_loadu_ps(g + i), keep));
  }
  for (; i < n; ++i) d[i] = passed[i] != 0 ? g[i] : 0.f;
}

// The forward's image-by-image output: the convolution straight into y, then its ReLU there.
struct ReluOutput final : detail::ConvImageIo<float> {
  ReluOutput(const ConvGeom& g, float* y, std::uint8_t* passed)
      : image(std::size_t(g.co) * std::size_t(g.l)), y(y), passed(passed) {}
  float* output(int n) override { return y + std::size_t(n) * image; }
  void finish_output(int n, float* yn) override {
    relu_in_place(yn, passed != nullptr ? passed + std::size_t(n) * image : nullptr, image);
  }
  const float* grad_output(int) override { return nullptr; }  // forward only
  std::size_t image;
  float* y;
  std::uint8_t* passed;
};

// The backward's image-by-image dY of the convolution: the gradient where the ReLU passed, in a
// per-thread buffer.
struct MaskedGrad final : detail::ConvImageIo<float> {
  MaskedGrad(const ConvGeom& g, const float* gy, const std::uint8_t* passed)
      : image(std::size_t(g.co) * std::size_t(g.l)), gy(gy), passed(passed) {}
  float* output(int) override { return nullptr; }  // backward only
  void finish_output(int, float*) override {}
  const float* grad_output(int n) override {
    thread_local std::vector<float> buffer;
    if (buffer.size() < image) buffer.resize(image);
    const std::size_t offset = std::size_t(n) * image;
    mask_gradient(gy + offset, passed + offset, buffer.data(), image);
    return buffer.data();
  }
  std::size_t image;
  const float* gy;
  const std::uint8_t* passed;
};

struct Conv2DReluNode final : Node<float> {
  Conv2DReluNode(ConvGeom geom, bool has_bias, std::vector<std::uint8_t> passed)
      : geom_(geom), has_bias_(has_bias), passed_(std::move(passed)) {}
  const char* name() const override { return "conv2d_relu"; }
  std::vector<Tensor<float>> backward(const Tensor<float>& gy) override {
    MaskedGrad masked(geom_, gy.data(), passed_.data());
    return detail::conv_gradients<float>(*this, geom_, has_bias_, nullptr, &masked);
  }
  ConvGeom geom_;
  bool has_bias_;
  std::vector<std::uint8_t> passed_;  ///< per output, 1 where the ReLU passed it
};
#endif

}  // namespace

template <class T>
Variable<T> conv2d_relu(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                        const Conv2DParams& conv) {
  const Shape bshape = b.defined() ? b.shape() : Shape{};
  const ConvGeom g = detail::conv_geometry("conv2d_relu", x.shape(), w.shape(),
                                           b.defined() ? &bshape : nullptr, conv, sizeof(T));
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    Tensor<float> y = empty_tensor<float>(
        {std::size_t(g.n), std::size_t(g.co), std::size_t(g.ho), std::size_t(g.wo)});
    const bool rec = should_record<float>({&x, &w, &b});
    std::vector<std::uint8_t> passed(rec ? y.size() : 0);
    ReluOutput relu(g, y.data(), rec ? passed.data() : nullptr);
    detail::conv_forward<float>(x.value().data(), w.value().data(),
                                b.defined() ? b.value().data() : nullptr, nullptr, g, &relu);
    return record<Conv2DReluNode>(std::move(y), {x, w, b}, g, b.defined(), std::move(passed));
  }
#endif
  return relu(conv2d(x, w, b, conv));
}

OpInfo conv2d_relu_info() {
  const auto fused = [](Conv2DParams c) {
    return [c](const auto& in) { return conv2d_relu(in[0], in[1], in[2], c); };
  };
  const auto io = [](Shape x, Shape w) {
    const std::size_t co = w[0];
    return std::vector<SampleInput>{{"x", std::move(x)}, {"w", std::move(w)}, {"b", {co}}};
  };
  Conv2DParams pad1;
  pad1.padding = {1, 1};
  Conv2DParams s2;
  s2.stride = {2, 2};
  std::vector<SampleInput> x_fixed = io({2, 2, 5, 5}, {3, 2, 3, 3});
  x_fixed[0].requires_grad = false;
  return {"conv2d_relu",
          {// The convnet's conv1 (one input channel, 3x3), smaller; an im2col layer; odd sizes.
           make_case("one_channel_3x3", io({2, 1, 7, 7}, {4, 1, 3, 3}), fused({})),
           make_case("three_channels_pad1", io({2, 3, 5, 6}, {4, 3, 3, 3}), fused(pad1)),
           make_case("stride2", io({1, 2, 7, 7}, {3, 2, 3, 3}), fused(s2)),
           make_case("no_bias", {{"x", {2, 2, 5, 5}}, {"w", {3, 2, 3, 3}}},
                     [](const auto& in) { return conv2d_relu(in[0], in[1], {}, {}); }),
           make_case("input_without_grad", x_fixed, fused({}))}};
}

#define X(T)                                                                                      \
  template Variable<T> conv2d_relu<T>(const Variable<T>&, const Variable<T>&, const Variable<T>&, \
                                      const Conv2DParams&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
