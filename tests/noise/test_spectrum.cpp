// 003: C in the Hessian eigenbasis, the power-law fit, the AWD second moment and the off-diagonal
// statistic against dense computations done here (H materialised and eigendecomposed, C and
// (1/N) sum_i H_i^2 as d x d matrices from batch-size-1 gradients and one-sample Hessians), and the
// fit against synthetic data with a known exponent.
#include <algorithm>
#include <array>

#include "noise/noise_fixtures.hpp"

using namespace noisefix;

namespace {

/// OLS of y on [x 1] by a dense least-squares solve: {slope, intercept, R^2, residual std, SE of slope}.
std::array<D, 5> dense_ols(const Vector<D>& x, const Vector<D>& y) {
  Matrix<D> a(x.size(), 2);
  a.col(0) = x;
  a.col(1).setOnes();
  const Vector<D> coef = a.colPivHouseholderQr().solve(y);
  const Vector<D> res = y - a * coef;
  const D ss_tot = (y.array() - y.mean()).square().sum();
  const D s = std::sqrt(res.squaredNorm() / static_cast<D>(x.size() - 2));
  return {coef(0), coef(1), 1 - res.squaredNorm() / ss_tot, s, s / std::sqrt((x.array() - x.mean()).square().sum())};
}

D dense_mean_abs_rho(const Matrix<D>& c) {
  D s = 0;
  for (Index k = 0; k < c.rows(); ++k)
    for (Index l = 0; l < c.rows(); ++l)
      if (k != l) s += std::abs(c(k, l)) / std::sqrt(c(k, k) * c(l, l));
  return s / static_cast<D>(c.rows() * (c.rows() - 1));
}

}  // namespace

TEST_CASE("The power-law fit recovers a known exponent exactly on synthetic data", "[noise][spectrum][fit]") {
  const Index k = 20;
  Vector<D> lambda(k + 3), c(k + 3);
  for (Index j = 0; j < k; ++j) lambda(j) = 10 * std::pow(static_cast<D>(j + 1), -1.5);
  lambda.tail(3) << 1e-12, 0.0, -0.5;  // below the positivity floor, zero, negative (indefinite H)
  c = (0.3 + 1.7 * lambda.array().abs().max(1e-300).log()).exp();
  const PowerLawFit<D> f = power_law_fit(lambda, c);
  REQUIRE(f.valid());
  CHECK(f.exponent == Approx(1.7).epsilon(1e-12));
  CHECK(f.intercept == Approx(0.3).epsilon(1e-12));
  CHECK(f.r_squared == Approx(1.0).epsilon(1e-12));
  CHECK(f.residual_std < 1e-12);
  CHECK(f.points == k);
  CHECK(f.first_rank == 1);
  CHECK(f.last_rank == k);
  // A sub-range of ranks.
  const PowerLawFit<D> g = power_law_fit(lambda, c, {3, 10});
  CHECK(g.points == 8);
  CHECK(g.first_rank == 3);
  CHECK(g.last_rank == 10);
  CHECK(g.exponent == Approx(1.7).epsilon(1e-12));
  // An uncertainty larger than lambda_k (e.g. a Ritz residual) excludes the point; so does C_kk = 0.
  Vector<D> unc = Vector<D>::Zero(k + 3);
  unc(0) = 100;
  Vector<D> c0 = c;
  c0(1) = 0;
  const PowerLawFit<D> h = power_law_fit(lambda, c0, {}, unc);
  CHECK(h.points == k - 2);
  CHECK(h.first_rank == 3);
  // Fewer than two points: an invalid fit, not an exception.
  const PowerLawFit<D> one = power_law_fit(lambda, c, {5, 5});
  CHECK_FALSE(one.valid());
  CHECK(one.points == 1);
  CHECK(std::isnan(one.exponent));
}

TEST_CASE("The power-law fit on noisy data equals a dense least-squares solve", "[noise][spectrum][fit]") {
  Rng rng(41);
  const Index k = 15;
  Vector<D> lambda(k), c(k);
  for (Index j = 0; j < k; ++j) {
    lambda(j) = std::exp(-0.4 * static_cast<D>(j));
    c(j) = std::exp(-1.0 + 1.3 * std::log(lambda(j)) + 0.1 * rng.normal<D>());
  }
  const PowerLawFit<D> f = power_law_fit(lambda, c);
  const auto e = dense_ols(lambda.array().log().matrix(), c.array().log().matrix());
  CHECK(rel(f.exponent, e[0]) < 1e-10);
  CHECK(rel(f.intercept, e[1]) < 1e-10);
  CHECK(rel(f.r_squared, e[2]) < 1e-10);
  CHECK(rel(f.residual_std, e[3]) < 1e-10);
  CHECK(rel(f.exponent_std_error, e[4]) < 1e-10);
  CHECK(f.r_squared < 1);
}

TEST_CASE("The off-diagonal statistic equals a hand computation", "[noise][spectrum]") {
  Matrix<D> c(3, 3);
  c << 1, 0.5, 0, 0.5, 4, -1, 0, -1, 1;
  // |rho_12| = 0.5 / 2 = 0.25, rho_13 = 0, |rho_23| = 1 / 2 = 0.5: mean over 6 ordered pairs 0.25.
  CHECK(mean_offdiagonal_coupling(c) == Approx(0.25).epsilon(1e-15));
  Matrix<D> z = c;
  z(2, 2) = 0;  // pairs with a zero diagonal entry are left out: only (1, 2) remains
  CHECK(mean_offdiagonal_coupling(z) == Approx(0.25).epsilon(1e-15));
  z(1, 1) = 0;
  CHECK(std::isnan(mean_offdiagonal_coupling(z)));
  CHECK_THROWS_AS(mean_offdiagonal_coupling(Matrix<D>(2, 3)), ShapeError);
}

TEST_CASE("Random orthonormal frames are orthonormal, seeded and isotropic on average", "[noise][spectrum]") {
  const Matrix<D> w = random_orthonormal_frame<D>(7, 3, 5);
  CHECK(rel_err(w.transpose() * w, Matrix<D>::Identity(3, 3)) < 1e-14);
  CHECK(rel_err(random_orthonormal_frame<D>(7, 3, 5), w) == 0);
  CHECK(rel_err(random_orthonormal_frame<D>(7, 3, 6), w) > 0.1);
  Matrix<D> p = Matrix<D>::Zero(5, 5);
  for (std::uint64_t s = 0; s < 3000; ++s) {
    const Matrix<D> f = random_orthonormal_frame<D>(5, 2, s);
    p += f * f.transpose() / 3000.0;
  }
  CHECK((p - 0.4 * Matrix<D>::Identity(5, 5)).cwiseAbs().maxCoeff() < 0.03);  // E[W W^T] = (k/d) I
  CHECK_THROWS_WITH(random_orthonormal_frame<D>(3, 4, 0), Catch::Contains("k = 4"));
}

TEST_CASE("C in the Hessian eigenbasis, the AWD second moment and the fits equal dense computations",
          "[noise][spectrum]") {
  Rng rng(42);
  const Index n = 10, k = 8;
  Net m = small_mlp(4, 3, 43);
  const Matrix<D> x = random_matrix(4, n, rng);
  auto check_loss = [&](const auto& loss, const auto& y) {
    const Eig eig = descending_eig(dense_hessian(m, loss, x, y));
    const Matrix<D> u = eig.vectors.leftCols(k);
    const Vector<D> lam = eig.values.head(k);
    const Matrix<D> g = sample_gradients(m, loss, x, y);
    const Matrix<D> c = g * g.transpose() / static_cast<D>(n);  // uncentred (003 eq. 2)
    const Matrix<D> cu = u.transpose() * c * u;
    const Vector<D> awd = (u.transpose() * dense_hessian_second_moment(m, loss, x, y) * u).diagonal();
    NoiseSpectrumOptions o;
    o.seed = 17;
    o.block = 3;
    const NoiseCurvatureSpectrum<D> r = noise_curvature_spectrum(m, loss, x, y, lam, u, o);
    CHECK(rel_err(r.covariance, cu) < 1e-9);
    CHECK(rel_err(r.awd, awd) < 1e-9);
    CHECK(r.samples == n);
    const Matrix<D> w = random_orthonormal_frame<D>(m.num_params(), k, 17);
    CHECK(rel_err(r.covariance_random, w.transpose() * c * w) < 1e-9);
    CHECK(rel(r.mean_offdiagonal, dense_mean_abs_rho(cu)) < 1e-9);
    CHECK(rel(r.mean_offdiagonal_random, dense_mean_abs_rho(w.transpose() * c * w)) < 1e-9);
    // The fits over the numerically positive top eigenvalues.
    Index pos = 0;
    while (pos < k && lam(pos) > 1e-8 * lam.cwiseAbs().maxCoeff()) ++pos;
    REQUIRE(pos >= 3);
    const auto e = dense_ols(lam.head(pos).array().log().matrix(), cu.diagonal().head(pos).array().log().matrix());
    CHECK(r.fit.points == pos);
    CHECK(r.fit.last_rank == pos);
    CHECK(rel(r.fit.exponent, e[0]) < 1e-9);
    CHECK(rel(r.fit.r_squared, e[2]) < 1e-9);
    const auto ea = dense_ols(lam.head(pos).array().log().matrix(), awd.head(pos).array().log().matrix());
    CHECK(rel(r.awd_fit.exponent, ea[0]) < 1e-9);
  };
  SECTION("cross-entropy") { check_loss(CE{}, labels(n, 3, rng)); }
  SECTION("squared error") { check_loss(MSE{}, random_matrix(3, n, rng)); }
}

TEST_CASE("Only the numerically positive eigenvalues of an indefinite Hessian enter the fit", "[noise][spectrum]") {
  Rng rng(44);
  const Index n = 6;
  Net m = small_mlp(4, 3, 45);
  const Matrix<D> x = random_matrix(4, n, rng);
  const Matrix<D> y = random_matrix(3, n, rng, 3.0);  // large residuals: H has negative eigenvalues
  MSE mse;
  const Eig eig = descending_eig(dense_hessian(m, mse, x, y));
  const Index d = m.num_params();
  REQUIRE(eig.values(d - 1) < -1e-6 * eig.values(0));
  NoiseSpectrumOptions o;
  o.awd = false;
  const NoiseCurvatureSpectrum<D> r = noise_curvature_spectrum(m, mse, x, y, eig.values, eig.vectors, o);
  const Index positive = (eig.values.array() > 1e-8 * eig.values.cwiseAbs().maxCoeff()).count();
  CHECK(r.fit.points == positive);
  CHECK(r.fit.points < d);
  CHECK(r.fit.last_rank == positive);
  CHECK(r.awd.size() == 0);
}

TEST_CASE("The spectrum statistics accept a lanczos result and agree with the dense eigenbasis",
          "[noise][spectrum]") {
  Rng rng(46);
  const Index n = 8;
  Net m = small_mlp(4, 3, 47);
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  CE ce;
  HessianOperator h(m, ce, x, y);
  LanczosOptions lo;
  lo.k = 5;
  lo.tol = 1e-12;
  lo.max_iterations = m.num_params();
  const LanczosResult<D> eig = lanczos(h, lo);
  const Eig dense = descending_eig(dense_hessian(m, ce, x, y));
  CHECK(rel_err(eig.eigenvalues, dense.values.head(5)) < 1e-8);
  const NoiseCurvatureSpectrum<D> r = noise_curvature_spectrum(m, ce, x, y, eig);
  const Matrix<D> g = sample_gradients(m, ce, x, y);
  const Matrix<D> c = g * g.transpose() / static_cast<D>(n);
  const Matrix<D> u = dense.vectors.leftCols(5);
  CHECK(rel_err(r.covariance.diagonal(), (u.transpose() * c * u).diagonal()) < 1e-6);  // C_kk: sign-free
  CHECK(r.fit.points == 5);
  LanczosOptions no_vectors = lo;
  no_vectors.compute_eigenvectors = false;
  CHECK_THROWS_WITH(noise_curvature_spectrum(m, ce, x, y, lanczos(h, no_vectors)),
                    Catch::Contains("compute_eigenvectors"));
}

TEST_CASE("The 003 functions reject bad arguments with messages naming them", "[noise][spectrum][errors]") {
  Rng rng(48);
  Net m = small_mlp(4, 3, 49);
  const Matrix<D> x = random_matrix(4, 5, rng);
  const Labels y = labels(5, 3, rng);
  CE ce;
  const Index d = m.num_params();
  const Matrix<D> u = random_orthonormal_frame<D>(d, 3, 1);
  const Vector<D> lam = Vector<D>::Ones(3);
  CHECK_THROWS_WITH(noise_curvature_spectrum(m, ce, x, y, lam, Matrix<D>(u.topRows(d - 1))),
                    Catch::Contains("eigenvectors is"));
  CHECK_THROWS_WITH(noise_curvature_spectrum(m, ce, x, y, Vector<D>(0), Matrix<D>(d, 0)), Catch::Contains("k = 0"));
  CHECK_THROWS_WITH(awd_second_moment(m, ce, x, y, Matrix<D>(u.topRows(d - 1))), Catch::Contains("basis has"));
  CHECK_THROWS_WITH(awd_second_moment(m, ce, x, y, u, 0), Catch::Contains("block = 0"));
  CHECK_THROWS_AS(covariance_in_basis(random_matrix(d, 4, rng), Matrix<D>(u.topRows(d - 1))), ShapeError);
  CHECK_THROWS_WITH(power_law_fit(lam, Vector<D>::Ones(4).eval()), Catch::Contains("values has 4"));
  CHECK_THROWS_WITH(power_law_fit(lam, lam, {0}), Catch::Contains("first_rank = 0"));
  CHECK_THROWS_WITH(power_law_fit(lam, lam, {3, 2}), Catch::Contains("last_rank = 2"));
  CHECK_THROWS_WITH(power_law_fit(lam, lam, {1, 0, -1.0}), Catch::Contains("min_relative_eigenvalue = -1"));
  CHECK_THROWS_WITH(power_law_fit(lam, lam, {}, Vector<D>::Ones(2).eval()), Catch::Contains("uncertainty has 2"));
}
