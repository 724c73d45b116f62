#pragma once
// Synthetic classification data for the training tests: Gaussian blobs around well separated
// class centres (linearly separable up to a negligible overlap), drawn from a seed.
#include <cstdint>

#include "curvature/core/rng.hpp"
#include "curvature/data/dataset.hpp"

namespace curvature::testing {

/// n points in `dim` dimensions, `classes` classes (labels cycle 0, 1, ..., so every class is
/// present). Class c is centred at `radius` times the c-th signed unit vector (+e_0, -e_0, +e_1,
/// ...); noise is N(0, sigma^2 I). Centres come from the class alone, so train and test sets
/// drawn with different seeds share them.
template <class T>
data::Dataset<T> blobs(Index n, Index dim, Index classes, std::uint64_t seed, double radius = 3.0,
                       double sigma = 0.8) {
  data::Dataset<T> d;
  d.x.resize(dim, n);
  d.y.resize(static_cast<std::size_t>(n));
  d.num_classes = classes;
  d.shape = nn::Shape{dim, 1, 1};
  d.name = "blobs";
  Rng rng(seed);
  for (Index i = 0; i < n; ++i) {
    const Index c = i % classes;
    for (Index k = 0; k < dim; ++k) d.x(k, i) = static_cast<T>(sigma * rng.normal<double>());
    d.x((c / 2) % dim, i) += static_cast<T>(c % 2 == 0 ? radius : -radius);
    d.y[static_cast<std::size_t>(i)] = c;
  }
  return d;
}

}  // namespace curvature::testing
