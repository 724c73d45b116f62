// Learning-rate schedules against their closed forms (PyTorch's StepLR, CosineAnnealingLR and
// LinearLR) at chosen points.
#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "curvature/optim/schedule.hpp"

using namespace curvature;
using Catch::Matchers::Contains;
using Catch::Matchers::WithinRel;

TEST_CASE("A constant schedule gives its lr everywhere", "[optim][schedule]") {
  const optim::Constant s(0.05);
  CHECK(s.lr(0, 0, 1) == 0.05);
  CHECK(s.lr(17, 3, 10) == 0.05);
}

TEST_CASE("Step decay multiplies by gamma every k epochs, whatever the step", "[optim][schedule]") {
  const optim::StepDecay s(0.1, 0.5, 3);
  for (Index e : {0, 1, 2}) CHECK_THAT(s.lr(e, 4, 5), WithinRel(0.1, 1e-15));
  for (Index e : {3, 4, 5}) CHECK_THAT(s.lr(e, 0, 5), WithinRel(0.05, 1e-15));
  CHECK_THAT(s.lr(6, 2, 5), WithinRel(0.025, 1e-15));
  CHECK_THAT(s.lr(30, 0, 5), WithinRel(0.1 / 1024, 1e-15));
}

TEST_CASE("Cosine annealing follows eta_min + (lr - eta_min)(1 + cos(pi t / T)) / 2", "[optim][schedule]") {
  SECTION("in epochs: cos(pi/3) = 1/2 at t = T/3, -1/2 at 2T/3") {
    const optim::CosineAnnealing s(0.1, 12, 0.01);
    CHECK_THAT(s.lr(0, 0, 7), WithinRel(0.1, 1e-15));
    CHECK_THAT(s.lr(4, 6, 7), WithinRel(0.01 + 0.09 * 0.75, 1e-14));
    CHECK_THAT(s.lr(6, 0, 7), WithinRel(0.01 + 0.09 * 0.5, 1e-14));
    CHECK_THAT(s.lr(8, 3, 7), WithinRel(0.01 + 0.09 * 0.25, 1e-14));
    CHECK_THAT(s.lr(12, 0, 7), WithinRel(0.01, 1e-14));
    CHECK_THAT(s.lr(18, 0, 7), WithinRel(0.01 + 0.09 * 0.5, 1e-14));  // rises again past T, as in PyTorch
  }
  SECTION("in steps: t = epoch * steps_per_epoch + step") {
    const optim::CosineAnnealing s(0.2, 12, 0.0, optim::Unit::Steps);
    CHECK_THAT(s.lr(0, 4, 5), WithinRel(0.2 * 0.75, 1e-14));  // t = 4
    CHECK_THAT(s.lr(1, 3, 5), WithinRel(0.2 * 0.25, 1e-14));  // t = 8
    CHECK_THAT(s.lr(1, 1, 5), WithinRel(0.2 * (1 + std::cos(std::numbers::pi / 2)) / 2, 1e-14));  // t = 6
    CHECK(std::abs(s.lr(2, 2, 5)) < 1e-17);  // t = 12
  }
}

TEST_CASE("Linear warm-up scales the wrapped schedule from start_factor to 1", "[optim][schedule]") {
  SECTION("default start_factor 1/W over W = 4 steps") {
    const optim::Warmup w(optim::Constant(0.2), 4);
    CHECK_THAT(w.lr(0, 0, 3), WithinRel(0.05, 1e-15));                         // 0.2 * 1/4
    CHECK_THAT(w.lr(0, 1, 3), WithinRel(0.2 * (0.25 + 0.75 / 4), 1e-15));      // t = 1
    CHECK_THAT(w.lr(0, 2, 3), WithinRel(0.2 * (0.25 + 0.75 / 2), 1e-15));      // t = 2
    CHECK_THAT(w.lr(1, 1, 3), WithinRel(0.2, 1e-15));                          // t = 4
    CHECK_THAT(w.lr(5, 2, 3), WithinRel(0.2, 1e-15));
  }
  SECTION("over 2 epochs from 0, in front of a cosine") {
    const optim::Warmup w(optim::CosineAnnealing(0.1, 10), 2, optim::Unit::Epochs, 0.0);
    CHECK(w.lr(0, 3, 4) == 0.0);
    CHECK_THAT(w.lr(1, 0, 4), WithinRel(0.5 * 0.05 * (1 + std::cos(std::numbers::pi / 10)), 1e-14));
    CHECK_THAT(w.lr(5, 0, 4), WithinRel(0.05, 1e-14));
  }
}

TEST_CASE("Schedules reject bad hyper-parameters and positions", "[optim][schedule][errors]") {
  CHECK_THROWS_WITH(optim::Constant(-0.1), Contains("lr") && Contains("-0.1"));
  CHECK_THROWS_WITH(optim::StepDecay(0.1, 0.0, 3), Contains("gamma"));
  CHECK_THROWS_WITH(optim::StepDecay(0.1, 0.5, 0), Contains("step_size"));
  CHECK_THROWS_WITH(optim::CosineAnnealing(0.1, 0), Contains("T_max"));
  CHECK_THROWS_WITH(optim::CosineAnnealing(0.1, 5, -1.0), Contains("eta_min"));
  CHECK_THROWS_WITH(optim::Warmup(optim::Constant(0.1), 0), Contains("warm-up length"));
  CHECK_THROWS_WITH(optim::Warmup(optim::Constant(0.1), 3, optim::Unit::Steps, 1.5), Contains("start_factor"));
  CHECK_THROWS_WITH(optim::Constant(0.1).lr(0, 5, 5), Contains("step 5") && Contains("steps_per_epoch 5"));
  CHECK_THROWS_AS(optim::CosineAnnealing(0.1, 5).lr(-1, 0, 5), ValueError);
}
