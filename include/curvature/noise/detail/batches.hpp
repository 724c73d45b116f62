#pragma once
// Internals of noise/: argument checks and the inputs and targets of a mini-batch given its
// sample indices (000 eq. 34's K mini-batches, 002's linearized SGD).
#include <cmath>
#include <concepts>
#include <cstdint>
#include <vector>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"

namespace curvature::detail {

/// x finite and > 0, else ValueError "fn: name = x, expected a finite value > 0".
inline void check_positive(double x, const char* fn, const char* name) {
  CURVATURE_CHECK_VALUE(std::isfinite(x) && x > 0, fn, ": ", name, " = ", x, ", expected a finite value > 0");
}

/// The columns idx[0], idx[1], ... of x (repeats allowed).
template <class T>
Matrix<T> gather_columns(const Matrix<T>& x, const std::vector<Index>& idx) {
  Matrix<T> out(x.rows(), static_cast<Index>(idx.size()));
  for (std::size_t j = 0; j < idx.size(); ++j) out.col(static_cast<Index>(j)) = x.col(idx[j]);
  return out;
}

/// The targets of the samples idx: class labels or the columns of a target matrix.
inline std::vector<std::int64_t> gather_targets(const std::vector<std::int64_t>& y, const std::vector<Index>& idx) {
  std::vector<std::int64_t> out;
  out.reserve(idx.size());
  for (Index i : idx) out.push_back(y[static_cast<std::size_t>(i)]);
  return out;
}
template <class T>
Matrix<T> gather_targets(const Matrix<T>& y, const std::vector<Index>& idx) {
  return gather_columns(y, idx);
}

/// Targets that gather_targets can split into mini-batches.
template <class Targets>
concept GatherableTargets = requires(const Targets& y, const std::vector<Index>& idx) {
  { gather_targets(y, idx) } -> std::convertible_to<Targets>;
};

}  // namespace curvature::detail
