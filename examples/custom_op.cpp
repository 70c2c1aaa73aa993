// A user-defined op in one file: Swish, y = x·σ(x), with its own backward, checked by gradcheck.
// Then the same op with a deliberately wrong backward, which gradcheck catches and reports.
#include <cmath>
#include <iostream>

#include <xgrad/xgrad.hpp>

using namespace xgrad;

// dy/dx = σ(x) + x·σ(x)·(1 - σ(x)). Set `wrong` to drop the second term.
template <class T>
struct SwishNode final : Node<T> {
  explicit SwishNode(bool wrong) : wrong_(wrong) {}
  const char* name() const override { return "swish"; }
  std::vector<Tensor<T>> backward(const Tensor<T>& g) override {
    const Tensor<T>& x = this->input_value(0);
    Tensor<T> dx = empty_tensor<T>(shape_of(x));
    for (std::size_t i = 0; i < x.size(); ++i) {
      const T xi = x.data()[i];
      const T s = T(1) / (T(1) + std::exp(-xi));
      const T local = wrong_ ? s : s + xi * s * (T(1) - s);
      dx.data()[i] = g.data()[i] * local;
    }
    return gradients(std::move(dx));
  }
  bool wrong_;
};

template <class T>
Variable<T> swish(const Variable<T>& x, bool wrong_backward = false) {
  Tensor<T> y = empty_tensor<T>(x.shape());
  for (std::size_t i = 0; i < y.size(); ++i) {
    const T xi = x.value().data()[i];
    y.data()[i] = xi / (T(1) + std::exp(-xi));
  }
  return record<SwishNode<T>>(std::move(y), {x}, wrong_backward);
}

int main() {
  std::mt19937_64 rng(0);
  const Variable<double> x(uniform_init(-3, 3)({2, 5}, rng), true, "x");

  // The check is the same function the built-in ops go through.
  const GradcheckReport good =
      gradcheck([](const std::vector<Variable<double>>& in) { return swish(in[0]); }, {x});
  std::cout << "swish with the right backward:\n" << good << "\n";

  const GradcheckReport bad =
      gradcheck([](const std::vector<Variable<double>>& in) { return swish(in[0], true); }, {x});
  std::cout << "swish with a deliberately wrong backward:\n" << bad << "\n";

  // The op trains in float like any other.
  Variable<float> xf(xt::cast<float>(x.value()), true, "xf");
  sum(swish(xf)).backward();
  std::cout << "float gradient of sum(swish(x)) has shape " << shape_str(xf.grad()) << "\n";

  const bool ok = good.passed && !bad.passed;
  std::cout << (ok ? "custom_op: OK (gradcheck passed the right backward and caught the wrong one)"
                   : "custom_op: UNEXPECTED gradcheck result")
            << "\n";
  return ok ? 0 : 1;
}
