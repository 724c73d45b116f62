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

/// Keeps glibc from returning large freed blocks to the kernel: no block is served by its own
/// mapping (M_MMAP_MAX 0; glibc still maps one when the heap cannot grow) and the heap's top is
/// trimmed only beyond 1 GiB. Returns true when the allocator was tuned (glibc only).
inline bool tune_allocator() {
#if defined(__GLIBC__)
  static const bool done = [] {
    // Raising M_MMAP_THRESHOLD stops at 32 MiB on 64-bit systems, and blocks above it were still
    // mapped and unmapped on every allocation: an estimator's probe and product blocks (d x 50
    // for the MNIST MLP: 54 MB each) are allocated per call, and re-faulting them made 100 probes
    // in blocks of 50 take 300 ms against 164 ms in blocks of 20; with no mappings, 161 ms.
    bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
    ok = mallopt(M_MMAP_MAX, 0) == 1 && ok;
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
