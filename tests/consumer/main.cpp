// Uses the installed library: y = Σ relu(a·b), backward, and a gradcheck.
#include <iostream>

#include <xgrad/xgrad.hpp>

int main() {
  using namespace xgrad;
  Variable<double> a(Tensor<double>{{1.0, -2.0}, {3.0, 4.0}}, true, "a");
  Variable<double> b(Tensor<double>{{0.5, 1.0}, {-1.0, 2.0}}, true, "b");
  Variable<double> y = sum(relu(matmul(a, b)));
  y.backward();
  const GradcheckReport report = gradcheck(
      [](const std::vector<Variable<double>>& in) { return sum(relu(matmul(in[0], in[1]))); },
      {a, b});
  std::cout << "y=" << y.item() << "\n" << report;
  return report.passed && a.has_grad() ? 0 : 1;
}
