#pragma once
// What the estimators return (SPEC 2): a value with its standard error and its cost in operator
// applications. Numerical outcomes (an unmet tolerance, a breakdown) are data here, never
// exceptions (STYLE.md, "Errors").
#include <cmath>
#include <limits>

#include "curvature/core/types.hpp"

namespace curvature {

/// A scalar estimate. `std_error` is the standard error of `value` (the sample standard deviation
/// of the per-probe values over sqrt(probes)); +inf when it cannot be estimated (one probe).
/// `converged` says whether the requested accuracy was reached (true when none was requested).
template <class T>
struct Estimate {
  T value = 0;
  T std_error = std::numeric_limits<T>::infinity();
  Index probes = 0;   ///< random probes (or SLQ starts) that entered `value`
  Index matvecs = 0;  ///< columns applied by the operator, probes discarded by a stop included
  bool converged = false;

  /// std_error / |value| (+inf for a zero value).
  T relative_error() const {
    return value == T(0) ? std::numeric_limits<T>::infinity() : std_error / std::abs(value);
  }
};

/// An estimate of a vector (the diagonal of an operator) with a standard error per coordinate.
template <class T>
struct DiagonalEstimate {
  Vector<T> value;
  Vector<T> std_error;
  Index probes = 0;
  Index matvecs = 0;
  bool converged = false;  ///< ||std_error|| <= rel_tol ||value|| was reached (true if none requested)
};

/// Outcome of an iterative solver or eigensolver.
enum class SolverStatus {
  Converged,           ///< the requested tolerance was met
  MaxIterations,       ///< the iteration limit was reached first
  NotPositiveDefinite  ///< CG met a direction p with p^T (A + lambda I) p <= 0
};

/// The status's name, for messages and JSON.
inline const char* to_string(SolverStatus s) {
  switch (s) {
    case SolverStatus::Converged: return "converged";
    case SolverStatus::MaxIterations: return "max_iterations";
    case SolverStatus::NotPositiveDefinite: return "not_positive_definite";
  }
  return "unknown";
}

}  // namespace curvature
