#pragma once
// Seeded random numbers. Streams are counter-based (SplitMix64 over (seed, stream, counter)), so
// a result drawn for probe k or sample i is the same whatever the number of threads.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <numeric>
#include <utility>
#include <vector>

#include "curvature/core/types.hpp"

namespace curvature {

/// A small, fast, reproducible generator. `Rng(seed, stream)` gives independent streams for the
/// same seed; every draw advances a 64-bit counter.
class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0, std::uint64_t stream = 0)
      : key_(mix(seed ^ 0x9E3779B97F4A7C15ull) ^ mix(stream + 0xD1B54A32D192ED03ull)) {}

  /// 64 random bits.
  std::uint64_t next_u64() { return mix(key_ + 0x9E3779B97F4A7C15ull * ++counter_); }

  /// Uniform in [0, 1) with 53 (double) or 24 (float) random bits.
  template <class T = double>
  T uniform() {
    if constexpr (sizeof(T) == 4) return static_cast<T>(next_u64() >> 40) * 0x1.0p-24f;
    else return static_cast<T>(next_u64() >> 11) * 0x1.0p-53;
  }

  /// Uniform in [lo, hi).
  template <class T>
  T uniform(T lo, T hi) { return lo + (hi - lo) * uniform<T>(); }

  /// Standard normal (Box-Muller; both values are used).
  template <class T = double>
  T normal() {
    if (has_spare_) {
      has_spare_ = false;
      return static_cast<T>(spare_);
    }
    double u1 = 1.0 - uniform<double>();  // in (0, 1]
    double u2 = uniform<double>();
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
    has_spare_ = true;
    return static_cast<T>(r * std::cos(2.0 * std::numbers::pi * u2));
  }

  /// +1 or -1 with equal probability.
  template <class T = double>
  T rademacher() { return (next_u64() >> 63) ? T(1) : T(-1); }

  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }

  static std::uint64_t mix(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t key_;
  std::uint64_t counter_ = 0;
  double spare_ = 0;
  bool has_spare_ = false;
};

/// The first m entries of a uniformly random permutation of 0..n-1, i.e. a uniform m-subset in
/// random order (partial Fisher-Yates, draw j = j + below(n - j)); 0 <= m <= n. The one sampler
/// behind mini-batches without replacement, Fisher batches and label-noise draws.
inline std::vector<Index> random_subset(Rng& rng, Index n, Index m) {
  std::vector<Index> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), Index{0});
  for (Index j = 0; j < m; ++j) {
    const Index k = j + static_cast<Index>(rng.below(static_cast<std::uint64_t>(n - j)));
    std::swap(perm[static_cast<std::size_t>(j)], perm[static_cast<std::size_t>(k)]);
  }
  perm.resize(static_cast<std::size_t>(m));
  return perm;
}

/// Shuffles v uniformly in place (Fisher-Yates from the back: swap v[i] with v[below(i + 1)]).
inline void shuffle_indices(std::vector<Index>& v, Rng& rng) {
  for (std::size_t i = v.size(); i-- > 1;)
    std::swap(v[i], v[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
}

}  // namespace curvature
