// K-FAC factors and the operator against independent references: the exact Fisher from unit-vector
// JVP Jacobians (one sample), per-sample layer inputs and output Jacobians by hand (MLP), a
// textbook convolution loop over samples and positions (KFC), and Linear = Conv2d on 1x1 images.
#include "kfac/kfac_fixtures.hpp"

using namespace kfix;

TEST_CASE("For one sample, K-FAC of a single Linear layer equals the exact Fisher", "[kfac][linear]") {
  Rng rng(1);
  Net m(nn::Shape{5, 1, 1});
  m.add(nn::Linear<D, S>(3));
  m.init(2);
  const Matrix<D> x = random_matrix(5, 1, rng);
  // Exact per-sample Jacobian: the JVP of the one-sample batch along the d unit vectors.
  const Matrix<D> jac = exact_jacobian(m, x, 0);
  REQUIRE(jac.rows() == 3);
  SECTION("cross-entropy: F = J^T (diag(p) - p p^T) J") {
    CE ce;
    Kfac kf(m, ce, x, Labels{1});
    const Matrix<D> fisher = jac.transpose() * output_hessian(ce, m.forward(x).col(0)) * jac;
    const Matrix<D> fk = dense(kf);
    CHECK(rel_err(fk, fisher) < 1e-12);
    CHECK((fk - fk.transpose()).norm() == 0);
  }
  SECTION("squared error: F = J^T J") {
    MSE mse;
    const Matrix<D> y = random_matrix(3, 1, rng);
    Kfac kf(m, mse, x, y);
    CHECK(rel_err(dense(kf), Matrix<D>(jac.transpose() * jac)) < 1e-12);
  }
  SECTION("with several samples the factorisation is an approximation") {
    const Matrix<D> x4 = random_matrix(5, 4, rng);
    CE ce;
    Kfac kf(m, ce, x4, Labels{0, 1, 2, 0});
    // the exact Fisher (1/4) sum_i J_i^T Lambda_i J_i from explicit one-sample Jacobians
    CHECK(rel_err(dense(kf), dense_ggn(m, ce, x4)) > 1e-3);
  }
}

TEST_CASE("The factors of every Linear layer of an MLP are the averages of per-sample inputs and cotangents",
          "[kfac][linear]") {
  Rng rng(3);
  Net m = small_mlp(4);
  const Index n = 7;
  const Matrix<D> x = random_matrix(4, n, rng);
  const Labels y = labels(n, 3, rng);
  const Matrix<D> ym = random_matrix(3, n, rng);
  const Matrix<D> f = m.forward(x);
  for (bool ce_loss : {true, false}) {
    INFO("loss: " << (ce_loss ? "ce" : "mse"));
    CE ce;
    MSE mse;
    Kfac kf = ce_loss ? Kfac(m, ce, x, y) : Kfac(m, mse, x, ym);
    REQUIRE(kf.num_blocks() == 3);
    REQUIRE(kf.dim() == m.num_params());
    Matrix<D> expected = Matrix<D>::Zero(kf.dim(), kf.dim());
    for (Index k = 0; k < 3; ++k) {
      const KfacBlock<D>& blk = kf.block(k);
      CHECK(blk.layer == 2 * k);
      CHECK(blk.offset == m.param_offset(2 * k));
      CHECK(blk.positions == 1);
      Matrix<D> a = Matrix<D>::Zero(blk.in + 1, blk.in + 1), g = Matrix<D>::Zero(blk.out, blk.out);
      for (Index i = 0; i < n; ++i) {
        const MlpSample s = mlp_by_hand(m, x.col(i));
        REQUIRE(rel_err(s.f, f.col(i)) < 1e-14);  // the hand-written network is the model
        const Vector<D> ab = homogeneous(s.inputs[static_cast<std::size_t>(k)]);
        const Matrix<D>& jl = s.jac[static_cast<std::size_t>(k)];
        a += ab * ab.transpose() / static_cast<D>(n);
        const Matrix<D> lam = ce_loss ? output_hessian(ce, s.f) : output_hessian(mse, s.f);
        g += jl.transpose() * lam * jl / static_cast<D>(n);
      }
      CHECK(rel_err(blk.A, a) < 1e-13);
      CHECK(rel_err(blk.G, g) < 1e-12);
      place_kron(expected, blk.offset, g, a);
    }
    // The operator is block diagonal, each block G (x) A in the library's parameter order.
    CHECK(rel_err(dense(kf), expected) < 1e-12);
    // A block of columns is applied as the columns one by one.
    const Matrix<D> v = random_matrix(kf.dim(), 3, rng);
    Matrix<D> fv, fv1;
    kf.apply(v, fv);
    for (Index c = 0; c < 3; ++c) {
      kf.apply(Matrix<D>(v.col(c)), fv1);
      CHECK(rel_err(fv.col(c), fv1) < 1e-14);
    }
    CHECK(rel_err(fv, Matrix<D>(expected * v)) < 1e-12);
  }
}

namespace {

/// 2x5x5 images -> Conv2d(3, k=3, stride 2, pad 1) (3x3 output) -> Tanh -> Flatten -> Linear(4).
Net small_cnn(std::uint64_t seed) {
  Net m(nn::Shape{2, 5, 5});
  m.add(nn::Conv2d<D, S>(3, 3, 2, 1)).add(nn::Tanh<D, S>()).add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(4));
  m.init(seed);
  return m;
}

/// The textbook convolution of small_cnn for sample i: patches (positions x (C*k*k + 1), the
/// homogeneous 1 last), conv outputs z [Cout, P] and the net's outputs.
struct ConvSample {
  Matrix<D> patches;
  Matrix<D> z;
  Vector<D> f;
};

ConvSample conv_by_hand(const Net& m, const Matrix<D>& x, Index i, Index conv_layer, Index lin_layer) {
  const Index c_in = 2, h = 5, w = 5, k = 3, s = 2, pad = 1, ho = 3, wo = 3, cout = 3, p = ho * wo;
  const D* th = m.params().data() + m.param_offset(conv_layer);
  auto weight = [&](Index co, Index c, Index ki, Index kj) { return th[((co * c_in + c) * k + ki) * k + kj]; };
  auto pixel = [&](Index c, Index r, Index q) {
    return (r < 0 || r >= h || q < 0 || q >= w) ? 0.0 : x(c * h * w + r * w + q, i);
  };
  ConvSample cs;
  cs.patches = Matrix<D>::Ones(p, c_in * k * k + 1);
  cs.z = Matrix<D>::Zero(cout, p);
  for (Index oh = 0; oh < ho; ++oh)
    for (Index ow = 0; ow < wo; ++ow) {
      const Index t = oh * wo + ow;
      for (Index c = 0; c < c_in; ++c)
        for (Index ki = 0; ki < k; ++ki)
          for (Index kj = 0; kj < k; ++kj)
            cs.patches(t, (c * k + ki) * k + kj) = pixel(c, oh * s - pad + ki, ow * s - pad + kj);
      for (Index co = 0; co < cout; ++co) {
        D acc = th[cout * c_in * k * k + co];
        for (Index c = 0; c < c_in; ++c)
          for (Index ki = 0; ki < k; ++ki)
            for (Index kj = 0; kj < k; ++kj) acc += weight(co, c, ki, kj) * pixel(c, oh * s - pad + ki, ow * s - pad + kj);
        cs.z(co, t) = acc;
      }
    }
  const DenseParams lin = linear_params(m, lin_layer);
  const Matrix<D> a = cs.z.array().tanh().matrix();
  cs.f = lin.w * a.transpose().reshaped() + lin.b;  // flatten: channel-major, index co*P + t
  return cs;
}

}  // namespace

TEST_CASE("Conv2d factors match a textbook loop over samples and positions (KFC normalisation)", "[kfac][conv]") {
  Rng rng(5);
  Net m = small_cnn(6);
  const Index n = 3, p = 9, cout = 3, k_out = 4;
  const Matrix<D> x = random_matrix(50, n, rng);
  const Labels y = labels(n, k_out, rng);
  CE ce;
  Kfac kf(m, ce, x, y);
  REQUIRE(kf.num_blocks() == 2);
  const KfacBlock<D>& cb = kf.block(0);
  const KfacBlock<D>& lb = kf.block(1);
  REQUIRE(cb.in == 18);
  REQUIRE(cb.out == cout);
  REQUIRE(cb.positions == p);
  const DenseParams lin = linear_params(m, lb.layer);
  const Matrix<D> f = m.forward(x);
  Matrix<D> a = Matrix<D>::Zero(19, 19), g = Matrix<D>::Zero(cout, cout);
  Matrix<D> al = Matrix<D>::Zero(28, 28), gl = Matrix<D>::Zero(k_out, k_out);
  for (Index i = 0; i < n; ++i) {
    const ConvSample cs = conv_by_hand(m, x, i, cb.layer, lb.layer);
    REQUIRE(rel_err(cs.f, f.col(i)) < 1e-14);
    const Matrix<D> lam = output_hessian(ce, cs.f);
    for (Index t = 0; t < p; ++t) {
      const Vector<D> ab = cs.patches.row(t).transpose();
      a += ab * ab.transpose() / static_cast<D>(n);  // A sums over positions
      Matrix<D> jt(k_out, cout);                     // df / dz(:, t)
      for (Index co = 0; co < cout; ++co) jt.col(co) = lin.w.col(co * p + t) * (1 - std::pow(std::tanh(cs.z(co, t)), 2));
      g += jt.transpose() * lam * jt / static_cast<D>(n * p);  // G averages over positions
    }
    const Vector<D> ab = homogeneous(cs.z.array().tanh().matrix().transpose().reshaped());
    al += ab * ab.transpose() / static_cast<D>(n);
    gl += lam / static_cast<D>(n);
  }
  CHECK(rel_err(cb.A, a) < 1e-13);
  CHECK(rel_err(cb.G, g) < 1e-12);
  CHECK(rel_err(lb.A, al) < 1e-13);
  CHECK(rel_err(lb.G, gl) < 1e-12);
  Matrix<D> expected = Matrix<D>::Zero(kf.dim(), kf.dim());
  place_kron(expected, cb.offset, g, a);
  place_kron(expected, lb.offset, gl, al);
  CHECK(rel_err(dense(kf), expected) < 1e-12);
}

TEST_CASE("On 1x1 images the Conv2d factors and operator equal those of the same Linear layer", "[kfac][conv]") {
  Rng rng(7);
  Net conv(nn::Shape{3, 1, 1});
  conv.add(nn::Conv2d<D, S>(4, 1)).add(nn::Tanh<D, S>()).add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(3));
  conv.init(8);
  Net lin(nn::Shape{3, 1, 1});
  lin.add(nn::Linear<D, S>(4)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(3));
  REQUIRE(lin.num_params() == conv.num_params());
  lin.set_params(conv.params());
  const Matrix<D> x = random_matrix(3, 6, rng);
  const Labels y = labels(6, 3, rng);
  REQUIRE(rel_err(conv.forward(x), lin.forward(x)) < 1e-14);
  for (KfacFisher type : {KfacFisher::Exact, KfacFisher::MonteCarlo, KfacFisher::Empirical}) {
    INFO("fisher type " << static_cast<int>(type));
    CE ce;
    const KfacOptions opt{type, 3, 11};
    Kfac kc(conv, ce, x, y, opt), kl(lin, ce, x, y, opt);
    REQUIRE(kc.num_blocks() == 2);
    REQUIRE(kc.block(0).positions == 1);
    for (Index k = 0; k < 2; ++k) {
      CHECK(rel_err(kc.block(k).A, kl.block(k).A) < 1e-14);
      CHECK(rel_err(kc.block(k).G, kl.block(k).G) < 1e-14);
    }
    CHECK(rel_err(dense(kc), dense(kl)) < 1e-14);
  }
}

TEST_CASE("K-FAC in float on the default backend agrees with double on the serial one", "[kfac][float]") {
  Rng rng(9);
  Net md = small_mlp(10);
  nn::Sequential<float> mf(nn::Shape{4, 1, 1});
  mf.add(nn::Linear<float>(6)).add(nn::Tanh<float>()).add(nn::Linear<float>(5)).add(nn::Tanh<float>());
  mf.add(nn::Linear<float>(3));
  mf.set_params(md.params().cast<float>());
  const Matrix<D> x = random_matrix(4, 5, rng);
  const Labels y = labels(5, 3, rng);
  CE ce;
  Kfac kd(md, ce, x, y);
  loss::CrossEntropy<float> cef;
  const Matrix<float> xf = x.cast<float>();
  KfacOperator kf(mf, cef, xf, y);
  static_assert(std::same_as<decltype(kf), KfacOperator<float, DefaultBackend>>);
  const Matrix<D> v = random_matrix(kd.dim(), 3, rng);
  Matrix<D> outd;
  Matrix<float> outf, invf;
  kd.apply(v, outd);
  kf.apply(v.cast<float>(), outf);
  CHECK(rel_err(outf.cast<D>(), outd) < 1e-5);
  Matrix<D> invd;
  kd.inverse(0.1).apply(v, invd);
  kf.inverse(0.1f).apply(v.cast<float>(), invf);
  CHECK(rel_err(invf.cast<D>(), invd) < 1e-4);
}
