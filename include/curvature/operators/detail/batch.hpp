#pragma once
// Internals shared by the curvature operators: argument checks, target selection for one-sample
// views, and the batched products behind H V, G V and (empirical / MC) Fisher V. Each product is
// a fixed number of whole-batch passes with the d x m block as m replicas (SPEC 1; architecture.md,
// "Replicas"): never a loop over samples or columns.
#include <cstdint>
#include <span>
#include <vector>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"
#include "curvature/model/derivatives.hpp"

namespace curvature::detail {

/// Throws unless the batch has at least one sample and as many targets as inputs.
template <class M, class L>
void check_operator_batch(const M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                          const char* fn) {
  CURVATURE_CHECK_SHAPE(x.cols() > 0, fn, ": x has no samples (0 columns)");
  check_batch(m, loss, x, y, fn);
}

/// Throws unless V has d rows and `out` is a different object (apply overwrites `out`).
template <class T>
void check_block(const Matrix<T>& v, const Matrix<T>& out, Index d, const char* fn) {
  CURVATURE_CHECK_SHAPE(v.rows() == d, fn, ": V has ", v.rows(), " rows but the operator acts on d = ", d,
                        " parameters");
  CURVATURE_CHECK_VALUE(&v != &out, fn, ": out must not be the same matrix as V");
}

/// The targets of sample i alone, for one-sample operator views.
inline std::vector<std::int64_t> select_target(const std::vector<std::int64_t>& y, Index i) {
  return {y[static_cast<std::size_t>(i)]};
}
template <class T>
Matrix<T> select_target(const Matrix<T>& y, Index i) {
  return y.col(i);
}

template <class Targets>
concept SelectableTargets = requires(const Targets& y) {
  { select_target(y, Index(0)) } -> std::convertible_to<Targets>;
};

/// out = scale * sum_i H_i V (exact R-op, Pearlmutter 1994): one forward, JVP and backward R-op.
/// With `hooks`: see ColumnHooks (models without them get before(0, m) first, after(0, m) last).
template <class M, class L>
void apply_hessian(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                   const Matrix<scalar_of<M>>& v, Matrix<scalar_of<M>>& out, scalar_of<M> scale,
                   const ColumnHooks& hooks = {}) {
  using T = scalar_of<M>;
  const auto rop = [&](const Matrix<T>& f, const Matrix<T>& rf, Matrix<T>& df, Matrix<T>& rdf) {
    df = loss.gradient(f, y);
    rdf = loss.hessian_product(f, y, rf);
  };
  hooked_hvp(m, x, v, rop, out, scale, hooks);
}

/// out = scale * sum_i J_i^T Lambda_i J_i V: one JVP (K x m*N), the output-Hessian product on all
/// m replicas at once, one backward pass reduced per replica (SPEC 1, GGN).
template <class M, class L>
void apply_ggn(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
               const Matrix<scalar_of<M>>& v, Matrix<scalar_of<M>>& out, scalar_of<M> scale) {
  using T = scalar_of<M>;
  const Matrix<T> jv = m.jvp(x, v);
  m.backward(x, [&](const Matrix<T>& f) { return Matrix<T>(loss.hessian_product(f, y, jv)); },
             Reduction::PerReplica, out, scale);
}

/// out = scale * sum_s sum_i g_is g_is^T V with g_is = J_i^T r_is, r_is = grad_f ell(labels[s]_i, f_i):
/// one JVP, the per-sample scalars r_is^T (J_i v_r) for all replicas, one backward pass of the
/// cotangent sum_s r_is (r_is^T J_i v_r) reduced per replica (empirical and MC Fisher).
template <class M, class L>
void apply_gradient_outer(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                          std::span<const typename L::Targets> labels, const Matrix<scalar_of<M>>& v,
                          Matrix<scalar_of<M>>& out, scalar_of<M> scale) {
  using T = scalar_of<M>;
  const Matrix<T> jv = m.jvp(x, v);  // column r*N + i is J_i v_r
  const Index reps = v.cols();
  m.backward(x, [&](const Matrix<T>& f) {
    Matrix<T> cot = Matrix<T>::Zero(jv.rows(), jv.cols());
    for (const auto& ys : labels) {
      const Matrix<T> r = Matrix<T>(loss.gradient(f, ys)).replicate(1, reps);  // r_is, every replica
      const Eigen::Matrix<T, 1, Eigen::Dynamic> coeff = r.cwiseProduct(jv).colwise().sum();  // r_is^T J_i v_r
      cot.noalias() += r * coeff.asDiagonal();
    }
    return cot;
  }, Reduction::PerReplica, out, scale);
}

/// q_r = scale * sum_i (J_i v_r)' Lambda_i (J_i v_r): one forward pass and one JVP, no backward pass.
template <class M, class L>
void ggn_quadratic_forms(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                         const Matrix<scalar_of<M>>& v, Vector<scalar_of<M>>& q, scalar_of<M> scale) {
  using T = scalar_of<M>;
  const Index n = x.cols();
  const Matrix<T> f = m.forward(x);
  const Matrix<T> jv = m.jvp(x, v);
  const Matrix<T> hjv = loss.hessian_product(f, y, jv);
  q.resize(v.cols());
  for (Index r = 0; r < v.cols(); ++r)
    q(r) = scale * jv.middleCols(r * n, n).cwiseProduct(hjv.middleCols(r * n, n)).sum();
}

/// q_r = scale * sum_s sum_i (r_is' J_i v_r)^2 with r_is = grad_f ell(labels[s]_i, f_i) (empirical and
/// MC Fisher): one forward pass and one JVP.
template <class M, class L>
void gradient_outer_quadratic_forms(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                    std::span<const typename L::Targets> labels, const Matrix<scalar_of<M>>& v,
                                    Vector<scalar_of<M>>& q, scalar_of<M> scale) {
  using T = scalar_of<M>;
  const Index n = x.cols();
  const Matrix<T> f = m.forward(x);
  const Matrix<T> jv = m.jvp(x, v);
  q = Vector<T>::Zero(v.cols());
  for (const auto& ys : labels) {
    const Matrix<T> g = loss.gradient(f, ys);
    for (Index r = 0; r < v.cols(); ++r)
      q(r) += scale * g.cwiseProduct(jv.middleCols(r * n, n)).colwise().sum().squaredNorm();
  }
}

/// Empty blocks need no pass (the models reject 0-column directions).
template <class T>
bool empty_block(const Matrix<T>& v, Index d, Matrix<T>& out) {
  if (v.cols() > 0) return false;
  out.resize(d, 0);
  return true;
}

}  // namespace curvature::detail
