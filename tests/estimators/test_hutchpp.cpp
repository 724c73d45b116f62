// Hutch++ (Meyer et al. 2021) against exact traces and against Hutchinson at equal cost.
#include <catch2/catch.hpp>

#include "curvature/estimators/estimators.hpp"
#include "estimators/spectra.hpp"

using namespace curvature;
using curvature::testing::operator_with_spectrum;

namespace {
// lambda_j = j^-2: a fast-decaying spectrum, where Hutch++ should win (SPEC 2).
Vector<double> decaying_spectrum(Index d) {
  Vector<double> l(d);
  for (Index j = 0; j < d; ++j) l(j) = 1.0 / static_cast<double>((j + 1) * (j + 1));
  return l;
}
}  // namespace

TEST_CASE("Hutch++ beats Hutchinson's mean absolute error at equal matvecs on a decaying spectrum", "[hutchpp]") {
  const Vector<double> lambda = decaying_spectrum(300);
  auto op = operator_with_spectrum(lambda, 1);
  double err_hpp = 0, err_h = 0;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    HutchppOptions p;
    p.matvecs = 60;
    p.seed = seed;
    const auto e = hutchpp_trace(op, p);
    CHECK(e.matvecs == 60);
    err_hpp += std::abs(e.value - lambda.sum());
    HutchinsonOptions h;
    h.max_probes = 60;
    h.seed = seed;
    const auto t = hutchinson_trace(op, h);
    CHECK(t.matvecs == 60);
    err_h += std::abs(t.value - lambda.sum());
  }
  CHECK(err_hpp < 0.2 * err_h);
}

TEST_CASE("Hutch++ lies within 4 of its standard errors of the exact trace", "[hutchpp]") {
  const Vector<double> lambda = curvature::testing::linear_spectrum(80, -2.0, 5.0);
  auto op = operator_with_spectrum(lambda, 2);
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    for (std::uint64_t seed = 0; seed < 5; ++seed) {
      HutchppOptions p;
      p.probe = probe;
      p.seed = seed;
      p.matvecs = 61;
      p.block_size = 7;
      const auto e = hutchpp_trace(op, p);
      CHECK(e.probes == 61 - 2 * 20);
      CHECK(e.matvecs == 61);
      CHECK(e.std_error > 0);
      CHECK(std::abs(e.value - lambda.sum()) <= 4 * e.std_error);
    }
  }
}

TEST_CASE("Hutch++ gives the same result whatever the block size", "[hutchpp]") {
  auto op = operator_with_spectrum(decaying_spectrum(50), 3);
  HutchppOptions p;
  p.matvecs = 30;
  const auto a = hutchpp_trace(op, p);
  p.block_size = 4;
  const auto b = hutchpp_trace(op, p);
  CHECK(a.value == Approx(b.value).epsilon(1e-12));
}

TEST_CASE("Hutch++ is exact when its sketch spans the whole space", "[hutchpp]") {
  const Vector<double> lambda = curvature::testing::linear_spectrum(20, -1.0, 3.0);
  auto op = operator_with_spectrum(lambda, 4);
  HutchppOptions p;
  p.matvecs = 90;
  const auto e = hutchpp_trace(op, p);
  CHECK(e.value == Approx(lambda.sum()).margin(1e-10));
  CHECK(e.std_error == 0);
  CHECK(e.matvecs == 40);
}

TEST_CASE("Hutch++ rejects a budget below three products", "[hutchpp][errors]") {
  auto op = operator_with_spectrum(decaying_spectrum(10), 5);
  HutchppOptions p;
  p.matvecs = 2;
  REQUIRE_THROWS_AS(hutchpp_trace(op, p), ValueError);
  REQUIRE_THROWS_WITH(hutchpp_trace(op, p), Catch::Contains("hutchpp_trace") && Catch::Contains("matvecs = 2"));
  p.matvecs = 30;
  p.block_size = -1;
  REQUIRE_THROWS_WITH(hutchpp_trace(op, p), Catch::Contains("block_size = -1"));
}
