// Residual blocks: the shared layer checker on dense, convolutional (with inner layout changes),
// BatchNorm and nested blocks; the block against its explicit definition x + g(x); model-level HVPs
// and per-sample gradients.
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "curvature/nn/batchnorm.hpp"
#include "curvature/nn/residual.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::check_layer;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;
using Res = nn::Residual<D, S>;

namespace {

Res dense_block(Index width) {
  Res r;
  r.add(nn::Linear<D, S>(width)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(width));
  return r;
}

Res conv_block(Index channels) {
  Res r;
  r.add(nn::Conv2d<D, S>(channels, 3, 1, 1)).add(nn::Tanh<D, S>()).add(nn::Conv2d<D, S>(channels, 3, 1, 1));
  return r;
}

std::vector<std::int64_t> labels(Index n, Index k, Rng& rng) {
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(k));
  return y;
}

}  // namespace

TEST_CASE("A dense residual block matches finite differences in every reduction", "[nn][residual]") {
  Res r = dense_block(5);
  check_layer(r, nn::TensorSpec{nn::Shape{5, 1, 1}}, 3, 60);
}

TEST_CASE("A convolutional residual block matches finite differences in either input layout", "[nn][residual]") {
  Res in_channels = conv_block(2);
  check_layer(in_channels, nn::TensorSpec{nn::Shape{2, 4, 3}, nn::Layout::Channels}, 2, 61);
  Res in_features = conv_block(2);  // the block converts to Channels and back itself
  check_layer(in_features, nn::TensorSpec{nn::Shape{2, 3, 3}, nn::Layout::Features}, 2, 62);
}

TEST_CASE("Residual blocks with BatchNorm and nested blocks match finite differences", "[nn][residual]") {
  Res with_bn;
  with_bn.add(nn::Linear<D, S>(4)).add(nn::BatchNorm<D, S>()).add(nn::Tanh<D, S>()).add(dense_block(4));
  check_layer(with_bn, nn::TensorSpec{nn::Shape{4, 1, 1}}, 3, 63);
  CHECK(with_bn.couples_samples(true));
  CHECK_FALSE(with_bn.couples_samples(false));
  Res with_bn_train;
  with_bn_train.add(nn::Linear<D, S>(4)).add(nn::BatchNorm<D, S>()).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(4));
  check_layer(with_bn_train, nn::TensorSpec{nn::Shape{4, 1, 1}}, 4, 64, /*train=*/true);
}

TEST_CASE("A residual block computes x + g(x) with g's parameters in order", "[nn][residual]") {
  nn::Sequential<D, S> res(nn::Shape{6, 1, 1}), plain(nn::Shape{6, 1, 1});
  res.add(dense_block(6));
  plain.add(nn::Linear<D, S>(6)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(6));
  REQUIRE(res.num_params() == 2 * (6 * 6 + 6));
  REQUIRE(res.num_params() == plain.num_params());
  Rng rng(4);
  res.set_params(random_matrix(res.num_params(), 1, rng).col(0));
  plain.set_params(res.params());
  const Matrix<D> x = random_matrix(6, 5, rng);
  CHECK(rel_err(res.forward(x), x + plain.forward(x)) < 1e-14);
  CHECK(res.describe() == "residual(linear(6),tanh,linear(6))");
}

TEST_CASE("A residual block that changes the shape is rejected", "[nn][residual]") {
  Res r;
  r.add(nn::Linear<D, S>(3));
  REQUIRE_THROWS_AS(r.bind({nn::Shape{5, 1, 1}}), ShapeError);
  REQUIRE_THROWS_WITH(r.bind({nn::Shape{5, 1, 1}}), Catch::Contains("must keep the shape"));
  Res empty;
  REQUIRE_THROWS_AS(empty.bind({nn::Shape{5, 1, 1}}), ValueError);
  nn::Sequential<D, S> m(nn::Shape{2, 4, 4});
  Res pool;
  pool.add(nn::MaxPool2d<D, S>(2));
  REQUIRE_THROWS_AS(m.add(std::move(pool)), ShapeError);
}

TEST_CASE("A model with residual blocks has exact HVPs and per-sample gradients", "[nn][residual][model]") {
  nn::Sequential<D, S> m(nn::Shape{1, 5, 5});
  m.add(nn::Conv2d<D, S>(2, 3, 1, 1)).add(conv_block(2)).add(nn::Flatten<D, S>());
  m.add(nn::Linear<D, S>(4)).add(dense_block(4)).add(nn::Linear<D, S>(3));
  m.init(7);
  const loss::CrossEntropy<D> ce;
  Rng rng(8);
  const Matrix<D> x = random_matrix(25, 3, rng);
  const auto y = labels(3, 3, rng);
  const Vector<D> p0 = m.params();
  const Matrix<D> v = random_matrix(m.num_params(), 1, rng);
  const Matrix<D> hv = hvp(m, ce, x, y, v);
  const D h = 1e-6;
  m.set_params(p0 + h * v.col(0));
  const Vector<D> gp = loss_and_gradient(m, ce, x, y).gradient;
  m.set_params(p0 - h * v.col(0));
  const Vector<D> gm = loss_and_gradient(m, ce, x, y).gradient;
  m.set_params(p0);
  CHECK(rel_err(hv.col(0), (gp - gm) / (2 * h)) < 1e-6);
  Matrix<D> g;
  per_sample_gradients(m, ce, x, y, g);
  for (Index i = 0; i < x.cols(); ++i) {
    const Matrix<D> xi = x.col(i);
    CHECK(rel_err(g.col(i), loss_and_gradient(m, ce, xi, {y[static_cast<std::size_t>(i)]}).gradient) < 1e-12);
  }
}
