// Hutchinson trace and diagonal with 100 Rademacher probes on the Hessian (the peer's W4, W5), the
// diagonal S_R estimator (000 eq. 4: Hutchinson H diagonal plus the exact Fisher diagonal), and
// probe blocks against one probe at a time. The trace and S_R rows take v'Hv from the second-order
// forward mode (no backward pass); the via_hvp rows the same estimator from exact HVPs. The
// exact_diag rows: hessian_diagonal, exact for these piecewise-linear (ReLU) networks. MNIST MLP
// at B = 128 and 1024, TinyCNN at B = 128, float32; argument: threads. Counters: GFLOP/s of the
// GEMM work of 100 HVPs as the peer counts them (so rows compare by time), and the cost in gradient
// evaluations of the same model and batch ("grads").
#include <benchmark/benchmark.h>

#include "common.hpp"

using namespace bench;

namespace {

enum class Work { Trace, TraceViaHvp, Diagonal, ExactDiagonal, RiemannianDiagonal };

/// The Hessian operator seen only through apply(): Hutchinson then takes v'(H v) from exact HVPs
/// instead of the second-order forward mode (the comparison for the trace rows).
template <class Op>
struct ApplyOnly {
  using Scalar = typename Op::Scalar;
  Op* op;
  Index dim() const { return op->dim(); }
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) { op->apply(v, out); }
};

constexpr Index kProbes = 100;

void run(benchmark::State& state, Work w, bool cnn, Index n, Index block) {
  const int threads = static_cast<int>(state.range(0));
  auto m = make_model(cnn, threads);
  const Batch b = make_batch(m.input_size(), n, 10);
  loss::CrossEntropy<T> ce;
  const double grad_ms = median_ms([&] { benchmark::DoNotOptimize(loss_and_gradient(m, ce, b.x, b.y)); });
  HessianOperator hop(m, ce, b.x, b.y);
  HutchinsonOptions o;
  o.max_probes = kProbes;
  o.block_size = block;
  o.seed = 7;
  auto work = [&](const HutchinsonOptions& opt) {
    switch (w) {
      case Work::Trace: benchmark::DoNotOptimize(hutchinson_trace(hop, opt)); break;
      case Work::TraceViaHvp: {
        ApplyOnly<decltype(hop)> plain{&hop};
        benchmark::DoNotOptimize(hutchinson_trace(plain, opt));
        break;
      }
      case Work::Diagonal: benchmark::DoNotOptimize(hutchinson_diagonal(hop, opt)); break;
      case Work::ExactDiagonal: benchmark::DoNotOptimize(hessian_diagonal(m, ce, b.x, b.y)); break;
      case Work::RiemannianDiagonal: {
        const Vector<T> f = fisher_diagonal(m, ce, b.x, b.y);
        benchmark::DoNotOptimize(riemannian_sharpness_diagonal(hop, f, T(1e-6), opt));
        break;
      }
    }
  };
  // Warm-up: one whole untimed call, so the model's buffers for a block exist and are paged in and
  // the allocator has settled on where a call's probe and product blocks live, as in the peer's
  // figures (medians of repeated calls in one process). Without it the first timed iteration pays
  // the first touch of those buffers: on the 2-core VM of 2026-12-02, ~12 us per 4 KB page, the
  // MLP diagonal's first iteration took 411 ms against 279 ms for the next ones.
  work(o);
  double total_ms = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    work(o);
    total_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(kProbes * hvp_mflop(cnn, n) * 1e6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["grads"] = total_ms / static_cast<double>(state.iterations()) / grad_ms;
  state.counters["threads"] = threads;
}

}  // namespace

#define CURVATURE_BENCH(name, ...) \
  BENCHMARK_CAPTURE(run, name, __VA_ARGS__)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()

CURVATURE_BENCH(W4_trace100_mlp_b128, Work::Trace, false, 128, 20);
CURVATURE_BENCH(W4_trace100_mlp_b1024, Work::Trace, false, 1024, 20);
CURVATURE_BENCH(W4_trace100_cnn_b128, Work::Trace, true, 128, 20);
CURVATURE_BENCH(W4_trace100_via_hvp_mlp_b128, Work::TraceViaHvp, false, 128, 20);
CURVATURE_BENCH(W4_trace100_via_hvp_mlp_b1024, Work::TraceViaHvp, false, 1024, 20);
CURVATURE_BENCH(W4_trace100_via_hvp_cnn_b128, Work::TraceViaHvp, true, 128, 20);
CURVATURE_BENCH(W4_trace100_one_probe_at_a_time_mlp_b128, Work::Trace, false, 128, 1);
CURVATURE_BENCH(W4_trace100_one_probe_at_a_time_cnn_b128, Work::Trace, true, 128, 1);
CURVATURE_BENCH(W5_diag100_mlp_b128, Work::Diagonal, false, 128, 20);
CURVATURE_BENCH(W5_diag100_mlp_b1024, Work::Diagonal, false, 1024, 20);
CURVATURE_BENCH(W5_diag100_cnn_b128, Work::Diagonal, true, 128, 20);
CURVATURE_BENCH(W5_diag100_one_probe_at_a_time_mlp_b128, Work::Diagonal, false, 128, 1);
CURVATURE_BENCH(W5_diag100_one_probe_at_a_time_cnn_b128, Work::Diagonal, true, 128, 1);
CURVATURE_BENCH(W5_exact_diag_mlp_b128, Work::ExactDiagonal, false, 128, 20);
CURVATURE_BENCH(W5_exact_diag_mlp_b1024, Work::ExactDiagonal, false, 1024, 20);
CURVATURE_BENCH(W5_exact_diag_cnn_b128, Work::ExactDiagonal, true, 128, 20);
CURVATURE_BENCH(SR_diag100_mlp_b128, Work::RiemannianDiagonal, false, 128, 20);
CURVATURE_BENCH(SR_diag100_mlp_b1024, Work::RiemannianDiagonal, false, 1024, 20);
CURVATURE_BENCH(SR_diag100_cnn_b128, Work::RiemannianDiagonal, true, 128, 20);

BENCHMARK_MAIN();
