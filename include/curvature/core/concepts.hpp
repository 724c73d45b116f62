#pragma once
// The concepts through which any model and loss plug in. Which library features need which
// refinement is listed in docs/architecture.md; a model lacking one gets a static_assert naming it.
#include <concepts>
#include <cstdint>
#include <functional>

#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"

namespace curvature {

template <class M>
using scalar_of = typename M::scalar_type;

/// Base model: parameter count, the flat parameter vector, batched forward (K x N outputs for
/// D x N inputs) and the vector-Jacobian product sum_i J_i^T dF_i with respect to the parameters.
/// Enough for gradients, SGD/Adam and everything built on gradients alone.
template <class M>
concept Model = Scalar<scalar_of<M>> && requires(M& m, const Matrix<scalar_of<M>>& x) {
  { m.num_params() } -> std::convertible_to<Index>;
  { m.params() } -> std::convertible_to<const Vector<scalar_of<M>>&>;
  { m.forward(x) } -> std::convertible_to<Matrix<scalar_of<M>>>;
  { m.vjp(x, x) } -> std::convertible_to<Vector<scalar_of<M>>>;
};

template <class T>
using OutputFn = std::function<Matrix<T>(const Matrix<T>&)>;
template <class T>
using OutputRop = std::function<void(const Matrix<T>&, const Matrix<T>&, Matrix<T>&, Matrix<T>&)>;

/// Adds the reduced backward pass: cotangents with R replicas per sample reduced per sample,
/// per replica, or as sums of squares. Needed by per-sample gradients, exact Fisher/GGN/empirical
/// Fisher diagonals, MC Fisher and gradient-noise statistics.
template <class M>
concept PerSampleModel = Model<M> && requires(M& m, const Matrix<scalar_of<M>>& x, Matrix<scalar_of<M>>& out,
                                              OutputFn<scalar_of<M>> fn) {
  m.backward(x, fn, Reduction::PerColumn, out, scalar_of<M>(1));
};

/// Adds forward-mode parameter JVPs: J V for a d x m block V, as K x (m*N).
template <class M>
concept JvpModel = Model<M> && requires(M& m, const Matrix<scalar_of<M>>& x) {
  { m.jvp(x, x) } -> std::convertible_to<Matrix<scalar_of<M>>>;
};

/// Adds exact Hessian-vector products through the R-op of the backward pass. Needed by Hessian
/// operators, Hutchinson/Lanczos on H, sharpness, TRACER and per-sample H_i v.
template <class M>
concept HvpModel = JvpModel<M> && requires(M& m, const Matrix<scalar_of<M>>& x, Matrix<scalar_of<M>>& out,
                                          OutputRop<scalar_of<M>> rop) {
  m.hvp(x, x, rop, Reduction::PerReplica, out, scalar_of<M>(1));
};

template <class T>
using OutputJet = std::function<void(const Matrix<T>&, const Matrix<T>&, const Matrix<T>&)>;

/// Adds second-order forward (Taylor) mode: `jet2(x, V, fn)` calls fn(F, RF, RRF) with the outputs
/// and their first and second derivatives along theta + t v_r, and `supports_jet2()` says whether
/// it works for this instance. Optional: quadratic forms v'Hv (Hutchinson traces, S_R) use it to
/// skip the backward pass, and fall back to HVPs without it.
template <class M>
concept Jet2Model = JvpModel<M> && requires(M& m, const M& cm, const Matrix<scalar_of<M>>& x,
                                           OutputJet<scalar_of<M>> fn) {
  { cm.supports_jet2() } -> std::convertible_to<bool>;
  m.jet2(x, x, fn);
};

/// Models whose hvp and jet2 take ColumnHooks (the built-in Sequential): their blocks of
/// directions can be written and consumed group by group (Hutchinson's probes).
template <class M>
concept HookedHvpModel = HvpModel<M> && requires(M& m, const Matrix<scalar_of<M>>& x, Matrix<scalar_of<M>>& out,
                                                 OutputRop<scalar_of<M>> rop, const ColumnHooks& h) {
  m.hvp(x, x, rop, Reduction::PerReplica, out, scalar_of<M>(1), h);
};
template <class M>
concept HookedJet2Model = Jet2Model<M> && requires(M& m, const Matrix<scalar_of<M>>& x, OutputJet<scalar_of<M>> fn,
                                                   const ColumnHooks& h) {
  m.jet2(x, x, fn, h);
};

/// A loss ell(y, f) on K x N outputs: per-sample values, the output gradient, products with the
/// output Hessian Lambda_i, its symmetric factor S_i (S_i S_i^T = Lambda_i, K x K per sample,
/// returned as K replicas: column c*N + i is S_i e_c), and labels sampled from the model's
/// predictive distribution p(y | f) (for the true/MC Fisher).
template <class L>
concept Loss = Scalar<scalar_of<L>> &&
    requires(const L& l, const Matrix<scalar_of<L>>& f, const typename L::Targets& y, Rng& rng) {
      { l.values(f, y) } -> std::convertible_to<Vector<scalar_of<L>>>;
      { l.gradient(f, y) } -> std::convertible_to<Matrix<scalar_of<L>>>;
      { l.hessian_product(f, y, f) } -> std::convertible_to<Matrix<scalar_of<L>>>;
      { l.hessian_factor(f, y) } -> std::convertible_to<Matrix<scalar_of<L>>>;
      { l.sample(f, rng) } -> std::convertible_to<typename L::Targets>;
      { l.num_targets(y) } -> std::convertible_to<Index>;
    };

}  // namespace curvature
