// The built-in synthetic task: sizes, shape, range, balance, label noise, determinism from the
// seed and a pinned checksum (the generator is integer arithmetic: the same bytes everywhere).
#include <cmath>
#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>

#include "curvature/data/synthetic.hpp"
#include "curvature/data/transforms.hpp"

using namespace curvature;
using Catch::Contains;
using Catch::StartsWith;

namespace {

/// FNV-1a over the pixel bytes (x * 255) and labels of a data set.
template <class T>
std::uint64_t checksum(const data::Dataset<T>& d) {
  std::uint64_t h = 1469598103934665603ull;
  const auto mix = [&](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  for (Index i = 0; i < d.size(); ++i) {
    for (Index k = 0; k < d.dim(); ++k) mix(static_cast<std::uint64_t>(std::llround(double(d.x(k, i)) * 255.0)));
    mix(static_cast<std::uint64_t>(d.y[std::size_t(i)]));
  }
  return h;
}

}  // namespace

TEST_CASE("The synthetic task has the stated sizes, shape, range and names", "[data][synthetic]") {
  const auto s = data::synthetic_task<float>();
  REQUIRE(s.train.size() == 12000);
  REQUIRE(s.test.size() == 2000);
  CHECK(s.train.shape == nn::Shape{1, 28, 28});
  CHECK(s.train.dim() == 784);
  CHECK(s.train.num_classes == 10);
  CHECK(s.train.x.minCoeff() >= 0.0f);
  CHECK(s.train.x.maxCoeff() <= 1.0f);
  CHECK(s.train.x.maxCoeff() == 1.0f);  // the noise saturates some pixels
  CHECK_THAT(s.train.name, StartsWith("synthetic (seed 0, 10 classes, 1x28x28") && Contains("5% label noise) train"));
  CHECK_THAT(s.test.name, StartsWith("synthetic (") && Contains("test"));
  s.train.check();
  s.test.check();
  // Balanced: class i mod 10 before the 5% label noise moves 600 of 12000 labels.
  for (const Index c : data::class_counts(s.train)) CHECK((c >= 1100 && c <= 1300));
  for (const Index c : data::class_counts(s.test)) CHECK((c >= 170 && c <= 230));
}

TEST_CASE("The synthetic task is a deterministic function of its options", "[data][synthetic]") {
  data::SyntheticOptions o;
  o.n_train = 300;
  o.n_test = 100;
  o.seed = 5;
  const auto a = data::synthetic_task<float>(o), b = data::synthetic_task<float>(o);
  CHECK(a.train.x == b.train.x);
  CHECK(a.train.y == b.train.y);
  CHECK(a.test.x == b.test.x);
  CHECK(a.train.x != a.test.x.leftCols(100));  // train and test are different draws
  const auto d = data::synthetic_task<double>(o);  // same bytes in double
  CHECK(d.train.x.cast<float>() == a.train.x);
  o.seed = 6;
  const auto c = data::synthetic_task<float>(o);
  CHECK(c.train.x != a.train.x);
  // A sample does not depend on the set size: the first 300 of a larger set are the same.
  o.seed = 5;
  o.n_train = 500;
  const auto big = data::synthetic_task<float>(o);
  CHECK(big.train.x.leftCols(300) == a.train.x);
}

TEST_CASE("Without label noise the labels are i mod 10; with it, exactly round(f N) differ", "[data][synthetic]") {
  data::SyntheticOptions o;
  o.n_train = 1000;
  o.n_test = 200;
  o.label_noise = 0;
  const auto clean = data::synthetic_task<float>(o);
  for (Index i = 0; i < 1000; ++i) REQUIRE(clean.train.y[std::size_t(i)] == i % 10);
  CHECK(data::class_counts(clean.test) == std::vector<Index>(10, 20));
  o.label_noise = 0.1;
  const auto noisy = data::synthetic_task<float>(o);
  CHECK(noisy.train.x == clean.train.x);
  Index differ = 0;
  for (Index i = 0; i < 1000; ++i) differ += noisy.train.y[std::size_t(i)] != clean.train.y[std::size_t(i)];
  CHECK(differ == 100);
  o.pixel_noise = 0;  // without pixel noise two samples of a class differ only by latent and shift
  const auto smooth = data::synthetic_task<float>(o);
  CHECK(smooth.train.x != noisy.train.x);
  o.label_noise = 2;
  CHECK_THROWS_AS(data::synthetic_task<float>(o), ValueError);
}

TEST_CASE("The synthetic task's bytes are pinned (integer generator, identical on every machine)",
          "[data][synthetic]") {
  data::SyntheticOptions o;
  o.n_train = 50;
  o.n_test = 20;
  const auto s = data::synthetic_task<float>(o);
  CHECK(checksum(s.train) == 0x5c7a19923df45bb0ull);
  CHECK(checksum(s.test) == 0x840c0fa4afe6ffc1ull);
}
