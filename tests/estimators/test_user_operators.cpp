// The estimators are constrained by the LinearOperator concept only: user-written operators
// (matrix-free, counting, float) work, and misbehaving ones are caught.
#include <catch2/catch.hpp>

#include "curvature/estimators/estimators.hpp"
#include "estimators/spectra.hpp"

using namespace curvature;
using curvature::testing::CountingDiagonal;
using curvature::testing::Laplacian1D;

namespace {
struct NoApply {
  using Scalar = double;
  Index dim() const { return 3; }
};
struct WrongShape {  // returns one row too few
  using Scalar = double;
  Index dim() const { return 4; }
  void apply(const Matrix<double>& v, Matrix<double>& out) { out = v.topRows(3); }
};
struct ReturnsNaN {
  using Scalar = double;
  Index dim() const { return 5; }
  void apply(const Matrix<double>& v, Matrix<double>& out) {
    out = v;
    out(2, 0) = std::nan("");
  }
};
}  // namespace

static_assert(!LinearOperator<NoApply>, "an operator needs apply(V, out)");
static_assert(!LinearOperator<Matrix<double>>, "a bare matrix is not an operator: wrap it in DenseOperator");
static_assert(LinearOperator<WrongShape>);

TEST_CASE("Estimators report the products a user operator really performed", "[operators]") {
  CountingDiagonal op{Vector<double>::LinSpaced(40, 1.0, 5.0)};
  auto count = [&](auto&& run) {
    op.columns_applied = 0;
    const Index reported = run();
    CHECK(reported == op.columns_applied);
  };
  HutchinsonOptions h;
  h.rel_tol = 1e-9;  // unreachable: every block is applied
  h.max_probes = 50;
  h.block_size = 16;
  count([&] { return hutchinson_trace(op, h).matvecs; });
  count([&] { return hutchpp_trace(op, HutchppOptions{}).matvecs; });
  count([&] { return power_iteration(op, PowerIterationOptions{}).matvecs; });
  LanczosOptions l;
  l.k = 2;
  count([&] { return lanczos(op, l).matvecs; });
  count([&] { return log_determinant(op, SlqOptions{}).matvecs; });
  count([&] { return conjugate_gradient(op, Matrix<double>::Ones(40, 3)).matvecs; });
}

TEST_CASE("Rademacher Hutchinson on a diagonal operator is exact with zero standard error", "[operators][hutchinson]") {
  CountingDiagonal op{Vector<double>::LinSpaced(25, -2.0, 3.0)};
  const auto t = hutchinson_trace(op);
  CHECK(t.value == Approx(op.diag.sum()).margin(1e-12));
  CHECK(t.std_error == Approx(0.0).margin(1e-12));
  const auto g = hutchinson_diagonal(op);
  CHECK(g.value.isApprox(op.diag, 1e-14));
  CHECK(g.std_error.norm() < 1e-12);
}

TEMPLATE_TEST_CASE("Estimators run on a matrix-free Laplacian", "[operators][lanczos][cg]", float, double) {
  using T = TestType;
  constexpr bool single = sizeof(T) == 4;
  const Index n = 40;
  Laplacian1D<T> op{n};
  auto exact = [&](Index j) { return 2.0 - 2.0 * std::cos(double(j) * 3.14159265358979323846 / double(n + 1)); };
  LanczosOptions o;
  o.k = 3;
  o.tol = single ? 1e-5 : 1e-10;
  const auto r = lanczos(op, o);
  CHECK(r.converged());
  for (Index i = 0; i < 3; ++i) CHECK(double(r.eigenvalues(i)) == Approx(exact(n - i)).margin(single ? 1e-4 : 1e-8));

  CgOptions c;
  c.tol = single ? 1e-5 : 1e-10;
  const Matrix<T> b = Matrix<T>::Ones(n, 2);
  const auto x = conjugate_gradient(op, b, c);
  CHECK(x.converged());
  Matrix<T> ax;
  op.apply(x.x, ax);
  CHECK(double((ax - b).norm() / b.norm()) < (single ? 1e-4 : 1e-9));

  const double trace = 2.0 * n;
  const auto t = hutchinson_trace(op);
  CHECK(std::abs(double(t.value) - trace) <= 4 * double(t.std_error));
  const auto p = power_iteration(op, PowerIterationOptions{});
  CHECK(double(p.eigenvalue) <= exact(n) + 1e-4);
  CHECK(double(p.eigenvalue) > 3.5);
}

TEST_CASE("An operator returning a block of the wrong shape is reported", "[operators][errors]") {
  WrongShape op;
  REQUIRE_THROWS_AS(hutchinson_trace(op), ShapeError);
  REQUIRE_THROWS_WITH(hutchinson_trace(op), Catch::Contains("hutchinson_trace") && Catch::Contains("3x16 block for a 4x16"));
  REQUIRE_THROWS_WITH(lanczos(op), Catch::Contains("lanczos"));
  REQUIRE_THROWS_AS(conjugate_gradient(op, Matrix<double>::Ones(4, 1)), ShapeError);
}

TEST_CASE("An operator returning NaN is reported, not turned into a status", "[operators][errors]") {
  ReturnsNaN op;
  REQUIRE_THROWS_AS(hutchinson_trace(op), ValueError);
  REQUIRE_THROWS_WITH(hutchinson_trace(op), Catch::Contains("hutchinson_trace") && Catch::Contains("non-finite"));
  REQUIRE_THROWS_WITH(hutchinson_diagonal(op), Catch::Contains("hutchinson_diagonal") && Catch::Contains("non-finite"));
  HutchinsonOptions adaptive;
  adaptive.rel_tol = 0.01;  // probes enter one at a time: the test runs per probe
  REQUIRE_THROWS_WITH(hutchinson_diagonal(op, adaptive), Catch::Contains("non-finite"));
  REQUIRE_THROWS_WITH(power_iteration(op), Catch::Contains("power_iteration") && Catch::Contains("non-finite"));
  REQUIRE_THROWS_WITH(lanczos(op), Catch::Contains("lanczos") && Catch::Contains("non-finite"));
  REQUIRE_THROWS_WITH(log_determinant(op), Catch::Contains("log_determinant") && Catch::Contains("non-finite"));
  REQUIRE_THROWS_WITH(conjugate_gradient(op, Matrix<double>::Ones(5, 1)), Catch::Contains("non-finite"));
}
