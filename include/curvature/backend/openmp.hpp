#pragma once
// The OpenMP CPU backend. Loops are split into one contiguous chunk per thread; products are split
// by output columns or rows, whichever divides more evenly (split_by_cols), so that each thread
// runs one single-threaded GEMM. Splits fall on multiples of Eigen's register blocks, so each
// output element is computed by the same micro-kernel, in the same order, whatever the thread
// count: results are bitwise those of the serial backend (tests/train/test_determinism.cpp). With
// an external BLAS, whose kernels give no such guarantee, products are cut into pieces fixed by
// their shape alone instead, the same in the serial backend (blas.hpp).
#include <algorithm>
#include <type_traits>

#include "curvature/backend/blas.hpp"
#include "curvature/core/types.hpp"
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace curvature::backend {

namespace detail {

/// The largest share of a dimension of `len` cut into blocks of g among nt threads, relative to
/// an even share: 1 is a perfect balance.
inline double split_imbalance(Index len, Index g, Index nt) {
  const Index blocks = (len + g - 1) / g, most = std::min(len, (blocks + nt - 1) / nt * g);
  return static_cast<double>(most) * static_cast<double>(nt) / static_cast<double>(len);
}

/// Whether to split an m x n product by columns (blocks of col_block) rather than rows (blocks of
/// row_block) among nt threads: the direction whose largest share is smaller, the wider one on a
/// tie. With 48-row register blocks, 256 rows split 144 + 112 (1.125 of an even share) while 128
/// columns in blocks of 4 split 64 + 64; the thread with the larger share sets the time.
inline bool split_by_cols(Index m, Index n, Index row_block, Index col_block, Index nt) {
  const double rows = m >= 16 * nt ? split_imbalance(m, row_block, nt) : 1e9;
  const double cols = n >= 16 * nt ? split_imbalance(n, col_block, nt) : 1e9;
  if (rows != cols) return cols < rows;
  return n >= m;
}

#if defined(_OPENMP)
template <class>
inline constexpr bool openmp_enabled = true;
#else
template <class>
inline constexpr bool openmp_enabled = false;
#endif
}  // namespace detail

/// OpenMP backend; `num_threads == 0` means omp_get_max_threads(). A class template only so that
/// using it in a build without OpenMP is a compile-time error at the point of use.
template <class Tag = void>
struct BasicOpenMP {
  static constexpr const char* name = "openmp";
  int num_threads = 0;

  int threads() const {
    static_assert(detail::openmp_enabled<Tag>,
                  "curvature::backend::OpenMP needs OpenMP: link the target curvature::openmp "
                  "(or compile with -fopenmp), or use curvature::backend::Serial");
#if defined(_OPENMP)
    return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    return 1;
#endif
  }

  /// The same backend on `n` threads (Sequential runs batch shards concurrently on one thread each).
  BasicOpenMP with_threads(int n) const { return BasicOpenMP{n}; }

  /// Calls f(begin, end) on disjoint chunks covering [0, n), one chunk per thread.
  template <class F>
  void parallel_for(Index n, F&& f) const {
    const int nt = static_cast<int>(std::min<Index>(threads(), n));
    if (nt <= 1) {
      if (n > 0) f(Index{0}, n);
      return;
    }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static, 1)
#endif
    for (int t = 0; t < nt; ++t) {
      const Index b = n * t / nt, e = n * (t + 1) / nt;
      if (e > b) f(b, e);
    }
  }

  /// Calls f(begin, end) on disjoint chunks of [0, n) whose boundaries are multiples of g.
  template <class F>
  void parallel_for_aligned(Index n, Index g, F&& f) const {
    const Index blocks = (n + g - 1) / g;
    parallel_for(blocks, [&](Index b0, Index b1) { f(b0 * g, std::min(n, b1 * g)); });
  }

  /// C = alpha * A * B, or C += alpha * A * B when accumulate is true; split across threads.
  /// Chunk boundaries are multiples of Eigen's register block (gebp_traits mr rows, nr columns;
  /// swapped for a row-major C, which Eigen computes as C^T = B^T A^T): every element then goes
  /// through the same micro-kernel, with the same order of the k terms, as in the unsplit
  /// product, so results are bitwise independent of the thread count.
  template <class C, class A, class B, class T>
  void gemm(C&& c, const A& a, const B& b, T alpha, bool accumulate) const {
    using S = typename std::decay_t<C>::Scalar;
    using Traits = Eigen::internal::gebp_traits<S, S>;
    constexpr bool row_major = std::decay_t<C>::IsRowMajor;
    constexpr Index row_block = row_major ? Traits::nr : Traits::mr;
    constexpr Index col_block = row_major ? Traits::mr : Traits::nr;
    if constexpr (uses_blas) {
      detail::blas_split_gemm([&](Index parts, auto&& f) { parallel_for(parts, f); }, c, a, b, alpha, accumulate);
      return;
    }
    const Index m = c.rows(), n = c.cols(), k = a.cols();
    const int nt = threads();
    if (nt <= 1 || m * n * k < (Index{1} << 20) || std::max(m, n) < 16 * nt)  // < ~10 us: not worth a split
      return detail::product(c, a, b, alpha, accumulate);
    const bool by_cols = detail::split_by_cols(m, n, row_block, col_block, nt);
    parallel_for_aligned(by_cols ? n : m, by_cols ? col_block : row_block, [&](Index i0, Index i1) {
      detail::product_slice(c, a, b, alpha, accumulate, by_cols, i0, i1 - i0);
    });
  }
};

using OpenMP = BasicOpenMP<>;

}  // namespace curvature::backend
