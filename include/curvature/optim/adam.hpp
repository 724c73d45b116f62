#pragma once
// Adam with PyTorch's torch.optim.Adam semantics (L2 weight decay added to the gradient) and,
// as an option, AdamW's decoupled decay (torch.optim.AdamW). The second-moment buffer v_t is
// public: paper 000 eq. 45 measures S_R in Adam's metric diag(v_t).
#include <cmath>
#include <string>

#include "curvature/optim/sgd.hpp"

namespace curvature::optim {

/// Hyper-parameters of Adam (torch.optim.Adam's names and defaults; AdamW's default weight
/// decay is 1e-2, set it explicitly with decoupled_weight_decay).
struct AdamOptions {
  double beta1 = 0.9;                  ///< in [0, 1)
  double beta2 = 0.999;                ///< in [0, 1)
  double eps = 1e-8;                   ///< > 0, added outside the square root of v_hat
  double weight_decay = 0;             ///< lambda >= 0
  bool decoupled_weight_decay = false; ///< false: Adam's L2 (g += lambda theta); true: AdamW
};

/// torch.optim.Adam / AdamW: with g the gradient and t the 1-based step,
///   g <- g + lambda theta                  (Adam)   or  theta <- theta (1 - lr lambda)  (AdamW)
///   m_t = beta1 m_{t-1} + (1 - beta1) g     v_t = beta2 v_{t-1} + (1 - beta2) g^2   (m_0 = v_0 = 0)
///   v_hat = v_t / (1 - beta2^t)
///   theta <- theta - (lr / (1 - beta1^t)) m_t / (sqrt(v_hat) + eps)
/// Each operation is evaluated in PyTorch's order (m by lerp, the step size and the bias
/// corrections in double), so float results agree with PyTorch's to rounding.
template <Scalar T>
class Adam {
 public:
  using scalar_type = T;

  explicit Adam(AdamOptions o = {}) : o_(o) {
    detail::check_hyper("Adam", "beta1", o.beta1, 0, 1, true);
    detail::check_hyper("Adam", "beta2", o.beta2, 0, 1, true);
    CURVATURE_CHECK_VALUE(std::isfinite(o.eps) && o.eps > 0, "Adam: eps must be finite and > 0, got ", o.eps);
    detail::check_hyper("Adam", "weight_decay", o.weight_decay, 0);
  }

  /// One update of params (in place). Throws ShapeError for mismatched lengths, ValueError for a
  /// bad lr or a NaN/Inf gradient (state and params untouched) and OverflowError when the update
  /// would overflow (params untouched; reset() the state).
  void step(Vector<T>& params, const Vector<T>& grad, T lr) {
    const Index t = steps_ + 1;
    detail::check_step("Adam::step", params, grad, lr, t, m_.size() ? m_.size() : Index{-1});
    if (m_.size() == 0) {
      m_.setZero(params.size());
      v_.setZero(params.size());
    }
    const double wd = o_.weight_decay;
    const Vector<T>* g = &grad;
    next_ = params;
    if (wd != 0 && o_.decoupled_weight_decay) {
      next_ *= T(1 - double(lr) * wd);  // AdamW: param.mul_(1 - lr * weight_decay)
    } else if (wd != 0) {
      g_ = grad + T(wd) * params;  // Adam: grad.add(param, alpha=weight_decay)
      g = &g_;
    }
    // exp_avg.lerp_(grad, 1 - beta1): PyTorch's lerp is m + w (g - m) for w < 0.5, else g - (g - m)(1 - w).
    const T w = T(1 - o_.beta1);
    if (w < T(0.5)) m_.array() += w * (g->array() - m_.array());
    else m_.array() = g->array() - (g->array() - m_.array()) * (T(1) - w);
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    v_.array() = v_.array() * T(o_.beta2) + (T(1 - o_.beta2) * g->array()) * g->array();
    const double bc1 = 1 - std::pow(o_.beta1, double(t));
    const double bc2_sqrt = std::sqrt(1 - std::pow(o_.beta2, double(t)));
    const T step_size = T(double(lr) / bc1);
    // denom = v.sqrt() / sqrt(bc2) + eps;  param.addcdiv_(m, denom, value=-step_size)
    next_.array() += ((-step_size) * m_.array()) / (v_.array().sqrt() / T(bc2_sqrt) + T(o_.eps));
    if (!all_finite(v_))  // g^2 overflowed: every later update would silently be 0
      throw OverflowError(detail::cat("Adam::step: step ", t, " overflowed the second moment v (gradient entries near ",
                                      grad.cwiseAbs().maxCoeff(), "); lower the learning rate"));
    detail::commit("Adam::step", params, next_, t, lr);
    steps_ = t;
  }

  Index steps() const { return steps_; }
  /// m_t, the first-moment buffer (exp_avg; empty before the first step).
  const Vector<T>& first_moment() const { return m_; }
  /// v_t, the second-moment buffer (exp_avg_sq; empty before the first step): the metric
  /// diag(v_t) of 000 eq. 45, as adam_riemannian_sharpness takes it.
  const Vector<T>& second_moment() const { return v_; }
  /// The bias-corrected v_hat = v_t / (1 - beta2^t) (empty before the first step).
  Vector<T> second_moment_corrected() const {
    if (steps_ == 0) return Vector<T>();
    return v_ / T(1 - std::pow(o_.beta2, double(steps_)));
  }
  const AdamOptions& options() const { return o_; }
  void reset() {
    steps_ = 0;
    m_.resize(0);
    v_.resize(0);
  }

  /// Writes `<prefix>.steps.npy`, `<prefix>.exp_avg.npy` and `<prefix>.exp_avg_sq.npy` (atomic).
  void save_state(const std::string& prefix) const {
    detail::save_steps(prefix, steps_);
    io::save_npy(detail::state_path(prefix, "exp_avg"), m_);
    io::save_npy(detail::state_path(prefix, "exp_avg_sq"), v_);
  }
  /// Restores what save_state wrote (same hyper-parameters assumed; they are not stored).
  void load_state(const std::string& prefix) {
    const Index s = detail::load_steps(prefix);
    Vector<T> m = io::load_npy_vector<T>(detail::state_path(prefix, "exp_avg"));
    Vector<T> v = io::load_npy_vector<T>(detail::state_path(prefix, "exp_avg_sq"));
    CURVATURE_CHECK_SHAPE(m.size() == v.size(), "Adam::load_state: '", prefix, "' holds ", m.size(),
                          " first moments but ", v.size(), " second moments");
    steps_ = s;
    m_ = std::move(m);
    v_ = std::move(v);
  }

 private:
  AdamOptions o_;
  Index steps_ = 0;
  Vector<T> m_, v_, g_, next_;
};

static_assert(Optimizer<Adam<float>> && Optimizer<Adam<double>>);

}  // namespace curvature::optim
