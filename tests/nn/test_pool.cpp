// MaxPool2d and AvgPool2d: the shared finite-difference checker on many geometries, forward
// passes against the textbook loops, PyTorch's tie rule, errors, and serial vs OpenMP.
#include <algorithm>
#include <limits>

#include "curvature/nn/nn.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::check_layer;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;

namespace {
struct Geometry {
  Index c, h, w, k, s, n;
};
const Geometry geometries[] = {{2, 4, 5, 2, 0, 3}, {2, 7, 6, 3, 2, 2}, {1, 5, 4, 2, 1, 2},
                               {3, 4, 4, 1, 1, 2}, {2, 8, 7, 2, 3, 2}, {1, 3, 3, 3, 0, 1}};

nn::TensorSpec channels(Index c, Index h, Index w) { return nn::TensorSpec{nn::Shape{c, h, w}, nn::Layout::Channels}; }

/// Channels-layout value of (sample i, channel c, row r, column q) for an image of h x w.
D& at(Matrix<D>& m, Index h, Index w, Index i, Index c, Index r, Index q) { return m(i * h * w + r * w + q, c); }

/// Textbook pooling (max or mean over each window), floor mode, from a Channels-layout input.
Matrix<D> textbook_pool(const Matrix<D>& x, const Geometry& g, bool max) {
  const Index st = g.s > 0 ? g.s : g.k, ho = (g.h - g.k) / st + 1, wo = (g.w - g.k) / st + 1;
  Matrix<D> y(g.n * ho * wo, g.c), xx = x;
  for (Index i = 0; i < g.n; ++i)
    for (Index c = 0; c < g.c; ++c)
      for (Index oh = 0; oh < ho; ++oh)
        for (Index ow = 0; ow < wo; ++ow) {
          D acc = max ? -std::numeric_limits<D>::infinity() : 0.0;
          for (Index ki = 0; ki < g.k; ++ki)
            for (Index kj = 0; kj < g.k; ++kj) {
              const D v = at(xx, g.h, g.w, i, c, oh * st + ki, ow * st + kj);
              acc = max ? std::max(acc, v) : acc + v / static_cast<D>(g.k * g.k);
            }
          at(y, ho, wo, i, c, oh, ow) = acc;
        }
  return y;
}

template <class L>
Matrix<D> run_forward(L& layer, const Matrix<D>& x, Index n) {
  nn::Pass<D> a{};
  a.n = n;
  Matrix<D> y;
  layer.forward(a, x, y);
  return y;
}
}  // namespace

TEST_CASE("MaxPool2d derivatives match finite differences on many geometries", "[nn][pool]") {
  for (const Geometry& g : geometries) {
    nn::MaxPool2d<D, S> pool(g.k, g.s);
    check_layer(pool, channels(g.c, g.h, g.w), g.n, 40 + g.k * 10 + g.s);
  }
}

TEST_CASE("AvgPool2d derivatives match finite differences on many geometries", "[nn][pool]") {
  for (const Geometry& g : geometries) {
    nn::AvgPool2d<D, S> pool(g.k, g.s);
    check_layer(pool, channels(g.c, g.h, g.w), g.n, 80 + g.k * 10 + g.s);
  }
}

TEST_CASE("Pooling forward passes equal the textbook loops", "[nn][pool]") {
  Rng rng(17);
  for (const Geometry& g : geometries) {
    INFO("kernel " << g.k << ", stride " << g.s << ", input " << g.c << "x" << g.h << "x" << g.w);
    const Matrix<D> x = random_matrix(g.n * g.h * g.w, g.c, rng);
    nn::MaxPool2d<D, S> mp(g.k, g.s);
    nn::AvgPool2d<D, S> ap(g.k, g.s);
    mp.bind(channels(g.c, g.h, g.w));
    ap.bind(channels(g.c, g.h, g.w));
    CHECK(run_forward(mp, x, g.n) == textbook_pool(x, g, true));
    CHECK(rel_err(run_forward(ap, x, g.n), textbook_pool(x, g, false)) < 1e-15);
  }
}

TEST_CASE("MaxPool2d sends the gradient of a tied window to its first maximum, like PyTorch", "[nn][pool]") {
  const Index h = 4, w = 4;
  nn::MaxPool2d<D, S> pool(2);
  pool.bind(channels(1, h, w));
  Matrix<D> x = Matrix<D>::Constant(h * w, 1, 1.0);
  x(1 * w + 3, 0) = 2.0;  // window (0, 1): a unique maximum at row 1, column 3
  x(3 * w + 1, 0) = 2.0;  // window (1, 0): a unique maximum at row 3, column 1
  x(2 * w + 3, 0) = 2.0;  // window (1, 1): maxima at (2, 3) and (3, 2); the first in row-major order wins
  x(3 * w + 2, 0) = 2.0;
  const Matrix<D> y = run_forward(pool, x, 1);
  Matrix<D> dx;
  nn::Pass<D> a{};
  a.n = 1;
  pool.backward(a, x, y, Matrix<D>::Ones(4, 1), &dx, nullptr);
  Matrix<D> expect = Matrix<D>::Zero(h * w, 1);
  expect(0, 0) = 1;          // window (0, 0) all ones: top-left
  expect(1 * w + 3, 0) = 1;  // window (0, 1)
  expect(3 * w + 1, 0) = 1;  // window (1, 0)
  expect(2 * w + 3, 0) = 1;  // window (1, 1): first of the tie
  CHECK(dx == expect);
}

TEST_CASE("Pooling layers have curvature-probe names and reject impossible geometries", "[nn][pool][errors]") {
  CHECK(nn::MaxPool2d<D, S>(2).name() == "maxpool(2,s=2)");
  CHECK(nn::AvgPool2d<D, S>(3, 1).name() == "avgpool(3,s=1)");
  nn::MaxPool2d<D, S> big(4);
  REQUIRE_THROWS_AS(big.bind(channels(1, 3, 5)), ShapeError);
  REQUIRE_THROWS_WITH(big.bind(channels(1, 3, 5)), Catch::Contains("maxpool(4,s=4)") && Catch::Contains("1x3x5"));
  nn::AvgPool2d<D, S> avg(2);
  REQUIRE_THROWS_AS(avg.bind(channels(2, 0, 4)), ShapeError);
  REQUIRE_THROWS_AS((nn::MaxPool2d<D, S>(0)), ValueError);
  REQUIRE_THROWS_AS((nn::AvgPool2d<D, S>(2, -1)), ValueError);
}

TEST_CASE("Pooling gives the same results on the serial and OpenMP backends", "[nn][pool][backend]") {
  Rng rng(23);
  const Index n = 5, c = 3, h = 6, w = 7;
  const Matrix<D> x = random_matrix(n * h * w, c, rng), rx = random_matrix(n * h * w, 2 * c, rng);
  nn::MaxPool2d<D, S> ms(2);
  nn::MaxPool2d<D, backend::OpenMP> mo(2);
  mo.set_backend(backend::OpenMP{2});
  ms.bind(channels(c, h, w));
  mo.bind(channels(c, h, w));
  nn::Pass<D> a{};
  a.n = n;
  a.reps = 2;
  Matrix<D> ys, yo, rys, ryo, dxs, dxo;
  ms.forward(a, x, ys);
  mo.forward(a, x, yo);
  CHECK(ys == yo);
  ms.jvp(a, x, ys, &rx, rys);
  mo.jvp(a, x, yo, &rx, ryo);
  CHECK(rys == ryo);
  ms.backward(a, x, ys, rys, &dxs, nullptr);
  mo.backward(a, x, yo, ryo, &dxo, nullptr);
  CHECK(dxs == dxo);
}

TEST_CASE("MaxPool2d's first-maximum rule holds for every window size and stride, with many ties", "[nn][pool]") {
  // Values from {0, 1, 2} tie in most windows; the textbook rule picks the first maximum in
  // row-major order within the window. Kernels 2 and 3 run unrolled code, 4 the generic loop.
  Rng rng(19);
  for (const Geometry& g : {Geometry{2, 6, 7, 2, 0, 2}, Geometry{2, 7, 7, 3, 0, 2}, Geometry{1, 9, 8, 3, 2, 2},
                            Geometry{2, 8, 9, 4, 0, 2}, Geometry{1, 9, 9, 4, 3, 1}, Geometry{2, 5, 6, 2, 1, 2}}) {
    INFO("k " << g.k << " s " << g.s << " " << g.h << "x" << g.w);
    nn::MaxPool2d<D, S> pool(g.k, g.s);
    pool.bind(channels(g.c, g.h, g.w));
    Matrix<D> x(g.n * g.h * g.w, g.c);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<D>(rng.below(3));
    const Matrix<D> y = run_forward(pool, x, g.n);
    const Matrix<D> dy = random_matrix(y.rows(), y.cols(), rng);
    Matrix<D> dx;
    nn::Pass<D> a{};
    a.n = g.n;
    pool.backward(a, x, y, dy, &dx, nullptr);
    const Index st = g.s > 0 ? g.s : g.k, ho = (g.h - g.k) / st + 1, wo = (g.w - g.k) / st + 1;
    Matrix<D> expect = Matrix<D>::Zero(x.rows(), x.cols()), xx = x, dd = dy;
    for (Index i = 0; i < g.n; ++i)
      for (Index c = 0; c < g.c; ++c)
        for (Index oh = 0; oh < ho; ++oh)
          for (Index ow = 0; ow < wo; ++ow) {
            Index br = oh * st, bq = ow * st;
            for (Index ki = 0; ki < g.k; ++ki)
              for (Index kj = 0; kj < g.k; ++kj)
                if (at(xx, g.h, g.w, i, c, oh * st + ki, ow * st + kj) > at(xx, g.h, g.w, i, c, br, bq))
                  br = oh * st + ki, bq = ow * st + kj;
            at(expect, g.h, g.w, i, c, br, bq) += at(dd, ho, wo, i, c, oh, ow);
          }
    CHECK(dx == expect);
  }
}
