// matmul: y = a·b for 2-D a [M,K] and b [K,N], through BLAS.
#include "xgrad/blas.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"

namespace xgrad {

namespace {

template <class T>
struct MatmulNode final : Node<T> {
  const char* name() const override { return "matmul"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& a = this->input_value(0);
    const Tensor<T>& b = this->input_value(1);
    const int m = int(a.shape(0)), k = int(a.shape(1)), n = int(b.shape(1));
    std::vector<Tensor<T>> grads(2, no_grad<T>());
    if (this->needs_input_grad(0)) {  // da = g·bᵀ
      grads[0] = empty_tensor<T>({a.shape(0), a.shape(1)});
      blas::gemm(false, true, m, k, n, T(1), g.data(), n, b.data(), n, T(0), grads[0].data(), k);
    }
    if (this->needs_input_grad(1)) {  // db = aᵀ·g
      grads[1] = empty_tensor<T>({b.shape(0), b.shape(1)});
      blas::gemm(true, false, k, n, m, T(1), a.data(), k, g.data(), n, T(0), grads[1].data(), n);
    }
    return grads;
  }
};

}  // namespace

template <class T>
Variable<T> matmul(const Variable<T>& a, const Variable<T>& b) {
  check_rank("matmul", "a", a.shape(), 2);
  check_rank("matmul", "b", b.shape(), 2);
  const Tensor<T>& av = a.value();
  const Tensor<T>& bv = b.value();
  if (av.shape(1) != bv.shape(0))
    throw Error("matmul: inner dimensions differ (a " + shape_str(av) + ", b " + shape_str(bv) +
                ")");
  const int m = int(av.shape(0)), k = int(av.shape(1)), n = int(bv.shape(1));
  Tensor<T> y = empty_tensor<T>({av.shape(0), bv.shape(1)});
  blas::gemm(false, false, m, n, k, T(1), av.data(), k, bv.data(), n, T(0), y.data(), n);
  return record<MatmulNode<T>>(std::move(y), {a, b});
}

OpInfo matmul_info() {
  const auto fn = [](const auto& in) { return matmul(in[0], in[1]); };
  return {"matmul",
          {make_case("square", {{"a", {4, 4}}, {"b", {4, 4}}}, fn),
           make_case("rect", {{"a", {3, 5}}, {"b", {5, 2}}}, fn),
           make_case("vector", {{"a", {1, 7}}, {"b", {7, 1}}}, fn)}};
}

#define X(T) template Variable<T> matmul<T>(const Variable<T>&, const Variable<T>&);
XGRAD_FOR_FLOAT_AND_DOUBLE(X)
#undef X

}  // namespace xgrad
