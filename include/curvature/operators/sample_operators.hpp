#pragma once
// One sample's curvature as an operator: H_i = grad^2 ell_i and G_i = J_i^T Lambda_i J_i (SPEC 1),
// for the papers that look at per-sample matrices (003's (1/N) sum_i H_i^2, 002's per-sample
// quantities). A view copies x_i and y_i (one column, one target) and runs one-sample batches, so
// it costs one sample's passes, not the batch's. For many samples at once use
// curvature::per_sample_hvp (all H_i v_r in one pass).
//
// The model is held by reference (current parameters at every apply), the loss by value. A
// one-sample batch equals sample i of the batch only when the model does not couple samples
// (BatchNorm in training mode does): the constructor rejects such a model.
#include <utility>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"
#include "curvature/loss/loss.hpp"
#include "curvature/operators/detail/archetype.hpp"
#include "curvature/operators/detail/batch.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

namespace detail {

template <class M>
bool model_couples_samples(const M& m) {
  if constexpr (requires { { m.couples_samples() } -> std::convertible_to<bool>; }) return m.couples_samples();
  else return false;
}

/// Model (by reference), loss, x_i and y_i (copies) of a one-sample view.
template <Model M, Loss L>
class SampleViewBase {
  static_assert(std::same_as<scalar_of<M>, scalar_of<L>>, "curvature operators: model and loss must use the "
                                                          "same scalar type");
  static_assert(SelectableTargets<typename L::Targets>,
                "one-sample operator views need curvature::detail::select_target(y, i) for the loss's Targets "
                "(provided for class labels and target matrices)");

 public:
  using Scalar = scalar_of<M>;
  using Targets = typename L::Targets;

  Index dim() const { return m_->num_params(); }
  /// i, the sample this view is of.
  Index sample() const { return i_; }
  const Matrix<Scalar>& input() const { return xi_; }
  const Targets& target() const { return yi_; }

 protected:
  SampleViewBase(M& m, L loss, const Matrix<Scalar>& x, const Targets& y, Index i, const char* fn)
      : m_(&m), loss_(std::move(loss)), i_(i) {
    check_operator_batch(m, loss_, x, y, fn);
    CURVATURE_CHECK_VALUE(i >= 0 && i < x.cols(), fn, ": sample index i = ", i, " is outside [0, ", x.cols(), ")");
    CURVATURE_CHECK_VALUE(!model_couples_samples(m), fn, ": the model couples samples (BatchNorm in training "
                                                         "mode), so one sample's matrix is undefined; call "
                                                         "set_training(false)");
    xi_ = x.col(i);
    yi_ = select_target(y, i);
  }

  M* m_;
  L loss_;
  Index i_;
  Matrix<Scalar> xi_;
  Targets yi_;
};

}  // namespace detail

/// H_i V, the Hessian of the loss of sample i alone (exact R-op). Needs an HvpModel.
template <Model M, Loss L>
class SampleHessianOperator : public detail::SampleViewBase<M, L> {
  static_assert(HvpModel<M>, "SampleHessianOperator needs an HvpModel: give the model jvp(x, V) and "
                             "hvp(x, V, rop, Reduction, out, scale)");
  using Base = detail::SampleViewBase<M, L>;

 public:
  using typename Base::Scalar;
  using typename Base::Targets;

  SampleHessianOperator(M& m, L loss, const Matrix<Scalar>& x, const Targets& y, Index i)
      : Base(m, std::move(loss), x, y, i, "SampleHessianOperator") {}

  /// out = H_i V (d x m, overwritten).
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    detail::check_block(v, out, this->dim(), "SampleHessianOperator::apply");
    if (detail::empty_block(v, this->dim(), out)) return;
    detail::apply_hessian(*this->m_, this->loss_, this->xi_, this->yi_, v, out, Scalar(1));
  }
};

/// G_i V = J_i^T Lambda_i J_i V, the GGN of sample i alone (also its true Fisher for CE and MSE).
/// Needs a JvpModel and a PerSampleModel.
template <Model M, Loss L>
class SampleGGNOperator : public detail::SampleViewBase<M, L> {
  static_assert(JvpModel<M>, "SampleGGNOperator needs a JvpModel: give the model jvp(x, V)");
  static_assert(PerSampleModel<M>, "SampleGGNOperator needs a PerSampleModel: give the model "
                                   "backward(x, out_fn, Reduction, out, scale)");
  using Base = detail::SampleViewBase<M, L>;

 public:
  using typename Base::Scalar;
  using typename Base::Targets;

  SampleGGNOperator(M& m, L loss, const Matrix<Scalar>& x, const Targets& y, Index i)
      : Base(m, std::move(loss), x, y, i, "SampleGGNOperator") {}

  /// out = G_i V (d x m, overwritten).
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    detail::check_block(v, out, this->dim(), "SampleGGNOperator::apply");
    if (detail::empty_block(v, this->dim(), out)) return;
    detail::apply_ggn(*this->m_, this->loss_, this->xi_, this->yi_, v, out, Scalar(1));
  }
};

static_assert(LinearOperator<SampleHessianOperator<detail::ModelArchetype<double>, loss::CrossEntropy<double>>>);
static_assert(LinearOperator<SampleGGNOperator<detail::ModelArchetype<double>, loss::MeanSquaredError<double>>>);

}  // namespace curvature
