// How each sharpness measure moves when a ReLU network is reparametrized without changing its
// function (000 Sec. 6.5, 001 Fig. 2): layer 1 (weights and bias) times alpha, layer 2's weights
// times 1/alpha. Exact dense values in float64 on a small MLP (d = 316) and a fixed random batch.
//   build/examples/rescaling
#include <Eigen/Eigenvalues>
#include <cstdio>
#include <curvature/curvature.hpp>

using namespace curvature;
using T = double;
using Net = nn::Sequential<T, backend::Serial>;

namespace {

struct Row {
  T trace_h, sr_diag, sr_diag_ef, sr_kfac, sr_dense, sr_pinv, igs, fisher_rao;
};

Row measure(Net& m, const Matrix<T>& x, const std::vector<std::int64_t>& y, T lambda) {
  loss::CrossEntropy<T> ce;
  HessianOperator hop(m, ce, x, y);
  FisherOperator fop(m, ce, x, y);
  const Matrix<T> h = materialize(hop), f = materialize(fop);
  KfacOperator kfac(m, ce, x, y);
  const Matrix<T> fk = materialize(kfac) + lambda * Matrix<T>::Identity(h.rows(), h.cols());
  Row r{};
  r.trace_h = h.trace();
  r.sr_diag = riemannian_sharpness_diagonal(Vector<T>(h.diagonal()), fisher_diagonal(m, ce, x, y), lambda);
  r.sr_diag_ef = riemannian_sharpness_diagonal(Vector<T>(h.diagonal()), empirical_fisher_diagonal(m, ce, x, y), lambda);
  r.sr_kfac = fk.ldlt().solve(h).trace();
  r.sr_dense = riemannian_sharpness_dense(h, f, lambda);
  r.sr_pinv = riemannian_sharpness_dense(h, f, T(0));
  r.igs = information_geometric_sharpness(m, ce, x, y).value;
  r.fisher_rao = fisher_rao_norm(m, ce, x, y);
  return r;
}

}  // namespace

int main() {
  Net m(nn::Shape{8, 1, 1});
  m.add(nn::Linear<T, backend::Serial>(12)).add(nn::ReLU<T, backend::Serial>());
  m.add(nn::Linear<T, backend::Serial>(12)).add(nn::ReLU<T, backend::Serial>());
  m.add(nn::Linear<T, backend::Serial>(4));
  m.init(1);
  Rng rng(2);
  const Index n = 64;
  Matrix<T> x(8, n);
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = rng.normal<T>();
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(4));
  const T lambda = 1e-6;
  const Vector<T> theta = m.params();
  const Matrix<T> f0 = m.forward(x);
  std::printf("ReLU MLP 8-12-12-4, d = %ld, N = %ld, lambda = %g; layer 1 x alpha, layer 2 weights / alpha\n",
              static_cast<long>(m.num_params()), static_cast<long>(n), lambda);
  std::printf("%6s %9s %11s %11s %11s %11s %11s %11s %11s %11s\n", "alpha", "max|df|", "tr(H)", "S_R diag",
              "S_R diagEF", "S_R K-FAC", "S_R dense", "S_R pinv", "IGS", "theta'F theta");
  for (T alpha : {T(1), T(0.1), T(0.5), T(2), T(10)}) {
    Vector<T> p = theta;
    p.segment(m.param_offset(0), 8 * 12 + 12) *= alpha;
    p.segment(m.param_offset(2), 12 * 12) /= alpha;
    m.set_params(p);
    const T df = (m.forward(x) - f0).cwiseAbs().maxCoeff();
    const Row r = measure(m, x, y, lambda);
    std::printf("%6g %9.1e %11.5g %11.5g %11.5g %11.5g %11.5g %11.5g %11.5g %11.5g\n", alpha, df, r.trace_h, r.sr_diag,
                r.sr_diag_ef, r.sr_kfac, r.sr_dense, r.sr_pinv, r.igs, r.fisher_rao);
  }
  return 0;
}
