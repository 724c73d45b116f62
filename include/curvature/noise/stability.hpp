#pragma once
// Linear stability of SGD (002 Sec. 3; SPEC 4): the bounds on ||H||_F that a linearly stable
// minimum satisfies (Thm 3.3 with mu0, Prop. 3.4 with mu1), the escape factor of Thm 3.5, and a
// simulator of linearized SGD (002 eq. 4) theta <- theta - (eta/B) sum_{i in batch} H_i theta on
// the quadratic model L(theta) = (1/2) theta^T H theta, H = (1/N) sum_i H_i, to check escape.
//
// mu0 and mu1 are lower bounds of mu(theta), mu1(theta) over the region SGD visits: not
// computable. The functions take the value the caller used (e.g. alignment_factors at one
// iterate) and return it with the result, tagged with which factor it was, so that every report
// can state which mu, at which iterate, entered a bound.
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "curvature/noise/minibatch.hpp"

namespace curvature {

/// Which alignment factor entered a bound.
enum class AlignmentFactor {
  Mu,  ///< mu = Tr(Sigma G) / (2 L ||G||_F^2) (002 Thm 3.3, Thm 3.5)
  Mu1  ///< mu1 = Tr(Sigma1 G) / (2 L ||G||_F^2) (002 Prop. 3.4)
};
inline const char* to_string(AlignmentFactor f) { return f == AlignmentFactor::Mu ? "mu" : "mu1"; }

/// An upper bound on ||H||_F at a linearly stable minimum, with what entered it.
template <Scalar T>
struct StabilityBound {
  T value = 0;  ///< the bound on ||H(theta*)||_F
  T mu = 0;     ///< the alignment factor's value that was used (mu0 or mu1)
  AlignmentFactor factor = AlignmentFactor::Mu;
  T eta = 0;
  Index batch_size = 0;
};

/// Thm 3.5's escape factor gamma0 = eta^2 mu0 ||H||_F^2 / B, with what entered it.
template <Scalar T>
struct EscapeFactor {
  T gamma0 = 0;
  T mu = 0;  ///< mu0 as given
  T h_frobenius = 0;
  T eta = 0;
  Index batch_size = 0;
  /// Thm 3.5: E[L(theta_t)] >= gamma0^t E[L(theta_0)], an escape when gamma0 > 1. The rate bounds
  /// the mean loss over trajectories; a typical trajectory (geometric mean) grows more slowly.
  bool escapes() const { return gamma0 > T(1); }
};

namespace detail {
template <class T>
void check_stability_args(T mu, T eta, Index b, const char* fn, const char* mu_name) {
  check_positive(static_cast<double>(mu), fn, mu_name);
  check_positive(static_cast<double>(eta), fn, "eta");
  CURVATURE_CHECK_VALUE(b >= 1, fn, ": batch_size B = ", b, ", expected >= 1");
}
}  // namespace detail

/// 002 Thm 3.3: a linearly stable minimum has ||H||_F <= sqrt(B / mu0) / eta when mu(theta) >= mu0
/// > 0. Throws ValueError for mu0 <= 0 (no mu-alignment: no bound), eta <= 0, B < 1.
template <Scalar T>
StabilityBound<T> linear_stability_bound(T mu0, std::type_identity_t<T> eta, Index batch_size) {
  detail::check_stability_args(mu0, eta, batch_size, "linear_stability_bound", "mu0");
  const T b = static_cast<T>(batch_size);
  return {std::sqrt(b / mu0) / eta, mu0, AlignmentFactor::Mu, eta, batch_size};
}

/// 002 Prop. 3.4: with mu1(theta) >= mu1 > 0, ||H||_F <= min(B / sqrt((B - 1) mu1), 2 B / mu1) / eta
/// (B = 1: 2 / (mu1 eta)). Throws ValueError for mu1 <= 0, eta <= 0, B < 1.
template <Scalar T>
StabilityBound<T> linear_stability_bound_mu1(T mu1, std::type_identity_t<T> eta, Index batch_size) {
  detail::check_stability_args(mu1, eta, batch_size, "linear_stability_bound_mu1", "mu1");
  const T b = static_cast<T>(batch_size);
  const T first = batch_size > 1 ? b / std::sqrt((b - 1) * mu1) : std::numeric_limits<T>::infinity();
  return {std::min(first, 2 * b / mu1) / eta, mu1, AlignmentFactor::Mu1, eta, batch_size};
}

/// 002 Thm 3.5: gamma0 = eta^2 mu0 ||H||_F^2 / B (> 1 exactly when ||H||_F exceeds Thm 3.3's
/// bound). Throws ValueError for mu0 <= 0, eta <= 0, B < 1, ||H||_F < 0 or not finite.
template <Scalar T>
EscapeFactor<T> escape_factor(T mu0, std::type_identity_t<T> h_frobenius, std::type_identity_t<T> eta,
                              Index batch_size) {
  detail::check_stability_args(mu0, eta, batch_size, "escape_factor", "mu0");
  CURVATURE_CHECK_VALUE(std::isfinite(h_frobenius) && h_frobenius >= 0, "escape_factor: h_frobenius = ", h_frobenius,
                        ", expected a finite value >= 0");
  return {eta * eta * mu0 * h_frobenius * h_frobenius / static_cast<T>(batch_size), mu0, h_frobenius, eta,
          batch_size};
}

// ---- Linearized SGD ---------------------------------------------------------------------------

/// Per-sample curvatures H_i of a quadratic model: `apply_sample(i, V, out)` sets out = H_i V for a
/// d x m block. Optional `apply_mean(V, out)`: out = H V, H = (1/N) sum_i H_i (else N applies).
template <class S>
concept SampleCurvature = requires(S& s, const S& cs, Index i, const Matrix<typename S::Scalar>& v,
                                   Matrix<typename S::Scalar>& out) {
  typename S::Scalar;
  { cs.dim() } -> std::convertible_to<Index>;
  { cs.num_samples() } -> std::convertible_to<Index>;
  s.apply_sample(i, v, out);
};

/// 002's linearization (eq. 4-5): H_i = grad f(x_i) grad f(x_i)^T from the d x N model gradients
/// (model_gradients); H_i V costs O(d m), no d x d matrix.
template <Scalar T>
class RankOneSamples {
 public:
  using Scalar = T;
  explicit RankOneSamples(Matrix<T> model_grads) : g_(std::move(model_grads)) {
    CURVATURE_CHECK_SHAPE(g_.cols() > 0, "RankOneSamples: model_grads has no columns (N = 0)");
  }
  Index dim() const { return g_.rows(); }
  Index num_samples() const { return g_.cols(); }
  void apply_sample(Index i, const Matrix<T>& v, Matrix<T>& out) { out.noalias() = g_.col(i) * (g_.col(i).transpose() * v); }
  void apply_mean(const Matrix<T>& v, Matrix<T>& out) {
    out.noalias() = g_ * (g_.transpose() * v) / static_cast<T>(g_.cols());
  }

 private:
  Matrix<T> g_;
};

/// Explicit d x d per-sample matrices H_i (small d).
template <Scalar T>
class DenseSamples {
 public:
  using Scalar = T;
  explicit DenseSamples(std::vector<Matrix<T>> h) : h_(std::move(h)) {
    CURVATURE_CHECK_SHAPE(!h_.empty(), "DenseSamples: no matrices (N = 0)");
    mean_ = Matrix<T>::Zero(h_[0].rows(), h_[0].rows());
    for (std::size_t i = 0; i < h_.size(); ++i) {
      CURVATURE_CHECK_SHAPE(h_[i].rows() == mean_.rows() && h_[i].cols() == mean_.rows(), "DenseSamples: H_", i,
                            " is ", h_[i].rows(), "x", h_[i].cols(), ", expected ", mean_.rows(), "x", mean_.rows());
      mean_ += h_[i] / static_cast<T>(h_.size());
    }
  }
  Index dim() const { return mean_.rows(); }
  Index num_samples() const { return static_cast<Index>(h_.size()); }
  void apply_sample(Index i, const Matrix<T>& v, Matrix<T>& out) { out.noalias() = h_[static_cast<std::size_t>(i)] * v; }
  void apply_mean(const Matrix<T>& v, Matrix<T>& out) { out.noalias() = mean_ * v; }

 private:
  std::vector<Matrix<T>> h_;
  Matrix<T> mean_;
};

static_assert(SampleCurvature<RankOneSamples<double>> && SampleCurvature<DenseSamples<float>>);

/// Options of simulate_linearized_sgd.
struct LinearizedSgdOptions {
  double eta = 0.1;
  Index batch_size = 1;       ///< B
  Index steps = 10;           ///< t = 1..steps
  Index trajectories = 100;   ///< independent runs from the same theta0
  std::uint64_t seed = 0;     ///< trajectory r's batches: minibatch_indices(Rng(seed, r), N, B, sampling), step by step
  BatchSampling sampling = BatchSampling::WithReplacement;
};

/// Loss curves of linearized SGD: entry t is after t steps (entry 0: theta0).
template <Scalar T>
struct LinearizedSgdResult {
  Vector<T> mean_loss;            ///< mean over trajectories of L(theta_t), what Thm 3.5 bounds
  Vector<T> mean_loss_std_error;  ///< its standard error over trajectories
  Vector<T> geometric_mean_loss;  ///< exp(mean log L(theta_t)): a typical trajectory
  Matrix<T> final_theta;          ///< d x trajectories
  /// (mean_loss[T] / mean_loss[0])^(1/T): the empirical counterpart of gamma0.
  T growth_rate() const {
    const Index t = mean_loss.size() - 1;
    return t > 0 ? std::pow(mean_loss(t) / mean_loss(0), T(1) / static_cast<T>(t)) : T(1);
  }
};

namespace detail {

/// out = H V, by apply_mean when the type has it, else (1/N) sum_i H_i V.
template <SampleCurvature S>
void apply_mean_curvature(S& s, const Matrix<typename S::Scalar>& v, Matrix<typename S::Scalar>& out) {
  using T = typename S::Scalar;
  if constexpr (requires { s.apply_mean(v, out); }) {
    s.apply_mean(v, out);
  } else {
    Matrix<T> hi;
    out.setZero(v.rows(), v.cols());
    for (Index i = 0; i < s.num_samples(); ++i) {
      s.apply_sample(i, v, hi);
      out += hi;
    }
    out /= static_cast<T>(s.num_samples());
  }
}

/// Records L(theta_r) = (1/2) theta_r^T H theta_r of every trajectory at step t.
template <SampleCurvature S>
void record_losses(S& s, const Matrix<typename S::Scalar>& theta, Index t, LinearizedSgdResult<typename S::Scalar>& r) {
  using T = typename S::Scalar;
  Matrix<T> h;
  apply_mean_curvature(s, theta, h);
  const Vector<T> l = T(0.5) * theta.cwiseProduct(h).colwise().sum().transpose();
  const T n = static_cast<T>(l.size());
  r.mean_loss(t) = l.mean();
  r.mean_loss_std_error(t) = n > 1 ? std::sqrt((l.array() - l.mean()).square().sum() / (n - 1) / n) : T(0);
  r.geometric_mean_loss(t) = std::exp(l.array().log().mean());
}

/// One step of every trajectory: theta_r -= (eta/B) sum_i c_ir H_i theta_r, c_ir = multiplicity of i
/// in trajectory r's batch. One block apply per sample that any batch contains.
template <SampleCurvature S>
void linearized_sgd_step(S& s, Matrix<typename S::Scalar>& theta, std::vector<Rng>& rngs,
                         const LinearizedSgdOptions& o) {
  using T = typename S::Scalar;
  const Index n = s.num_samples(), trajectories = theta.cols();
  Matrix<T> counts = Matrix<T>::Zero(n, trajectories);
  for (Index r = 0; r < trajectories; ++r)
    for (Index i : minibatch_indices(rngs[static_cast<std::size_t>(r)], n, o.batch_size, o.sampling)) counts(i, r) += 1;
  Matrix<T> step = Matrix<T>::Zero(theta.rows(), trajectories), v, hv;
  for (Index i = 0; i < n; ++i) {
    if (!(counts.row(i).array() != T(0)).any()) continue;
    v = theta * counts.row(i).transpose().asDiagonal();
    s.apply_sample(i, v, hv);
    step += hv;
  }
  theta -= static_cast<T>(o.eta / static_cast<double>(o.batch_size)) * step;
}

}  // namespace detail

/// Runs linearized SGD (002 eq. 4) from theta0 for `steps` steps on `trajectories` independent
/// runs and records the loss curves (002 Fig. 4). Cost per step: one block apply of H_i per sample
/// drawn by some trajectory plus the loss (apply_mean, or N applies). Throws ValueError for
/// eta <= 0, B < 1, B > N without replacement, steps < 1, trajectories < 1; ShapeError when theta0
/// does not have d entries.
template <SampleCurvature S>
LinearizedSgdResult<typename S::Scalar> simulate_linearized_sgd(S& samples, const Vector<typename S::Scalar>& theta0,
                                                                const LinearizedSgdOptions& options) {
  using T = typename S::Scalar;
  constexpr const char* fn = "simulate_linearized_sgd";
  CURVATURE_CHECK_SHAPE(theta0.size() == samples.dim(), fn, ": theta0 has ", theta0.size(), " entries, expected d = ",
                        samples.dim());
  detail::check_positive(options.eta, fn, "eta");
  CURVATURE_CHECK_VALUE(options.batch_size >= 1, fn, ": batch_size B = ", options.batch_size, ", expected >= 1");
  CURVATURE_CHECK_VALUE(options.sampling == BatchSampling::WithReplacement || options.batch_size <= samples.num_samples(),
                        fn, ": batch_size B = ", options.batch_size, " exceeds the N = ", samples.num_samples(),
                        " samples (sampling without replacement)");
  CURVATURE_CHECK_VALUE(options.steps >= 1, fn, ": steps = ", options.steps, ", expected >= 1");
  CURVATURE_CHECK_VALUE(options.trajectories >= 1, fn, ": trajectories = ", options.trajectories, ", expected >= 1");
  std::vector<Rng> rngs;
  for (Index r = 0; r < options.trajectories; ++r) rngs.emplace_back(options.seed, static_cast<std::uint64_t>(r));
  LinearizedSgdResult<T> res;
  res.mean_loss.resize(options.steps + 1);
  res.mean_loss_std_error.resize(options.steps + 1);
  res.geometric_mean_loss.resize(options.steps + 1);
  Matrix<T> theta = theta0.replicate(1, options.trajectories);
  detail::record_losses(samples, theta, 0, res);
  for (Index t = 1; t <= options.steps; ++t) {
    detail::linearized_sgd_step(samples, theta, rngs, options);
    detail::record_losses(samples, theta, t, res);
  }
  res.final_theta = std::move(theta);
  return res;
}

}  // namespace curvature
