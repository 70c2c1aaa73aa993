// conv2d_max_pool2d: max_pool2d(conv2d(x, w, b)), and optionally relu of that, in one pass over
// each image. The convolution's output is pooled while it is in the running thread's cache and
// never stored: the forward keeps only each window's position (the 2x2 pool's one-byte code), and
// the backward rebuilds each image's dY of the convolution from the pooled gradient and the codes,
// in cache, just before the convolution's backward reads it. The ReLU rides in the codes: an
// output it zeroes gets kReluZeroed added to its code, which matches no window position, so its
// gradient reaches no input. Float with a 2x2, stride-2, unpadded pool (LeNet, most small CNNs)
// takes this path; anything else runs the separate ops.
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "../src/conv_op.hpp"
#include "../src/max_pool_2x2.hpp"
#include "../src/relu_mark.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using detail::ConvGeom;
using detail::PoolGeometry;

#ifdef XGRAD_POOL_2X2
// Added to the window code (0..3) of an output the ReLU zeroes.
constexpr std::uint8_t kReluZeroed = 4;

// One image's pool: its co planes of ho×wo as the stacks detail::for_stacks makes, and the sizes
// of its convolution's output and of its pooled output.
struct ImagePool {
  explicit ImagePool(const ConvGeom& g) {
    s.n = 1;
    s.c = g.co;
    s.h = g.ho;
    s.w = g.wo;
    s.kh = s.kw = s.sh = s.sw = 2;
    s.ho = g.ho / 2;
    s.wo = g.wo / 2;
    conv_image = std::size_t(g.co) * std::size_t(g.l);
    pooled_image = std::size_t(g.co) * s.out_plane();
  }
  PoolGeometry s;
  std::size_t conv_image = 0, pooled_image = 0;
};

// The forward's image-by-image output: the convolution into a per-thread buffer, pooled from there
// into y and the codes (null when no graph is recorded), then with `relu` y = max(y, 0).
struct PoolingOutput final : detail::ConvOutputSink<float> {
  PoolingOutput(const ConvGeom& g, float* y, std::uint8_t* code, bool relu)
      : pool(g), y(y), code(code), relu(relu) {}
  float* output(int) override {
    return detail::conv_scratch<float, detail::kOpScratchSlot>(pool.conv_image);
  }
  void finish_output(int n, float* conv) override {
    const PoolGeometry& s = pool.s;
    float* yn = y + std::size_t(n) * pool.pooled_image;
    std::uint8_t* cn = code != nullptr ? code + std::size_t(n) * pool.pooled_image : nullptr;
    detail::for_stacks(s, 0, s.c, [&](std::ptrdiff_t q, std::ptrdiff_t count) {
      const std::size_t plane = std::size_t(q);
      detail::max_pool_2x2_plane(detail::stacked(s, count), conv + plane * s.in_plane(),
                                 yn + plane * s.out_plane(),
                                 cn != nullptr ? cn + plane * s.out_plane() : nullptr);
    });
    if (relu) detail::relu_marking(yn, cn, pool.pooled_image, kReluZeroed);
  }
  ImagePool pool;
  float* y;
  std::uint8_t* code;
  bool relu;
};

// The backward's image-by-image dY of the convolution: each pooled gradient routed to its window's
// code, zeros elsewhere and for the codes the ReLU marked (every element written), in a per-thread
// buffer.
struct UnpoolingGrad final : detail::ConvGradSource<float> {
  UnpoolingGrad(const ConvGeom& g, const float* gy, const std::uint8_t* code)
      : pool(g), gy(gy), code(code) {}
  const float* grad_output(int n) override {
    const PoolGeometry& s = pool.s;
    float* d = detail::conv_scratch<float, detail::kOpScratchSlot + 1>(pool.conv_image);
    const float* gn = gy + std::size_t(n) * pool.pooled_image;
    const std::uint8_t* cn = code + std::size_t(n) * pool.pooled_image;
    detail::for_stacks(s, 0, s.c, [&](std::ptrdiff_t q, std::ptrdiff_t count) {
      const std::size_t plane = std::size_t(q);
      detail::max_pool_2x2_plane_backward(detail::stacked(s, count), gn + plane * s.out_plane(),
                                          cn + plane * s.out_plane(), d + plane * s.in_plane());
    });
    return d;
  }
  ImagePool pool;
  const float* gy;
  const std::uint8_t* code;
};

// Its marks: per output, its window position 0..3 (+ kReluZeroed).
using Conv2DMaxPool2DNode = detail::FusedConvNode<float, UnpoolingGrad>;
#endif

}  // namespace

template <class T>
Variable<T> conv2d_max_pool2d(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                              const Conv2DParams& conv, const Pool2DParams& pool, bool relu) {
  // Both checked first, so that errors name this op and the shapes it was given.
  const ConvGeom g = detail::conv_geometry("conv2d_max_pool2d", x, w, b, conv);
  const PoolGeometry s = detail::pool_geometry(
      "conv2d_max_pool2d",
      {std::size_t(g.n), std::size_t(g.co), std::size_t(g.ho), std::size_t(g.wo)}, pool);
#ifdef XGRAD_POOL_2X2
  if constexpr (std::is_same_v<T, float>) {
    if (detail::is_2x2_s2(s)) {
      Tensor<float> y = empty_tensor<float>(s.out_shape());
      const bool rec = should_record<float>({&x, &w, &b});
      std::vector<std::uint8_t> code(rec ? s.planes() * s.out_plane() : 0);
      PoolingOutput pooling(g, y.data(), rec ? code.data() : nullptr, relu);
      detail::conv_forward<float>(x.value().data(), w.value().data(),
                                  b.defined() ? b.value().data() : nullptr, nullptr, g, &pooling);
      return record<Conv2DMaxPool2DNode>(std::move(y), {x, w, b}, "conv2d_max_pool2d", g,
                                         b.defined(), std::move(code));
    }
  }
#endif
  const Variable<T> pooled = max_pool2d(conv2d(x, w, b, conv), pool);
  return relu ? xgrad::relu(pooled) : pooled;
}

OpInfo conv2d_max_pool2d_info() {
  const auto fused = [](Conv2DParams c, Pool2DParams p, bool relu = false) {
    return
        [c, p, relu](const auto& in) { return conv2d_max_pool2d(in[0], in[1], in[2], c, p, relu); };
  };
  const auto io = detail::conv_sample_inputs;
  Conv2DParams pad2;
  pad2.padding = {2, 2};
  Conv2DParams s2;
  s2.stride = {2, 2};
  Pool2DParams three;
  three.kernel = {3, 3};
  std::vector<SampleInput> x_fixed = io({2, 2, 6, 6}, {3, 2, 3, 3});
  x_fixed[0].requires_grad = false;
  return {
      "conv2d_max_pool2d",
      {// LeNet's conv1 + pool1 and conv2 + pool2, smaller.
       make_case("one_channel_5x5_pad2", io({2, 1, 8, 8}, {3, 1, 5, 5}), fused(pad2, {})),
       make_case("six_channels_5x5", io({2, 6, 9, 9}, {4, 6, 5, 5}), fused({}, {})),
       make_case("one_channel_relu", io({2, 1, 8, 8}, {3, 1, 5, 5}), fused(pad2, {}, true)),
       make_case("six_channels_relu", io({2, 6, 9, 9}, {4, 6, 5, 5}), fused({}, {}, true)),
       make_case("odd_output_7x5", io({2, 2, 9, 7}, {3, 2, 3, 3}), fused({}, {})),
       make_case("conv_stride2", io({1, 2, 9, 9}, {2, 2, 3, 3}), fused(s2, {})),
       make_case("no_bias", {{"x", {2, 2, 6, 6}}, {"w", {3, 2, 3, 3}}},
                 [](const auto& in) { return conv2d_max_pool2d(in[0], in[1], {}, {}, {}); }),
       make_case("input_without_grad", x_fixed, fused({}, {})),
       make_case("pool_3x3_stride2", io({1, 2, 9, 9}, {2, 2, 3, 3}), fused({}, three)),
       make_case("pool_3x3_stride2_relu", io({1, 2, 9, 9}, {2, 2, 3, 3}), fused({}, three, true))}};
}

#define X(T)                                                                         \
  template Variable<T> conv2d_max_pool2d<T>(const Variable<T>&, const Variable<T>&,  \
                                            const Variable<T>&, const Conv2DParams&, \
                                            const Pool2DParams&, bool);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
