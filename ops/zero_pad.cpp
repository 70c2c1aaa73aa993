// zero_pad: zeros around the spatial axes of an NCHW tensor, by raw row copies.
#include <algorithm>
#include <cstring>
#include <string>

#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

std::string pads_str(const Pads& p) {
  return "{top " + std::to_string(p.top) + ", bottom " + std::to_string(p.bottom) + ", left " +
         std::to_string(p.left) + ", right " + std::to_string(p.right) + "}";
}

template <class T>
struct ZeroPadNode final : Node<T> {
  explicit ZeroPadNode(Pads pads) : pads_(pads) {}
  const char* name() const override { return "zero_pad"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Shape xs = shape_of(this->input_value(0));
    Tensor<T> dx = empty_tensor<T>(xs);
    const std::size_t planes = xs[0] * xs[1], h = xs[2], w = xs[3];
    const std::size_t wp = w + std::size_t(pads_.left + pads_.right);
    const std::size_t hp = h + std::size_t(pads_.top + pads_.bottom);
    const T* gp = g.data();
    T* dp = dx.data();
    for (std::size_t pl = 0; pl < planes; ++pl)
      for (std::size_t i = 0; i < h; ++i)
        std::memcpy(dp + (pl * h + i) * w,
                    gp + (pl * hp + i + std::size_t(pads_.top)) * wp + std::size_t(pads_.left),
                    sizeof(T) * w);
    return gradients(std::move(dx));
  }
  Pads pads_;
};

}  // namespace

template <class T>
Variable<T> zero_pad(const Variable<T>& x, const Pads& pads) {
  const Shape xs = x.shape();
  if (xs.size() != 4)
    throw Error("zero_pad: input must be 4-D [N,C,H,W] but has shape " + shape_str(xs));
  if (pads.top < 0 || pads.bottom < 0 || pads.left < 0 || pads.right < 0)
    throw Error("zero_pad: pads must be >= 0 but are " + pads_str(pads) + " (input " +
                shape_str(xs) + ")");
  const std::size_t planes = xs[0] * xs[1], h = xs[2], w = xs[3];
  const std::size_t hp = h + std::size_t(pads.top + pads.bottom);
  const std::size_t wp = w + std::size_t(pads.left + pads.right);
  Tensor<T> y = empty_tensor<T>({xs[0], xs[1], hp, wp});
  const T* xp = x.value().data();
  T* yp = y.data();
  for (std::size_t pl = 0; pl < planes; ++pl) {
    T* out = yp + pl * hp * wp;
    std::fill(out, out + std::size_t(pads.top) * wp, T(0));
    for (std::size_t i = 0; i < h; ++i) {
      T* r = out + (i + std::size_t(pads.top)) * wp;
      std::fill(r, r + pads.left, T(0));
      std::memcpy(r + pads.left, xp + (pl * h + i) * w, sizeof(T) * w);
      std::fill(r + pads.left + w, r + wp, T(0));
    }
    std::fill(out + (h + std::size_t(pads.top)) * wp, out + hp * wp, T(0));
  }
  return record<ZeroPadNode<T>>(std::move(y), {x}, pads);
}

OpInfo zero_pad_info() {
  const auto pad = [](Pads p) { return [p](const auto& in) { return zero_pad(in[0], p); }; };
  return {"zero_pad",
          {make_case("uneven", {{"x", {2, 3, 4, 5}}}, pad({1, 2, 0, 3})),
           make_case("even_2", {{"x", {1, 2, 3, 3}}}, pad({2, 2, 2, 2})),
           make_case("no_pad", {{"x", {1, 1, 2, 3}}}, pad({0, 0, 0, 0}))}};
}

#define X(T) template Variable<T> zero_pad<T>(const Variable<T>&, const Pads&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
