#pragma once
// Products through an external BLAS (builds that link curvature::blas, which defines
// EIGEN_USE_BLAS): how the CPU backends split them so that results stay bitwise independent of
// the thread count, and the one setting OpenBLAS needs.
//
// Eigen's own kernels let backend::OpenMP split a product at multiples of their register block and
// still give the serial bits (openmp.hpp). A BLAS gives no such guarantee: OpenBLAS 0.3.21 picks
// kernels by shape (a small-matrix path below ~1e6 multiply-adds, other edge kernels for the last
// rows), so a dgemm cut in two at a 48-aligned boundary gave different last bits for 1,304 of
// 10,278 shapes tried (2026-12-01, Cooperlake kernels). With a BLAS the backends therefore cut a
// large product into a number of pieces fixed by its shape alone, `blas_gemm_parts`, in every
// backend and at every thread count: the serial backend runs the same BLAS calls one after the
// other that the OpenMP backend runs side by side. A product then uses at most `blas_gemm_parts`
// threads (define CURVATURE_BLAS_GEMM_PARTS to change it; each extra piece costs a few percent on
// one thread).
#include <algorithm>

#include "curvature/core/types.hpp"

#if defined(EIGEN_USE_BLAS) && defined(CURVATURE_OPENBLAS)
// Debian's serial OpenBLAS is built without locking and corrupts results when two threads call it at
// once; curvature::blas links the threaded build, which is safe to call concurrently, and makes each
// call single-threaded here, since the backends already run one call per thread.
extern "C" void openblas_set_num_threads(int);
#endif

#ifndef CURVATURE_BLAS_GEMM_PARTS
#define CURVATURE_BLAS_GEMM_PARTS 2
#endif

namespace curvature::backend {

/// True when Eigen's products go to an external BLAS (EIGEN_USE_BLAS, set by curvature::blas).
#if defined(EIGEN_USE_BLAS)
inline constexpr bool uses_blas = true;
#else
inline constexpr bool uses_blas = false;
#endif

/// Pieces a large product is cut into when products go to a BLAS, whatever the thread count.
inline constexpr Index blas_gemm_parts = CURVATURE_BLAS_GEMM_PARTS;
static_assert(blas_gemm_parts >= 1, "CURVATURE_BLAS_GEMM_PARTS must be at least 1");

namespace detail {

#if defined(EIGEN_USE_BLAS) && defined(CURVATURE_OPENBLAS)
/// Set once, before main: every OpenBLAS call runs in its caller's thread.
inline const bool openblas_single_threaded = [] {
  openblas_set_num_threads(1);
  return true;
}();
#endif

/// C = alpha A B, or C += alpha A B when accumulate is true.
template <class C, class A, class B, class T>
void product(C&& c, const A& a, const B& b, T alpha, bool accumulate) {
  if (accumulate) c.noalias() += alpha * a * b;
  else c.noalias() = alpha * a * b;
}

/// Columns [i0, i0 + len) of C (by_cols) or its rows [i0, i0 + len) from the matching slice of B or A.
template <class C, class A, class B, class T>
void product_slice(C&& c, const A& a, const B& b, T alpha, bool accumulate, bool by_cols, Index i0, Index len) {
  if (by_cols) product(c.middleCols(i0, len), a, b.middleCols(i0, len), alpha, accumulate);
  else product(c.middleRows(i0, len), a.middleRows(i0, len), b, alpha, accumulate);
}

/// C = alpha A B (or C += alpha A B) in `blas_gemm_parts` pieces of C's columns (or rows, when
/// there are more rows) whose boundaries depend only on the shape; run(parts, f) calls f(p0, p1)
/// on disjoint ranges of pieces covering [0, parts), serially or in parallel. Products under 2^21
/// multiply-adds, or too narrow to cut into 64-wide pieces, are one piece.
template <class Run, class C, class A, class B, class T>
void blas_split_gemm(Run&& run, C&& c, const A& a, const B& b, T alpha, bool accumulate) {
#if defined(EIGEN_USE_BLAS) && defined(CURVATURE_OPENBLAS)
  (void)openblas_single_threaded;
#endif
  const Index m = c.rows(), n = c.cols(), k = a.cols();
  constexpr Index g = 64;  // piece boundaries at multiples of 64 rows or columns
  const Index width = std::max(m, n), blocks = (width + g - 1) / g;
  const Index parts = std::min(blas_gemm_parts, blocks);
  if (parts <= 1 || m * n * k < (Index{1} << 21)) return product(c, a, b, alpha, accumulate);
  const auto bound = [&](Index p) { return std::min(width, blocks * p / parts * g); };
  run(parts, [&](Index p0, Index p1) {
    for (Index p = p0; p < p1; ++p)
      product_slice(c, a, b, alpha, accumulate, n >= m, bound(p), bound(p + 1) - bound(p));
  });
}

}  // namespace detail
}  // namespace curvature::backend
