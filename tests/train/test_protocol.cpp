// Paper 000's checkpoint protocol (train/protocol.hpp) against references built here: the Hessian
// by finite differences of gradients, the Fisher as an explicit sum of J_i^T Lambda_i J_i, the
// noise covariance from batch-size-1 gradients.
#include <catch2/catch.hpp>

#include <cmath>

#include "curvature/train/protocol.hpp"
#include "support/references.hpp"

using namespace curvature;
using namespace curvature::testing;

namespace {

data::Dataset<D> blobs(Index n, std::uint64_t seed) {
  Rng rng(seed);
  data::Dataset<D> d;
  d.x.resize(4, n);
  for (Index i = 0; i < d.x.size(); ++i) d.x.data()[i] = rng.normal<D>();
  d.y = labels(n, 3, rng);
  for (Index i = 0; i < n; ++i) d.x(d.y[static_cast<std::size_t>(i)], i) += 1.5;  // some signal
  d.num_classes = 3;
  d.shape = nn::Shape{4, 1, 1};
  d.name = "blobs";
  d.check();
  return d;
}

/// The protocol with the exact Fisher of the whole set and H measured on every sample.
train::SharpnessProtocol exact_fisher_protocol(const data::Dataset<D>& d) {
  train::SharpnessProtocol p;
  p.fisher = train::FisherKind::Exact;
  p.fisher_batches = 1;
  p.fisher_batch_size = d.size();  // the whole set: exact F of the data
  p.hessian_samples = d.size();
  return p;
}

}  // namespace

TEST_CASE("measure_sharpness: S_R, S_E and the Adam metric agree with dense H and F", "[protocol]") {
  Net m = gelu_mlp(false, 3);
  const CE ce;
  const data::Dataset<D> d = blobs(24, 5);
  const Matrix<D> h = fd_hessian(m, ce, d.x, d.y);
  const Vector<D> f = dense_ggn(m, ce, d.x).diagonal();

  train::SharpnessProtocol p = exact_fisher_protocol(d);
  p.probes = 3000;
  p.lambda = 0.05;  // large enough that no single coordinate dominates the per-probe spread
  p.seed = 11;
  Vector<D> v(m.num_params());
  for (Index j = 0; j < v.size(); ++j) v(j) = 0.01 * static_cast<D>(1 + j % 7);

  const auto r = train::measure_sharpness(m, ce, d, p, &v);
  CHECK((r.fisher_diagonal - f).norm() <= 1e-9 * f.norm());

  const D sr = (h.diagonal().array() / (f.array() + p.lambda)).sum();
  const D se = h.trace();
  const D sa = (h.diagonal().array() / (v.array() + p.lambda)).sum();
  INFO("S_R " << r.riemannian.value << " +- " << r.riemannian.std_error << " exact " << sr);
  CHECK(std::abs(r.riemannian.value - sr) <= 4 * r.riemannian.std_error);
  INFO("S_E " << r.euclidean.value << " +- " << r.euclidean.std_error << " exact " << se);
  CHECK(std::abs(r.euclidean.value - se) <= 4 * r.euclidean.std_error);
  REQUIRE(r.adam.has_value());
  CHECK(std::abs(r.adam->value - sa) <= 4 * r.adam->std_error);
  // The standard errors are informative, not vacuous: a few percent of the values here.
  CHECK(r.riemannian.std_error < 0.25 * std::abs(sr));
  CHECK(r.euclidean.probes == 3000);
  // The Hutchinson diagonal itself, and its weighted sums: the block accumulator and the
  // per-probe sums of S_E, S_R and the Adam metric see the same products, and the probe mean
  // is linear, so diag . w equals each measure with weights w to rounding.
  CHECK((r.hessian_diagonal - h.diagonal()).norm() <= 0.15 * h.diagonal().norm());
  CHECK(r.hessian_diagonal.sum() == Approx(r.euclidean.value).epsilon(1e-10));
  const Vector<D> inv_g = (r.fisher_diagonal.array() + p.lambda).inverse().matrix();
  const Vector<D> inv_v = (v.array() + p.lambda).inverse().matrix();
  CHECK(r.hessian_diagonal.dot(inv_g) == Approx(r.riemannian.value).epsilon(1e-10));
  CHECK(r.hessian_diagonal.dot(inv_v) == Approx(r.adam->value).epsilon(1e-10));
}

TEST_CASE("measure_sharpness with the exact Hessian diagonal of a ReLU network equals dense H and F", "[protocol]") {
  Net m = nn::parse_arch<D, S>(nn::Shape{4, 1, 1}, "linear(6),relu,linear(5),relu,linear(3)");
  m.init(4);
  const CE ce;
  const data::Dataset<D> d = blobs(24, 6);
  const Matrix<D> h = fd_hessian(m, ce, d.x, d.y);
  const Vector<D> f = dense_ggn(m, ce, d.x).diagonal();
  train::SharpnessProtocol p = exact_fisher_protocol(d);
  p.lambda = 1e-3;
  p.exact_hessian_diagonal = true;
  Vector<D> v = Vector<D>::Constant(m.num_params(), 0.02);
  const auto r = train::measure_sharpness(m, ce, d, p, &v);
  CHECK((r.hessian_diagonal - h.diagonal()).norm() <= 1e-6 * h.diagonal().norm());
  CHECK(r.euclidean.value == Approx(h.trace()).epsilon(1e-6));
  CHECK(r.riemannian.value == Approx((h.diagonal().array() / (f.array() + p.lambda)).sum()).epsilon(1e-6));
  CHECK(r.adam->value == Approx((h.diagonal().array() / (v.array() + p.lambda)).sum()).epsilon(1e-6));
  CHECK(r.riemannian.std_error == 0);
  CHECK(r.riemannian.probes == 0);
  // paper 000's S_R with the exact Fisher of a ReLU network: sum_j F_jj / (F_jj + lambda) <= d
  CHECK(r.riemannian.value == Approx((f.array() / (f.array() + p.lambda)).sum()).epsilon(1e-6));
  // a curved network is refused, naming the layer
  Net curved = gelu_mlp(false, 3);
  CHECK_THROWS_WITH(train::measure_sharpness(curved, ce, d, p), Catch::Contains("tanh"));
}

TEST_CASE("measure_sharpness: the MC Fisher over many batches approaches the exact one", "[protocol]") {
  Net m = gelu_mlp(true, 4);
  const CE ce;
  const data::Dataset<D> d = blobs(30, 6);
  const Vector<D> f = dense_ggn(m, ce, d.x).diagonal();
  // Full-set batches: each MC batch is an unbiased draw of diag F; 400 of them shrink the noise.
  const Vector<D> mc =
      train::fisher_diagonal_over_batches(m, ce, d, 400, d.size(), train::FisherKind::MonteCarlo, 2);
  INFO("relative error " << (mc - f).norm() / f.norm());
  CHECK((mc - f).norm() <= 0.1 * f.norm());
  // One batch is far noisier: the average really averages.
  const Vector<D> one = train::fisher_diagonal_over_batches(m, ce, d, 1, d.size(), train::FisherKind::MonteCarlo, 2);
  CHECK((one - f).norm() > (mc - f).norm());
  // The empirical Fisher is the mean of squared true-label gradients.
  const Matrix<D> g = sample_gradients(m, ce, d.x, d.y);
  const Vector<D> ef = train::fisher_diagonal_over_batches(m, ce, d, 1, d.size(), train::FisherKind::Empirical, 2);
  CHECK((ef - g.array().square().rowwise().mean().matrix()).norm() <= 1e-10 * ef.norm());
}

TEST_CASE("noise_alignment: cosine and gamma of the mini-batch covariance built from single gradients",
          "[protocol]") {
  Net m = gelu_mlp(false, 8);
  const CE ce;
  const data::Dataset<D> d = blobs(20, 9);
  const Matrix<D> g = sample_gradients(m, ce, d.x, d.y);
  const Index k = 50, b = 4;
  // eq. 34 by hand: K batches drawn as MinibatchOptions documents, gradients as means of columns.
  Matrix<D> batch_grads(m.num_params(), k);
  for (Index j = 0; j < k; ++j) {
    Rng rng(21, static_cast<std::uint64_t>(j));
    const auto idx = minibatch_indices(rng, d.size(), b, BatchSampling::WithReplacement);
    Vector<D> s = Vector<D>::Zero(m.num_params());
    for (Index i : idx) s += g.col(i);
    batch_grads.col(j) = s / static_cast<D>(b);
  }
  const Vector<D> mean = batch_grads.rowwise().mean();
  const Vector<D> sigma =
      ((batch_grads.array().square().rowwise().mean()) - mean.array().square()).max(0.0).matrix();
  const Vector<D> f = dense_ggn(m, ce, d.x).diagonal();
  const auto r = train::noise_alignment(m, ce, d, f, 0.05, b, k, 21);
  CHECK(r.cosine == Approx(sigma.dot(f) / (sigma.norm() * f.norm())).epsilon(1e-9));
  const D s = 0.05 / static_cast<D>(b);
  CHECK(r.gamma == Approx((sigma - s * f).norm() / (s * f).norm()).epsilon(1e-9));
  CHECK(r.best_scale == Approx(sigma.dot(f) / f.squaredNorm()).epsilon(1e-9));
}

TEST_CASE("measure_sharpness: bad options and inputs are named", "[protocol]") {
  Net m = gelu_mlp(false, 3);
  const CE ce;
  const data::Dataset<D> d = blobs(10, 1);
  train::SharpnessProtocol p;
  p.probes = 1;
  CHECK_THROWS_WITH(train::measure_sharpness(m, ce, d, p), Catch::Contains("probes = 1"));
  p = {};
  p.lambda = -1;
  CHECK_THROWS_WITH(train::measure_sharpness(m, ce, d, p), Catch::Contains("lambda"));
  p = {};
  const Vector<D> v = Vector<D>::Ones(5);
  CHECK_THROWS_WITH(train::measure_sharpness(m, ce, d, p, &v), Catch::Contains("Adam's v has 5 entries"));
  p.lambda = 0;  // F_jj = 0 for a parameter without influence would make S_R infinite: refused
  Net dead(nn::Shape{4, 1, 1});
  dead.add(nn::Linear<D, S>(3)).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(3));
  dead.init(1);
  dead.mutable_params().head(15).setConstant(-1.0);  // first layer weights and biases: all units dead
  dead.mutable_params().head(12).setZero();
  CHECK_THROWS_WITH(train::measure_sharpness(dead, ce, d, p), Catch::Contains("G_jj + lambda is zero"));
}
