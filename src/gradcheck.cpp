// Central differences in double against the engine's analytic gradients.
#include "xgrad/gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <random>
#include <sstream>

#include "xgrad/graph.hpp"

namespace xgrad {

namespace {

using Inputs = std::vector<Variable<double>>;

std::vector<std::size_t> unravel(std::size_t flat, const Shape& shape) {
  std::vector<std::size_t> index(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    index[d] = flat % shape[d];
    flat /= shape[d];
  }
  return index;
}

std::string index_str(const std::vector<std::size_t>& index) {
  return shape_str(Shape(index.begin(), index.end()));
}

Tensor<double> random_normal(const Shape& shape, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Tensor<double> t = empty_tensor<double>(shape);
  for (double& x : t) x = normal(rng);
  return t;
}

double dot(const Tensor<double>& a, const Tensor<double>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// Evaluates fn without recording.
Tensor<double> evaluate(const GradFn& fn, const Inputs& xs) {
  NoGradGuard guard;
  return fn(xs).value();
}

void clear_grads(Inputs& xs) {
  for (Variable<double>& x : xs) x.impl()->has_grad = false;
}

// The analytic gradient of every input for upstream `seed` through a recorded output.
std::vector<Tensor<double>> analytic_vjp(const Variable<double>& y, const Tensor<double>& seed,
                                         Inputs& xs, bool retain) {
  clear_grads(xs);
  backward(y, seed, BackwardOptions{retain});
  std::vector<Tensor<double>> grads;
  for (const Variable<double>& x : xs)
    grads.push_back(x.has_grad() ? x.grad() : filled_tensor<double>(x.shape(), 0.0));
  return grads;
}

// A one-dimensional central difference with its one-sided halves, to spot kinks.
struct Difference {
  double central, forward, backward;
};

class Comparator {
 public:
  Comparator(const GradcheckOptions& o, GradcheckReport& r) : options_(o), report_(r) {}

  bool is_kink(const Difference& d) const {
    return std::abs(d.forward - d.backward) >
           options_.kink_tol * (1.0 + std::max(std::abs(d.forward), std::abs(d.backward)));
  }

  // Records one comparison in `in`; a kink goes to the non-differentiable list instead.
  void compare(InputReport& in, ElementCheck c, const Difference& d) {
    c.numeric = d.central;
    c.abs_err = std::abs(c.analytic - c.numeric);
    const double scale = std::max(std::abs(c.analytic), std::abs(c.numeric));
    c.rel_err = scale > 0 ? c.abs_err / scale : 0.0;
    if (is_kink(d)) {
      ++in.nondifferentiable;
      if (report_.nondifferentiable.size() < options_.worst_k * 4)
        report_.nondifferentiable.push_back(std::move(c));
      return;
    }
    ++in.checked;
    in.max_abs_err = std::max(in.max_abs_err, c.abs_err);
    in.max_rel_err = std::max(in.max_rel_err, c.rel_err);
    if (excess(c) > 0) {
      ++in.failed;
      report_.passed = false;
    }
    in.worst.push_back(std::move(c));
    // Trim now and then rather than per element: a full Jacobian has many entries.
    if (in.worst.size() > 8 * options_.worst_k + 8) trim_worst(in.worst);
  }

  double excess(const ElementCheck& c) const {
    return c.abs_err - (options_.atol + options_.rtol * std::abs(c.numeric));
  }

  // Keeps the worst_k checks, worst (largest excess over tolerance) first.
  void trim_worst(std::vector<ElementCheck>& v) const {
    std::stable_sort(v.begin(), v.end(), [this](const ElementCheck& a, const ElementCheck& b) {
      return excess(a) > excess(b);
    });
    if (v.size() > options_.worst_k) v.resize(options_.worst_k);
  }

 private:
  const GradcheckOptions& options_;
  GradcheckReport& report_;
};

// Perturbs element j of input i by ±eps and returns the three evaluations' difference for `f`.
template <class F>
Difference differentiate(Inputs& xs, std::size_t i, std::size_t j, double eps, double f0, F f) {
  double* p = xs[i].mutable_value().data() + j;
  const double saved = *p;
  *p = saved + eps;
  const double plus = f();
  *p = saved - eps;
  const double minus = f();
  *p = saved;
  return {(plus - minus) / (2 * eps), (plus - f0) / eps, (f0 - minus) / eps};
}

void check_full_jacobian(const GradFn& fn, Inputs& xs, const std::vector<std::string>& names,
                         const GradcheckOptions& o, Comparator& cmp, GradcheckReport& report) {
  report.mode = "full-jacobian";
  const Variable<double> y = fn(xs);
  const Shape yshape = y.shape();
  const std::size_t m = y.numel();
  // Analytic Jacobian, one row (output element) per backward through the retained graph.
  std::vector<std::vector<Tensor<double>>> rows(m);
  for (std::size_t k = 0; k < m; ++k) {
    Tensor<double> seed = filled_tensor<double>(yshape, 0.0);
    seed.data()[k] = 1.0;
    rows[k] = analytic_vjp(y, seed, xs, /*retain=*/true);
  }
  const Tensor<double> y0 = evaluate(fn, xs);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].requires_grad()) continue;
    InputReport& in = report.inputs[i];
    const Shape shape = xs[i].shape();
    for (std::size_t j = 0; j < xs[i].numel(); ++j) {
      Tensor<double> plus, minus;
      double* p = xs[i].mutable_value().data() + j;
      const double saved = *p;
      *p = saved + o.eps;
      plus = evaluate(fn, xs);
      *p = saved - o.eps;
      minus = evaluate(fn, xs);
      *p = saved;
      for (std::size_t k = 0; k < m; ++k) {
        const double a = plus.data()[k], b = minus.data()[k], c = y0.data()[k];
        const Difference d{(a - b) / (2 * o.eps), (a - c) / o.eps, (c - b) / o.eps};
        ElementCheck e;
        e.input = names[i];
        e.index = unravel(j, shape);
        e.output_index = unravel(k, yshape);
        e.analytic = rows[k][i].data()[j];
        cmp.compare(in, std::move(e), d);
      }
    }
  }
}

void check_projections(const GradFn& fn, Inputs& xs, const std::vector<std::string>& names,
                       const GradcheckOptions& o, Comparator& cmp, GradcheckReport& report,
                       std::mt19937_64& rng) {
  report.mode = "projection";
  const Variable<double> y = fn(xs);
  const Tensor<double> u = random_normal(y.shape(), rng);
  const std::vector<Tensor<double>> g = analytic_vjp(y, u, xs, /*retain=*/false);
  const auto f = [&] { return dot(u, evaluate(fn, xs)); };
  const double f0 = f();

  // <u, J e_j> for (a sample of) every element: errors keep their coordinates.
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].requires_grad()) continue;
    InputReport& in = report.inputs[i];
    std::vector<std::size_t> elements(xs[i].numel());
    std::iota(elements.begin(), elements.end(), 0);
    if (elements.size() > o.max_elements_per_input) {
      std::shuffle(elements.begin(), elements.end(), rng);
      elements.resize(o.max_elements_per_input);
      std::sort(elements.begin(), elements.end());
    }
    for (std::size_t j : elements) {
      ElementCheck e;
      e.input = names[i];
      e.index = unravel(j, xs[i].shape());
      e.analytic = g[i].data()[j];
      cmp.compare(in, std::move(e), differentiate(xs, i, j, o.eps, f0, f));
    }
  }

  // <u, J v> along random directions through all inputs at once.
  for (std::size_t p = 0; p < o.projections; ++p) {
    std::vector<Tensor<double>> v;
    double analytic = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      v.push_back(xs[i].requires_grad() ? random_normal(xs[i].shape(), rng)
                                        : filled_tensor<double>(xs[i].shape(), 0.0));
      analytic += dot(g[i], v[i]);
    }
    const auto shifted = [&](double step) {
      for (std::size_t i = 0; i < xs.size(); ++i) xs[i].mutable_value() += step * v[i];
      const double r = f();
      for (std::size_t i = 0; i < xs.size(); ++i) xs[i].mutable_value() -= step * v[i];
      return r;
    };
    const double plus = shifted(o.eps), minus = shifted(-o.eps);
    ElementCheck e;
    e.input = "<u,Jv> #" + std::to_string(p);
    e.analytic = analytic;
    e.numeric = (plus - minus) / (2 * o.eps);
    e.abs_err = std::abs(e.analytic - e.numeric);
    const double scale = std::max(std::abs(e.analytic), std::abs(e.numeric));
    e.rel_err = scale > 0 ? e.abs_err / scale : 0.0;
    const Difference d{e.numeric, (plus - f0) / o.eps, (f0 - minus) / o.eps};
    if (!cmp.is_kink(d) && cmp.excess(e) > 0) report.passed = false;
    report.projections.push_back(std::move(e));
  }
}

}  // namespace

GradcheckReport gradcheck(const GradFn& fn, const std::vector<Variable<double>>& inputs,
                          const GradcheckOptions& options) {
  GradcheckReport report;
  // Work on copies: the caller's values and gradients stay untouched.
  Inputs xs;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::string name =
        inputs[i].name().empty() ? "input" + std::to_string(i) : inputs[i].name();
    names.push_back(name);
    xs.emplace_back(inputs[i].value(), inputs[i].requires_grad(), name);
    InputReport in;
    in.name = name;
    in.shape = inputs[i].shape();
    report.inputs.push_back(std::move(in));
  }
  Comparator cmp(options, report);
  std::mt19937_64 rng(options.seed);
  try {
    std::size_t n = 0;
    for (const Variable<double>& x : xs)
      if (x.requires_grad()) n += x.numel();
    if (n == 0) throw Error("gradcheck: no input requires a gradient");
    const std::size_t m = evaluate(fn, xs).size();
    if (n * m <= options.full_jacobian_limit)
      check_full_jacobian(fn, xs, names, options, cmp, report);
    else
      check_projections(fn, xs, names, options, cmp, report, rng);
  } catch (const std::exception& e) {
    report.passed = false;
    report.error = e.what();
  }
  for (InputReport& in : report.inputs) cmp.trim_worst(in.worst);
  return report;
}

std::string GradcheckReport::str() const {
  std::ostringstream os;
  os << *this;
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const GradcheckReport& r) {
  os << "gradcheck " << (r.passed ? "PASSED" : "FAILED") << " (" << r.mode << ")\n";
  if (!r.error.empty()) os << "  error: " << r.error << "\n";
  const auto element = [&os](const ElementCheck& e) {
    os << "      " << e.input << (e.index.empty() ? "" : index_str(e.index));
    if (!e.output_index.empty()) os << " -> output" << index_str(e.output_index);
    os << std::setprecision(6) << "  analytic=" << e.analytic << " numeric=" << e.numeric
       << " abs_err=" << std::setprecision(3) << e.abs_err << " rel_err=" << e.rel_err << "\n";
  };
  for (const InputReport& in : r.inputs) {
    os << "  input '" << in.name << "' " << shape_str(in.shape) << ": ";
    if (in.checked == 0 && in.nondifferentiable == 0) {
      os << "not checked\n";
      continue;
    }
    os << in.failed << " of " << in.checked << " failed (" << std::setprecision(3)
       << 100.0 * in.failed_fraction() << "%), max abs err " << in.max_abs_err << ", max rel err "
       << in.max_rel_err;
    if (in.nondifferentiable) os << ", " << in.nondifferentiable << " non-differentiable";
    os << "\n";
    if (in.failed) {
      os << "    worst:\n";
      for (const ElementCheck& e : in.worst) element(e);
    }
  }
  if (!r.projections.empty()) {
    os << "  projections <u, J v>:\n";
    for (const ElementCheck& e : r.projections) element(e);
  }
  if (!r.nondifferentiable.empty()) {
    os << "  non-differentiable points (one-sided differences disagree; not counted):\n";
    for (const ElementCheck& e : r.nondifferentiable) element(e);
  }
  return os;
}

}  // namespace xgrad
