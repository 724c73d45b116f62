#pragma once
// Top-k eigenpairs by Lanczos with full reorthogonalisation (SPEC 2; 003 uses the top-k
// eigenbasis of H). After n steps, the Ritz pairs (theta_i, V_n s_i) of T_n = V_n^T A V_n have
// residuals ||A y_i - theta_i y_i|| = beta_n |e_n^T s_i| (Paige 1972), which cost nothing to
// evaluate and bound |theta_i - lambda| <= residual for some eigenvalue lambda of A (and by
// residual^2 / gap once the pairs separate). The run stops when the k wanted residuals are all
// <= tol * max|theta|, or at max_iterations. Memory: d x (iterations + 1) scalars for the basis.
#include <algorithm>
#include <cassert>
#include <cstdint>
#include <vector>

#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/detail/lanczos_block.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// Which end of the spectrum (algebraic order) the eigensolvers return.
enum class SpectrumEnd {
  Largest,   ///< the k largest, in descending order
  Smallest,  ///< the k smallest, in ascending order
  Both       ///< the ceil(k/2) largest then the floor(k/2) smallest, all in descending order
};

/// Options of lanczos.
struct LanczosOptions {
  Index k = 1;
  SpectrumEnd which = SpectrumEnd::Largest;
  Index max_iterations = 0;  ///< products at most (capped at d); 0: min(d, max(100, 10 k))
  double tol = 1e-6;         ///< Ritz residual relative to max|theta| (float: >= ~1e-5)
  std::uint64_t seed = 0;    ///< of the Gaussian start vector (and of restarts after a breakdown)
  bool compute_eigenvectors = true;
};

/// k eigenpairs of a symmetric operator with their Ritz residual norms.
template <class T>
struct LanczosResult {
  Vector<T> eigenvalues;     ///< k values, ordered as SpectrumEnd says
  Matrix<T> eigenvectors;    ///< d x k, orthonormal columns (empty unless compute_eigenvectors)
  Vector<T> residual_norms;  ///< ||A y_i - theta_i y_i|| per pair
  Index iterations = 0;      ///< Lanczos steps (the Krylov dimension)
  Index matvecs = 0;
  SolverStatus status = SolverStatus::MaxIterations;
  bool converged() const { return status == SolverStatus::Converged; }
};

namespace detail {

/// Positions, among n ascending Ritz values, of the k wanted ones in output order.
inline std::vector<Index> wanted_ritz(Index n, Index k, SpectrumEnd which) {
  std::vector<Index> idx;
  const Index top = which == SpectrumEnd::Largest ? k : which == SpectrumEnd::Smallest ? 0 : (k + 1) / 2;
  for (Index i = 0; i < top; ++i) idx.push_back(n - 1 - i);
  if (which == SpectrumEnd::Smallest)
    for (Index i = 0; i < k; ++i) idx.push_back(i);
  else
    for (Index i = k - top - 1; i >= 0; --i) idx.push_back(i);
  return idx;
}

/// The wanted Ritz values, their residual norms and their coefficients in the Lanczos basis.
template <class T>
struct RitzPairs {
  Vector<T> values, residuals;
  Matrix<T> coefficients;
  T scale = 0;  // max |theta|, the scale of the relative tolerance
};

template <class T>
RitzPairs<T> ritz_pairs(const LanczosBlock<T>& lb, Index k, SpectrumEnd which) {
  const auto es = lb.eigen(0);
  const Index n = lb.length(0);
  const std::vector<Index> idx = wanted_ritz(n, k, which);
  RitzPairs<T> r{Vector<T>(k), Vector<T>(k), Matrix<T>(n, k)};
  for (Index i = 0; i < k; ++i) {
    r.values(i) = es.eigenvalues()(idx[i]);
    r.residuals(i) = std::abs(lb.last_beta(0) * es.eigenvectors()(n - 1, idx[i]));
    r.coefficients.col(i) = es.eigenvectors().col(idx[i]);
  }
  r.scale = std::max(std::abs(es.eigenvalues()(0)), std::abs(es.eigenvalues()(n - 1)));
  return r;
}

/// Ritz pairs are checked every step up to 100 steps, then every n/20 steps (each check costs
/// O(n^2) to O(n^3) flops, negligible next to a Hessian-vector product for n in the hundreds).
inline bool check_now(Index n, Index k, bool finished) {
  return n >= k && (finished || n <= 100 || n % (n / 20) == 0);
}

inline void check_lanczos_options(const LanczosOptions& o, Index d, const char* fn) {
  check_at_least(o.k, 1, fn, "k");
  CURVATURE_CHECK_VALUE(o.k <= d, fn, ": k = ", o.k, " exceeds the operator's dimension d = ", d);
  check_at_least(o.max_iterations, 0, fn, "max_iterations");
  CURVATURE_CHECK_VALUE(o.max_iterations == 0 || o.max_iterations >= o.k, fn, ": max_iterations = ",
                        o.max_iterations, " is less than k = ", o.k);
  check_non_negative(o.tol, fn, "tol");
}

}  // namespace detail

/// The k largest (or smallest, or both ends) eigenpairs of the symmetric operator `op`. One
/// product per step; non-convergence is reported in `status`. Throws ValueError for k < 1,
/// k > d, max_iterations < k (other than 0), tol < 0.
template <LinearOperator A>
LanczosResult<typename A::Scalar> lanczos(A& op, const LanczosOptions& options = {}) {
  using T = typename A::Scalar;
  constexpr const char* fn = "lanczos";
  const Index d = detail::checked_dim(op, fn);
  detail::check_lanczos_options(options, d, fn);
  const Index k = options.k;
  const Index steps = std::min(d, options.max_iterations > 0 ? options.max_iterations : std::max<Index>(100, 10 * k));
  detail::LanczosBlock<T> lb(make_probes<T>(d, 1, Probe::Gaussian, probe_seed(options.seed, 4)), steps, true,
                             probe_seed(options.seed, 5));
  detail::RitzPairs<T> rp;
  bool met = false;
  while (!lb.finished() && !met) {
    lb.step(op, fn);
    if (!detail::check_now(lb.length(0), k, lb.finished())) continue;
    rp = detail::ritz_pairs(lb, k, options.which);
    met = (rp.residuals.array() <= static_cast<T>(options.tol) * rp.scale).all() || lb.length(0) == d;
  }
  assert(rp.values.size() == k);  // the basis reaches k vectors before the run can stop
  LanczosResult<T> r;
  r.eigenvalues = rp.values;
  r.residual_norms = rp.residuals;
  if (options.compute_eigenvectors) r.eigenvectors = lb.basis(0) * rp.coefficients;
  r.iterations = lb.length(0);
  r.matvecs = lb.matvecs();
  r.status = met ? SolverStatus::Converged : SolverStatus::MaxIterations;
  return r;
}

}  // namespace curvature
