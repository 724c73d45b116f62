// 002 eq. 3 (alpha, beta, mu, mu1, mu2) and Def. 2.1 (norm uniformity) against dense
// computations done here: G from explicit Jacobians, Sigma, Sigma1, Sigma2 as d x d matrices
// from batch-size-1 gradients, L from batch-size-1 losses.
#include "noise/noise_fixtures.hpp"

using namespace noisefix;

namespace {

struct DenseAlignment {
  D alpha, beta, mu, mu1, mu2, tr_sigma_g, tr_sigma1_g, tr_sigma2_g, g_f2, s_f2, loss;
};

template <class L>
DenseAlignment dense_alignment(Net& m, const L& loss, const Matrix<D>& x, const typename L::Targets& y) {
  const Matrix<D> gm = dense_ggn(m, loss, x);
  const Matrix<D> g = sample_gradients(m, loss, x, y);
  const D n = static_cast<D>(x.cols());
  const Vector<D> gbar = g.rowwise().mean();
  const Matrix<D> sigma1 = g * g.transpose() / n, sigma2 = gbar * gbar.transpose();
  const Matrix<D> sigma = sigma1 - sigma2;
  DenseAlignment r{};
  r.loss = mean_sample_loss(m, loss, x, y);
  r.tr_sigma_g = (sigma * gm).trace();
  r.tr_sigma1_g = (sigma1 * gm).trace();
  r.tr_sigma2_g = (sigma2 * gm).trace();
  r.g_f2 = gm.squaredNorm();
  r.s_f2 = sigma.squaredNorm();
  r.alpha = r.tr_sigma_g / (gm.norm() * sigma.norm());
  r.beta = sigma.norm() / (2 * r.loss * gm.norm());
  r.mu = r.tr_sigma_g / (2 * r.loss * r.g_f2);
  r.mu1 = r.tr_sigma1_g / (2 * r.loss * r.g_f2);
  r.mu2 = r.tr_sigma2_g / (2 * r.loss * r.g_f2);
  return r;
}

void check_against(const AlignmentFactors<D>& a, const DenseAlignment& e, D tol) {
  REQUIRE(a.defined());
  CHECK(rel(a.loss, e.loss) < 1e-12);
  CHECK(rel(a.trace_sigma_g, e.tr_sigma_g) < tol);
  CHECK(rel(a.trace_sigma1_g, e.tr_sigma1_g) < tol);
  CHECK(rel(a.trace_sigma2_g, e.tr_sigma2_g) < tol);
  CHECK(rel(a.g_frobenius_sq.value, e.g_f2) < tol);
  CHECK(rel(a.sigma_frobenius_sq, e.s_f2) < tol);
  CHECK(rel(*a.alpha, e.alpha) < tol);
  CHECK(rel(*a.beta, e.beta) < tol);
  CHECK(rel(*a.mu, e.mu) < tol);
  CHECK(rel(*a.mu1, e.mu1) < tol);
  CHECK(rel(*a.mu2, e.mu2) < tol);
  CHECK(rel(*a.mu, *a.alpha * *a.beta) < 1e-12);  // mu = alpha beta (002 eq. 3)
  CHECK(rel(*a.mu, *a.mu1 - *a.mu2) < 1e-9);      // Sigma = Sigma1 - Sigma2
}

}  // namespace

TEST_CASE("alpha, beta, mu, mu1, mu2 equal the dense formulas of 002 eq. 3", "[noise][alignment]") {
  Rng rng(11);
  const Index n = 10;
  SECTION("cross-entropy") {
    Net m = small_mlp(4, 3, 12);
    const Matrix<D> x = random_matrix(4, n, rng);
    const Labels y = labels(n, 3, rng);
    CE ce;
    const AlignmentFactors<D> a = alignment_factors(m, ce, x, y, {true, {}, 7});
    CHECK(a.samples == n);
    CHECK(a.g_frobenius_sq.std_error == 0);
    check_against(a, dense_alignment(m, ce, x, y), 1e-9);
  }
  SECTION("squared error, three outputs") {
    Net m = small_mlp(4, 3, 13);
    const Matrix<D> x = random_matrix(4, n, rng);
    const Matrix<D> y = random_matrix(3, n, rng);
    MSE mse;
    check_against(alignment_factors(m, mse, x, y), dense_alignment(m, mse, x, y), 1e-9);
  }
}

TEST_CASE("With a Hutchinson ||G||_F^2 the factors carry its estimate and agree within its error",
          "[noise][alignment]") {
  Rng rng(14);
  Net m = small_mlp(4, 3, 15);
  const Matrix<D> x = random_matrix(4, 10, rng);
  const Labels y = labels(10, 3, rng);
  CE ce;
  AlignmentOptions o;
  o.exact_frobenius = false;
  o.hutchinson.max_probes = 400;
  o.hutchinson.seed = 3;
  const AlignmentFactors<D> a = alignment_factors(m, ce, x, y, o);
  const DenseAlignment e = dense_alignment(m, ce, x, y);
  REQUIRE(a.defined());
  CHECK(a.g_frobenius_sq.probes == 400);
  CHECK(a.g_frobenius_sq.std_error > 0);
  CHECK(std::abs(a.g_frobenius_sq.value - e.g_f2) < 4 * a.g_frobenius_sq.std_error);
  // The traces stay exact; mu scales with the estimated norm.
  CHECK(rel(a.trace_sigma_g, e.tr_sigma_g) < 1e-9);
  CHECK(rel(*a.mu * a.g_frobenius_sq.value, e.mu * e.g_f2) < 1e-9);
}

TEST_CASE("The factors are undefined at a loss below 1e-12, the ingredients still reported", "[noise][alignment]") {
  Rng rng(16);
  Net m = small_mlp(4, 3, 17);
  const Matrix<D> x = random_matrix(4, 8, rng);
  const Matrix<D> y = m.forward(x);  // a perfect fit: L = 0, every g_i = 0
  MSE mse;
  const AlignmentFactors<D> a = alignment_factors(m, mse, x, y);
  CHECK_FALSE(a.defined());
  CHECK_FALSE(a.alpha.has_value());
  CHECK_FALSE(a.beta.has_value());
  CHECK_FALSE(a.mu1.has_value());
  CHECK_FALSE(a.mu2.has_value());
  CHECK(a.loss == 0);
  CHECK(a.g_frobenius_sq.value > 0);
  // The threshold, with an explicit operator: 1e-13 is below, 1e-11 above.
  const Matrix<D> g = random_matrix(5, 6, rng);
  DenseOperator<D> gop(Matrix<D>(g * g.transpose()));
  CHECK_FALSE(alignment_factors(gop, g, 1e-13).defined());
  const AlignmentFactors<D> b = alignment_factors(gop, g, 1e-11);
  REQUIRE(b.defined());
  CHECK(rel(*b.mu, b.trace_sigma_g / (2e-11 * b.g_frobenius_sq.value)) < 1e-12);
}

TEST_CASE("Norm uniformity equals min chi_i / mean chi_i with chi_i = grad f_i^T G grad f_i", "[noise][uniformity]") {
  Rng rng(18);
  Net m = small_mlp(3, 1, 19);  // K = 1
  const Index n = 9;
  const Matrix<D> x = random_matrix(3, n, rng);
  Matrix<D> gf(m.num_params(), n);  // grad f(x_i) = J_i^T
  for (Index i = 0; i < n; ++i) gf.col(i) = exact_jacobian(m, x, i).row(0).transpose();
  const Matrix<D> g = gf * gf.transpose() / static_cast<D>(n);  // 002's G
  const Vector<D> chi = gf.cwiseProduct(g * gf).colwise().sum().transpose();
  const D gamma = chi.minCoeff() / chi.mean();
  CHECK(rel_err(model_gradients(m, x), gf) < 1e-12);
  const NormUniformity<D> u = norm_uniformity(m, x);
  CHECK(rel_err(u.chi, chi) < 1e-12);
  CHECK(rel(u.gamma, gamma) < 1e-12);
  CHECK(u.chi(u.argmin) == u.chi.minCoeff());
  CHECK(u.gamma > 0);
  CHECK(u.gamma <= 1);
  // With the MSE GGN operator (= 002's G for K = 1).
  const Matrix<D> y = random_matrix(1, n, rng);
  MSE mse;
  GGNOperator gop(m, mse, x, y);
  CHECK(rel(norm_uniformity(gop, gf, 4).gamma, gamma) < 1e-9);
  // Lemma 2.2: mu1 >= gamma.
  const AlignmentFactors<D> a = alignment_factors(m, mse, x, y);
  REQUIRE(a.defined());
  CHECK(*a.mu1 >= u.gamma);
}

TEST_CASE("The 002 functions reject bad arguments with messages naming them", "[noise][alignment][errors]") {
  Rng rng(20);
  Net m3 = small_mlp(3, 3, 21);
  const Matrix<D> x = random_matrix(3, 5, rng);
  CHECK_THROWS_AS(model_gradients(m3, x), ShapeError);
  CHECK_THROWS_WITH(norm_uniformity(m3, x), Catch::Contains("K = 3"));
  const Matrix<D> g = random_matrix(5, 6, rng);
  DenseOperator<D> gop(Matrix<D>(g * g.transpose()));
  CHECK_THROWS_WITH(alignment_factors(gop, random_matrix(4, 6, rng), 1.0), Catch::Contains("expected d = 5"));
  CHECK_THROWS_AS(alignment_factors(gop, Matrix<D>(5, 0), 1.0), ShapeError);
  CHECK_THROWS_WITH(alignment_factors(gop, g, std::nan("")), Catch::Contains("loss = nan"));
  CHECK_THROWS_WITH(alignment_factors(gop, g, 1.0, {true, {}, 0}), Catch::Contains("block = 0"));
  CHECK_THROWS_AS(norm_uniformity(Matrix<D>(5, 0)), ShapeError);
}
