#pragma once
// The gradient-noise tests' namespace: the shared aliases and dense references of
// support/references.hpp (Jacobians from unit-vector JVPs of one-sample batches, closed-form
// output Hessians, per-sample gradients from batch-size-1 calls, the explicit GGN), batch-size-1
// losses and explicit Hessians (materialised operators). None of these use the batched per-sample
// passes of the code under test.
#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>

#include "curvature/loss/loss.hpp"
#include "curvature/nn/nn.hpp"
#include "curvature/noise/noise.hpp"
#include "curvature/operators/operators.hpp"
#include "support/references.hpp"

namespace noisefix {

using namespace curvature;
using namespace curvature::testing;

/// in -> 6 (Tanh) -> 5 (LeakyReLU 0.1) -> out. Tanh and the leaky slope keep every unit alive (a
/// small plain-ReLU net has dead units). in = 4, out = 3: d = 30 + 35 + 18 = 83.
inline Net small_mlp(Index in, Index out, std::uint64_t seed) {
  Net m(nn::Shape{in, 1, 1});
  m.add(nn::Linear<D, S>(6)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(5)).add(nn::LeakyReLU<D, S>(0.1));
  m.add(nn::Linear<D, S>(out));
  m.init(seed);
  return m;
}

/// Mean of the batch-size-1 losses.
template <class L>
D mean_sample_loss(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y) {
  D s = 0;
  for (Index i = 0; i < x.cols(); ++i) {
    const Matrix<D> xi = x.col(i);
    s += loss_value(m, loss, xi, target_of(y, i));
  }
  return s / static_cast<D>(x.cols());
}

/// H, materialised from the Hessian operator (checked against finite differences in tests/operators).
template <class L>
Matrix<D> dense_hessian(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y) {
  HessianOperator h(m, loss, x, y);
  const Matrix<D> a = materialize(h);
  return (a + a.transpose()) / 2;
}

/// (1/N) sum_i H_i^2 from one-sample Hessian views.
template <class L>
Matrix<D> dense_hessian_second_moment(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y) {
  Matrix<D> s = Matrix<D>::Zero(m.num_params(), m.num_params());
  for (Index i = 0; i < x.cols(); ++i) {
    SampleHessianOperator hi(m, loss, x, y, i);
    const Matrix<D> a = materialize(hi);
    s += a * a;
  }
  return s / static_cast<D>(x.cols());
}

/// Eigenpairs of a symmetric matrix in descending order.
struct Eig {
  Vector<D> values;
  Matrix<D> vectors;
};
inline Eig descending_eig(const Matrix<D>& a) {
  Eigen::SelfAdjointEigenSolver<Matrix<D>> es(a);
  return {es.eigenvalues().reverse(), es.eigenvectors().rowwise().reverse()};
}

inline D rel(D a, D b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

}  // namespace noisefix
