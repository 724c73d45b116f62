// Hessian, GGN, Fisher, empirical and MC Fisher operators against independent references: finite
// differences of the gradient and of the outputs, explicit Jacobian sums with closed-form output
// Hessians, batch-size-1 gradients, and the library's exact diagonal functions.
#include "operators/fixtures.hpp"

using namespace opfix;

TEST_CASE("The materialised Hessian operator equals finite differences of the gradient and is symmetric",
          "[operators][hessian]") {
  Rng rng(21);
  SECTION("MLPs with cross-entropy and MSE") {
    for (bool relu : {false, true}) {
      INFO("relu: " << relu);
      Net m = gelu_mlp(relu, 22);
      REQUIRE(m.num_params() <= 300);
      const Matrix<D> x = random_matrix(4, 7, rng);
      const Labels y = labels(7, 3, rng);
      const Matrix<D> ym = random_matrix(3, 7, rng);
      CE ce;
      MSE mse;
      HessianOperator h(m, ce, x, y);
      const Matrix<D> hd = materialize(h, 16);
      CHECK(rel_err(hd, fd_hessian(m, ce, x, y)) < 1e-6);
      CHECK(asymmetry(hd) < 1e-12);
      HessianOperator hm(m, mse, x, ym);
      const Matrix<D> hmd = materialize(hm);
      CHECK(rel_err(hmd, fd_hessian(m, mse, x, ym)) < 1e-6);
      CHECK(asymmetry(hmd) < 1e-12);
    }
  }
  SECTION("a tiny conv net with cross-entropy") {
    Net m = tiny_cnn(23);
    const Matrix<D> x = random_matrix(25, 4, rng);
    const Labels y = labels(4, 3, rng);
    CE ce;
    HessianOperator h(m, ce, x, y);
    const Matrix<D> hd = materialize(h, 64);
    CHECK(rel_err(hd, fd_hessian(m, ce, x, y)) < 1e-6);
    CHECK(asymmetry(hd) < 1e-12);
  }
}

TEST_CASE("The Hessian operator applies a block exactly as column-by-column hvp", "[operators][hessian]") {
  Rng rng(24);
  Net m = gelu_mlp(false, 25);
  const Matrix<D> x = random_matrix(4, 6, rng);
  const Labels y = labels(6, 3, rng);
  CE ce;
  HessianOperator h(m, ce, x, y);
  REQUIRE(h.dim() == m.num_params());
  REQUIRE(h.batch_size() == 6);
  const Matrix<D> v = random_matrix(m.num_params(), 5, rng);
  Matrix<D> hv;
  h.apply(v, hv);
  REQUIRE(hv.rows() == m.num_params());
  REQUIRE(hv.cols() == 5);
  for (Index c = 0; c < v.cols(); ++c) {
    const Matrix<D> vc = v.col(c);
    CHECK(rel_err(hv.col(c), hvp(m, ce, x, y, vc)) < 1e-12);
  }
  // The model is held by reference: a parameter change shows at the next apply.
  Vector<D> p = m.params();
  p *= 1.1;
  m.set_params(p);
  h.apply(v, hv);
  CHECK(rel_err(hv, hvp(m, ce, x, y, v)) < 1e-12);
}

TEST_CASE("The GGN operator equals (1/N) sum_i J_i^T Lambda_i J_i with closed-form Lambda_i", "[operators][ggn]") {
  Rng rng(31);
  auto check_model = [&](Net& m, Index dim_in) {
    const Index n = 5;
    const Matrix<D> x = random_matrix(dim_in, n, rng);
    const Labels y = labels(n, 3, rng);
    const Matrix<D> ym = random_matrix(3, n, rng);
    CE ce;
    MSE mse;
    const auto fd_jac = [](Net& net, const Matrix<D>& xs, Index i) { return fd_jacobian(net, xs, i); };
    GGNOperator g(m, ce, x, y);
    const Matrix<D> gd = materialize(g, 20);
    CHECK(rel_err(gd, dense_ggn(m, ce, x, exact_jacobian)) < 1e-9);
    CHECK(rel_err(gd, dense_ggn(m, ce, x, fd_jac)) < 1e-7);
    CHECK(asymmetry(gd) < 1e-12);
    CHECK(Eigen::SelfAdjointEigenSolver<Matrix<D>>(gd).eigenvalues().minCoeff() > -1e-12 * gd.norm());
    GGNOperator gm(m, mse, x, ym);
    const Matrix<D> gmd = materialize(gm);
    CHECK(rel_err(gmd, dense_ggn(m, mse, x, exact_jacobian)) < 1e-9);
    CHECK(rel_err(gmd, dense_ggn(m, mse, x, fd_jac)) < 1e-7);
  };
  SECTION("MLP (ReLU, GELU)") {
    Net m = gelu_mlp(true, 32);
    check_model(m, 4);
  }
  SECTION("tiny conv net") {
    Net m = tiny_cnn(33);
    check_model(m, 25);
  }
}

TEST_CASE("The true Fisher equals the GGN, and for CE the expectation over labels of g_y g_y^T",
          "[operators][fisher]") {
  Rng rng(41);
  Net m = gelu_mlp(false, 42);
  const Index n = 4, k = 3;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, k, rng);
  CE ce;
  FisherOperator f(m, ce, x, y);
  GGNOperator g(m, ce, x, y);
  const Matrix<D> fd = materialize(f);
  CHECK(rel_err(fd, materialize(g)) < 1e-14);
  // F = (1/N) sum_i sum_c p_ic g_ic g_ic^T, g_ic the gradient of sample i with label c (batch size 1)
  const Matrix<D> p = ce.probabilities(m.forward(x));
  Matrix<D> expect = Matrix<D>::Zero(m.num_params(), m.num_params());
  for (Index i = 0; i < n; ++i)
    for (Index c = 0; c < k; ++c) {
      const Vector<D> gic = gradient_one(m, ce, x, i, static_cast<std::int64_t>(c));
      expect += p(c, i) * gic * gic.transpose() / static_cast<D>(n);
    }
  CHECK(rel_err(fd, expect) < 1e-10);
  // MSE: F of N(f, I) is the GGN as well
  const Matrix<D> ym = random_matrix(3, n, rng);
  MSE mse;
  FisherOperator fm(m, mse, x, ym);
  GGNOperator gm(m, mse, x, ym);
  CHECK(rel_err(materialize(fm), materialize(gm)) < 1e-14);
}

TEST_CASE("The empirical Fisher equals the mean outer product of batch-size-1 gradients", "[operators][fisher]") {
  Rng rng(51);
  Net m = gelu_mlp(true, 52);
  const Index n = 6;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  const Matrix<D> ym = random_matrix(3, n, rng);
  CE ce;
  MSE mse;
  Matrix<D> expect = Matrix<D>::Zero(m.num_params(), m.num_params()), expect_mse = expect;
  for (Index i = 0; i < n; ++i) {
    const Vector<D> gi = gradient_one(m, ce, x, i, y), gm = gradient_one(m, mse, x, i, ym);
    expect += gi * gi.transpose() / static_cast<D>(n);
    expect_mse += gm * gm.transpose() / static_cast<D>(n);
  }
  EmpiricalFisherOperator ef(m, ce, x, y);
  CHECK(rel_err(materialize(ef, 13), expect) < 1e-12);
  EmpiricalFisherOperator efm(m, mse, x, ym);
  CHECK(rel_err(materialize(efm), expect_mse) < 1e-12);
  // not the Fisher away from a perfect fit (Kunstner et al. 2019)
  FisherOperator f(m, ce, x, y);
  CHECK(rel_err(materialize(ef), materialize(f)) > 0.1);
}

TEST_CASE("The MC Fisher equals the mean outer product of gradients at its sampled labels", "[operators][fisher]") {
  Rng rng(61);
  Net m = gelu_mlp(false, 62);
  const Index n = 5, draws = 3;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Index d = m.num_params();
  SECTION("cross-entropy") {
    CE ce;
    MCFisherOperator mc(m, ce, x, std::uint64_t{7}, draws);
    REQUIRE(mc.draws() == draws);
    REQUIRE(mc.sampled_labels().size() == static_cast<std::size_t>(draws));
    Matrix<D> expect = Matrix<D>::Zero(d, d);
    for (const Labels& ys : mc.sampled_labels()) {
      REQUIRE(ys.size() == static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) {
        const Vector<D> g = gradient_one(m, ce, x, i, ys);
        expect += g * g.transpose() / static_cast<D>(n * draws);
      }
    }
    CHECK(rel_err(materialize(mc), expect) < 1e-12);
    // the same seed gives the same labels; another seed other labels
    MCFisherOperator same(m, ce, x, std::uint64_t{7}, draws), other(m, ce, x, std::uint64_t{8}, draws);
    CHECK(same.sampled_labels() == mc.sampled_labels());
    CHECK(other.sampled_labels() != mc.sampled_labels());
  }
  SECTION("MSE (labels y~ ~ N(f, I))") {
    MSE mse;
    MCFisherOperator mc(m, mse, x, std::uint64_t{9}, draws);
    Matrix<D> expect = Matrix<D>::Zero(d, d);
    for (const Matrix<D>& ys : mc.sampled_labels())
      for (Index i = 0; i < n; ++i) {
        const Vector<D> g = gradient_one(m, mse, x, i, ys);
        expect += g * g.transpose() / static_cast<D>(n * draws);
      }
    CHECK(rel_err(materialize(mc), expect) < 1e-12);
  }
}

TEST_CASE("With many draws the MC Fisher diagonal approaches the exact Fisher diagonal",
          "[operators][fisher][statistical]") {
  Rng data(71);
  Net m = gelu_mlp(false, 72);
  const Index n = 6, draws = 3000, d = m.num_params();
  const Matrix<D> x = random_matrix(4, n, data);
  const Labels y = labels(n, 3, data);
  CE ce;
  MCFisherOperator mc(m, ce, x, std::uint64_t{73}, draws);
  const Vector<D> est = materialize(mc, 128).diagonal();
  const Vector<D> exact = fisher_diagonal(m, ce, x, y);
  // Standard error of each coordinate from the draws: the estimate is the mean over s of
  // t_s = (1/N) sum_i g~_is^2, independent across s.
  Vector<D> sum = Vector<D>::Zero(d), sum_sq = Vector<D>::Zero(d);
  Matrix<D> g;
  for (const Labels& ys : mc.sampled_labels()) {
    per_sample_gradients(m, ce, x, ys, g);
    const Vector<D> t = g.array().square().rowwise().mean();
    sum += t;
    sum_sq += t.cwiseProduct(t);
  }
  const Vector<D> mean = sum / static_cast<D>(draws);
  CHECK(rel_err(mean, est) < 1e-12);
  const Vector<D> se = ((sum_sq / static_cast<D>(draws) - mean.cwiseProduct(mean)).cwiseMax(0.0) /
                        static_cast<D>(draws - 1)).cwiseSqrt();
  // every coordinate within 5 standard errors (d = 83 coordinates; fixed seed)
  CHECK(((est - exact).cwiseAbs().array() <= 5 * se.array() + 1e-14).all());
  // and the whole vector within 3 times its expected error sqrt(sum_j se_j^2)
  CHECK((est - exact).norm() < 3 * se.norm());
  CHECK(se.norm() < 0.1 * exact.norm());
}

TEST_CASE("Diagonals of the materialised operators equal the library's exact diagonal functions",
          "[operators][fisher][diagonal]") {
  Rng rng(81);
  Net m = tiny_cnn(82);
  const Index n = 4;
  const Matrix<D> x = random_matrix(25, n, rng);
  const Labels y = labels(n, 3, rng);
  CE ce;
  GGNOperator g(m, ce, x, y);
  FisherOperator f(m, ce, x, y);
  EmpiricalFisherOperator ef(m, ce, x, y);
  CHECK(rel_err(materialize(g).diagonal(), ggn_diagonal(m, ce, x, y)) < 1e-12);
  CHECK(rel_err(materialize(f).diagonal(), fisher_diagonal(m, ce, x, y)) < 1e-12);
  CHECK(rel_err(materialize(ef).diagonal(), empirical_fisher_diagonal(m, ce, x, y)) < 1e-12);
  // Same rng state, same labels: the MC Fisher operator's diagonal is mc_fisher_diagonal.
  Rng r1(83), r2(83);
  MCFisherOperator mc(m, ce, x, r1, 4);
  CHECK(rel_err(materialize(mc).diagonal(), mc_fisher_diagonal(m, ce, x, r2, 4)) < 1e-12);
  const Matrix<D> ym = random_matrix(3, n, rng);
  MSE mse;
  GGNOperator gm(m, mse, x, ym);
  EmpiricalFisherOperator efm(m, mse, x, ym);
  CHECK(rel_err(materialize(gm).diagonal(), ggn_diagonal(m, mse, x, ym)) < 1e-12);
  CHECK(rel_err(materialize(efm).diagonal(), empirical_fisher_diagonal(m, mse, x, ym)) < 1e-12);
}

TEST_CASE("One-sample views give H_i and G_i, and their mean is the batch operator", "[operators][per-sample]") {
  Rng rng(91);
  Net m = gelu_mlp(true, 92);
  const Index n = 4, d = m.num_params();
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  CE ce;
  const Matrix<D> v = random_matrix(d, 3, rng);
  Matrix<D> hi_all;
  per_sample_hvp(m, ce, x, y, v, hi_all);
  Matrix<D> hsum = Matrix<D>::Zero(d, d), gsum = hsum;
  for (Index i = 0; i < n; ++i) {
    SampleHessianOperator hi(m, ce, x, y, i);
    SampleGGNOperator gi(m, ce, x, y, i);
    REQUIRE(hi.sample() == i);
    Matrix<D> out;
    hi.apply(v, out);
    for (Index r = 0; r < v.cols(); ++r) CHECK(rel_err(out.col(r), hi_all.col(r * n + i)) < 1e-12);
    hsum += materialize(hi) / static_cast<D>(n);
    const Matrix<D> gid = materialize(gi);
    const Matrix<D> j = exact_jacobian(m, x, i);
    CHECK(rel_err(gid, j.transpose() * output_hessian(ce, m.forward(x).col(i)) * j) < 1e-9);
    gsum += gid / static_cast<D>(n);
  }
  HessianOperator h(m, ce, x, y);
  GGNOperator g(m, ce, x, y);
  CHECK(rel_err(hsum, materialize(h)) < 1e-12);
  CHECK(rel_err(gsum, materialize(g)) < 1e-12);
  const Matrix<D> ym = random_matrix(3, n, rng);
  MSE mse;
  SampleGGNOperator gm(m, mse, x, ym, 2);
  const Matrix<D> j2 = exact_jacobian(m, x, 2);
  CHECK(rel_err(materialize(gm), j2.transpose() * j2) < 1e-9);
}

TEST_CASE("Quadratic forms of every curvature operator equal v' A v of independent dense matrices",
          "[operators][quadratic]") {
  Rng rng(71);
  Net m = gelu_mlp(false, 72);
  const Index n = 6, d = m.num_params();
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  const Matrix<D> v = random_matrix(d, 5, rng);
  CE ce;
  auto quad = [&](const Matrix<D>& a) { return Vector<D>((v.transpose() * a * v).diagonal()); };
  Vector<D> q;
  HessianOperator h(m, ce, x, y);
  h.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(fd_hessian(m, ce, x, y))) < 1e-6);
  GGNOperator g(m, ce, x, y);
  g.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(dense_ggn(m, ce, x))) < 1e-12);
  Matrix<D> ef = Matrix<D>::Zero(d, d);
  for (Index i = 0; i < n; ++i) {
    const Vector<D> gi = gradient_one(m, ce, x, i, y);
    ef += gi * gi.transpose() / static_cast<D>(n);
  }
  EmpiricalFisherOperator e(m, ce, x, y);
  e.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(ef)) < 1e-12);
  MCFisherOperator mc(m, ce, x, std::uint64_t{5}, 2);
  Matrix<D> fmc = Matrix<D>::Zero(d, d);
  for (const Labels& ys : mc.sampled_labels())
    for (Index i = 0; i < n; ++i) {
      const Vector<D> gi = gradient_one(m, ce, x, i, ys);
      fmc += gi * gi.transpose() / static_cast<D>(2 * n);
    }
  mc.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(fmc)) < 1e-12);
  // wrappers pass them on: damping adds lambda ||v||^2, scaling multiplies, sums add
  Damped damped(g, 0.5);
  damped.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(dense_ggn(m, ce, x) + 0.5 * Matrix<D>::Identity(d, d))) < 1e-12);
  Scaled scaled(h, -2.0);
  scaled.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(-2.0 * fd_hessian(m, ce, x, y))) < 1e-6);
  OperatorSum sum(g, e);
  sum.quadratic_forms(v, q);
  CHECK(rel_err(q, quad(dense_ggn(m, ce, x) + ef)) < 1e-12);
  CHECK_THROWS_AS(h.quadratic_forms(Matrix<D>::Ones(d + 1, 2), q), ShapeError);
}

namespace {
/// The Hessian operator without its quadratic_forms: Hutchinson must then take v'(H v).
struct ApplyOnly {
  using Scalar = D;
  HessianOperator<Net, CE>* h;
  Index dim() const { return h->dim(); }
  void apply(const Matrix<D>& v, Matrix<D>& out) { h->apply(v, out); }
};
}  // namespace

TEST_CASE("Hutchinson's trace by forward-mode quadratic forms equals the trace from H V, probe by probe",
          "[operators][quadratic][hutchinson]") {
  Rng rng(81);
  for (bool relu : {false, true}) {
    Net m = gelu_mlp(relu, 82);
    const Matrix<D> x = random_matrix(4, 7, rng);
    const Labels y = labels(7, 3, rng);
    HessianOperator h(m, CE{}, x, y);
    ApplyOnly plain{&h};
    static_assert(QuadraticFormOperator<HessianOperator<Net, CE>> && !QuadraticFormOperator<ApplyOnly>);
    HutchinsonOptions o;
    o.max_probes = 40;
    o.block_size = 16;
    o.seed = 3;
    const auto fast = hutchinson_trace(h, o), slow = hutchinson_trace(plain, o);
    CHECK(fast.value == Approx(slow.value).epsilon(1e-10));
    CHECK(fast.std_error == Approx(slow.std_error).epsilon(1e-8));
    CHECK(fast.matvecs == slow.matvecs);
    // and the diagonal S_R estimator (a trace of D^-1/2 H D^-1/2) the same way
    const Vector<D> f = fisher_diagonal(m, CE{}, x, y);
    CHECK(riemannian_sharpness_diagonal(h, f, 1e-3, o).value ==
          Approx(riemannian_sharpness_diagonal(plain, f, 1e-3, o).value).epsilon(1e-10));
  }
}
