#pragma once
// Argument checks and the checked operator application shared by the estimators. Messages name
// the function, the argument and the offending value (STYLE.md, "Errors").
#include <algorithm>
#include <cmath>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature::detail {

/// n >= lo, else ValueError "fn: name = n, expected >= lo".
inline void check_at_least(Index n, Index lo, const char* fn, const char* name) {
  CURVATURE_CHECK_VALUE(n >= lo, fn, ": ", name, " = ", n, ", expected >= ", lo);
}

/// A finite, non-negative tolerance (or damping).
inline void check_non_negative(double x, const char* fn, const char* name) {
  CURVATURE_CHECK_VALUE(std::isfinite(x) && x >= 0, fn, ": ", name, " = ", x, ", expected a finite value >= 0");
}

/// The operator acts on R^d with d >= 1; returns d.
template <LinearOperator A>
Index checked_dim(const A& op, const char* fn) {
  const Index d = static_cast<Index>(op.dim());
  CURVATURE_CHECK_VALUE(d >= 1, fn, ": the operator's dim() = ", d, ", expected >= 1");
  return d;
}

/// out = A v with the ShapeError of apply_checked but no finiteness pass, for a caller that finds
/// non-finite results more cheaply itself (and then calls check_finite_result).
template <LinearOperator A>
void apply_shape_checked(A& op, const Matrix<typename A::Scalar>& v, Matrix<typename A::Scalar>& out, const char* fn) {
  op.apply(v, out);
  CURVATURE_CHECK_SHAPE(out.rows() == v.rows() && out.cols() == v.cols(), fn, ": the operator returned a ",
                        out.rows(), "x", out.cols(), " block for a ", v.rows(), "x", v.cols(), " input");
}

/// The ValueError of an operator application that returned NaN or Inf (`finite` false).
inline void check_finite_result(bool finite, Index vectors, const char* fn) {
  CURVATURE_CHECK_VALUE(finite, fn, ": the operator returned non-finite values (NaN or Inf) for a block of ", vectors,
                        " vectors");
}

/// out = A v, with a ShapeError when a (user) operator returns a block of the wrong shape and a
/// ValueError when it returns NaN or Inf (which would otherwise surface as a wrong status, e.g. a
/// "not positive definite" CG). The finiteness pass reads the block once: negligible next to A v.
template <LinearOperator A>
void apply_checked(A& op, const Matrix<typename A::Scalar>& v, Matrix<typename A::Scalar>& out, const char* fn) {
  apply_shape_checked(op, v, out, fn);
  check_finite_result(all_finite(out), v.cols(), fn);
}

/// out = A v applied `block` columns at a time (block <= 0: all at once), to bound the memory
/// an operator needs per application.
template <LinearOperator A>
void apply_in_blocks(A& op, const Matrix<typename A::Scalar>& v, Matrix<typename A::Scalar>& out, Index block,
                     const char* fn) {
  if (block <= 0 || block >= v.cols()) return apply_checked(op, v, out, fn);
  using T = typename A::Scalar;
  out.resize(v.rows(), v.cols());
  Matrix<T> vb, ob;
  for (Index j = 0; j < v.cols(); j += block) {
    const Index m = std::min(block, v.cols() - j);
    vb = v.middleCols(j, m);
    apply_checked(op, vb, ob, fn);
    out.middleCols(j, m) = ob;
  }
}

}  // namespace curvature::detail
