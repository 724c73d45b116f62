// What is built on the operator concept alone: materialize, quadratic forms and the traces against
// the gradient covariance (SPEC 4), the Damped / Scaled / sum wrappers, and argument errors.
#include <cmath>
#include <limits>

#include "operators/fixtures.hpp"

using namespace opfix;

namespace {

Matrix<D> random_symmetric(Index d, Rng& rng) {
  const Matrix<D> a = random_matrix(d, d, rng);
  return (a + a.transpose()) / 2;
}

/// An operator of the given dimension whose apply must never run (size checks only).
struct HugeOperator {
  using Scalar = D;
  Index d;
  Index dim() const { return d; }
  void apply(const Matrix<D>&, Matrix<D>&) { FAIL("apply must not be called"); }
};
static_assert(LinearOperator<HugeOperator>);

/// Counts applies and columns, to check the blocking.
struct CountingOperator {
  using Scalar = D;
  Matrix<D> a;
  Index applies = 0, max_cols = 0;
  Index dim() const { return a.rows(); }
  void apply(const Matrix<D>& v, Matrix<D>& out) {
    ++applies;
    max_cols = std::max(max_cols, v.cols());
    out = a * v;
  }
};

}  // namespace

TEST_CASE("materialize recovers a dense matrix whatever the block size", "[operators][dense]") {
  Rng rng(101);
  const Matrix<D> a = random_symmetric(37, rng);
  for (Index block : {1, 7, 32, 37, 100}) {
    INFO("block " << block);
    CountingOperator op{a};
    CHECK(rel_err(materialize(op, block), a) < 1e-15);
    CHECK(op.applies == (37 + block - 1) / block);
    CHECK(op.max_cols == std::min<Index>(block, 37));
  }
  CHECK(rel_err(materialize(DenseOperator<D>(a)), a) < 1e-15);
}

TEST_CASE("materialize refuses a dimension above max_dim and a block below 1, naming them",
          "[operators][dense][errors]") {
  HugeOperator big{30000};
  REQUIRE_THROWS_AS(materialize(big), ValueError);
  REQUIRE_THROWS_WITH(materialize(big), Catch::Contains("d = 30000") && Catch::Contains("max_dim = 20000"));
  HugeOperator small{10};
  REQUIRE_THROWS_WITH(materialize(small, 4, 5), Catch::Contains("d = 10"));
  REQUIRE_THROWS_WITH(materialize(small, 0), Catch::Contains("block must be >= 1, got 0"));
}

TEST_CASE("Quadratic forms equal the diagonal of G^T A G, and the traces equal Tr(Sigma1 A), Tr(Sigma A)",
          "[operators][quadratic]") {
  Rng rng(111);
  SECTION("a dense operator") {
    const Index d = 20, n = 11;
    const Matrix<D> a = random_symmetric(d, rng);
    const Matrix<D> g = random_matrix(d, n, rng) + 3 * random_matrix(d, 1, rng).replicate(1, n);
    DenseOperator<D> op(a);
    const Vector<D> q = per_sample_quadratic_forms(op, g, 4);
    CHECK(rel_err(q, (g.transpose() * a * g).diagonal()) < 1e-13);
    const Matrix<D> sigma1 = g * g.transpose() / static_cast<D>(n);
    const Vector<D> gbar = g.rowwise().mean();
    const Matrix<D> sigma = sigma1 - gbar * gbar.transpose();
    CHECK(trace_sigma1_a(op, g, 3) == Approx((sigma1 * a).trace()).epsilon(1e-12));
    CHECK(trace_sigma_a(op, g, 5) == Approx((sigma * a).trace()).epsilon(1e-10));
    CountingOperator counting{a};
    per_sample_quadratic_forms(counting, g, 4);
    CHECK(counting.applies == 3);  // 11 columns in blocks of 4
  }
  SECTION("the GGN of a network with its per-sample gradients (002's Tr(Sigma G))") {
    Net m = gelu_mlp(false, 112);
    const Index n = 8;
    const Matrix<D> x = random_matrix(4, n, rng);
    const Labels y = labels(n, 3, rng);
    CE ce;
    Matrix<D> g;
    per_sample_gradients(m, ce, x, y, g);
    GGNOperator ggn(m, ce, x, y);
    const Matrix<D> gd = materialize(ggn);
    const Vector<D> gbar = g.rowwise().mean();
    const Matrix<D> sigma = g * g.transpose() / static_cast<D>(n) - gbar * gbar.transpose();
    CHECK(rel_err(per_sample_quadratic_forms(ggn, g, 3), (g.transpose() * gd * g).diagonal()) < 1e-12);
    CHECK(trace_sigma_a(ggn, g) == Approx((sigma * gd).trace()).epsilon(1e-10));
    CHECK(trace_sigma1_a(ggn, g) == Approx((g * g.transpose() * gd).trace() / n).epsilon(1e-12));
  }
  SECTION("bad arguments") {
    DenseOperator<D> op(Matrix<D>::Identity(5, 5));
    REQUIRE_THROWS_WITH(per_sample_quadratic_forms(op, Matrix<D>::Ones(4, 3)), Catch::Contains("G has 4 rows"));
    REQUIRE_THROWS_WITH(per_sample_quadratic_forms(op, Matrix<D>::Ones(5, 3), 0), Catch::Contains("block"));
    REQUIRE_THROWS_WITH(trace_sigma_a(op, Matrix<D>(5, 0)), Catch::Contains("N = 0"));
    REQUIRE_THROWS_WITH(trace_sigma1_a(op, Matrix<D>(5, 0)), Catch::Contains("N = 0"));
  }
}

TEST_CASE("Damped, Scaled and OperatorSum materialise to A + lambda I, alpha A and A + B", "[operators][wrappers]") {
  Rng rng(121);
  Net m = gelu_mlp(true, 122);
  const Index n = 5, d = m.num_params();
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  CE ce;
  GGNOperator g(m, ce, x, y);
  HessianOperator h(m, ce, x, y);
  const Matrix<D> gd = materialize(g), hd = materialize(h);
  Damped dg(g, 0.25);  // refers to g
  static_assert(std::same_as<decltype(dg), Damped<GGNOperator<Net, CE>&>>);
  CHECK(dg.damping() == 0.25);
  CHECK(rel_err(materialize(dg), gd + 0.25 * Matrix<D>::Identity(d, d)) < 1e-14);
  Damped owned(GGNOperator<Net, CE>(m, ce, x, y), 0.5);  // owns its operator
  static_assert(std::same_as<decltype(owned), Damped<GGNOperator<Net, CE>>>);
  CHECK(rel_err(materialize(owned), gd + 0.5 * Matrix<D>::Identity(d, d)) < 1e-14);
  Scaled sh(h, -2.0);
  CHECK(rel_err(materialize(sh), -2.0 * hd) < 1e-14);
  OperatorSum sum(h, Damped(g, 1.0));
  CHECK(rel_err(materialize(sum), hd + gd + Matrix<D>::Identity(d, d)) < 1e-14);
  CHECK(rel_err(materialize(Damped(DenseOperator<D>(hd), 0.0)), hd) < 1e-15);
}

TEST_CASE("Bad arguments throw errors that name the argument", "[operators][errors]") {
  Rng rng(131);
  Net m = gelu_mlp(false, 132);
  const Matrix<D> x = random_matrix(4, 3, rng);
  const Labels y = labels(3, 3, rng), y2 = labels(2, 3, rng);
  const Matrix<D> ym = random_matrix(3, 2, rng);
  CE ce;
  MSE mse;
  SECTION("batch and target sizes disagree") {
    REQUIRE_THROWS_AS(HessianOperator(m, ce, x, y2), ShapeError);
    REQUIRE_THROWS_WITH(HessianOperator(m, ce, x, y2),
                        Catch::Contains("HessianOperator") && Catch::Contains("3 inputs but 2"));
    REQUIRE_THROWS_WITH(GGNOperator(m, mse, x, ym),
                        Catch::Contains("GGNOperator") && Catch::Contains("3 inputs but 2"));
    REQUIRE_THROWS_WITH(FisherOperator(m, ce, x, y2), Catch::Contains("3 inputs but 2"));
    REQUIRE_THROWS_WITH(EmpiricalFisherOperator(m, ce, x, y2), Catch::Contains("EmpiricalFisherOperator"));
    const Matrix<D> none(4, 0);
    const Labels no_labels;
    REQUIRE_THROWS_WITH(GGNOperator(m, ce, none, no_labels), Catch::Contains("no samples"));
  }
  SECTION("V with the wrong number of rows") {
    HessianOperator h(m, ce, x, y);
    GGNOperator g(m, ce, x, y);
    EmpiricalFisherOperator ef(m, ce, x, y);
    MCFisherOperator mc(m, ce, x, std::uint64_t{1});
    const Matrix<D> v = Matrix<D>::Ones(m.num_params() + 1, 2);
    Matrix<D> out;
    REQUIRE_THROWS_AS(h.apply(v, out), ShapeError);
    REQUIRE_THROWS_WITH(h.apply(v, out), Catch::Contains("HessianOperator::apply: V has 84 rows") &&
                                             Catch::Contains("d = 83"));
    REQUIRE_THROWS_WITH(g.apply(v, out), Catch::Contains("GGNOperator::apply: V has 84 rows"));
    REQUIRE_THROWS_WITH(ef.apply(v, out), Catch::Contains("EmpiricalFisherOperator::apply: V has 84 rows"));
    REQUIRE_THROWS_WITH(mc.apply(v, out), Catch::Contains("MCFisherOperator::apply: V has 84 rows"));
    Damped dg(g, 1.0);
    REQUIRE_THROWS_WITH(dg.apply(v, out), Catch::Contains("Damped::apply: V has 84 rows"));
    Matrix<D> same = Matrix<D>::Ones(m.num_params(), 1);
    REQUIRE_THROWS_WITH(g.apply(same, same), Catch::Contains("out must not be the same matrix as V"));
    // an empty block is fine and costs no pass
    g.apply(Matrix<D>(m.num_params(), 0), out);
    CHECK(out.rows() == m.num_params());
    CHECK(out.cols() == 0);
  }
  SECTION("bad damping and scaling") {
    GGNOperator g(m, ce, x, y);
    REQUIRE_THROWS_AS(Damped(g, -0.1), ValueError);
    REQUIRE_THROWS_WITH(Damped(g, -0.1), Catch::Contains("damping lambda") && Catch::Contains("-0.1"));
    REQUIRE_THROWS_WITH(Damped(g, std::nan("")), Catch::Contains("damping lambda") && Catch::Contains("nan"));
    REQUIRE_THROWS_WITH(Damped(g, std::numeric_limits<D>::infinity()), Catch::Contains("damping lambda"));
    REQUIRE_THROWS_WITH(Scaled(g, std::nan("")), Catch::Contains("factor alpha"));
    DenseOperator<D> small(Matrix<D>::Identity(3, 3));
    REQUIRE_THROWS_WITH(OperatorSum(g, small), Catch::Contains("d = 83 and d = 3"));
  }
  SECTION("MC Fisher with fewer than one draw, one-sample views with a bad index") {
    REQUIRE_THROWS_AS(MCFisherOperator(m, ce, x, std::uint64_t{1}, 0), ValueError);
    REQUIRE_THROWS_WITH(MCFisherOperator(m, ce, x, std::uint64_t{1}, 0),
                        Catch::Contains("draws (S) must be >= 1, got 0"));
    Rng r(2);
    REQUIRE_THROWS_WITH(MCFisherOperator(m, mse, x, r, -3), Catch::Contains("got -3"));
    REQUIRE_THROWS_WITH(SampleHessianOperator(m, ce, x, y, 3), Catch::Contains("sample index i = 3"));
    REQUIRE_THROWS_WITH(SampleGGNOperator(m, ce, x, y, -1), Catch::Contains("sample index i = -1"));
  }
}

TEST_CASE("The operators work in single precision and agree with double precision", "[operators][float]") {
  using F = float;
  using NetF = nn::Sequential<F, S>;
  auto build = [](auto m) {
    using T = typename decltype(m)::scalar_type;
    m.add(nn::Linear<T, S>(6)).add(nn::Tanh<T, S>()).add(nn::Linear<T, S>(3));
    m.init(141);
    return m;
  };
  Net md = build(Net(nn::Shape{4, 1, 1}));
  NetF mf = build(NetF(nn::Shape{4, 1, 1}));
  md.set_params(mf.params().cast<D>());  // the same function in both precisions
  Rng rng(142);
  const Matrix<F> xf = random_matrix(4, 5, rng).cast<F>();
  const Matrix<D> x = xf.cast<D>();
  const Labels y = labels(5, 3, rng);
  loss::CrossEntropy<F> cef;
  CE ce;
  HessianOperator hf(mf, cef, xf, y);
  HessianOperator hd(md, ce, x, y);
  CHECK(rel_err(materialize(hf).cast<D>(), materialize(hd)) < 1e-4);
  FisherOperator ff(mf, cef, xf, y);
  Damped dff(ff, 0.5f);
  FisherOperator fd(md, ce, x, y);
  CHECK(rel_err(materialize(dff).cast<D>(), materialize(Damped(fd, 0.5))) < 1e-5);
  EmpiricalFisherOperator ef(mf, cef, xf, y);
  EmpiricalFisherOperator ed(md, ce, x, y);
  Matrix<F> g;
  per_sample_gradients(mf, cef, xf, y, g);
  CHECK(static_cast<D>(trace_sigma1_a(ef, g)) == Approx(trace_sigma1_a(ed, g.cast<D>())).epsilon(1e-4));
  MCFisherOperator mcf(mf, cef, xf, std::uint64_t{3}, 2);
  SampleGGNOperator sgf(mf, cef, xf, y, 1);
  CHECK(materialize(mcf).allFinite());
  CHECK(materialize(sgf).allFinite());
}
