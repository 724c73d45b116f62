#pragma once
// First-order optimizers on the one flat parameter vector (SPEC 5), and stochastic gradient
// descent with PyTorch's torch.optim.SGD semantics. An optimizer owns its state (momentum or
// moment buffers) and nothing else: `step(params, grad, lr)` takes the learning rate of this step
// from a schedule (optim/schedule.hpp), so the same optimizer serves any schedule.
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"
#include "curvature/io/npy.hpp"

namespace curvature::optim {

/// What the training loop needs of an optimizer: `step(params, grad, lr)` updates params in place
/// (both d-vectors, lr >= 0), `steps()` counts the steps taken, `reset()` forgets all state.
template <class O>
concept Optimizer = Scalar<typename O::scalar_type> &&
    requires(O& o, Vector<typename O::scalar_type>& p, const Vector<typename O::scalar_type>& g,
             typename O::scalar_type lr) {
      o.step(p, g, lr);
      { o.steps() } -> std::convertible_to<Index>;
      o.reset();
    };

namespace detail {

using curvature::detail::cat;

/// Throws ValueError unless v is finite and >= lo (and < hi when hi is given); `fn` names the
/// optimizer, `what` the hyper-parameter.
inline void check_hyper(const char* fn, const char* what, double v, double lo,
                        double hi = std::numeric_limits<double>::infinity(), bool hi_open = false) {
  const bool ok = std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi);
  CURVATURE_CHECK_VALUE(ok, fn, ": ", what, " must be in [", lo, ", ", hi, hi_open ? ")" : "]", ", got ", v);
}

/// Index of the first non-finite entry of v, or -1.
template <class T>
Index first_non_finite(const Vector<T>& v) {
  if (all_finite(v)) return -1;
  for (Index j = 0; j < v.size(); ++j)
    if (!std::isfinite(v[j])) return j;
  return -1;
}

/// The checks every optimizer's step makes before touching anything: matching lengths (also
/// against state sized at an earlier step), a finite lr >= 0 and a finite gradient. `step` is the
/// 1-based number of the step being taken.
template <class T>
void check_step(const char* fn, const Vector<T>& params, const Vector<T>& grad, T lr, Index step,
                Index state_size) {
  CURVATURE_CHECK_SHAPE(params.size() == grad.size(), fn, ": params has ", params.size(), " values but grad has ",
                        grad.size());
  CURVATURE_CHECK_SHAPE(state_size < 0 || state_size == params.size(), fn, ": params has ", params.size(),
                        " values but the optimizer state (from earlier steps) has ", state_size,
                        "; call reset() before optimizing another model");
  CURVATURE_CHECK_VALUE(std::isfinite(lr) && lr >= T(0), fn, ": lr must be finite and >= 0, got ", lr, " at step ",
                        step);
  if (const Index j = first_non_finite(grad); j >= 0)
    throw ValueError(cat(fn, ": the gradient at step ", step, " is not finite (grad[", j, "] = ", grad[j],
                         "); parameters left unchanged"));
}

}  // namespace detail

/// An update would have made a parameter NaN or Inf (the learning rate is far too large). The
/// parameters are left as they were before the step.
class OverflowError : public ValueError {
 public:
  using ValueError::ValueError;
};

namespace detail {

/// params = next unless next has a NaN/Inf entry: then OverflowError naming the step, params
/// unchanged (the optimizer's own state may have advanced; reset() it).
template <class T>
void commit(const char* fn, Vector<T>& params, const Vector<T>& next, Index step, T lr) {
  if (const Index j = first_non_finite(next); j >= 0)
    throw OverflowError(cat(fn, ": step ", step, " would make params[", j, "] = ", next[j], " (lr ", lr,
                            "); the update overflowed and the parameters were left unchanged, lower the "
                            "learning rate"));
  params = next;
}

/// The state file `<prefix>.<what>.npy`.
inline std::string state_path(const std::string& prefix, const char* what) { return cat(prefix, ".", what, ".npy"); }

/// Saves the step count as a one-element int64 array.
inline void save_steps(const std::string& prefix, Index steps) {
  const std::int64_t s = steps;
  io::save_npy(state_path(prefix, "steps"), &s, {1});
}

inline Index load_steps(const std::string& prefix) {
  const auto s = io::load_labels(state_path(prefix, "steps"));
  if (s.size() != 1 || s[0] < 0)
    throw IoError(cat("optimizer state '", state_path(prefix, "steps"), "': expected one step count >= 0"));
  return static_cast<Index>(s[0]);
}

}  // namespace detail

/// Hyper-parameters of SGD (torch.optim.SGD's names and defaults).
struct SgdOptions {
  double momentum = 0;      ///< mu >= 0
  double dampening = 0;     ///< tau in [0, 1]; must be 0 with Nesterov (as in PyTorch)
  double weight_decay = 0;  ///< L2 coefficient lambda >= 0, added to the gradient
  bool nesterov = false;    ///< needs momentum > 0 and dampening 0
};

/// torch.optim.SGD: with g_t the gradient,
///   g <- g + lambda theta                       (weight decay)
///   b_1 = g;  b_t = mu b_{t-1} + (1 - tau) g    (momentum buffer, when mu != 0)
///   g <- g + mu b_t (Nesterov) or g <- b_t
///   theta <- theta - lr g
template <Scalar T>
class SGD {
 public:
  using scalar_type = T;

  explicit SGD(SgdOptions o = {}) : o_(o) {
    detail::check_hyper("SGD", "momentum", o.momentum, 0);
    detail::check_hyper("SGD", "dampening", o.dampening, 0, 1);
    detail::check_hyper("SGD", "weight_decay", o.weight_decay, 0);
    CURVATURE_CHECK_VALUE(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
                          "SGD: Nesterov momentum needs momentum > 0 and dampening 0, got momentum ", o.momentum,
                          " and dampening ", o.dampening);
  }

  /// One update of params (in place) with gradient grad and learning rate lr. Throws ShapeError
  /// for mismatched lengths, ValueError for a bad lr or a NaN/Inf gradient (params and state
  /// untouched) and OverflowError when the update would overflow (params untouched).
  void step(Vector<T>& params, const Vector<T>& grad, T lr) {
    const Index t = steps_ + 1;
    detail::check_step("SGD::step", params, grad, lr, t, buf_.size() ? buf_.size() : Index{-1});
    const T mu = T(o_.momentum), wd = T(o_.weight_decay);
    if (mu == T(0) && wd == T(0)) {
      next_ = params - lr * grad;
    } else {
      d_ = grad;
      if (wd != T(0)) d_ += wd * params;
      if (mu != T(0)) {
        if (buf_.size() == 0) buf_ = d_;
        else buf_ = mu * buf_ + T(1 - o_.dampening) * d_;
        if (o_.nesterov) d_ += mu * buf_;
        else d_ = buf_;
      }
      next_ = params - lr * d_;
    }
    detail::commit("SGD::step", params, next_, t, lr);
    steps_ = t;
  }

  Index steps() const { return steps_; }
  /// The momentum buffer b_t (empty before the first step and without momentum).
  const Vector<T>& momentum_buffer() const { return buf_; }
  const SgdOptions& options() const { return o_; }
  void reset() {
    steps_ = 0;
    buf_.resize(0);
  }

  /// Writes the state to `<prefix>.steps.npy` and `<prefix>.momentum.npy` (atomic writes).
  void save_state(const std::string& prefix) const {
    detail::save_steps(prefix, steps_);
    io::save_npy(detail::state_path(prefix, "momentum"), buf_);
  }
  /// Restores what save_state wrote (same hyper-parameters assumed; they are not stored).
  void load_state(const std::string& prefix) {
    steps_ = detail::load_steps(prefix);
    buf_ = io::load_npy_vector<T>(detail::state_path(prefix, "momentum"));
  }

 private:
  SgdOptions o_;
  Index steps_ = 0;
  Vector<T> buf_, d_, next_;
};

static_assert(Optimizer<SGD<float>> && Optimizer<SGD<double>>);

}  // namespace curvature::optim
