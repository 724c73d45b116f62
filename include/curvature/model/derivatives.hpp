#pragma once
// Derivatives of the mean loss L = (1/N) sum_i ell(y_i, f(x_i)) for any model and loss that
// model the concepts (SPEC sections 0-1). Each function is one forward and one backward pass.
#include <string>

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

/// m.hvp(x, V, rop, PerReplica, out, scale) with ColumnHooks: the model calls them group by group
/// when it takes them (HookedHvpModel), else before(0, m) comes first and after(0, m) last.
template <class M, class Rop>
void hooked_hvp(M& m, const Matrix<scalar_of<M>>& x, const Matrix<scalar_of<M>>& v, Rop&& rop,
                Matrix<scalar_of<M>>& out, scalar_of<M> scale, const ColumnHooks& hooks) {
  if constexpr (HookedHvpModel<M>) {
    m.hvp(x, v, rop, Reduction::PerReplica, out, scale, hooks);
  } else {
    hooks.call_before(0, v.cols());
    m.hvp(x, v, rop, Reduction::PerReplica, out, scale);
    hooks.call_after(0, v.cols());
  }
}

/// m.jet2(x, V, fn) with ColumnHooks, as hooked_hvp (HookedJet2Model).
template <class M, class Fn>
void hooked_jet2(M& m, const Matrix<scalar_of<M>>& x, const Matrix<scalar_of<M>>& v, Fn&& fn,
                 const ColumnHooks& hooks) {
  if constexpr (HookedJet2Model<M>) {
    m.jet2(x, v, fn, hooks);
  } else {
    hooks.call_before(0, v.cols());
    m.jet2(x, v, fn);
    hooks.call_after(0, v.cols());
  }
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
/// With `hooks` (ColumnHooks): columns of V may be written in before(j0, j1) and columns of the
/// result read in after(j0, j1) (group by group for the built-in models, else around the call).
Matrix<scalar_of<M>> hvp(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y,
                         const Matrix<scalar_of<M>>& v, const ColumnHooks& hooks = {}) {
  using T = scalar_of<M>;
  static_assert(HvpModel<M>, "hvp needs an HvpModel: give the model jvp(x, V) and "
                             "hvp(x, V, rop, Reduction, out, scale)");
  detail::check_batch(m, loss, x, y, "hvp");
  Matrix<T> out;
  const T inv_n = T(1) / static_cast<T>(x.cols());
  const auto rop = [&](const Matrix<T>& f, const Matrix<T>& rf, Matrix<T>& df, Matrix<T>& rdf) {
    df = loss.gradient(f, y) * inv_n;
    rdf = loss.hessian_product(f, y, rf) * inv_n;
  };
  detail::hooked_hvp(m, x, v, rop, out, T(1), hooks);
  return out;
}

/// Exact quadratic forms v_r' H v_r of the Hessian of the mean loss for the columns of the d x m
/// block V. A Jet2Model whose layers all have a second-order forward mode gives them by one Taylor
/// pass, d^2/dt^2 L(theta + t v) = (1/N) sum_i (J_i v)' Lambda_i (J_i v) + grad_f ell_i' (d^2 f_i/dt^2),
/// without a backward pass; other HvpModels by v_r' (H v_r).
/// With `hooks` (ColumnHooks): columns of V may be written in before(j0, j1) (the built-in models
/// take the directions in groups; other models call before(0, m) first); after(0, m) follows.
template <Model M, Loss L>
Vector<scalar_of<M>> hessian_quadratic_forms(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                             const typename L::Targets& y, const Matrix<scalar_of<M>>& v,
                                             const ColumnHooks& hooks = {}) {
  using T = scalar_of<M>;
  static_assert(HvpModel<M> || Jet2Model<M>, "hessian_quadratic_forms needs an HvpModel or a Jet2Model");
  detail::check_batch(m, loss, x, y, "hessian_quadratic_forms");
  const Index n = x.cols(), reps = v.cols();
  const T inv_n = T(1) / static_cast<T>(n);
  if constexpr (Jet2Model<M>) {
    if (m.supports_jet2()) {
      Vector<T> q(reps);
      const auto fn = [&](const Matrix<T>& f, const Matrix<T>& rf, const Matrix<T>& rrf) {
        const Matrix<T> g = loss.gradient(f, y);
        const Matrix<T> hrf = loss.hessian_product(f, y, rf);
        for (Index r = 0; r < reps; ++r)
          q(r) = (rf.middleCols(r * n, n).cwiseProduct(hrf.middleCols(r * n, n)).sum() +
                  g.cwiseProduct(rrf.middleCols(r * n, n)).sum()) * inv_n;
      };
      detail::hooked_jet2(m, x, v, fn, hooks);
      return q;
    }
  }
  if constexpr (HvpModel<M>) {  // the columns of V written in before(), group by group where it can
    Vector<T> q = hvp(m, loss, x, y, v, hooks.before_only()).cwiseProduct(v).colwise().sum().transpose();
    hooks.call_after(0, reps);
    return q;
  } else {
    throw UnsupportedError("hessian_quadratic_forms: the model's layers have no second-order forward mode "
                           "and the model has no hvp");
  }
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

/// Exact Hessian diagonal of a network that is piecewise linear in its input and affine in each
/// single parameter at every layer (ReLU/LeakyReLU networks of Linear, Conv2d, pooling and eval-mode
/// BatchNorm; Sequential::piecewise_linear()). Then f is piecewise linear in each theta_j, so the
/// residual term sum_c dL/df_c d^2 f_c/d theta_j^2 of H_jj vanishes almost everywhere and
/// diag(H) = diag(GGN) (SPEC 1): the exact diagonal at the cost of ggn_diagonal, with no probes.
/// For such networks with cross-entropy, also H_jj = F_jj (true Fisher). Throws UnsupportedError
/// naming the first curved layer otherwise (use hutchinson_diagonal on a HessianOperator).
template <Model M, Loss L>
Vector<scalar_of<M>> hessian_diagonal(M& m, const L& loss, const Matrix<scalar_of<M>>& x,
                                      const typename L::Targets& y) {
  static_assert(requires { { m.curved_layer() } -> std::convertible_to<std::string>; },
                "hessian_diagonal needs a model that names its first non-piecewise-linear layer: give it "
                "curved_layer() (\"\" when every layer is piecewise linear)");
  const std::string curved = m.curved_layer();
  if (!curved.empty())
    throw UnsupportedError("hessian_diagonal: exact only for piecewise-linear networks (ReLU, LeakyReLU, pooling, "
                           "Linear, Conv2d, eval-mode BatchNorm); layer " + curved +
                           " is not, so d^2 f/d theta_j^2 != 0: estimate the diagonal with hutchinson_diagonal "
                           "on a HessianOperator");
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
