#pragma once
// curvature-probe --exact (d <= 5000): dense H, F (= GGN for ce and mse) and EF by materialize,
// their eigendecompositions, and every measure of CLI.md computed from them exactly.
#include <algorithm>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Eigenvalues>

#include "curvature/measures/igs.hpp"
#include "curvature/operators/dense.hpp"
#include "probe_report.hpp"

namespace curvature::probe {

/// w_j = 1 / (f_j + lambda): the diagonal metric of 000 eq. 4. At lambda = 0, the pseudo-inverse
/// of diag(f): entries at or below the round-off floor max|f| d eps weigh 0 instead of 1/0.
inline Vector<double> inverse_weights(const Vector<double>& f, double lambda) {
  const double floor = f.size() ? f.cwiseAbs().maxCoeff() * static_cast<double>(f.size()) *
                                      std::numeric_limits<double>::epsilon()
                                : 0.0;
  Vector<double> w(f.size());
  for (Index j = 0; j < f.size(); ++j)
    w(j) = lambda > 0 ? 1.0 / (f(j) + lambda) : (f(j) > floor ? 1.0 / f(j) : 0.0);
  return w;
}

/// A dense symmetric curvature matrix with its ascending eigenvalues (and eigenvectors if asked).
struct DenseMatrix {
  Matrix<double> a;
  Eigen::SelfAdjointEigenSolver<Matrix<double>> eig;

  template <class A>
    requires LinearOperator<std::remove_cvref_t<A>>
  DenseMatrix(A&& op, bool vectors) : a(materialize(op)) {
    a = (a + a.transpose()).eval() / 2;  // materialize returns round-off asymmetry as computed
    eig.compute(a, vectors ? Eigen::ComputeEigenvectors : Eigen::EigenvaluesOnly);
  }
  /// trace, frobenius, lambda_max, top_eigenvalues [top] (largest first).
  Json block(Index top) const {
    const Vector<double>& ev = eig.eigenvalues();
    std::vector<double> t;
    for (Index k = 0; k < top; ++k) t.push_back(ev(ev.size() - 1 - k));
    Json j;
    j["trace"] = a.trace();
    j["frobenius"] = a.norm();
    j["lambda_max"] = ev(ev.size() - 1);
    j["top_eigenvalues"] = t;
    return j;
  }
};

/// tr((F + lambda I)^-1 H) (000 eq. 6, damped) for each lambda: sum_k u_k^T H u_k / (e_k + lambda)
/// over F's eigenpairs; lambda = 0 uses F^+ = W W^T with the largest-gap rank (SPEC 3): tr(W^T H W).
inline Json dense_riemannian(const DenseMatrix& h, const DenseMatrix& f, const FisherPseudoInverse<double>& pinv,
                             const std::vector<double>& damping) {
  const Matrix<double>& u = f.eig.eigenvectors();
  const Vector<double> uhu = u.cwiseProduct(h.a * u).colwise().sum().transpose();  // u_k^T H u_k
  Json j = Json::object();
  for (double lambda : damping) {
    if (lambda > 0) j[lambda_key(lambda)] = (uhu.array() / (f.eig.eigenvalues().array() + lambda)).sum();
    else j[lambda_key(lambda)] = (pinv.w.transpose() * h.a * pinv.w).trace();
  }
  return j;
}

/// sum_j h_jj w_j for each lambda (000 eq. 4) with the given Fisher diagonal.
inline Json diagonal_riemannian(const Vector<double>& h_diag, const Vector<double>& f_diag,
                                const std::vector<double>& damping) {
  Json j = Json::object();
  for (double lambda : damping) j[lambda_key(lambda)] = h_diag.dot(inverse_weights(f_diag, lambda));
  return j;
}

/// The curvature blocks: hessian, fisher (with its rank), empirical_fisher, euclidean_sharpness.
inline void add_dense_blocks(Json& j, const DenseMatrix& h, const DenseMatrix& f, const DenseMatrix& ef, Index top,
                             Index fisher_rank) {
  Json hb = h.block(top);
  hb["trace_stderr"] = 0.0;
  hb["diagonal_sum"] = h.a.diagonal().sum();
  j["hessian"] = hb;
  Json fb = f.block(top);
  fb["rank"] = fisher_rank;
  j["fisher"] = fb;
  j["empirical_fisher"] = ef.block(top);
  j["euclidean_sharpness"] = h.a.trace();
}

/// The whole report of --exact.
template <class L>
Json exact_report(Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y, const Options& o) {
  Json j = header_keys(m, loss, x, y);
  const Index top = std::min(o.top, m.num_params());
  const DenseMatrix h(HessianOperator(m, loss, x, y), false);
  const DenseMatrix f(FisherOperator(m, loss, x, y), true);
  const DenseMatrix ef(EmpiricalFisherOperator(m, loss, x, y), false);
  const FisherPseudoInverse<double> pinv = fisher_pseudo_inverse(m, loss, x, y, exact_max_params);
  add_dense_blocks(j, h, f, ef, top, pinv.rank);
  const Vector<double> h_diag = h.a.diagonal();
  j["riemannian_sharpness_diag"] = diagonal_riemannian(h_diag, fisher_diagonal(m, loss, x, y), o.damping);
  j["riemannian_sharpness_diag_ef"] = diagonal_riemannian(h_diag, empirical_fisher_diagonal(m, loss, x, y), o.damping);
  j["riemannian_sharpness"] = dense_riemannian(h, f, pinv, o.damping);
  const IgsResult<double> igs = information_geometric_sharpness(m, loss, x, y, pinv);
  j["igs"] = igs.value;
  j["igs_batch"] = minibatch_igs(igs, x.cols());  // 001 eq. 7 with b = N: gbar^T F^+ gbar
  j["igs_rank"] = igs.rank;
  j["igs_gap"] = igs.gap;
  add_trailer(j, m, loss, x, y, o, h.a.norm());
  return j;
}

}  // namespace curvature::probe
