// The training loop: learning a separable task, the per-batch pass against loss_and_gradient,
// evaluate() against a direct computation, callbacks, checkpoints and resuming, divergence.
#include <catch2/catch.hpp>

#include <filesystem>
#include <limits>
#include <numbers>
#include <cmath>

#include "curvature/backend/serial.hpp"
#include "curvature/io/npy.hpp"
#include "curvature/loss/cross_entropy.hpp"
#include "curvature/nn/builders.hpp"
#include "curvature/optim/optim.hpp"
#include "curvature/train/train.hpp"
#include "train/fixtures.hpp"

using namespace curvature;
using Catch::Matchers::Contains;
using Catch::Matchers::WithinRel;
using D = double;
using Net = nn::Sequential<D, backend::Serial>;

namespace {

Net small_mlp(std::uint64_t seed = 1) { return nn::mlp<D, backend::Serial>(2, {16}, 4, "relu", seed); }

/// A linear softmax classifier written against the Model concept alone (no nn::Sequential, no
/// per-sample backward): f = W x + b, theta = [vec(W) (column-major); b]. Its outputs or its
/// gradient can be poisoned with a NaN to simulate divergence.
struct LinearModel {
  using scalar_type = D;
  Index in = 2, out = 4;
  Vector<D> theta = Vector<D>::Constant(12, 0.01);
  bool nan_outputs = false, nan_gradient = false;

  Index num_params() const { return theta.size(); }
  const Vector<D>& params() const { return theta; }
  Vector<D>& mutable_params() { return theta; }
  Matrix<D> forward(const Matrix<D>& x) {
    Matrix<D> f = (ConstMatrixMap<D>(theta.data(), out, in) * x).colwise() + theta.tail(out);
    if (nan_outputs) f(0, 0) = std::numeric_limits<D>::quiet_NaN();
    return f;
  }
  Vector<D> vjp(const Matrix<D>& x, const Matrix<D>& df) {
    Vector<D> g(theta.size());
    MatrixMap<D>(g.data(), out, in) = df * x.transpose();
    g.tail(out) = df.rowwise().sum();
    if (nan_gradient) g[3] = std::numeric_limits<D>::infinity();
    return g;
  }
};
static_assert(train::TrainableModel<LinearModel> && !PerSampleModel<LinearModel>);
static_assert(train::TrainableModel<Net>);

std::filesystem::path fresh_dir(const char* name) {
  const auto dir = std::filesystem::temp_directory_path() / name;
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace

TEST_CASE("A short run on Gaussian blobs reaches 98% held-out accuracy", "[train][loop]") {
  const auto train_set = testing::blobs<D>(800, 2, 4, 1, 4.0);
  const auto test_set = testing::blobs<D>(400, 2, 4, 2, 4.0);
  Net model = small_mlp();
  const loss::CrossEntropy<D> ce;
  const train::Evaluation before = train::evaluate(model, ce, test_set);
  optim::SGD<D> opt({.momentum = 0.9});
  train::TrainOptions o;
  o.epochs = 4;
  o.batch_size = 32;
  const auto result = train::train(model, ce, opt, optim::CosineAnnealing(0.05, 4), train_set, o);
  const train::Evaluation after = train::evaluate(model, ce, test_set);
  INFO("held-out accuracy " << before.accuracy << " -> " << after.accuracy << ", loss " << before.loss << " -> "
                            << after.loss);
  CHECK(after.accuracy >= 0.98);
  CHECK(after.loss < 0.1);
  REQUIRE(result.history.size() == 4);
  CHECK(result.steps == 100);
  CHECK(opt.steps() == 100);
  for (std::size_t e = 0; e < 4; ++e) {
    CHECK(result.history[e].epoch == Index(e) + 1);
    CHECK(result.history[e].steps == 25 * (Index(e) + 1));
    CHECK(result.history[e].complete);
  }
  CHECK(result.history.back().train_loss < result.history.front().train_loss);
  CHECK(result.history.back().train_accuracy >= 0.98);
  CHECK_THAT(result.history[1].lr, WithinRel(0.025 * (1 + std::cos(std::numbers::pi / 4)), 1e-12));
}

TEST_CASE("Each batch's loss and gradient are loss_and_gradient's, bit for bit", "[train][loop]") {
  const auto d = testing::blobs<D>(64, 2, 4, 3);
  const loss::CrossEntropy<D> ce;
  Net model = small_mlp();
  LinearModel lin;
  const auto a = train::detail::loss_gradient_correct(model, ce, d.x, d.y);
  const auto b = loss_and_gradient(model, ce, d.x, d.y);
  CHECK(a.loss == b.loss);
  CHECK(a.gradient == b.gradient);
  const auto c = train::detail::loss_gradient_correct(lin, ce, d.x, d.y);
  const auto e = loss_and_gradient(lin, ce, d.x, d.y);
  CHECK(c.loss == e.loss);
  CHECK(c.gradient == e.gradient);
  // correct = number of columns whose argmax is the label, counted directly
  const Matrix<D> f = model.forward(d.x);
  Index correct = 0;
  for (Index i = 0; i < f.cols(); ++i) {
    Index best = 0;
    for (Index k = 1; k < f.rows(); ++k)
      if (f(k, i) > f(best, i)) best = k;
    correct += best == d.y[static_cast<std::size_t>(i)];
  }
  CHECK(a.correct == correct);
}

TEST_CASE("evaluate() equals loss_value and an argmax count over the whole set", "[train][evaluate]") {
  const auto d = testing::blobs<D>(250, 2, 4, 4, 1.5, 1.0);  // overlapping: accuracy strictly inside (0, 1)
  const loss::CrossEntropy<D> ce;
  Net model = small_mlp(5);
  const D direct_loss = loss_value(model, ce, d.x, d.y);
  const Matrix<D> f = model.forward(d.x);
  Index correct = 0;
  for (Index i = 0; i < f.cols(); ++i) {
    Index k;
    f.col(i).maxCoeff(&k);
    correct += k == d.y[static_cast<std::size_t>(i)];
  }
  for (Index chunk : {1, 37, 250, 4096}) {
    INFO("chunk " << chunk);
    const auto ev = train::evaluate(model, ce, d, chunk);
    CHECK_THAT(ev.loss, WithinRel(direct_loss, 1e-13));
    CHECK(ev.accuracy == double(correct) / 250.0);
    CHECK(ev.samples == 250);
  }
  CHECK(correct > 0);
  CHECK(correct < 250);
  CHECK_THROWS_WITH(train::evaluate(model, ce, d, 0), Contains("chunk"));
}

TEST_CASE("Callbacks see 1-based epochs and the schedule's lr, and can stop training", "[train][callbacks]") {
  const auto d = testing::blobs<D>(100, 2, 4, 6);
  const loss::CrossEntropy<D> ce;
  Net model = small_mlp();
  optim::SGD<D> opt;
  train::TrainOptions o;
  o.epochs = 5;
  o.batch_size = 30;  // 4 batches, the last of 10 samples
  train::Callbacks<Net> cb;
  std::vector<train::StepReport> steps;
  std::vector<Index> seen;
  cb.on_step = [&](const train::StepReport& s, Net&) {
    steps.push_back(s);
    return train::Control::Continue;
  };
  cb.on_epoch_end.push_back([&](const train::EpochReport& r, Net&) {
    seen.push_back(r.epoch);
    return r.epoch == 3 ? train::Control::Stop : train::Control::Continue;
  });
  cb.on_epoch_end.push_back([&](const train::EpochReport& r, Net&) {
    seen.push_back(100 + r.epoch);  // every callback runs, in order, even when an earlier one stops
    return train::Control::Continue;
  });
  const auto res = train::train(model, ce, opt, optim::StepDecay(0.1, 0.5, 2), d, o, cb);
  CHECK(res.stopped);
  CHECK(res.history.size() == 3);
  CHECK(seen == std::vector<Index>{1, 101, 2, 102, 3, 103});
  REQUIRE(steps.size() == 12);
  CHECK(steps[0].epoch == 1);
  CHECK(steps[0].batch == 1);
  CHECK(steps[0].batches == 4);
  CHECK(steps[11].step == 12);
  CHECK(steps[3].lr == 0.1);
  CHECK(steps[8].lr == 0.05);  // epoch 3: gamma once
  CHECK(res.history[2].lr == 0.05);
  CHECK(res.history[2].epochs == 5);

  SECTION("on_step stops at once, inside the epoch") {
    train::Callbacks<Net> c2;
    c2.on_step = [](const train::StepReport& s, Net&) { return s.step == 6 ? train::Control::Stop : train::Control::Continue; };
    optim::SGD<D> opt2;
    const auto r2 = train::train(model, ce, opt2, optim::Constant(0.1), d, o, c2);
    CHECK(r2.steps == 6);
    REQUIRE(r2.history.size() == 2);
    CHECK(r2.history[1].complete == false);
    CHECK(r2.history[1].steps == 6);
  }
}

TEST_CASE("Checkpoints at chosen epochs load back equal, and resuming reproduces the run", "[train][checkpoint]") {
  const auto dir = fresh_dir("curvature_test_checkpoints");
  const auto d = testing::blobs<D>(90, 2, 4, 7);
  const loss::CrossEntropy<D> ce;
  const optim::Warmup sched(optim::CosineAnnealing(0.1, 3), 5);
  train::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 20;
  o.seed = 9;
  o.checkpoint_epochs = {1, 3};
  o.checkpoint_dir = dir.string();
  o.checkpoint_optimizer = true;

  Net model = small_mlp();
  optim::Adam<D> opt;
  train::Callbacks<Net> cb;
  std::vector<Vector<D>> at_epoch(4);
  cb.on_epoch_end.push_back([&](const train::EpochReport& r, Net& m) {
    at_epoch[static_cast<std::size_t>(r.epoch)] = m.params();
    return train::Control::Continue;
  });
  train::train(model, ce, opt, sched, d, o, cb);
  for (Index e : {1, 3}) {
    const std::string path = train::checkpoint_path(dir.string(), "params", e);
    REQUIRE(std::filesystem::exists(path));
    CHECK(io::load_parameters<D>(path, model.num_params()) == at_epoch[static_cast<std::size_t>(e)]);
  }
  CHECK_FALSE(std::filesystem::exists(train::checkpoint_path(dir.string(), "params", 2)));
  CHECK(at_epoch[3] == model.params());

  // Run 1 epoch, then resume from its checkpoint (parameters and Adam state) for epochs 2-3.
  Net first = small_mlp();
  optim::Adam<D> opt1;
  train::TrainOptions o1 = o;
  o1.epochs = 1;
  o1.checkpoint_epochs = {1};
  o1.checkpoint_prefix = "part";
  train::train(first, ce, opt1, sched, d, o1);
  Net resumed = small_mlp(99);  // different initialisation, overwritten from the checkpoint
  resumed.set_params(io::load_parameters<D>(train::checkpoint_path(dir.string(), "part", 1), resumed.num_params()));
  optim::Adam<D> opt2;
  opt2.load_state(train::optimizer_checkpoint_prefix(dir.string(), "part", 1));
  train::TrainOptions o2 = o;
  o2.start_epoch = 1;
  o2.epochs = 2;
  o2.checkpoint_epochs = {};
  const auto res = train::train(resumed, ce, opt2, sched, d, o2);
  CHECK(res.history.front().epoch == 2);
  CHECK(resumed.params() == at_epoch[3]);
  std::filesystem::remove_all(dir);
}

TEST_CASE("A NaN loss or gradient stops training with DivergenceError naming where", "[train][divergence]") {
  const auto d = testing::blobs<D>(800, 2, 4, 8);
  const loss::CrossEntropy<D> ce;
  train::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 100;  // 8 steps per epoch
  for (bool outputs : {true, false}) {
    INFO((outputs ? "NaN outputs" : "Inf gradient"));
    LinearModel model;
    optim::SGD<D> opt({.momentum = 0.9});
    double loss_at_10 = 0;
    train::Callbacks<LinearModel> cb;
    cb.on_step = [&](const train::StepReport& s, LinearModel& m) {
      if (s.step == 10) {  // epoch 2, batch 2: poison the next batch (epoch 2, batch 3, step 11)
        loss_at_10 = s.loss;
        (outputs ? m.nan_outputs : m.nan_gradient) = true;
      }
      return train::Control::Continue;
    };
    Vector<D> params_at_10;
    try {
      train::train(model, ce, opt, optim::Constant(0.1), d, o, cb);
      FAIL("no DivergenceError");
    } catch (const train::DivergenceError& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK(e.epoch == 2);
      CHECK(e.batch == 3);
      CHECK(e.step == 11);
      CHECK(e.last_finite_loss == loss_at_10);
      CHECK_THAT(msg, Contains("epoch 2") && Contains("batch 3/8") && Contains("step 11") &&
                          Contains("last finite loss"));
      CHECK_THAT(msg, Contains(outputs ? "loss is nan" : "gradient is not finite"));
    }
    CHECK(opt.steps() == 10);
    CHECK(model.theta.allFinite());  // the poisoned step never reached the parameters
  }
}

TEST_CASE("A learning rate far too large ends in DivergenceError, not in NaN parameters", "[train][divergence]") {
  const auto d = testing::blobs<D>(200, 2, 4, 10);
  for (double lr : {1e150, 1e300}) {
    INFO("lr " << lr);
    Net model = small_mlp();
    optim::SGD<D> opt({.momentum = 0.9});
    train::TrainOptions o;
    o.epochs = 5;
    o.batch_size = 20;
    CHECK_THROWS_AS(train::train(model, loss::CrossEntropy<D>(), opt, optim::Constant(lr), d, o),
                    train::DivergenceError);
    CHECK(model.params().allFinite());
  }
  // An update that overflows (lr * g beyond the double range: inputs ~40 give gradients ~10) at
  // the very first step.
  const auto far = testing::blobs<D>(200, 2, 4, 10, 40.0);
  LinearModel lin;
  optim::SGD<D> opt;
  train::TrainOptions o;
  o.batch_size = 20;
  try {
    train::train(lin, loss::CrossEntropy<D>(), opt, optim::Constant(1e308), far, o);
    FAIL("no DivergenceError");
  } catch (const train::DivergenceError& e) {
    CHECK(e.step == 1);
    CHECK(std::isnan(e.last_finite_loss) == false);  // the first batch's loss was finite
    CHECK_THAT(std::string(e.what()), Contains("epoch 1, batch 1/10") && Contains("overflowed"));
  }
  CHECK(lin.theta == Vector<D>::Constant(12, 0.01));
}

TEST_CASE("Bad training options are named", "[train][errors]") {
  const auto d = testing::blobs<D>(40, 2, 4, 9);
  const loss::CrossEntropy<D> ce;
  Net model = small_mlp();
  optim::SGD<D> opt;
  const optim::Constant lr(0.1);
  train::TrainOptions o;
  o.batch_size = 41;
  CHECK_THROWS_WITH(train::train(model, ce, opt, lr, d, o), Contains("batch_size 41") && Contains("[1, 40]"));
  o.batch_size = 10;
  o.epochs = 0;
  CHECK_THROWS_WITH(train::train(model, ce, opt, lr, d, o), Contains("epochs"));
  o.epochs = 2;
  o.checkpoint_epochs = {3};
  o.checkpoint_dir = "unused";
  CHECK_THROWS_WITH(train::train(model, ce, opt, lr, d, o), Contains("checkpoint epoch 3") && Contains("[1, 2]"));
  o.checkpoint_epochs = {2};
  o.checkpoint_dir.clear();
  CHECK_THROWS_WITH(train::train(model, ce, opt, lr, d, o), Contains("checkpoint_dir"));
  auto bad = d;
  bad.y[5] = 7;
  CHECK_THROWS_WITH(train::train(model, ce, opt, lr, bad, train::TrainOptions{}), Contains("label 7"));
  CHECK(opt.steps() == 0);
  CHECK(model.training() == false);  // the previous mode is restored after train()
}
