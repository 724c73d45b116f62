// The papers' networks (parameter counts computed by hand the way PyTorch counts them) and the
// --arch / --input-shape parsers: every layer kind, round trips through describe(), every error.
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "curvature/nn/arch.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;
using S = backend::Serial;
using Net = nn::Sequential<D, S>;
using Catch::Contains;

namespace {

/// PyTorch's counts: Linear in*out + out, Conv2d cin*cout*k*k + cout.
constexpr Index lin(Index in, Index out) { return in * out + out; }
constexpr Index conv(Index cin, Index cout, Index k) { return cin * cout * k * k + cout; }

Net parse(nn::Shape in, std::string_view spec) { return nn::parse_arch<D, S>(in, spec); }

/// The ValueError message parse_arch gives for `spec` (empty if it does not throw one).
std::string error_of(std::string_view spec, nn::Shape in = nn::Shape{3, 8, 8}) {
  try {
    parse(in, spec);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("Builders have PyTorch's parameter counts", "[nn][builders]") {
  CHECK(nn::mnist_mlp<D, S>().num_params() == lin(784, 256) + lin(256, 256) + lin(256, 10));
  CHECK(nn::mnist_mlp<D, S>().num_params() == 269322);
  const Index cnn32 = conv(3, 16, 3) + conv(16, 32, 3) + lin(32 * 8 * 8, 128) + lin(128, 10);
  CHECK(cnn32 == 268650);
  CHECK(nn::tiny_cnn<D, S>().num_params() == cnn32);
  CHECK(nn::tiny_cnn<D, S>(nn::Shape{1, 28, 28}).num_params() ==
        conv(1, 16, 3) + conv(16, 32, 3) + lin(32 * 7 * 7, 128) + lin(128, 10));
  // 001 Sec. 2: "three-layer fully connected ... 70-dimensional hidden units (... 5,393)"
  CHECK(nn::three_layer_fcn<D, S>(2, 70, 3).num_params() == 5393);
  CHECK(nn::three_layer_fcn<D, S>().num_params() == lin(784, 70) + lin(70, 70) + lin(70, 10));
  CHECK(nn::three_layer_fcn<D, S>().describe() == "linear(70),relu,linear(70),relu,linear(10)");
  const Net m = nn::mlp<D, S>(10, {5, 4}, 3, "tanh");
  CHECK(m.num_params() == lin(10, 5) + lin(5, 4) + lin(4, 3));
  CHECK(m.describe() == "linear(5),tanh,linear(4),tanh,linear(3)");
  CHECK(nn::tiny_cnn<D, S>().describe() ==
        "conv(16,k=3,s=1,p=1),relu,maxpool(2,s=2),conv(32,k=3,s=1,p=1),relu,maxpool(2,s=2),flatten,linear(128),"
        "relu,linear(10)");
}

TEST_CASE("Builders initialise reproducibly from the seed", "[nn][builders]") {
  const Net a = nn::mlp<D, S>(10, {6}, 3, "relu", 5), b = nn::mlp<D, S>(10, {6}, 3, "relu", 5);
  const Net c = nn::mlp<D, S>(10, {6}, 3, "relu", 6);
  CHECK(a.params() == b.params());
  CHECK(a.params() != c.params());
  CHECK(a.params().head(lin(10, 6)).cwiseAbs().maxCoeff() <= 1 / std::sqrt(10.0));  // U(+-1/sqrt(in))
  REQUIRE_THROWS_AS((nn::mlp<D, S>(10, {6}, 3, "swish")), ValueError);
}

TEST_CASE("parse_arch builds every layer kind", "[nn][arch]") {
  const std::string spec =
      "conv(4,k=3,p=1), batchnorm, relu, maxpool(2), conv(4, k=3, s=1, p=1), leakyrelu(0.2), avgpool(2,s=2), "
      "flatten, linear(8), tanh, linear(6), sigmoid, linear(5), gelu, batchnorm, linear(3)";
  const Net m = parse(nn::Shape{3, 8, 8}, spec);
  CHECK(m.describe() ==
        "conv(4,k=3,s=1,p=1),batchnorm,relu,maxpool(2,s=2),conv(4,k=3,s=1,p=1),leakyrelu(0.2),avgpool(2,s=2),"
        "flatten,linear(8),tanh,linear(6),sigmoid,linear(5),gelu,batchnorm,linear(3)");
  CHECK(m.num_params() == conv(3, 4, 3) + 2 * 4 + conv(4, 4, 3) + lin(4 * 2 * 2, 8) + lin(8, 6) + lin(6, 5) +
                              2 * 5 + lin(5, 3));
  CHECK(m.output_size() == 3);
  // strides and defaults reach the layers: conv s=2 halves 8x8, maxpool(3) strides by 3, avgpool s=1
  const Net s = parse(nn::Shape{1, 8, 8}, "conv(2,k=3,s=2,p=1),maxpool(3),flatten");
  CHECK(s.output_size() == 2 * 1 * 1);
  CHECK(parse(nn::Shape{1, 8, 8}, "avgpool(2,s=1),flatten").output_size() == 49);
  CHECK(parse(nn::Shape{5, 1, 1}, "leakyrelu").describe() == "leakyrelu(0.01)");
  CHECK(parse(nn::Shape{5, 1, 1}, "batchnorm(eps=0.001,momentum=0.2)").describe() ==
        "batchnorm(eps=0.001,momentum=0.2)");
}

TEST_CASE("parse_arch gives the same model as building it by hand", "[nn][arch]") {
  Net hand(nn::Shape{1, 6, 6});
  hand.add(nn::Conv2d<D, S>(2, 3, 1, 1)).add(nn::ReLU<D, S>()).add(nn::MaxPool2d<D, S>(2));
  hand.add(nn::Flatten<D, S>()).add(nn::Linear<D, S>(4)).add(nn::GELU<D, S>()).add(nn::Linear<D, S>(3));
  Net parsed = parse(nn::Shape{1, 6, 6}, "  CONV( 2 , k = 3 , p = 1 ),Relu ,maxpool(2),flatten,linear(4),gelu,linear(3) ");
  REQUIRE(parsed.num_params() == hand.num_params());
  Rng rng(3);
  hand.set_params(random_matrix(hand.num_params(), 1, rng).col(0));
  parsed.set_params(hand.params());
  const Matrix<D> x = random_matrix(36, 4, rng);
  CHECK(rel_err(parsed.forward(x), hand.forward(x)) < 1e-15);
}

TEST_CASE("describe() of a parsed model parses back to the same model", "[nn][arch]") {
  for (const auto& [shape, spec] : std::vector<std::pair<nn::Shape, std::string>>{
           {nn::Shape{3, 8, 8},
            "conv(3,k=3,p=1),relu,maxpool(2),conv(4,k=3,p=1),relu,maxpool(2),flatten,linear(3)"},  // CLI.md's example
           {nn::Shape{3, 9, 9}, "conv(2,k=2,s=2),batchnorm,leakyrelu(0.3),avgpool(2,s=1),flatten,linear(5),sigmoid"},
           {nn::Shape{7, 1, 1}, "linear(5),batchnorm(eps=0.0001,momentum=0.5),tanh,linear(2),gelu"}}) {
    Net a = parse(shape, spec);
    Net b = parse(shape, a.describe());
    CHECK(b.describe() == a.describe());
    REQUIRE(b.num_params() == a.num_params());
    Rng rng(1);
    a.set_params(random_matrix(a.num_params(), 1, rng).col(0));
    b.set_params(a.params());
    const Matrix<D> x = random_matrix(shape.size(), 3, rng);
    CHECK(rel_err(b.forward(x), a.forward(x)) < 1e-15);
  }
}

TEST_CASE("parse_arch names the offending token and its position", "[nn][arch]") {
  CHECK(error_of("linear(8),  conv3d(4)", nn::Shape{5, 1, 1}) == "parse_arch: unknown layer 'conv3d' at position 12 (known: linear, conv, "
                                             "maxpool, avgpool, flatten, relu, leakyrelu, tanh, sigmoid, gelu, batchnorm)");
  CHECK(error_of("conv(16)") == "parse_arch: missing k= in 'conv(16)' at position 0 (e.g. conv(16,k=3))");
  CHECK_THAT(error_of("flatten, linear()"), Contains("missing OUT in 'linear()' at position 9"));
  CHECK_THAT(error_of("flatten,linear(x)"), Contains("invalid integer 'x' for OUT in 'linear(x)' at position 8"));
  CHECK_THAT(error_of("flatten,linear(0)"), Contains("OUT must be at least 1, got 0"));
  CHECK_THAT(error_of("flatten,linear(3,4)"), Contains("unexpected argument '4' for linear"));
  CHECK_THAT(error_of("conv(4,k=3,q=1)"), Contains("unexpected argument 'q=1' for conv in 'conv(4,k=3,q=1)'"));
  CHECK_THAT(error_of("conv(4,k=3,p=-1)"), Contains("p must be at least 0, got -1"));
  CHECK_THAT(error_of("conv(4,k=3,s=0)"), Contains("s must be at least 1, got 0"));
  CHECK_THAT(error_of("maxpool()"), Contains("missing K in 'maxpool()'"));
  CHECK_THAT(error_of("relu(2)"), Contains("unexpected argument '2' for relu"));
  CHECK_THAT(error_of("leakyrelu(abc)"), Contains("invalid number 'abc' for A"));
  CHECK_THAT(error_of("batchnorm(eps=0)"), Contains("eps must be positive"));
  CHECK_THAT(error_of("batchnorm(momentum=2)"), Contains("momentum must be in [0, 1]"));
  CHECK_THAT(error_of("conv(4,k=3"), Contains("unbalanced parentheses in 'conv(4,k=3' at position 0"));
  CHECK_THAT(error_of("relu, linear(3))"), Contains("unbalanced parentheses"));
  CHECK_THAT(error_of("flatten,linear(3)x"), Contains("unexpected text after ')' in 'linear(3)x' at position 8"));
  CHECK_THAT(error_of("conv(4,(k=3))"), Contains("nested parentheses"));
  CHECK_THAT(error_of("conv(4,,k=3)"), Contains("empty argument"));
  CHECK_THAT(error_of("relu,,relu"), Contains("empty layer at position 5"));
  CHECK_THAT(error_of("relu,"), Contains("empty layer at position 5"));
  CHECK_THAT(error_of("(3)"), Contains("missing layer name"));
  CHECK_THAT(error_of("re-lu"), Contains("invalid layer name 're-lu'"));
  CHECK(error_of("   ") == "parse_arch: empty architecture");
  CHECK(error_of("conv(4,k=3,p=1),relu") == "");  // and a valid spec throws nothing
}

TEST_CASE("parse_arch reports layers that do not fit their input as ShapeError", "[nn][arch]") {
  REQUIRE_THROWS_AS(parse(nn::Shape{3, 8, 8}, "linear(3)"), ShapeError);
  REQUIRE_THROWS_WITH(parse(nn::Shape{3, 8, 8}, "relu, linear(3)"),
                      Contains("parse_arch: 'linear(3)' at position 6") && Contains("flatten"));
  REQUIRE_THROWS_AS(parse(nn::Shape{3, 8, 8}, "conv(4,k=9)"), ShapeError);
  REQUIRE_THROWS_AS(parse(nn::Shape{1, 4, 4}, "maxpool(2),maxpool(2),maxpool(2)"), ShapeError);
}

TEST_CASE("parse_shape reads D and CxHxW", "[nn][arch]") {
  CHECK(nn::parse_shape("784") == nn::Shape{784, 1, 1});
  CHECK(nn::parse_shape("3x32x32") == nn::Shape{3, 32, 32});
  CHECK(nn::parse_shape(" 1 X 28 x 28 ") == nn::Shape{1, 28, 28});
  for (const char* bad : {"", "3x32", "0", "3x-1x2", "abc", "3x32x32x1", "3x32x", "2.5", "3 2"}) {
    INFO("shape '" << bad << "'");
    REQUIRE_THROWS_AS(nn::parse_shape(bad), ValueError);
    REQUIRE_THROWS_WITH(nn::parse_shape(bad), Contains("parse_shape: invalid shape '"));
  }
}
