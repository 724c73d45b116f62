// Differentiation core on the papers' networks, float32, against the PyTorch peer's workloads
// (../shared/peer, W1-W3, W6). Argument: threads. Counters: GFLOP/s of the GEMM work the peer
// counts for the same workload (its `flops` table), so rates compare directly.
#include <benchmark/benchmark.h>

#include "common.hpp"

using namespace bench;

namespace {

enum class Work { Gradient, Hvp, PerSample, EmpiricalFisher, TrueFisher };

// GEMM MFLOP of the peer's workload (torch_peer.py flops table): MLP / CNN at B = 128.
double peer_mflop(Work w, bool cnn) {
  switch (w) {
    case Work::Gradient: return gradient_mflop(cnn, 128);
    case Work::Hvp: return hvp_mflop(cnn, 128);
    case Work::PerSample: return cnn ? 1334.8 : 86.0;
    case Work::EmpiricalFisher: return gradient_mflop(cnn, 128);
    case Work::TrueFisher: return cnn ? 2669.6 : 312.0;
  }
  return 0;
}

void run(benchmark::State& state, Work w, bool cnn) {
  const int threads = static_cast<int>(state.range(0));
  auto m = make_model(cnn, threads);
  const Batch b = make_batch(m.input_size(), 128, 10);
  loss::CrossEntropy<T> ce;
  Rng rng(123);
  Matrix<T> v(m.num_params(), 1), out;
  for (Index k = 0; k < v.size(); ++k) v.data()[k] = rng.rademacher<T>();
  auto work = [&] {
    switch (w) {
      case Work::Gradient: benchmark::DoNotOptimize(loss_and_gradient(m, ce, b.x, b.y)); break;
      case Work::Hvp: benchmark::DoNotOptimize(hvp(m, ce, b.x, b.y, v)); break;
      case Work::PerSample: per_sample_gradients(m, ce, b.x, b.y, out); break;
      case Work::EmpiricalFisher: benchmark::DoNotOptimize(empirical_fisher_diagonal(m, ce, b.x, b.y)); break;
      case Work::TrueFisher: benchmark::DoNotOptimize(fisher_diagonal(m, ce, b.x, b.y)); break;
    }
    benchmark::ClobberMemory();
  };
  // Warm-up, untimed: the model's buffers and `out` exist and are paged in, as the peer's are (it
  // times after warm-up runs). Each repetition builds a fresh model; on a VM where a first touch
  // costs ~11 us per 4 KB page, the 137 MB of MLP per-sample gradients took 400-480 ms in the
  // first iteration against 5-7 ms warm, and that single iteration was the whole measurement.
  work();
  for (auto _ : state) work();
  state.counters["GFLOP/s"] =
      benchmark::Counter(peer_mflop(w, cnn) * 1e6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
}

}  // namespace

#define CURVATURE_BENCH(name, work, cnn) \
  BENCHMARK_CAPTURE(run, name, work, cnn)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()

CURVATURE_BENCH(W1_grad_mlp_b128, Work::Gradient, false);
CURVATURE_BENCH(W3_hvp_mlp_b128, Work::Hvp, false);
CURVATURE_BENCH(W2_psg_prealloc_mlp_b128, Work::PerSample, false);
CURVATURE_BENCH(W6_efisher_mlp_b128, Work::EmpiricalFisher, false);
CURVATURE_BENCH(W6_tfisher_mlp_b128, Work::TrueFisher, false);

CURVATURE_BENCH(W1_grad_cnn_b128, Work::Gradient, true);

CURVATURE_BENCH(W3_hvp_cnn_b128, Work::Hvp, true);

CURVATURE_BENCH(W2_psg_prealloc_cnn_b128, Work::PerSample, true);

CURVATURE_BENCH(W6_efisher_cnn_b128, Work::EmpiricalFisher, true);

CURVATURE_BENCH(W6_tfisher_cnn_b128, Work::TrueFisher, true);

BENCHMARK_MAIN();
