#pragma once
// Squared error ell = 0.5 ||f - y||^2 summed over the K outputs (SPEC section 0); the output
// Hessian is the identity, and so is its factor. The model's predictive distribution is
// N(f, I), so the true Fisher equals the GGN.
#include <cstdint>
#include <vector>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"

namespace curvature::loss {

template <Scalar T>
struct MeanSquaredError {
  using scalar_type = T;
  using Targets = Matrix<T>;  ///< K x N regression targets
  static constexpr const char* name = "mse";

  Index num_targets(const Targets& y) const { return y.cols(); }

  void check(const Matrix<T>& f, const Targets& y) const {
    CURVATURE_CHECK_SHAPE(y.rows() == f.rows() && y.cols() == f.cols(), "MeanSquaredError: targets are ",
                          y.rows(), "x", y.cols(), " but outputs are ", f.rows(), "x", f.cols());
    CURVATURE_CHECK_VALUE(all_finite(y), "MeanSquaredError: targets contain NaN or Inf");
  }

  Vector<T> values(const Matrix<T>& f, const Targets& y) const {
    check(f, y);
    return T(0.5) * (f - y).colwise().squaredNorm().transpose();
  }
  Matrix<T> gradient(const Matrix<T>& f, const Targets& y) const {
    check(f, y);
    return f - y;
  }
  Matrix<T> hessian_product(const Matrix<T>&, const Targets&, const Matrix<T>& u) const { return u; }
  /// K replicas: column c*N + i is e_c.
  Matrix<T> hessian_factor(const Matrix<T>& f, const Targets&) const {
    const Index k = f.rows(), n = f.cols();
    Matrix<T> s = Matrix<T>::Zero(k, k * n);
    for (Index c = 0; c < k; ++c) s.row(c).segment(c * n, n).setOnes();
    return s;
  }
  /// y ~ N(f, I).
  Targets sample(const Matrix<T>& f, Rng& rng) const {
    Targets y(f.rows(), f.cols());
    for (Index j = 0; j < y.size(); ++j) y.data()[j] = f.data()[j] + rng.normal<T>();
    return y;
  }

  /// One-hot targets for integer labels (curvature-probe's mse with labels).
  static Targets one_hot(const std::vector<std::int64_t>& labels, Index k) {
    Targets y = Targets::Zero(k, static_cast<Index>(labels.size()));
    for (std::size_t i = 0; i < labels.size(); ++i) {
      CURVATURE_CHECK_VALUE(labels[i] >= 0 && labels[i] < k, "one_hot: label ", labels[i], " of sample ", i,
                            " is outside [0, ", k, ")");
      y(labels[i], static_cast<Index>(i)) = T(1);
    }
    return y;
  }
};

static_assert(Loss<MeanSquaredError<float>> && Loss<MeanSquaredError<double>>);

}  // namespace curvature::loss
