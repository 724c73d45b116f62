// Model-level derivatives of the mean loss, checked against independent computations: finite
// differences of the loss and of the outputs, explicit Jacobians, hand-written backpropagation.
#include <catch2/catch.hpp>

#include <limits>

#include "curvature/curvature.hpp"
#include "curvature/nn/arch.hpp"
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

namespace {
/// v_r' A v_r for the columns of V.
Vector<D> quadratic(const Matrix<D>& a, const Matrix<D>& v) { return (v.transpose() * a * v).diagonal(); }
}  // namespace

TEST_CASE("Hessian quadratic forms by second-order forward mode equal the finite-difference Hessian",
          "[model][jet2]") {
  Rng rng(17);
  struct Case {
    const char* name;
    nn::Shape in;
    std::string arch;
  };
  // Every layer kind with a second-order forward mode: smooth and piecewise-linear activations,
  // pools, convolutions with stride and padding, layout changes, residual blocks.
  const std::vector<Case> cases = {
      {"tanh/gelu mlp", nn::Shape{4, 1, 1}, "linear(6),tanh,linear(5),gelu,linear(3)"},
      {"relu mlp", nn::Shape{4, 1, 1}, "linear(6),relu,linear(5),leakyrelu(0.1),linear(3)"},
      {"conv net", nn::Shape{2, 6, 6}, "conv(3,k=3,p=1),relu,maxpool(2),conv(2,k=2,s=1),sigmoid,avgpool(2),flatten,linear(3)"},
      {"strided conv", nn::Shape{1, 5, 5}, "conv(2,k=3,s=2,p=1),gelu,flatten,linear(3)"},
      {"residual", nn::Shape{4, 1, 1}, ""},
      {"residual first", nn::Shape{4, 1, 1}, ""},
  };
  auto build = [](const Case& c) {
    if (!c.arch.empty()) return nn::parse_arch<D, S>(c.in, c.arch);
    Net m(c.in);  // residual blocks have no --arch syntax
    nn::Residual<D, S> block;
    if (std::string(c.name) == "residual") {
      block.add(nn::Linear<D, S>(5)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(5));
      m.add(nn::Linear<D, S>(5)).add(std::move(block)).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(3));
    } else {  // the block is the first layer: its input has no tangent, its parameters do
      block.add(nn::Linear<D, S>(4)).add(nn::GELU<D, S>()).add(nn::Linear<D, S>(4));
      m.add(std::move(block)).add(nn::Linear<D, S>(3));
    }
    return m;
  };
  for (const auto& c : cases) {
    INFO(c.name);
    Net m = build(c);
    m.init(3);
    REQUIRE(m.supports_jet2());
    const Matrix<D> x = random_matrix(c.in.size(), 5, rng);
    const auto y = labels(5, 3, rng);
    const Matrix<D> v = random_matrix(m.num_params(), 4, rng);
    const Matrix<D> hess = fd_hessian(m, CE{}, x, y);
    const Vector<D> q = hessian_quadratic_forms(m, CE{}, x, y, v);
    CHECK(rel_err(q, quadratic(hess, v)) < 1e-6);
    const Matrix<D> t = random_matrix(3, 5, rng);  // MSE: Lambda = I, a different residual term
    CHECK(rel_err(hessian_quadratic_forms(m, MSE{}, x, t, v), quadratic(fd_hessian(m, MSE{}, x, t), v)) < 1e-6);
  }
}

TEST_CASE("Hessian quadratic forms equal the second derivative of the loss along the line", "[model][jet2]") {
  // An independent check that needs no Hessian: d^2/dt^2 L(theta + t v) by central differences.
  Rng rng(19);
  Net m = tiny_cnn(4);
  const Matrix<D> x = random_matrix(25, 6, rng);
  const auto y = labels(6, 3, rng);
  const Matrix<D> v = random_matrix(m.num_params(), 3, rng);
  const Vector<D> q = hessian_quadratic_forms(m, CE{}, x, y, v);
  const Vector<D> p0 = m.params();
  const D h = 1e-4;
  for (Index r = 0; r < v.cols(); ++r) {
    auto at = [&](D t) {
      m.set_params(p0 + t * v.col(r));
      return loss_value(m, CE{}, x, y);
    };
    const D fd = (at(h) - 2 * at(0) + at(-h)) / (h * h);
    CHECK(q(r) == Approx(fd).epsilon(1e-5));
  }
  m.set_params(p0);
}

TEST_CASE("Models without a second-order forward mode get Hessian quadratic forms from HVPs", "[model][jet2]") {
  Rng rng(23);
  Net m = nn::parse_arch<D, S>(nn::Shape{4, 1, 1}, "linear(5),batchnorm,tanh,linear(3)");
  m.init(2);
  m.set_training(true);
  CHECK_FALSE(m.supports_jet2());
  const Matrix<D> x = random_matrix(4, 6, rng);
  const auto y = labels(6, 3, rng);
  const Matrix<D> v = random_matrix(m.num_params(), 2, rng);
  CHECK(rel_err(hessian_quadratic_forms(m, CE{}, x, y, v), quadratic(fd_hessian(m, CE{}, x, y), v)) < 1e-6);
  CHECK_THROWS_WITH(m.jet2(x, v, [](const Matrix<D>&, const Matrix<D>&, const Matrix<D>&) {}),
                    Catch::Contains("batchnorm") && Catch::Contains("second-order forward mode"));
}

TEST_CASE("The Hessian diagonal of a piecewise-linear network equals its GGN diagonal, and only then",
          "[model][hessian-diagonal]") {
  Rng rng(29);
  struct Case {
    const char* name;
    nn::Shape in;
    const char* arch;
  };
  const std::vector<Case> piecewise = {
      {"relu mlp", nn::Shape{4, 1, 1}, "linear(6),relu,linear(5),leakyrelu(0.1),linear(3)"},
      {"conv net", nn::Shape{2, 6, 6}, "conv(3,k=3,p=1),relu,maxpool(2),conv(2,k=2,s=1),avgpool(2),flatten,linear(3)"},
      {"eval batchnorm", nn::Shape{4, 1, 1}, "linear(5),batchnorm,relu,linear(3)"},
  };
  for (const auto& c : piecewise) {
    INFO(c.name);
    Net m = nn::parse_arch<D, S>(c.in, c.arch);
    m.init(5);
    REQUIRE(m.piecewise_linear());
    const Matrix<D> x = random_matrix(c.in.size(), 6, rng);
    const auto y = labels(6, 3, rng);
    // the reference: the diagonal of the finite-difference Hessian (no GGN involved)
    CHECK(rel_err(hessian_diagonal(m, CE{}, x, y), Vector<D>(fd_hessian(m, CE{}, x, y).diagonal())) < 1e-6);
    const Matrix<D> t = random_matrix(3, 6, rng);
    CHECK(rel_err(hessian_diagonal(m, MSE{}, x, t), Vector<D>(fd_hessian(m, MSE{}, x, t).diagonal())) < 1e-6);
  }
  {  // a residual block of piecewise-linear layers keeps the property
    Net m(nn::Shape{4, 1, 1});
    nn::Residual<D, S> block;
    block.add(nn::Linear<D, S>(4)).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(4));
    m.add(nn::Linear<D, S>(4)).add(std::move(block)).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(3));
    m.init(6);
    REQUIRE(m.piecewise_linear());
    const Matrix<D> x = random_matrix(4, 5, rng);
    const auto y = labels(5, 3, rng);
    CHECK(rel_err(hessian_diagonal(m, CE{}, x, y), Vector<D>(fd_hessian(m, CE{}, x, y).diagonal())) < 1e-6);
  }
  // With a curved layer the identity fails, and hessian_diagonal says so instead of answering.
  for (const char* arch : {"linear(6),tanh,linear(3)", "linear(6),relu,linear(5),gelu,linear(3)"}) {
    INFO(arch);
    Net m = nn::parse_arch<D, S>(nn::Shape{4, 1, 1}, arch);
    m.init(7);
    CHECK_FALSE(m.piecewise_linear());
    const Matrix<D> x = random_matrix(4, 6, rng);
    const auto y = labels(6, 3, rng);
    CHECK(rel_err(ggn_diagonal(m, CE{}, x, y), Vector<D>(fd_hessian(m, CE{}, x, y).diagonal())) > 1e-3);
    CHECK_THROWS_WITH(hessian_diagonal(m, CE{}, x, y), Catch::Contains("hessian_diagonal") &&
                                                          Catch::Contains(m.curved_layer()));
  }
  Net bn = nn::parse_arch<D, S>(nn::Shape{4, 1, 1}, "linear(5),batchnorm,relu,linear(3)");
  bn.set_training(true);  // batch statistics: not piecewise linear
  CHECK(bn.curved_layer().rfind("batchnorm", 0) == 0);
  const Matrix<D> x = random_matrix(4, 6, rng);
  CHECK_THROWS_AS(hessian_diagonal(bn, CE{}, x, labels(6, 3, rng)), UnsupportedError);
}

TEST_CASE("The cross-entropy Hessian factor S satisfies S S^T = diag(p) - p p^T, also at extreme logits",
          "[model][loss]") {
  Rng rng(31);
  CE ce;
  for (Index k : {2, 3, 10}) {
    Matrix<D> f = 3.0 * random_matrix(k, 6, rng);
    f(0, 4) = 800;       // p = e_0 to double precision: the other classes underflow
    f(k - 1, 5) = -900;  // the last class underflows alone
    const Labels y = labels(6, k, rng);
    const Matrix<D> s = ce.hessian_factor(f, y);
    REQUIRE(s.rows() == k);
    REQUIRE(s.cols() == k * 6);
    REQUIRE(s.allFinite());
    for (Index i = 0; i < 6; ++i) {
      INFO("K = " << k << ", sample " << i);
      Matrix<D> si(k, k);
      for (Index c = 0; c < k; ++c) si.col(c) = s.col(c * 6 + i);
      const Matrix<D> lambda = output_hessian(ce, Vector<D>(f.col(i)));  // closed form from softmax
      CHECK((si * si.transpose() - lambda).cwiseAbs().maxCoeff() <= 1e-15);
    }
  }
}

TEST_CASE("Reused output buffers are overwritten: NaN-filled outputs give exact results", "[model][reuse]") {
  // Linear and Conv2d assign their rows of an output (Layer::assigns_sink) instead of adding into
  // zeros; BatchNorm still adds, so Sequential zeroes its rows alone. Outputs that already hold
  // NaN (and, on the second HVP call, the first call's values) show any entry left unwritten or
  // added to.
  Rng rng(11);
  Net m = nn::parse_arch<D, S>(nn::Shape{1, 5, 5}, "conv(2,k=3,p=1),batchnorm,tanh,flatten,linear(4),gelu,linear(3)");
  const Index d = m.num_params(), n = 6;
  REQUIRE(d <= 300);
  m.set_params(random_matrix(d, 1, rng).col(0));
  const Matrix<D> x = random_matrix(25, n, rng);
  const auto y = labels(n, 3, rng);
  CE ce;
  const D nan = std::numeric_limits<D>::quiet_NaN();
  const auto cotangent = [&](const Matrix<D>& f) { return Matrix<D>(ce.gradient(f, y)); };

  SECTION("HVP blocks (PerReplica) against the finite-difference Hessian") {
    const Matrix<D> hess = fd_hessian(m, ce, x, y);
    HessianOperator hop(m, ce, x, y);
    Matrix<D> out = Matrix<D>::Constant(d, 3, nan);
    for (int call = 0; call < 2; ++call) {
      const Matrix<D> v = random_matrix(d, 3, rng);
      hop.apply(v, out);
      CHECK(rel_err(out, hess * v) < 1e-6);
    }
  }
  SECTION("Gradient (Sum) against central differences of the loss") {
    Vector<D> g = Vector<D>::Constant(d, nan), fd(d);
    m.backward(x, cotangent, Reduction::Sum, g, D(1) / static_cast<D>(n));
    Vector<D> p = m.params();
    const D h = 1e-6;
    for (Index j = 0; j < d; ++j) {
      const D p0 = p[j];
      p[j] = p0 + h;
      m.set_params(p);
      const D up = loss_value(m, ce, x, y);
      p[j] = p0 - h;
      m.set_params(p);
      fd[j] = (up - loss_value(m, ce, x, y)) / (2 * h);
      p[j] = p0;
    }
    m.set_params(p);
    CHECK(rel_err(g, fd) < 1e-7);
  }
  SECTION("Sums of squares (SumSquares, PerSampleSquares) against batch-size-1 gradients") {
    const Matrix<D> gs = sample_gradients(m, ce, x, y);
    Vector<D> ef = Vector<D>::Constant(d, nan);
    m.backward(x, cotangent, Reduction::SumSquares, ef, D(1) / static_cast<D>(n));
    CHECK(rel_err(ef, Vector<D>(gs.array().square().rowwise().mean())) < 1e-12);
    Matrix<D> per = Matrix<D>::Constant(d, n, nan);
    m.backward(x, cotangent, Reduction::PerSampleSquares, per, D(1));
    CHECK(rel_err(per, Matrix<D>(gs.array().square())) < 1e-12);
  }
}
