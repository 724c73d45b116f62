#pragma once
// The alignment of SGD noise with the Fisher (002 eq. 3 and Def. 2.1; SPEC 4):
//   alpha = Tr(G Sigma) / (||G||_F ||Sigma||_F),  beta = ||Sigma||_F / (2 L ||G||_F),
//   mu = alpha beta = Tr(Sigma G) / (2 L ||G||_F^2),  mu1, mu2: Sigma1, Sigma2 in place of Sigma,
// with Sigma = Sigma1 - Sigma2, Sigma1 = (1/N) sum_i g_i g_i^T, Sigma2 = g g^T (g_i per-sample loss
// gradients, g their mean), and the norm uniformity gamma = min_i chi_i / mean_i chi_i,
// chi_i = grad f(x_i)^T G grad f(x_i). No d x d matrix is formed: traces are quadratic forms of
// G, ||Sigma||_F^2 comes from the N x N Gram matrix of the centred per-sample gradients.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>

#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/hutchinson.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/operators/curvature_matrices.hpp"
#include "curvature/operators/quadratic_forms.hpp"

namespace curvature {

/// Options of alignment_factors.
struct AlignmentOptions {
  bool exact_frobenius = true;     ///< ||G||_F^2 exactly (d / block applies) or by Hutchinson
  HutchinsonOptions hutchinson{};  ///< probes for ||G||_F^2 when exact_frobenius is false
  Index block = 32;                ///< columns per application of G
  double min_loss = 1e-12;         ///< L below it: every ratio is undefined (SPEC 4)
};

/// 002's alignment factors with their ingredients. A factor is std::nullopt (undefined) when
/// L < min_loss (the ratios are round-off there) or ||G||_F = 0; alpha also when ||Sigma||_F = 0.
template <Scalar T>
struct AlignmentFactors {
  std::optional<T> alpha, beta, mu, mu1, mu2;
  T loss = 0;                  ///< L, the mean loss
  T trace_sigma_g = 0;         ///< Tr(Sigma G), centred Sigma (divisor N)
  T trace_sigma1_g = 0;        ///< Tr(Sigma1 G) = (1/N) sum_i g_i^T G g_i
  T trace_sigma2_g = 0;        ///< Tr(Sigma2 G) = g^T G g
  Estimate<T> g_frobenius_sq;  ///< ||G||_F^2; exact: std_error 0, probes 0, matvecs d
  T sigma_frobenius_sq = 0;    ///< ||Sigma||_F^2, exact
  Index samples = 0;           ///< N
  bool defined() const { return mu.has_value(); }
};

namespace detail {

/// ||A||_F^2 exactly as the sum of ||A E||_F^2 over identity blocks E (d / block applies, no d x d).
template <LinearOperator A>
Estimate<typename A::Scalar> exact_frobenius_squared(A& op, Index block, const char* fn) {
  using T = typename A::Scalar;
  const Index d = checked_dim(op, fn);
  Matrix<T> e, out;
  T sum = 0;
  for (Index j = 0; j < d; j += block) {
    const Index b = std::min(block, d - j);
    e.setZero(d, b);
    for (Index c = 0; c < b; ++c) e(j + c, c) = T(1);
    apply_checked(op, e, out, fn);
    sum += out.squaredNorm();
  }
  return Estimate<T>{sum, T(0), 0, d, true};
}

/// sum_j (a_i . b_j)^2 for every column a_i of A, from b-row blocks of the Gram matrix A^T B.
template <class T>
Vector<T> squared_gram_row_sums(const Matrix<T>& a, const Matrix<T>& b, Index block = 256) {
  Vector<T> out(a.cols());
  for (Index i = 0; i < a.cols(); i += block) {
    const Index m = std::min(block, a.cols() - i);
    out.segment(i, m) = (a.middleCols(i, m).transpose() * b).rowwise().squaredNorm();
  }
  return out;
}

/// ||Sigma||_F^2 = (1/N^2) sum_ij (c_i . c_j)^2 with c_i = g_i - g (exact, O(d N^2), O(N) memory per row).
template <class T>
T covariance_frobenius_squared(const Matrix<T>& g) {
  const Matrix<T> c = g.colwise() - g.rowwise().mean();
  const T n = static_cast<T>(g.cols());
  return squared_gram_row_sums(c, c).sum() / (n * n);
}

template <class T>
void set_alignment_ratios(AlignmentFactors<T>& r, double min_loss) {
  const T l = r.loss, gf2 = r.g_frobenius_sq.value;
  if (!(l >= static_cast<T>(min_loss)) || !(gf2 > 0)) return;  // undefined (SPEC 4)
  const T gf = std::sqrt(gf2), sf = std::sqrt(r.sigma_frobenius_sq);
  if (sf > 0) r.alpha = r.trace_sigma_g / (gf * sf);
  r.beta = sf / (2 * l * gf);
  r.mu = r.trace_sigma_g / (2 * l * gf2);
  r.mu1 = r.trace_sigma1_g / (2 * l * gf2);
  r.mu2 = r.trace_sigma2_g / (2 * l * gf2);
}

}  // namespace detail

/// 002 eq. 3 from any operator G (the Fisher/GGN; SPEC 4: not H), the d x N per-sample loss
/// gradients and the mean loss L. Cost: 2 N / block + 1 applies of G for the traces, plus d / block
/// (exact) or the Hutchinson probes for ||G||_F^2; O(d N^2) flops for ||Sigma||_F^2. Throws
/// ShapeError when the gradients do not have d rows or N = 0, ValueError for a non-finite loss or
/// block < 1.
template <LinearOperator A>
AlignmentFactors<typename A::Scalar> alignment_factors(A& g_op, const Matrix<typename A::Scalar>& per_sample_gradients,
                                                       std::type_identity_t<typename A::Scalar> loss,
                                                       const AlignmentOptions& options = {}) {
  using T = typename A::Scalar;
  constexpr const char* fn = "alignment_factors";
  const Matrix<T>& g = per_sample_gradients;
  CURVATURE_CHECK_SHAPE(g.rows() == g_op.dim() && g.cols() > 0, fn, ": per_sample_gradients is ", g.rows(), "x",
                        g.cols(), ", expected d = ", g_op.dim(), " rows and N >= 1 columns");
  CURVATURE_CHECK_VALUE(std::isfinite(loss), fn, ": loss = ", loss, ", expected a finite value");
  detail::check_at_least(options.block, 1, fn, "block");
  AlignmentFactors<T> r;
  r.loss = loss;
  r.samples = g.cols();
  r.trace_sigma1_g = trace_sigma1_a(g_op, g, options.block);
  r.trace_sigma_g = trace_sigma_a(g_op, g, options.block);
  const Matrix<T> gbar = g.rowwise().mean();
  Matrix<T> ggbar;
  detail::apply_checked(g_op, gbar, ggbar, fn);
  r.trace_sigma2_g = gbar.col(0).dot(ggbar.col(0));
  r.g_frobenius_sq = options.exact_frobenius ? detail::exact_frobenius_squared(g_op, options.block, fn)
                                             : frobenius_norm_squared(g_op, options.hutchinson);
  r.sigma_frobenius_sq = detail::covariance_frobenius_squared(g);
  detail::set_alignment_ratios(r, options.min_loss);
  return r;
}

/// 002 eq. 3 on the batch (x, y) with G = the GGN of `loss` (= the true Fisher for CE and MSE;
/// for MSE with K = 1 it is 002's G = (1/N) sum_i grad f_i grad f_i^T), per-sample gradients from
/// one backward pass and L = loss_value. Needs a JvpModel and a PerSampleModel.
template <Model M, Loss L>
AlignmentFactors<scalar_of<M>> alignment_factors(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                                 const typename L::Targets& y, const AlignmentOptions& options = {}) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M> && JvpModel<M>, "alignment_factors needs a PerSampleModel and a JvpModel (G V)");
  detail::check_operator_batch(m, loss, x, y, "alignment_factors");
  const T value = loss_value(m, loss, x, y);
  Matrix<T> g;
  per_sample_gradients(m, loss, x, y, g);
  GGNOperator<M, L> g_op(m, loss, x, y);
  return alignment_factors(g_op, g, value, options);
}

/// 002 Def. 2.1: chi_i = g_i^T G g_i and gamma = min_i chi_i / mean_i chi_i (Lemma 2.2: mu1 >= gamma).
template <Scalar T>
struct NormUniformity {
  T gamma = std::numeric_limits<T>::quiet_NaN();  ///< NaN when mean_i chi_i = 0
  Vector<T> chi;
  Index argmin = 0;  ///< the sample attaining min_i chi_i
};

namespace detail {
template <class T>
NormUniformity<T> uniformity_from_chi(Vector<T> chi) {
  NormUniformity<T> r;
  const T mean = chi.mean();
  const T lo = chi.minCoeff(&r.argmin);
  if (mean > 0) r.gamma = lo / mean;
  r.chi = std::move(chi);
  return r;
}
}  // namespace detail

/// The model gradients grad f(x_i) (d x N) of a model with one output (K = 1); ShapeError otherwise.
template <Model M>
Matrix<scalar_of<M>> model_gradients(M& m, const Matrix<scalar_of<M>>& x) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "model_gradients needs a PerSampleModel");
  CURVATURE_CHECK_SHAPE(x.cols() > 0, "model_gradients: x has no samples (0 columns)");
  Matrix<T> out;
  m.backward(x, [&](const Matrix<T>& f) {
    CURVATURE_CHECK_SHAPE(f.rows() == 1, "model_gradients: the model has K = ", f.rows(),
                          " outputs; grad f(x_i) and 002's norm uniformity (Def. 2.1) need K = 1");
    return Matrix<T>(Matrix<T>::Ones(1, f.cols()));
  }, Reduction::PerColumn, out, T(1));
  return out;
}

/// Norm uniformity with 002's own G = (1/N) sum_j g_j g_j^T of the model gradients g_j (the columns
/// of `model_grads`): chi_i = (1/N) sum_j (g_i . g_j)^2 from the Gram matrix (O(d N^2), no G).
template <Scalar T>
NormUniformity<T> norm_uniformity(const Matrix<T>& model_grads) {
  CURVATURE_CHECK_SHAPE(model_grads.cols() > 0, "norm_uniformity: model_grads has no columns (N = 0)");
  return detail::uniformity_from_chi<T>(detail::squared_gram_row_sums(model_grads, model_grads) /
                                        static_cast<T>(model_grads.cols()));
}

/// Norm uniformity with a caller's G (e.g. a GGNOperator): chi_i = g_i^T G g_i, N / block applies.
template <LinearOperator A>
NormUniformity<typename A::Scalar> norm_uniformity(A& g_op, const Matrix<typename A::Scalar>& model_grads,
                                                   Index block = 32) {
  CURVATURE_CHECK_SHAPE(model_grads.cols() > 0, "norm_uniformity: model_grads has no columns (N = 0)");
  return detail::uniformity_from_chi(per_sample_quadratic_forms(g_op, model_grads, block));
}

/// Norm uniformity of a one-output model on x with 002's G (the MSE GGN for K = 1).
template <Model M>
NormUniformity<scalar_of<M>> norm_uniformity(M& m, const Matrix<scalar_of<M>>& x) {
  return norm_uniformity(model_gradients(m, x));
}

}  // namespace curvature
