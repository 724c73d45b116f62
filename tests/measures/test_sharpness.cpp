// Sharpness measures against dense computations written here: H from central differences of the
// gradient, F from explicit Jacobians, inverses by LDLT and eigendecompositions.
#include <Eigen/Eigenvalues>
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "support/references.hpp"

using namespace curvature;
using namespace curvature::testing;

namespace {

Net leaky_mlp(std::uint64_t seed) {
  Net m(nn::Shape{3, 1, 1});
  m.add(nn::Linear<D, S>(5)).add(nn::LeakyReLU<D, S>(0.1)).add(nn::Linear<D, S>(4));
  m.add(nn::LeakyReLU<D, S>(0.1)).add(nn::Linear<D, S>(3));
  m.init(seed);
  return m;
}

/// H by central differences of the gradient (h = 1e-5), symmetrised.
Matrix<D> symmetric_fd_hessian(Net& m, const CE& ce, const Matrix<D>& x, const Labels& y) {
  const Matrix<D> h = fd_hessian(m, ce, x, y);
  return (h + h.transpose()) / 2;
}

struct Fixture {
  Net m = leaky_mlp(21);
  Rng rng{22};
  Matrix<D> x = random_matrix(3, 30, rng);
  std::vector<std::int64_t> y = labels(30, 3, rng);
  loss::CrossEntropy<D> ce;
};

}  // namespace

TEST_CASE("Diagonal S_R sums H_jj / (F_jj + lambda) and rejects bad metrics", "[measures][sharpness]") {
  const Vector<D> h = (Vector<D>(4) << 1, -2, 3, 0.5).finished();
  const Vector<D> f = (Vector<D>(4) << 0.5, 1, 0, 2).finished();
  CHECK(riemannian_sharpness_diagonal(h, f, 0.5) == Approx(1 / 1.0 - 2 / 1.5 + 3 / 0.5 + 0.5 / 2.5).epsilon(1e-15));
  CHECK(adam_riemannian_sharpness(h, f, 0.5) == Approx(riemannian_sharpness_diagonal(h, f, 0.5)).epsilon(1e-15));
  CHECK_THROWS_WITH(riemannian_sharpness_diagonal(h, f, 0.0), Catch::Contains("entry 2 is 0"));
  CHECK_THROWS_WITH(riemannian_sharpness_diagonal(h, f, -1.0), Catch::Contains("lambda must be finite and >= 0"));
  CHECK_THROWS_WITH(riemannian_sharpness_diagonal(h, Vector<D>(f.head(3)), 1.0), Catch::Contains("has 3 entries"));
}

TEST_CASE("Estimated S_R, diagonal and structured, lie within 4 standard errors of dense values",
          "[measures][sharpness]") {
  Fixture t;
  const Matrix<D> h = symmetric_fd_hessian(t.m, t.ce, t.x, t.y);
  const Matrix<D> f = dense_ggn(t.m, t.ce, t.x);
  const D lambda = 1e-3;
  HessianOperator hop(t.m, t.ce, t.x, t.y);
  HutchinsonOptions o;
  o.max_probes = 400;
  o.seed = 5;

  const Vector<D> fdiag = fisher_diagonal(t.m, t.ce, t.x, t.y);
  const D diag_exact = (h.diagonal().array() / (f.diagonal().array() + lambda)).sum();
  const Estimate<D> diag = riemannian_sharpness_diagonal(hop, fdiag, lambda, o);
  CHECK(std::abs(diag.value - diag_exact) < 4 * diag.std_error);
  CHECK(diag.std_error < 0.5 * std::abs(diag_exact));

  const Matrix<D> damped = f + lambda * Matrix<D>::Identity(f.rows(), f.cols());
  const D dense = damped.ldlt().solve(h).trace();
  CHECK(riemannian_sharpness_dense(h, f, lambda) == Approx(dense).epsilon(1e-8));
  FisherOperator fop(t.m, t.ce, t.x, t.y);
  CgOptions cg;
  cg.damping = lambda;
  cg.tol = 1e-10;
  CgInverse inv(fop, cg);
  const Estimate<D> sr = riemannian_sharpness(inv, hop, o);
  CHECK(std::abs(sr.value - dense) < 4 * sr.std_error);
  CHECK(inv.worst_status() == SolverStatus::Converged);

  KfacOperator kfac(t.m, t.ce, t.x, t.y);
  auto kinv = kfac.inverse(lambda);
  const Matrix<D> fk = materialize(kfac) + lambda * Matrix<D>::Identity(f.rows(), f.cols());
  const D kfac_dense = fk.ldlt().solve(h).trace();
  const Estimate<D> sk = riemannian_sharpness(kinv, hop, o);
  CHECK(std::abs(sk.value - kfac_dense) < 4 * sk.std_error);
}

TEST_CASE("Dense S_R with lambda = 0 uses F's range, cut at its spectral gap", "[measures][sharpness]") {
  // The leaky-ReLU net's F is singular along the softmax shift (5 directions) and along the
  // per-unit rescaling symmetries of its 9 hidden units (at least 14 null directions); the
  // reference counts the null eigenvalues itself.
  Fixture t;
  const Matrix<D> h = symmetric_fd_hessian(t.m, t.ce, t.x, t.y);
  const Matrix<D> f = dense_ggn(t.m, t.ce, t.x);
  Eigen::SelfAdjointEigenSolver<Matrix<D>> eig(f);
  const Vector<D> ev = eig.eigenvalues();
  const Index nulls = (ev.array() < 1e-12 * ev.maxCoeff()).count();
  INFO("null eigenvalues " << nulls << ", next " << ev(nulls) << ", largest " << ev.maxCoeff());
  REQUIRE(nulls >= 5 + 9);
  REQUIRE(ev(nulls) > 1e5 * std::abs(ev(nulls - 1)));  // a clear gap
  const Index rank = ev.size() - nulls;
  const Matrix<D> u = eig.eigenvectors().rightCols(rank);
  const D expected = (u * ev.tail(rank).cwiseInverse().asDiagonal() * u.transpose() * h).trace();
  CHECK(riemannian_sharpness_dense(h, f, 0.0) == Approx(expected).epsilon(1e-9));
}

TEST_CASE("Damped IGS through CG equals (1/N) sum_i g_i^T (F + lambda I)^-1 g_i", "[measures][igs]") {
  Fixture t;
  const D lambda = 1e-2;
  const Matrix<D> f = dense_ggn(t.m, t.ce, t.x) + lambda * Matrix<D>::Identity(t.m.num_params(), t.m.num_params());
  Matrix<D> g;
  per_sample_gradients(t.m, t.ce, t.x, t.y, g);
  const D expected = g.cwiseProduct(f.ldlt().solve(g)).colwise().sum().mean();
  FisherOperator fop(t.m, t.ce, t.x, t.y);
  CgOptions cg;
  cg.damping = lambda;
  cg.tol = 1e-12;
  CgInverse inv(fop, cg);
  const IgsResult<D> r = information_geometric_sharpness(t.m, t.ce, t.x, t.y, inv, lambda);
  CHECK(r.value == Approx(expected).epsilon(1e-8));
  CHECK(r.damping == lambda);
  CHECK_THROWS_WITH(CgInverse(fop, CgOptions{}), Catch::Contains("damping must be > 0"));
}

TEST_CASE("m-sharpness is the mean one-step ascent gain over chunks of m samples", "[measures][sharpness]") {
  Fixture t;
  const D rho = 0.05;
  const Vector<D> theta = t.m.params();
  D expected = 0;
  for (Index c = 0; c < 3; ++c) {  // 30 samples, m = 10
    const Matrix<D> xc = t.x.middleCols(c * 10, 10);
    const std::vector<std::int64_t> yc(t.y.begin() + c * 10, t.y.begin() + c * 10 + 10);
    const LossGradient<D> lg = loss_and_gradient(t.m, t.ce, xc, yc);
    t.m.set_params(theta + rho * lg.gradient / lg.gradient.norm());
    expected += loss_value(t.m, t.ce, xc, yc) - lg.loss;
    t.m.set_params(theta);
  }
  CHECK(m_sharpness(t.m, t.ce, t.x, t.y, 10, rho) == Approx(expected / 3).epsilon(1e-12));
  CHECK(t.m.params() == theta);
  CHECK(m_sharpness(t.m, t.ce, t.x, t.y, 10, rho) > 0);
  CHECK_THROWS_WITH(m_sharpness(t.m, t.ce, t.x, t.y, 31, rho), Catch::Contains("m = 31"));
  CHECK_THROWS_WITH(m_sharpness(t.m, t.ce, t.x, t.y, 10, 0.0), Catch::Contains("rho must be"));
}
