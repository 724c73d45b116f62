// Linear, activations and layout changes checked by the shared finite-difference checker.
#include "curvature/nn/nn.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::check_layer;
using D = double;
using S = backend::Serial;

TEST_CASE("Linear layer derivatives match finite differences", "[nn][linear]") {
  for (auto [in, out, n] : {std::tuple<Index, Index, Index>{3, 2, 1}, {5, 4, 3}, {7, 1, 4}}) {
    nn::Linear<D, S> layer(out);
    check_layer(layer, nn::TensorSpec{nn::Shape{in, 1, 1}}, n, 10 + in);
  }
}

TEST_CASE("Linear layer rejects an image input with a message naming flatten", "[nn][linear]") {
  nn::Linear<D, S> layer(4);
  REQUIRE_THROWS_WITH(layer.bind(nn::TensorSpec{nn::Shape{2, 3, 3}}), Catch::Contains("flatten"));
}

TEMPLATE_TEST_CASE("Activations match finite differences", "[nn][activation]", (nn::Tanh<D, S>), (nn::Sigmoid<D, S>),
                   (nn::GELU<D, S>), (nn::ReLU<D, S>), (nn::LeakyReLU<D, S>)) {
  TestType layer;
  check_layer(layer, nn::TensorSpec{nn::Shape{6, 1, 1}}, 3, 21);
  TestType image_layer;
  check_layer(image_layer, nn::TensorSpec{nn::Shape{2, 3, 2}, nn::Layout::Channels}, 2, 22);
}

TEST_CASE("Activation values follow their definitions", "[nn][activation]") {
  Matrix<D> x(4, 1);
  x << -2.0, -0.5, 0.3, 1.7;
  nn::Pass<D> a{};
  a.n = 1;
  Matrix<D> y;
  nn::GELU<D, S> gelu;
  gelu.bind({nn::Shape{4, 1, 1}});
  gelu.forward(a, x, y);
  for (Index k = 0; k < 4; ++k) CHECK(y(k) == Approx(x(k) * 0.5 * std::erfc(-x(k) / std::sqrt(2.0))).epsilon(1e-14));
  nn::LeakyReLU<D, S> leaky(0.2);
  leaky.bind({nn::Shape{4, 1, 1}});
  leaky.forward(a, x, y);
  CHECK(y(0) == Approx(-0.4));
  CHECK(y(3) == Approx(1.7));
  nn::Sigmoid<D, S> sig;
  sig.bind({nn::Shape{4, 1, 1}});
  sig.forward(a, x, y);
  CHECK(y(2) == Approx(1.0 / (1.0 + std::exp(-0.3))).epsilon(1e-14));
}

TEST_CASE("Layout changes are exact inverses and move (sample, channel, pixel) correctly", "[nn][reshape]") {
  const nn::Shape s{3, 2, 2};
  const Index n = 2;
  nn::Relayout<D, S> to_ch(nn::Layout::Channels);
  to_ch.bind({s});
  Matrix<D> x(s.size(), n);
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<D>(k);
  nn::Pass<D> a{};
  a.n = n;
  Matrix<D> y, back;
  to_ch.forward(a, x, y);
  REQUIRE(y.rows() == n * 4);
  REQUIRE(y.cols() == 3);
  // sample 1, channel 2, pixel 3: NCHW offset 1*12 + 2*4 + 3 = 23
  CHECK(y(1 * 4 + 3, 2) == 23.0);
  to_ch.backward(a, x, y, y, &back, nullptr);
  CHECK(back == x);
  check_layer(to_ch, nn::TensorSpec{s}, n, 5);
}
