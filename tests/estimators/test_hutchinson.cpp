// Hutchinson trace, diagonal and Frobenius norm (SPEC 2) against exact values of matrices with
// known spectra.
#include <catch2/catch.hpp>

#include "curvature/estimators/estimators.hpp"
#include "estimators/spectra.hpp"

using namespace curvature;
using curvature::testing::Laplacian1D;
using curvature::testing::mean_std;
using curvature::testing::operator_with_spectrum;

namespace {

// An indefinite spectrum, so that trace and Frobenius norm differ in character.
Vector<double> test_spectrum() { return curvature::testing::linear_spectrum(60, -1.0, 4.0); }

HutchinsonOptions with(Probe probe, std::uint64_t seed, Index probes, Index block = 16) {
  HutchinsonOptions o;
  o.probe = probe;
  o.seed = seed;
  o.max_probes = probes;
  o.block_size = block;
  return o;
}

}  // namespace

TEST_CASE("Hutchinson trace and Frobenius norm lie within 4 standard errors of the exact values", "[hutchinson]") {
  auto op = operator_with_spectrum(test_spectrum(), 1);
  const double trace = test_spectrum().sum(), frob2 = test_spectrum().squaredNorm();
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    const auto t = hutchinson_trace(op, with(probe, 7, 200));
    CHECK(std::abs(t.value - trace) <= 4 * t.std_error);
    CHECK(t.probes == 200);
    CHECK(t.matvecs == 200);
    CHECK(t.converged);
    const auto f = frobenius_norm_squared(op, with(probe, 7, 200));
    CHECK(std::abs(f.value - frob2) <= 4 * f.std_error);
    CHECK(f.std_error > 0);
  }
}

TEST_CASE("Hutchinson diagonal lies within 4 standard errors in every coordinate", "[hutchinson]") {
  auto op = operator_with_spectrum(test_spectrum(), 2);
  const Vector<double> exact = op.matrix().diagonal();
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    const auto e = hutchinson_diagonal(op, with(probe, 3, 300));
    REQUIRE(e.value.size() == 60);
    REQUIRE(e.std_error.size() == 60);
    CHECK(((e.value - exact).cwiseAbs().array() <= 4 * e.std_error.array()).all());
    CHECK(e.probes == 300);
  }
}

TEST_CASE("Hutchinson standard errors match the spread over 50 seeds within a factor 2", "[hutchinson]") {
  auto op = operator_with_spectrum(test_spectrum(), 3);
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    std::vector<double> trace, trace_se, frob, frob_se;
    Matrix<double> diag(60, 50), diag_se(60, 50);
    for (Index s = 0; s < 50; ++s) {
      const auto o = with(probe, 100 + s, 30);
      const auto t = hutchinson_trace(op, o);
      const auto f = frobenius_norm_squared(op, o);
      const auto g = hutchinson_diagonal(op, o);
      trace.push_back(t.value), trace_se.push_back(t.std_error);
      frob.push_back(f.value), frob_se.push_back(f.std_error);
      diag.col(s) = g.value, diag_se.col(s) = g.std_error;
    }
    for (auto [values, ses] : {std::pair{trace, trace_se}, std::pair{frob, frob_se}}) {
      const double spread = mean_std(values).second, se = mean_std(ses).first;
      CHECK(se < 2 * spread);
      CHECK(se > spread / 2);
    }
    // Root-mean-square over coordinates of the empirical spread and of the reported SE.
    const Matrix<double> centred = diag.colwise() - diag.rowwise().mean();
    const double spread = std::sqrt(centred.squaredNorm() / (60.0 * 49.0));
    const double se = std::sqrt(diag_se.squaredNorm() / (60.0 * 50.0));
    CHECK(se < 2 * spread);
    CHECK(se > spread / 2);
  }
}

TEST_CASE("Hutchinson's adaptive stop reaches the requested relative standard error", "[hutchinson]") {
  auto op = operator_with_spectrum(test_spectrum(), 4);
  HutchinsonOptions o = with(Probe::Rademacher, 5, 100000);
  o.rel_tol = 0.02;
  const auto t = hutchinson_trace(op, o);
  CHECK(t.converged);
  CHECK(t.relative_error() <= 0.02);
  CHECK(t.probes >= o.min_probes);
  CHECK(t.probes < 100000);
  CHECK(t.matvecs >= t.probes);
  CHECK(t.matvecs < t.probes + o.block_size);
  const auto g = hutchinson_diagonal(op, o);
  CHECK(g.converged);
  CHECK(g.std_error.norm() <= 0.02 * g.value.norm());

  SECTION("an unreachable tolerance is reported, not thrown") {
    o.rel_tol = 1e-6;
    o.max_probes = 40;
    const auto u = hutchinson_trace(op, o);
    CHECK_FALSE(u.converged);
    CHECK(u.probes == 40);
    CHECK(u.relative_error() > 1e-6);
  }
}

TEST_CASE("Hutchinson results do not depend on the block size", "[hutchinson][probes]") {
  auto op = operator_with_spectrum(test_spectrum(), 5);
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    for (double rel_tol : {0.0, 0.05}) {
      std::vector<Estimate<double>> runs;
      std::vector<DiagonalEstimate<double>> diags;
      for (Index block : {1, 7, 32}) {
        auto o = with(probe, 11, 64, block);
        o.rel_tol = rel_tol;
        runs.push_back(hutchinson_trace(op, o));
        diags.push_back(hutchinson_diagonal(op, o));
      }
      for (std::size_t i = 1; i < runs.size(); ++i) {
        CHECK(runs[i].probes == runs[0].probes);
        CHECK(runs[i].value == Approx(runs[0].value).epsilon(1e-12));
        CHECK(runs[i].std_error == Approx(runs[0].std_error).epsilon(1e-10));
        CHECK(diags[i].probes == diags[0].probes);
        CHECK(diags[i].value.isApprox(diags[0].value, 1e-12));
      }
    }
  }
}

TEST_CASE("Hutchinson diagonal values and standard errors equal a two-pass computation from the same probes",
          "[hutchinson][probes]") {
  // d = 1100 spans several of the accumulator's coordinate chunks (512) and a partial last one;
  // the probes come from make_probes (the documented family), the products from the Laplacian's
  // stencil written out here, and the variance from the two-pass formula.
  const Index d = 1100;
  Laplacian1D<double> op{d};
  auto two_pass = [&](Probe probe, std::uint64_t seed, Index m) {
    const Matrix<double> v = make_probes<double>(d, m, probe, seed);
    Matrix<double> x(d, m);
    for (Index j = 0; j < m; ++j)
      for (Index k = 0; k < d; ++k)
        x(k, j) = v(k, j) * (2 * v(k, j) - (k > 0 ? v(k - 1, j) : 0.0) - (k + 1 < d ? v(k + 1, j) : 0.0));
    const Vector<double> mean = x.rowwise().mean();
    const Vector<double> var = (x.colwise() - mean).rowwise().squaredNorm() / static_cast<double>(m - 1);
    return std::pair{mean, Vector<double>((var / static_cast<double>(m)).cwiseSqrt())};
  };
  for (Probe probe : {Probe::Rademacher, Probe::Gaussian}) {
    SECTION(probe == Probe::Rademacher ? "fixed probe count, Rademacher" : "fixed probe count, Gaussian") {
      const auto e = hutchinson_diagonal(op, with(probe, 17, 37, 16));  // blocks of 16, 16 and 5
      const auto [mean, se] = two_pass(probe, 17, 37);
      REQUIRE(e.probes == 37);
      CHECK((e.value - mean).cwiseAbs().maxCoeff() <= 1e-12 * mean.cwiseAbs().maxCoeff());
      CHECK((e.std_error - se).cwiseAbs().maxCoeff() <= 1e-10 * se.maxCoeff());
      CHECK(se.minCoeff() > 0);
    }
  }
  SECTION("adaptive stop in the middle of a block") {
    HutchinsonOptions o = with(Probe::Rademacher, 23, 1000, 16);
    o.rel_tol = 0.15;  // per coordinate var = 2 and mean = 2: stops after ~23 probes, inside block 2
    const auto e = hutchinson_diagonal(op, o);
    REQUIRE(e.converged);
    CHECK(e.probes % 16 != 0);
    const auto [mean, se] = two_pass(Probe::Rademacher, 23, e.probes);
    CHECK((e.value - mean).cwiseAbs().maxCoeff() <= 1e-12 * mean.cwiseAbs().maxCoeff());
    CHECK((e.std_error - se).cwiseAbs().maxCoeff() <= 1e-10 * se.maxCoeff());
    CHECK(se.norm() <= 0.15 * mean.norm());
    // one probe earlier the tolerance was not met (the stop is the first probe that meets it)
    const auto [mean1, se1] = two_pass(Probe::Rademacher, 23, e.probes - 1);
    CHECK(se1.norm() > 0.15 * mean1.norm());
  }
  SECTION("float agrees with double on the same probes") {
    Laplacian1D<float> op32{d};
    const auto e32 = hutchinson_diagonal(op32, with(Probe::Gaussian, 5, 40, 16));
    const auto e64 = hutchinson_diagonal(op, with(Probe::Gaussian, 5, 40, 16));
    CHECK((e32.value.cast<double>() - e64.value).cwiseAbs().maxCoeff() <= 1e-4 * e64.value.cwiseAbs().maxCoeff());
    CHECK((e32.std_error.cast<double>() - e64.std_error).cwiseAbs().maxCoeff() <= 1e-4 * e64.std_error.maxCoeff());
  }
}

TEST_CASE("The Hutchinson diagonal sums to the trace estimate made with the same probes", "[hutchinson]") {
  auto op = operator_with_spectrum(test_spectrum(), 6);
  const auto o = with(Probe::Gaussian, 21, 50);
  CHECK(hutchinson_diagonal(op, o).value.sum() == Approx(hutchinson_trace(op, o).value).epsilon(1e-12));
}

TEST_CASE("Hutchinson trace works in float", "[hutchinson][float]") {
  auto op = operator_with_spectrum<float>(test_spectrum(), 7);
  auto op64 = operator_with_spectrum<double>(test_spectrum(), 7);
  const auto o = with(Probe::Rademacher, 9, 2000, 100);
  const auto t = hutchinson_trace(op, o);
  const auto t64 = hutchinson_trace(op64, o);
  CHECK(std::abs(t.value - test_spectrum().sum()) <= 4 * t.std_error);
  // Same probes: float and double differ by rounding only.
  CHECK(static_cast<double>(t.value) == Approx(t64.value).epsilon(1e-5));
  CHECK(static_cast<double>(t.std_error) == Approx(t64.std_error).epsilon(1e-4));
}

TEST_CASE("Hutchinson estimators reject bad options with messages naming the argument", "[hutchinson][errors]") {
  auto op = operator_with_spectrum(test_spectrum(), 8);
  HutchinsonOptions o;
  o.max_probes = 0;
  REQUIRE_THROWS_AS(hutchinson_trace(op, o), ValueError);
  REQUIRE_THROWS_WITH(hutchinson_trace(op, o), Catch::Contains("hutchinson_trace") && Catch::Contains("max_probes = 0"));
  o = {};
  o.block_size = 0;
  REQUIRE_THROWS_WITH(hutchinson_diagonal(op, o), Catch::Contains("hutchinson_diagonal") && Catch::Contains("block_size"));
  o = {};
  o.rel_tol = -0.1;
  REQUIRE_THROWS_WITH(frobenius_norm_squared(op, o), Catch::Contains("rel_tol = -0.1"));
  o.rel_tol = std::nan("");
  REQUIRE_THROWS_WITH(hutchinson_trace(op, o), Catch::Contains("rel_tol"));
  o = {};
  o.rel_tol = 0.1;
  o.min_probes = 50;
  o.max_probes = 10;
  REQUIRE_THROWS_WITH(hutchinson_trace(op, o), Catch::Contains("min_probes = 50"));
}
