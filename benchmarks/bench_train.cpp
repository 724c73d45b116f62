// Issue 4's performance figures: one epoch of the MNIST MLP (784-256-256-10) on the 60,000
// Fashion-MNIST training images at B = 128 (plain SGD, float32), and the time to measure S_R at a
// checkpoint with paper 000's protocol (Hutchinson H diagonal with 100 probes on 1024 samples plus
// the MC Fisher diagonal over N_b = 30 batches of 128). Argument: threads. Without the data set
// (Debian package dataset-fashion-mnist) the synthetic task is enlarged to 60,000 samples.
#include <benchmark/benchmark.h>

#include "common.hpp"

using namespace bench;

namespace {

const data::Dataset<T>& train_set() {
  static const data::Dataset<T> d = [] {
    data::DataOptions o;
    if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist") && !std::getenv("CURVATURE_DATA")) {
      o.kind = "synthetic";
      o.synthetic.n_train = 60000;
    }
    data::Split<T> s = data::load_dataset<T>(o);
    std::fprintf(stderr, "bench_train: %s, %ld samples\n", s.train.name.c_str(), static_cast<long>(s.train.size()));
    return std::move(s.train);
  }();
  return d;
}

void epoch_mlp(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const auto& d = train_set();
  auto m = nn::mnist_mlp<T, B>(0, B{threads});
  loss::CrossEntropy<T> ce;
  optim::SGD<T> opt;
  train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 128;
  o.progress = train::ProgressMode::Off;
  for (auto _ : state) benchmark::DoNotOptimize(train::train(m, ce, opt, optim::Constant(0.01), d, o));
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(d.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
}

void sharpness_checkpoint_mlp(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const auto& d = train_set();
  auto m = nn::mnist_mlp<T, B>(0, B{threads});
  loss::CrossEntropy<T> ce;
  {  // a trained-ish checkpoint: one epoch of SGD
    optim::SGD<T> opt;
    train::TrainOptions o;
    o.progress = train::ProgressMode::Off;
    train::train(m, ce, opt, optim::Constant(0.01), d, o);
  }
  train::SharpnessProtocol p;  // N_b = 30 x 128, 100 probes on 1024 samples, MC Fisher
  double fisher_s = 0, hessian_s = 0;
  for (auto _ : state) {
    const auto r = train::measure_sharpness(m, ce, d, p);
    fisher_s += r.seconds_fisher;
    hessian_s += r.seconds_hessian;
    benchmark::DoNotOptimize(r.riemannian.value);
  }
  const double it = static_cast<double>(state.iterations());
  state.counters["fisher_ms"] = 1e3 * fisher_s / it;
  state.counters["hessian_ms"] = 1e3 * hessian_s / it;
  state.counters["threads"] = threads;
}

}  // namespace

BENCHMARK(epoch_mlp)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(sharpness_checkpoint_mlp)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

BENCHMARK_MAIN();
