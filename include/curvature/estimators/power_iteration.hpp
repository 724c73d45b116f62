#pragma once
// Power iteration for the dominant eigenpair (SPEC 2: lambda_max; PyHessian's top eigenvalue).
// It converges to the eigenvalue of largest MAGNITUDE, returned with its sign: for a Hessian at a
// minimum that is lambda_max; near a saddle with a more negative eigenvalue it is that one (use
// lanczos with SpectrumEnd::Largest for the largest algebraic eigenvalue). The rate is
// |lambda_2 / lambda_1| per product; with lambda_1 = -lambda_2 it does not converge (reported).
// Stop test (Bauer-Fike for symmetric A): ||A v - theta v|| <= tol |theta|, theta = v^T A v, which
// bounds the distance from theta to an eigenvalue by tol |theta| and costs no extra product.
#include <cstdint>

#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// Options of power_iteration.
struct PowerIterationOptions {
  double tol = 1e-6;            ///< relative residual ||A v - theta v|| / |theta|
  Index max_iterations = 1000;  ///< products at most
  std::uint64_t seed = 0;       ///< of the Gaussian start vector
};

/// The dominant eigenpair estimate: theta = v^T A v for the last unit vector v.
template <class T>
struct PowerIterationResult {
  T eigenvalue = 0;
  Vector<T> eigenvector;  ///< unit norm
  T residual_norm = 0;    ///< ||A v - theta v||
  Index iterations = 0;
  Index matvecs = 0;
  SolverStatus status = SolverStatus::MaxIterations;
  bool converged() const { return status == SolverStatus::Converged; }
};

/// Dominant (largest-magnitude, signed) eigenpair of the symmetric operator `op`, one product per
/// iteration. Non-convergence is reported in `status`. Throws ValueError for tol < 0,
/// max_iterations < 1 or dim() < 1.
template <LinearOperator A>
PowerIterationResult<typename A::Scalar> power_iteration(A& op, const PowerIterationOptions& options = {}) {
  using T = typename A::Scalar;
  constexpr const char* fn = "power_iteration";
  detail::check_non_negative(options.tol, fn, "tol");
  detail::check_at_least(options.max_iterations, 1, fn, "max_iterations");
  const Index d = detail::checked_dim(op, fn);
  Matrix<T> v = make_probes<T>(d, 1, Probe::Gaussian, probe_seed(options.seed, 3)), w;
  v /= v.norm();
  PowerIterationResult<T> r;
  for (Index it = 1; it <= options.max_iterations; ++it) {
    detail::apply_checked(op, v, w, fn);
    r.iterations = r.matvecs = it;
    r.eigenvalue = v.col(0).dot(w.col(0));
    r.residual_norm = (w - r.eigenvalue * v).norm();
    if (r.residual_norm <= static_cast<T>(options.tol) * std::abs(r.eigenvalue)) {
      r.status = SolverStatus::Converged;
      break;
    }
    if (it == options.max_iterations) break;  // keep v: the residual above belongs to it
    const T norm = w.norm();
    if (!(norm > 0)) break;  // A v = 0 with tol = 0 and theta = 0 is caught above; NaN lands here
    v = w / norm;
  }
  r.eigenvector = v.col(0);
  return r;
}

}  // namespace curvature
