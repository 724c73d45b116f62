#pragma once
// Small models and dense references for the gradient-noise tests: Jacobians from unit-vector JVPs
// of one-sample batches, closed-form output Hessians, per-sample gradients and losses from
// batch-size-1 calls, and explicit Hessians (materialised operators). None of these use the
// batched per-sample passes of the code under test.
#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>

#include <cstdint>
#include <vector>

#include "curvature/loss/loss.hpp"
#include "curvature/nn/nn.hpp"
#include "curvature/noise/noise.hpp"
#include "curvature/operators/operators.hpp"
#include "support/layer_check.hpp"

namespace noisefix {

using namespace curvature;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;
using Net = nn::Sequential<D, S>;
using CE = loss::CrossEntropy<D>;
using MSE = loss::MeanSquaredError<D>;
using Labels = std::vector<std::int64_t>;

/// in -> 6 (Tanh) -> 5 (LeakyReLU 0.1) -> out. Tanh and the leaky slope keep every unit alive (a
/// small plain-ReLU net has dead units). in = 4, out = 3: d = 30 + 35 + 18 = 83.
inline Net small_mlp(Index in, Index out, std::uint64_t seed) {
  Net m(nn::Shape{in, 1, 1});
  m.add(nn::Linear<D, S>(6)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(5)).add(nn::LeakyReLU<D, S>(0.1));
  m.add(nn::Linear<D, S>(out));
  m.init(seed);
  return m;
}

inline Labels labels(Index n, Index k, Rng& rng) {
  Labels y(static_cast<std::size_t>(n));
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(k)));
  return y;
}

inline Matrix<D> target_of(const Matrix<D>& y, Index i) { return y.col(i); }
inline Labels target_of(const Labels& y, Index i) { return {y[static_cast<std::size_t>(i)]}; }

/// g_i from a batch-size-1 loss_and_gradient call per sample (d x N).
template <class L>
Matrix<D> sample_gradients(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y) {
  Matrix<D> g(m.num_params(), x.cols());
  for (Index i = 0; i < x.cols(); ++i) {
    const Matrix<D> xi = x.col(i);
    g.col(i) = loss_and_gradient(m, loss, xi, target_of(y, i)).gradient;
  }
  return g;
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

/// J_i (K x d): the JVP of the one-sample batch along the d unit vectors.
inline Matrix<D> jacobian(Net& m, const Matrix<D>& x, Index i) {
  const Matrix<D> xi = x.col(i);
  return m.jvp(xi, Matrix<D>::Identity(m.num_params(), m.num_params()));
}

/// Lambda_i in closed form (SPEC 0): CE diag(p) - p p^T, MSE I.
inline Matrix<D> output_hessian(const CE&, const Vector<D>& f) {
  const Vector<D> p = (f.array() - f.maxCoeff()).exp() / (f.array() - f.maxCoeff()).exp().sum();
  return Matrix<D>(p.asDiagonal()) - p * p.transpose();
}
inline Matrix<D> output_hessian(const MSE&, const Vector<D>& f) { return Matrix<D>::Identity(f.size(), f.size()); }

/// G = (1/N) sum_i J_i^T Lambda_i J_i, explicitly.
template <class L>
Matrix<D> dense_ggn(Net& m, const L& loss, const Matrix<D>& x) {
  Matrix<D> g = Matrix<D>::Zero(m.num_params(), m.num_params());
  for (Index i = 0; i < x.cols(); ++i) {
    const Matrix<D> j = jacobian(m, x, i);
    const Matrix<D> xi = x.col(i);
    g += j.transpose() * output_hessian(loss, m.forward(xi).col(0)) * j;
  }
  return g / static_cast<D>(x.cols());
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
