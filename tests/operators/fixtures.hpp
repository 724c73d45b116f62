#pragma once
// The operator tests' namespace: the shared aliases and independent references of
// support/references.hpp (finite-difference Hessians and Jacobians, exact Jacobians from
// unit-vector JVPs, closed-form output Hessians, batch-size-1 gradients: no batched pass of the
// code under test is involved), and what only these tests use.
#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>

#include "curvature/curvature.hpp"
#include "curvature/operators/operators.hpp"
#include "support/references.hpp"

namespace opfix {

using namespace curvature;
using namespace curvature::testing;

/// Largest |A - A^T| relative to the largest |A|.
inline D asymmetry(const Matrix<D>& a) {
  return (a - a.transpose()).cwiseAbs().maxCoeff() / std::max(a.cwiseAbs().maxCoeff(), D(1e-300));
}

}  // namespace opfix
