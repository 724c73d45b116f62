// Probe blocks: reproducible per (seed, k), with the moments of their distributions.
#include <catch2/catch.hpp>

#include "curvature/estimators/probes.hpp"

using namespace curvature;

TEST_CASE("Probe k depends only on the seed and k", "[probes]") {
  for (Probe kind : {Probe::Rademacher, Probe::Gaussian}) {
    for (Index d : {1, 63, 64, 65, 257}) {
      const Matrix<double> block = make_probes<double>(d, 10, kind, 42);
      const Matrix<double> single = make_probes<double>(d, 1, kind, 42, 7);
      CHECK(block.col(7) == single.col(0));
      if (d > 1) {  // one Rademacher entry agrees with another half the time
        CHECK(block.col(6) != single.col(0));
        CHECK(make_probes<double>(d, 1, kind, 43, 7).col(0) != single.col(0));
      }
      CHECK(block.allFinite());
    }
  }
}

TEST_CASE("Float probes are the double probes rounded", "[probes][float]") {
  for (Probe kind : {Probe::Rademacher, Probe::Gaussian}) {
    const Matrix<double> p = make_probes<double>(301, 3, kind, 5);
    const Matrix<float> f = make_probes<float>(301, 3, kind, 5);
    CHECK(f == p.cast<float>());
  }
}

TEST_CASE("Rademacher probes are balanced signs and Gaussian probes standard normal", "[probes]") {
  const Index n = 200000;
  const Matrix<double> r = make_probes<double>(n, 1, Probe::Rademacher, 1);
  CHECK((r.array().abs() == 1.0).all());
  CHECK(std::abs(r.mean()) < 4.0 / std::sqrt(double(n)));
  // Neighbouring signs come from the same 64-bit draw; they must not be correlated.
  const double lag1 = r.col(0).head(n - 1).dot(r.col(0).tail(n - 1)) / double(n - 1);
  CHECK(std::abs(lag1) < 4.0 / std::sqrt(double(n)));

  const Matrix<double> g = make_probes<double>(n, 1, Probe::Gaussian, 2);
  const auto x = g.col(0).array();
  CHECK(std::abs(x.mean()) < 4.0 / std::sqrt(double(n)));
  CHECK(std::abs(x.square().mean() - 1.0) < 4.0 * std::sqrt(2.0 / double(n)));
  CHECK(std::abs(x.cube().mean()) < 4.0 * std::sqrt(15.0 / double(n)));
  CHECK(std::abs(x.square().square().mean() - 3.0) < 4.0 * std::sqrt(96.0 / double(n)));
  CHECK(std::abs((x.head(n - 1) * x.tail(n - 1)).mean()) < 4.0 / std::sqrt(double(n)));
  // P(|x| > 2) = 0.0455: the tails are there.
  CHECK(std::abs((x.abs() > 2.0).cast<double>().mean() - 0.0455) < 0.003);
}

TEST_CASE("Probe families with different tags are different", "[probes]") {
  CHECK(probe_seed(7, 0) == 7);
  CHECK(probe_seed(7, 1) != probe_seed(7, 2));
  CHECK(make_probes<double>(50, 1, Probe::Rademacher, probe_seed(7, 1)) !=
        make_probes<double>(50, 1, Probe::Rademacher, probe_seed(7, 2)));
}

TEST_CASE("make_probes rejects a non-positive dimension", "[probes][errors]") {
  REQUIRE_THROWS_WITH(make_probes<double>(0, 1, Probe::Gaussian, 1), Catch::Contains("make_probes") && Catch::Contains("d = 0"));
  REQUIRE_THROWS_AS(make_probes<double>(5, -1, Probe::Gaussian, 1), ValueError);
}
