// The machine's GEMM rate with the product the library uses (Eigen, or BLAS when the build routes
// Eigen's products to it through curvature::blas), for the "% of GEMM peak" of every report, and
// the layer-shaped products of the MNIST MLP and of TinyCNN's convolutions (im2col rows x C*k*k
// times C*k*k x Cout: 131072 x 27 x 16 and 32768 x 144 x 32) at B = 128.
#include <benchmark/benchmark.h>

#include <curvature/curvature.hpp>

using namespace curvature;

static void gemm(benchmark::State& state) {
  const Index m = state.range(0), k = state.range(1), n = state.range(2);
  Matrix<float> a = Matrix<float>::Random(m, k), b = Matrix<float>::Random(k, n), c(m, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * k * n, benchmark::Counter::kIsIterationInvariantRate);
#if defined(EIGEN_USE_BLAS)
  state.SetLabel("BLAS");
#else
  state.SetLabel("Eigen");
#endif
}
// m x k times k x n. Also the shapes of the one-off comparison in benchmarks/README.md (fourth
// session): 128x784x256, TinyCNN's Linear(2048, 128) with 20 probe replicas stacked (2560x2048x128)
// and its weight-gradient shape (2048x128x128), and the MLP's first layer for 20 replicas.
BENCHMARK(gemm)->Args({1024, 1024, 1024})->Args({256, 784, 128})->Args({256, 128, 784})->Args({256, 256, 128})
    ->Args({128, 784, 256})->Args({2560, 2048, 128})->Args({2048, 128, 128})->Args({2560, 784, 256})
    ->Args({131072, 27, 16})->Args({32768, 144, 32})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
