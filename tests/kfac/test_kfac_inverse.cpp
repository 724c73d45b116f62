// The damped K-FAC inverses against the dense matrices they invert, and the errors of the K-FAC API.
#include "kfac/kfac_fixtures.hpp"

using namespace kfix;

TEST_CASE("The exact damped inverse solves (F_kfac + lambda I) X = V", "[kfac][inverse]") {
  Rng rng(21);
  CE ce;
  Net mlp = small_mlp(22);
  Net cnn = tiny_cnn(23);
  const Matrix<D> xm = random_matrix(4, 6, rng), xc = random_matrix(25, 4, rng);
  const Labels ym = labels(6, 3, rng), yc = labels(4, 3, rng);
  Kfac km(mlp, ce, xm, ym), kc(cnn, ce, xc, yc);
  for (Kfac* kf : {&km, &kc}) {
    const Matrix<D> fk = dense(*kf);
    const Index d = kf->dim();
    const Matrix<D> v = random_matrix(d, 5, rng);
    for (D lambda : {1e-3, 0.5}) {
      INFO("d = " << d << ", lambda = " << lambda);
      KfacInverse<D, S> inv = kf->inverse(lambda);
      CHECK(inv.dim() == d);
      CHECK(inv.lambda() == lambda);
      Matrix<D> xsol;
      inv.apply(v, xsol);
      const Matrix<D> damped = fk + lambda * Matrix<D>::Identity(d, d);
      CHECK(rel_err(damped * xsol, v) < 1e-10);
      // The inverse is symmetric, as an estimator's operator must be.
      const Matrix<D> dinv = dense(inv);
      CHECK((dinv - dinv.transpose()).norm() / dinv.norm() < 1e-12);
    }
  }
}

TEST_CASE("The factored-damping inverse inverts (G + sqrt(lambda)/pi I) (x) (A + pi sqrt(lambda) I)",
          "[kfac][inverse]") {
  Rng rng(24);
  CE ce;
  Net mlp = small_mlp(25);
  Net cnn = tiny_cnn(26);
  const Matrix<D> xm = random_matrix(4, 5, rng), xc = random_matrix(25, 3, rng);
  const Labels ym = labels(5, 3, rng), yc = labels(3, 3, rng);
  Kfac km(mlp, ce, xm, ym), kc(cnn, ce, xc, yc);
  for (Kfac* kf : {&km, &kc}) {
    const D lambda = 0.01;
    KfacInverse<D, S> inv = kf->inverse(lambda, KfacDamping::Factored);
    Matrix<D> documented = Matrix<D>::Zero(kf->dim(), kf->dim());
    for (Index k = 0; k < kf->num_blocks(); ++k) {
      const KfacBlock<D>& b = kf->block(k);
      const D pi = std::sqrt((b.A.trace() / static_cast<D>(b.A.rows())) / (b.G.trace() / static_cast<D>(b.G.rows())));
      CHECK(std::abs(inv.pi(k) - pi) < 1e-14 * pi);
      const D r = std::sqrt(lambda);
      place_kron(documented, b.offset, b.G + (r / pi) * Matrix<D>::Identity(b.out, b.out),
                 b.A + (pi * r) * Matrix<D>::Identity(b.in + 1, b.in + 1));
    }
    const Matrix<D> v = random_matrix(kf->dim(), 4, rng);
    Matrix<D> xsol;
    inv.apply(v, xsol);
    CHECK(rel_err(documented * xsol, v) < 1e-10);
    // It differs from the exact damped inverse (a different matrix, not a round-off).
    Matrix<D> xexact;
    kf->inverse(lambda).apply(v, xexact);
    CHECK(rel_err(xsol, xexact) > 1e-3);
  }
}

TEST_CASE("K-FAC rejects unsupported layers, non-positive damping and mismatched batches", "[kfac][errors]") {
  Rng rng(27);
  CE ce;
  const Matrix<D> x = random_matrix(4, 3, rng);
  const Labels y{0, 1, 2};
  SECTION("a layer with parameters other than Linear and Conv2d is named") {
    Net m(nn::Shape{4, 1, 1});
    m.add(nn::Linear<D, S>(6)).add(nn::BatchNorm<D, S>()).add(nn::Linear<D, S>(3));
    m.set_training(false);
    CHECK_THROWS_AS(Kfac(m, ce, x, y), UnsupportedError);
    CHECK_THROWS_WITH(Kfac(m, ce, x, y), Catch::Contains("layer 1 (batchnorm)"));
  }
  Net m = small_mlp(28);
  Kfac kf(m, ce, x, y);
  SECTION("lambda <= 0 or NaN") {
    for (D lambda : {0.0, -1.0, std::nan("")}) {
      CHECK_THROWS_AS(kf.inverse(lambda), ValueError);
      CHECK_THROWS_WITH(kf.inverse(lambda, KfacDamping::Factored), Catch::Contains("lambda"));
    }
  }
  SECTION("batch shapes") {
    CHECK_THROWS_AS(Kfac(m, ce, x, Labels{0, 1}), ShapeError);
    CHECK_THROWS_AS(Kfac(m, ce, Matrix<D>(random_matrix(5, 3, rng)), y), ShapeError);
    CHECK_THROWS_AS(Kfac(m, ce, Matrix<D>(4, 0), Labels{}), ShapeError);
    MSE mse;
    CHECK_THROWS_AS(Kfac(m, mse, x, Matrix<D>(random_matrix(2, 3, rng))), ShapeError);
  }
  SECTION("mc_samples < 1") {
    CHECK_THROWS_WITH(Kfac(m, ce, x, y, KfacOptions{KfacFisher::MonteCarlo, 0, 1}), Catch::Contains("mc_samples"));
  }
  SECTION("a block of the wrong height, or out aliasing V") {
    Matrix<D> out;
    CHECK_THROWS_AS(kf.apply(Matrix<D>::Ones(kf.dim() + 1, 2), out), ShapeError);
    KfacInverse<D, S> inv = kf.inverse(0.1);
    CHECK_THROWS_AS(inv.apply(Matrix<D>::Ones(kf.dim() - 1, 2), out), ShapeError);
    Matrix<D> v = Matrix<D>::Ones(kf.dim(), 2);
    CHECK_THROWS_AS(kf.apply(v, v), ValueError);
  }
}
