// Conv2d: the shared finite-difference checker on many geometries, forward passes computed by the
// textbook loops, and small conv nets against independent computations (pooling: test_pool.cpp).
#include "curvature/curvature.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::check_layer;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;

namespace {
/// The textbook forward pass of a convolution (PyTorch's definition), Channels layout
/// [N*H*W, C] in and [N*Ho*Wo, Cout] out; p holds W [Cout, C, k, k] row-major, then the bias.
Matrix<D> textbook_conv(const Matrix<D>& x, const D* p, Index n, Index c, Index h, Index w, Index co, Index k, Index st,
                        Index pad) {
  const Index ho = (h + 2 * pad - k) / st + 1, wo = (w + 2 * pad - k) / st + 1;
  Matrix<D> ref(n * ho * wo, co);
  for (Index i = 0; i < n; ++i)
    for (Index o = 0; o < co; ++o)
      for (Index oh = 0; oh < ho; ++oh)
        for (Index ow = 0; ow < wo; ++ow) {
          D acc = p[co * c * k * k + o];
          for (Index ci = 0; ci < c; ++ci)
            for (Index ki = 0; ki < k; ++ki)
              for (Index kj = 0; kj < k; ++kj) {
                const Index ih = oh * st - pad + ki, iw = ow * st - pad + kj;
                if (ih >= 0 && ih < h && iw >= 0 && iw < w)
                  acc += p[((o * c + ci) * k + ki) * k + kj] * x(i * h * w + ih * w + iw, ci);
              }
          ref(i * ho * wo + oh * wo + ow, o) = acc;
        }
  return ref;
}
}  // namespace

TEST_CASE("Conv2d derivatives match finite differences on many geometries", "[nn][conv]") {
  struct G { Index c, h, w, out, k, s, p, n; };
  for (G g : {G{1, 4, 4, 2, 3, 1, 0, 2}, G{2, 5, 4, 3, 3, 1, 1, 2}, G{3, 6, 6, 2, 2, 2, 0, 3}, G{2, 5, 5, 2, 3, 2, 1, 2},
              G{2, 3, 3, 4, 1, 1, 0, 2}, G{1, 5, 7, 2, 2, 1, 1, 2}, G{2, 6, 5, 3, 1, 2, 1, 2}, G{1, 2, 2, 2, 3, 1, 1, 3},
              G{2, 7, 6, 2, 2, 3, 0, 2}}) {
    nn::Conv2d<D, S> conv(g.out, g.k, g.s, g.p);
    check_layer(conv, nn::TensorSpec{nn::Shape{g.c, g.h, g.w}, nn::Layout::Channels}, g.n, 100 + g.k * 10 + g.s);
  }
}

TEST_CASE("Conv2d and MaxPool2d forward passes equal the textbook loops (NCHW, PyTorch layout)", "[nn][conv]") {
  const Index n = 2, c = 2, h = 5, w = 4, co = 3, k = 3, st = 2, pad = 1;
  const Index ho = (h + 2 * pad - k) / st + 1, wo = (w + 2 * pad - k) / st + 1;
  nn::Sequential<D, S> m(nn::Shape{c, h, w});
  m.add(nn::Conv2d<D, S>(co, k, st, pad)).add(nn::Flatten<D, S>());
  Rng rng(3);
  m.set_params(random_matrix(m.num_params(), 1, rng).col(0));
  const Matrix<D> x = random_matrix(c * h * w, n, rng);  // NCHW per sample
  const Matrix<D> y = m.forward(x);
  Matrix<D> xc(n * h * w, c);  // the same input in the Channels layout
  for (Index i = 0; i < n; ++i)
    for (Index ci = 0; ci < c; ++ci) xc.col(ci).segment(i * h * w, h * w) = x.col(i).segment(ci * h * w, h * w);
  const Matrix<D> rc = textbook_conv(xc, m.params().data(), n, c, h, w, co, k, st, pad);
  Matrix<D> ref(co * ho * wo, n);  // back to NCHW per sample
  for (Index i = 0; i < n; ++i)
    for (Index o = 0; o < co; ++o) ref.col(i).segment(o * ho * wo, ho * wo) = rc.col(o).segment(i * ho * wo, ho * wo);
  CHECK(rel_err(y, ref) < 1e-14);

  nn::Sequential<D, S> pool(nn::Shape{c, h, w});
  pool.add(nn::MaxPool2d<D, S>(2)).add(nn::Flatten<D, S>());
  const Matrix<D> py = pool.forward(x);
  for (Index i = 0; i < n; ++i)
    for (Index ci = 0; ci < c; ++ci)
      for (Index oh = 0; oh < h / 2; ++oh)
        for (Index ow = 0; ow < w / 2; ++ow) {
          D best = -1e300;
          for (Index ki = 0; ki < 2; ++ki)
            for (Index kj = 0; kj < 2; ++kj) best = std::max(best, x(ci * h * w + (2 * oh + ki) * w + 2 * ow + kj, i));
          CHECK(py((ci * (h / 2) + oh) * (w / 2) + ow, i) == best);
        }
}

namespace {
template <class B>
nn::Sequential<D, B> small_cnn(B b = B{}) {
  nn::Sequential<D, B> m(nn::Shape{2, 6, 6}, b);
  m.add(nn::Conv2d<D, B>(3, 3, 1, 1)).add(nn::Tanh<D, B>()).add(nn::MaxPool2d<D, B>(2));
  m.add(nn::Conv2d<D, B>(2, 2, 1, 0)).add(nn::ReLU<D, B>()).add(nn::Flatten<D, B>()).add(nn::Linear<D, B>(4));
  m.init(5);
  return m;
}
}  // namespace

TEST_CASE("A small conv net: gradient, HVP, per-sample gradients and Fisher diagonal", "[nn][conv][model]") {
  auto m = small_cnn<S>();
  Rng rng(6);
  const Index n = 4, d = m.num_params();
  const Matrix<D> x = random_matrix(72, n, rng);
  const std::vector<std::int64_t> y{0, 3, 1, 2};
  loss::CrossEntropy<D> ce;
  const Vector<D> p0 = m.params();
  const auto lg = loss_and_gradient(m, ce, x, y);
  Vector<D> fd(d);
  Matrix<D> hess(d, d);
  for (Index j = 0; j < d; ++j) {
    Vector<D> p = p0;
    p[j] += 1e-6;
    m.set_params(p);
    const D lp = loss_value(m, ce, x, y);
    const Vector<D> gp = loss_and_gradient(m, ce, x, y).gradient;
    p[j] -= 2e-6;
    m.set_params(p);
    fd[j] = (lp - loss_value(m, ce, x, y)) / 2e-6;
    hess.col(j) = (gp - loss_and_gradient(m, ce, x, y).gradient) / 2e-6;
  }
  m.set_params(p0);
  CHECK(rel_err(lg.gradient, fd) < 1e-7);
  const Matrix<D> v = random_matrix(d, 2, rng);
  CHECK(rel_err(hvp(m, ce, x, y, v), hess * v) < 1e-6);
  Matrix<D> g;
  per_sample_gradients(m, ce, x, y, g);
  for (Index i = 0; i < n; ++i)
    CHECK(rel_err(g.col(i), loss_and_gradient(m, ce, Matrix<D>(x.col(i)), std::vector<std::int64_t>{y[i]}).gradient) < 1e-12);
  // exact Fisher diagonal against J_i^T Lambda_i J_i with J_i from the forward-mode Jacobian
  const Matrix<D> jac = m.jvp(x, Matrix<D>::Identity(d, d));  // replica j, column i: J_i e_j
  const Matrix<D> p = ce.probabilities(m.forward(x));
  Vector<D> ref = Vector<D>::Zero(d);
  for (Index i = 0; i < n; ++i) {
    Matrix<D> ji(4, d);
    for (Index j = 0; j < d; ++j) ji.col(j) = jac.col(j * n + i);
    const Matrix<D> lam = Matrix<D>(p.col(i).asDiagonal()) - p.col(i) * p.col(i).transpose();
    ref += (ji.transpose() * lam * ji).diagonal() / n;
  }
  CHECK(rel_err(fisher_diagonal(m, ce, x, y), ref) < 1e-10);
  Vector<D> ef = g.array().square().matrix().rowwise().mean();
  CHECK(rel_err(empirical_fisher_diagonal(m, ce, x, y), ef) < 1e-10);
}

TEST_CASE("Conv nets give the same results on the serial and OpenMP backends", "[nn][conv][backend]") {
  auto a = small_cnn<S>();
  auto b = small_cnn<backend::OpenMP>(backend::OpenMP{2});
  Rng rng(8);
  const Matrix<D> x = random_matrix(72, 9, rng);
  std::vector<std::int64_t> y(9);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(4));
  loss::CrossEntropy<D> ce;
  CHECK(rel_err(loss_and_gradient(a, ce, x, y).gradient, loss_and_gradient(b, ce, x, y).gradient) < 1e-12);
  const Matrix<D> v = random_matrix(a.num_params(), 3, rng);
  CHECK(rel_err(hvp(a, ce, x, y, v), hvp(b, ce, x, y, v)) < 1e-12);
  CHECK(rel_err(fisher_diagonal(a, ce, x, y), fisher_diagonal(b, ce, x, y)) < 1e-12);
  Matrix<D> ga, gb;
  per_sample_ggn_diagonal(a, ce, x, y, ga);
  per_sample_ggn_diagonal(b, ce, x, y, gb);
  CHECK(rel_err(ga, gb) < 1e-12);
  per_sample_gradients(a, ce, x, y, ga);
  per_sample_gradients(b, ce, x, y, gb);
  CHECK(rel_err(ga, gb) < 1e-12);
  per_sample_hvp(a, ce, x, y, v, ga);
  per_sample_hvp(b, ce, x, y, v, gb);
  CHECK(rel_err(ga, gb) < 1e-12);
}

TEST_CASE("Conv2d gives the same input gradient whether a batch spans one chunk of samples or several",
          "[nn][conv]") {
  // 8 x 16 x 16 with k = 3: dcols of one sample take 147 kB in double, so a batch of 10 is
  // processed in two chunks; single-sample calls are one chunk each.
  const Index n = 10, c = 8, h = 16, co = 4, hw = h * h;
  const nn::TensorSpec in{nn::Shape{c, h, h}, nn::Layout::Channels};
  nn::Conv2d<D, S> conv(co, 3, 1, 1);
  conv.bind(in);
  Rng rng(41);
  const Matrix<D> x = random_matrix(n * hw, c, rng), dy = random_matrix(n * hw, co, rng);
  const Vector<D> p = random_matrix(conv.num_params(), 1, rng).col(0);
  nn::Pass<D> a{};
  a.p = p.data();
  a.n = n;
  Matrix<D> y, dx, y1, dx1;
  conv.forward(a, x, y);
  conv.backward(a, x, y, dy, &dx, nullptr);
  a.n = 1;
  for (Index i = 0; i < n; ++i) {
    Matrix<D> xi(hw, c), dyi(hw, co);
    for (Index k = 0; k < c; ++k) xi.col(k) = x.col(k).segment(i * hw, hw);
    for (Index k = 0; k < co; ++k) dyi.col(k) = dy.col(k).segment(i * hw, hw);
    conv.forward(a, xi, y1);
    conv.backward(a, xi, y1, dyi, &dx1, nullptr);
    for (Index k = 0; k < c; ++k) CHECK(rel_err(Matrix<D>(dx.col(k).segment(i * hw, hw)), Matrix<D>(dx1.col(k))) < 1e-14);
  }
}

namespace {
// The net of the brief, written out by hand: input 2x6x6, conv(3,k=3,p=1), relu, maxpool(2),
// flatten, linear(4); d = 3*2*9 + 3 + 4*27 + 4 = 169 parameters, set by a formula.
constexpr Index kC = 2, kH = 6, kOut = 3, kClasses = 4, kFeat = kOut * 3 * 3;

nn::Sequential<D, S> hand_net() {
  nn::Sequential<D, S> m(nn::Shape{kC, kH, kH});
  m.add(nn::Conv2d<D, S>(kOut, 3, 1, 1)).add(nn::ReLU<D, S>()).add(nn::MaxPool2d<D, S>(2));
  m.add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(kClasses));
  Vector<D> p(m.num_params());
  for (Index j = 0; j < p.size(); ++j) p[j] = 0.4 * std::sin(0.37 * static_cast<D>(j) + 0.2) + 0.05;
  m.set_params(p);
  return m;
}

/// Logits of one NCHW sample by the definitions (PyTorch's parameter layout).
Vector<D> hand_logits(const Vector<D>& p, const D* x) {
  const D* w1 = p.data();
  const D* b1 = w1 + kOut * kC * 9;
  const D* w2 = b1 + kOut;
  const D* b2 = w2 + kClasses * kFeat;
  D act[kOut][kH][kH];
  for (Index o = 0; o < kOut; ++o)
    for (Index h = 0; h < kH; ++h)
      for (Index w = 0; w < kH; ++w) {
        D acc = b1[o];
        for (Index c = 0; c < kC; ++c)
          for (Index ki = 0; ki < 3; ++ki)
            for (Index kj = 0; kj < 3; ++kj) {
              const Index ih = h - 1 + ki, iw = w - 1 + kj;
              if (ih >= 0 && ih < kH && iw >= 0 && iw < kH) acc += w1[((o * kC + c) * 3 + ki) * 3 + kj] * x[(c * kH + ih) * kH + iw];
            }
        act[o][h][w] = std::max(acc, 0.0);
      }
  Vector<D> feat(kFeat);
  for (Index o = 0; o < kOut; ++o)
    for (Index h = 0; h < 3; ++h)
      for (Index w = 0; w < 3; ++w)
        feat[(o * 3 + h) * 3 + w] = std::max({act[o][2 * h][2 * w], act[o][2 * h][2 * w + 1], act[o][2 * h + 1][2 * w],
                                              act[o][2 * h + 1][2 * w + 1]});
  Vector<D> f(kClasses);
  for (Index k = 0; k < kClasses; ++k) f[k] = b2[k] + ConstRowMatrixMap<D>(w2, kClasses, kFeat).row(k).dot(feat);
  return f;
}

/// Mean cross-entropy of the batch by the definitions.
D hand_loss(const Vector<D>& p, const Matrix<D>& x, const std::vector<std::int64_t>& y) {
  D total = 0;
  for (Index i = 0; i < x.cols(); ++i) {
    const Vector<D> f = hand_logits(p, x.col(i).data());
    total += std::log(f.array().exp().sum()) - f[y[static_cast<std::size_t>(i)]];
  }
  return total / static_cast<D>(x.cols());
}

struct HandBatch {
  Matrix<D> x;
  std::vector<std::int64_t> y;
};
HandBatch hand_batch(Index n, std::uint64_t seed) {
  Rng rng(seed);
  HandBatch b{random_matrix(kC * kH * kH, n, rng), std::vector<std::int64_t>(static_cast<std::size_t>(n))};
  for (auto& v : b.y) v = static_cast<std::int64_t>(rng.below(kClasses));
  return b;
}
}  // namespace

TEST_CASE("A hand-written conv net: loss and gradient equal the definitions", "[nn][conv][model]") {
  auto m = hand_net();
  const HandBatch b = hand_batch(3, 31);
  const Vector<D> p = m.params();
  CHECK(loss_value(m, loss::CrossEntropy<D>{}, b.x, b.y) == Approx(hand_loss(p, b.x, b.y)).epsilon(1e-13));
  const Vector<D> g = loss_and_gradient(m, loss::CrossEntropy<D>{}, b.x, b.y).gradient;
  Vector<D> fd(p.size());
  for (Index j = 0; j < p.size(); ++j) {  // central differences of the hand-written loss
    Vector<D> pp = p, pm = p;
    pp[j] += 1e-6;
    pm[j] -= 1e-6;
    fd[j] = (hand_loss(pp, b.x, b.y) - hand_loss(pm, b.x, b.y)) / 2e-6;
  }
  CHECK(rel_err(g, fd) < 1e-7);
}

TEST_CASE("A hand-written conv net: HVP, per-sample gradients and GGN diagonal", "[nn][conv][model]") {
  auto m = hand_net();
  const HandBatch b = hand_batch(4, 32);
  loss::CrossEntropy<D> ce;
  const Vector<D> p0 = m.params();
  const Index d = m.num_params(), n = b.x.cols();
  Rng rng(33);
  const Matrix<D> v = random_matrix(d, 3, rng);
  Matrix<D> fd(d, v.cols());  // central differences of the gradient along each v_r
  for (Index r = 0; r < v.cols(); ++r) {
    m.set_params(p0 + 1e-6 * v.col(r));
    const Vector<D> gp = loss_and_gradient(m, ce, b.x, b.y).gradient;
    m.set_params(p0 - 1e-6 * v.col(r));
    fd.col(r) = (gp - loss_and_gradient(m, ce, b.x, b.y).gradient) / 2e-6;
  }
  m.set_params(p0);
  CHECK(rel_err(hvp(m, ce, b.x, b.y, v), fd) < 1e-6);

  Matrix<D> g;
  per_sample_gradients(m, ce, b.x, b.y, g);
  REQUIRE(g.cols() == n);
  for (Index i = 0; i < n; ++i) {
    const std::vector<std::int64_t> yi{b.y[static_cast<std::size_t>(i)]};
    CHECK(rel_err(g.col(i), loss_and_gradient(m, ce, Matrix<D>(b.x.col(i)), yi).gradient) < 1e-12);
  }

  // G = (1/N) sum_i J_i^T Lambda_i J_i with J_i (K x d) from forward mode on the identity block
  const Matrix<D> jac = m.jvp(b.x, Matrix<D>::Identity(d, d));  // column j*N + i: J_i e_j
  const Matrix<D> prob = ce.probabilities(m.forward(b.x));
  Matrix<D> ggn = Matrix<D>::Zero(d, d);
  for (Index i = 0; i < n; ++i) {
    Matrix<D> ji(kClasses, d);
    for (Index j = 0; j < d; ++j) ji.col(j) = jac.col(j * n + i);
    const Matrix<D> lam = Matrix<D>(prob.col(i).asDiagonal()) - prob.col(i) * prob.col(i).transpose();
    ggn += ji.transpose() * lam * ji / static_cast<D>(n);
  }
  CHECK(rel_err(ggn_diagonal(m, ce, b.x, b.y), ggn.diagonal()) < 1e-10);
}

TEST_CASE("Conv2d forward equals the textbook loops for kernels 1-3, strides 1-2, padding 0-1", "[nn][conv]") {
  for (Index k : {1, 2, 3})
    for (Index st : {1, 2})
      for (Index pad : {0, 1}) {
        const Index n = 2, c = 2, h = 5, w = 6, co = 2;
        INFO("k = " << k << ", s = " << st << ", p = " << pad);
        nn::Conv2d<D, S> conv(co, k, st, pad);
        conv.bind(nn::TensorSpec{nn::Shape{c, h, w}, nn::Layout::Channels});
        Rng rng(static_cast<std::uint64_t>(k * 100 + st * 10 + pad));
        const Matrix<D> x = random_matrix(n * h * w, c, rng);  // Channels layout
        const Vector<D> p = random_matrix(conv.num_params(), 1, rng).col(0);
        nn::Pass<D> a{};
        a.p = p.data();
        a.n = n;
        Matrix<D> y;
        conv.forward(a, x, y);
        const Matrix<D> ref = textbook_conv(x, p.data(), n, c, h, w, co, k, st, pad);
        CHECK(rel_err(y, ref) < 1e-14);
      }
}

TEST_CASE("Conv and pooling layers reject impossible geometries", "[nn][conv][errors]") {
  nn::Conv2d<D, S> big(2, 5);
  REQUIRE_THROWS_AS(big.bind(nn::TensorSpec{nn::Shape{1, 3, 3}, nn::Layout::Channels}), ShapeError);
  REQUIRE_THROWS_WITH(big.bind(nn::TensorSpec{nn::Shape{1, 3, 3}, nn::Layout::Channels}),
                      Catch::Contains("conv(2,k=5,s=1,p=0)") && Catch::Contains("1x3x3"));
  nn::Conv2d<D, S> padded(2, 5, 1, 1);  // 3 + 2 * 1 = 5 fits exactly: a 1x1 output
  CHECK(padded.bind(nn::TensorSpec{nn::Shape{1, 3, 3}, nn::Layout::Channels}).shape == nn::Shape{2, 1, 1});
  REQUIRE_THROWS_AS(big.bind(nn::TensorSpec{nn::Shape{1, 0, 6}, nn::Layout::Channels}), ShapeError);
  REQUIRE_THROWS_AS((nn::Conv2d<D, S>(0, 3)), ValueError);
  REQUIRE_THROWS_AS((nn::Conv2d<D, S>(2, 3, 0)), ValueError);
  REQUIRE_THROWS_AS((nn::Conv2d<D, S>(2, 3, 1, -1)), ValueError);
  CHECK(nn::Conv2d<D, S>(16, 3, 1, 1).name() == "conv(16,k=3,s=1,p=1)");
  nn::MaxPool2d<D, S> pool(4);
  REQUIRE_THROWS_WITH(pool.bind(nn::TensorSpec{nn::Shape{1, 3, 3}, nn::Layout::Channels}), Catch::Contains("smaller"));
}

namespace {
// Textbook convolution in the Channels layout ([N*H*W, C], plane c of sample i at rows i*H*W of
// column c), stride 1, padding (k-1)/2, theta = W [Cout, C, k, k] row-major then b.
struct TextbookConv {
  Index n, c, h, co, k;
  Index hw() const { return h * h; }
  Index pad() const { return (k - 1) / 2; }
  template <class F>
  void each(F&& f) const {  // f(i, o, ch, ki, kj, output row, input row) over every valid term
    for (Index i = 0; i < n; ++i)
      for (Index o = 0; o < co; ++o)
        for (Index ch = 0; ch < c; ++ch)
          for (Index ki = 0; ki < k; ++ki)
            for (Index kj = 0; kj < k; ++kj)
              for (Index oh = 0; oh < h; ++oh)
                for (Index ow = 0; ow < h; ++ow) {
                  const Index ih = oh - pad() + ki, iw = ow - pad() + kj;
                  if (ih >= 0 && ih < h && iw >= 0 && iw < h)
                    f(i, o, ch, ki, kj, i * hw() + oh * h + ow, i * hw() + ih * h + iw);
                }
  }
  Index widx(Index o, Index ch, Index ki, Index kj) const { return ((o * c + ch) * k + ki) * k + kj; }
  /// conv(x; theta) with (bias) or without the bias.
  Matrix<D> forward(const Matrix<D>& x, const D* theta, bool bias = true) const {
    Matrix<D> y = Matrix<D>::Zero(n * hw(), co);
    if (bias)
      for (Index o = 0; o < co; ++o) y.col(o).setConstant(theta[co * c * k * k + o]);
    each([&](Index, Index o, Index ch, Index ki, Index kj, Index out, Index in) {
      y(out, o) += theta[widx(o, ch, ki, kj)] * x(in, ch);
    });
    return y;
  }
  /// sum_i d<dy_i, conv(x_i; theta)>/d theta (bias part: the sums of dy, or 0 without bias).
  Vector<D> weight_grad(const Matrix<D>& x, const Matrix<D>& dy, bool bias = true) const {
    Vector<D> g = Vector<D>::Zero(co * c * k * k + co);
    each([&](Index, Index o, Index ch, Index ki, Index kj, Index out, Index in) {
      g[widx(o, ch, ki, kj)] += dy(out, o) * x(in, ch);
    });
    if (bias) g.tail(co) = dy.colwise().sum().transpose();
    return g;
  }
};
}  // namespace

TEST_CASE("Conv2d's chunked products equal the textbook sums over many chunks and groups, at any thread count",
          "[nn][conv]") {
  // 8 x 16 x 16, k = 3, double: one sample's patches take 147 kB, so each sample is its own chunk;
  // 21 samples make 21 chunks dealt to 16 groups (some summing two chunks), 3 replicas.
  const TextbookConv tb{21, 8, 16, 4, 3};
  const Index n = tb.n, reps = 3, hw = tb.hw();
  const nn::TensorSpec in{nn::Shape{tb.c, tb.h, tb.h}, nn::Layout::Channels};
  Rng rng(77);
  const Matrix<D> x = random_matrix(n * hw, tb.c, rng), rx = random_matrix(n * hw, reps * tb.c, rng);
  const Matrix<D> dy = random_matrix(n * hw, tb.co, rng), rdy = random_matrix(n * hw, reps * tb.co, rng);
  nn::Conv2d<D, S> probe(tb.co, tb.k, 1, 1);
  probe.bind(in);
  const Index d = probe.num_params();
  const Vector<D> p = random_matrix(d, 1, rng).col(0);
  const Matrix<D> v = random_matrix(d, reps, rng);
  const auto block = [&](const Matrix<D>& m, Index r, Index w) { return Matrix<D>(m.middleCols(r * w, w)); };

  struct Result {
    Matrix<D> y, ry, grad, rgrad;
  };
  const auto run = [&](auto backend) {
    nn::Conv2d<D, decltype(backend)> conv(tb.co, tb.k, 1, 1);
    conv.set_backend(backend);
    conv.bind(in);
    nn::Pass<D> a{};
    a.p = p.data();
    a.n = n;
    Result out;
    conv.forward(a, x, out.y);
    out.grad = Matrix<D>::Zero(d, 1);
    nn::Sink<D> sum{nn::Reduction::Sum, out.grad.data(), d, 1.0};
    conv.backward(a, x, out.y, dy, nullptr, &sum);
    a.v = v.data();
    a.v_ld = d;
    a.reps = reps;
    conv.jvp(a, x, out.y, &rx, out.ry);
    out.rgrad = Matrix<D>::Zero(d, reps);
    nn::Sink<D> per_rep{nn::Reduction::PerReplica, out.rgrad.data(), d, 0.5};
    conv.backward_r(a, x, out.y, &rx, &out.ry, dy, rdy, nullptr, &per_rep);
    return out;
  };
  const Result s = run(S{});
  CHECK(rel_err(s.y, tb.forward(x, p.data())) < 1e-13);
  CHECK(rel_err(s.grad.col(0), tb.weight_grad(x, dy)) < 1e-13);
  for (Index r = 0; r < reps; ++r) {
    INFO("replica " << r);
    // ry_r = conv(rx_r; W) + conv(x; V_r) + vb_r
    CHECK(rel_err(block(s.ry, r, tb.co), tb.forward(block(rx, r, tb.c), p.data(), false) + tb.forward(x, v.col(r).data())) < 1e-13);
    // R(dW)_r = patches(x)^T rdy_r + patches(rx_r)^T dy, the bias from rdy_r alone; scaled by 0.5
    const Vector<D> expect = 0.5 * (tb.weight_grad(x, block(rdy, r, tb.co)) + tb.weight_grad(block(rx, r, tb.c), dy, false));
    CHECK(rel_err(s.rgrad.col(r), expect) < 1e-13);
  }
  for (int threads : {1, 2, 3}) {
    INFO(threads << " threads");
    const Result o = run(backend::OpenMP{threads});
    CHECK(o.y == s.y);
    CHECK(o.grad == s.grad);
    CHECK(o.ry == s.ry);
    CHECK(o.rgrad == s.rgrad);
  }
}

namespace {
/// ReLU that Sequential may not move behind a max-pool: the textbook order, for comparison.
struct TextbookOrderReLU : nn::ReLU<D, S> {
  bool commutes_with_max() const override { return false; }
};

template <class Act>
nn::Sequential<D, S> relu_pool_net() {
  nn::Sequential<D, S> m(nn::Shape{2, 7, 7});
  m.add(nn::Conv2d<D, S>(3, 3, 1, 1)).add(Act()).add(nn::MaxPool2d<D, S>(2));
  m.add(nn::Conv2d<D, S>(4, 2, 1, 0)).add(Act()).add(nn::MaxPool2d<D, S>(2, 1));
  m.add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(5)).add(Act()).add(nn::Linear<D, S>(3));
  m.init(3);
  return m;
}

bool same(const Matrix<D>& a, const Matrix<D>& b) { return a.rows() == b.rows() && a.cols() == b.cols() && a == b; }
}  // namespace

TEST_CASE("A max-pool after ReLU runs before it, with the textbook order's results bit for bit", "[nn][pool][model]") {
  auto fast = relu_pool_net<nn::ReLU<D, S>>();
  auto ref = relu_pool_net<TextbookOrderReLU>();
  // Execution order: the pools moved ahead of their ReLUs (after a layout change for the first);
  // the ReLU after linear(5) stays; describe() keeps the order of add().
  std::string order;
  for (Index l = 0; l < fast.num_layers(); ++l) order += fast.layer(l).name() + " ";
  CHECK(order == "to_channels conv(3,k=3,s=1,p=1) maxpool(2,s=2) relu conv(4,k=2,s=1,p=0) maxpool(2,s=1) "
                 "relu to_features flatten linear(5) relu linear(3) ");
  CHECK(fast.describe() == ref.describe());
  CHECK(ref.layer(2).name() == "relu");
  {  // a max-pool that does not fit leaves the model as it was, ReLU in place
    nn::Sequential<D, S> m(nn::Shape{2, 7, 7});
    m.add(nn::Conv2d<D, S>(3, 3, 1, 1)).add(nn::ReLU<D, S>());
    const Index layers = m.num_layers();
    CHECK_THROWS_AS(m.add(nn::MaxPool2d<D, S>(9)), ShapeError);
    CHECK(m.num_layers() == layers);
    CHECK(m.layer(layers - 1).name() == "relu");
    CHECK(m.describe() == "conv(3,k=3,s=1,p=1),relu");
    m.add(nn::MaxPool2d<D, S>(2));
    CHECK(m.layer(layers - 1).name() == "maxpool(2,s=2)");
    CHECK(m.forward(Matrix<D>::Ones(98, 2)).rows() == 27);
  }
  // Parameters with few distinct values and integer inputs make many tied windows, positive
  // ones and windows that are all <= 0 after ReLU.
  Vector<D> p = fast.params();
  for (Index j = 0; j < p.size(); ++j) p[j] = std::round(p[j] * 8) / 8;
  fast.set_params(p);
  ref.set_params(p);
  Rng rng(11);
  const Index n = 6, d = p.size();
  Matrix<D> x(98, n);
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<D>(static_cast<Index>(rng.below(5)) - 2);
  const std::vector<std::int64_t> y{0, 2, 1, 1, 0, 2};
  loss::CrossEntropy<D> ce;
  CHECK(same(fast.forward(x), ref.forward(x)));
  CHECK(same(loss_and_gradient(fast, ce, x, y).gradient, loss_and_gradient(ref, ce, x, y).gradient));
  const Matrix<D> v = random_matrix(d, 3, rng);
  CHECK(same(fast.jvp(x, v), ref.jvp(x, v)));
  CHECK(same(hvp(fast, ce, x, y, v), hvp(ref, ce, x, y, v)));
  CHECK(same(hessian_quadratic_forms(fast, ce, x, y, v), hessian_quadratic_forms(ref, ce, x, y, v)));
  Matrix<D> a, b;
  per_sample_gradients(fast, ce, x, y, a);
  per_sample_gradients(ref, ce, x, y, b);
  CHECK(same(a, b));
  per_sample_ggn_diagonal(fast, ce, x, y, a);
  per_sample_ggn_diagonal(ref, ce, x, y, b);
  CHECK(same(a, b));
  per_sample_hvp(fast, ce, x, y, v, a);
  per_sample_hvp(ref, ce, x, y, v, b);
  CHECK(same(a, b));
  // The comparison can fail: the same net with average pooling (which does not commute with
  // ReLU) built in the other order gives a different gradient.
  nn::Sequential<D, S> swapped(nn::Shape{2, 7, 7});
  swapped.add(nn::Conv2d<D, S>(3, 3, 1, 1)).add(nn::AvgPool2d<D, S>(2)).add(TextbookOrderReLU());
  swapped.add(nn::Conv2d<D, S>(4, 2, 1, 0)).add(nn::AvgPool2d<D, S>(2, 1)).add(TextbookOrderReLU());
  swapped.add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(5)).add(TextbookOrderReLU()).add(nn::Linear<D, S>(3));
  nn::Sequential<D, S> avg(nn::Shape{2, 7, 7});
  avg.add(nn::Conv2d<D, S>(3, 3, 1, 1)).add(nn::ReLU<D, S>()).add(nn::AvgPool2d<D, S>(2));
  avg.add(nn::Conv2d<D, S>(4, 2, 1, 0)).add(nn::ReLU<D, S>()).add(nn::AvgPool2d<D, S>(2, 1));
  avg.add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(5)).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(3));
  swapped.set_params(p);
  avg.set_params(p);
  CHECK(avg.layer(2).name() == "relu");
  CHECK_FALSE(same(loss_and_gradient(avg, ce, x, y).gradient, loss_and_gradient(swapped, ce, x, y).gradient));
  // LeakyReLU can merge distinct inputs by rounding, so it is not moved.
  nn::Sequential<D, S> leaky(nn::Shape{2, 7, 7});
  leaky.add(nn::Conv2d<D, S>(3, 3, 1, 1)).add(nn::LeakyReLU<D, S>(0.1)).add(nn::MaxPool2d<D, S>(2));
  CHECK(leaky.layer(2).name() == "leakyrelu(0.1)");
}

TEST_CASE("Conv2d's reused patch buffers stay right when the chunk size changes between calls", "[nn][conv]") {
  // 2 x 8 x 8, k = 3, p = 1, double: 1.2 kB of patches per sample, so a chunk takes every sample
  // of these small batches; the zero padding of a chunk buffer is written only when its chunk
  // size changes, which the batch sizes below do back and forth, interleaved with backward.
  const nn::TensorSpec in{nn::Shape{2, 8, 8}, nn::Layout::Channels};
  nn::Conv2d<D, S> conv(3, 3, 1, 1);
  conv.bind(in);
  Rng rng(5);
  const Vector<D> p = random_matrix(conv.num_params(), 1, rng).col(0);
  for (const Index n : {5, 2, 5, 1, 3, 3}) {
    INFO("batch " << n);
    const TextbookConv tb{n, 2, 8, 3, 3};
    const Matrix<D> x = random_matrix(n * 64, 2, rng), dy = random_matrix(n * 64, 3, rng);
    nn::Pass<D> a{};
    a.p = p.data();
    a.n = n;
    Matrix<D> y;
    conv.forward(a, x, y);
    CHECK(rel_err(y, tb.forward(x, p.data())) < 1e-13);
    Matrix<D> g = Matrix<D>::Zero(conv.num_params(), 1);
    nn::Sink<D> sum{nn::Reduction::Sum, g.data(), conv.num_params(), 1.0};
    conv.backward(a, x, y, dy, nullptr, &sum);
    CHECK(rel_err(g.col(0), tb.weight_grad(x, dy)) < 1e-13);
  }
}

// ---- the direct (stride-1) kernel ----

namespace {
template <class B>
nn::Sequential<D, B> direct_cnn(nn::ConvAlgorithm algo, B b = B{}) {
  nn::Sequential<D, B> m(nn::Shape{3, 7, 21}, b);
  m.add(nn::Conv2d<D, B>(9, 3, 1, 1).algorithm(algo)).add(nn::ReLU<D, B>()).add(nn::MaxPool2d<D, B>(2, 1));
  m.add(nn::Conv2d<D, B>(5, 5, 1, 2).algorithm(algo)).add(nn::Tanh<D, B>());
  m.add(nn::Conv2d<D, B>(2, 2, 1, 1).algorithm(algo)).add(nn::Flatten<D, B>()).add(nn::Linear<D, B>(4));
  m.init(21);
  return m;
}
}  // namespace

TEST_CASE("Conv2d's direct kernel: textbook forward pass and finite-difference derivatives", "[nn][conv][direct]") {
  // Output rows narrower than, equal to and wider than a SIMD vector (partial last vectors),
  // kernels 1, 2 (generic path), 3 and 5, padding 0 to k-1, output channels off the blocks of 8.
  struct G { Index c, h, w, out, k, p, n; };
  for (G g : {G{2, 5, 19, 3, 3, 1, 2}, G{1, 4, 9, 9, 1, 0, 2}, G{2, 6, 21, 2, 5, 2, 2}, G{3, 3, 17, 10, 3, 0, 2},
              G{1, 5, 8, 4, 2, 1, 3}, G{2, 3, 4, 3, 3, 2, 2}}) {
    INFO("c " << g.c << ", " << g.h << "x" << g.w << ", out " << g.out << ", k " << g.k << ", p " << g.p);
    nn::Conv2d<D, S> conv(g.out, g.k, 1, g.p);
    conv.algorithm(nn::ConvAlgorithm::Direct);
    const nn::TensorSpec in{nn::Shape{g.c, g.h, g.w}, nn::Layout::Channels};
    conv.bind(in);
    REQUIRE(conv.uses_direct());
    Rng rng(static_cast<std::uint64_t>(g.w * 10 + g.k));
    const Matrix<D> x = random_matrix(in.rows(g.n), g.c, rng);
    const Vector<D> p = random_matrix(conv.num_params(), 1, rng).col(0);
    nn::Pass<D> a{};
    a.p = p.data();
    a.n = g.n;
    Matrix<D> y;
    conv.forward(a, x, y);
    CHECK(rel_err(y, textbook_conv(x, p.data(), g.n, g.c, g.h, g.w, g.out, g.k, 1, g.p)) < 1e-14);
    check_layer(conv, in, g.n, 300 + g.w);
  }
}

TEST_CASE("Conv nets on the direct kernel equal the same nets on im2col products", "[nn][conv][direct][model]") {
  auto a = direct_cnn<S>(nn::ConvAlgorithm::Direct), b = direct_cnn<S>(nn::ConvAlgorithm::Im2col);
  auto c = direct_cnn<backend::OpenMP>(nn::ConvAlgorithm::Direct, backend::OpenMP{2});
  REQUIRE(nn::Conv2d<D, S>(9, 3, 1, 1).algorithm() == nn::ConvAlgorithm::Auto);
  Rng rng(31);
  const Index n = 5;
  const Matrix<D> x = random_matrix(a.input_size(), n, rng);
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(4));
  loss::CrossEntropy<D> ce;
  const Vector<D> g = loss_and_gradient(b, ce, x, y).gradient;
  CHECK(rel_err(loss_and_gradient(a, ce, x, y).gradient, g) < 1e-13);
  CHECK(loss_and_gradient(c, ce, x, y).gradient == loss_and_gradient(a, ce, x, y).gradient);  // no reductions moved
  CHECK(rel_err(a.forward(x), b.forward(x)) < 1e-13);
  const Matrix<D> v = random_matrix(a.num_params(), 3, rng);
  CHECK(rel_err(a.jvp(x, v), b.jvp(x, v)) < 1e-13);
  CHECK(rel_err(hvp(a, ce, x, y, v), hvp(b, ce, x, y, v)) < 1e-12);
  CHECK(rel_err(hvp(c, ce, x, y, v), hvp(a, ce, x, y, v)) < 1e-13);
  Matrix<D> pa, pb;
  per_sample_gradients(a, ce, x, y, pa);
  per_sample_gradients(b, ce, x, y, pb);
  CHECK(rel_err(pa, pb) < 1e-13);
  per_sample_hvp(a, ce, x, y, v, pa);
  per_sample_hvp(b, ce, x, y, v, pb);
  CHECK(rel_err(pa, pb) < 1e-12);
  CHECK(rel_err(fisher_diagonal(a, ce, x, y), fisher_diagonal(b, ce, x, y)) < 1e-12);
  REQUIRE(a.supports_jet2());
  Matrix<D> ja, jb;
  a.jet2(x, v, [&](const Matrix<D>&, const Matrix<D>&, const Matrix<D>& rrf) { ja = rrf; });
  b.jet2(x, v, [&](const Matrix<D>&, const Matrix<D>&, const Matrix<D>& rrf) { jb = rrf; });
  CHECK(rel_err(ja, jb) < 1e-12);
}

TEST_CASE("Conv2d refuses the direct kernel where it does not apply", "[nn][conv][direct][errors]") {
  REQUIRE_THROWS_AS((nn::Conv2d<D, S>(2, 3, 2, 1).algorithm(nn::ConvAlgorithm::Direct)), ValueError);
  REQUIRE_THROWS_WITH((nn::Conv2d<D, S>(2, 3, 1, 3).algorithm(nn::ConvAlgorithm::Direct)),
                      Catch::Contains("conv(2,k=3,s=1,p=3)") && Catch::Contains("stride 1"));
  nn::Conv2d<D, S> strided(2, 3, 2, 1);  // Auto falls back to im2col
  strided.bind(nn::TensorSpec{nn::Shape{1, 40, 40}, nn::Layout::Channels});
  CHECK_FALSE(strided.uses_direct());
  nn::Conv2d<D, S> wide(2, 3, 1, 1), narrow(2, 3, 1, 1);
  wide.bind(nn::TensorSpec{nn::Shape{1, 4, 40}, nn::Layout::Channels});
  narrow.bind(nn::TensorSpec{nn::Shape{1, 4, 2}, nn::Layout::Channels});
  CHECK(wide.uses_direct());
  CHECK_FALSE(narrow.uses_direct());
}

namespace {
/// Convolutions followed by max-pools (fused JVPs and R-ops, Layer::jvp_pooled and
/// backward_r_pooled): with 20 directions in double, the first convolution's planes (8 x 24 x 24)
/// make chunks of 6 replicas (6, 6, 6, 2) and the second's (16 x 12 x 12) chunks of 13; the third
/// (direct kernel forced on its 6 x 6 planes) has 6 channels (off the blocks of 8: one chunk) and
/// an overlapping 3x3 / stride-2 pool, whose R-op adds where windows share their maximum; the first
/// pool has no ReLU after it, and the first convolution's R-op has no input gradient.
template <class B>
nn::Sequential<D, B> pooled_cnn(B b = B{}) {
  nn::Sequential<D, B> m(nn::Shape{3, 24, 24}, b);
  m.add(nn::Conv2d<D, B>(8, 3, 1, 1)).add(nn::MaxPool2d<D, B>(2));
  m.add(nn::Conv2d<D, B>(16, 3, 1, 1)).add(nn::ReLU<D, B>()).add(nn::MaxPool2d<D, B>(2));
  m.add(nn::Conv2d<D, B>(6, 3, 1, 1).algorithm(nn::ConvAlgorithm::Direct)).add(nn::ReLU<D, B>());
  m.add(nn::MaxPool2d<D, B>(3, 2));
  m.add(nn::Flatten<D, B>()).add(nn::Linear<D, B>(4));
  m.init(5);
  return m;
}
}  // namespace

TEST_CASE("A convolution's JVPs and R-op pooled sample by sample equal the layer-by-layer pass",
          "[nn][conv][pool][model]") {
  Rng rng(37);
  const Index n = 3;
  const std::vector<std::int64_t> y{0, 3, 1};
  loss::CrossEntropy<D> ce;
  auto serial = pooled_cnn<S>();
  const Matrix<D> x = random_matrix(serial.input_size(), n, rng);
  const Matrix<D> v = random_matrix(serial.num_params(), 20, rng);
  struct Results {
    Matrix<D> jvp, jvp1, hvp, hvp5, per_sample;
    Vector<D> q;
  };
  const auto run = [&](auto& m, bool fused) {
    m.set_fused_pooling(fused);
    Results r{m.jvp(x, v), m.jvp(x, v.leftCols(1)), hvp(m, ce, x, y, v), hvp(m, ce, x, y, v.leftCols(5)), {},
              hessian_quadratic_forms(m, ce, x, y, v)};
    per_sample_hvp(m, ce, x, y, v.leftCols(2), r.per_sample);
    return r;
  };
  // Below 16 directions (jvp1, hvp5, per_sample) the pooled kernels compute full planes: the same
  // bits. With 20 (jvp, hvp, q) the directions' terms V_r * x and the R-op's pooled
  // weight-gradient term are computed at the pools' choices alone, summed in another order.
  const auto check = [&](auto& m) {
    const Results a = run(m, true), b = run(m, false);
    CHECK(rel_err(a.jvp, b.jvp) < 1e-13);
    CHECK(same(a.jvp1, b.jvp1));
    CHECK(rel_err(a.hvp, b.hvp) < 1e-13);
    CHECK(same(a.hvp5, b.hvp5));
    CHECK(same(a.per_sample, b.per_sample));
    CHECK(rel_err(a.q, b.q) < 1e-13);
    return a;
  };
  const Results fused = check(serial);
  // Independent checks of the fused results: directional finite differences of the gradient, and
  // the quadratic forms from the HVPs.
  const D h = 1e-5;
  const Vector<D> theta = serial.params();
  for (Index r : {0, 19}) {
    serial.set_params(theta + h * v.col(r));
    const Vector<D> gp = loss_and_gradient(serial, ce, x, y).gradient;
    serial.set_params(theta - h * v.col(r));
    const Vector<D> gm = loss_and_gradient(serial, ce, x, y).gradient;
    CHECK(rel_err(fused.hvp.col(r), (gp - gm) / (2 * h)) < 1e-6);
  }
  serial.set_params(theta);
  CHECK(rel_err(fused.q, fused.hvp.cwiseProduct(v).colwise().sum().transpose()) < 1e-12);
  for (int threads : {2, 3}) {
    auto omp = pooled_cnn<backend::OpenMP>(backend::OpenMP{threads});
    const Results r = check(omp);
    CHECK(rel_err(r.hvp, fused.hvp) < 1e-13);
  }
}

TEST_CASE("A pooled JVP refuses a max-pool whose choices are from another batch", "[nn][conv][pool][errors]") {
  Rng rng(41);
  nn::Conv2d<D, S> conv(8, 3, 1, 1);
  nn::MaxPool2d<D, S> pool(2);
  const nn::TensorSpec out = conv.bind(nn::TensorSpec{nn::Shape{2, 12, 12}, nn::Layout::Channels});
  pool.bind(out);
  REQUIRE(conv.pools_jvp());
  Vector<D> theta = random_matrix(conv.num_params(), 1, rng).col(0), dir = theta.reverse();
  const auto pass = [&](Index n) { return nn::Pass<D>{theta.data(), dir.data(), conv.num_params(), n, 1, false}; };
  const auto input = [&](Index n) { return random_matrix(n * 12 * 12, 2, rng); };
  Matrix<D> y, z, rz;
  // The pool's forward pass saw 2 samples; a pooled JVP over 3 would read past its choices.
  const Matrix<D> x2 = input(2), x3 = input(3);
  conv.forward(pass(2), x2, y);
  pool.forward(pass(2), y, z);
  REQUIRE_THROWS_WITH(conv.jvp_pooled(pass(3), x3, nullptr, pool, rz),
                      Catch::Contains("conv(8,k=3,s=1,p=1)") && Catch::Contains("3 samples") &&
                          Catch::Contains("found 576"));
  // Over the same batch it equals the two calls one after the other.
  Matrix<D> ry, rz2;
  conv.jvp_pooled(pass(2), x2, nullptr, pool, rz);
  conv.jvp(pass(2), x2, y, nullptr, ry);
  pool.jvp(nn::Pass<D>{nullptr, nullptr, 0, 2, 1, false}, y, z, &ry, rz2);
  CHECK(rz == rz2);
  // A layer that is not a max-pool is refused by name.
  nn::ReLU<D, S> relu;
  relu.bind(out);
  REQUIRE_THROWS_WITH(conv.jvp_pooled(pass(2), x2, nullptr, relu, rz), Catch::Contains("max-pool"));
}
