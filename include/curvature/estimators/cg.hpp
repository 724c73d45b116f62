#pragma once
// Conjugate gradients (Hestenes and Stiefel 1952) for (A + lambda I) X = B, one recurrence per
// right-hand side run in lockstep: each iteration applies the operator once to the block of
// still-active search directions. With a diagonal preconditioner M (approximating
// diag(A) + lambda), z = M^-1 r (preconditioned CG; Saad 2003, Algorithm 9.1). Used for damped
// inverses (F + lambda I)^-1 g (SPEC 3: IGS with CG, tr((F + lambda I)^-1 H)).
#include <cmath>
#include <vector>

#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// Options of conjugate_gradient.
struct CgOptions {
  double damping = 0;           ///< lambda >= 0 in (A + lambda I)
  double tol = 1e-6;            ///< stop a column once ||r|| <= tol ||b||
  Index max_iterations = 1000;  ///< iterations (products per column) at most
};

/// Solutions, one column per right-hand side, with per-column outcomes.
template <class T>
struct CgResult {
  Matrix<T> x;
  Vector<T> relative_residuals;            ///< ||r|| / ||b|| per column (recursive residual)
  std::vector<Index> iterations;           ///< per column
  std::vector<SolverStatus> column_status; ///< per column
  Index matvecs = 0;                       ///< columns applied in total
  SolverStatus status = SolverStatus::Converged;  ///< the worst column's status
  bool converged() const { return status == SolverStatus::Converged; }
};

namespace detail {

/// The lockstep PCG state: search directions P, residuals R, r^T z per column.
template <class T>
struct CgState {
  const Vector<T>& m;  // preconditioner diagonal; empty: identity
  Matrix<T> p, r;
  Vector<T> rz, bnorm;
  std::vector<Index> active;

  void precondition(Index c, Vector<T>& z) const {
    if (m.size() > 0) z = r.col(c).cwiseQuotient(m);
    else z = r.col(c);
  }

  /// Updates column c from q = (A + lambda I) p_c; returns its status after this iteration
  /// (MaxIterations meaning "still running").
  SolverStatus update(Index c, const Eigen::Ref<const Vector<T>>& q, Matrix<T>& x, T tol, Vector<T>& z) {
    const T pq = p.col(c).dot(q);
    if (!(pq > 0)) return SolverStatus::NotPositiveDefinite;
    const T alpha = rz(c) / pq;
    x.col(c) += alpha * p.col(c);
    r.col(c) -= alpha * q;
    if (r.col(c).norm() <= tol * bnorm(c)) return SolverStatus::Converged;
    precondition(c, z);
    const T rz_new = r.col(c).dot(z);
    p.col(c) = z + (rz_new / rz(c)) * p.col(c);
    rz(c) = rz_new;
    return SolverStatus::MaxIterations;
  }
};

template <class T>
void check_cg_input(const Matrix<T>& b, Index d, const CgOptions& o, const Vector<T>& m, const char* fn) {
  CURVATURE_CHECK_SHAPE(b.rows() == d, fn, ": b has ", b.rows(), " rows, expected the operator's d = ", d);
  check_non_negative(o.damping, fn, "damping");
  check_non_negative(o.tol, fn, "tol");
  check_at_least(o.max_iterations, 1, fn, "max_iterations");
  CURVATURE_CHECK_SHAPE(m.size() == 0 || m.size() == d, fn, ": preconditioner diagonal has length ", m.size(),
                        ", expected d = ", d);
  for (Index i = 0; i < m.size(); ++i)
    CURVATURE_CHECK_VALUE(m(i) > 0 && std::isfinite(m(i)), fn, ": preconditioner diagonal entry ", i, " = ", m(i),
                          ", expected a finite value > 0");
}

/// The initial state for x = 0: r = b, p = M^-1 b; zero right-hand sides are solved already.
template <class T>
CgState<T> cg_start(const Matrix<T>& b, const Vector<T>& m) {
  CgState<T> s{m, Matrix<T>(b.rows(), b.cols()), b, Vector<T>::Zero(b.cols()), b.colwise().norm().transpose(), {}};
  Vector<T> z;
  for (Index c = 0; c < b.cols(); ++c) {
    if (s.bnorm(c) == 0) continue;  // x = 0 solves it exactly
    s.precondition(c, z);
    s.p.col(c) = z;
    s.rz(c) = s.r.col(c).dot(z);
    s.active.push_back(c);
  }
  return s;
}

template <LinearOperator A>
CgResult<typename A::Scalar> cg_solve(A& op, const Matrix<typename A::Scalar>& b, const CgOptions& o,
                                      const Vector<typename A::Scalar>& m) {
  using T = typename A::Scalar;
  constexpr const char* fn = "conjugate_gradient";
  const Index d = checked_dim(op, fn), nb = b.cols();
  check_cg_input(b, d, o, m, fn);
  CgResult<T> res{Matrix<T>::Zero(d, nb), Vector<T>::Zero(nb), std::vector<Index>(nb, 0),
                  std::vector<SolverStatus>(nb, SolverStatus::Converged)};
  CgState<T> s = cg_start(b, m);
  Vector<T> z;
  Matrix<T> pa, q;
  for (Index it = 1; it <= o.max_iterations && !s.active.empty(); ++it) {
    pa.resize(d, static_cast<Index>(s.active.size()));
    for (Index i = 0; i < pa.cols(); ++i) pa.col(i) = s.p.col(s.active[i]);
    apply_checked(op, pa, q, fn);
    q += static_cast<T>(o.damping) * pa;
    res.matvecs += pa.cols();
    std::vector<Index> still;
    for (Index i = 0; i < pa.cols(); ++i) {
      const Index c = s.active[i];
      res.iterations[c] = it;
      res.column_status[c] = s.update(c, q.col(i), res.x, static_cast<T>(o.tol), z);
      if (res.column_status[c] == SolverStatus::MaxIterations) still.push_back(c);
    }
    s.active = std::move(still);
  }
  for (Index c = 0; c < nb; ++c) {
    res.relative_residuals(c) = s.bnorm(c) > 0 ? s.r.col(c).norm() / s.bnorm(c) : T(0);
    if (res.column_status[c] != SolverStatus::Converged && res.status != SolverStatus::NotPositiveDefinite)
      res.status = res.column_status[c];
  }
  return res;
}

}  // namespace detail

/// X = (A + lambda I)^-1 B by CG, column by column in lockstep; B is d x n (n >= 0). Cost: at
/// most max_iterations products per column; columns stop independently. Non-convergence and a
/// non-positive curvature direction are reported in `status`, never thrown. Throws ShapeError
/// when B has the wrong number of rows, ValueError for damping < 0, tol < 0, max_iterations < 1.
template <LinearOperator A>
CgResult<typename A::Scalar> conjugate_gradient(A& op, const Matrix<typename A::Scalar>& b,
                                                const CgOptions& options = {}) {
  return detail::cg_solve(op, b, options, Vector<typename A::Scalar>());
}

/// Preconditioned CG with the diagonal preconditioner M = diag(preconditioner_diagonal) ~
/// diag(A) + lambda (e.g. an exact or Hutchinson Fisher diagonal plus damping). Throws
/// ShapeError for a wrong length and ValueError for an entry that is not finite and > 0.
template <LinearOperator A>
CgResult<typename A::Scalar> conjugate_gradient(A& op, const Matrix<typename A::Scalar>& b, const CgOptions& options,
                                                const Vector<typename A::Scalar>& preconditioner_diagonal) {
  return detail::cg_solve(op, b, options, preconditioner_diagonal);
}

}  // namespace curvature
