// Stochastic Lanczos quadrature (Ubaru et al. 2017; Ghorbani et al. 2019) against exact spectra.
#include <catch2/catch.hpp>

#include "curvature/estimators/estimators.hpp"
#include "estimators/spectra.hpp"

using namespace curvature;
using curvature::testing::operator_with_spectrum;

namespace {
// Log-uniform on [0.1, 10]: positive definite with a spread that makes log det non-trivial.
Vector<double> positive_spectrum(Index d) {
  return Vector<double>::LinSpaced(d, std::log(0.1), std::log(10.0)).array().exp().matrix();
}

// Trapezoid rule on a grid.
double integrate(const Vector<double>& x, const Vector<double>& y) {
  double s = 0;
  for (Index i = 1; i < x.size(); ++i) s += 0.5 * (x(i) - x(i - 1)) * (y(i) + y(i - 1));
  return s;
}

SlqOptions slq(Index starts, Index steps, std::uint64_t seed = 0) {
  SlqOptions o;
  o.starts = starts;
  o.lanczos_steps = steps;
  o.seed = seed;
  return o;
}
}  // namespace

TEST_CASE("SLQ log-determinant lies within 4 standard errors of the exact value", "[slq]") {
  const Vector<double> lambda = positive_spectrum(100);
  auto op = operator_with_spectrum(lambda, 1);
  const double exact = lambda.array().log().sum();
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    SlqOptions o = slq(30, 25, 3);
    o.probe = probe;
    const auto e = log_determinant(op, o);
    CHECK(std::abs(e.value - exact) <= 4 * e.std_error);
    CHECK(e.std_error > 0);
    CHECK(e.probes == 30);
    CHECK(e.matvecs == 30 * 25);
  }
}

TEST_CASE("SLQ trace of a function: constants are exact, x^2 matches the Frobenius norm", "[slq]") {
  const Vector<double> lambda = curvature::testing::linear_spectrum(80, -2.0, 3.0);
  auto op = operator_with_spectrum(lambda, 2);
  const auto one = trace_of_function(op, [](double) { return 1.0; }, slq(8, 20));
  CHECK(one.value == Approx(80.0).epsilon(1e-12));  // Rademacher starts: ||v||^2 = d exactly
  const auto sq = trace_of_function(op, [](double x) { return x * x; }, slq(40, 20, 4));
  CHECK(std::abs(sq.value - lambda.squaredNorm()) <= 4 * sq.std_error);
}

TEST_CASE("SLQ results do not depend on how many starts run in lockstep", "[slq]") {
  auto op = operator_with_spectrum(positive_spectrum(60), 3);
  SlqOptions o = slq(7, 15, 5);
  o.block_size = 1;
  const auto a = log_determinant(op, o);
  o.block_size = 3;
  const auto b = log_determinant(op, o);
  CHECK(a.value == Approx(b.value).epsilon(1e-12));
  CHECK(a.std_error == Approx(b.std_error).epsilon(1e-10));
  CHECK(a.matvecs == b.matvecs);
}

TEST_CASE("SLQ spectral density integrates to one and has mean tr(A)/d", "[slq][density]") {
  const Vector<double> lambda = curvature::testing::linear_spectrum(120, -1.0, 4.0);
  auto op = operator_with_spectrum(lambda, 4);
  const SlqOptions o = slq(20, 30, 6);
  DensityOptions g;
  g.sigma = 0.05;
  g.grid_points = 2000;
  const auto rho = spectral_density(op, o, g);
  REQUIRE(rho.grid.size() == 2000);
  REQUIRE(rho.density.size() == 2000);
  REQUIRE(rho.std_error.size() == 2000);
  CHECK(rho.sigma == 0.05);
  CHECK(rho.starts == 20);
  CHECK(rho.matvecs == 20 * 30);
  CHECK(integrate(rho.grid, rho.density) == Approx(1.0).margin(1e-6));
  CHECK((rho.density.array() >= 0).all());
  CHECK((rho.std_error.array() >= 0).all());
  // Ritz values lie inside the spectrum, and each start's weights sum to 1.
  CHECK(rho.nodes.minCoeff() >= -1.0 - 1e-10);
  CHECK(rho.nodes.maxCoeff() <= 4.0 + 1e-10);
  CHECK((rho.weights.colwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  // The density's mean equals the SLQ estimate of tr(A)/d (the same quadrature), which is
  // within 4 standard errors of the exact value.
  const double mean = integrate(rho.grid, rho.grid.cwiseProduct(rho.density));
  const auto trace = trace_of_function(op, [](double x) { return x; }, o);
  CHECK(mean == Approx(trace.value / 120.0).margin(1e-6));
  CHECK(std::abs(trace.value - lambda.sum()) <= 4 * trace.std_error);
}

TEST_CASE("SLQ without reorthogonalisation still integrates log correctly", "[slq]") {
  const Vector<double> lambda = positive_spectrum(100);
  auto op = operator_with_spectrum(lambda, 7);
  SlqOptions o = slq(30, 25, 8);
  o.reorthogonalize = false;
  const auto e = log_determinant(op, o);
  CHECK(std::abs(e.value - lambda.array().log().sum()) <= 4 * e.std_error);
}

TEST_CASE("SLQ stops a start early when its Krylov space is invariant", "[slq]") {
  // Five distinct eigenvalues: every Krylov space has dimension 5, so the quadrature is exact.
  Vector<double> lambda(40);
  for (Index i = 0; i < 40; ++i) lambda(i) = 1.0 + static_cast<double>(i % 5);
  auto op = operator_with_spectrum(lambda, 9);
  const auto e = log_determinant(op, slq(4, 20));
  CHECK(e.matvecs == 4 * 5);
  const auto one = trace_of_function(op, [](double x) { return x; }, slq(4, 20));
  CHECK(one.matvecs == 4 * 5);
}

TEST_CASE("SLQ rejects bad input with messages naming the argument", "[slq][errors]") {
  auto indefinite = operator_with_spectrum(curvature::testing::linear_spectrum(30, -1.0, 2.0), 10);
  REQUIRE_THROWS_AS(log_determinant(indefinite, slq(4, 10)), ValueError);
  REQUIRE_THROWS_WITH(log_determinant(indefinite, slq(4, 10)),
                      Catch::Contains("log_determinant") && Catch::Contains("not positive definite"));
  auto op = operator_with_spectrum(positive_spectrum(30), 11);
  REQUIRE_THROWS_WITH(log_determinant(op, slq(0, 10)), Catch::Contains("starts = 0"));
  REQUIRE_THROWS_WITH(trace_of_function(op, [](double x) { return x; }, slq(3, 0)),
                      Catch::Contains("trace_of_function") && Catch::Contains("lanczos_steps = 0"));
  DensityOptions g;
  g.sigma = -0.1;
  REQUIRE_THROWS_WITH(spectral_density(op, slq(3, 10), g), Catch::Contains("sigma = -0.1"));
  g = {};
  g.grid_points = 1;
  REQUIRE_THROWS_WITH(spectral_density(op, slq(3, 10), g), Catch::Contains("grid_points = 1"));
  g = {};
  g.grid_min = 2.0;
  g.grid_max = 1.0;
  REQUIRE_THROWS_WITH(spectral_density(op, slq(3, 10), g), Catch::Contains("grid"));
}
