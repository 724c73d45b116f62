#pragma once
// curvature-probe, estimator mode: operators built on the library's LinearOperator concept.
//   ProbeCache<A>      A, remembering A V for the probe blocks it has seen, so that Hutchinson's trace,
//                      diagonal, Frobenius norm and the S_R estimates below share one set of H V
//                      products (they draw the same probes: same seed, same block size).
//   RowScaled<A>       diag(w) A: tr(diag(w) H) = sum_j w_j H_jj (000 eq. 4 with w_j = 1/(F_jj + lambda)).
//   FisherSolve<F>     (F + lambda I)^-1 by preconditioned CG (Jacobi: diag(F) + lambda).
//   SolveAfter<S, A>   S A: Hutchinson on it estimates tr((F + lambda I)^-1 H) (000 eq. 6, damped).
// RowScaled and SolveAfter are not symmetric; they only go to hutchinson_trace, which needs no
// symmetry: E[v^T A v] = tr(A) for any square A.
#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "curvature/estimators/cg.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature::probe {

/// Remembers (V, A V) for blocks up to a memory budget; a block equal to a remembered V is served
/// from memory. Exact equality: probes depend only on (seed, k), so a repeat is bit-identical.
template <LinearOperator A>
class ProbeCache {
 public:
  using Scalar = typename A::Scalar;
  ProbeCache(A& a, std::size_t budget_bytes) : a_(&a), budget_(budget_bytes) {}
  Index dim() const { return a_->dim(); }
  Index matvecs() const { return matvecs_; }

  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    for (const Entry& e : entries_)
      if (e.v.rows() == v.rows() && e.v.cols() == v.cols() && std::equal(v.data(), v.data() + v.size(), e.v.data())) {
        out = e.av;
        return;
      }
    a_->apply(v, out);
    matvecs_ += v.cols();
    const std::size_t bytes = 2 * sizeof(Scalar) * static_cast<std::size_t>(v.size());
    if (used_ + bytes <= budget_) {
      entries_.push_back({v, out});
      used_ += bytes;
    }
  }

 private:
  struct Entry {
    Matrix<Scalar> v, av;
  };
  A* a_;
  std::size_t budget_, used_ = 0;
  Index matvecs_ = 0;
  std::vector<Entry> entries_;
};

/// diag(w) A.
template <LinearOperator A>
class RowScaled {
 public:
  using Scalar = typename A::Scalar;
  RowScaled(A& a, Vector<Scalar> w) : a_(&a), w_(std::move(w)) {}
  Index dim() const { return a_->dim(); }
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    a_->apply(v, out);
    out = w_.asDiagonal() * out;
  }

 private:
  A* a_;
  Vector<Scalar> w_;
};

/// How the CG solves of one FisherSolve went, over all its applies.
struct CgRecord {
  SolverStatus status = SolverStatus::Converged;  ///< the worst column's
  double max_relative_residual = 0;
  Index matvecs = 0;
  Index solves = 0;
};

/// (F + lambda I)^-1 V by Jacobi-preconditioned CG, column by column in lockstep.
template <LinearOperator F>
class FisherSolve {
 public:
  using Scalar = typename F::Scalar;
  FisherSolve(F& f, const Vector<Scalar>& f_diagonal, CgOptions options)
      : f_(&f), precond_(f_diagonal.array() + options.damping), options_(options) {}
  Index dim() const { return f_->dim(); }
  const CgRecord& record() const { return record_; }

  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    CgResult<Scalar> r = conjugate_gradient(*f_, v, options_, precond_);
    out = std::move(r.x);
    record_.matvecs += r.matvecs;
    record_.solves += v.cols();
    if (r.relative_residuals.size() > 0)
      record_.max_relative_residual = std::max<double>(record_.max_relative_residual, r.relative_residuals.maxCoeff());
    if (r.status == SolverStatus::NotPositiveDefinite) record_.status = r.status;
    else if (r.status == SolverStatus::MaxIterations && record_.status == SolverStatus::Converged)
      record_.status = r.status;
  }

 private:
  F* f_;
  Vector<Scalar> precond_;
  CgOptions options_;
  CgRecord record_;
};

/// S (A V).
template <LinearOperator S, LinearOperator A>
class SolveAfter {
 public:
  using Scalar = typename A::Scalar;
  SolveAfter(S& s, A& a) : s_(&s), a_(&a) {}
  Index dim() const { return a_->dim(); }
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    a_->apply(v, buf_);
    s_->apply(buf_, out);
  }

 private:
  S* s_;
  A* a_;
  Matrix<Scalar> buf_;
};

}  // namespace curvature::probe
