#pragma once
// The symmetric Lanczos recurrence (Lanczos 1950; Paige 1972) for b start vectors run in lockstep:
// each step applies the operator once to the d x b' block of still-active vectors, so b SLQ starts
// cost b-column products. Recurrence, for unit v_0:
//   w = A v_j - beta_{j-1} v_{j-1},  alpha_j = v_j^T A v_j,  w -= alpha_j v_j,
//   beta_j = ||w||,  v_{j+1} = w / beta_j,
// giving A V_n = V_n T_n + beta_{n-1} v_n e_n^T with T_n = tridiag(beta, alpha, beta).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include <Eigen/Eigenvalues>

#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/probes.hpp"

namespace curvature::detail {

template <class T>
class LanczosBlock {
 public:
  /// `starts` (d x b) are normalised here. A column stops after `max_steps` steps or at a
  /// breakdown (beta ~ 0: its Krylov space is invariant). With `keep_basis` the Lanczos vectors
  /// are stored and each new one is reorthogonalised against them twice (full
  /// reorthogonalisation; "twice is enough", Giraud et al. 2005). With a `restart_seed` (needs
  /// keep_basis) a breakdown continues with a random vector orthogonal to the basis and beta = 0,
  /// so that repeated eigenvalues are found too.
  LanczosBlock(Matrix<T> starts, Index max_steps, bool keep_basis, std::optional<std::uint64_t> restart_seed = {})
      : cur_(std::move(starts)), prev_(Matrix<T>::Zero(cur_.rows(), cur_.cols())),
        alpha_(Matrix<T>::Zero(max_steps, cur_.cols())), beta_(Matrix<T>::Zero(max_steps, cur_.cols())),
        len_(cur_.cols(), 0), anorm_(cur_.cols(), T(0)), max_steps_(max_steps), keep_basis_(keep_basis),
        restart_seed_(restart_seed) {
    for (Index c = 0; c < cur_.cols(); ++c) {
      const T n = cur_.col(c).norm();
      CURVATURE_CHECK_VALUE(n > 0 && std::isfinite(n), "lanczos: start vector ", c, " has norm ", n);
      cur_.col(c) /= n;
      active_.push_back(c);
      if (keep_basis_) {
        basis_.emplace_back(cur_.rows(), std::min<Index>(max_steps_, 32));
        basis_.back().col(0) = cur_.col(c);
      }
    }
  }

  /// One step for every active column: one operator application of the active block.
  template <LinearOperator A>
  void step(A& op, const char* fn) {
    if (active_.empty()) return;
    const Index n = static_cast<Index>(active_.size());
    if (n == cur_.cols()) {
      apply_checked(op, cur_, w_, fn);
    } else {
      block_.resize(cur_.rows(), n);
      for (Index i = 0; i < n; ++i) block_.col(i) = cur_.col(active_[i]);
      apply_checked(op, block_, w_, fn);
    }
    matvecs_ += n;
    std::vector<Index> still;
    for (Index i = 0; i < n; ++i)
      if (advance(active_[i], w_.col(i))) still.push_back(active_[i]);
    active_ = std::move(still);
  }

  bool finished() const { return active_.empty(); }
  Index matvecs() const { return matvecs_; }
  Index length(Index c) const { return len_[c]; }
  /// beta_{n-1} of column c: the norm of the residual block A V_n - V_n T_n.
  T last_beta(Index c) const { return len_[c] > 0 ? beta_(len_[c] - 1, c) : T(0); }
  /// The Lanczos vectors V_n (d x n) of column c (keep_basis only).
  auto basis(Index c) const { return basis_[c].leftCols(len_[c]); }

  /// Eigen-decomposition of T_n of column c (ascending eigenvalues, orthonormal eigenvectors).
  Eigen::SelfAdjointEigenSolver<Matrix<T>> eigen(Index c) const {
    const Index n = len_[c];
    Vector<T> diag = alpha_.col(c).head(n), sub = beta_.col(c).head(std::max<Index>(n - 1, 0));
    Eigen::SelfAdjointEigenSolver<Matrix<T>> es;
    es.computeFromTridiagonal(diag, sub, Eigen::ComputeEigenvectors);
    return es;
  }

 private:
  /// Completes step j of column c from w = A v_j; false when the column has stopped.
  bool advance(Index c, Eigen::Ref<Vector<T>> w) {
    const Index j = len_[c];
    const T a = cur_.col(c).dot(w);
    w -= a * cur_.col(c);
    if (j > 0) w -= beta_(j - 1, c) * prev_.col(c);
    if (keep_basis_) orthogonalize(c, j + 1, w);
    const T b = w.norm();
    alpha_(j, c) = a;
    beta_(j, c) = b;
    len_[c] = j + 1;
    anorm_[c] = std::max(anorm_[c], std::abs(a) + b + (j > 0 ? beta_(j - 1, c) : T(0)));  // >= ||T||
    if (len_[c] == max_steps_) return false;
    prev_.col(c) = cur_.col(c);
    if (b > T(100) * std::numeric_limits<T>::epsilon() * anorm_[c]) {
      cur_.col(c) = w / b;
    } else {  // breakdown: the Krylov space is invariant
      if (!restart_seed_ || !restart(c, j, w)) return false;
      beta_(j, c) = T(0);  // T_n decouples into blocks
      cur_.col(c) = w;
    }
    if (keep_basis_) store(c, j + 1);
    return true;
  }

  /// w -= V V^T w twice, V the first n Lanczos vectors of column c.
  void orthogonalize(Index c, Index n, Eigen::Ref<Vector<T>> w) {
    const auto v = basis_[c].leftCols(n);
    for (int pass = 0; pass < 2; ++pass) {
      h_.noalias() = v.transpose() * w;
      w.noalias() -= v * h_;
    }
  }

  /// A unit random vector orthogonal to the first j + 1 Lanczos vectors, in w; false if none.
  bool restart(Index c, Index j, Eigen::Ref<Vector<T>> w) {
    Matrix<T> r = make_probes<T>(cur_.rows(), 1, Probe::Gaussian, *restart_seed_, j);
    w = r.col(0) / r.norm();
    orthogonalize(c, j + 1, w);
    const T n = w.norm();
    if (!(n > std::sqrt(std::numeric_limits<T>::epsilon()))) return false;  // R^d is exhausted
    w /= n;
    return true;
  }

  void store(Index c, Index col) {
    Matrix<T>& v = basis_[c];
    if (v.cols() <= col) v.conservativeResize(Eigen::NoChange, std::min<Index>(max_steps_, 2 * v.cols()));
    v.col(col) = cur_.col(c);
  }

  Matrix<T> cur_, prev_, alpha_, beta_, w_, block_;
  Vector<T> h_;
  std::vector<Matrix<T>> basis_;
  std::vector<Index> len_, active_;
  std::vector<T> anorm_;
  Index max_steps_, matvecs_ = 0;
  bool keep_basis_;
  std::optional<std::uint64_t> restart_seed_;
};

}  // namespace curvature::detail
