#pragma once
// Sharpness measures (SPEC 3): Euclidean S_E = tr(H) (000 eq. 1) and Riemannian S_R = tr(G^-1 H)
// (000 eq. 6) in its diagonal (000 eq. 4), dense, structured (K-FAC or any inverse operator) and
// Adam-metric (000 eq. 45) forms; damped IGS through an inverse operator; m-sharpness.
#include <Eigen/Eigenvalues>
#include <cmath>
#include <vector>

#include "curvature/estimators/cg.hpp"
#include "curvature/estimators/hutchinson.hpp"
#include "curvature/measures/igs.hpp"
#include "curvature/operators/linear_operator.hpp"
#include "curvature/operators/quadratic_forms.hpp"

namespace curvature {

namespace detail {
template <class T>
void check_metric(const Vector<T>& metric, T lambda, Index d, const char* fn) {
  CURVATURE_CHECK_VALUE(std::isfinite(lambda) && lambda >= T(0), fn, ": damping lambda must be finite and >= 0, got ",
                        lambda);
  CURVATURE_CHECK_SHAPE(metric.size() == d, fn, ": metric diagonal has ", metric.size(), " entries, expected d = ", d);
  for (Index j = 0; j < d; ++j)
    CURVATURE_CHECK_VALUE(std::isfinite(metric(j)) && metric(j) + lambda > T(0), fn, ": metric diagonal entry ", j,
                          " is ", metric(j), "; with lambda = ", lambda, " it must be finite and F_jj + lambda > 0");
}
/// Targets of samples [first, first + n): class labels or one column per sample.
template <class I>
std::vector<I> target_slice(const std::vector<I>& y, Index first, Index n) {
  return std::vector<I>(y.begin() + first, y.begin() + first + n);
}
template <class T>
Matrix<T> target_slice(const Matrix<T>& y, Index first, Index n) {
  return y.middleCols(first, n);
}
}  // namespace detail

/// The terms H_jj / (M_jj + lambda) of the diagonal Riemannian sharpness (000 eq. 4; eq. 45 with
/// Adam's second moment v as M). Sum them for S_R, or per layer with sum_by_group.
template <Scalar T>
Vector<T> riemannian_sharpness_terms(const Vector<T>& h_diag, const Vector<T>& metric_diag, T lambda = T(1e-6)) {
  detail::check_metric(metric_diag, lambda, h_diag.size(), "riemannian_sharpness_terms");
  return h_diag.array() / (metric_diag.array() + lambda);
}

/// S_R diagonal (000 eq. 4) = sum_j H_jj / (F_jj + lambda) from a known H diagonal.
template <Scalar T>
T riemannian_sharpness_diagonal(const Vector<T>& h_diag, const Vector<T>& metric_diag, T lambda = T(1e-6)) {
  return riemannian_sharpness_terms(h_diag, metric_diag, lambda).sum();
}

/// Adam-metric S_R (000 eq. 45): sum_j H_jj / (v_j + lambda), v Adam's second-moment buffer.
template <Scalar T>
T adam_riemannian_sharpness(const Vector<T>& h_diag, const Vector<T>& adam_v, T lambda = T(1e-6)) {
  return riemannian_sharpness_diagonal(h_diag, adam_v, lambda);
}

/// D^-1/2 A D^-1/2 for a positive diagonal D: Hutchinson on it estimates sum_j A_jj / D_jj with the
/// probe-to-probe spread of that very sum as standard error (per-coordinate errors are correlated).
template <LinearOperator A>
class DiagonallyScaled {
 public:
  using Scalar = typename A::Scalar;
  DiagonallyScaled(A& a, const Vector<Scalar>& d) : a_(&a), s_(d.cwiseSqrt().cwiseInverse()) {}
  Index dim() const { return a_->dim(); }
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    a_->apply(s_.asDiagonal() * v, buf_);
    out.noalias() = s_.asDiagonal() * buf_;
  }
  /// q_r = (D^-1/2 v_r)' A (D^-1/2 v_r), when A gives quadratic forms (the Hessian by forward mode).
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q)
    requires QuadraticFormOperator<A>
  {
    a_->quadratic_forms(s_.asDiagonal() * v, q);
  }

 private:
  A* a_;
  Vector<Scalar> s_;
  Matrix<Scalar> buf_;
};

/// S_R diagonal (000 eq. 4) with H_jj from Hutchinson on the Hessian operator `h`, as one trace
/// estimate of D^-1/2 H D^-1/2 (D = diag(F) + lambda) so the standard error is that of the sum.
template <LinearOperator A>
Estimate<typename A::Scalar> riemannian_sharpness_diagonal(A& h, const Vector<typename A::Scalar>& metric_diag,
                                                           typename A::Scalar lambda,
                                                           const HutchinsonOptions& options = {}) {
  detail::check_metric(metric_diag, lambda, h.dim(), "riemannian_sharpness_diagonal");
  DiagonallyScaled<A> scaled(h, (metric_diag.array() + lambda).matrix().eval());
  return hutchinson_trace(scaled, options);
}

/// The product B A of two operators on R^d (apply A, then B). Not symmetric in general; Hutchinson's
/// E[v^T B A v] = tr(B A) holds all the same.
template <LinearOperator B, LinearOperator A>
class Composed {
 public:
  using Scalar = typename A::Scalar;
  Composed(B& b, A& a) : b_(&b), a_(&a) {
    CURVATURE_CHECK_SHAPE(a.dim() == b.dim(), "Composed: operators act on ", b.dim(), " and ", a.dim(), " dimensions");
  }
  Index dim() const { return a_->dim(); }
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    a_->apply(v, buf_);
    b_->apply(buf_, out);
  }

 private:
  B* b_;
  A* a_;
  Matrix<Scalar> buf_;
};

/// (A + lambda I)^-1 applied by block conjugate gradients: the damped inverse for IGS and S_R at
/// sizes where F cannot be formed. Solver outcomes accumulate in `worst_status()`.
template <LinearOperator A>
class CgInverse {
 public:
  using Scalar = typename A::Scalar;
  CgInverse(A& a, CgOptions options) : a_(&a), o_(options) {
    CURVATURE_CHECK_VALUE(options.damping > 0, "CgInverse: damping must be > 0 (F is singular), got ", options.damping);
  }
  Index dim() const { return a_->dim(); }
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    CgResult<Scalar> r = conjugate_gradient(*a_, v, o_);
    matvecs_ += r.matvecs;
    if (static_cast<int>(r.status) > static_cast<int>(worst_)) worst_ = r.status;
    out = std::move(r.x);
  }
  SolverStatus worst_status() const { return worst_; }
  Index matvecs() const { return matvecs_; }

 private:
  A* a_;
  CgOptions o_;
  SolverStatus worst_ = SolverStatus::Converged;
  Index matvecs_ = 0;
};

/// Structured S_R = tr(M^-1 H) (000 Sec. 6.5) for any operator `inverse_metric` applying M^-1,
/// e.g. KfacOperator::inverse(lambda) (K-FAC) or CgInverse over the damped Fisher (exact damped
/// S_R), estimated by Hutchinson on the product.
template <LinearOperator Inv, LinearOperator A>
Estimate<typename A::Scalar> riemannian_sharpness(Inv& inverse_metric, A& h, const HutchinsonOptions& options = {}) {
  Composed<Inv, A> product(inverse_metric, h);
  return hutchinson_trace(product, options);
}

/// Dense S_R = tr((F + lambda I)^-1 H) for small d; lambda = 0 uses F's pseudo-inverse with the
/// rank at the largest spectral gap (as IGS does, SPEC 3).
template <Scalar T>
T riemannian_sharpness_dense(const Matrix<T>& h, const Matrix<T>& f, T lambda = T(1e-6)) {
  CURVATURE_CHECK_SHAPE(h.rows() == h.cols() && f.rows() == f.cols() && h.rows() == f.rows(),
                        "riemannian_sharpness_dense: H is ", h.rows(), "x", h.cols(), " and F is ", f.rows(), "x",
                        f.cols());
  CURVATURE_CHECK_VALUE(std::isfinite(lambda) && lambda >= T(0), "riemannian_sharpness_dense: lambda must be finite "
                        "and >= 0, got ", lambda);
  Eigen::SelfAdjointEigenSolver<Matrix<T>> eig(f);
  const Vector<T> ev = eig.eigenvalues().reverse();  // descending
  Index rank = ev.size();
  if (lambda == T(0)) {
    // F's eigenvalues carry round-off of about d eps lambda_max, the floor largest_gap_rank uses.
    rank = detail::largest_gap_rank<T>(ev.cwiseMax(T(0)).eval(), f.rows(), f.cols()).first;
  }
  const Matrix<T> u = eig.eigenvectors().rowwise().reverse().leftCols(rank);
  const Vector<T> inv = (ev.head(rank).array() + lambda).inverse();
  return (inv.asDiagonal() * (u.transpose() * h * u)).trace();
}

/// Damped IGS: (1/N) sum_i g_i^T M^-1 g_i with M^-1 an inverse-metric operator (CgInverse over the
/// damped Fisher, or K-FAC's inverse). Not reparametrization-invariant: damping breaks it (SPEC 3).
template <Model M, Loss L, LinearOperator Inv>
IgsResult<scalar_of<M>> information_geometric_sharpness(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                        const typename L::Targets& y, Inv& inverse_metric,
                                                        scalar_of<M> damping, Index block = 32) {
  using T = scalar_of<M>;
  Matrix<T> g;
  per_sample_gradients(m, loss, x, y, g);
  IgsResult<T> r;
  r.per_sample = per_sample_quadratic_forms(inverse_metric, g, block);
  r.value = r.per_sample.mean();
  r.full_batch = per_sample_quadratic_forms(inverse_metric, Matrix<T>(g.rowwise().mean()), 1)(0);
  r.n = x.cols();
  r.rank = -1;  // no rank: a damped inverse
  r.damping = damping;
  return r;
}

/// m-sharpness (Foret et al. 2021, the SAM paper's measure): the mean over disjoint chunks of m
/// samples of L_chunk(theta + rho g/||g||) - L_chunk(theta), g the chunk's gradient (one ascent
/// step, as SAM approximates the inner maximum). Parameters are restored afterwards.
template <Model M, Loss L>
  requires requires(M& m, const Vector<scalar_of<M>>& p) { m.set_params(p); }
scalar_of<M> m_sharpness(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y, Index chunk,
                         scalar_of<M> rho) {
  using T = scalar_of<M>;
  detail::check_batch(m, loss, x, y, "m_sharpness");
  CURVATURE_CHECK_VALUE(chunk >= 1 && chunk <= x.cols(), "m_sharpness: m = ", chunk, " must be in [1, ", x.cols(), "]");
  CURVATURE_CHECK_VALUE(std::isfinite(rho) && rho > T(0), "m_sharpness: rho must be finite and > 0, got ", rho);
  const Vector<T> theta = m.params();
  const Index chunks = x.cols() / chunk;  // a ragged tail is dropped, as SAM's chunks are equal
  T total = 0;
  for (Index c = 0; c < chunks; ++c) {
    const Matrix<T> xc = x.middleCols(c * chunk, chunk);
    const typename L::Targets yc = detail::target_slice(y, c * chunk, chunk);
    const LossGradient<T> lg = loss_and_gradient(m, loss, xc, yc);
    const T norm = lg.gradient.norm();
    if (norm > T(0)) m.set_params(theta + (rho / norm) * lg.gradient);
    total += loss_value(m, loss, xc, yc) - lg.loss;
    m.set_params(theta);
  }
  return total / static_cast<T>(chunks);
}

}  // namespace curvature
