// Power iteration and Lanczos against Eigen's dense SelfAdjointEigenSolver.
#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>

#include "curvature/estimators/estimators.hpp"
#include "estimators/spectra.hpp"

using namespace curvature;
using curvature::testing::with_spectrum;

namespace {

// Distinct eigenvalues with a clear top gap: a few well separated at each end, the bulk between.
Vector<double> spiked_spectrum(Index d, double top, double bottom) {
  Vector<double> l = Vector<double>::LinSpaced(d, -1.0, 1.0);
  for (Index i = 0; i < 5; ++i) l(d - 1 - i) = top - 0.7 * static_cast<double>(i);
  for (Index i = 0; i < 3; ++i) l(i) = bottom + 0.6 * static_cast<double>(i);
  return l;
}

/// |u^T v| for unit vectors: 1 when they agree up to sign.
double alignment(const Vector<double>& u, const Vector<double>& v) { return std::abs(u.dot(v)) / (u.norm() * v.norm()); }

}  // namespace

TEST_CASE("Power iteration finds the dominant eigenpair with its sign", "[power]") {
  for (double bottom : {-3.0, -12.0}) {  // positive dominant, then negative dominant (indefinite)
    const Matrix<double> a = with_spectrum(spiked_spectrum(100, 10.0, bottom), 1);
    DenseOperator<double> op(a);
    Eigen::SelfAdjointEigenSolver<Matrix<double>> es(a);
    const Index dom = std::abs(bottom) > 10 ? 0 : 99;
    PowerIterationOptions o;
    o.tol = 1e-10;
    const auto r = power_iteration(op, o);
    INFO("bottom = " << bottom);
    CHECK(r.converged());
    CHECK(r.eigenvalue == Approx(es.eigenvalues()(dom)).epsilon(1e-10));
    CHECK(alignment(r.eigenvector, es.eigenvectors().col(dom)) == Approx(1.0).epsilon(1e-8));
    CHECK(r.residual_norm <= 1e-10 * std::abs(r.eigenvalue));
    CHECK(r.residual_norm == Approx((a * r.eigenvector - r.eigenvalue * r.eigenvector).norm()).margin(1e-12));
    CHECK(r.matvecs == r.iterations);
  }
}

TEST_CASE("Power iteration reports non-convergence for eigenvalues +5 and -5", "[power]") {
  Vector<double> l = curvature::testing::linear_spectrum(30, -1.0, 1.0);
  l(0) = -5.0, l(29) = 5.0;
  DenseOperator<double> op(with_spectrum(l, 2));
  PowerIterationOptions o;
  o.max_iterations = 50;
  PowerIterationResult<double> r;
  REQUIRE_NOTHROW(r = power_iteration(op, o));
  CHECK_FALSE(r.converged());
  CHECK(r.status == SolverStatus::MaxIterations);
  CHECK(r.iterations == 50);
}

TEST_CASE("Lanczos top-5 eigenpairs match the dense eigensolver to 1e-8", "[lanczos]") {
  const Matrix<double> a = with_spectrum(spiked_spectrum(200, 10.0, -4.0), 3);
  DenseOperator<double> op(a);
  Eigen::SelfAdjointEigenSolver<Matrix<double>> es(a);
  LanczosOptions o;
  o.k = 5;
  o.tol = 1e-10;
  const auto r = lanczos(op, o);
  REQUIRE(r.converged());
  REQUIRE(r.eigenvalues.size() == 5);
  CHECK(r.iterations < 200);  // converged before exhausting the space
  CHECK(r.matvecs == r.iterations);
  for (Index i = 0; i < 5; ++i) {
    CHECK(r.eigenvalues(i) == Approx(es.eigenvalues()(199 - i)).margin(1e-8));
    CHECK(alignment(r.eigenvectors.col(i), es.eigenvectors().col(199 - i)) == Approx(1.0).margin(1e-8));
    const double explicit_residual = (a * r.eigenvectors.col(i) - r.eigenvalues(i) * r.eigenvectors.col(i)).norm();
    CHECK(r.residual_norms(i) == Approx(explicit_residual).margin(1e-9));
    CHECK(r.residual_norms(i) <= 1e-10 * 10.0);
  }
  CHECK((r.eigenvectors.transpose() * r.eigenvectors - Matrix<double>::Identity(5, 5)).norm() < 1e-10);
}

TEST_CASE("Lanczos finds the smallest eigenvalues and both ends of an indefinite spectrum", "[lanczos]") {
  const Matrix<double> a = with_spectrum(spiked_spectrum(150, 6.0, -8.0), 4);
  DenseOperator<double> op(a);
  Eigen::SelfAdjointEigenSolver<Matrix<double>> es(a);
  const Vector<double>& ev = es.eigenvalues();
  LanczosOptions o;
  o.k = 3;
  o.tol = 1e-10;
  o.which = SpectrumEnd::Smallest;
  const auto s = lanczos(op, o);
  REQUIRE(s.converged());
  for (Index i = 0; i < 3; ++i) CHECK(s.eigenvalues(i) == Approx(ev(i)).margin(1e-8));
  o.which = SpectrumEnd::Both;
  o.k = 5;
  const auto b = lanczos(op, o);
  REQUIRE(b.converged());
  const std::vector<double> expected{ev(149), ev(148), ev(147), ev(1), ev(0)};
  for (Index i = 0; i < 5; ++i) CHECK(b.eigenvalues(i) == Approx(expected[static_cast<std::size_t>(i)]).margin(1e-8));
  CHECK(alignment(b.eigenvectors.col(4), es.eigenvectors().col(0)) == Approx(1.0).margin(1e-8));
}

TEST_CASE("Lanczos sees one copy of a repeated eigenvalue, every copy once the space is exhausted", "[lanczos]") {
  Vector<double> l = curvature::testing::linear_spectrum(30, 0.0, 2.0);
  l.tail(3).setConstant(5.0);
  DenseOperator<double> op(with_spectrum(l, 5));
  LanczosOptions o;
  o.k = 4;
  o.tol = 1e-10;
  // In exact arithmetic a start vector's Krylov space holds one direction of the eigenspace of 5
  // and the residuals cannot tell that copies are missing; rounding may or may not supply them.
  const auto once = lanczos(op, o);
  REQUIRE(once.converged());
  CHECK(once.eigenvalues(0) == Approx(5.0).margin(1e-8));
  // tol = 0 runs until R^d is exhausted; each breakdown restarts orthogonally to the basis.
  o.tol = 0;
  const auto r = lanczos(op, o);
  REQUIRE(r.converged());
  CHECK(r.iterations == 30);
  for (Index i = 0; i < 3; ++i) CHECK(r.eigenvalues(i) == Approx(5.0).margin(1e-8));
  CHECK(r.eigenvalues(3) == Approx(l(26)).margin(1e-8));
  CHECK((r.eigenvectors.transpose() * r.eigenvectors - Matrix<double>::Identity(4, 4)).norm() < 1e-8);
}

TEST_CASE("Lanczos reports non-convergence in its status", "[lanczos]") {
  DenseOperator<double> op(with_spectrum(curvature::testing::linear_spectrum(200, 0.0, 1.0), 6));
  LanczosOptions o;
  o.k = 3;
  o.max_iterations = 6;
  o.tol = 1e-12;
  LanczosResult<double> r;
  REQUIRE_NOTHROW(r = lanczos(op, o));
  CHECK(r.status == SolverStatus::MaxIterations);
  CHECK(r.iterations == 6);
  CHECK(r.residual_norms.maxCoeff() > 1e-12);
  CHECK(std::string(to_string(r.status)) == "max_iterations");
}

TEST_CASE("Eigensolvers reject bad options with messages naming the argument", "[lanczos][power][errors]") {
  DenseOperator<double> op(with_spectrum(curvature::testing::linear_spectrum(10, 0.0, 1.0), 7));
  LanczosOptions o;
  o.k = 11;
  REQUIRE_THROWS_AS(lanczos(op, o), ValueError);
  REQUIRE_THROWS_WITH(lanczos(op, o), Catch::Contains("lanczos") && Catch::Contains("k = 11") && Catch::Contains("d = 10"));
  o.k = 0;
  REQUIRE_THROWS_WITH(lanczos(op, o), Catch::Contains("k = 0"));
  o.k = 4;
  o.max_iterations = 3;
  REQUIRE_THROWS_WITH(lanczos(op, o), Catch::Contains("max_iterations = 3"));
  o.max_iterations = 0;
  o.tol = -1e-3;
  REQUIRE_THROWS_WITH(lanczos(op, o), Catch::Contains("tol = -0.001"));
  PowerIterationOptions p;
  p.tol = -1;
  REQUIRE_THROWS_WITH(power_iteration(op, p), Catch::Contains("power_iteration") && Catch::Contains("tol"));
  p.tol = 1e-6;
  p.max_iterations = 0;
  REQUIRE_THROWS_WITH(power_iteration(op, p), Catch::Contains("max_iterations = 0"));
}
