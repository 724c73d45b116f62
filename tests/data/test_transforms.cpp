// Mini-batch sampling and the data-set transforms: normalisation with train statistics, label
// noise, seeded splits and class counts.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

#include "curvature/core/rng.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/data/transforms.hpp"

using namespace curvature;
using Catch::Contains;
using Catch::Matchers::WithinAbs;

namespace {

/// n samples of shape c x 2 x 3, channel k ~ scale_k * N(0, 1) + 10 k, labels i % classes.
template <class T>
data::Dataset<T> random_dataset(Index n, Index c, Index classes, std::uint64_t seed) {
  data::Dataset<T> d{Matrix<T>(c * 6, n), data::Labels(std::size_t(n)), classes, nn::Shape{c, 2, 3}, "random"};
  Rng rng(seed);
  for (Index i = 0; i < n; ++i) {
    for (Index k = 0; k < c; ++k)
      for (Index p = 0; p < 6; ++p) d.x(k * 6 + p, i) = static_cast<T>((k + 1) * 3.0 * rng.normal() + 10.0 * k);
    d.y[std::size_t(i)] = i % classes;
  }
  return d;
}

std::vector<Index> epoch_order(data::BatchSampler& s, Index e) {
  s.start_epoch(e);
  std::vector<Index> out;
  for (Index b = 0; b < s.batches(); ++b) {
    const auto batch = s.batch(b);
    out.insert(out.end(), batch.begin(), batch.end());
  }
  return out;
}

}  // namespace

TEST_CASE("BatchSampler visits every index exactly once per epoch, reshuffling each epoch", "[data][sampler]") {
  data::BatchSampler s(103, 10, 7);
  CHECK(s.batches() == 11);
  const auto e0 = epoch_order(s, 0), e1 = epoch_order(s, 1);
  for (const auto& e : {e0, e1}) {
    REQUIRE(e.size() == 103);
    std::vector<Index> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    std::vector<Index> all(103);
    std::iota(all.begin(), all.end(), Index{0});
    CHECK(sorted == all);
  }
  CHECK(e0 != e1);
  s.start_epoch(1);
  CHECK(s.batch(10).size() == 3);  // the short last batch is kept
  data::BatchSampler same(103, 10, 7), other(103, 10, 8);
  CHECK(epoch_order(same, 0) == e0);
  CHECK(epoch_order(same, 1) == e1);
  CHECK(epoch_order(other, 0) != e0);
  data::BatchSampler dropping(103, 10, 7, true);
  CHECK(dropping.batches() == 10);
  CHECK_THROWS_AS(data::BatchSampler(5, 6, 0), ValueError);
}

TEST_CASE("gather and subset copy the chosen samples", "[data][sampler]") {
  const auto d = random_dataset<double>(20, 2, 4, 1);
  const std::vector<Index> idx = {3, 17, 3};
  Matrix<double> x;
  data::Labels y;
  data::gather(d, idx, x, y);
  const auto s = data::subset(d, std::span<const Index>(idx));
  for (std::size_t k = 0; k < idx.size(); ++k) {
    CHECK(x.col(Index(k)) == d.x.col(idx[k]));
    CHECK(s.x.col(Index(k)) == d.x.col(idx[k]));
    CHECK(y[k] == d.y[std::size_t(idx[k])]);
  }
  CHECK(data::head(d, 5).size() == 5);
  CHECK_THAT(data::head(d, 5).name, Contains("first 5"));
}

TEMPLATE_TEST_CASE("normalize gives the train set mean 0 and std 1 per channel and reuses them on test",
                   "[data][transforms]", float, double) {
  data::Split<TestType> s{random_dataset<TestType>(500, 3, 10, 2), random_dataset<TestType>(200, 3, 10, 3)};
  const data::Split<TestType> raw = s;
  const auto stats = data::normalize(s);
  REQUIRE(stats.mean.size() == 3);
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
  for (Index c = 0; c < 3; ++c) {
    CHECK_THAT(stats.mean[std::size_t(c)], WithinAbs(10.0 * c, 0.5 * (c + 1)));
    CHECK_THAT(stats.stddev[std::size_t(c)], WithinAbs(3.0 * (c + 1), 0.3 * (c + 1)));
    const auto block = s.train.x.middleRows(c * 6, 6).template cast<double>();
    const double mean = block.mean();
    const double sd = std::sqrt((block.array() - mean).square().mean());
    CHECK_THAT(mean, WithinAbs(0.0, tol));
    CHECK_THAT(sd, WithinAbs(1.0, tol));
    // The test set went through the same affine map (train statistics, not its own).
    const double m = stats.mean[std::size_t(c)], sc = stats.stddev[std::size_t(c)];
    CHECK_THAT(double(s.test.x(c * 6 + 4, 7)), WithinAbs((double(raw.test.x(c * 6 + 4, 7)) - m) / sc, 10 * tol));
  }
  const auto test_stats = data::channel_stats(s.test);
  CHECK(std::abs(test_stats.mean[0]) > 1e-6);  // not re-centred on its own mean
}

TEST_CASE("flip_labels flips exactly round(f N) labels, never to the same class, reproducibly",
          "[data][transforms]") {
  for (const double f : {0.0, 0.1, 0.5, 0.333, 1.0}) {
    auto d = random_dataset<float>(1001, 1, 7, 4);
    const data::Labels before = d.y;
    const auto flipped = data::flip_labels(d, f, 11);
    const auto m = std::size_t(std::llround(f * 1001));
    REQUIRE(flipped.size() == m);
    CHECK(std::is_sorted(flipped.begin(), flipped.end()));
    CHECK(std::set<Index>(flipped.begin(), flipped.end()).size() == m);
    std::size_t changed = 0;
    for (std::size_t i = 0; i < d.y.size(); ++i) {
      const bool is_flipped = std::binary_search(flipped.begin(), flipped.end(), Index(i));
      if (d.y[i] != before[i]) ++changed;
      CHECK((d.y[i] != before[i]) == is_flipped);
      CHECK((d.y[i] >= 0 && d.y[i] < 7));
    }
    CHECK(changed == m);
    auto again = random_dataset<float>(1001, 1, 7, 4);
    CHECK(data::flip_labels(again, f, 11) == flipped);
    CHECK(again.y == d.y);
  }
  // The new labels are spread over the other classes: each of the 6 others gets about 1/6.
  auto d = random_dataset<float>(6000, 1, 7, 5);
  const data::Labels before = d.y;
  const auto flipped = data::flip_labels(d, 1.0, 3);
  std::vector<int> offset_counts(7, 0);
  for (const Index i : flipped) ++offset_counts[std::size_t((d.y[std::size_t(i)] - before[std::size_t(i)] + 7) % 7)];
  CHECK(offset_counts[0] == 0);
  for (int k = 1; k < 7; ++k) CHECK(std::abs(offset_counts[std::size_t(k)] - 1000) < 120);
  auto other = random_dataset<float>(1001, 1, 7, 4);
  auto same_seed = random_dataset<float>(1001, 1, 7, 4);
  CHECK(data::flip_labels(other, 0.2, 12) != data::flip_labels(same_seed, 0.2, 11));
  CHECK_THROWS_AS(data::flip_labels(other, 1.5, 0), ValueError);
  auto one_class = random_dataset<float>(10, 1, 1, 4);
  CHECK_THROWS_AS(data::flip_labels(one_class, 0.5, 0), ValueError);
}

TEST_CASE("train_test_split partitions the samples by seed; class_counts counts labels", "[data][transforms]") {
  const auto d = random_dataset<double>(50, 1, 5, 6);
  const auto s = data::train_test_split(d, 12, 9);
  REQUIRE(s.train.size() == 38);
  REQUIRE(s.test.size() == 12);
  // Every sample lands in exactly one part: match columns back to the original.
  std::vector<int> seen(50, 0);
  for (const auto* part : {&s.train, &s.test})
    for (Index j = 0; j < part->size(); ++j)
      for (Index i = 0; i < 50; ++i)
        if (part->x.col(j) == d.x.col(i)) {
          ++seen[std::size_t(i)];
          CHECK(part->y[std::size_t(j)] == d.y[std::size_t(i)]);
        }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; }));
  const auto again = data::train_test_split(d, 12, 9), other = data::train_test_split(d, 12, 10);
  CHECK(again.test.x == s.test.x);
  CHECK(other.test.x != s.test.x);
  CHECK_THROWS_AS(data::train_test_split(d, 50, 0), ValueError);
  CHECK(data::class_counts(d) == std::vector<Index>(5, 10));
  auto bad = d;
  bad.y[3] = 5;
  CHECK_THROWS_AS(data::class_counts(bad), ValueError);
}
