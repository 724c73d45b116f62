#pragma once
// Information geometric sharpness (001 eq. 6-7; SPEC 3): IGS = (1/N) sum_i g_i^T F^+ g_i with the
// Moore-Penrose pseudo-inverse of the Fisher, exact for small d. F = Z Z^T / N, Z the d x (K N)
// stack of per-sample factor Jacobians J_i^T S_i (S_i S_i^T = Lambda_i), so F^+ comes from the SVD
// of Z (squaring Z into F would square its condition number and blur the rank).
#include <Eigen/SVD>
#include <cmath>
#include <limits>

#include "curvature/model/derivatives.hpp"

namespace curvature {

/// F^+ = W W^T on F's numerical range, with the rank chosen at the largest relative gap of the
/// spectrum (SPEC 3: a fixed rcond moves IGS by percents).
template <Scalar T>
struct FisherPseudoInverse {
  Matrix<T> w;            ///< d x rank
  Vector<T> eigenvalues;  ///< of F, descending, min(d, K N) of them
  Index rank = 0;
  T gap = 0;  ///< eigenvalues(rank-1) / eigenvalues(rank) (the noise floor when rank = all)
  /// g^T F^+ g for each column g of G.
  Vector<T> quadratic_forms(const Matrix<T>& g) const { return (w.transpose() * g).colwise().squaredNorm(); }
};

namespace detail {
/// The rank at the largest ratio s_k / s_{k+1} of descending singular values, where values below the
/// round-off floor count as the floor (so a full-rank, well-conditioned stack keeps everything).
template <class T>
std::pair<Index, T> largest_gap_rank(const Vector<T>& s, Index rows, Index cols) {
  if (s.size() == 0 || !(s(0) > T(0))) return {0, T(0)};
  const T floor = s(0) * static_cast<T>(std::max(rows, cols)) * std::numeric_limits<T>::epsilon();
  Index best = 0;
  T best_ratio = 0;
  for (Index k = 0; k < s.size(); ++k) {
    const T next = k + 1 < s.size() ? std::max(s(k + 1), floor) : floor;
    const T ratio = std::max(s(k), floor) / next;
    if (ratio > best_ratio) best_ratio = ratio, best = k + 1;
  }
  return {best, best_ratio};
}
}  // namespace detail

/// The Fisher's exact pseudo-inverse over the batch (x, y); refuses d > max_params (dense d x K N).
template <Model M, Loss L>
FisherPseudoInverse<scalar_of<M>> fisher_pseudo_inverse(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                        const typename L::Targets& y, Index max_params = 5000) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "fisher_pseudo_inverse needs a PerSampleModel");
  detail::check_batch(m, loss, x, y, "fisher_pseudo_inverse");
  CURVATURE_CHECK_VALUE(m.num_params() <= max_params, "fisher_pseudo_inverse: d = ", m.num_params(),
                        " exceeds max_params = ", max_params, "; use a damped inverse (CG or K-FAC) instead");
  Matrix<T> z;  // column c*N + i: J_i^T S_i e_c
  m.backward(x, [&](const Matrix<T>& f) { return Matrix<T>(loss.hessian_factor(f, y)); }, Reduction::PerColumn, z,
             T(1));
  const T n = static_cast<T>(x.cols());
  Eigen::BDCSVD<Matrix<T>> svd(z, Eigen::ComputeThinU);
  const Vector<T>& s = svd.singularValues();
  FisherPseudoInverse<T> out;
  out.eigenvalues = s.array().square() / n;
  std::tie(out.rank, out.gap) = detail::largest_gap_rank<T>(s, z.rows(), z.cols());
  out.gap *= out.gap;  // singular-value ratio -> eigenvalue ratio
  // F^+ = N U_r S_r^-2 U_r^T = W W^T with W = sqrt(N) U_r S_r^-1.
  out.w = svd.matrixU().leftCols(out.rank) *
          (std::sqrt(n) * s.head(out.rank).cwiseInverse()).asDiagonal();
  return out;
}

/// IGS with its per-sample terms and what the mini-batch version (001 eq. 7) needs.
template <Scalar T>
struct IgsResult {
  T value = 0;              ///< IGS (001 eq. 6)
  Vector<T> per_sample;     ///< g_i^T F^+ g_i
  T full_batch = 0;         ///< gbar^T F^+ gbar, the b = N end of IGS_b
  Index n = 0;              ///< samples
  Index rank = 0;           ///< rank of F used by F^+
  T gap = 0;                ///< eigenvalue gap at the rank cutoff
  T damping = 0;            ///< 0 for the exact pseudo-inverse
};

/// Exact IGS (001 eq. 6) over the batch (x, y) with a pseudo-inverse already computed for it (by
/// fisher_pseudo_inverse on the same model and batch).
template <Model M, Loss L>
IgsResult<scalar_of<M>> information_geometric_sharpness(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                        const typename L::Targets& y,
                                                        const FisherPseudoInverse<scalar_of<M>>& pinv) {
  using T = scalar_of<M>;
  CURVATURE_CHECK_SHAPE(pinv.w.rows() == m.num_params(), "information_geometric_sharpness: pseudo-inverse is for d = ",
                        pinv.w.rows(), " but the model has ", m.num_params(), " parameters");
  Matrix<T> g;
  per_sample_gradients(m, loss, x, y, g);
  IgsResult<T> r;
  r.per_sample = pinv.quadratic_forms(g);
  r.value = r.per_sample.mean();
  r.full_batch = pinv.quadratic_forms(g.rowwise().mean())(0);
  r.n = x.cols();
  r.rank = pinv.rank;
  r.gap = pinv.gap;
  return r;
}

/// Exact IGS (001 eq. 6) over the batch (x, y), with the pseudo-inverse of the same batch's Fisher.
template <Model M, Loss L>
IgsResult<scalar_of<M>> information_geometric_sharpness(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                        const typename L::Targets& y, Index max_params = 5000) {
  return information_geometric_sharpness(m, loss, x, y, fisher_pseudo_inverse(m, loss, x, y, max_params));
}

/// How mini-batches B of size b are drawn in IGS_b's expectation (001 eq. 7 leaves p(B) open).
enum class BatchSampling { WithoutReplacement, WithReplacement };

/// IGS_b (001 eq. 7) in closed form from IGS and gbar^T F^+ gbar: with q_ij = g_i^T F^+ g_j,
/// E[gbar_B^T F^+ gbar_B] = (1/b) mean_i q_ii + (1 - 1/b) E_{i != j} q_ij (uniform subsets), and
/// E_{i != j} q_ij = (N^2 gbar^T F^+ gbar - N IGS) / (N (N - 1)); with replacement, (1/b) IGS +
/// (1 - 1/b) gbar^T F^+ gbar. b = 1 gives IGS; b = N without replacement gives gbar^T F^+ gbar.
template <Scalar T>
T minibatch_igs(const IgsResult<T>& r, Index b, BatchSampling sampling = BatchSampling::WithoutReplacement) {
  CURVATURE_CHECK_VALUE(b >= 1, "minibatch_igs: batch size b = ", b, " must be >= 1");
  const T bb = static_cast<T>(b);
  if (sampling == BatchSampling::WithReplacement) return r.value / bb + (T(1) - T(1) / bb) * r.full_batch;
  CURVATURE_CHECK_VALUE(b <= r.n, "minibatch_igs: batch size b = ", b, " exceeds the ", r.n,
                        " samples (sampling without replacement)");
  if (r.n == 1) return r.value;
  const T n = static_cast<T>(r.n);
  const T off = (n * n * r.full_batch - n * r.value) / (n * (n - T(1)));
  return r.value / bb + (T(1) - T(1) / bb) * off;
}

}  // namespace curvature
