// 000 Sec. 5: the mini-batch covariance diagonal (eq. 34) against a direct loop over batches
// gathered here, its expectation Sigma / B, and the cosine (eq. 35) and gamma (eq. 36) against
// hand-computed numbers.
#include <algorithm>
#include <array>

#include "noise/noise_fixtures.hpp"

using namespace noisefix;

namespace {

/// Eq. 34 literally: (1/K) sum_j g_ji^2 - ((1/K) sum_j g_ji)^2, negatives clamped to 0.
Vector<D> eq34_loop(const Matrix<D>& g) {
  const Index k = g.cols();
  Vector<D> out(g.rows());
  for (Index i = 0; i < g.rows(); ++i) {
    D s = 0, s2 = 0;
    for (Index j = 0; j < k; ++j) s += g(i, j), s2 += g(i, j) * g(i, j);
    out(i) = std::max(D(0), s2 / static_cast<D>(k) - (s / static_cast<D>(k)) * (s / static_cast<D>(k)));
  }
  return out;
}

/// The K mini-batch gradients the documented sampler draws, each the mean of batch-size-1 gradients.
Matrix<D> batch_gradients_by_hand(const Matrix<D>& per_sample, const MinibatchOptions& o) {
  Matrix<D> g = Matrix<D>::Zero(per_sample.rows(), o.batches);
  for (Index j = 0; j < o.batches; ++j) {
    Rng rng(o.seed, static_cast<std::uint64_t>(j));
    for (Index i : minibatch_indices(rng, per_sample.cols(), o.batch_size, o.sampling))
      g.col(j) += per_sample.col(i) / static_cast<D>(o.batch_size);
  }
  return g;
}

}  // namespace

TEST_CASE("Eq. 34 from given mini-batch gradients equals a direct loop", "[noise][minibatch]") {
  Rng rng(1);
  Matrix<D> g = random_matrix(30, 17, rng);
  g.colwise() += Vector<D>::LinSpaced(30, -3, 3);  // a mean that eq. 34 must remove
  const MinibatchCovariance<D> r = minibatch_covariance_diagonal(g);
  CHECK(rel_err(r.diagonal, eq34_loop(g)) < 1e-12);
  CHECK(rel_err(r.mean, g.rowwise().mean()) < 1e-14);
  CHECK(r.batches == 17);
  CHECK(r.batch_size == 0);
  CHECK((r.diagonal.array() >= 0).all());
  // A coordinate equal in every batch has zero variance, not a round-off negative.
  g.row(3).setConstant(0.1);
  CHECK(minibatch_covariance_diagonal(g).diagonal(3) == 0);
}

TEST_CASE("Eq. 34 over a model's mini-batches equals the loop over batches drawn by the documented sampler",
          "[noise][minibatch]") {
  Rng rng(2);
  Net m = small_mlp(4, 3, 3);
  const Index n = 12;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  const Matrix<D> ym = random_matrix(3, n, rng);
  CE ce;
  MSE mse;
  for (BatchSampling s : {BatchSampling::WithReplacement, BatchSampling::WithoutReplacement}) {
    INFO("without replacement: " << (s == BatchSampling::WithoutReplacement));
    const MinibatchOptions o{5, 9, 77, s};
    const Matrix<D> by_hand = batch_gradients_by_hand(sample_gradients(m, ce, x, y), o);
    const MinibatchCovariance<D> r = minibatch_covariance_diagonal(m, ce, x, y, o);
    CHECK(rel_err(r.diagonal, eq34_loop(by_hand)) < 1e-9);
    CHECK(rel_err(r.mean, by_hand.rowwise().mean()) < 1e-12);
    CHECK(r.batches == 9);
    CHECK(r.batch_size == 5);
    const Matrix<D> by_hand_mse = batch_gradients_by_hand(sample_gradients(m, mse, x, ym), o);
    CHECK(rel_err(minibatch_covariance_diagonal(m, mse, x, ym, o).diagonal, eq34_loop(by_hand_mse)) < 1e-9);
  }
}

TEST_CASE("Without replacement, a mini-batch holds B distinct samples", "[noise][minibatch]") {
  Rng rng(3);
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<Index> idx = minibatch_indices(rng, 9, 9, BatchSampling::WithoutReplacement);
    std::sort(idx.begin(), idx.end());
    for (Index i = 0; i < 9; ++i) CHECK(idx[static_cast<std::size_t>(i)] == i);
  }
}

TEST_CASE("The covariance diagonal's expectation is diag(Sigma)/B, times (N-B)/(N-1) without replacement",
          "[noise][minibatch]") {
  Rng rng(4);
  Net m = small_mlp(4, 3, 5);
  const Index n = 8, b = 3, k = 4000;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  CE ce;
  const Matrix<D> g = sample_gradients(m, ce, x, y);
  const Matrix<D> c = g.colwise() - g.rowwise().mean();
  const D tr_sigma = c.squaredNorm() / static_cast<D>(n);  // tr(Sigma), divisor N
  const D scale = static_cast<D>(k - 1) / static_cast<D>(k) / static_cast<D>(b);
  const D with = minibatch_covariance_diagonal(m, ce, x, y, {b, k, 5, BatchSampling::WithReplacement}).diagonal.sum();
  const D without =
      minibatch_covariance_diagonal(m, ce, x, y, {b, k, 5, BatchSampling::WithoutReplacement}).diagonal.sum();
  CHECK(rel(with, scale * tr_sigma) < 0.08);
  CHECK(rel(without, scale * tr_sigma * static_cast<D>(n - b) / static_cast<D>(n - 1)) < 0.08);
}

TEST_CASE("Cosine alignment and scale mismatch equal hand-computed numbers", "[noise][minibatch]") {
  const Vector<D> a = Vector<D>{{1, 2, 2}}, b = Vector<D>{{2, 1, 2}};
  CHECK(cosine_alignment(a, b) == Approx(8.0 / 9.0).epsilon(1e-15));
  CHECK(cosine_alignment(a, D(3) * a) == Approx(1.0).epsilon(1e-15));
  CHECK(std::isnan(cosine_alignment(a, Vector<D>::Zero(3).eval())));
  // sigma = (1, 2, 3), (eta/B) g = 0.1 (10, 20, 20) = (1, 2, 2): gamma = ||(0, 0, 1)|| / 3.
  const Vector<D> sigma = Vector<D>{{1, 2, 3}}, fisher = Vector<D>{{10, 20, 20}};
  CHECK(scale_mismatch(sigma, fisher, 0.2, 2) == Approx(1.0 / 3.0).epsilon(1e-15));
  CHECK(scale_mismatch(Vector<D>(0.1 * fisher), fisher, 0.2, 2) < 1e-15);
  CHECK(std::isnan(scale_mismatch(sigma, Vector<D>::Zero(3).eval(), 0.2, 2)));
}

TEST_CASE("The mini-batch functions reject bad arguments with messages naming them", "[noise][minibatch][errors]") {
  Rng rng(6);
  Net m = small_mlp(4, 3, 7);
  const Matrix<D> x = random_matrix(4, 6, rng);
  const Labels y = labels(6, 3, rng);
  CE ce;
  CHECK_THROWS_AS(minibatch_covariance_diagonal(random_matrix(5, 1, rng)), ValueError);
  CHECK_THROWS_WITH(minibatch_covariance_diagonal(random_matrix(5, 1, rng)), Catch::Contains("K = 1"));
  CHECK_THROWS_WITH(minibatch_covariance_diagonal(m, ce, x, y, {2, 1, 0}), Catch::Contains("batches K = 1"));
  CHECK_THROWS_WITH(minibatch_covariance_diagonal(m, ce, x, y, {0, 5, 0}), Catch::Contains("batch_size B = 0"));
  CHECK_THROWS_WITH(minibatch_covariance_diagonal(m, ce, x, y, {7, 5, 0, BatchSampling::WithoutReplacement}),
                    Catch::Contains("batch_size B = 7 exceeds the N = 6"));
  CHECK_THROWS_AS(minibatch_covariance_diagonal(m, ce, x, Labels{0, 1}, {2, 5, 0}), ShapeError);
  const Vector<D> a = Vector<D>::Ones(3), b4 = Vector<D>::Ones(4);
  CHECK_THROWS_AS(cosine_alignment(a, b4), ShapeError);
  CHECK_THROWS_WITH(scale_mismatch(a, b4, 0.1, 2), Catch::Contains("sigma has 3 entries but g has 4"));
  CHECK_THROWS_WITH(scale_mismatch(a, a, 0.0, 2), Catch::Contains("eta = 0"));
  CHECK_THROWS_WITH(scale_mismatch(a, a, -1.0, 2), Catch::Contains("eta = -1"));
  CHECK_THROWS_WITH(scale_mismatch(a, a, 0.1, 0), Catch::Contains("batch_size B = 0"));
  CHECK_THROWS_WITH(minibatch_indices(rng, 5, 0, BatchSampling::WithReplacement), Catch::Contains("B = 0"));
}
