#pragma once
// The explicit d x d matrix of an operator, for small models, tests and dense reference values
// (exact eigendecompositions, SPEC 4's Tr(Sigma G) by brute force). Built by applying A to the
// identity in blocks of columns, so a block of b columns costs one batched apply.
#include <algorithm>

#include "curvature/core/error.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// The largest d materialize accepts unless told otherwise (a 20000 x 20000 double matrix is 3.2 GB).
inline constexpr Index materialize_default_max_dim = 20000;

/// A as a d x d matrix: column block [j, j + b) is A [e_j ... e_{j+b-1}]. Throws ValueError when
/// d > max_dim (naming d) or block < 1, ShapeError when an apply returns a block of the wrong
/// shape. The result is returned as computed (not symmetrised), so asymmetry from round-off or a
/// faulty operator stays visible.
template <LinearOperator A>
Matrix<typename A::Scalar> materialize(A& op, Index block = 32, Index max_dim = materialize_default_max_dim) {
  using T = typename A::Scalar;
  const Index d = op.dim();
  CURVATURE_CHECK_VALUE(d >= 0 && d <= max_dim, "materialize: operator dimension d = ", d, " exceeds max_dim = ",
                        max_dim, " (a d x d matrix); raise max_dim or use a matrix-free estimator");
  CURVATURE_CHECK_VALUE(block >= 1, "materialize: block must be >= 1, got ", block);
  Matrix<T> dense(d, d), e, out;
  for (Index j = 0; j < d; j += block) {
    const Index b = std::min(block, d - j);
    e.setZero(d, b);
    for (Index c = 0; c < b; ++c) e(j + c, c) = T(1);
    op.apply(e, out);
    CURVATURE_CHECK_SHAPE(out.rows() == d && out.cols() == b, "materialize: apply returned a ", out.rows(), "x",
                          out.cols(), " block for a ", d, "x", b, " input");
    dense.middleCols(j, b) = out;
  }
  return dense;
}

/// Overload for operators passed as temporaries, e.g. materialize(Damped(g, 0.1)).
template <LinearOperator A>
Matrix<typename A::Scalar> materialize(A&& op, Index block = 32, Index max_dim = materialize_default_max_dim) {
  return materialize(op, block, max_dim);
}

}  // namespace curvature
