// SGD and Adam against their recurrences (torch.optim.SGD / Adam / AdamW), worked out by hand for
// three parameters over three steps with the fixed gradients below; then their errors.
#include <catch2/catch.hpp>

#include <filesystem>
#include <limits>

#include "curvature/optim/optim.hpp"

using namespace curvature;
using Catch::Matchers::Contains;
using Catch::Matchers::WithinRel;

namespace {

using D = double;

// theta_0 and the gradients of steps 1, 2, 3 (independent of theta, except through weight decay).
Vector<D> theta0() { return (Vector<D>(3) << 1.0, -2.0, 0.5).finished(); }
Vector<D> grad(int t) {
  if (t == 1) return (Vector<D>(3) << 0.5, -1.0, 2.0).finished();
  if (t == 2) return (Vector<D>(3) << 0.1, 0.2, -0.3).finished();
  return (Vector<D>(3) << -0.4, 0.3, 0.0).finished();
}

template <class V>
void check_equal(const V& got, std::initializer_list<D> want, D rel = 1e-13) {
  REQUIRE(got.size() == static_cast<Index>(want.size()));
  Index j = 0;
  for (D w : want) {
    INFO("entry " << j);
    CHECK_THAT(double(got[j]), WithinRel(w, rel) || Catch::Matchers::WithinAbs(w, 1e-15));
    ++j;
  }
}

}  // namespace

TEST_CASE("Plain SGD steps theta <- theta - lr g", "[optim][sgd]") {
  optim::SGD<D> opt;
  Vector<D> th = theta0();
  opt.step(th, grad(1), 0.1);  // (1 - 0.05, -2 + 0.1, 0.5 - 0.2)
  check_equal(th, {0.95, -1.9, 0.3});
  opt.step(th, grad(2), 0.1);  // (0.95 - 0.01, -1.9 - 0.02, 0.3 + 0.03)
  check_equal(th, {0.94, -1.92, 0.33});
  opt.step(th, grad(3), 0.1);  // (0.94 + 0.04, -1.92 - 0.03, 0.33 - 0)
  check_equal(th, {0.98, -1.95, 0.33});
  CHECK(opt.steps() == 3);
  CHECK(opt.momentum_buffer().size() == 0);
}

TEST_CASE("SGD with momentum starts the buffer at the first gradient", "[optim][sgd]") {
  optim::SGD<D> opt({.momentum = 0.9});
  Vector<D> th = theta0();
  opt.step(th, grad(1), 0.1);  // b1 = g1 = (0.5, -1, 2)
  check_equal(opt.momentum_buffer(), {0.5, -1.0, 2.0});
  check_equal(th, {0.95, -1.9, 0.3});
  opt.step(th, grad(2), 0.1);  // b2 = 0.9 b1 + g2 = (0.55, -0.7, 1.5)
  check_equal(opt.momentum_buffer(), {0.55, -0.7, 1.5});
  check_equal(th, {0.895, -1.83, 0.15});
  opt.step(th, grad(3), 0.1);  // b3 = 0.9 b2 + g3 = (0.095, -0.33, 1.35)
  check_equal(opt.momentum_buffer(), {0.095, -0.33, 1.35});
  check_equal(th, {0.8855, -1.797, 0.015}, 1e-12);
}

TEST_CASE("SGD with Nesterov momentum steps along g + mu b", "[optim][sgd]") {
  optim::SGD<D> opt({.momentum = 0.9, .nesterov = true});
  Vector<D> th = theta0();
  opt.step(th, grad(1), 0.1);  // b1 = g1; d = g1 + 0.9 g1 = (0.95, -1.9, 3.8)
  check_equal(th, {0.905, -1.81, 0.12});
  opt.step(th, grad(2), 0.1);  // b2 = (0.55, -0.7, 1.5); d = g2 + 0.9 b2 = (0.595, -0.43, 1.05)
  check_equal(th, {0.8455, -1.767, 0.015}, 1e-12);
  opt.step(th, grad(3), 0.1);  // b3 = (0.095, -0.33, 1.35); d = g3 + 0.9 b3 = (-0.3145, 0.003, 1.215)
  check_equal(th, {0.87695, -1.7673, -0.1065}, 1e-12);
}

TEST_CASE("SGD weight decay adds lambda theta to the gradient before the momentum", "[optim][sgd]") {
  SECTION("without momentum: d = g + 0.1 theta") {
    optim::SGD<D> opt({.weight_decay = 0.1});
    Vector<D> th = theta0();
    opt.step(th, grad(1), 0.1);  // d = (0.6, -1.2, 2.05)
    check_equal(th, {0.94, -1.88, 0.295});
    opt.step(th, grad(2), 0.1);  // d = (0.194, 0.012, -0.2705)
    check_equal(th, {0.9206, -1.8812, 0.32205});
    opt.step(th, grad(3), 0.1);  // d = (-0.30794, 0.11188, 0.032205)
    check_equal(th, {0.951394, -1.892388, 0.3188295}, 1e-12);
  }
  SECTION("with momentum 0.9: d = g + 0.01 theta, b = 0.9 b + d") {
    optim::SGD<D> opt({.momentum = 0.9, .weight_decay = 0.01});
    Vector<D> th = theta0();
    opt.step(th, grad(1), 0.1);  // b1 = d1 = (0.51, -1.02, 2.005)
    check_equal(opt.momentum_buffer(), {0.51, -1.02, 2.005});
    check_equal(th, {0.949, -1.898, 0.2995});
    opt.step(th, grad(2), 0.1);  // d2 = (0.10949, 0.18102, -0.297005); b2 = (0.56849, -0.73698, 1.507495)
    check_equal(opt.momentum_buffer(), {0.56849, -0.73698, 1.507495});
    check_equal(th, {0.892151, -1.824302, 0.14875050}, 1e-12);
    opt.step(th, grad(3), 0.1);  // d3 = (-0.39107849, 0.28175698, 0.0014875050); b3 = 0.9 b2 + d3
    check_equal(opt.momentum_buffer(), {0.12056251, -0.38152502, 1.358233005}, 1e-12);
    check_equal(th, {0.880094749, -1.786149498, 0.0129271995}, 1e-11);
  }
}

TEST_CASE("SGD dampening scales the gradient into the buffer after the first step", "[optim][sgd]") {
  optim::SGD<D> opt({.momentum = 0.5, .dampening = 0.5});
  Vector<D> th = theta0();
  opt.step(th, grad(1), 0.1);  // b1 = g1 (no dampening at the first step)
  check_equal(opt.momentum_buffer(), {0.5, -1.0, 2.0});
  opt.step(th, grad(2), 0.1);  // b2 = 0.5 b1 + 0.5 g2 = (0.3, -0.4, 0.85)
  check_equal(opt.momentum_buffer(), {0.3, -0.4, 0.85});
  check_equal(th, {0.92, -1.86, 0.215}, 1e-12);
}

TEST_CASE("Adam follows torch.optim.Adam: bias corrections, eps outside the square root", "[optim][adam]") {
  // beta1 = 0.5, beta2 = 0.75, eps = 0.01, lr = 0.1: round numbers at step 1.
  optim::Adam<D> opt({.beta1 = 0.5, .beta2 = 0.75, .eps = 0.01});
  Vector<D> th = theta0();
  CHECK(opt.second_moment_corrected().size() == 0);
  // m1 = 0.5 g1 = (0.25, -0.5, 1); v1 = 0.25 g1^2 = (0.0625, 0.25, 1); v_hat = v1 / 0.25 = (0.25, 1, 4);
  // theta -= (0.1 / 0.5) m1 / (sqrt(v_hat) + 0.01) = 0.2 (0.25 / 0.51, -0.5 / 1.01, 1 / 2.01)
  opt.step(th, grad(1), 0.1);
  check_equal(opt.first_moment(), {0.25, -0.5, 1.0});
  check_equal(opt.second_moment(), {0.0625, 0.25, 1.0});
  check_equal(opt.second_moment_corrected(), {0.25, 1.0, 4.0});
  check_equal(th, {1 - 0.05 / 0.51, -2 + 0.1 / 1.01, 0.5 - 0.2 / 2.01});
  // m2 = 0.5 m1 + 0.5 g2 = (0.175, -0.15, 0.35); v2 = 0.75 v1 + 0.25 g2^2 = (0.049375, 0.1975, 0.7725);
  // bias corrections 1 - 0.5^2 = 0.75, 1 - 0.75^2 = 0.4375
  opt.step(th, grad(2), 0.1);
  check_equal(opt.first_moment(), {0.175, -0.15, 0.35});
  check_equal(opt.second_moment(), {0.049375, 0.1975, 0.7725});
  check_equal(opt.second_moment_corrected(), {0.049375 / 0.4375, 0.1975 / 0.4375, 0.7725 / 0.4375});
  const D s2 = 0.1 / 0.75;
  check_equal(th, {1 - 0.05 / 0.51 - s2 * 0.175 / (std::sqrt(0.049375 / 0.4375) + 0.01),
                   -2 + 0.1 / 1.01 + s2 * 0.15 / (std::sqrt(0.1975 / 0.4375) + 0.01),
                   0.5 - 0.2 / 2.01 - s2 * 0.35 / (std::sqrt(0.7725 / 0.4375) + 0.01)});
  // m3 = (-0.1125, 0.075, 0.175); v3 = (0.07703125, 0.170625, 0.579375); corrections 0.875, 0.578125
  opt.step(th, grad(3), 0.1);
  check_equal(opt.first_moment(), {-0.1125, 0.075, 0.175});
  check_equal(opt.second_moment(), {0.07703125, 0.170625, 0.579375});
  check_equal(th, {0.8687955614730475, -1.8871521030809593, 0.3458596552717232}, 1e-12);
}

TEST_CASE("Adam's weight decay is L2 on the gradient, AdamW's is decoupled", "[optim][adam]") {
  SECTION("Adam, weight_decay 0.1: g <- g + 0.1 theta before the moments") {
    optim::Adam<D> opt({.beta1 = 0.5, .beta2 = 0.75, .eps = 0.01, .weight_decay = 0.1});
    Vector<D> th = theta0();
    opt.step(th, grad(1), 0.1);  // g = (0.6, -1.2, 2.05); m1 = (0.3, -0.6, 1.025); v_hat = g^2
    check_equal(opt.first_moment(), {0.3, -0.6, 1.025});
    check_equal(opt.second_moment(), {0.09, 0.36, 1.050625});
    check_equal(th, {1 - 0.06 / 0.61, -2 + 0.12 / 1.21, 0.5 - 0.205 / 2.06});
    opt.step(th, grad(2), 0.1);
    opt.step(th, grad(3), 0.1);
    check_equal(th, {0.8359985956748902, -1.8344107224850945, 0.33996831730496985}, 1e-12);
  }
  SECTION("AdamW, weight_decay 0.1: theta <- theta (1 - 0.1 * 0.1) first; moments of g alone") {
    optim::Adam<D> opt({.beta1 = 0.5, .beta2 = 0.75, .eps = 0.01, .weight_decay = 0.1,
                        .decoupled_weight_decay = true});
    Vector<D> th = theta0();
    opt.step(th, grad(1), 0.1);  // theta <- 0.99 theta, then the plain Adam step of the test above
    check_equal(opt.first_moment(), {0.25, -0.5, 1.0});
    check_equal(th, {0.99 - 0.05 / 0.51, -1.98 + 0.1 / 1.01, 0.495 - 0.2 / 2.01});
    opt.step(th, grad(2), 0.1);
    check_equal(th, {0.8155925239817721, -1.8328497108452888, 0.3566854988383803}, 1e-12);
    opt.step(th, grad(3), 0.1);
    check_equal(th, {0.8417200283900925, -1.8300137049824072, 0.3333378251589612}, 1e-12);
  }
}

TEST_CASE("Float optimizers agree with the double recurrences to float rounding", "[optim][float]") {
  optim::Adam<float> adam({.beta1 = 0.5, .beta2 = 0.75, .eps = 0.01});
  optim::SGD<float> sgd({.momentum = 0.9, .nesterov = true});
  Vector<float> a = theta0().cast<float>(), s = a;
  for (int t = 1; t <= 3; ++t) {
    adam.step(a, grad(t).cast<float>(), 0.1f);
    sgd.step(s, grad(t).cast<float>(), 0.1f);
  }
  check_equal(a, {0.8687955614730475, -1.8871521030809593, 0.3458596552717232}, 2e-6);
  check_equal(s, {0.87695, -1.7673, -0.1065}, 2e-6);
}

TEST_CASE("Optimizers reject bad hyper-parameters, mismatched sizes and NaN gradients", "[optim][errors]") {
  CHECK_THROWS_WITH(optim::SGD<D>({.momentum = -0.1}), Contains("momentum") && Contains("-0.1"));
  CHECK_THROWS_WITH(optim::SGD<D>({.weight_decay = -1}), Contains("weight_decay"));
  CHECK_THROWS_WITH(optim::SGD<D>({.nesterov = true}), Contains("Nesterov"));
  CHECK_THROWS_WITH(optim::Adam<D>({.beta1 = 1.0}), Contains("beta1") && Contains("[0, 1)"));
  CHECK_THROWS_WITH(optim::Adam<D>({.beta2 = -0.5}), Contains("beta2") && Contains("-0.5"));
  CHECK_THROWS_WITH(optim::Adam<D>({.eps = 0}), Contains("eps"));
  CHECK_THROWS_AS(optim::Adam<D>({.beta2 = std::numeric_limits<D>::quiet_NaN()}), ValueError);

  optim::Adam<D> adam;
  optim::SGD<D> sgd({.momentum = 0.9});
  Vector<D> th = theta0();
  CHECK_THROWS_WITH(sgd.step(th, grad(1), -0.1), Contains("lr") && Contains("-0.1"));
  const Vector<D> short_g = Vector<D>::Ones(2);
  CHECK_THROWS_AS(adam.step(th, short_g, 0.1), ShapeError);
  CHECK_THROWS_WITH(adam.step(th, short_g, 0.1), Contains("3") && Contains("2"));

  Vector<D> bad = grad(1);
  bad[1] = std::numeric_limits<D>::quiet_NaN();
  sgd.step(th, grad(1), 0.1);
  sgd.step(th, grad(2), 0.1);
  const Vector<D> before = th;
  CHECK_THROWS_AS(sgd.step(th, bad, 0.1), ValueError);
  CHECK_THROWS_WITH(sgd.step(th, bad, 0.1), Contains("step 3") && Contains("grad[1]"));
  CHECK(th == before);  // untouched
  CHECK(sgd.steps() == 2);
  bad[1] = std::numeric_limits<D>::infinity();
  CHECK_THROWS_WITH(adam.step(th, bad, 0.1), Contains("step 1") && Contains("not finite"));
  CHECK(adam.first_moment().size() == 0);

  // State sized for 3 parameters refuses another length until reset().
  Vector<D> other = Vector<D>::Zero(4);
  CHECK_THROWS_WITH(sgd.step(other, Vector<D>::Ones(4), 0.1), Contains("4") && Contains("3") && Contains("reset"));
  sgd.reset();
  sgd.step(other, Vector<D>::Ones(4), 0.1);
  CHECK(sgd.steps() == 1);

  // An update that overflows is reported with its step, never left as a silent Inf/NaN.
  optim::SGD<D> plain;
  Vector<D> big = Vector<D>::Constant(3, 1e308);
  CHECK_THROWS_AS(plain.step(big, Vector<D>::Constant(3, -1e308), 10.0), optim::OverflowError);
  CHECK_THROWS_WITH(plain.step(big, Vector<D>::Constant(3, -1e308), 10.0), Contains("step 1") && Contains("unchanged"));
  CHECK(big == Vector<D>::Constant(3, 1e308));
  CHECK(plain.steps() == 0);
  optim::Adam<D> adam2;
  CHECK_THROWS_AS(adam2.step(big, Vector<D>::Constant(3, 1e200), 0.1), optim::OverflowError);  // v = g^2 overflows
  CHECK(big == Vector<D>::Constant(3, 1e308));
}

TEST_CASE("Optimizer state saves to .npy and restores to the same trajectory", "[optim][io]") {
  const auto dir = std::filesystem::temp_directory_path() / "curvature_test_optim_state";
  std::filesystem::create_directories(dir);
  const std::string prefix = (dir / "adam").string();
  optim::Adam<D> a({.beta1 = 0.5, .beta2 = 0.75, .eps = 0.01});
  optim::SGD<D> s({.momentum = 0.9});
  Vector<D> ta = theta0(), ts = theta0();
  a.step(ta, grad(1), 0.1);
  s.step(ts, grad(1), 0.1);
  a.save_state(prefix);
  s.save_state((dir / "sgd").string());
  optim::Adam<D> a2({.beta1 = 0.5, .beta2 = 0.75, .eps = 0.01});
  optim::SGD<D> s2({.momentum = 0.9});
  a2.load_state(prefix);
  s2.load_state((dir / "sgd").string());
  CHECK(a2.steps() == 1);
  Vector<D> ta2 = ta, ts2 = ts;
  for (int t = 2; t <= 3; ++t) {
    a.step(ta, grad(t), 0.1);
    a2.step(ta2, grad(t), 0.1);
    s.step(ts, grad(t), 0.1);
    s2.step(ts2, grad(t), 0.1);
  }
  CHECK(ta2 == ta);
  CHECK(ts2 == ts);
  std::filesystem::remove_all(dir);
}
