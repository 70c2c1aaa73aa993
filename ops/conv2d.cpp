// conv2d: NCHW convolution with per-axis stride, padding and dilation, and groups.
// Per image and group: im2col of a band of output rows into a per-thread buffer that stays in L2,
// then one GEMM on raw pointers; few-channel float layers use direct kernels instead. OpenMP runs
// over the images; OpenBLAS stays single-threaded. The drivers are in src/conv_driver.cpp, the
// kernels in src/conv_kernels.hpp (src/conv_im2col.cpp, src/conv_direct.cpp); this file owns
// validation, the node and the registry entry.
#include <array>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../src/conv_op.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

using detail::ConvGeom;

template <class T>
struct Conv2DNode final : Node<T> {
  Conv2DNode(ConvGeom geom, bool has_bias) : geom_(geom), has_bias_(has_bias) {}
  const char* name() const override { return "conv2d"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& gy) override {
    return detail::conv_gradients<T>(*this, geom_, has_bias_, gy.data());
  }
  ConvGeom geom_;
  bool has_bias_;
};

std::string conv_shapes(const Shape& x, const Shape& w) {
  return "(input " + shape_str(x) + ", weight " + shape_str(w) + ")";
}

std::string pair_str(const std::array<int, 2>& v) {
  return "{" + std::to_string(v[0]) + "," + std::to_string(v[1]) + "}";
}
}  // namespace

namespace detail {

ConvGeom conv_geometry(const char* op, const Shape& xs, const Shape& ws, const Shape* bs,
                       const Conv2DParams& p, std::size_t element_size) {
  const std::string name = op;
  if (xs.size() != 4) throw Error(name + ": input must be 4-D [N,C,H,W] " + conv_shapes(xs, ws));
  if (ws.size() != 4)
    throw Error(name + ": weight must be 4-D [C_out,C_in/groups,kH,kW] " + conv_shapes(xs, ws));
  for (int a = 0; a < 2; ++a) {
    if (p.stride[a] < 1)
      throw Error(name + ": stride must be >= 1 but is " + pair_str(p.stride) + " " +
                  conv_shapes(xs, ws));
    if (p.padding[a] < 0)
      throw Error(name + ": padding must be >= 0 but is " + pair_str(p.padding) + " " +
                  conv_shapes(xs, ws));
    if (p.dilation[a] < 1)
      throw Error(name + ": dilation must be >= 1 but is " + pair_str(p.dilation) + " " +
                  conv_shapes(xs, ws));
  }
  if (ws[0] == 0 || ws[1] == 0 || ws[2] == 0 || ws[3] == 0)
    throw Error(name + ": weight has a zero dimension " + conv_shapes(xs, ws));
  if (p.groups < 1)
    throw Error(name + ": groups must be >= 1 but is " + std::to_string(p.groups) + " " +
                conv_shapes(xs, ws));
  const std::size_t groups = std::size_t(p.groups);
  if (xs[1] % groups != 0 || ws[0] % groups != 0)
    throw Error(name + ": groups = " + std::to_string(p.groups) +
                " must divide both input channels " + std::to_string(xs[1]) +
                " and output channels " + std::to_string(ws[0]) + " " + conv_shapes(xs, ws));
  if (xs[1] != ws[1] * groups)
    throw Error(name + ": input has " + std::to_string(xs[1]) + " channels but weight expects " +
                std::to_string(ws[1] * groups) + " " + conv_shapes(xs, ws) +
                (groups > 1 ? " with groups = " + std::to_string(p.groups) : std::string()));
  if (bs != nullptr && (bs->size() != 1 || (*bs)[0] != ws[0]))
    throw Error(name + ": bias must be 1-D of C_out = " + std::to_string(ws[0]) +
                " but has shape " + shape_str(*bs) + " " + conv_shapes(xs, ws));
  ConvGeom g{};
  g.n = int(xs[0]);
  g.c = int(xs[1]);
  g.h = int(xs[2]);
  g.w = int(xs[3]);
  g.co = int(ws[0]);
  g.kh = int(ws[2]);
  g.kw = int(ws[3]);
  g.sh = p.stride[0];
  g.sw = p.stride[1];
  g.ph = p.padding[0];
  g.pw = p.padding[1];
  g.dh = p.dilation[0];
  g.dw = p.dilation[1];
  g.groups = p.groups;
  const long span_h = long(g.dh) * (g.kh - 1) + 1, span_w = long(g.dw) * (g.kw - 1) + 1;
  const long padded_h = long(g.h) + 2L * g.ph, padded_w = long(g.w) + 2L * g.pw;
  if (span_h > padded_h || span_w > padded_w)
    throw Error(name + ": kernel (dilated " + std::to_string(span_h) + "x" +
                std::to_string(span_w) + ") is larger than the padded input " +
                std::to_string(padded_h) + "x" + std::to_string(padded_w) + " " +
                conv_shapes(xs, ws) + " padding " + pair_str(p.padding) + " dilation " +
                pair_str(p.dilation));
  g.ho = int((padded_h - span_h) / g.sh + 1);
  g.wo = int((padded_w - span_w) / g.sw + 1);
  g.hp = int(padded_h);
  g.wp = int(padded_w);
  g.padded = g.ph > 0 || g.pw > 0;
  g.cg = g.c / g.groups;
  g.cog = g.co / g.groups;
  g.k = g.cg * g.kh * g.kw;
  g.l = Index(g.ho) * g.wo;
  g.pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  g.band_rows = conv_band_rows(g, element_size);
  return g;
}

}  // namespace detail

template <class T>
Variable<T> conv2d(const Variable<T>& x, const Variable<T>& w, const Variable<T>& b,
                   const Conv2DParams& params) {
  const ConvGeom g = detail::conv_geometry("conv2d", x, w, b, params);
  Tensor<T> y =
      empty_tensor<T>({std::size_t(g.n), std::size_t(g.co), std::size_t(g.ho), std::size_t(g.wo)});
  detail::conv_forward(x.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr,
                       y.data(), g);
  return record<Conv2DNode<T>>(std::move(y), {x, w, b}, g, b.defined());
}

OpInfo conv2d_info() {
  const auto conv = [](Conv2DParams p) {
    return [p](const auto& in) { return conv2d(in[0], in[1], in[2], p); };
  };
  const auto conv_nb = [](Conv2DParams p) {
    return [p](const auto& in) { return conv2d(in[0], in[1], {}, p); };
  };
  const auto io = detail::conv_sample_inputs;
  Conv2DParams s2;
  s2.stride = {2, 2};
  Conv2DParams s3p1;
  s3p1.stride = {3, 3};
  s3p1.padding = {1, 1};
  Conv2DParams pad12;
  pad12.padding = {1, 2};
  Conv2DParams dil2;
  dil2.dilation = {2, 2};
  dil2.padding = {1, 1};
  Conv2DParams dil_mixed;
  dil_mixed.dilation = {2, 1};
  dil_mixed.stride = {1, 2};
  Conv2DParams g2;
  g2.groups = 2;
  Conv2DParams dw3;
  dw3.groups = 3;
  dw3.padding = {1, 1};
  Conv2DParams dw2_mult;
  dw2_mult.groups = 2;
  dw2_mult.stride = {2, 2};
  Conv2DParams k4s2;
  k4s2.stride = {2, 2};
  k4s2.padding = {1, 1};
  Conv2DParams nonsq;
  nonsq.stride = {1, 2};
  nonsq.padding = {1, 0};
  Conv2DParams g2_1x1;
  g2_1x1.groups = 2;
  std::vector<SampleInput> x_fixed = io({2, 2, 5, 5}, {3, 2, 3, 3});
  x_fixed[0].requires_grad = false;
  return {"conv2d",
          {make_case("basic_batch2", io({2, 2, 6, 5}, {3, 2, 3, 3}), conv({})),
           make_case("batch1", io({1, 3, 5, 5}, {2, 3, 3, 3}), conv({})),
           make_case("odd_7x5_stride2", io({2, 2, 7, 5}, {3, 2, 3, 3}), conv(s2)),
           make_case("stride3_pad1", io({1, 2, 7, 8}, {2, 2, 3, 3}), conv(s3p1)),
           make_case("padding_1_2", io({2, 1, 4, 4}, {2, 1, 3, 3}), conv(pad12)),
           make_case("dilation2", io({1, 2, 7, 7}, {2, 2, 3, 3}), conv(dil2)),
           make_case("dilation_stride_mixed", io({1, 2, 7, 6}, {2, 2, 3, 2}), conv(dil_mixed)),
           make_case("groups2", io({2, 4, 5, 5}, {4, 2, 3, 3}), conv(g2)),
           make_case("depthwise", io({2, 3, 5, 5}, {3, 1, 3, 3}), conv(dw3)),
           make_case("depthwise_multiplier", io({1, 2, 6, 6}, {4, 1, 3, 3}), conv(dw2_mult)),
           make_case("no_bias", {{"x", {2, 2, 5, 5}}, {"w", {3, 2, 3, 3}}}, conv_nb({})),
           make_case("kernel4_stride2", io({1, 2, 6, 6}, {2, 2, 4, 4}), conv(k4s2)),
           make_case("nonsquare_kernel", io({2, 2, 5, 6}, {2, 2, 2, 3}), conv(nonsq)),
           make_case("pointwise_1x1", io({2, 3, 4, 4}, {2, 3, 1, 1}), conv({})),
           make_case("pointwise_groups2", io({1, 4, 3, 3}, {4, 2, 1, 1}), conv(g2_1x1)),
           make_case("input_without_grad", x_fixed, conv({}))}};
}

#define X(T)                                                                                 \
  template Variable<T> conv2d<T>(const Variable<T>&, const Variable<T>&, const Variable<T>&, \
                                 const Conv2DParams&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
