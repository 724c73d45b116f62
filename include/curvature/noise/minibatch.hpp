#pragma once
// Gradient noise against the Fisher on diagonals (000 Sec. 5; SPEC 4): the diagonal of the
// mini-batch gradient covariance from K mini-batch gradients (000 eq. 34), its cosine with a
// Fisher diagonal (eq. 35) and the scale mismatch gamma (eq. 36).
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "curvature/core/rng.hpp"
#include "curvature/estimators/detail/accumulate.hpp"
#include "curvature/measures/igs.hpp"  // BatchSampling
#include "curvature/model/derivatives.hpp"
#include "curvature/noise/detail/batches.hpp"

namespace curvature {

/// B sample indices in [0, N) drawn with `rng`: uniform and independent (WithReplacement), or a
/// uniform B-subset in random order (WithoutReplacement, partial Fisher-Yates, O(N) per call).
/// Throws ValueError for N < 1, B < 1, or B > N without replacement.
inline std::vector<Index> minibatch_indices(Rng& rng, Index n, Index b, BatchSampling sampling) {
  CURVATURE_CHECK_VALUE(n >= 1, "minibatch_indices: N = ", n, ", expected >= 1 samples");
  CURVATURE_CHECK_VALUE(b >= 1, "minibatch_indices: batch size B = ", b, ", expected >= 1");
  if (sampling == BatchSampling::WithReplacement) {
    std::vector<Index> idx(static_cast<std::size_t>(b));
    for (Index& i : idx) i = static_cast<Index>(rng.below(static_cast<std::uint64_t>(n)));
    return idx;
  }
  CURVATURE_CHECK_VALUE(b <= n, "minibatch_indices: batch size B = ", b, " exceeds the N = ", n,
                        " samples (sampling without replacement)");
  return random_subset(rng, n, b);
}

/// How the K mini-batches of minibatch_covariance_diagonal are drawn.
struct MinibatchOptions {
  Index batch_size = 128;  ///< B
  Index batches = 200;     ///< K (000 Sec. 5 uses 200); >= 2
  std::uint64_t seed = 0;  ///< batch j's indices: minibatch_indices(Rng(seed, j), N, B, sampling)
  BatchSampling sampling = BatchSampling::WithReplacement;  ///< within a batch; batches are independent
};

/// The diagonal of the mini-batch gradient covariance (000 eq. 34).
template <Scalar T>
struct MinibatchCovariance {
  Vector<T> diagonal;     ///< Sigma_hat_ii = (1/K) sum_j g_ji^2 - ((1/K) sum_j g_ji)^2, >= 0
  Vector<T> mean;         ///< (1/K) sum_j g_j
  Index batches = 0;      ///< K
  Index batch_size = 0;   ///< B; 0 when the K gradients were given directly
};

/// Eq. 34 from K mini-batch gradients, the columns of the d x K matrix `gradients` (K >= 2). It is
/// computed in the centred form (1/K) sum_j (g_ji - mean_i)^2, equal to eq. 34 in exact arithmetic
/// but free of its cancellation, so no entry comes out negative (the paper clamps such round-off
/// negatives to 0; the max with 0 is kept as that guard).
template <Scalar T>
MinibatchCovariance<T> minibatch_covariance_diagonal(const Matrix<T>& gradients) {
  const Index k = gradients.cols();
  CURVATURE_CHECK_VALUE(k >= 2, "minibatch_covariance_diagonal: gradients has K = ", k,
                        " columns (mini-batch gradients), expected K >= 2");
  MinibatchCovariance<T> r;
  r.mean = gradients.rowwise().mean();
  r.diagonal = ((gradients.colwise() - r.mean).rowwise().squaredNorm() / static_cast<T>(k)).cwiseMax(T(0));
  r.batches = k;
  return r;
}

/// Eq. 34 with K mini-batch gradients g_j = grad of the mean loss over batch j of size B drawn
/// from (x, y) as `options` says (K forward/backward passes on batches of B, O(d) memory:
/// coordinate-wise Welford, again never negative). Expectation: Sigma / B with replacement,
/// Sigma (N - B) / (B (N - 1)) without (Sigma the per-sample covariance, divisor N), times
/// (K - 1) / K from eq. 34's 1/K. Throws ValueError for K < 2, B < 1, B > N without replacement.
template <Model M, Loss L>
MinibatchCovariance<scalar_of<M>> minibatch_covariance_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                                const typename L::Targets& y,
                                                                const MinibatchOptions& options = {}) {
  using T = scalar_of<M>;
  static_assert(detail::GatherableTargets<typename L::Targets>,
                "minibatch_covariance_diagonal needs curvature::detail::gather_targets(y, indices) for the "
                "loss's Targets (provided for class labels and target matrices)");
  constexpr const char* fn = "minibatch_covariance_diagonal";
  detail::check_batch(m, loss, x, y, fn);
  CURVATURE_CHECK_VALUE(options.batches >= 2, fn, ": batches K = ", options.batches, ", expected >= 2");
  CURVATURE_CHECK_VALUE(options.batch_size >= 1, fn, ": batch_size B = ", options.batch_size, ", expected >= 1");
  CURVATURE_CHECK_VALUE(options.sampling == BatchSampling::WithReplacement || options.batch_size <= x.cols(), fn,
                        ": batch_size B = ", options.batch_size, " exceeds the N = ", x.cols(),
                        " samples (sampling without replacement)");
  detail::WelfordVector<T> acc(m.num_params());
  for (Index j = 0; j < options.batches; ++j) {
    Rng rng(options.seed, static_cast<std::uint64_t>(j));
    const std::vector<Index> idx = minibatch_indices(rng, x.cols(), options.batch_size, options.sampling);
    acc.add(loss_and_gradient(m, loss, detail::gather_columns(x, idx), detail::gather_targets(y, idx)).gradient);
  }
  MinibatchCovariance<T> r;
  r.mean = acc.mean;
  r.diagonal = (acc.m2 / static_cast<T>(options.batches)).cwiseMax(T(0));
  r.batches = options.batches;
  r.batch_size = options.batch_size;
  return r;
}

/// Cosine alignment <a, b> / (||a|| ||b||) (000 eq. 35, a = diag Sigma_hat, b = diag G_hat), in
/// [-1, 1]. NaN when either vector is zero. Throws ShapeError when the lengths differ.
template <Scalar T>
T cosine_alignment(const Vector<T>& a, const std::type_identity_t<Vector<T>>& b) {
  CURVATURE_CHECK_SHAPE(a.size() == b.size(), "cosine_alignment: a has ", a.size(), " entries but b has ", b.size());
  const T na = a.norm(), nb = b.norm();
  if (!(na > 0) || !(nb > 0)) return std::numeric_limits<T>::quiet_NaN();
  return a.dot(b) / (na * nb);
}

/// Scale mismatch gamma = ||sigma - (eta/B) g|| / ||(eta/B) g|| (000 eq. 36) with the Euclidean
/// norm of the diagonals (the Frobenius norm of the diagonal matrices): sigma = diag Sigma_hat
/// (eq. 34), g = the caller's Fisher diagonal (000 uses the MC Fisher of eq. 33; exact ones come
/// from fisher_diagonal). 0 iff sigma = (eta/B) g. NaN when g = 0. Throws ShapeError for
/// different lengths, ValueError for eta <= 0 or B < 1.
template <Scalar T>
T scale_mismatch(const Vector<T>& sigma, const std::type_identity_t<Vector<T>>& g, std::type_identity_t<T> eta,
                 Index batch_size) {
  CURVATURE_CHECK_SHAPE(sigma.size() == g.size(), "scale_mismatch: sigma has ", sigma.size(), " entries but g has ",
                        g.size());
  detail::check_positive(static_cast<double>(eta), "scale_mismatch", "eta");
  CURVATURE_CHECK_VALUE(batch_size >= 1, "scale_mismatch: batch_size B = ", batch_size, ", expected >= 1");
  const T s = eta / static_cast<T>(batch_size);
  const T denom = s * g.norm();
  if (!(denom > 0)) return std::numeric_limits<T>::quiet_NaN();
  return (sigma - s * g).norm() / denom;
}

}  // namespace curvature
