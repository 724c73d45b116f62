#pragma once
// Curvature matrices of the mean loss on a fixed batch as matrix-free operators on the flat
// parameter vector (SPEC 1): Hessian H, GGN G, true Fisher F (= G for CE and MSE), Monte-Carlo
// Fisher F_mc and empirical Fisher EF. `apply(V, out)` sets out = A V for a whole d x m block in a
// fixed number of batched passes (the m columns travel as replicas), never a loop over columns.
//
// Ownership: the model is held by reference (each apply uses its *current* parameters), the loss
// by value (losses are small, stateless values), the inputs x and targets y by reference: they
// must outlive the operator. Passing a temporary x or y is a compile error (deleted overloads).
//
// Which Fisher? (Kunstner et al. 2019; docs/pitfalls.md)
//   FisherOperator           true Fisher E_{y~p(.|x_i)}[g g^T], exact: equals the GGN for CE and MSE.
//   MCFisherOperator         the same expectation estimated with S labels y~ ~ p(.|x_i) per sample,
//                            drawn once at construction (000 eq. 2 and 33 call this "empirical").
//   EmpiricalFisherOperator  true labels y_i: (1/N) sum_i g_i g_i^T. Not a Fisher; a gradient
//                            second moment (SPEC 4's Sigma1).
#include <concepts>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/loss/loss.hpp"
#include "curvature/operators/detail/archetype.hpp"
#include "curvature/operators/detail/batch.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// True when the loss's output Hessian Lambda_i is the Fisher information of its predictive
/// distribution p(y | f) (exponential family with canonical link), so that F = G exactly (SPEC 1).
/// Specialise it for a user loss with that property to use FisherOperator with it.
template <class L>
inline constexpr bool fisher_equals_ggn = false;
template <Scalar T>
inline constexpr bool fisher_equals_ggn<loss::CrossEntropy<T>> = true;
template <Scalar T>
inline constexpr bool fisher_equals_ggn<loss::MeanSquaredError<T>> = true;

namespace detail {

template <class X>
concept TemporaryArg = std::is_rvalue_reference_v<X&&>;

template <class T>
void check_quadratic_block(const Matrix<T>& v, Index d, const char* fn) {
  CURVATURE_CHECK_SHAPE(v.rows() == d, fn, ": V has ", v.rows(), " rows but the operator acts on d = ", d,
                        " parameters");
}

/// Model (by reference), loss (by value) and inputs (by reference) of a batch operator.
template <Model M, Loss L>
class BatchOperatorBase {
  static_assert(std::same_as<scalar_of<M>, scalar_of<L>>, "curvature operators: model and loss must use the "
                                                          "same scalar type");

 public:
  using Scalar = scalar_of<M>;
  using Targets = typename L::Targets;

  /// d, the number of parameters.
  Index dim() const { return m_->num_params(); }
  /// N, the number of samples in the batch.
  Index batch_size() const { return x_->cols(); }
  M& model() const { return *m_; }
  const L& loss() const { return loss_; }
  const Matrix<Scalar>& inputs() const { return *x_; }

 protected:
  BatchOperatorBase(M& m, L loss, const Matrix<Scalar>& x) : m_(&m), loss_(std::move(loss)), x_(&x) {}
  Scalar inv_n() const { return Scalar(1) / static_cast<Scalar>(x_->cols()); }

  M* m_;
  L loss_;
  const Matrix<Scalar>* x_;
};

}  // namespace detail

/// Hessian of the mean loss, H V = (1/N) sum_i H_i V, exact (Pearlmutter R-op; the block version
/// of curvature::hvp). Needs an HvpModel.
template <Model M, Loss L>
class HessianOperator : public detail::BatchOperatorBase<M, L> {
  static_assert(HvpModel<M>, "HessianOperator needs an HvpModel: give the model jvp(x, V) and "
                             "hvp(x, V, rop, Reduction, out, scale)");
  using Base = detail::BatchOperatorBase<M, L>;

 public:
  using typename Base::Scalar;
  using typename Base::Targets;

  HessianOperator(M& m, L loss, const Matrix<Scalar>& x, const Targets& y) : Base(m, std::move(loss), x), y_(&y) {
    detail::check_operator_batch(m, this->loss_, x, y, "HessianOperator");
  }
  template <class X, class Y>
    requires detail::TemporaryArg<X> || detail::TemporaryArg<Y>
  HessianOperator(M&, L, X&&, Y&&) = delete;  // x and y are held by reference: keep them alive

  const Targets& targets() const { return *y_; }

  /// out = H V (d x m, overwritten). With `hooks` (ColumnHooks), columns of V may be written in
  /// before(j0, j1) and columns of out read in after(j0, j1): Hutchinson's estimators use them to
  /// write each group's probes and add up its products while they are in cache.
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out, const ColumnHooks& hooks = {}) {
    detail::check_block(v, out, this->dim(), "HessianOperator::apply");
    if (detail::empty_block(v, this->dim(), out)) return;
    detail::apply_hessian(*this->m_, this->loss_, *this->x_, *y_, v, out, this->inv_n(), hooks);
  }
  /// q_r = v_r' H v_r (q resized to m): by second-order forward mode when the model has it (no
  /// backward pass; curvature::hessian_quadratic_forms), else from H V. `hooks` as for apply.
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q, const ColumnHooks& hooks = {}) {
    detail::check_quadratic_block(v, this->dim(), "HessianOperator::quadratic_forms");
    if (v.cols() == 0) { q.resize(0); return; }
    q = hessian_quadratic_forms(*this->m_, this->loss_, *this->x_, *y_, v, hooks);
  }

 private:
  const Targets* y_;
};

/// Generalised Gauss-Newton G V = (1/N) sum_i J_i^T Lambda_i J_i V (SPEC 1): one JVP, the output
/// Hessian products, one backward pass. Positive semi-definite for convex losses. Needs a
/// JvpModel and a PerSampleModel.
template <Model M, Loss L>
class GGNOperator : public detail::BatchOperatorBase<M, L> {
  static_assert(JvpModel<M>, "GGNOperator needs a JvpModel: give the model jvp(x, V) (J V as K x m*N)");
  static_assert(PerSampleModel<M>, "GGNOperator needs a PerSampleModel: give the model "
                                   "backward(x, out_fn, Reduction, out, scale)");
  using Base = detail::BatchOperatorBase<M, L>;

 public:
  using typename Base::Scalar;
  using typename Base::Targets;

  GGNOperator(M& m, L loss, const Matrix<Scalar>& x, const Targets& y) : Base(m, std::move(loss), x), y_(&y) {
    detail::check_operator_batch(m, this->loss_, x, y, "GGNOperator");
  }
  template <class X, class Y>
    requires detail::TemporaryArg<X> || detail::TemporaryArg<Y>
  GGNOperator(M&, L, X&&, Y&&) = delete;  // x and y are held by reference: keep them alive

  const Targets& targets() const { return *y_; }

  /// out = G V (d x m, overwritten).
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    detail::check_block(v, out, this->dim(), "GGNOperator::apply");
    if (detail::empty_block(v, this->dim(), out)) return;
    detail::apply_ggn(*this->m_, this->loss_, *this->x_, *y_, v, out, this->inv_n());
  }
  /// q_r = v_r' G v_r = (1/N) sum_i (J_i v_r)' Lambda_i (J_i v_r) from one JVP (no backward pass).
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q) {
    detail::check_quadratic_block(v, this->dim(), "GGNOperator::quadratic_forms");
    if (v.cols() == 0) { q.resize(0); return; }
    detail::ggn_quadratic_forms(*this->m_, this->loss_, *this->x_, *y_, v, q, this->inv_n());
  }

 private:
  const Targets* y_;
};

/// The true (model) Fisher F = (1/N) sum_i E_{y~p(.|x_i)}[grad log p grad log p^T], applied exactly.
/// It *is* the GGN for losses where fisher_equals_ggn<L> (CE: Lambda = diag(p) - p p^T is the
/// Fisher of the softmax; MSE: unit-variance Gaussian, Lambda = I), so F V = G V (SPEC 1). The
/// targets are accepted for symmetry with the GGN and are not used: F does not depend on labels.
template <Model M, Loss L>
class FisherOperator : public GGNOperator<M, L> {
  static_assert(fisher_equals_ggn<L>, "FisherOperator applies the true Fisher as the GGN, exact only when the "
                                      "loss's output Hessian is the Fisher of its predictive distribution (CE, "
                                      "MSE). For another loss use MCFisherOperator, or specialise "
                                      "curvature::fisher_equals_ggn<YourLoss> if that holds");

 public:
  using GGNOperator<M, L>::GGNOperator;
};
template <Model M, Loss L>
FisherOperator(M&, L, const Matrix<scalar_of<M>>&, const typename L::Targets&) -> FisherOperator<M, L>;

/// Empirical Fisher EF V = (1/N) sum_i g_i (g_i^T V) with the *true* labels y_i: one JVP and one
/// backward pass. Not the Fisher (Kunstner et al. 2019): it is the uncentred gradient second
/// moment Sigma1 of SPEC 4 and differs from F away from a perfect fit. Needs JvpModel + PerSampleModel.
template <Model M, Loss L>
class EmpiricalFisherOperator : public detail::BatchOperatorBase<M, L> {
  static_assert(JvpModel<M>, "EmpiricalFisherOperator needs a JvpModel: give the model jvp(x, V)");
  static_assert(PerSampleModel<M>, "EmpiricalFisherOperator needs a PerSampleModel: give the model "
                                   "backward(x, out_fn, Reduction, out, scale)");
  using Base = detail::BatchOperatorBase<M, L>;

 public:
  using typename Base::Scalar;
  using typename Base::Targets;

  EmpiricalFisherOperator(M& m, L loss, const Matrix<Scalar>& x, const Targets& y)
      : Base(m, std::move(loss), x), y_(&y) {
    detail::check_operator_batch(m, this->loss_, x, y, "EmpiricalFisherOperator");
  }
  template <class X, class Y>
    requires detail::TemporaryArg<X> || detail::TemporaryArg<Y>
  EmpiricalFisherOperator(M&, L, X&&, Y&&) = delete;  // x and y are held by reference: keep them alive

  const Targets& targets() const { return *y_; }

  /// out = EF V (d x m, overwritten).
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    detail::check_block(v, out, this->dim(), "EmpiricalFisherOperator::apply");
    if (detail::empty_block(v, this->dim(), out)) return;
    detail::apply_gradient_outer(*this->m_, this->loss_, *this->x_, std::span<const Targets>(y_, 1), v, out,
                                 this->inv_n());
  }
  /// q_r = v_r' EF v_r = (1/N) sum_i (g_i' v_r)^2 from one JVP (no backward pass).
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q) {
    detail::check_quadratic_block(v, this->dim(), "EmpiricalFisherOperator::quadratic_forms");
    if (v.cols() == 0) { q.resize(0); return; }
    detail::gradient_outer_quadratic_forms(*this->m_, this->loss_, *this->x_, std::span<const Targets>(y_, 1), v, q,
                                           this->inv_n());
  }

 private:
  const Targets* y_;
};

/// Monte-Carlo Fisher F_mc V = (1/(N S)) sum_{i,s} g~_is (g~_is^T V), g~_is = J_i^T grad_f ell(y~_is, f_i),
/// with S labels y~_is ~ p(.|x_i) per sample drawn once, at construction, from the model's
/// predictive distribution at the parameters of that moment (000 eq. 2 and 33, there called
/// "empirical"). An unbiased, rank <= N S estimate of the true Fisher F; the labels stay fixed, so
/// every apply is the same linear operator (symmetric PSD), as estimators need. No true labels.
template <Model M, Loss L>
class MCFisherOperator : public detail::BatchOperatorBase<M, L> {
  static_assert(JvpModel<M>, "MCFisherOperator needs a JvpModel: give the model jvp(x, V)");
  static_assert(PerSampleModel<M>, "MCFisherOperator needs a PerSampleModel: give the model "
                                   "backward(x, out_fn, Reduction, out, scale)");
  using Base = detail::BatchOperatorBase<M, L>;

 public:
  using typename Base::Scalar;
  using typename Base::Targets;

  /// Draws `draws` (S >= 1) labels per sample from p(.|x_i) with `rng`, in the order of
  /// curvature::mc_fisher_diagonal (same rng state, same labels).
  MCFisherOperator(M& m, L loss, const Matrix<Scalar>& x, Rng& rng, Index draws = 1) : Base(m, std::move(loss), x) {
    sample_labels(rng, draws);
  }
  /// As above with a fresh Rng(seed).
  MCFisherOperator(M& m, L loss, const Matrix<Scalar>& x, std::uint64_t seed, Index draws = 1)
      : Base(m, std::move(loss), x) {
    Rng rng(seed);
    sample_labels(rng, draws);
  }
  template <class X, class... A>
    requires detail::TemporaryArg<X>
  MCFisherOperator(M&, L, X&&, A&&...) = delete;  // x is held by reference: keep it alive

  /// S, the number of labels drawn per sample.
  Index draws() const { return static_cast<Index>(labels_.size()); }
  /// The sampled labels: entry s holds y~_is for every sample i (targets of a whole batch).
  const std::vector<Targets>& sampled_labels() const { return labels_; }

  /// out = F_mc V (d x m, overwritten).
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    detail::check_block(v, out, this->dim(), "MCFisherOperator::apply");
    if (detail::empty_block(v, this->dim(), out)) return;
    detail::apply_gradient_outer(*this->m_, this->loss_, *this->x_, std::span<const Targets>(labels_), v, out,
                                 this->inv_n() / static_cast<Scalar>(draws()));
  }
  /// q_r = v_r' F_mc v_r = (1/(N S)) sum_{i,s} (g~_is' v_r)^2 from one JVP (no backward pass).
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q) {
    detail::check_quadratic_block(v, this->dim(), "MCFisherOperator::quadratic_forms");
    if (v.cols() == 0) { q.resize(0); return; }
    detail::gradient_outer_quadratic_forms(*this->m_, this->loss_, *this->x_, std::span<const Targets>(labels_), v,
                                           q, this->inv_n() / static_cast<Scalar>(draws()));
  }

 private:
  void sample_labels(Rng& rng, Index draws) {
    CURVATURE_CHECK_VALUE(draws >= 1, "MCFisherOperator: draws (S) must be >= 1, got ", draws);
    CURVATURE_CHECK_SHAPE(this->x_->cols() > 0, "MCFisherOperator: x has no samples (0 columns)");
    const Matrix<Scalar> f = this->m_->forward(*this->x_);
    labels_.reserve(static_cast<std::size_t>(draws));
    for (Index s = 0; s < draws; ++s) labels_.push_back(this->loss_.sample(f, rng));
  }
  std::vector<Targets> labels_;
};

// Every shipped operator models LinearOperator for any model that models the concepts.
static_assert(LinearOperator<HessianOperator<detail::ModelArchetype<double>, loss::CrossEntropy<double>>>);
static_assert(LinearOperator<GGNOperator<detail::ModelArchetype<double>, loss::CrossEntropy<double>>>);
static_assert(LinearOperator<FisherOperator<detail::ModelArchetype<float>, loss::MeanSquaredError<float>>>);
static_assert(LinearOperator<EmpiricalFisherOperator<detail::ModelArchetype<double>, loss::CrossEntropy<double>>>);
static_assert(LinearOperator<MCFisherOperator<detail::ModelArchetype<double>, loss::MeanSquaredError<double>>>);
static_assert(QuadraticFormOperator<HessianOperator<detail::ModelArchetype<double>, loss::CrossEntropy<double>>>);
static_assert(QuadraticFormOperator<FisherOperator<detail::ModelArchetype<float>, loss::MeanSquaredError<float>>>);

}  // namespace curvature
