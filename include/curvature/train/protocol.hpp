#pragma once
// Paper 000's measurement protocol at a training checkpoint (000 Sec. 3.3-3.4 and 5; SPEC 3-4):
//   * the Fisher diagonal G_jj averaged over N_b mini-batches of the training set (eq. 2: one label
//     drawn from the model per sample, "MC"; the exact Fisher or the empirical Fisher on request);
//   * H_jj by Hutchinson with n_p Rademacher probes on a fixed sample of the training set (eq. 3);
//   * S_R = sum_j H_jj / (G_jj + lambda) (eq. 4), S_E = tr H (eq. 1) and, for Adam, the Adam-metric
//     S_R = sum_j H_jj / (v_j + lambda) (eq. 45), all from the same probes, each with the standard
//     error of its per-probe values;
//   * the noise alignment of Sec. 5: diag of the mini-batch gradient covariance from K batches
//     (eq. 34), its cosine with G (eq. 35) and gamma (eq. 36).
// Every random choice (Fisher batches, sampled labels, Hessian sample, probes, covariance batches)
// comes from the protocol's seed, so a measurement does not depend on the thread count.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "curvature/data/dataset.hpp"
#include "curvature/estimators/hutchinson.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/noise/minibatch.hpp"
#include "curvature/operators/curvature_matrices.hpp"

namespace curvature::train {

/// Which Fisher diagonal enters S_R.
enum class FisherKind {
  MonteCarlo,  ///< 000 eq. 2: labels sampled from the model (unbiased for diag F; the paper's choice)
  Exact,       ///< the exact Fisher (= GGN for CE) diagonal of each batch
  Empirical    ///< squared gradients with the true labels (Kunstner et al. 2019: not the Fisher)
};

inline const char* to_string(FisherKind k) {
  switch (k) {
    case FisherKind::MonteCarlo: return "mc";
    case FisherKind::Exact: return "exact";
    case FisherKind::Empirical: return "empirical";
  }
  return "?";
}

/// The knobs of the protocol; defaults are the paper's (N_b = 30, n_p = 100, lambda = 1e-6).
struct SharpnessProtocol {
  Index fisher_batches = 30;       ///< N_b
  Index fisher_batch_size = 128;   ///< samples per Fisher batch (the training batch size in 000)
  FisherKind fisher = FisherKind::MonteCarlo;
  Index probes = 100;              ///< n_p Rademacher probes for H_jj
  Index hessian_samples = 1024;    ///< training samples the Hessian is taken on (all when >= N)
  Index block_size = 16;           ///< probes per Hessian application
  double lambda = 1e-6;            ///< Tikhonov damping of eq. 4 and 45
  std::uint64_t seed = 0;
  /// H_jj exactly instead of by Hutchinson, for piecewise-linear networks (ReLU, pooling, Linear,
  /// Conv2d): diag(H) = diag(GGN) there (curvature::hessian_diagonal), so S_R, S_E and the
  /// Adam-metric S_R are exact (standard error 0, probes 0) at the cost of one GGN diagonal.
  /// UnsupportedError naming the layer for other networks.
  bool exact_hessian_diagonal = false;

  void check() const {
    CURVATURE_CHECK_VALUE(fisher_batches >= 1, "SharpnessProtocol: fisher_batches = ", fisher_batches, ", need >= 1");
    CURVATURE_CHECK_VALUE(fisher_batch_size >= 1, "SharpnessProtocol: fisher_batch_size = ", fisher_batch_size,
                          ", need >= 1");
    CURVATURE_CHECK_VALUE(probes >= 2, "SharpnessProtocol: probes = ", probes, ", need >= 2 for a standard error");
    CURVATURE_CHECK_VALUE(hessian_samples >= 1, "SharpnessProtocol: hessian_samples = ", hessian_samples,
                          ", need >= 1");
    CURVATURE_CHECK_VALUE(block_size >= 1, "SharpnessProtocol: block_size = ", block_size, ", need >= 1");
    CURVATURE_CHECK_VALUE(lambda >= 0, "SharpnessProtocol: lambda = ", lambda, ", need >= 0");
  }
};

/// What one checkpoint measurement returns.
template <Scalar T>
struct CheckpointSharpness {
  Estimate<T> riemannian;              ///< S_R (000 eq. 4)
  Estimate<T> euclidean;               ///< S_E = tr H (000 eq. 1)
  std::optional<Estimate<T>> adam;     ///< S_R in Adam's metric (000 eq. 45), when v was given
  Vector<T> fisher_diagonal;           ///< G_jj, mean over the N_b batches
  Vector<T> hessian_diagonal;          ///< Hutchinson H_jj
  double seconds_fisher = 0;
  double seconds_hessian = 0;
};

namespace detail {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// `count` distinct indices of [0, n) (all of them, in order, when count >= n), from `rng`.
inline std::vector<Index> sample_without_replacement(Index n, Index count, Rng& rng) {
  if (count < n) return random_subset(rng, n, count);
  std::vector<Index> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), Index{0});
  return idx;
}

/// The scalar measures of probe j of a block: with q = z (.) H z (z = v.col(j), H z = hv.col(j)),
/// {sum q, q . w, q . u} (S_E, S_R and, when u is given, the Adam-metric variant), in one pass
/// over chunks of coordinates: q is formed once and stays in L1 instead of being written to a
/// d-vector and read three times.
template <Scalar T>
std::array<T, 3> probe_sums(const Matrix<T>& v, const Matrix<T>& hv, Index j, const Vector<T>& w,
                            const Vector<T>* u) {
  constexpr Index chunk = 512;
  Eigen::Array<T, chunk, 1> q;
  std::array<T, 3> s{T(0), T(0), T(0)};
  const Index d = v.rows();
  for (Index k0 = 0; k0 < d; k0 += chunk) {
    const Index len = std::min(chunk, d - k0);
    auto qs = q.head(len);
    qs = v.col(j).segment(k0, len).array() * hv.col(j).segment(k0, len).array();
    s[0] += qs.sum();
    s[1] += (qs * w.segment(k0, len).array()).sum();
    if (u) s[2] += (qs * u->segment(k0, len).array()).sum();
  }
  return s;
}

template <class M, Scalar T>
void check_model_data(const M& m, const data::Dataset<T>& d, const char* fn) {
  (void)m;
  CURVATURE_CHECK_VALUE(d.size() >= 1, fn, ": the data set '", d.name, "' is empty");
}

}  // namespace detail

/// G_jj averaged over `batches` mini-batches of `batch_size` training samples (each batch a uniform
/// subset; batches independent, drawn from (seed, j)). MC draws one label per sample (000 eq. 2).
template <PerSampleModel M, Loss L>
Vector<scalar_of<M>> fisher_diagonal_over_batches(M& m, const L& loss, const data::Dataset<scalar_of<M>>& train,
                                                  Index batches, Index batch_size, FisherKind kind,
                                                  std::uint64_t seed) {
  using T = scalar_of<M>;
  detail::check_model_data(m, train, "fisher_diagonal_over_batches");
  CURVATURE_CHECK_VALUE(batches >= 1 && batch_size >= 1, "fisher_diagonal_over_batches: batches = ", batches,
                        " and batch_size = ", batch_size, " must be >= 1");
  const Index b = std::min(batch_size, train.size());
  Vector<T> sum = Vector<T>::Zero(m.num_params());
  Matrix<T> x;
  data::Labels y;
  for (Index j = 0; j < batches; ++j) {
    Rng pick(seed, 2 * static_cast<std::uint64_t>(j));
    const std::vector<Index> idx = detail::sample_without_replacement(train.size(), b, pick);
    data::gather(train, std::span<const Index>(idx), x, y);
    switch (kind) {
      case FisherKind::MonteCarlo: {
        Rng labels(seed, 2 * static_cast<std::uint64_t>(j) + 1);
        sum += mc_fisher_diagonal(m, loss, x, labels, 1);
        break;
      }
      case FisherKind::Exact: sum += fisher_diagonal(m, loss, x, y); break;
      case FisherKind::Empirical: sum += empirical_fisher_diagonal(m, loss, x, y); break;
    }
  }
  return sum / static_cast<T>(batches);
}

/// The checkpoint measurement of 000 (see the top of this file). `adam_v`, when given, is Adam's
/// second-moment buffer v_t (one entry per parameter) for eq. 45. Cost: N_b batched backward
/// passes for G, ceil(n_p / block_size) Hessian applications on `hessian_samples` samples.
template <HvpModel M, Loss L>
CheckpointSharpness<scalar_of<M>> measure_sharpness(M& m, const L& loss, const data::Dataset<scalar_of<M>>& train,
                                                    const SharpnessProtocol& p,
                                                    const Vector<scalar_of<M>>* adam_v = nullptr) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "measure_sharpness needs a PerSampleModel (Fisher diagonals)");
  constexpr const char* fn = "measure_sharpness";
  p.check();
  detail::check_model_data(m, train, fn);
  const Index d = m.num_params();
  if (adam_v)
    CURVATURE_CHECK_SHAPE(adam_v->size() == d, fn, ": Adam's v has ", adam_v->size(), " entries but the model has ", d,
                          " parameters");

  CheckpointSharpness<T> r;
  auto t0 = std::chrono::steady_clock::now();
  r.fisher_diagonal =
      fisher_diagonal_over_batches(m, loss, train, p.fisher_batches, p.fisher_batch_size, p.fisher, p.seed);
  r.seconds_fisher = detail::seconds_since(t0);
  CURVATURE_CHECK_VALUE(all_finite(r.fisher_diagonal), fn, ": the Fisher diagonal is not finite (diverged model?)");

  t0 = std::chrono::steady_clock::now();
  Rng pick(p.seed, 0x4E55);  // the Hessian sample: its own stream, apart from the Fisher batches'
  const std::vector<Index> idx = detail::sample_without_replacement(train.size(), p.hessian_samples, pick);
  Matrix<T> xh;
  data::Labels yh;
  data::gather(train, std::span<const Index>(idx), xh, yh);
  HessianOperator<M, L> h(m, loss, xh, yh);

  const T lambda = static_cast<T>(p.lambda);
  const Vector<T> inv_g = (r.fisher_diagonal.array() + lambda).inverse().matrix();
  CURVATURE_CHECK_VALUE(all_finite(inv_g), fn, ": G_jj + lambda is zero for some parameter (lambda = ", p.lambda,
                        "; use lambda > 0)");
  Vector<T> inv_v;
  if (adam_v) inv_v = (adam_v->array() + lambda).inverse().matrix();

  if (p.exact_hessian_diagonal) {
    if constexpr (requires { { m.curved_layer() } -> std::convertible_to<std::string>; }) {
      r.hessian_diagonal = hessian_diagonal(m, loss, xh, yh);
    } else {
      throw UnsupportedError(std::string(fn) + ": exact_hessian_diagonal needs a model with curved_layer() "
                             "(piecewise linearity); use Hutchinson probes");
    }
    auto exact = [](T value) { return Estimate<T>{value, T(0), 0, 0, true}; };
    r.euclidean = exact(r.hessian_diagonal.sum());
    r.riemannian = exact(r.hessian_diagonal.dot(inv_g));
    if (adam_v) r.adam = exact(r.hessian_diagonal.dot(inv_v));
    r.seconds_hessian = detail::seconds_since(t0);
    return r;
  }

  HutchinsonOptions ho;
  ho.seed = p.seed ^ 0x9B0BE5ull;
  ho.max_probes = p.probes;
  ho.block_size = p.block_size;
  curvature::detail::WelfordVector<T> diag(d);
  curvature::detail::Welford<T> sr, se, sa;
  Matrix<T> hv;
  // A fixed probe count: each block enters the diagonal's accumulator in one pass (as in
  // hutchinson_diagonal); the scalar measures take the probes one by one.
  auto run = curvature::detail::probe_loop(
      h, ho, diag,
      [&](const Matrix<T>& v, const curvature::detail::ColumnFill& fill) {
        curvature::detail::apply_add_products(h, v, hv, diag, fn, &fill);
      },
      [&](const Matrix<T>& v, Index j) {
        const std::array<T, 3> s = detail::probe_sums(v, hv, j, inv_g, adam_v ? &inv_v : nullptr);
        se.add(s[0]);
        sr.add(s[1]);
        if (adam_v) sa.add(s[2]);
      },
      fn);
  r.hessian_diagonal = diag.mean;
  r.euclidean = curvature::detail::to_estimate(se, run);
  r.riemannian = curvature::detail::to_estimate(sr, run);
  if (adam_v) r.adam = curvature::detail::to_estimate(sa, run);
  r.seconds_hessian = detail::seconds_since(t0);
  return r;
}

/// 000 Sec. 5 at a checkpoint: the covariance diagonal of K mini-batch gradients of size B (eq. 34,
/// batches with replacement as in SPEC 4) against a Fisher diagonal g.
template <Scalar T>
struct NoiseAlignment {
  T cosine = 0;  ///< eq. 35
  T gamma = 0;   ///< eq. 36 with the training learning rate eta and batch size B
  T best_scale = 0;  ///< the c minimising ||Sigma_hat - c g|| (= <Sigma_hat, g> / ||g||^2), to set beside eta/B
  Index batches = 0;
};

template <PerSampleModel M, Loss L>
NoiseAlignment<scalar_of<M>> noise_alignment(M& m, const L& loss, const data::Dataset<scalar_of<M>>& train,
                                             const Vector<scalar_of<M>>& fisher_diag, double eta, Index batch_size,
                                             Index batches, std::uint64_t seed) {
  using T = scalar_of<M>;
  MinibatchOptions o;
  o.batch_size = batch_size;
  o.batches = batches;
  o.seed = seed;
  const MinibatchCovariance<T> c = minibatch_covariance_diagonal(m, loss, train.x, train.y, o);
  NoiseAlignment<T> r;
  r.cosine = cosine_alignment(c.diagonal, fisher_diag);
  r.gamma = scale_mismatch(c.diagonal, fisher_diag, static_cast<T>(eta), batch_size);
  const T g2 = fisher_diag.squaredNorm();
  r.best_scale = g2 > 0 ? c.diagonal.dot(fisher_diag) / g2 : T(0);
  r.batches = batches;
  return r;
}

}  // namespace curvature::train
