#pragma once
// Running means and variances of per-probe values (Welford 1962). Each update adds a correction
// (x - mean) / n rather than x to a growing sum, so float estimates over thousands of probes keep
// their digits, and the variance never cancels catastrophically.
#include <algorithm>
#include <cmath>
#include <limits>

#include "curvature/core/types.hpp"

namespace curvature::detail {

/// Mean, variance and standard error of a stream of scalars.
template <class T>
struct Welford {
  Index n = 0;
  T mean = 0;
  T m2 = 0;  // sum of squared deviations from the running mean

  void add(T x) {
    ++n;
    const T delta = x - mean;
    mean += delta / static_cast<T>(n);
    m2 += delta * (x - mean);
  }
  /// Sample variance (n - 1 in the denominator); +inf below two samples.
  T variance() const { return n > 1 ? m2 / static_cast<T>(n - 1) : std::numeric_limits<T>::infinity(); }
  /// Standard error of the mean, sqrt(variance / n); +inf below two samples.
  T std_error() const { return n > 1 ? std::sqrt(variance() / static_cast<T>(n)) : variance(); }
  /// The adaptive stop of the Hutchinson estimators: std_error <= rel_tol |mean|.
  bool met(double rel_tol) const { return n > 1 && std_error() <= static_cast<T>(rel_tol) * std::abs(mean); }
};

/// Coordinate-wise Welford for a stream of vectors of a fixed length.
template <class T>
struct WelfordVector {
  Index n = 0;
  Vector<T> mean;
  Vector<T> m2;
  Vector<T> delta;  // scratch, kept to avoid an allocation per sample

  explicit WelfordVector(Index d) : mean(Vector<T>::Zero(d)), m2(Vector<T>::Zero(d)), delta(d) {}

  template <class X>
  void add(const Eigen::MatrixBase<X>& x) {
    ++n;
    delta = x - mean;
    mean += delta / static_cast<T>(n);
    m2.array() += delta.array() * (x.array() - mean.array());
  }
  /// Adds the coordinate-wise products v.col(j) (.) av.col(j) of probes j0, ..., j1 - 1 of a block
  /// (column-major, contiguous columns) as j1 - j0 samples, with add()'s recurrence per coordinate
  /// (the correction multiplied by 1/n), but a chunk of coordinates at a time: the chunk's mean
  /// and m2 stay in L1 while every probe of the run passes, each product is formed once, and the
  /// four steps of the recurrence are one loop (add() on v (.) av makes five passes over d-long
  /// vectors per probe). What is left is reading the two blocks once. Returns false when the
  /// running mean is no longer finite, which a NaN or Inf product always causes (it never
  /// recovers).
  bool add_products(const Matrix<T>& v, const Matrix<T>& av, Index j0, Index j1) {
    constexpr Index chunk = 512;
    const Index d = mean.size();
    for (Index k0 = 0; k0 < d; k0 += chunk) {
      const Index len = std::min(chunk, d - k0);
      T* __restrict mu = mean.data() + k0;
      T* __restrict s2 = m2.data() + k0;
      for (Index j = j0; j < j1; ++j) {
        const T inv = T(1) / static_cast<T>(n + (j - j0) + 1);
        const T* __restrict vj = v.col(j).data() + k0;
        const T* __restrict aj = av.col(j).data() + k0;
        // Prefetch the next probe's segments: a run reads 2 (j1 - j0) streams, more than the
        // hardware prefetcher follows.
        if (j + 1 < j1) {
          const T* nv = v.col(j + 1).data() + k0;
          const T* na = av.col(j + 1).data() + k0;
          for (Index k = 0; k < len; k += 64 / Index(sizeof(T))) {
            __builtin_prefetch(nv + k);
            __builtin_prefetch(na + k);
          }
        }
        for (Index k = 0; k < len; ++k) {
          const T x = vj[k] * aj[k];
          const T dx = x - mu[k];
          mu[k] += dx * inv;
          s2[k] += dx * (x - mu[k]);
        }
      }
    }
    n += j1 - j0;
    return all_finite(mean);
  }
  /// Standard errors per coordinate; +inf below two samples.
  Vector<T> std_error() const {
    if (n < 2) return Vector<T>::Constant(mean.size(), std::numeric_limits<T>::infinity());
    return (m2 / static_cast<T>(n - 1) / static_cast<T>(n)).cwiseSqrt();
  }
  /// ||std_error||_2 <= rel_tol ||mean||_2 (the relative error of the whole vector).
  bool met(double rel_tol) const {
    if (n < 2) return false;
    const T se2 = m2.sum() / static_cast<T>(n - 1) / static_cast<T>(n);
    return std::sqrt(se2) <= static_cast<T>(rel_tol) * mean.norm();
  }
};

}  // namespace curvature::detail
