// Conjugate gradients against dense LDLT solves; outcomes reported as status, not exceptions.
#include <catch2/catch.hpp>

#include <Eigen/Cholesky>

#include "curvature/estimators/estimators.hpp"
#include "estimators/spectra.hpp"

using namespace curvature;
using curvature::testing::with_spectrum;

namespace {
Matrix<double> gaussian(Index rows, Index cols, std::uint64_t seed) {
  Matrix<double> m(rows, cols);
  fill_probes(m, Probe::Gaussian, seed);
  return m;
}
}  // namespace

TEST_CASE("CG solves a block of right-hand sides like a dense LDLT solve", "[cg]") {
  const Matrix<double> a = with_spectrum(Vector<double>::LinSpaced(80, 0.1, 10.0), 1);
  DenseOperator<double> op(a);
  Matrix<double> b = gaussian(80, 3, 2);
  b.col(1).setZero();
  CgOptions o;
  o.tol = 1e-12;
  const auto r = conjugate_gradient(op, b, o);
  REQUIRE(r.converged());
  const Matrix<double> exact = a.ldlt().solve(b);
  CHECK((r.x - exact).norm() <= 1e-9 * exact.norm());
  CHECK(r.iterations[1] == 0);
  CHECK(r.x.col(1).isZero());
  CHECK(r.relative_residuals.maxCoeff() <= 1e-12);
  CHECK(r.matvecs == r.iterations[0] + r.iterations[2]);
  for (Index c : {0, 2}) CHECK((a * r.x.col(c) - b.col(c)).norm() <= 1e-10 * b.col(c).norm());
}

TEST_CASE("CG with damping solves (A + lambda I) x = b for a singular A", "[cg]") {
  Vector<double> lambda = Vector<double>::LinSpaced(50, 0.0, 3.0);
  lambda.head(10).setZero();  // rank 40
  const Matrix<double> a = with_spectrum(lambda, 3);
  DenseOperator<double> op(a);
  const Matrix<double> b = gaussian(50, 2, 4);
  CgOptions o;
  o.damping = 0.1;
  o.tol = 1e-12;
  const auto r = conjugate_gradient(op, b, o);
  REQUIRE(r.converged());
  const Matrix<double> damped = a + 0.1 * Matrix<double>::Identity(50, 50);
  CHECK((r.x - damped.ldlt().solve(b)).norm() <= 1e-9 * r.x.norm());
}

TEST_CASE("A diagonal preconditioner cuts CG iterations on a badly scaled matrix", "[cg]") {
  // D^1/2 A0 D^1/2 with D spanning six orders of magnitude.
  const Vector<double> scale = (Vector<double>::LinSpaced(60, -3.0, 3.0).array() * std::log(10.0)).exp().matrix();
  const Matrix<double> a0 = with_spectrum(Vector<double>::LinSpaced(60, 1.0, 4.0), 5);
  const Matrix<double> a = scale.cwiseSqrt().asDiagonal() * a0 * scale.cwiseSqrt().asDiagonal();
  DenseOperator<double> op(a);
  const Matrix<double> b = gaussian(60, 2, 6);
  CgOptions o;
  o.tol = 1e-10;
  const auto plain = conjugate_gradient(op, b, o);
  const auto pre = conjugate_gradient(op, b, o, Vector<double>(a.diagonal()));
  REQUIRE(plain.converged());
  REQUIRE(pre.converged());
  const Matrix<double> exact = a.ldlt().solve(b);
  CHECK((pre.x - exact).norm() <= 1e-8 * exact.norm());
  CHECK(pre.matvecs < plain.matvecs);
}

TEST_CASE("CG reports non-convergence and negative curvature in its status", "[cg]") {
  DenseOperator<double> op(with_spectrum(Vector<double>::LinSpaced(60, 0.01, 10.0), 7));
  const Matrix<double> b = gaussian(60, 2, 8);
  CgOptions o;
  o.max_iterations = 3;
  o.tol = 1e-12;
  CgResult<double> r;
  REQUIRE_NOTHROW(r = conjugate_gradient(op, b, o));
  CHECK(r.status == SolverStatus::MaxIterations);
  CHECK(r.iterations[0] == 3);
  CHECK(r.relative_residuals.minCoeff() > 1e-12);
  CHECK(r.matvecs == 6);

  DenseOperator<double> negative(with_spectrum(Vector<double>::LinSpaced(20, -3.0, -1.0), 9));
  REQUIRE_NOTHROW(r = conjugate_gradient(negative, gaussian(20, 1, 10), CgOptions{}));
  CHECK(r.status == SolverStatus::NotPositiveDefinite);
  CHECK(std::string(to_string(r.status)) == "not_positive_definite");
}

TEST_CASE("CG rejects bad input with messages naming the argument", "[cg][errors]") {
  DenseOperator<double> op(with_spectrum(Vector<double>::LinSpaced(10, 1.0, 2.0), 11));
  const Matrix<double> b = gaussian(10, 1, 12);
  REQUIRE_THROWS_AS(conjugate_gradient(op, gaussian(9, 1, 1)), ShapeError);
  REQUIRE_THROWS_WITH(conjugate_gradient(op, gaussian(9, 1, 1)), Catch::Contains("conjugate_gradient") && Catch::Contains("9 rows"));
  CgOptions o;
  o.damping = -0.5;
  REQUIRE_THROWS_AS(conjugate_gradient(op, b, o), ValueError);
  REQUIRE_THROWS_WITH(conjugate_gradient(op, b, o), Catch::Contains("damping = -0.5"));
  o = {};
  o.tol = -1;
  REQUIRE_THROWS_WITH(conjugate_gradient(op, b, o), Catch::Contains("tol = -1"));
  o = {};
  o.max_iterations = 0;
  REQUIRE_THROWS_WITH(conjugate_gradient(op, b, o), Catch::Contains("max_iterations = 0"));
  Vector<double> m = Vector<double>::Ones(10);
  m(3) = 0;
  REQUIRE_THROWS_WITH(conjugate_gradient(op, b, CgOptions{}, m), Catch::Contains("preconditioner diagonal entry 3"));
  REQUIRE_THROWS_AS(conjugate_gradient(op, b, CgOptions{}, Vector<double>(Vector<double>::Ones(4))), ShapeError);
}
