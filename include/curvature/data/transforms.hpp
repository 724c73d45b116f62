#pragma once
// Transforms of a data set: per-channel normalisation with the training set's statistics,
// label-noise injection (paper 004, Table 1: a fraction of the training labels replaced by a
// different class drawn uniformly), a seeded train/test split and class counts.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"
#include "curvature/data/dataset.hpp"

namespace curvature::data {

/// Per-channel mean and (population) standard deviation of the inputs.
struct ChannelStats {
  std::vector<double> mean, stddev;
};

/// Mean and standard deviation of each channel c over all samples and all H x W positions
/// (channel c is rows c*H*W ... (c+1)*H*W - 1 of x); two passes in double.
template <Scalar T>
ChannelStats channel_stats(const Dataset<T>& d) {
  CURVATURE_CHECK_VALUE(d.size() >= 1, "channel_stats: ", d.name, " is empty");
  CURVATURE_CHECK_SHAPE(d.shape.size() == d.dim(), "channel_stats: shape ", d.shape.str(), " of ", d.name,
                        " does not match its ", d.dim(), " input rows");
  const Index hw = d.shape.h * d.shape.w;
  const double count = static_cast<double>(hw) * static_cast<double>(d.size());
  ChannelStats s{std::vector<double>(static_cast<std::size_t>(d.shape.c)),
                 std::vector<double>(static_cast<std::size_t>(d.shape.c))};
  for (Index c = 0; c < d.shape.c; ++c) {
    const auto block = d.x.middleRows(c * hw, hw);
    const double mean = block.template cast<double>().sum() / count;
    const double var = (block.template cast<double>().array() - mean).square().sum() / count;
    s.mean[static_cast<std::size_t>(c)] = mean;
    s.stddev[static_cast<std::size_t>(c)] = std::sqrt(var);
  }
  return s;
}

/// x <- (x - mean_c) / std_c for each channel c; a channel with std 0 is only centred.
template <Scalar T>
void normalize(Dataset<T>& d, const ChannelStats& s) {
  CURVATURE_CHECK_SHAPE(static_cast<Index>(s.mean.size()) == d.shape.c && s.stddev.size() == s.mean.size(),
                        "normalize: ", s.mean.size(), " channel statistics for ", d.name, " with ", d.shape.c,
                        " channels");
  const Index hw = d.shape.h * d.shape.w;
  for (Index c = 0; c < d.shape.c; ++c) {
    const double sd = s.stddev[static_cast<std::size_t>(c)];
    const T scale = static_cast<T>(sd > 0 ? 1.0 / sd : 1.0);
    const T shift = static_cast<T>(s.mean[static_cast<std::size_t>(c)]);
    d.x.middleRows(c * hw, hw).array() = (d.x.middleRows(c * hw, hw).array() - shift) * scale;
  }
}

/// Normalises train and test per channel with the TRAIN set's mean and standard deviation (so no
/// test statistics leak into training) and returns those statistics.
template <Scalar T>
ChannelStats normalize(Split<T>& s) {
  CURVATURE_CHECK_SHAPE(s.train.shape == s.test.shape, "normalize: train shape ", s.train.shape.str(),
                        " differs from test shape ", s.test.shape.str());
  const ChannelStats stats = channel_stats(s.train);
  normalize(s.train, stats);
  normalize(s.test, stats);
  s.train.name += ", normalized";
  s.test.name += ", normalized with the train statistics";
  return stats;
}

/// Label noise: exactly round(fraction * N) samples, chosen from `seed`, get a label drawn
/// uniformly among the num_classes - 1 other classes. Returns the flipped indices, ascending.
template <Scalar T>
std::vector<Index> flip_labels(Dataset<T>& d, double fraction, std::uint64_t seed) {
  CURVATURE_CHECK_VALUE(fraction >= 0 && fraction <= 1, "flip_labels: fraction must be in [0, 1], got ", fraction);
  CURVATURE_CHECK_VALUE(d.num_classes >= 2 || fraction == 0, "flip_labels: ", d.name, " has ", d.num_classes,
                        " class(es); flipping needs at least 2");
  const Index n = d.size();
  const auto m = static_cast<Index>(std::llround(fraction * static_cast<double>(n)));
  Rng rng(seed, 0x6c61626cull);  // "labl": a stream of its own
  std::vector<Index> idx = random_subset(rng, n, m);
  std::sort(idx.begin(), idx.end());
  for (const Index i : idx) {  // all checked before any is changed
    const auto y = d.y[static_cast<std::size_t>(i)];
    CURVATURE_CHECK_VALUE(y >= 0 && y < d.num_classes, "flip_labels: label ", y, " of sample ", i, " of ", d.name,
                          " is outside [0, ", d.num_classes, ")");
  }
  for (const Index i : idx) {
    auto& y = d.y[static_cast<std::size_t>(i)];
    const auto r = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(d.num_classes - 1)));
    y = r >= y ? r + 1 : r;  // uniform over the other classes
  }
  if (m > 0) d.name += curvature::detail::cat(", ", m, " labels flipped (seed ", seed, ")");
  return idx;
}

/// A random split of `d` into n_test test samples and N - n_test training samples, from `seed`.
template <Scalar T>
Split<T> train_test_split(const Dataset<T>& d, Index n_test, std::uint64_t seed) {
  CURVATURE_CHECK_VALUE(n_test >= 1 && n_test < d.size(), "train_test_split: n_test must be in [1, ", d.size(),
                        ") for ", d.name, ", got ", n_test);
  std::vector<Index> perm(static_cast<std::size_t>(d.size()));
  std::iota(perm.begin(), perm.end(), Index{0});
  Rng rng(seed, 0x73706c74ull);  // "splt"
  shuffle_indices(perm, rng);
  const std::span<const Index> all(perm);
  Split<T> s{subset(d, all.subspan(static_cast<std::size_t>(n_test))),
             subset(d, all.first(static_cast<std::size_t>(n_test)))};
  s.train.name = curvature::detail::cat(d.name, ", split train part (seed ", seed, ")");
  s.test.name = curvature::detail::cat(d.name, ", split test part (seed ", seed, ")");
  return s;
}

/// Number of samples of each class 0 .. num_classes - 1.
template <Scalar T>
std::vector<Index> class_counts(const Dataset<T>& d) {
  std::vector<Index> counts(static_cast<std::size_t>(std::max<Index>(d.num_classes, 0)), 0);
  for (std::size_t i = 0; i < d.y.size(); ++i) {
    CURVATURE_CHECK_VALUE(d.y[i] >= 0 && d.y[i] < d.num_classes, "class_counts: label ", d.y[i], " of sample ", i,
                          " of ", d.name, " is outside [0, ", d.num_classes, ")");
    ++counts[static_cast<std::size_t>(d.y[i])];
  }
  return counts;
}

}  // namespace curvature::data
