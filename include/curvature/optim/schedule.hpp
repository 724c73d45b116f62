#pragma once
// Learning-rate schedules. A schedule is a pure function of where training stands:
// lr(epoch, step, steps_per_epoch) with `epoch` the number of completed epochs (0-based, as
// PyTorch's scheduler.last_epoch when stepped once per epoch) and `step` the 0-based step within
// that epoch. Being stateless, a schedule gives the same lr when training resumes from a
// checkpoint. Closed forms follow PyTorch's schedulers (StepLR, CosineAnnealingLR, LinearLR).
#include <algorithm>
#include <cmath>
#include <concepts>
#include <numbers>
#include <optional>
#include <utility>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"

namespace curvature::optim {

/// A learning-rate schedule: `s.lr(epoch, step, steps_per_epoch)` (see the top of this file).
template <class S>
concept Schedule = requires(const S& s, Index i) {
  { s.lr(i, i, i) } -> std::convertible_to<double>;
};

/// Whether a schedule counts in epochs (the lr changes at epoch boundaries) or in optimizer
/// steps (global step epoch * steps_per_epoch + step).
enum class Unit { Epochs, Steps };

namespace detail {

inline void check_position(const char* fn, Index epoch, Index step, Index steps_per_epoch) {
  CURVATURE_CHECK_VALUE(epoch >= 0 && steps_per_epoch >= 1 && step >= 0 && step < steps_per_epoch, fn,
                        ": position must have epoch >= 0, steps_per_epoch >= 1 and step in [0, steps_per_epoch), "
                        "got epoch ", epoch, ", step ", step, ", steps_per_epoch ", steps_per_epoch);
}

inline void check_lr(const char* fn, const char* what, double lr) {
  CURVATURE_CHECK_VALUE(std::isfinite(lr) && lr >= 0, fn, ": ", what, " must be finite and >= 0, got ", lr);
}

/// The schedule's clock t in its unit.
inline Index clock(Unit u, Index epoch, Index step, Index steps_per_epoch) {
  return u == Unit::Epochs ? epoch : epoch * steps_per_epoch + step;
}

}  // namespace detail

/// The same lr at every step.
struct Constant {
  double base_lr;
  explicit Constant(double lr) : base_lr(lr) { detail::check_lr("Constant", "lr", lr); }
  double lr(Index epoch, Index step, Index steps_per_epoch) const {
    detail::check_position("Constant::lr", epoch, step, steps_per_epoch);
    return base_lr;
  }
};

/// torch.optim.lr_scheduler.StepLR: lr * gamma^floor(epoch / step_size).
struct StepDecay {
  double base_lr, gamma;
  Index step_size;  ///< epochs between decays, >= 1
  StepDecay(double lr, double gamma_, Index step_size_epochs) : base_lr(lr), gamma(gamma_), step_size(step_size_epochs) {
    detail::check_lr("StepDecay", "lr", lr);
    CURVATURE_CHECK_VALUE(std::isfinite(gamma) && gamma > 0, "StepDecay: gamma must be finite and > 0, got ", gamma);
    CURVATURE_CHECK_VALUE(step_size >= 1, "StepDecay: step_size must be >= 1 epoch, got ", step_size);
  }
  double lr(Index epoch, Index step, Index steps_per_epoch) const {
    detail::check_position("StepDecay::lr", epoch, step, steps_per_epoch);
    return base_lr * std::pow(gamma, double(epoch / step_size));
  }
};

/// torch.optim.lr_scheduler.CosineAnnealingLR in its closed form:
///   eta_min + (lr - eta_min) (1 + cos(pi t / T_max)) / 2,
/// t counted in epochs or in steps. As in PyTorch, past t = T_max the cosine rises again (period
/// 2 T_max); choose T_max = the length of training to end at eta_min.
struct CosineAnnealing {
  double base_lr, eta_min;
  Index t_max;
  Unit unit;
  CosineAnnealing(double lr, Index t_max_, double eta_min_ = 0, Unit unit_ = Unit::Epochs)
      : base_lr(lr), eta_min(eta_min_), t_max(t_max_), unit(unit_) {
    detail::check_lr("CosineAnnealing", "lr", lr);
    detail::check_lr("CosineAnnealing", "eta_min", eta_min);
    CURVATURE_CHECK_VALUE(t_max >= 1, "CosineAnnealing: T_max must be >= 1, got ", t_max);
  }
  double lr(Index epoch, Index step, Index steps_per_epoch) const {
    detail::check_position("CosineAnnealing::lr", epoch, step, steps_per_epoch);
    const double t = double(detail::clock(unit, epoch, step, steps_per_epoch));
    return eta_min + (base_lr - eta_min) * (1 + std::cos(std::numbers::pi * t / double(t_max))) / 2;
  }
};

/// Linear warm-up in front of any schedule: the wrapped lr times
///   start_factor + (1 - start_factor) min(t, W) / W
/// (torch.optim.lr_scheduler.LinearLR with end_factor 1 and total_iters W, chained
/// multiplicatively), t and W counted in `unit`. The default start_factor 1/W starts at lr/W
/// (never a zero step) and reaches the wrapped lr at t = W.
template <Schedule S>
struct Warmup {
  S inner;
  Index warmup;  ///< W >= 1, in `unit`
  Unit unit;
  double start_factor;
  Warmup(S s, Index warmup_, Unit unit_ = Unit::Steps, std::optional<double> start_factor_ = std::nullopt)
      : inner(std::move(s)), warmup(warmup_), unit(unit_),
        start_factor(start_factor_.value_or(1.0 / double(std::max<Index>(warmup_, 1)))) {
    CURVATURE_CHECK_VALUE(warmup >= 1, "Warmup: the warm-up length must be >= 1, got ", warmup);
    CURVATURE_CHECK_VALUE(std::isfinite(start_factor) && start_factor >= 0 && start_factor <= 1,
                          "Warmup: start_factor must be in [0, 1], got ", start_factor);
  }
  double lr(Index epoch, Index step, Index steps_per_epoch) const {
    detail::check_position("Warmup::lr", epoch, step, steps_per_epoch);
    const double t = double(std::min(detail::clock(unit, epoch, step, steps_per_epoch), warmup));
    return inner.lr(epoch, step, steps_per_epoch) * (start_factor + (1 - start_factor) * t / double(warmup));
  }
};

static_assert(Schedule<Constant> && Schedule<StepDecay> && Schedule<CosineAnnealing> && Schedule<Warmup<Constant>>);

}  // namespace curvature::optim
