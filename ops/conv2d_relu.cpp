// conv2d_relu: relu(conv2d(x, w, b)) in one pass over each image. Each image's output gets its ReLU
// while it is still in the running thread's cache, instead of in a pass of its own over the whole
// batch's output; the forward keeps one byte per output (whether it zeroed it), and the backward
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

#include "../src/conv_op.hpp"
#include "../src/relu_mark.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using detail::ConvGeom;

#if defined(__AVX2__)
// The mark detail::relu_marking gives an output the ReLU zeroes (0 for one it passes).
constexpr std::uint8_t kZeroed = 1;

// d[i] = zeroed[i] == 0 ? g[i] : 0 over n floats.
void mask_gradient(const float* g, const std::uint8_t* zeroed, float* d, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t bytes;
    std::memcpy(&bytes, zeroed + i, 8);
    const __m256i m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(std::int64_t(bytes)));
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()));
    _mm256_storeu_ps(d + i, _mm256_and_ps(_mm256_loadu_ps(g + i), keep));
  }
  for (; i < n; ++i) d[i] = zeroed[i] == 0 ? g[i] : 0.f;
}

// The forward's image-by-image output: the convolution straight into y, then its ReLU there,
// marking the outputs it zeroes (when `zeroed` is non-null, zero-filled).
struct ReluOutput final : detail::ConvOutputSink<float> {
  ReluOutput(const ConvGeom& g, float* y, std::uint8_t* zeroed)
      : image(std::size_t(g.co) * std::size_t(g.l)), y(y), zeroed(zeroed) {}
  float* output(int n) override { return y + std::size_t(n) * image; }
  void finish_output(int n, float* yn) override {
    detail::relu_marking(yn, zeroed != nullptr ? zeroed + std::size_t(n) * image : nullptr, image,
                         kZeroed);
  }
  std::size_t image;
  float* y;
  std::uint8_t* zeroed;
};

// The backward's image-by-image dY of the convolution: the gradient where the ReLU passed, in a
// per-thread buffer.
struct MaskedGrad final : detail::ConvGradSource<float> {
  MaskedGrad(const ConvGeom& g, const float* gy, const std::uint8_t* zeroed)
      : image(std::size_t(g.co) * std::size_t(g.l)), gy(gy), zeroed(zeroed) {}
  const float* grad_output(int n) override {
    float* d = detail::conv_scratch<float, detail::kOpScratchSlot + 2>(image);
    const std::size_t offset = std::size_t(n) * image;
    mask_gradient(gy + offset, zeroed + offset, d, image);
    return d;
  }
  std::size_t image;
  const float* gy;
  const std::uint8_t* zeroed;
};

// Its marks: per output, kZeroed where the ReLU zeroed it, else 0.
using Conv2DReluNode = detail::FusedConvNode<float, MaskedGrad>;
#endif

}  // namespace

template <class T>
Variable<T> conv2d_relu(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                        const Conv2DParams& conv) {
  const ConvGeom g = detail::conv_geometry("conv2d_relu", x, w, b, conv);
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    Tensor<float> y = empty_tensor<float>(
        {std::size_t(g.n), std::size_t(g.co), std::size_t(g.ho), std::size_t(g.wo)});
    const bool rec = should_record<float>({&x, &w, &b});
    std::vector<std::uint8_t> zeroed(rec ? y.size() : 0);
    ReluOutput relu(g, y.data(), rec ? zeroed.data() : nullptr);
    detail::conv_forward<float>(x.value().data(), w.value().data(),
                                b.defined() ? b.value().data() : nullptr, nullptr, g, &relu);
    return record<Conv2DReluNode>(std::move(y), {x, w, b}, "conv2d_relu", g, b.defined(),
                                  std::move(zeroed));
  }
#endif
  return relu(conv2d(x, w, b, conv));
}

OpInfo conv2d_relu_info() {
  const auto fused = [](Conv2DParams c) {
    return [c](const auto& in) { return conv2d_relu(in[0], in[1], in[2], c); };
  };
  const auto io = detail::conv_sample_inputs;
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
