// BatchNorm: eval mode through the shared layer checker; training mode (coupled samples) through
// the checker's non-per-sample sections and through model-level finite differences of the
// gradient and of Hessian-vector products; PyTorch's running-statistics update.
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "curvature/nn/batchnorm.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::check_layer;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;
using Net = nn::Sequential<D, S>;

namespace {

/// The three ways channels are laid out: vectors, images in Features and in Channels layout.
const nn::TensorSpec kSpecs[] = {{nn::Shape{5, 1, 1}, nn::Layout::Features},
                                 {nn::Shape{3, 2, 2}, nn::Layout::Features},
                                 {nn::Shape{3, 2, 3}, nn::Layout::Channels}};

nn::BatchNorm<D, S> with_random_stats(Index c, std::uint64_t seed) {
  nn::BatchNorm<D, S> bn;
  bn.bind({nn::Shape{c, 1, 1}});
  Rng rng(seed);
  const Vector<D> mean = random_matrix(c, 1, rng).col(0);
  const Vector<D> var = random_matrix(c, 1, rng).col(0).cwiseAbs().array() + 0.3;
  bn.set_running_stats(mean, var);
  return bn;
}

std::vector<std::int64_t> labels(Index n, Index k, Rng& rng) {
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(k));
  return y;
}

/// Central differences of the mean loss (gradient) and of the gradient along v (HVP), compared with
/// the exact rules; returns {gradient error, HVP error}.
std::pair<D, D> model_fd_errors(Net& m, const Matrix<D>& x, const std::vector<std::int64_t>& y, std::uint64_t seed) {
  const loss::CrossEntropy<D> ce;
  const Vector<D> p0 = m.params();
  const Index d = p0.size();
  const Vector<D> g = loss_and_gradient(m, ce, x, y).gradient;
  Vector<D> fg(d);
  const D h = 1e-6;
  for (Index j = 0; j < d; ++j) {
    Vector<D> p = p0;
    p[j] += h;
    m.set_params(p);
    const D lp = loss_value(m, ce, x, y);
    p[j] -= 2 * h;
    m.set_params(p);
    fg[j] = (lp - loss_value(m, ce, x, y)) / (2 * h);
  }
  Rng rng(seed);
  const Matrix<D> v = random_matrix(d, 2, rng);
  m.set_params(p0);
  const Matrix<D> hv = hvp(m, ce, x, y, v);
  Matrix<D> fhv(d, 2);
  for (Index r = 0; r < 2; ++r) {
    m.set_params(p0 + h * v.col(r));
    const Vector<D> gp = loss_and_gradient(m, ce, x, y).gradient;
    m.set_params(p0 - h * v.col(r));
    fhv.col(r) = (gp - loss_and_gradient(m, ce, x, y).gradient) / (2 * h);
  }
  m.set_params(p0);
  return {rel_err(g, fg), rel_err(hv, fhv)};
}

Net bn_mlp(std::uint64_t seed) {
  Net m(nn::Shape{4, 1, 1});
  m.add(nn::Linear<D, S>(6)).add(nn::BatchNorm<D, S>()).add(nn::ReLU<D, S>()).add(nn::Linear<D, S>(3));
  m.init(seed);
  Vector<D> p = m.params();  // gamma and beta away from 1 and 0, so their derivatives matter
  Rng rng(seed + 1);
  for (Index j = m.param_offset(1); j < m.param_offset(3); ++j) p[j] += 0.3 * rng.normal<D>();
  m.set_params(p);
  return m;
}

}  // namespace

TEST_CASE("BatchNorm in eval mode matches finite differences in every reduction", "[nn][batchnorm]") {
  std::uint64_t seed = 40;
  for (const nn::TensorSpec& spec : kSpecs) {
    auto bn = with_random_stats(spec.shape.c, seed);
    check_layer(bn, spec, 3, seed++);
  }
}

TEST_CASE("BatchNorm in training mode matches finite differences (coupled samples)", "[nn][batchnorm]") {
  std::uint64_t seed = 50;
  for (const nn::TensorSpec& spec : kSpecs) {
    nn::BatchNorm<D, S> bn;
    CHECK(bn.couples_samples(true));
    CHECK_FALSE(bn.couples_samples(false));
    check_layer(bn, spec, 4, seed++, /*train=*/true);
  }
}

TEST_CASE("BatchNorm normalises per channel and updates running statistics like PyTorch", "[nn][batchnorm]") {
  // Channels layout, 2 samples of 2x1x2: channel 0 holds {1, 2, 3, 6}, channel 1 holds {0, 0, 4, 4}.
  nn::BatchNorm<D, S> bn(1e-5, 0.1);
  const nn::TensorSpec spec{nn::Shape{2, 1, 2}, nn::Layout::Channels};
  bn.bind(spec);
  Matrix<D> x(4, 2);
  x << 1, 0, 2, 0, 3, 4, 6, 4;
  Vector<D> p(4);
  p << 2, 1, 0.5, -1;  // gamma, beta
  nn::Pass<D> a{p.data(), nullptr, 0, 2, 1, true};
  Matrix<D> y;
  bn.forward(a, x, y);
  const D s0 = 1 / std::sqrt(3.5 + 1e-5), s1 = 1 / std::sqrt(4.0 + 1e-5);  // biased variances 3.5, 4
  CHECK(y(0, 0) == Approx(2 * (1 - 3) * s0 + 0.5).epsilon(1e-12));
  CHECK(y(3, 0) == Approx(2 * (6 - 3) * s0 + 0.5).epsilon(1e-12));
  CHECK(y(2, 1) == Approx((4 - 2) * s1 - 1).epsilon(1e-12));
  // running = 0.9 running + 0.1 batch, with the unbiased variance (m = 4): 3.5 * 4/3, 4 * 4/3
  CHECK(bn.running_mean()(0) == Approx(0.3));
  CHECK(bn.running_mean()(1) == Approx(0.2));
  CHECK(bn.running_var()(0) == Approx(0.9 + 0.1 * 3.5 * 4 / 3));
  CHECK(bn.running_var()(1) == Approx(0.9 + 0.1 * 4.0 * 4 / 3));
  a.train = false;  // eval uses the running statistics and leaves them alone
  bn.forward(a, x, y);
  CHECK(y(0, 0) == Approx(2 * (1 - 0.3) / std::sqrt(bn.running_var()(0) + 1e-5) + 0.5).epsilon(1e-12));
  CHECK(bn.running_mean()(0) == Approx(0.3));
}

TEST_CASE("BatchNorm rejects a training batch with one value per channel", "[nn][batchnorm]") {
  nn::BatchNorm<D, S> bn;
  bn.bind({nn::Shape{3, 1, 1}});
  Vector<D> p(6);
  p << 1, 1, 1, 0, 0, 0;
  const Matrix<D> x = Matrix<D>::Ones(3, 1);
  Matrix<D> y;
  REQUIRE_THROWS_AS(bn.forward(nn::Pass<D>{p.data(), nullptr, 0, 1, 1, true}, x, y), ValueError);
  REQUIRE_NOTHROW(bn.forward(nn::Pass<D>{p.data(), nullptr, 0, 1, 1, false}, x, y));
}

TEST_CASE("A model with BatchNorm in training mode has exact gradients and HVPs", "[nn][batchnorm][model]") {
  Net m = bn_mlp(3);
  m.set_training(true);
  Rng rng(7);
  const Matrix<D> x = random_matrix(4, 6, rng);
  const auto y = labels(6, 3, rng);
  const auto [gerr, herr] = model_fd_errors(m, x, y, 8);
  CHECK(gerr < 1e-6);
  CHECK(herr < 1e-6);
  // training-mode statistics matter: eval mode gives a different gradient
  const Vector<D> g_train = loss_and_gradient(m, loss::CrossEntropy<D>{}, x, y).gradient;
  m.set_training(false);
  CHECK(rel_err(loss_and_gradient(m, loss::CrossEntropy<D>{}, x, y).gradient, g_train) > 1e-3);
}

TEST_CASE("A convolutional model with BatchNorm2d in training mode has exact gradients and HVPs",
          "[nn][batchnorm][model]") {
  Net m(nn::Shape{2, 4, 4});
  m.add(nn::Conv2d<D, S>(3, 3, 1, 1)).add(nn::BatchNorm<D, S>()).add(nn::Tanh<D, S>());
  m.add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(3));
  m.init(5);
  m.set_training(true);
  Rng rng(9);
  const Matrix<D> x = random_matrix(32, 3, rng);
  const auto y = labels(3, 3, rng);
  const auto [gerr, herr] = model_fd_errors(m, x, y, 10);
  CHECK(gerr < 1e-6);
  CHECK(herr < 1e-6);
}

TEST_CASE("Per-sample gradients are refused in training mode and exact in eval mode", "[nn][batchnorm][model]") {
  Net m = bn_mlp(4);
  const loss::CrossEntropy<D> ce;
  Rng rng(11);
  const Matrix<D> x = random_matrix(4, 5, rng);
  const auto y = labels(5, 3, rng);
  Matrix<D> g;
  m.set_training(true);
  CHECK(m.couples_samples());
  REQUIRE_THROWS_AS(per_sample_gradients(m, ce, x, y, g), UnsupportedError);
  REQUIRE_THROWS_AS(ggn_diagonal(m, ce, x, y), UnsupportedError);
  m.set_training(false);
  REQUIRE_NOTHROW(per_sample_gradients(m, ce, x, y, g));
  for (Index i = 0; i < x.cols(); ++i) {  // eval mode: sample i alone gives g_i
    const Matrix<D> xi = x.col(i);
    const Vector<D> gi = loss_and_gradient(m, ce, xi, {y[static_cast<std::size_t>(i)]}).gradient;
    CHECK(rel_err(g.col(i), gi) < 1e-12);
  }
  const auto [gerr, herr] = model_fd_errors(m, x, y, 12);
  CHECK(gerr < 1e-6);
  CHECK(herr < 1e-6);
}
