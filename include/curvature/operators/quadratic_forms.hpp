#pragma once
// Quadratic forms of an operator with many vectors, the primitive behind SPEC 4's traces against
// the gradient covariance: Tr(Sigma1 A) = (1/N) sum_i g_i^T A g_i and Tr(Sigma A) with the centred
// Sigma = Sigma1 - g g^T (002 eq. 3: alpha, mu with A = G; 001's IGS). A is applied to blocks of
// columns of the d x N matrix of vectors, so N vectors cost N / block batched applies.
#include <algorithm>
#include <functional>

#include "curvature/core/error.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

namespace detail {
/// q_r = v_r^T A v_r for the columns of one block V: by the operator's own quadratic_forms when it
/// models QuadraticFormOperator (no A V formed), else from A V (`av` is the buffer for it). With
/// `fill`, V is written here: fill(j0, j1) writes columns [j0, j1), group by group through
/// ColumnHooks when the operator takes them, else all at once first.
template <LinearOperator A>
void block_quadratic_forms(A& op, const Matrix<typename A::Scalar>& v, Vector<typename A::Scalar>& q,
                           Matrix<typename A::Scalar>& av, const char* fn,
                           const std::function<void(Index, Index)>* fill = nullptr) {
  if constexpr (ColumnHookQuadraticForms<A>) {
    if (fill) {  // the columns of V written group by group, just before the operator reads them
      op.quadratic_forms(v, q, ColumnHooks{*fill, {}, true});
      CURVATURE_CHECK_SHAPE(q.size() == v.cols(), fn, ": quadratic_forms returned ", q.size(), " values for ",
                            v.cols(), " vectors");
      return;
    }
  }
  if (fill) (*fill)(0, v.cols());
  if constexpr (QuadraticFormOperator<A>) {
    op.quadratic_forms(v, q);
    CURVATURE_CHECK_SHAPE(q.size() == v.cols(), fn, ": quadratic_forms returned ", q.size(), " values for ",
                          v.cols(), " vectors");
  } else {
    op.apply(v, av);
    CURVATURE_CHECK_SHAPE(av.rows() == v.rows() && av.cols() == v.cols(), fn, ": apply returned a ", av.rows(), "x",
                          av.cols(), " block for a ", v.rows(), "x", v.cols(), " input");
    q = v.cwiseProduct(av).colwise().sum().transpose();
  }
}

/// q_i = (g_i - c)^T A (g_i - c) for the columns of G, c = *centre or 0.
template <LinearOperator A>
Vector<typename A::Scalar> blocked_quadratic_forms(A& op, const Matrix<typename A::Scalar>& g, Index block,
                                           const Vector<typename A::Scalar>* centre, const char* fn) {
  using T = typename A::Scalar;
  CURVATURE_CHECK_SHAPE(g.rows() == op.dim(), fn, ": G has ", g.rows(), " rows but the operator acts on d = ",
                        op.dim());
  CURVATURE_CHECK_VALUE(block >= 1, fn, ": block must be >= 1, got ", block);
  Vector<T> q(g.cols()), qb;
  Matrix<T> gb, agb;
  for (Index j = 0; j < g.cols(); j += block) {
    const Index b = std::min(block, g.cols() - j);
    gb = g.middleCols(j, b);
    if (centre) gb.colwise() -= *centre;
    block_quadratic_forms(op, gb, qb, agb, fn);
    q.segment(j, b) = qb;
  }
  return q;
}
}  // namespace detail

/// q_i = g_i^T A g_i for every column g_i of the d x N matrix G (N / block applies of A).
template <LinearOperator A>
Vector<typename A::Scalar> per_sample_quadratic_forms(A& op, const Matrix<typename A::Scalar>& g, Index block = 32) {
  return detail::blocked_quadratic_forms(op, g, block, nullptr, "per_sample_quadratic_forms");
}

/// Tr(Sigma1 A) = (1/N) sum_i g_i^T A g_i with the uncentred second moment Sigma1 = (1/N) sum_i g_i g_i^T
/// of the columns of G (SPEC 4; 002's mu1 with A = G). Throws ValueError for N = 0.
template <LinearOperator A>
typename A::Scalar trace_sigma1_a(A& op, const Matrix<typename A::Scalar>& g, Index block = 32) {
  CURVATURE_CHECK_VALUE(g.cols() > 0, "trace_sigma1_a: G has no columns (N = 0)");
  return detail::blocked_quadratic_forms(op, g, block, nullptr, "trace_sigma1_a").mean();
}

/// Tr(Sigma A) with the centred covariance Sigma = (1/N) sum_i g_i g_i^T - gbar gbar^T, gbar = mean
/// of the columns (SPEC 4, divisor N; 002 eq. 3 with A = G). Computed as (1/N) sum_i
/// (g_i - gbar)^T A (g_i - gbar), equal for symmetric A and free of the cancellation between
/// Tr(Sigma1 A) and gbar^T A gbar when the mean gradient dominates. Throws ValueError for N = 0.
template <LinearOperator A>
typename A::Scalar trace_sigma_a(A& op, const Matrix<typename A::Scalar>& g, Index block = 32) {
  using T = typename A::Scalar;
  CURVATURE_CHECK_VALUE(g.cols() > 0, "trace_sigma_a: G has no columns (N = 0)");
  const Vector<T> gbar = g.rowwise().mean();
  return detail::blocked_quadratic_forms(op, g, block, &gbar, "trace_sigma_a").mean();
}

}  // namespace curvature
