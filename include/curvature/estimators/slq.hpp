#pragma once
// Stochastic Lanczos quadrature (SPEC 2; Ubaru, Chen, Saad 2017; Ghorbani, Krishnan, Xiao 2019).
// For a start v with n Lanczos steps, T_n = S diag(theta) S^T gives the Gauss quadrature
//   v^T f(A) v ~ ||v||^2 sum_i tau_i^2 f(theta_i),   tau_i = e_1^T S e_i,
// exact for polynomials of degree <= 2n - 1. Averaging over n_v random starts:
//   tr f(A) ~ (1/n_v) sum_l ||v_l||^2 sum_i tau_li^2 f(theta_li)           (Ubaru et al. eq. 5),
//   density phi(t) ~ (1/n_v) sum_l sum_i tau_li^2 g_sigma(t - theta_li)    (Ghorbani et al. eq. 3),
// g_sigma a Gaussian kernel; the weights of each start sum to 1, so phi integrates to 1 and its
// mean is (1/n_v) sum_l v_l^T A v_l / ||v_l||^2 ~ tr(A) / d. Standard errors are over the starts.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <numbers>
#include <utility>
#include <vector>

#include "curvature/estimators/detail/accumulate.hpp"
#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/detail/lanczos_block.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// Options of the SLQ estimators.
struct SlqOptions {
  Index starts = 10;          ///< random start vectors n_v (the standard error is over these)
  Index lanczos_steps = 90;   ///< n per start (capped at d); Ghorbani et al. use 90
  Probe probe = Probe::Rademacher;
  std::uint64_t seed = 0;
  Index block_size = 4;       ///< starts run in lockstep, one d x block_size product per step
  bool reorthogonalize = true;  ///< full reorthogonalisation; memory d x n x block_size scalars
};

/// Options of the density grid.
struct DensityOptions {
  double sigma = 0;        ///< kernel width; 0: 1% of the Ritz value range
  Index grid_points = 512;
  double grid_min = std::numeric_limits<double>::quiet_NaN();  ///< NaN: min Ritz value - 5 sigma
  double grid_max = std::numeric_limits<double>::quiet_NaN();  ///< NaN: max Ritz value + 5 sigma
};

/// A spectral density on a grid, with the quadrature it came from.
template <class T>
struct SpectralDensity {
  Vector<T> grid, density;
  Vector<T> std_error;  ///< of the density at each grid point, over the starts
  Matrix<T> nodes;      ///< Ritz values, n x n_v (a start that broke down early is padded with 0)
  Matrix<T> weights;    ///< tau^2, n x n_v, each column summing to 1 (0 on the padding)
  T sigma = 0;
  Index starts = 0;
  Index matvecs = 0;
};

namespace detail {

/// Gauss quadrature nodes and weights of every start, and ||v_l||^2.
template <class T>
struct SlqQuadrature {
  Matrix<T> nodes, weights;
  Vector<T> norms2;
  std::vector<Index> lengths;
  Index matvecs = 0;
};

inline void check_slq_options(const SlqOptions& o, const char* fn) {
  check_at_least(o.starts, 1, fn, "starts");
  check_at_least(o.lanczos_steps, 1, fn, "lanczos_steps");
  check_at_least(o.block_size, 1, fn, "block_size");
}

template <class T>
void store_quadrature(const LanczosBlock<T>& lb, Index c, Index l, SlqQuadrature<T>& q) {
  const auto es = lb.eigen(c);
  const Index n = lb.length(c);
  q.nodes.col(l).head(n) = es.eigenvalues();
  q.weights.col(l).head(n) = es.eigenvectors().row(0).transpose().cwiseAbs2();
  q.lengths[l] = n;
}

template <LinearOperator A>
SlqQuadrature<typename A::Scalar> slq_quadrature(A& op, const SlqOptions& o, const char* fn) {
  using T = typename A::Scalar;
  check_slq_options(o, fn);
  const Index d = checked_dim(op, fn), n = std::min(d, o.lanczos_steps);
  SlqQuadrature<T> q{Matrix<T>::Zero(n, o.starts), Matrix<T>::Zero(n, o.starts), Vector<T>(o.starts),
                     std::vector<Index>(o.starts, 0)};
  for (Index first = 0; first < o.starts; first += o.block_size) {
    const Index b = std::min(o.block_size, o.starts - first);
    Matrix<T> v = make_probes<T>(d, b, o.probe, probe_seed(o.seed, 6), first);
    q.norms2.segment(first, b) = v.colwise().squaredNorm().transpose();
    LanczosBlock<T> lb(std::move(v), n, o.reorthogonalize);
    while (!lb.finished()) lb.step(op, fn);
    q.matvecs += lb.matvecs();
    for (Index c = 0; c < b; ++c) store_quadrature(lb, c, first + c, q);
  }
  return q;
}

/// (1/n_v) sum_l ||v_l||^2 sum_i tau_li^2 f(theta_li) with its standard error.
template <class T, class F>
Estimate<T> slq_trace(const SlqQuadrature<T>& q, F& f) {
  Welford<T> acc;
  for (Index l = 0; l < q.nodes.cols(); ++l) {
    T s = 0;
    for (Index i = 0; i < q.lengths[l]; ++i) s += q.weights(i, l) * static_cast<T>(f(q.nodes(i, l)));
    acc.add(q.norms2(l) * s);
  }
  return Estimate<T>{acc.mean, acc.std_error(), acc.n, q.matvecs, true};
}

}  // namespace detail

/// tr f(A) by SLQ, for f defined on the spectrum. Cost: starts x min(d, lanczos_steps) products.
/// Throws ValueError for starts, lanczos_steps or block_size < 1.
template <LinearOperator A, class F>
  requires std::invocable<F&, typename A::Scalar>
Estimate<typename A::Scalar> trace_of_function(A& op, F f, const SlqOptions& options = {}) {
  const auto q = detail::slq_quadrature(op, options, "trace_of_function");
  return detail::slq_trace(q, f);
}

/// log det(A) = tr log(A) by SLQ. Throws ValueError when a Ritz value is <= 0 (A is not positive
/// definite: add damping), besides the errors of trace_of_function.
template <LinearOperator A>
Estimate<typename A::Scalar> log_determinant(A& op, const SlqOptions& options = {}) {
  using T = typename A::Scalar;
  const auto q = detail::slq_quadrature(op, options, "log_determinant");
  for (Index l = 0; l < q.nodes.cols(); ++l)
    for (Index i = 0; i < q.lengths[l]; ++i)
      CURVATURE_CHECK_VALUE(q.nodes(i, l) > 0, "log_determinant: Ritz value ", q.nodes(i, l), " of start ", l,
                            " is <= 0; the operator is not positive definite (add damping)");
  auto log = [](T x) { return std::log(x); };
  return detail::slq_trace(q, log);
}

namespace detail {

/// Kernel width and grid from the options, or from the range of the Ritz values.
template <class T>
std::pair<T, Vector<T>> density_grid(const SlqQuadrature<T>& q, const DensityOptions& o, const char* fn) {
  T lo = std::numeric_limits<T>::infinity(), hi = -lo;
  for (Index l = 0; l < q.nodes.cols(); ++l)
    for (Index i = 0; i < q.lengths[l]; ++i) lo = std::min(lo, q.nodes(i, l)), hi = std::max(hi, q.nodes(i, l));
  const T range = hi - lo > 0 ? hi - lo : std::max(std::abs(hi), T(1));
  const T sigma = o.sigma > 0 ? static_cast<T>(o.sigma) : T(0.01) * range;
  const T a = std::isnan(o.grid_min) ? lo - 5 * sigma : static_cast<T>(o.grid_min);
  const T b = std::isnan(o.grid_max) ? hi + 5 * sigma : static_cast<T>(o.grid_max);
  CURVATURE_CHECK_VALUE(std::isfinite(a) && std::isfinite(b) && a < b, fn, ": grid [", a, ", ", b,
                        "] is empty or not finite (grid_min, grid_max)");
  return {sigma, Vector<T>::LinSpaced(o.grid_points, a, b)};
}

}  // namespace detail

/// The spectral density of A (eigenvalues counted with weight 1/d) by SLQ with a Gaussian kernel
/// of width sigma, evaluated on a grid. Cost as trace_of_function. Throws ValueError for sigma < 0,
/// grid_points < 2, an empty grid, besides the errors of trace_of_function.
template <LinearOperator A>
SpectralDensity<typename A::Scalar> spectral_density(A& op, const SlqOptions& options = {},
                                                     const DensityOptions& density = {}) {
  using T = typename A::Scalar;
  constexpr const char* fn = "spectral_density";
  detail::check_non_negative(density.sigma, fn, "sigma");
  detail::check_at_least(density.grid_points, 2, fn, "grid_points");
  const auto q = detail::slq_quadrature(op, options, fn);
  auto [sigma, grid] = detail::density_grid(q, density, fn);
  const T norm = T(1) / (sigma * std::sqrt(T(2) * std::numbers::pi_v<T>));
  detail::WelfordVector<T> acc(grid.size());
  Vector<T> phi(grid.size());
  for (Index l = 0; l < q.nodes.cols(); ++l) {
    phi.setZero();
    for (Index i = 0; i < q.lengths[l]; ++i)
      phi.array() += q.weights(i, l) * norm * (-(grid.array() - q.nodes(i, l)).square() / (2 * sigma * sigma)).exp();
    acc.add(phi);
  }
  return SpectralDensity<T>{grid, acc.mean, acc.std_error(), q.nodes, q.weights, sigma, acc.n, q.matvecs};
}

}  // namespace curvature
