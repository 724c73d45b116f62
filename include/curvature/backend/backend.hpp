#pragma once
// Backends are types that supply a few primitives (loops and products); every algorithm of the
// library is written once against the Backend concept.
#include <concepts>

#include "curvature/backend/openmp.hpp"
#include "curvature/backend/serial.hpp"
#include "curvature/core/types.hpp"

namespace curvature {

/// What a backend supplies: a thread count, a chunked parallel loop and a product
/// `gemm(C, A, B, alpha, accumulate)` on Eigen expressions.
template <class B>
concept Backend = std::copyable<B> && requires(const B& b, Matrix<float>& c, const Matrix<float>& m) {
  { B::name } -> std::convertible_to<const char*>;
  { b.threads() } -> std::convertible_to<int>;
  b.parallel_for(Index{1}, [](Index, Index) {});
  b.gemm(c, m, m, 1.0f, false);
};

/// A backend that can make a copy of itself on a given number of threads, `b.with_threads(n)`.
/// Sequential then runs the batch shards of a pass concurrently, one thread each; without it,
/// one after the other on the whole backend (the same results either way).
template <class B>
concept ThreadedBackend = Backend<B> && requires(const B& b) {
  { b.with_threads(1) } -> std::same_as<B>;
};

static_assert(Backend<backend::Serial>);
static_assert(Backend<backend::OpenMP>);
static_assert(ThreadedBackend<backend::Serial> && ThreadedBackend<backend::OpenMP>);

/// The backend used when none is named: OpenMP when the build has it, serial otherwise.
#if defined(_OPENMP)
using DefaultBackend = backend::OpenMP;
#else
using DefaultBackend = backend::Serial;
#endif

}  // namespace curvature
