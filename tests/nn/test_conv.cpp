// Conv2d and pooling: the shared finite-difference checker on many geometries, a forward pass
// computed by the textbook loops, and a small conv net against independent computations.
#include "curvature/curvature.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::check_layer;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;

TEST_CASE("Conv2d derivatives match finite differences on many geometries", "[nn][conv]") {
  struct G { Index c, h, w, out, k, s, p, n; };
  for (G g : {G{1, 4, 4, 2, 3, 1, 0, 2}, G{2, 5, 4, 3, 3, 1, 1, 2}, G{3, 6, 6, 2, 2, 2, 0, 3}, G{2, 5, 5, 2, 3, 2, 1, 2},
              G{2, 3, 3, 4, 1, 1, 0, 2}}) {
    nn::Conv2d<D, S> conv(g.out, g.k, g.s, g.p);
    check_layer(conv, nn::TensorSpec{nn::Shape{g.c, g.h, g.w}, nn::Layout::Channels}, g.n, 100 + g.k * 10 + g.s);
  }
}

TEST_CASE("Pooling derivatives match finite differences", "[nn][pool]") {
  nn::MaxPool2d<D, S> max2(2);
  check_layer(max2, nn::TensorSpec{nn::Shape{2, 4, 5}, nn::Layout::Channels}, 3, 7);
  nn::MaxPool2d<D, S> max3(3, 2);
  check_layer(max3, nn::TensorSpec{nn::Shape{2, 7, 6}, nn::Layout::Channels}, 2, 8);
  nn::AvgPool2d<D, S> avg(2);
  check_layer(avg, nn::TensorSpec{nn::Shape{3, 4, 4}, nn::Layout::Channels}, 2, 9);
  nn::AvgPool2d<D, S> avg3(3, 1);
  check_layer(avg3, nn::TensorSpec{nn::Shape{1, 5, 4}, nn::Layout::Channels}, 2, 10);
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
  const D* wt = m.params().data();  // [co, c, k, k] then bias
  Matrix<D> ref(co * ho * wo, n);
  for (Index i = 0; i < n; ++i)
    for (Index o = 0; o < co; ++o)
      for (Index oh = 0; oh < ho; ++oh)
        for (Index ow = 0; ow < wo; ++ow) {
          D acc = wt[co * c * k * k + o];
          for (Index ci = 0; ci < c; ++ci)
            for (Index ki = 0; ki < k; ++ki)
              for (Index kj = 0; kj < k; ++kj) {
                const Index ih = oh * st - pad + ki, iw = ow * st - pad + kj;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                acc += wt[((o * c + ci) * k + ki) * k + kj] * x(ci * h * w + ih * w + iw, i);
              }
          ref((o * ho + oh) * wo + ow, i) = acc;
        }
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
}

TEST_CASE("Conv and pooling layers reject impossible geometries", "[nn][conv][errors]") {
  nn::Conv2d<D, S> big(2, 5);
  REQUIRE_THROWS_AS(big.bind(nn::TensorSpec{nn::Shape{1, 3, 3}, nn::Layout::Channels}), ShapeError);
  REQUIRE_THROWS_AS((nn::Conv2d<D, S>(0, 3)), ValueError);
  nn::MaxPool2d<D, S> pool(4);
  REQUIRE_THROWS_WITH(pool.bind(nn::TensorSpec{nn::Shape{1, 3, 3}, nn::Layout::Channels}), Catch::Contains("smaller"));
}

TEST_CASE("TinyCNN and the MNIST MLP have PyTorch's parameter counts", "[nn][builders]") {
  // 3*16*9+16 + 16*32*9+32 + 2048*128+128 + 128*10+10
  CHECK(nn::tiny_cnn<float, S>(nn::Shape{3, 32, 32}).num_params() == 448 + 4640 + 262272 + 1290);
  CHECK(nn::tiny_cnn<float, S>(nn::Shape{1, 28, 28}).num_params() == 160 + 4640 + (32 * 7 * 7) * 128 + 128 + 1290);
  CHECK(nn::mnist_mlp<float, S>().num_params() == 784 * 256 + 256 + 256 * 256 + 256 + 2570);
}
