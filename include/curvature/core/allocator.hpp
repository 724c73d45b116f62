#pragma once
// Keeps freed memory inside the process. Every curvature computation allocates and frees
// matrices of the same sizes over and over (activations, GEMM packing buffers); with glibc's
// defaults those blocks are returned to the kernel and every reuse page-faults on first touch,
// which measured 3-5x slower on the MNIST MLP gradient (benchmarks/README.md). The library
// applies this once, when the first model is built, unless CURVATURE_NO_MALLOC_TUNING is
// defined; programs can call it themselves earlier.
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace curvature {

/// Raises glibc's mmap and trim thresholds so that large blocks are reused, not unmapped.
/// Returns true when the allocator was tuned (glibc only).
inline bool tune_allocator() {
#if defined(__GLIBC__)
  static const bool done = [] {
    // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems; larger blocks (e.g.
    // a d x N per-sample gradient buffer) are mapped, and are meant to be reused by the caller.
    bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
    ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;
    return mallopt(M_TOP_PAD, 64 << 20) == 1 && ok;
  }();
  return done;
#else
  return false;
#endif
}

namespace detail {
inline void tune_allocator_once() {
#if !defined(CURVATURE_NO_MALLOC_TUNING)
  (void)tune_allocator();
#endif
}
}  // namespace detail

}  // namespace curvature
