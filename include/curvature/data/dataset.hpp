#pragma once
// A labelled classification data set in memory, and shuffled mini-batch iteration over it.
// Inputs are the columns of a D x N matrix (one sample per column, an image flattened C x H x W in
// PyTorch's order), labels are class indices in [0, num_classes).
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::data {

using Labels = std::vector<std::int64_t>;

template <Scalar T>
struct Dataset {
  Matrix<T> x;            ///< D x N inputs
  Labels y;               ///< N labels in [0, num_classes)
  Index num_classes = 0;
  nn::Shape shape;        ///< shape of one input (C x H x W; vectors are D x 1 x 1)
  std::string name;       ///< where it came from, e.g. "fashion-mnist (train)" or "synthetic"

  Index size() const { return x.cols(); }
  Index dim() const { return x.rows(); }

  /// Throws ShapeError / ValueError naming `what` when the fields do not fit together.
  void check(const std::string& what = "dataset") const {
    CURVATURE_CHECK_SHAPE(static_cast<Index>(y.size()) == x.cols(), what, ": ", x.cols(), " inputs but ", y.size(),
                          " labels");
    CURVATURE_CHECK_SHAPE(shape.size() == x.rows(), what, ": input shape ", shape.str(), " has ", shape.size(),
                          " values but the inputs have ", x.rows(), " rows");
    CURVATURE_CHECK_VALUE(num_classes >= 1, what, ": num_classes must be >= 1, got ", num_classes);
    for (std::size_t i = 0; i < y.size(); ++i)
      CURVATURE_CHECK_VALUE(y[i] >= 0 && y[i] < num_classes, what, ": label ", y[i], " of sample ", i,
                            " is outside [0, ", num_classes, ")");
  }
};

/// A train/test pair, as the examples load it.
template <Scalar T>
struct Split {
  Dataset<T> train;
  Dataset<T> test;
};

/// The samples `idx` of `d` as a new data set (in that order).
template <Scalar T>
Dataset<T> subset(const Dataset<T>& d, std::span<const Index> idx) {
  Dataset<T> out;
  out.x.resize(d.dim(), static_cast<Index>(idx.size()));
  out.y.resize(idx.size());
  for (std::size_t k = 0; k < idx.size(); ++k) {
    CURVATURE_CHECK_VALUE(idx[k] >= 0 && idx[k] < d.size(), "subset: index ", idx[k], " outside [0, ", d.size(),
                          ") of ", d.name);
    out.x.col(static_cast<Index>(k)) = d.x.col(idx[k]);
    out.y[k] = d.y[static_cast<std::size_t>(idx[k])];
  }
  out.num_classes = d.num_classes;
  out.shape = d.shape;
  out.name = d.name;
  return out;
}

/// The first n samples of `d` (all of them when n <= 0 or n >= size).
template <Scalar T>
Dataset<T> head(const Dataset<T>& d, Index n) {
  if (n <= 0 || n >= d.size()) return d;
  std::vector<Index> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), Index{0});
  Dataset<T> out = subset(d, std::span<const Index>(idx));
  out.name = detail::cat(d.name, ", first ", n);
  return out;
}

/// Gathers the samples `idx` of `d` into x (D x |idx|) and y, reusing their storage.
template <Scalar T>
void gather(const Dataset<T>& d, std::span<const Index> idx, Matrix<T>& x, Labels& y) {
  const Index n = static_cast<Index>(idx.size());
  if (x.rows() != d.dim() || x.cols() != n) x.resize(d.dim(), n);
  y.resize(idx.size());
  for (Index k = 0; k < n; ++k) {
    x.col(k) = d.x.col(idx[static_cast<std::size_t>(k)]);
    y[static_cast<std::size_t>(k)] = d.y[static_cast<std::size_t>(idx[static_cast<std::size_t>(k)])];
  }
}

/// Shuffled mini-batches without replacement: epoch e visits a permutation of 0..n-1 drawn from
/// (seed, e) alone, so a run is reproducible whatever else draws random numbers. The last, short
/// batch is kept unless drop_last.
class BatchSampler {
 public:
  BatchSampler(Index n, Index batch_size, std::uint64_t seed, bool drop_last = false)
      : n_(n), batch_(batch_size), seed_(seed), drop_last_(drop_last), perm_(static_cast<std::size_t>(n)) {
    CURVATURE_CHECK_VALUE(n >= 1, "BatchSampler: the data set is empty");
    CURVATURE_CHECK_VALUE(batch_size >= 1 && batch_size <= n, "BatchSampler: batch size ", batch_size,
                          " must be in [1, ", n, "] (the data set size)");
    start_epoch(0);
  }

  /// Draws the permutation of epoch `e` (Fisher-Yates from Rng(seed, e)).
  void start_epoch(Index e) {
    std::iota(perm_.begin(), perm_.end(), Index{0});
    Rng rng(seed_, static_cast<std::uint64_t>(e));
    shuffle_indices(perm_, rng);
  }
  Index batches() const { return drop_last_ ? n_ / batch_ : (n_ + batch_ - 1) / batch_; }
  Index batch_size() const { return batch_; }
  /// Sample indices of batch b of the current epoch.
  std::span<const Index> batch(Index b) const {
    CURVATURE_CHECK_VALUE(b >= 0 && b < batches(), "BatchSampler: batch ", b, " of ", batches());
    const Index first = b * batch_;
    const Index len = std::min(batch_, n_ - first);
    return std::span<const Index>(perm_.data() + first, static_cast<std::size_t>(len));
  }

 private:
  Index n_, batch_;
  std::uint64_t seed_;
  bool drop_last_;
  std::vector<Index> perm_;
};

}  // namespace curvature::data
