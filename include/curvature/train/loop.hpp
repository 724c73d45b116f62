#pragma once
// The training loop: epochs of shuffled mini-batches, one loss-and-gradient pass and one
// optimizer step per batch, running train loss and accuracy, epoch-end callbacks that may stop
// training, .npy checkpoints of the flat parameters, and evaluation in chunks (docs/training.md).
//
// What a model needs: the Model concept plus `mutable_params()` returning Vector<T>& (the
// optimizer updates the parameters in place through it). When the model also has
// `set_training(bool)` (BatchNorm), batches run in training mode and evaluate() in eval mode;
// with `training()` as well, the previous mode is restored afterwards.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/io/npy.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/optim/schedule.hpp"
#include "curvature/optim/sgd.hpp"
#include "curvature/train/progress.hpp"

namespace curvature::train {

/// A model the loop can train: parameters writable in place through mutable_params().
template <class M>
concept TrainableModel = Model<M> && requires(M& m) {
  { m.mutable_params() } -> std::same_as<Vector<scalar_of<M>>&>;
};

/// Training diverged: the loss or the gradient of a batch is NaN or Inf. Carries where it
/// happened and the last finite loss.
class DivergenceError : public Error {
 public:
  DivergenceError(const std::string& what, Index epoch_, Index batch_, Index step_, double last_finite_loss_)
      : Error(what), epoch(epoch_), batch(batch_), step(step_), last_finite_loss(last_finite_loss_) {}
  Index epoch;              ///< 1-based
  Index batch;              ///< 1-based, within the epoch
  Index step;               ///< 1-based optimizer step of this run
  double last_finite_loss;  ///< NaN when no batch had a finite loss
};

/// How to train. Epochs are numbered from 1; `start_epoch` epochs count as already done (to
/// resume from a checkpoint: same shuffles, same schedule, same file names as an unbroken run).
struct TrainOptions {
  Index epochs = 1;                      ///< epochs to run, >= 1
  Index batch_size = 128;                ///< in [1, data set size]
  std::uint64_t seed = 0;                ///< shuffling: data::BatchSampler(n, batch_size, seed)
  bool drop_last = false;                ///< drop the last, short batch of each epoch
  Index start_epoch = 0;                 ///< epochs already done (resume), >= 0
  std::vector<Index> checkpoint_epochs;  ///< save the parameters after these (1-based) epochs
  std::string checkpoint_dir;            ///< folder of the checkpoints (created when missing)
  std::string checkpoint_prefix = "params";  ///< file <dir>/<prefix>_epoch_<E>.npy
  bool checkpoint_optimizer = false;     ///< also optimizer.save_state(optimizer_checkpoint_prefix(...))
  ProgressMode progress = ProgressMode::Auto;  ///< the in-place line (Auto: only on a terminal)
  bool epoch_summary = false;            ///< one line per epoch, terminal or not
  std::FILE* log = nullptr;              ///< stream of both (nullptr: stderr)
};

/// The end of an epoch, as callbacks and the history see it.
struct EpochReport {
  Index epoch = 0;            ///< 1-based
  Index epochs = 0;           ///< the last epoch of the run (start_epoch + epochs)
  double train_loss = 0;      ///< mean loss over the epoch's samples, each at its batch's pre-step parameters
  double train_accuracy = 0;  ///< fraction of the epoch's samples classified right, likewise
  double lr = 0;              ///< lr of the epoch's last step
  double seconds = 0;         ///< wall-clock time of the epoch (callbacks of earlier epochs excluded)
  Index steps = 0;            ///< optimizer steps of this run so far
  bool complete = true;       ///< false when an on_step callback stopped training inside it
};

/// One optimizer step, as on_step sees it (after the update).
struct StepReport {
  Index epoch = 0, batch = 0, batches = 0;  ///< 1-based epoch and batch, batches per epoch
  Index step = 0;                           ///< optimizer steps of this run so far
  double loss = 0, accuracy = 0;            ///< of this batch, before the update
  double lr = 0;
};

enum class Control { Continue, Stop };

/// Hooks: every epoch-end callback runs in order after the checkpoint; training stops after the
/// epoch when one returns Stop. on_step runs after every step; Stop ends training at once.
template <class M>
struct Callbacks {
  std::vector<std::function<Control(const EpochReport&, M&)>> on_epoch_end;
  std::function<Control(const StepReport&, M&)> on_step;
};

struct TrainResult {
  std::vector<EpochReport> history;  ///< one report per epoch run (the last may be incomplete)
  Index steps = 0;                   ///< optimizer steps taken
  double seconds = 0;
  bool stopped = false;              ///< a callback asked to stop
};

/// Mean loss and accuracy of a model on a data set.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  Index samples = 0;
};

/// The checkpoint file of epoch `epoch`: <dir>/<prefix>_epoch_<epoch>.npy.
inline std::string checkpoint_path(const std::string& dir, const std::string& prefix, Index epoch) {
  return (std::filesystem::path(dir) / curvature::detail::cat(prefix, "_epoch_", epoch, ".npy")).string();
}

/// The optimizer-state prefix saved next to it with checkpoint_optimizer:
/// <dir>/<prefix>_epoch_<epoch>.optimizer (pass it to the optimizer's load_state).
inline std::string optimizer_checkpoint_prefix(const std::string& dir, const std::string& prefix, Index epoch) {
  return (std::filesystem::path(dir) / curvature::detail::cat(prefix, "_epoch_", epoch, ".optimizer")).string();
}

namespace detail {

using curvature::detail::cat;

template <class L>
inline constexpr bool labels_loss = std::same_as<typename L::Targets, data::Labels>;

/// Number of columns of f whose largest entry (the first, on ties) is at row y[i].
template <class T>
Index count_correct(const Matrix<T>& f, const data::Labels& y) {
  Index correct = 0;
  for (Index i = 0; i < f.cols(); ++i) {
    Index k = 0;
    f.col(i).maxCoeff(&k);
    correct += k == y[static_cast<std::size_t>(i)];
  }
  return correct;
}

/// Puts a model in training or eval mode when it has set_training(bool); restores the previous
/// mode on destruction when it also has training().
template <class M>
class ModeGuard {
 public:
  ModeGuard(M& m, bool training) : m_(m) {
    if constexpr (requires { m.training(); }) prev_ = m.training();
    if constexpr (requires { m.set_training(training); }) m.set_training(training);
  }
  ~ModeGuard() {
    if constexpr (requires { m_.training(); m_.set_training(true); }) m_.set_training(prev_);
  }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  M& m_;
  bool prev_ = false;
};

template <Scalar T>
struct BatchResult {
  T loss = 0;
  Vector<T> gradient;
  Index correct = 0;
};

/// loss_and_gradient (model/derivatives.hpp) with the same operations in the same order, plus
/// the number of correct predictions read from the outputs of the same forward pass.
template <class M, class L>
BatchResult<scalar_of<M>> loss_gradient_correct(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                const data::Labels& y) {
  using T = scalar_of<M>;
  curvature::detail::check_batch(m, loss, x, y, "train");
  BatchResult<T> r;
  if constexpr (PerSampleModel<M>) {
    m.backward(x, [&](const Matrix<T>& f) {
      r.loss = loss.values(f, y).mean();
      r.correct = count_correct(f, y);
      return Matrix<T>(loss.gradient(f, y));
    }, Reduction::Sum, r.gradient, T(1) / static_cast<T>(x.cols()));
  } else {
    const Matrix<T> f = m.forward(x);
    r.loss = loss.values(f, y).mean();
    r.correct = count_correct(f, y);
    r.gradient = m.vjp(x, loss.gradient(f, y) / static_cast<T>(x.cols()));
  }
  return r;
}

inline void check_options(const TrainOptions& o, Index n) {
  CURVATURE_CHECK_VALUE(o.epochs >= 1, "train: epochs must be >= 1, got ", o.epochs);
  CURVATURE_CHECK_VALUE(o.start_epoch >= 0, "train: start_epoch must be >= 0, got ", o.start_epoch);
  CURVATURE_CHECK_VALUE(o.batch_size >= 1 && o.batch_size <= n, "train: batch_size ", o.batch_size,
                        " must be in [1, ", n, "] (the training set size)");
  for (Index e : o.checkpoint_epochs)
    CURVATURE_CHECK_VALUE(e > o.start_epoch && e <= o.start_epoch + o.epochs, "train: checkpoint epoch ", e,
                          " is outside the epochs of this run, [", o.start_epoch + 1, ", ",
                          o.start_epoch + o.epochs, "]");
  CURVATURE_CHECK_VALUE(o.checkpoint_epochs.empty() || !o.checkpoint_dir.empty(),
                        "train: checkpoint_epochs given but checkpoint_dir is empty");
}

inline std::string epoch_summary(const EpochReport& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "epoch %lld/%lld: train loss %.4f, accuracy %.4f, lr %.4g, %.2f s%s",
                static_cast<long long>(r.epoch), static_cast<long long>(r.epochs), r.train_loss, r.train_accuracy,
                r.lr, r.seconds, r.complete ? "" : " (stopped inside the epoch)");
  return buf;
}

/// One run of train(): the state shared by its epochs and steps.
template <class M, class L, class O, class S>
class Run {
 public:
  using T = scalar_of<M>;

  Run(M& m, const L& loss, O& opt, const S& sched, const data::Dataset<T>& d, const TrainOptions& o,
      const Callbacks<M>& cb)
      : m_(m), loss_(loss), opt_(opt), sched_(sched), d_(d), o_(o), cb_(cb),
        sampler_(d.size(), o.batch_size, o.seed, o.drop_last), display_(o.progress, o.log ? o.log : stderr) {}

  TrainResult run() {
    const auto t0 = std::chrono::steady_clock::now();
    ModeGuard<M> guard(m_, true);
    for (Index e = o_.start_epoch; e < o_.start_epoch + o_.epochs && !res_.stopped; ++e) {
      const EpochReport r = epoch(e);
      res_.history.push_back(r);
      if (r.complete) end_epoch(r);
      else emit_summary(r);
    }
    res_.seconds = seconds_since(t0);
    return res_;
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

  /// Epoch e (0-based); returns its report.
  EpochReport epoch(Index e) {
    const auto t0 = std::chrono::steady_clock::now();
    if constexpr (requires { m_.set_training(true); }) m_.set_training(true);  // a callback may have changed it
    sampler_.start_epoch(e);
    const Index nb = sampler_.batches();
    EpochReport r{e + 1, o_.start_epoch + o_.epochs, 0, 0, 0, 0, 0, true};
    double loss_sum = 0;
    Index correct = 0, seen = 0;
    for (Index b = 0; b < nb; ++b) {
      r.lr = sched_.lr(e, b, nb);
      const BatchResult<T> br = step(e, b, nb, r.lr);
      const Index len = static_cast<Index>(sampler_.batch(b).size());
      loss_sum += double(br.loss) * double(len);
      correct += br.correct;
      seen += len;
      show(e, b + 1, nb, loss_sum / double(seen), double(correct) / double(seen), r.lr);
      if (cb_.on_step && cb_.on_step(StepReport{e + 1, b + 1, nb, res_.steps, double(br.loss),
                                                double(br.correct) / double(len), r.lr}, m_) == Control::Stop) {
        res_.stopped = true;
        r.complete = false;
        break;
      }
    }
    r.train_loss = loss_sum / double(seen);
    r.train_accuracy = double(correct) / double(seen);
    r.seconds = seconds_since(t0);
    r.steps = res_.steps;
    return r;
  }

  /// Batch b of epoch e: gradient, divergence checks, optimizer step.
  BatchResult<T> step(Index e, Index b, Index nb, double lr) {
    data::gather(d_, sampler_.batch(b), x_, y_);
    BatchResult<T> br = loss_gradient_correct(m_, loss_, x_, y_);
    const bool loss_ok = std::isfinite(br.loss);
    if (!loss_ok || !all_finite(br.gradient)) {
      display_.clear();
      const std::string what = loss_ok ? cat("the gradient is not finite (the loss is ", br.loss, ")")
                                       : cat("the loss is ", br.loss);
      const std::string last = std::isnan(last_loss_) ? std::string("no earlier batch of this run had a finite loss")
                                                      : cat("the last finite loss was ", last_loss_);
      throw DivergenceError(cat("train: ", what, " at epoch ", e + 1, ", batch ", b + 1, "/", nb, " (step ",
                                res_.steps + 1, ", lr ", lr, "); ", last,
                                ". Lower the learning rate or check the data"),
                            e + 1, b + 1, res_.steps + 1, last_loss_);
    }
    last_loss_ = double(br.loss);
    try {
      opt_.step(m_.mutable_params(), br.gradient, T(lr));
    } catch (const optim::OverflowError& err) {  // an update that overflowed is divergence too
      display_.clear();
      throw DivergenceError(cat("train: the update at epoch ", e + 1, ", batch ", b + 1, "/", nb, " (step ",
                                res_.steps + 1, ") overflowed: ", err.what()),
                            e + 1, b + 1, res_.steps + 1, last_loss_);
    }
    ++res_.steps;
    return br;
  }

  void show(Index e, Index batch, Index nb, double loss, double acc, double lr) {
    if (!display_.enabled()) return;
    const double planned = double(o_.epochs * nb), done = double(res_.steps);
    const double eta = seconds_since(start_) / done * (planned - done);
    display_.update(ProgressState{e + 1, o_.start_epoch + o_.epochs, batch, nb, loss, acc, lr, eta}, batch == nb);
  }

  void emit_summary(const EpochReport& r) {
    if (o_.epoch_summary) {
      display_.clear();
      std::FILE* f = display_.stream();
      std::fprintf(f, "%s\n", epoch_summary(r).c_str());
      std::fflush(f);
    } else {
      display_.finish_line();
    }
  }

  void end_epoch(const EpochReport& r) {
    if (std::find(o_.checkpoint_epochs.begin(), o_.checkpoint_epochs.end(), r.epoch) != o_.checkpoint_epochs.end())
      checkpoint(r.epoch);
    emit_summary(r);
    for (const auto& f : cb_.on_epoch_end)
      if (f && f(r, m_) == Control::Stop) res_.stopped = true;
  }

  void checkpoint(Index epoch) {
    std::error_code ec;
    std::filesystem::create_directories(o_.checkpoint_dir, ec);
    if (ec)
      throw IoError(cat("train: cannot create the checkpoint folder '", o_.checkpoint_dir, "': ", ec.message()));
    const Vector<T>& p = m_.params();
    io::save_npy(checkpoint_path(o_.checkpoint_dir, o_.checkpoint_prefix, epoch), p);
    if constexpr (requires { opt_.save_state(std::string()); }) {
      if (o_.checkpoint_optimizer)
        opt_.save_state(optimizer_checkpoint_prefix(o_.checkpoint_dir, o_.checkpoint_prefix, epoch));
    }
  }

  M& m_;
  const L& loss_;
  O& opt_;
  const S& sched_;
  const data::Dataset<T>& d_;
  const TrainOptions& o_;
  const Callbacks<M>& cb_;
  data::BatchSampler sampler_;
  ProgressDisplay display_;
  TrainResult res_;
  Matrix<T> x_;
  data::Labels y_;
  double last_loss_ = std::numeric_limits<double>::quiet_NaN();
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace detail

/// Trains `model` on `train_set`: options.epochs epochs of shuffled mini-batches; per batch one
/// forward/backward pass (the mean loss and its gradient, as loss_and_gradient) and one
/// optimizer.step with lr = schedule.lr(epoch, batch, batches). Throws DivergenceError when a
/// batch's loss or gradient is NaN/Inf, ValueError/ShapeError for bad options or data, IoError
/// when a checkpoint cannot be written.
template <TrainableModel M, Loss L, optim::Optimizer O, optim::Schedule S>
TrainResult train(M& model, const L& loss, O& optimizer, const S& schedule,
                  const data::Dataset<scalar_of<M>>& train_set, const TrainOptions& options = {},
                  const Callbacks<M>& callbacks = {}) {
  static_assert(detail::labels_loss<L>, "train needs a classification loss whose targets are class labels "
                                        "(data::Labels), e.g. loss::CrossEntropy");
  static_assert(std::same_as<typename O::scalar_type, scalar_of<M>>,
                "train: the optimizer's scalar type must be the model's (e.g. optim::SGD<float> for a float model)");
  train_set.check("train: train_set");
  detail::check_options(options, train_set.size());
  if constexpr (!requires { optimizer.save_state(std::string()); })
    CURVATURE_CHECK_VALUE(!options.checkpoint_optimizer,
                          "train: checkpoint_optimizer is set but the optimizer has no save_state(prefix)");
  return detail::Run<M, L, O, S>(model, loss, optimizer, schedule, train_set, options, callbacks).run();
}

/// Mean loss and accuracy of `model` on `d`, from forward passes over chunks of `chunk` samples
/// (in eval mode when the model has set_training). Accuracy: argmax of the outputs (first on ties).
template <Model M, Loss L>
Evaluation evaluate(M& model, const L& loss, const data::Dataset<scalar_of<M>>& d, Index chunk = 1024) {
  using T = scalar_of<M>;
  static_assert(detail::labels_loss<L>, "evaluate needs a classification loss whose targets are class labels "
                                        "(data::Labels), e.g. loss::CrossEntropy");
  CURVATURE_CHECK_VALUE(chunk >= 1, "evaluate: chunk must be >= 1, got ", chunk);
  CURVATURE_CHECK_VALUE(d.size() >= 1, "evaluate: the data set '", d.name, "' is empty");
  d.check("evaluate: dataset");
  detail::ModeGuard<M> guard(model, false);
  double loss_sum = 0;
  Index correct = 0;
  Matrix<T> x;
  data::Labels y;
  for (Index b = 0; b < d.size(); b += chunk) {
    const Index len = std::min(chunk, d.size() - b);
    x = d.x.middleCols(b, len);
    y.assign(d.y.begin() + b, d.y.begin() + b + len);
    const Matrix<T> f = model.forward(x);
    loss_sum += loss.values(f, y).template cast<double>().sum();
    correct += detail::count_correct(f, y);
  }
  return {loss_sum / double(d.size()), double(correct) / double(d.size()), d.size()};
}

}  // namespace curvature::train
