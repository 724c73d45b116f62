#pragma once
// The serial CPU backend: every loop and product runs in the calling thread.
#include "curvature/core/types.hpp"

namespace curvature::backend {

/// Runs everything in the calling thread. Products go to Eigen (or to a single-threaded BLAS when
/// the build defines EIGEN_USE_BLAS through curvature::blas).
struct Serial {
  static constexpr const char* name = "serial";
  int threads() const { return 1; }

  /// Calls f(begin, end) over [0, n) in one chunk.
  template <class F>
  void parallel_for(Index n, F&& f) const {
    if (n > 0) f(Index{0}, n);
  }

  /// C = alpha * A * B, or C += alpha * A * B when accumulate is true.
  template <class C, class A, class B, class T>
  void gemm(C&& c, const A& a, const B& b, T alpha, bool accumulate) const {
    if (accumulate) c.noalias() += alpha * a * b;
    else c.noalias() = alpha * a * b;
  }
};

}  // namespace curvature::backend
