#pragma once
// Test matrices with known spectra and small user-written operators for the estimator tests.
#include <Eigen/QR>
#include <cmath>
#include <cstdint>
#include <vector>

#include "curvature/core/rng.hpp"
#include "curvature/estimators/estimators.hpp"

namespace curvature::testing {

/// Q diag(lambda) Q^T with Q orthogonal from the Householder QR of a Gaussian matrix.
template <class T = double>
Matrix<T> with_spectrum(const Vector<double>& lambda, std::uint64_t seed) {
  const Index d = lambda.size();
  Rng rng(seed, 991);
  Matrix<double> g(d, d);
  for (Index i = 0; i < g.size(); ++i) g.data()[i] = rng.normal();
  Eigen::HouseholderQR<Matrix<double>> qr(g);
  const Matrix<double> q = qr.householderQ();
  const Matrix<double> a = q * lambda.asDiagonal() * q.transpose();
  return (0.5 * (a + a.transpose())).cast<T>();
}

template <class T = double>
DenseOperator<T> operator_with_spectrum(const Vector<double>& lambda, std::uint64_t seed) {
  return DenseOperator<T>(with_spectrum<T>(lambda, seed));
}

/// lambda_j = lo + (hi - lo) j / (d - 1).
inline Vector<double> linear_spectrum(Index d, double lo, double hi) { return Vector<double>::LinSpaced(d, lo, hi); }

/// Mean and (sample) standard deviation of a list of values.
inline std::pair<double, double> mean_std(const std::vector<double>& x) {
  double m = 0, s = 0;
  for (double v : x) m += v;
  m /= static_cast<double>(x.size());
  for (double v : x) s += (v - m) * (v - m);
  return {m, std::sqrt(s / static_cast<double>(x.size() - 1))};
}

/// A user-written operator (not DenseOperator): a diagonal matrix that counts applied columns.
struct CountingDiagonal {
  using Scalar = double;
  Vector<double> diag;
  Index columns_applied = 0;
  Index dim() const { return diag.size(); }
  void apply(const Matrix<double>& v, Matrix<double>& out) {
    out = diag.asDiagonal() * v;
    columns_applied += v.cols();
  }
};
static_assert(LinearOperator<CountingDiagonal>);

/// The matrix-free 1-D Laplacian tridiag(-1, 2, -1) on n points; eigenvalues 2 - 2 cos(j pi / (n + 1)).
template <class T>
struct Laplacian1D {
  using Scalar = T;
  Index n;
  Index dim() const { return n; }
  void apply(const Matrix<T>& v, Matrix<T>& out) const {
    out = 2 * v;
    out.topRows(n - 1) -= v.bottomRows(n - 1);
    out.bottomRows(n - 1) -= v.topRows(n - 1);
  }
};
static_assert(LinearOperator<Laplacian1D<double>>);
static_assert(LinearOperator<Laplacian1D<float>>);

}  // namespace curvature::testing
