#pragma once
// Derivatives of the mean loss L = (1/N) sum_i ell(y_i, f(x_i)) for any model and loss that
// model the concepts (SPEC sections 0-1). Each function is one forward and one backward pass.
#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"

namespace curvature {

template <Scalar T>
struct LossGradient {
  T loss;
  Vector<T> gradient;
};

namespace detail {
template <class M, class L>
void check_batch(const M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                 const char* fn) {
  static_assert(std::same_as<scalar_of<M>, scalar_of<L>>, "model and loss must use the same scalar type");
  CURVATURE_CHECK_SHAPE(loss.num_targets(y) == x.cols(), fn, ": ", x.cols(), " inputs but ", loss.num_targets(y),
                        " targets");
  (void)m;
}
}  // namespace detail

/// The mean loss L.
template <Model M, Loss L>
scalar_of<M> loss_value(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y) {
  detail::check_batch(m, loss, x, y, "loss_value");
  return loss.values(m.forward(x), y).mean();
}

/// L and its gradient g = (1/N) sum_i g_i.
template <Model M, Loss L>
LossGradient<scalar_of<M>> loss_and_gradient(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                             const typename L::Targets& y) {
  using T = scalar_of<M>;
  detail::check_batch(m, loss, x, y, "loss_and_gradient");
  T value = 0;
  if constexpr (PerSampleModel<M>) {
    Vector<T> out;
    m.backward(x, [&](const Matrix<T>& f) {
      value = loss.values(f, y).mean();
      return Matrix<T>(loss.gradient(f, y));
    }, Reduction::Sum, out, T(1) / static_cast<T>(x.cols()));
    return {value, std::move(out)};
  } else {
    const Matrix<T> f = m.forward(x);
    value = loss.values(f, y).mean();
    return {value, m.vjp(x, loss.gradient(f, y) / static_cast<T>(x.cols()))};
  }
}

/// Per-sample gradients g_i = grad ell_i as the columns of `out` (d x N; reused when its size fits).
template <Model M, Loss L>
void per_sample_gradients(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                          Matrix<scalar_of<M>>& out) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "per_sample_gradients needs a PerSampleModel: give the model "
                                   "backward(x, out_fn, Reduction, out, scale)");
  detail::check_batch(m, loss, x, y, "per_sample_gradients");
  m.backward(x, [&](const Matrix<T>& f) { return Matrix<T>(loss.gradient(f, y)); }, Reduction::PerColumn, out, T(1));
}

/// Exact Hessian-vector products H v_r for the columns of the d x m block V (Pearlmutter R-op).
template <Model M, Loss L>
Matrix<scalar_of<M>> hvp(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                         const Matrix<scalar_of<M>>& v) {
  using T = scalar_of<M>;
  static_assert(HvpModel<M>, "hvp needs an HvpModel: give the model jvp(x, V) and "
                             "hvp(x, V, rop, Reduction, out, scale)");
  detail::check_batch(m, loss, x, y, "hvp");
  Matrix<T> out;
  const T inv_n = T(1) / static_cast<T>(x.cols());
  m.hvp(x, v, [&](const Matrix<T>& f, const Matrix<T>& rf, Matrix<T>& df, Matrix<T>& rdf) {
    df = loss.gradient(f, y) * inv_n;
    rdf = loss.hessian_product(f, y, rf) * inv_n;
  }, Reduction::PerReplica, out, T(1));
  return out;
}

/// Per-sample products H_i v_r (H_i = Hessian of ell_i): column r*N + i of `out` (d x m*N).
template <Model M, Loss L>
void per_sample_hvp(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                    const Matrix<scalar_of<M>>& v, Matrix<scalar_of<M>>& out) {
  using T = scalar_of<M>;
  static_assert(HvpModel<M>, "per_sample_hvp needs an HvpModel");
  detail::check_batch(m, loss, x, y, "per_sample_hvp");
  m.hvp(x, v, [&](const Matrix<T>& f, const Matrix<T>& rf, Matrix<T>& df, Matrix<T>& rdf) {
    df = loss.gradient(f, y);
    rdf = loss.hessian_product(f, y, rf);
  }, Reduction::PerColumn, out, T(1));
}

/// Exact diagonal of the GGN G = (1/N) sum_i J_i^T Lambda_i J_i, by backpropagating the K columns of
/// the loss-Hessian factor. For cross-entropy and MSE this is also the exact (true) Fisher diagonal.
template <Model M, Loss L>
Vector<scalar_of<M>> ggn_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                  const typename L::Targets& y) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "ggn_diagonal needs a PerSampleModel");
  detail::check_batch(m, loss, x, y, "ggn_diagonal");
  Vector<T> out;
  m.backward(x, [&](const Matrix<T>& f) { return Matrix<T>(loss.hessian_factor(f, y)); }, Reduction::SumSquares,
             out, T(1) / static_cast<T>(x.cols()));
  return out;
}

/// Exact true-Fisher diagonal: equal to the GGN diagonal for the losses of the library (SPEC 1).
template <Model M, Loss L>
Vector<scalar_of<M>> fisher_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                     const typename L::Targets& y) {
  return ggn_diagonal(m, loss, x, y);
}

/// Per-sample GGN diagonals diag(J_i^T Lambda_i J_i) as the columns of `out` (d x N).
template <Model M, Loss L>
void per_sample_ggn_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                             Matrix<scalar_of<M>>& out) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "per_sample_ggn_diagonal needs a PerSampleModel");
  detail::check_batch(m, loss, x, y, "per_sample_ggn_diagonal");
  m.backward(x, [&](const Matrix<T>& f) { return Matrix<T>(loss.hessian_factor(f, y)); },
             Reduction::PerSampleSquares, out, T(1));
}

/// Exact diagonal of the empirical Fisher EF = (1/N) sum_i g_i g_i^T with the true labels
/// (Kunstner et al. 2019: not the Fisher).
template <Model M, Loss L>
Vector<scalar_of<M>> empirical_fisher_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                               const typename L::Targets& y) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "empirical_fisher_diagonal needs a PerSampleModel");
  detail::check_batch(m, loss, x, y, "empirical_fisher_diagonal");
  Vector<T> out;
  m.backward(x, [&](const Matrix<T>& f) { return Matrix<T>(loss.gradient(f, y)); }, Reduction::SumSquares, out,
             T(1) / static_cast<T>(x.cols()));
  return out;
}

/// Monte-Carlo Fisher diagonal (000 eq. 2 and 33, which call it "empirical"): mean over samples
/// and over `draws` labels y~ ~ p(.|x_i) of squared per-sample gradients; unbiased for diag(F).
template <Model M, Loss L>
Vector<scalar_of<M>> mc_fisher_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x, Rng& rng,
                                        Index draws = 1) {
  using T = scalar_of<M>;
  static_assert(PerSampleModel<M>, "mc_fisher_diagonal needs a PerSampleModel");
  CURVATURE_CHECK_VALUE(draws >= 1, "mc_fisher_diagonal: draws must be >= 1, got ", draws);
  Vector<T> out;
  m.backward(x, [&](const Matrix<T>& f) {
    Matrix<T> g(f.rows(), f.cols() * draws);
    for (Index s = 0; s < draws; ++s) g.middleCols(s * f.cols(), f.cols()) = loss.gradient(f, loss.sample(f, rng));
    return g;
  }, Reduction::SumSquares, out, T(1) / static_cast<T>(x.cols() * draws));
  return out;
}

}  // namespace curvature
