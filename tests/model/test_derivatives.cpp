// Model-level derivatives of the mean loss, checked against independent computations: finite
// differences of the loss and of the outputs, explicit Jacobians, hand-written backpropagation.
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "support/references.hpp"

using namespace curvature;
using namespace curvature::testing;

TEST_CASE("Gradient of the mean loss equals finite differences of the loss", "[model][gradient]") {
  Rng rng(1);
  Net m = gelu_mlp(false, 2);
  const Matrix<D> x = random_matrix(4, 7, rng);
  const auto y = labels(7, 3, rng);
  loss::CrossEntropy<D> ce;
  const auto lg = loss_and_gradient(m, ce, x, y);
  const Vector<D> p0 = m.params();
  Vector<D> fd(p0.size());
  for (Index j = 0; j < p0.size(); ++j) {
    Vector<D> p = p0;
    p[j] += 1e-6;
    m.set_params(p);
    const D lp = loss_value(m, ce, x, y);
    p[j] -= 2e-6;
    m.set_params(p);
    fd[j] = (lp - loss_value(m, ce, x, y)) / 2e-6;
  }
  CHECK(rel_err(lg.gradient, fd) < 1e-7);
}

TEST_CASE("HVP is exact: finite differences, symmetry and the dense Hessian", "[model][hvp]") {
  Rng rng(3);
  for (bool relu : {false, true}) {
    INFO("relu: " << relu);
    Net m = gelu_mlp(relu, 4);
    REQUIRE(m.num_params() <= 300);
    const Matrix<D> x = random_matrix(4, 9, rng);
    const auto y = labels(9, 3, rng);
    loss::CrossEntropy<D> ce;
    const Matrix<D> v = random_matrix(m.num_params(), 3, rng);
    const Matrix<D> hv = hvp(m, ce, x, y, v);
    const Matrix<D> hess = fd_hessian(m, ce, x, y);
    CHECK(rel_err(hv, hess * v) < 1e-6);
    // u'Hv = v'Hu
    const D uhv = v.col(0).dot(hv.col(1)), vhu = v.col(1).dot(hv.col(0));
    CHECK(std::abs(uhv - vhu) <= 1e-10 * std::max(1.0, std::abs(uhv)));
    // the whole Hessian from HVPs with the identity block
    const Matrix<D> full = hvp(m, ce, x, y, Matrix<D>::Identity(m.num_params(), m.num_params()));
    CHECK(rel_err(full, hess) < 1e-6);
  }
}

TEST_CASE("HVP with the MSE loss equals finite differences", "[model][hvp][mse]") {
  Rng rng(5);
  Net m = gelu_mlp(false, 6);
  const Matrix<D> x = random_matrix(4, 5, rng);
  const Matrix<D> y = random_matrix(3, 5, rng);
  loss::MeanSquaredError<D> mse;
  const Matrix<D> v = random_matrix(m.num_params(), 2, rng);
  CHECK(rel_err(hvp(m, mse, x, y, v), fd_hessian(m, mse, x, y) * v) < 1e-6);
  // L = 0.5 mean ||f - y||^2, computed here from the outputs
  CHECK(loss_value(m, mse, x, y) == Approx(0.5 * (m.forward(x) - y).squaredNorm() / 5).epsilon(1e-14));
}

TEST_CASE("Per-sample gradients and H_i v agree with batch-size-1 passes", "[model][per-sample]") {
  Rng rng(7);
  Net m = gelu_mlp(true, 8);
  const Index n = 6;
  const Matrix<D> x = random_matrix(4, n, rng);
  const auto y = labels(n, 3, rng);
  loss::CrossEntropy<D> ce;
  Matrix<D> g;
  per_sample_gradients(m, ce, x, y, g);
  REQUIRE(g.cols() == n);
  CHECK(rel_err(g.rowwise().mean(), loss_and_gradient(m, ce, x, y).gradient) < 1e-13);
  const Matrix<D> v = random_matrix(m.num_params(), 2, rng);
  Matrix<D> hi;
  per_sample_hvp(m, ce, x, y, v, hi);
  REQUIRE(hi.cols() == 2 * n);
  for (Index i = 0; i < n; ++i) {
    const Matrix<D> xi = x.col(i);
    const std::vector<std::int64_t> yi{y[i]};
    CHECK(rel_err(g.col(i), loss_and_gradient(m, ce, xi, yi).gradient) < 1e-13);
    const Matrix<D> h1 = hvp(m, ce, xi, yi, v);
    CHECK(rel_err(hi.col(i), h1.col(0)) < 1e-12);
    CHECK(rel_err(hi.col(n + i), h1.col(1)) < 1e-12);
  }
}

TEST_CASE("Exact GGN, Fisher and empirical Fisher diagonals equal explicit Jacobian sums", "[model][fisher]") {
  Rng rng(9);
  Net m = gelu_mlp(false, 10);
  const Index n = 5, d = m.num_params();
  const Matrix<D> x = random_matrix(4, n, rng);
  const auto y = labels(n, 3, rng);
  loss::CrossEntropy<D> ce;
  const Matrix<D> f = m.forward(x), p = ce.probabilities(f);
  Vector<D> ggn = Vector<D>::Zero(d), ef = Vector<D>::Zero(d);
  Matrix<D> per_sample(d, n);
  for (Index i = 0; i < n; ++i) {
    const Matrix<D> j = fd_jacobian(m, x, i);
    const Matrix<D> lam = Matrix<D>(p.col(i).asDiagonal()) - p.col(i) * p.col(i).transpose();
    per_sample.col(i) = (j.transpose() * lam * j).diagonal();
    ggn += per_sample.col(i) / n;
    Vector<D> dl = p.col(i);
    dl[y[i]] -= 1;  // d ell / d f for cross-entropy
    ef += (j.transpose() * dl).array().square().matrix() / n;
  }
  CHECK(rel_err(ggn_diagonal(m, ce, x, y), ggn) < 1e-8);
  CHECK(rel_err(fisher_diagonal(m, ce, x, y), ggn) < 1e-8);
  CHECK(rel_err(empirical_fisher_diagonal(m, ce, x, y), ef) < 1e-8);
  Matrix<D> ps;
  per_sample_ggn_diagonal(m, ce, x, y, ps);
  CHECK(rel_err(ps, per_sample) < 1e-8);
  // MSE: Lambda = I, so the GGN diagonal is the column sums of squared Jacobian entries
  loss::MeanSquaredError<D> mse;
  Vector<D> ggn_mse = Vector<D>::Zero(d);
  for (Index i = 0; i < n; ++i) ggn_mse += fd_jacobian(m, x, i).colwise().squaredNorm().transpose() / n;
  CHECK(rel_err(ggn_diagonal(m, mse, x, random_matrix(3, n, rng)), ggn_mse) < 1e-8);
}

TEST_CASE("MC Fisher diagonal is an unbiased estimate of the exact Fisher diagonal", "[model][fisher][statistical]") {
  Rng data(11);
  Net m = gelu_mlp(false, 12);
  const Index n = 8;
  const Matrix<D> x = random_matrix(4, n, data);
  const auto y = labels(n, 3, data);
  loss::CrossEntropy<D> ce;
  const D exact = fisher_diagonal(m, ce, x, y).sum();
  // 200 independent single-draw estimates of tr(F); their mean lies within 4 standard errors
  Rng rng(13);
  Vector<D> est(200);
  for (Index k = 0; k < est.size(); ++k) est[k] = mc_fisher_diagonal(m, ce, x, rng, 1).sum();
  const D mean = est.mean();
  const D se = std::sqrt((est.array() - mean).square().sum() / (est.size() - 1) / est.size());
  CHECK(std::abs(mean - exact) < 4 * se);
  CHECK(se > 0);
}

TEST_CASE("A two-layer MLP with weights written in the test gives hand-computed loss and gradient", "[model]") {
  nn::Sequential<D, S> m(nn::Shape{2, 1, 1});
  m.add(nn::Linear<D, S>(2)).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(2));
  Vector<D> p(12);
  p << 1.0, -2.0, 0.5, 1.5,  // W1 [2x2] row-major
      0.1, -0.3,             // b1
      2.0, -1.0, 0.5, 1.0,   // W2
      0.2, -0.1;             // b2
  m.set_params(p);
  Matrix<D> x(2, 1);
  x << 1.0, 0.5;
  const std::vector<std::int64_t> y{1};
  // by hand: z1 = W1 x + b1 = (0.1, 0.95) -> relu (0.1, 0.95); f = W2 h + b2 = (-1.15, 1.65)
  const D f0 = 2.0 * 0.1 - 1.0 * 0.95 + 0.2, f1 = 0.5 * 0.1 + 1.0 * 0.95 - 0.1;
  const D lse = std::log(std::exp(f0) + std::exp(f1));
  loss::CrossEntropy<D> ce;
  const auto lg = loss_and_gradient(m, ce, x, y);
  CHECK(lg.loss == Approx(lse - f1).epsilon(1e-14));
  const D p0 = std::exp(f0 - lse), p1 = std::exp(f1 - lse);
  const D d0 = p0, d1 = p1 - 1;  // dL/df
  Vector<D> g(12);
  const D dh0 = 2.0 * d0 + 0.5 * d1, dh1 = -1.0 * d0 + 1.0 * d1;  // W2^T dL/df, both units active
  g << dh0 * 1.0, dh0 * 0.5, dh1 * 1.0, dh1 * 0.5, dh0, dh1, d0 * 0.1, d0 * 0.95, d1 * 0.1, d1 * 0.95, d0, d1;
  CHECK(rel_err(lg.gradient, g) < 1e-13);
}

namespace {
/// A user-written model, not built from the library's layers: softmax regression f = W x.
struct UserLinearModel {
  using scalar_type = D;
  Index k, dim;
  Vector<D> theta;
  Index num_params() const { return theta.size(); }
  const Vector<D>& params() const { return theta; }
  Matrix<D> forward(const Matrix<D>& x) const { return Eigen::Map<const Matrix<D>>(theta.data(), k, dim) * x; }
  Vector<D> vjp(const Matrix<D>& x, const Matrix<D>& df) const {
    Matrix<D> g = df * x.transpose();
    return Eigen::Map<Vector<D>>(g.data(), g.size());
  }
};
static_assert(Model<UserLinearModel>);
static_assert(!PerSampleModel<UserLinearModel>);
static_assert(HvpModel<Net>);
}  // namespace

TEST_CASE("A user-written model works with the gradient path", "[model][concepts]") {
  Rng rng(15);
  UserLinearModel m{3, 4, random_matrix(12, 1, rng).col(0)};
  const Matrix<D> x = random_matrix(4, 6, rng);
  const auto y = labels(6, 3, rng);
  loss::CrossEntropy<D> ce;
  const auto lg = loss_and_gradient(m, ce, x, y);
  Vector<D> fd(12);
  for (Index j = 0; j < 12; ++j) {
    UserLinearModel a = m, b = m;
    a.theta[j] += 1e-6;
    b.theta[j] -= 1e-6;
    fd[j] = (loss_value(a, ce, x, y) - loss_value(b, ce, x, y)) / 2e-6;
  }
  CHECK(rel_err(lg.gradient, fd) < 1e-7);
}

TEST_CASE("Bad inputs are rejected with messages naming the problem", "[model][errors]") {
  Net m = gelu_mlp(true, 1);
  loss::CrossEntropy<D> ce;
  Matrix<D> x = Matrix<D>::Ones(5, 2);
  REQUIRE_THROWS_AS(m.forward(x), ShapeError);
  REQUIRE_THROWS_WITH(m.forward(x), Catch::Contains("takes 4"));
  x = Matrix<D>::Ones(4, 2);
  x(1, 1) = std::nan("");
  REQUIRE_THROWS_AS(m.forward(x), ValueError);
  x(1, 1) = 0;
  REQUIRE_THROWS_WITH(loss_and_gradient(m, ce, x, std::vector<std::int64_t>{0, 3}), Catch::Contains("label 3"));
  REQUIRE_THROWS_WITH(loss_and_gradient(m, ce, x, std::vector<std::int64_t>{0}), Catch::Contains("2 inputs but 1"));
  REQUIRE_THROWS_AS(hvp(m, ce, x, std::vector<std::int64_t>{0, 1}, Matrix<D>::Ones(7, 1)), ShapeError);
  Vector<D> wrong(3);
  REQUIRE_THROWS_WITH(m.set_params(wrong), Catch::Contains("3 values"));
}
