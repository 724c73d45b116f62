#pragma once
// Random probe blocks for the stochastic estimators (SPEC 2). Probe k is drawn from its own
// counter-based stream Rng(seed, k) (core/rng.hpp), so a probe depends only on (seed, k): results
// are the same whatever the block size, the order in which blocks are drawn and the thread count.
#include <algorithm>
#include <cstdint>

#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"

namespace curvature {

/// Distribution of the probe entries. Both have E[v v^T] = I, so v^T A v is unbiased for tr(A).
/// Rademacher (+-1) has the smaller variance for trace estimation (2 sum_{i!=j} A_ij^2 versus
/// 2 ||A||_F^2 for Gaussian; Hutchinson 1990, Avron and Toledo 2011).
enum class Probe { Rademacher, Gaussian };

/// The seed of an estimator's own family of streams: `tag` 0 is the seed itself (the Hutchinson
/// family, shared by trace, diagonal and Frobenius so that they see the same probes); other tags
/// give independent families (Hutch++ sketch and residual probes, Lanczos starts).
inline std::uint64_t probe_seed(std::uint64_t seed, std::uint64_t tag) {
  return tag == 0 ? seed : Rng::mix(seed ^ Rng::mix(tag * 0x9E3779B97F4A7C15ull));
}

namespace detail {

/// Rademacher entries, 64 signs from each 64-bit draw (one draw per entry would cost 64 times more).
template <class T, class Col>
void fill_rademacher(Col&& v, Rng& rng) {
  const Index d = v.size();
  for (Index i = 0; i < d; i += 64) {
    const std::uint64_t bits = rng.next_u64();
    const Index n = d - i < 64 ? d - i : 64;
    for (Index b = 0; b < n; ++b) v[i + b] = T(1) - T(2) * static_cast<T>((bits >> b) & 1u);
  }
}

/// Standard normal entries by Marsaglia's polar method: a point (x, y) uniform in the unit disc
/// (one 64-bit draw, 32 bits per coordinate, about 1.27 draws per pair) gives the two normals
/// x f and y f with f = sqrt(-2 log(s) / s), s = x^2 + y^2. Rejection runs in a scalar loop and
/// the transcendental part on chunks of 128 pairs in fixed-size arrays (vectorised log and sqrt,
/// no heap, no sin/cos). The 32-bit grid moves E[v_i^2] = 1 by O(2^-32), far below any SE.
template <class T, class Col>
void fill_gaussian(Col&& v, Rng& rng) {
  constexpr Index chunk = 128;
  Eigen::Array<double, chunk, 1> x, y, s = Eigen::Array<double, chunk, 1>::Ones();
  const Index d = v.size();
  for (Index start = 0; start < d; start += 2 * chunk) {
    const Index pairs = std::min<Index>(chunk, (d - start + 1) / 2);
    for (Index i = 0; i < pairs;) {
      const std::uint64_t bits = rng.next_u64();
      const double a = (static_cast<double>(bits >> 32) + 0.5) * 0x1.0p-31 - 1.0;  // symmetric
      const double b = (static_cast<double>(bits & 0xFFFFFFFFu) + 0.5) * 0x1.0p-31 - 1.0;
      const double r2 = a * a + b * b;  // > 0: a and b are odd multiples of 2^-32
      x[i] = a, y[i] = b, s[i] = r2;  // written always, kept only when inside the disc
      i += r2 < 1.0;
    }
    s = (-2.0 * s.log() / s).sqrt();
    const Index n = std::min<Index>(2 * chunk, d - start);
    for (Index i = 0; i < pairs; ++i) v[start + 2 * i] = static_cast<T>(x[i] * s[i]);
    for (Index i = 0; 2 * i + 1 < n; ++i) v[start + 2 * i + 1] = static_cast<T>(y[i] * s[i]);
  }
}

}  // namespace detail

/// Overwrites column j of the d x m block `v` with probe `first + j` of the family `seed`.
namespace detail {
/// Columns [j0, j1) of fill_probes(v, kind, seed, first): column j holds probe first + j.
template <class T>
void fill_probe_columns(Matrix<T>& v, Probe kind, std::uint64_t seed, Index first, Index j0, Index j1) {
  for (Index j = j0; j < j1; ++j) {
    Rng rng(seed, static_cast<std::uint64_t>(first + j));
    if (kind == Probe::Rademacher) fill_rademacher<T>(v.col(j), rng);
    else fill_gaussian<T>(v.col(j), rng);
  }
}
}  // namespace detail

template <class T>
void fill_probes(Matrix<T>& v, Probe kind, std::uint64_t seed, Index first = 0) {
  CURVATURE_CHECK_VALUE(first >= 0, "fill_probes: first = ", first, ", expected >= 0");
  detail::fill_probe_columns(v, kind, seed, first, 0, v.cols());
}

/// A new d x m block of probes first, ..., first + m - 1 of the family `seed`.
template <class T>
Matrix<T> make_probes(Index d, Index m, Probe kind, std::uint64_t seed, Index first = 0) {
  CURVATURE_CHECK_VALUE(d >= 1, "make_probes: d = ", d, ", expected >= 1");
  CURVATURE_CHECK_VALUE(m >= 0, "make_probes: m = ", m, ", expected >= 0");
  Matrix<T> v(d, m);
  fill_probes(v, kind, seed, first);
  return v;
}

}  // namespace curvature
