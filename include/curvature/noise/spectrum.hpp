#pragma once
// Gradient noise in the Hessian eigenbasis (003; SPEC 4). Given the top-k eigenpairs
// (lambda_k, u_k) of H (lanczos), with C = (1/N) sum_i g_i g_i^T the uncentred per-sample gradient
// second moment (003 eq. 2 near a minimum):
//   C_kl = u_k^T C u_l = (1/N) sum_i (u_k . g_i)(u_l . g_i)             (k x k, no d x d matrix)
//   power law log C_kk = beta log lambda_k + c, least squares over the numerically positive
//     eigenvalues (theory: 1 <= beta <= 2; the MSE-softmax Hessian is indefinite)
//   AWD prediction u_k^T ((1/N) sum_i H_i^2) u_k = (1/N) sum_i ||H_i u_k||^2 (per-sample H_i v)
//   rho_kl = C_kl / sqrt(C_kk C_ll), mean |rho_kl| over k != l, against the same statistic after
//     rotating C by a random orthogonal Q: (Q^T U)^T C (Q^T U), Q^T U a Haar-random k-frame.
#include <Eigen/QR>
#include <cmath>
#include <cstdint>
#include <limits>

#include "curvature/estimators/lanczos.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/noise/detail/batches.hpp"

namespace curvature {

/// The k x k matrix U^T C U = (1/N) (U^T G)(U^T G)^T for the d x N per-sample gradients G and a
/// d x k basis U (uncentred C, 003 eq. 2). O(d k N). Throws ShapeError when the row counts differ
/// or N = 0.
template <Scalar T>
Matrix<T> covariance_in_basis(const Matrix<T>& per_sample_gradients, const Matrix<T>& basis) {
  CURVATURE_CHECK_SHAPE(per_sample_gradients.rows() == basis.rows() && per_sample_gradients.cols() > 0,
                        "covariance_in_basis: per_sample_gradients is ", per_sample_gradients.rows(), "x",
                        per_sample_gradients.cols(), " but basis has ", basis.rows(), " rows (expected equal, N >= 1)");
  const Matrix<T> p = basis.transpose() * per_sample_gradients;
  return p * p.transpose() / static_cast<T>(per_sample_gradients.cols());
}

/// Mean |rho_kl| over ordered pairs k != l, rho_kl = C_kl / sqrt(C_kk C_ll) (003 eq. 6-7), over the
/// pairs whose diagonal entries are both > 0; NaN when there is no such pair. ShapeError unless square.
template <Scalar T>
T mean_offdiagonal_coupling(const Matrix<T>& c) {
  CURVATURE_CHECK_SHAPE(c.rows() == c.cols(), "mean_offdiagonal_coupling: matrix is ", c.rows(), "x", c.cols(),
                        ", expected square");
  T sum = 0;
  Index pairs = 0;
  for (Index k = 0; k < c.rows(); ++k)
    for (Index l = 0; l < c.cols(); ++l)
      if (k != l && c(k, k) > 0 && c(l, l) > 0) {
        sum += std::abs(c(k, l)) / std::sqrt(c(k, k) * c(l, l));
        ++pairs;
      }
  return pairs > 0 ? sum / static_cast<T>(pairs) : std::numeric_limits<T>::quiet_NaN();
}

/// A d x k matrix with orthonormal columns, uniform (Haar) on the Stiefel manifold: the QR factor
/// of a Gaussian block (probes make_probes(d, k, Gaussian, seed)) with the signs of diag(R) made
/// positive. Distributed as Q^T U for a Haar-random orthogonal Q and any fixed orthonormal U.
template <Scalar T>
Matrix<T> random_orthonormal_frame(Index d, Index k, std::uint64_t seed) {
  CURVATURE_CHECK_VALUE(k >= 1 && k <= d, "random_orthonormal_frame: k = ", k, ", expected 1 <= k <= d = ", d);
  const Matrix<T> z = make_probes<T>(d, k, Probe::Gaussian, seed);
  const Eigen::HouseholderQR<Matrix<T>> qr(z);
  Matrix<T> q = qr.householderQ() * Matrix<T>::Identity(d, k);
  for (Index j = 0; j < k; ++j)
    if (qr.matrixQR()(j, j) < 0) q.col(j) = -q.col(j);
  return q;
}

/// (1/N) sum_i ||H_i u_k||^2 = u_k^T ((1/N) sum_i H_i^2) u_k for every column u_k of `basis`
/// (003's AWD second moment), with per_sample_hvp on `block` columns at a time (d x block N
/// memory; k / block HVP passes). Needs an HvpModel. Throws ShapeError when basis has != d rows.
template <Model M, Loss L>
Vector<scalar_of<M>> awd_second_moment(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                       const typename L::Targets& y, const Matrix<scalar_of<M>>& basis,
                                       Index block = 8) {
  using T = scalar_of<M>;
  CURVATURE_CHECK_SHAPE(basis.rows() == m.num_params(), "awd_second_moment: basis has ", basis.rows(),
                        " rows, expected d = ", m.num_params());
  CURVATURE_CHECK_VALUE(block >= 1, "awd_second_moment: block = ", block, ", expected >= 1");
  CURVATURE_CHECK_SHAPE(x.cols() > 0, "awd_second_moment: x has no samples (0 columns)");
  const Index n = x.cols();
  Vector<T> out(basis.cols());
  Matrix<T> v, hv;
  for (Index j = 0; j < basis.cols(); j += block) {
    const Index b = std::min(block, basis.cols() - j);
    v = basis.middleCols(j, b);
    per_sample_hvp(m, loss, x, y, v, hv);  // column r*N + i: H_i u_{j+r}
    for (Index r = 0; r < b; ++r) out(j + r) = hv.middleCols(r * n, n).squaredNorm() / static_cast<T>(n);
  }
  return out;
}

/// Which points enter power_law_fit.
struct PowerLawOptions {
  Index first_rank = 1;                   ///< fit ranks k in [first_rank, last_rank], 1-based, in the given order
  Index last_rank = 0;                    ///< 0: up to the last
  double min_relative_eigenvalue = 1e-8;  ///< numerically positive: lambda_k > this * max_k |lambda_k|
};

/// Least-squares fit log y_k = exponent log lambda_k + intercept and its quality.
template <Scalar T>
struct PowerLawFit {
  T exponent = std::numeric_limits<T>::quiet_NaN();  ///< beta
  T intercept = std::numeric_limits<T>::quiet_NaN();  ///< c
  T exponent_std_error = std::numeric_limits<T>::quiet_NaN();  ///< OLS: residual_std / sqrt(S_xx)
  T r_squared = std::numeric_limits<T>::quiet_NaN();
  T residual_std = std::numeric_limits<T>::quiet_NaN();  ///< sqrt(SS_res / (n - 2)); NaN for n = 2
  Index points = 0;      ///< points used
  Index first_rank = 0;  ///< smallest and largest rank k (1-based) among them; 0 when none
  Index last_rank = 0;
  bool valid() const { return points >= 2 && std::isfinite(exponent); }
};

namespace detail {
template <class T>
void check_power_law_args(const Vector<T>& lambda, const Vector<T>& y, const PowerLawOptions& o,
                          const Vector<T>& uncertainty) {
  constexpr const char* fn = "power_law_fit";
  CURVATURE_CHECK_SHAPE(lambda.size() == y.size(), fn, ": eigenvalues has ", lambda.size(), " entries but values has ",
                        y.size());
  CURVATURE_CHECK_SHAPE(uncertainty.size() == 0 || uncertainty.size() == lambda.size(), fn, ": uncertainty has ",
                        uncertainty.size(), " entries, expected 0 or ", lambda.size());
  CURVATURE_CHECK_VALUE(o.first_rank >= 1, fn, ": first_rank = ", o.first_rank, ", expected >= 1");
  CURVATURE_CHECK_VALUE(o.last_rank == 0 || o.last_rank >= o.first_rank, fn, ": last_rank = ", o.last_rank,
                        ", expected 0 or >= first_rank = ", o.first_rank);
  CURVATURE_CHECK_VALUE(std::isfinite(o.min_relative_eigenvalue) && o.min_relative_eigenvalue >= 0, fn,
                        ": min_relative_eigenvalue = ", o.min_relative_eigenvalue, ", expected a finite value >= 0");
}

/// Ordinary least squares of ly on lx (n >= 2 points with distinct lx), into r.
template <class T>
void ordinary_least_squares(const Vector<T>& lx, const Vector<T>& ly, PowerLawFit<T>& r) {
  const Index n = lx.size();
  if (n < 2) return;
  const T mx = lx.mean(), my = ly.mean();
  const T sxx = (lx.array() - mx).square().sum();
  const T syy = (ly.array() - my).square().sum();
  if (!(sxx > 0)) return;
  r.exponent = ((lx.array() - mx) * (ly.array() - my)).sum() / sxx;
  r.intercept = my - r.exponent * mx;
  const T ss_res = (ly.array() - r.intercept - r.exponent * lx.array()).square().sum();
  r.r_squared = syy > 0 ? T(1) - ss_res / syy : T(1);
  if (n > 2) {
    r.residual_std = std::sqrt(ss_res / static_cast<T>(n - 2));
    r.exponent_std_error = r.residual_std / std::sqrt(sxx);
  }
}
}  // namespace detail

/// Fits log values_k = beta log lambda_k + c by least squares (003 Sec. 4) over the ranks k in the
/// options' range with lambda_k numerically positive (lambda_k > min_relative_eigenvalue *
/// max|lambda| and, when `uncertainty` is given, lambda_k > uncertainty_k, e.g. Lanczos residual
/// norms) and values_k > 0. Ranks are positions in the given order (lanczos: descending). Fewer
/// than 2 usable points (or equal lambdas): an invalid fit (NaN exponent), not an exception.
template <Scalar T>
PowerLawFit<T> power_law_fit(const Vector<T>& eigenvalues, const Vector<T>& values, const PowerLawOptions& options = {},
                             const Vector<T>& uncertainty = Vector<T>()) {
  detail::check_power_law_args(eigenvalues, values, options, uncertainty);
  const Index k = eigenvalues.size();
  const Index last = options.last_rank == 0 ? k : std::min(options.last_rank, k);
  const T floor = k > 0 ? static_cast<T>(options.min_relative_eigenvalue) * eigenvalues.cwiseAbs().maxCoeff() : T(0);
  Vector<T> lx(k), ly(k);
  PowerLawFit<T> r;
  for (Index j = options.first_rank - 1; j < last; ++j) {
    const T lam = eigenvalues(j), v = values(j);
    const bool positive = lam > floor && (uncertainty.size() == 0 || lam > uncertainty(j));
    if (!positive || !(v > 0) || !std::isfinite(lam) || !std::isfinite(v)) continue;
    lx(r.points) = std::log(lam);
    ly(r.points) = std::log(v);
    if (r.points++ == 0) r.first_rank = j + 1;
    r.last_rank = j + 1;
  }
  detail::ordinary_least_squares<T>(lx.head(r.points), ly.head(r.points), r);
  return r;
}

/// Options of noise_curvature_spectrum.
struct NoiseSpectrumOptions {
  PowerLawOptions fit{};
  bool awd = true;          ///< also compute the AWD second moment (k / block per-sample HVP passes)
  Index block = 8;          ///< eigenvectors per per-sample HVP pass
  std::uint64_t seed = 0;   ///< of the random frame: random_orthonormal_frame(d, k, seed)
};

/// 003's statistics of the noise C in the top-k eigenbasis of H.
template <Scalar T>
struct NoiseCurvatureSpectrum {
  Vector<T> eigenvalues;        ///< lambda_k as given
  Matrix<T> covariance;         ///< k x k, C_kl = u_k^T C u_l (C uncentred)
  Matrix<T> covariance_random;  ///< k x k, C in the random frame W: W^T C W
  Vector<T> awd;                ///< (1/N) sum_i ||H_i u_k||^2; empty unless options.awd
  PowerLawFit<T> fit;           ///< log C_kk against log lambda_k
  PowerLawFit<T> awd_fit;       ///< log awd_k against log lambda_k
  T mean_offdiagonal = 0;         ///< mean |rho_kl| in the H eigenbasis
  T mean_offdiagonal_random = 0;  ///< the same for C rotated by a random orthogonal matrix
  Index samples = 0;              ///< N
};

/// All of 003's statistics on the batch (x, y) from given eigenpairs of H (d x k eigenvectors,
/// orthonormal columns; k eigenvalues, descending). One per-sample gradient pass, O(d k N), plus
/// the AWD passes. Throws ShapeError for mismatched sizes, ValueError for k = 0.
template <Model M, Loss L>
NoiseCurvatureSpectrum<scalar_of<M>> noise_curvature_spectrum(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                              const typename L::Targets& y,
                                                              const Vector<scalar_of<M>>& eigenvalues,
                                                              const Matrix<scalar_of<M>>& eigenvectors,
                                                              const NoiseSpectrumOptions& options = {},
                                                              const Vector<scalar_of<M>>& uncertainty = {}) {
  using T = scalar_of<M>;
  constexpr const char* fn = "noise_curvature_spectrum";
  const Index k = eigenvalues.size();
  CURVATURE_CHECK_VALUE(k >= 1, fn, ": no eigenpairs (k = 0)");
  CURVATURE_CHECK_SHAPE(eigenvectors.rows() == m.num_params() && eigenvectors.cols() == k, fn, ": eigenvectors is ",
                        eigenvectors.rows(), "x", eigenvectors.cols(), ", expected d x k = ", m.num_params(), "x", k);
  NoiseCurvatureSpectrum<T> r;
  Matrix<T> g;
  per_sample_gradients(m, loss, x, y, g);
  r.eigenvalues = eigenvalues;
  r.samples = x.cols();
  r.covariance = covariance_in_basis(g, eigenvectors);
  r.covariance_random = covariance_in_basis(g, random_orthonormal_frame<T>(m.num_params(), k, options.seed));
  r.fit = power_law_fit<T>(eigenvalues, r.covariance.diagonal(), options.fit, uncertainty);
  r.mean_offdiagonal = mean_offdiagonal_coupling(r.covariance);
  r.mean_offdiagonal_random = mean_offdiagonal_coupling(r.covariance_random);
  if (options.awd) {
    r.awd = awd_second_moment(m, loss, x, y, eigenvectors, options.block);
    r.awd_fit = power_law_fit<T>(eigenvalues, r.awd, options.fit, uncertainty);
  }
  return r;
}

/// As above from a lanczos result (computed with eigenvectors); its Ritz residual norms serve as
/// the eigenvalues' uncertainty in the positivity test. ValueError when it has no eigenvectors.
template <Model M, Loss L>
NoiseCurvatureSpectrum<scalar_of<M>> noise_curvature_spectrum(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                              const typename L::Targets& y,
                                                              const LanczosResult<scalar_of<M>>& eig,
                                                              const NoiseSpectrumOptions& options = {}) {
  CURVATURE_CHECK_VALUE(eig.eigenvectors.cols() == eig.eigenvalues.size(), "noise_curvature_spectrum: the lanczos "
                        "result has no eigenvectors; run it with compute_eigenvectors = true");
  return noise_curvature_spectrum(m, loss, x, y, eig.eigenvalues, eig.eigenvectors, options, eig.residual_norms);
}

}  // namespace curvature
