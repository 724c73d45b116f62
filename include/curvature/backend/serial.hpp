#pragma once
// The serial CPU backend: every loop and product runs in the calling thread.
#include "curvature/backend/blas.hpp"
#include "curvature/core/types.hpp"

namespace curvature::backend {

/// Runs everything in the calling thread. Products go to Eigen's kernels, or to OpenBLAS (one thread
/// per call) when the build defines EIGEN_USE_BLAS through curvature::blas.
struct Serial {
  static constexpr const char* name = "serial";
  int threads() const { return 1; }
  Serial with_threads(int) const { return *this; }

  /// Calls f(begin, end) over [0, n) in one chunk.
  template <class F>
  void parallel_for(Index n, F&& f) const {
    if (n > 0) f(Index{0}, n);
  }

  /// C = alpha * A * B, or C += alpha * A * B when accumulate is true. With a BLAS, large products
  /// run as the same fixed pieces as in backend::OpenMP (blas.hpp), one after the other.
  template <class C, class A, class B, class T>
  void gemm(C&& c, const A& a, const B& b, T alpha, bool accumulate) const {
    if constexpr (uses_blas)
      detail::blas_split_gemm([](Index parts, auto&& f) { f(Index{0}, parts); }, c, a, b, alpha, accumulate);
    else
      detail::product(c, a, b, alpha, accumulate);
  }
};

}  // namespace curvature::backend
