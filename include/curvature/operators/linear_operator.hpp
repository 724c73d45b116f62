#pragma once
// The seam between curvature matrices and estimators: a symmetric linear operator on R^d applied
// to a block of vectors at once (SPEC 2), so that probe blocks become matrix-matrix products.

#include <concepts>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"

namespace curvature {

/// A symmetric linear operator A on R^d. `apply(V, out)` overwrites `out` (resized to d x m) with
/// A V for the d x m block V; it may keep buffers, hence non-const. Every estimator accepts any type
/// that models this concept, so a user's own operator works too.
template <class A>
concept LinearOperator = requires(A& a, const A& ca, const Matrix<typename A::Scalar>& v,
                                  Matrix<typename A::Scalar>& out) {
  typename A::Scalar;
  { ca.dim() } -> std::convertible_to<Index>;
  a.apply(v, out);
};

/// A LinearOperator that also gives the quadratic forms q_r = v_r' A v_r of a block directly
/// (`quadratic_forms(V, q)`, q resized to m), cheaper than A V: the Hessian by second-order
/// forward mode, the GGN and Fishers from one JVP. Hutchinson's trace uses it when present.
template <class A>
concept QuadraticFormOperator = LinearOperator<A> && requires(A& a, const Matrix<typename A::Scalar>& v,
                                                              Vector<typename A::Scalar>& q) {
  a.quadratic_forms(v, q);
};

/// A LinearOperator whose apply (and, for a QuadraticFormOperator, quadratic_forms) also takes
/// ColumnHooks: the block may be written column group by column group just before use, and the
/// results read as they become final (HessianOperator of the built-in models).
template <class A>
concept ColumnHookOperator = LinearOperator<A> && requires(A& a, const Matrix<typename A::Scalar>& v,
                                                           Matrix<typename A::Scalar>& out, const ColumnHooks& h) {
  a.apply(v, out, h);
};
template <class A>
concept ColumnHookQuadraticForms = QuadraticFormOperator<A> && requires(A& a, const Matrix<typename A::Scalar>& v,
                                                                        Vector<typename A::Scalar>& q,
                                                                        const ColumnHooks& h) {
  a.quadratic_forms(v, q, h);
};

/// An explicit symmetric matrix as an operator (small d, tests, and dense reference values).
template <class T>
class DenseOperator {
 public:
  using Scalar = T;
  explicit DenseOperator(Matrix<T> a) : a_(std::move(a)) {
    CURVATURE_CHECK_SHAPE(a_.rows() == a_.cols(), "DenseOperator: matrix is ", a_.rows(), "x", a_.cols(),
                          ", expected square");
  }
  Index dim() const { return a_.rows(); }
  void apply(const Matrix<T>& v, Matrix<T>& out) {
    CURVATURE_CHECK_SHAPE(v.rows() == dim(), "DenseOperator::apply: block has ", v.rows(), " rows, expected ",
                          dim());
    out.noalias() = a_ * v;
  }
  const Matrix<T>& matrix() const { return a_; }

 private:
  Matrix<T> a_;
};
static_assert(LinearOperator<DenseOperator<double>>);

}  // namespace curvature
