#pragma once
// Small models and independent references for the operator tests: Hessians and Jacobians by
// central finite differences, exact Jacobians from unit-vector JVPs, closed-form output Hessians,
// and batch-size-1 gradients (no batched pass of the code under test is involved).
#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>

#include <cstdint>
#include <vector>

#include "curvature/curvature.hpp"
#include "curvature/operators/operators.hpp"
#include "support/layer_check.hpp"

namespace opfix {

using namespace curvature;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;
using Net = nn::Sequential<D, S>;
using CE = loss::CrossEntropy<D>;
using MSE = loss::MeanSquaredError<D>;
using Labels = std::vector<std::int64_t>;

/// 4 -> 6 -> 5 -> 3 (d = 83) with Tanh or ReLU, then GELU.
inline Net small_mlp(bool relu, std::uint64_t seed) {
  Net m(nn::Shape{4, 1, 1});
  m.add(nn::Linear<D, S>(6));
  if (relu) m.add(nn::ReLU<D, S>());
  else m.add(nn::Tanh<D, S>());
  m.add(nn::Linear<D, S>(5)).add(nn::GELU<D, S>()).add(nn::Linear<D, S>(3));
  m.init(seed);
  return m;
}

/// 1x5x5 images -> Conv2d(2, 3x3, pad 1) -> Tanh -> Flatten -> Linear(3) (d = 173).
inline Net tiny_cnn(std::uint64_t seed) {
  Net m(nn::Shape{1, 5, 5});
  m.add(nn::Conv2d<D, S>(2, 3, 1, 1)).add(nn::Tanh<D, S>()).add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(3));
  m.init(seed);
  return m;
}

inline Labels labels(Index n, Index k, Rng& rng) {
  Labels y(static_cast<std::size_t>(n));
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(k)));
  return y;
}

/// The Hessian of the mean loss by central differences of loss_and_gradient, column by column.
template <class L>
Matrix<D> fd_hessian(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y, D h = 1e-5) {
  const Vector<D> p0 = m.params();
  Matrix<D> hess(p0.size(), p0.size());
  for (Index j = 0; j < p0.size(); ++j) {
    Vector<D> p = p0;
    p[j] += h;
    m.set_params(p);
    const Vector<D> gp = loss_and_gradient(m, loss, x, y).gradient;
    p[j] -= 2 * h;
    m.set_params(p);
    hess.col(j) = (gp - loss_and_gradient(m, loss, x, y).gradient) / (2 * h);
  }
  m.set_params(p0);
  return hess;
}

/// J_i (K x d) by central differences of the outputs of sample i alone.
inline Matrix<D> fd_jacobian(Net& m, const Matrix<D>& x, Index i) {
  const D h = 1e-6;
  const Vector<D> p0 = m.params();
  const Matrix<D> xi = x.col(i);
  Matrix<D> jac(m.output_size(), p0.size());
  for (Index j = 0; j < p0.size(); ++j) {
    Vector<D> p = p0;
    p[j] += h;
    m.set_params(p);
    const Matrix<D> fp = m.forward(xi);
    p[j] -= 2 * h;
    m.set_params(p);
    jac.col(j) = (fp - m.forward(xi)) / (2 * h);
  }
  m.set_params(p0);
  return jac;
}

/// J_i exactly: the JVP of the one-sample batch along the d unit vectors (column r = J_i e_r).
inline Matrix<D> exact_jacobian(Net& m, const Matrix<D>& x, Index i) {
  const Matrix<D> xi = x.col(i);
  return m.jvp(xi, Matrix<D>::Identity(m.num_params(), m.num_params()));
}

/// Lambda_i in closed form (SPEC 0): CE diag(p) - p p^T.
inline Matrix<D> output_hessian(const CE& ce, const Matrix<D>& f, Index i) {
  const Vector<D> p = ce.probabilities(f).col(i);
  return Matrix<D>(p.asDiagonal()) - p * p.transpose();
}
/// MSE: the identity.
inline Matrix<D> output_hessian(const MSE&, const Matrix<D>& f, Index) {
  return Matrix<D>::Identity(f.rows(), f.rows());
}

/// (1/N) sum_i J_i^T Lambda_i J_i from the given Jacobians.
template <class L, class Jac>
Matrix<D> explicit_ggn(Net& m, const L& loss, const Matrix<D>& x, Jac&& jacobian) {
  const Matrix<D> f = m.forward(x);
  Matrix<D> g = Matrix<D>::Zero(m.num_params(), m.num_params());
  for (Index i = 0; i < x.cols(); ++i) {
    const Matrix<D> j = jacobian(m, x, i);
    g += j.transpose() * output_hessian(loss, f, i) * j;
  }
  return g / static_cast<D>(x.cols());
}

/// Gradient of the loss of sample i with target y_i, from a batch-size-1 loss_and_gradient call.
inline Vector<D> gradient_one(Net& m, const CE& ce, const Matrix<D>& x, Index i, std::int64_t yi) {
  const Matrix<D> xi = x.col(i);
  return loss_and_gradient(m, ce, xi, Labels{yi}).gradient;
}
inline Vector<D> gradient_one(Net& m, const MSE& mse, const Matrix<D>& x, Index i, const Matrix<D>& y) {
  const Matrix<D> xi = x.col(i), yi = y.col(i);
  return loss_and_gradient(m, mse, xi, yi).gradient;
}
inline Vector<D> gradient_one(Net& m, const CE& ce, const Matrix<D>& x, Index i, const Labels& y) {
  return gradient_one(m, ce, x, i, y[static_cast<std::size_t>(i)]);
}

/// Largest |A - A^T| relative to the largest |A|.
inline D asymmetry(const Matrix<D>& a) {
  return (a - a.transpose()).cwiseAbs().maxCoeff() / std::max(a.cwiseAbs().maxCoeff(), D(1e-300));
}

}  // namespace opfix
