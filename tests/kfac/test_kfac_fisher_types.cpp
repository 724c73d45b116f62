// Monte-Carlo and empirical K-FAC: MC factors converge to the exact ones within a closed-form
// statistical bound, MC with one draw is empirical K-FAC on the sampled labels, and empirical K-FAC
// is built from true-label per-sample gradients (batch-size-1 passes).
#include "kfac/kfac_fixtures.hpp"

using namespace kfix;

TEST_CASE("Monte-Carlo K-FAC approaches exact K-FAC within five standard errors", "[kfac][mc]") {
  Rng rng(31);
  Net m = small_mlp(32);
  const Index n = 5, draws = 20000;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  CE ce;
  Kfac exact(m, ce, x, y);
  Kfac mc(m, ce, x, y, KfacOptions{KfacFisher::MonteCarlo, draws, 33});
  Kfac few(m, ce, x, y, KfacOptions{KfacFisher::MonteCarlo, 10, 33});
  REQUIRE(mc.num_blocks() == 3);
  for (Index k = 0; k < 3; ++k) {
    INFO("block " << k);
    const KfacBlock<D>& e = exact.block(k);
    const KfacBlock<D>& s = mc.block(k);
    CHECK(s.A == e.A);  // A does not depend on the labels
    // Per sample, one draw gives X(y) = J^T (p - e_y)(p - e_y)^T J, y ~ p: its entrywise variance in
    // closed form over the K labels; the MC factor averages N * draws independent such terms.
    Matrix<D> var = Matrix<D>::Zero(e.out, e.out);
    for (Index i = 0; i < n; ++i) {
      const MlpSample hs = mlp_by_hand(m, x.col(i));
      const Matrix<D>& jl = hs.jac[static_cast<std::size_t>(k)];
      const Vector<D> p = softmax(hs.f);
      Matrix<D> m1 = Matrix<D>::Zero(e.out, e.out), m2 = m1;
      for (Index c = 0; c < 3; ++c) {
        Vector<D> r = p;
        r[c] -= 1;
        const Vector<D> b = jl.transpose() * r;
        const Matrix<D> xc = b * b.transpose();
        m1 += p[c] * xc;
        m2 += p[c] * xc.cwiseProduct(xc);
      }
      var += m2 - m1.cwiseProduct(m1);
    }
    const Matrix<D> se = (var / static_cast<D>(n * n * draws)).cwiseSqrt();
    const Matrix<D> dev = (s.G - e.G).cwiseAbs();
    CHECK((dev.array() <= 5 * se.array() + 1e-15).all());
    CHECK(rel_err(s.G, e.G) < 0.05);
    CHECK(rel_err(few.block(k).G, e.G) > rel_err(s.G, e.G));
  }
}

TEST_CASE("Monte-Carlo K-FAC with one draw is empirical K-FAC on the labels drawn by Rng(seed)", "[kfac][mc]") {
  Rng rng(34);
  Net m = small_mlp(35);
  const Matrix<D> x = random_matrix(4, 6, rng);
  const Labels y = labels(6, 3, rng);
  CE ce;
  Kfac mc(m, ce, x, y, KfacOptions{KfacFisher::MonteCarlo, 1, 36});
  Rng draw(36);
  const Labels sampled = ce.sample(m.forward(x), draw);
  REQUIRE(sampled != y);
  Kfac emp(m, ce, x, sampled, KfacOptions{KfacFisher::Empirical});
  CHECK(rel_err(dense(mc), dense(emp)) < 1e-15);
}

TEST_CASE("Empirical K-FAC is built from the true labels' per-sample gradients", "[kfac][empirical]") {
  Rng rng(37);
  Net m = small_mlp(38);
  CE ce;
  SECTION("factors: averages of the gradient's bias part b_i and of the layer inputs") {
    const Index n = 6;
    const Matrix<D> x = random_matrix(4, n, rng);
    const Labels y = labels(n, 3, rng);
    Kfac kf(m, ce, x, y, KfacOptions{KfacFisher::Empirical});
    for (Index k = 0; k < kf.num_blocks(); ++k) {
      const KfacBlock<D>& blk = kf.block(k);
      Matrix<D> a = Matrix<D>::Zero(blk.in + 1, blk.in + 1), g = Matrix<D>::Zero(blk.out, blk.out);
      for (Index i = 0; i < n; ++i) {
        const Vector<D> gi = gradient_one(m, ce, x, i, y);
        const Vector<D> bi = gi.segment(blk.offset + blk.out * blk.in, blk.out);
        const Matrix<D> wi = ConstRowMatrixMap<D>(gi.data() + blk.offset, blk.out, blk.in);
        const Vector<D> ai = mlp_by_hand(m, x.col(i)).inputs[static_cast<std::size_t>(k)];
        REQUIRE(rel_err(wi, Matrix<D>(bi * ai.transpose())) < 1e-12);  // a Linear gradient is b a^T
        g += bi * bi.transpose() / static_cast<D>(n);
        const Vector<D> ab = homogeneous(ai);
        a += ab * ab.transpose() / static_cast<D>(n);
      }
      CHECK(rel_err(blk.A, a) < 1e-13);
      CHECK(rel_err(blk.G, g) < 1e-12);
    }
  }
  SECTION("one sample: every block is g g^T of the block's gradient, and blocks do not couple") {
    const Matrix<D> x = random_matrix(4, 1, rng);
    const Labels y{2};
    Kfac kf(m, ce, x, y, KfacOptions{KfacFisher::Empirical});
    const Vector<D> g = gradient_one(m, ce, x, 0, y);
    Matrix<D> expected = Matrix<D>::Zero(kf.dim(), kf.dim());
    for (const KfacBlock<D>& blk : kf.blocks()) {
      const Vector<D> gb = g.segment(blk.offset, blk.size());
      expected.block(blk.offset, blk.offset, blk.size(), blk.size()) = gb * gb.transpose();
    }
    CHECK(rel_err(dense(kf), expected) < 1e-12);
  }
}
