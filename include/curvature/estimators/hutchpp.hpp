#pragma once
// Hutch++ (Meyer, Musco, Musco, Woodruff 2021, Algorithm 1): with a budget of m products, a sketch
// S (d x m/3) gives Q = orth(A S); then
//   tr(A) ~ tr(Q^T A Q) + (1/g) sum_k g_k^T (I - QQ^T) A (I - QQ^T) g_k,   g = m - 2 m/3 probes.
// The top of the spectrum is counted exactly and Hutchinson only sees the deflated rest, so the
// error falls as O(1/m) rather than O(1/sqrt(m)) when the spectrum decays fast (SPEC 2). Prefer it
// to hutchinson_trace for low effective rank (Hessians and Fishers of trained networks, whose
// top eigenvalues dominate the trace) when m >= ~30 products are affordable; for flat spectra
// (||A||_F^2 ~ tr(A)^2 / d) it spends a third of the budget on a sketch that buys nothing.
#include <algorithm>
#include <cstdint>

#include <Eigen/QR>

#include "curvature/estimators/detail/accumulate.hpp"
#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// Options of hutchpp_trace.
struct HutchppOptions {
  Probe probe = Probe::Rademacher;  ///< for both the sketch S and the residual probes G
  std::uint64_t seed = 0;
  Index matvecs = 102;    ///< budget of products: m/3 sketch, m/3 for A Q, the rest residual probes
  Index block_size = 0;   ///< columns per operator application; 0: each stage in one application
};

namespace detail {

/// An orthonormal basis Q (d x s) of the range of Y (Householder QR, thin Q).
template <class T>
Matrix<T> orthonormal_basis(const Matrix<T>& y) {
  Eigen::HouseholderQR<Matrix<T>> qr(y);
  return qr.householderQ() * Matrix<T>::Identity(y.rows(), y.cols());
}

}  // namespace detail

/// tr(A) by Hutch++. `std_error` is the standard error of the Hutchinson part on the deflated
/// residual (the low-rank part tr(Q^T A Q) is exact given Q); `probes` counts the residual
/// probes. When m/3 >= d the sketch spans R^d, only 2d products are used and the value is exact
/// (std_error 0). Throws ValueError when matvecs < 3 or block_size < 0.
template <LinearOperator A>
Estimate<typename A::Scalar> hutchpp_trace(A& op, const HutchppOptions& options = {}) {
  using T = typename A::Scalar;
  constexpr const char* fn = "hutchpp_trace";
  detail::check_at_least(options.matvecs, 3, fn, "matvecs");
  detail::check_at_least(options.block_size, 0, fn, "block_size");
  const Index d = detail::checked_dim(op, fn);
  const Index s = std::min(options.matvecs / 3, d);
  const Index g = s == d ? 0 : options.matvecs - 2 * s;

  Matrix<T> y;
  detail::apply_in_blocks(op, make_probes<T>(d, s, options.probe, probe_seed(options.seed, 1)), y,
                          options.block_size, fn);
  const Matrix<T> q = detail::orthonormal_basis(y);
  detail::apply_in_blocks(op, q, y, options.block_size, fn);
  const T low_rank = q.cwiseProduct(y).sum();  // tr(Q^T A Q)

  Matrix<T> w = make_probes<T>(d, g, options.probe, probe_seed(options.seed, 2));
  w -= q * (q.transpose() * w);  // (I - QQ^T) G
  detail::Welford<T> acc;
  if (g > 0) {
    detail::apply_in_blocks(op, w, y, options.block_size, fn);
    for (Index k = 0; k < g; ++k) acc.add(w.col(k).dot(y.col(k)));
  }
  const T se = g == 0 ? T(0) : acc.std_error();
  return Estimate<T>{low_rank + acc.mean, se, g, 2 * s + g, true};
}

}  // namespace curvature
