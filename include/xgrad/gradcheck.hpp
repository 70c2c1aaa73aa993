// gradcheck(): compares an op's analytic gradient with central differences, in double.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "xgrad/variable.hpp"

namespace xgrad {

/// A function of Variables checked by gradcheck (double precision).
using GradFn = std::function<Variable<double>(const std::vector<Variable<double>>&)>;

struct GradcheckOptions {
  double eps = 1e-6;   ///< central-difference step
  double atol = 1e-5;  ///< an element passes when |analytic - numeric| <= atol + rtol*|numeric|
  double rtol = 1e-3;
  /// Inputs·outputs up to this size get the full Jacobian (one backward per output element);
  /// larger problems check the vector-Jacobian product <u, J e_j> per element plus
  /// random projections <u, J v>.
  std::size_t full_jacobian_limit = 20000;
  /// In projection mode, at most this many elements per input are checked one by one.
  std::size_t max_elements_per_input = 400;
  std::size_t projections = 8;  ///< random directions v per check in projection mode
  std::size_t worst_k = 5;      ///< how many worst elements the report keeps
  /// A point whose one-sided differences disagree by more than this (absolute, plus the
  /// same relative share of their size) is a kink or tie: reported as non-differentiable,
  /// never counted as a pass or a failure.
  double kink_tol = 1e-3;
  std::uint64_t seed = 0;  ///< for the random upstream gradient and projections
};

/// One checked element (or one projection, with an empty index).
struct ElementCheck {
  std::string input;
  std::vector<std::size_t> index;         ///< multi-index into the input (NCHW for images)
  std::vector<std::size_t> output_index;  ///< in full-Jacobian mode, the output element
  double analytic = 0, numeric = 0, abs_err = 0, rel_err = 0;
};

struct InputReport {
  std::string name;
  Shape shape;
  std::size_t checked = 0;  ///< elements (or Jacobian entries) compared
  std::size_t failed = 0;   ///< of those, outside tolerance
  std::size_t nondifferentiable = 0;
  double max_abs_err = 0, max_rel_err = 0;
  std::vector<ElementCheck> worst;  ///< the worst k by excess over tolerance, worst first
  double failed_fraction() const { return checked ? double(failed) / double(checked) : 0.0; }
};

struct GradcheckReport {
  bool passed = true;
  std::string mode;  ///< "full-jacobian" or "projection"
  std::vector<InputReport> inputs;
  std::vector<ElementCheck> projections;        ///< projection mode: <u,Jv> per direction
  std::vector<ElementCheck> nondifferentiable;  ///< kinks and ties found (first few)
  std::string error;                            ///< set when the function itself threw
  std::string str() const;
};

std::ostream& operator<<(std::ostream& os, const GradcheckReport& report);

/// Checks d fn / d inputs for every input that requires a gradient. `names` label the inputs in
/// the report (defaults: each Variable's name, else "input<i>"). The upstream gradient is
/// random, never all ones. Never throws for a wrong gradient: read `report.passed`.
GradcheckReport gradcheck(const GradFn& fn, const std::vector<Variable<double>>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace xgrad
