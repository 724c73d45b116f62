#pragma once
// What the benchmark programs share: the papers' networks at float32 on the OpenMP backend, a fixed
// random batch, and the GEMM work the PyTorch peer counts per workload (its `flops` table).
#include <algorithm>
#include <chrono>
#include <vector>

#include <curvature/curvature.hpp>

namespace bench {

using namespace curvature;
using T = float;
using B = backend::OpenMP;

struct Batch {
  Matrix<T> x;
  std::vector<std::int64_t> y;
};

inline Batch make_batch(Index dim, Index n, std::uint64_t seed) {
  Rng rng(seed);
  Batch b{Matrix<T>(dim, n), std::vector<std::int64_t>(n)};
  for (Index k = 0; k < b.x.size(); ++k) b.x.data()[k] = rng.normal<T>();
  for (auto& v : b.y) v = static_cast<std::int64_t>(rng.below(10));
  return b;
}

/// The MNIST MLP 784-256-256-10 or TinyCNN on 3x32x32, PyTorch initialisation.
inline nn::Sequential<T, B> make_model(bool cnn, int threads) {
  if (cnn) return nn::tiny_cnn<T, B>(nn::Shape{3, 32, 32}, 1, B{threads});
  return nn::mnist_mlp<T, B>(0, B{threads});
}

/// GEMM MFLOP of one gradient and one HVP as the peer counts them at B = 128 (linear in B).
inline double gradient_mflop(bool cnn, Index n) { return (cnn ? 1334.8 : 155.1) * static_cast<double>(n) / 128; }
inline double hvp_mflop(bool cnn, Index n) { return (cnn ? 3891.0 : 362.0) * static_cast<double>(n) / 128; }

/// Median wall time of f in milliseconds over `reps` calls (after one warm-up call).
template <class F>
double median_ms(F&& f, int reps = 5) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace bench
