#pragma once
// Fisher-Rao norm theta^T F theta (001 Sec. 3.2; Liang et al. 2019), exact with one JVP:
// theta^T F theta = (1/N) sum_i (J_i theta)^T Lambda_i (J_i theta) (SPEC 1, 3).
#include "curvature/model/derivatives.hpp"

namespace curvature {

/// theta^T F theta at the model's current parameters over the batch (x, y), F the true Fisher
/// (= GGN for CE and MSE). Invariant under any linear reparametrization that leaves f unchanged.
template <Model M, Loss L>
scalar_of<M> fisher_rao_norm(M& m, const L& loss, const Matrix<scalar_of<M>>& x, const typename L::Targets& y) {
  using T = scalar_of<M>;
  static_assert(JvpModel<M>, "fisher_rao_norm needs a JvpModel: give the model jvp(x, V)");
  detail::check_batch(m, loss, x, y, "fisher_rao_norm");
  const Matrix<T> theta = m.params();
  const Matrix<T> u = m.jvp(x, theta);  // K x N: J_i theta
  const Matrix<T> f = m.forward(x);
  const Matrix<T> lu = loss.hessian_product(f, y, u);
  return u.cwiseProduct(lu).sum() / static_cast<T>(x.cols());
}

}  // namespace curvature
