#pragma once
// The aliases and the independent references shared by the model, operator, K-FAC, noise and
// measure tests. Each reference is computed without the code those tests check:
//  - Hessians and Jacobians by central finite differences (of the mean-loss gradient, itself checked
//    against finite differences of the loss in tests/model, and of the outputs of one sample);
//  - exact Jacobians J_i from unit-vector JVPs of a one-sample batch;
//  - output Hessians Lambda in closed form (SPEC 0), with a softmax written here;
//  - per-sample gradients from batch-size-1 loss_and_gradient calls, so no batched per-sample
//    pass (per_sample_gradients, the Sink reductions) is involved;
//  - the GGN / Fisher (1/N) sum_i J_i^T Lambda_i J_i as an explicit d x d sum of those pieces.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "curvature/loss/loss.hpp"
#include "curvature/model/model.hpp"
#include "curvature/nn/nn.hpp"
#include "support/layer_check.hpp"

namespace curvature::testing {

// D (double) comes from layer_check.hpp.
using S = backend::Serial;
using Net = nn::Sequential<D, S>;
using CE = loss::CrossEntropy<D>;
using MSE = loss::MeanSquaredError<D>;
using Labels = std::vector<std::int64_t>;

/// 4 -> 6 -> 5 -> 3 (d = 83): Linear, Tanh or ReLU, Linear, GELU, Linear.
inline Net gelu_mlp(bool relu, std::uint64_t seed) {
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

/// n labels drawn uniformly from [0, k).
inline Labels labels(Index n, Index k, Rng& rng) {
  Labels y(static_cast<std::size_t>(n));
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(k)));
  return y;
}

/// The targets of sample i alone, as a one-sample batch.
inline Matrix<D> target_of(const Matrix<D>& y, Index i) { return y.col(i); }
inline Labels target_of(const Labels& y, Index i) { return {y[static_cast<std::size_t>(i)]}; }

/// The Hessian of the mean loss by central differences of loss_and_gradient, column by column
/// (not symmetrised: callers that need a symmetric matrix or check symmetry decide).
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

/// J_i (K x d) by central differences of the outputs of sample i alone (forward passes only).
inline Matrix<D> fd_jacobian(Net& m, const Matrix<D>& x, Index i, D h = 1e-6) {
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

/// J_i (K x d) exactly: the JVP of the one-sample batch along the d unit vectors (column r = J_i e_r).
inline Matrix<D> exact_jacobian(Net& m, const Matrix<D>& x, Index i) {
  const Matrix<D> xi = x.col(i);
  return m.jvp(xi, Matrix<D>::Identity(m.num_params(), m.num_params()));
}

/// softmax(f), shifted by max(f), written here rather than taken from the loss.
inline Vector<D> softmax(const Vector<D>& f) {
  Vector<D> p = (f.array() - f.maxCoeff()).exp().matrix();
  return p / p.sum();
}

/// Lambda of one sample at outputs f in closed form (SPEC 0): CE diag(p) - p p^T with p = softmax(f).
inline Matrix<D> output_hessian(const CE&, const Vector<D>& f) {
  const Vector<D> p = softmax(f);
  return Matrix<D>(p.asDiagonal()) - p * p.transpose();
}
/// MSE: the identity.
inline Matrix<D> output_hessian(const MSE&, const Vector<D>& f) { return Matrix<D>::Identity(f.size(), f.size()); }

/// Gradient of the loss of sample i alone with its targets from y: a batch-size-1 loss_and_gradient call.
template <class L>
Vector<D> gradient_one(Net& m, const L& loss, const Matrix<D>& x, Index i, const typename L::Targets& y) {
  const Matrix<D> xi = x.col(i);
  return loss_and_gradient(m, loss, xi, target_of(y, i)).gradient;
}
/// The same with the label yi in place of sample i's own (CE).
inline Vector<D> gradient_one(Net& m, const CE& ce, const Matrix<D>& x, Index i, std::int64_t yi) {
  const Matrix<D> xi = x.col(i);
  return loss_and_gradient(m, ce, xi, Labels{yi}).gradient;
}

/// The per-sample gradients g_i (d x N), one batch-size-1 call each.
template <class L>
Matrix<D> sample_gradients(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y) {
  Matrix<D> g(m.num_params(), x.cols());
  for (Index i = 0; i < x.cols(); ++i) g.col(i) = gradient_one(m, loss, x, i, y);
  return g;
}

/// (1/N) sum_i J_i^T Lambda_i J_i explicitly, J_i = jacobian(m, x, i) and Lambda_i in closed form at
/// the outputs of the one-sample batch. For CE this is also the Fisher.
template <class L, class Jac>
Matrix<D> dense_ggn(Net& m, const L& loss, const Matrix<D>& x, Jac&& jacobian) {
  Matrix<D> g = Matrix<D>::Zero(m.num_params(), m.num_params());
  for (Index i = 0; i < x.cols(); ++i) {
    const Matrix<D> j = jacobian(m, x, i);
    const Matrix<D> xi = x.col(i);
    g += j.transpose() * output_hessian(loss, m.forward(xi).col(0)) * j;
  }
  return g / static_cast<D>(x.cols());
}
/// The same with the exact Jacobians.
template <class L>
Matrix<D> dense_ggn(Net& m, const L& loss, const Matrix<D>& x) {
  return dense_ggn(m, loss, x, exact_jacobian);
}

}  // namespace curvature::testing
