// 002 Thm 3.3, Prop. 3.4 and Thm 3.5 against hand-computed numbers, and linearized SGD against
// a direct loop and against the exact expected loss of a model with orthogonal features.
#include "noise/noise_fixtures.hpp"

using namespace noisefix;

TEST_CASE("The stability bounds and the escape factor equal their formulas", "[noise][stability]") {
  // Thm 3.3: sqrt(8 / 0.5) / 0.1 = 40.
  const StabilityBound<D> b = linear_stability_bound(0.5, 0.1, 8);
  CHECK(b.value == Approx(40.0).epsilon(1e-14));
  CHECK(b.mu == 0.5);
  CHECK(b.factor == AlignmentFactor::Mu);
  CHECK(std::string(to_string(b.factor)) == "mu");
  CHECK(b.eta == 0.1);
  CHECK(b.batch_size == 8);
  // Prop. 3.4: min(5 / sqrt(4 * 2), 10 / 2) / 0.1 = 17.677669529663689.
  const StabilityBound<D> b1 = linear_stability_bound_mu1(2.0, 0.1, 5);
  CHECK(b1.value == Approx(17.677669529663689).epsilon(1e-14));
  CHECK(b1.factor == AlignmentFactor::Mu1);
  CHECK(std::string(to_string(b1.factor)) == "mu1");
  // The second branch: mu1 = 0.5, B = 2: min(2 / sqrt(0.5), 8) / 0.1 = 28.28..; mu1 = 8, B = 50:
  // min(50 / sqrt(392), 12.5) = 2.5254 (first); mu1 = 0.01, B = 2: min(2 / 0.1, 400) = 20 (first);
  // B = 1: 2 / mu1 only.
  CHECK(linear_stability_bound_mu1(0.5, 0.1, 2).value == Approx(2 / std::sqrt(0.5) / 0.1).epsilon(1e-14));
  CHECK(linear_stability_bound_mu1(2.0, 0.1, 1).value == Approx(10.0).epsilon(1e-14));
  CHECK(linear_stability_bound_mu1(2.0, 1.0, 2).value == Approx(std::min(2 / std::sqrt(2.0), 2.0)).epsilon(1e-14));
  CHECK(linear_stability_bound_mu1(100.0, 1.0, 2).value == Approx(0.04).epsilon(1e-14));  // 2B/mu1 < B/sqrt((B-1)mu1)
  // Thm 3.5: 0.1^2 * 0.5 * 50^2 / 8 = 1.5625.
  const EscapeFactor<D> e = escape_factor(0.5, 50.0, 0.1, 8);
  CHECK(e.gamma0 == Approx(1.5625).epsilon(1e-14));
  CHECK(e.escapes());
  CHECK(e.mu == 0.5);
  CHECK(e.h_frobenius == 50.0);
  CHECK_FALSE(escape_factor(0.5, 30.0, 0.1, 8).escapes());
  // At ||H||_F equal to Thm 3.3's bound the escape factor is exactly 1.
  CHECK(escape_factor(0.5, b.value, 0.1, 8).gamma0 == Approx(1.0).epsilon(1e-14));
}

TEST_CASE("The stability functions reject bad arguments with messages naming them", "[noise][stability][errors]") {
  CHECK_THROWS_WITH(linear_stability_bound(0.0, 0.1, 8), Catch::Contains("mu0 = 0"));
  CHECK_THROWS_WITH(linear_stability_bound(-1.0, 0.1, 8), Catch::Contains("mu0 = -1"));
  CHECK_THROWS_WITH(linear_stability_bound(0.5, 0.0, 8), Catch::Contains("eta = 0"));
  CHECK_THROWS_WITH(linear_stability_bound(0.5, 0.1, 0), Catch::Contains("batch_size B = 0"));
  CHECK_THROWS_WITH(linear_stability_bound_mu1(0.0, 0.1, 8), Catch::Contains("mu1 = 0"));
  CHECK_THROWS_WITH(linear_stability_bound_mu1(1.0, -0.1, 8), Catch::Contains("eta = -0.1"));
  CHECK_THROWS_WITH(escape_factor(0.5, -1.0, 0.1, 8), Catch::Contains("h_frobenius = -1"));
  CHECK_THROWS_AS(escape_factor(0.5, 1.0, 0.1, 0), ValueError);
  DenseSamples<D> s(std::vector<Matrix<D>>(3, Matrix<D>::Identity(2, 2)));
  const Vector<D> t0 = Vector<D>::Ones(2);
  CHECK_THROWS_WITH(simulate_linearized_sgd(s, Vector<D>::Ones(3).eval(), {}), Catch::Contains("theta0 has 3"));
  CHECK_THROWS_WITH(simulate_linearized_sgd(s, t0, {0.0}), Catch::Contains("eta = 0"));
  CHECK_THROWS_WITH(simulate_linearized_sgd(s, t0, {0.1, 0}), Catch::Contains("batch_size B = 0"));
  CHECK_THROWS_WITH(simulate_linearized_sgd(s, t0, {0.1, 4, 1, 1, 0, BatchSampling::WithoutReplacement}),
                    Catch::Contains("exceeds the N = 3"));
  CHECK_THROWS_WITH(simulate_linearized_sgd(s, t0, {0.1, 1, 0}), Catch::Contains("steps = 0"));
  CHECK_THROWS_WITH(simulate_linearized_sgd(s, t0, {0.1, 1, 1, 0}), Catch::Contains("trajectories = 0"));
  CHECK_THROWS_AS(DenseSamples<D>({Matrix<D>(Matrix<D>::Identity(2, 2)), Matrix<D>(Matrix<D>::Identity(3, 3))}), ShapeError);
}

TEST_CASE("Linearized SGD equals a direct loop over the documented batches", "[noise][stability][sgd]") {
  Rng rng(31);
  const Index d = 6, n = 5;
  std::vector<Matrix<D>> h;
  for (Index i = 0; i < n; ++i) {
    const Matrix<D> a = random_matrix(d, d, rng);
    h.push_back(a * a.transpose() / static_cast<D>(d));
  }
  Matrix<D> hbar = Matrix<D>::Zero(d, d);
  for (const auto& hi : h) hbar += hi / static_cast<D>(n);
  const Vector<D> theta0 = random_matrix(d, 1, rng).col(0);
  DenseSamples<D> samples(h);
  for (BatchSampling s : {BatchSampling::WithReplacement, BatchSampling::WithoutReplacement}) {
    const LinearizedSgdOptions o{0.3, 2, 4, 3, 9, s};
    const LinearizedSgdResult<D> r = simulate_linearized_sgd(samples, theta0, o);
    REQUIRE(r.mean_loss.size() == 5);
    Vector<D> mean_loss = Vector<D>::Zero(5);
    for (Index t = 0; t < 3; ++t) {
      Rng traj(9, static_cast<std::uint64_t>(t));
      Vector<D> th = theta0;
      mean_loss(0) += 0.5 * th.dot(hbar * th) / 3;
      for (Index step = 1; step <= 4; ++step) {
        Vector<D> sum = Vector<D>::Zero(d);
        for (Index i : minibatch_indices(traj, n, 2, s)) sum += h[static_cast<std::size_t>(i)] * th;
        th -= 0.3 / 2 * sum;
        mean_loss(step) += 0.5 * th.dot(hbar * th) / 3;
      }
      CHECK(rel_err(r.final_theta.col(t), th) < 1e-12);
    }
    CHECK(rel_err(r.mean_loss, mean_loss) < 1e-12);
    CHECK((r.geometric_mean_loss.array() <= r.mean_loss.array() * (1 + 1e-12)).all());
  }
}

TEST_CASE("Rank-one per-sample curvatures from model gradients equal the dense outer products",
          "[noise][stability][sgd]") {
  Rng rng(32);
  Net m = small_mlp(3, 1, 33);
  const Matrix<D> x = random_matrix(3, 7, rng);
  const Matrix<D> gf = model_gradients(m, x);
  std::vector<Matrix<D>> h;
  for (Index i = 0; i < x.cols(); ++i) h.push_back(gf.col(i) * gf.col(i).transpose());
  RankOneSamples<D> r1(gf);
  DenseSamples<D> dense(h);
  const Vector<D> theta0 = random_matrix(m.num_params(), 1, rng, 0.1).col(0);
  const LinearizedSgdOptions o{0.05, 3, 5, 4, 1};
  const LinearizedSgdResult<D> a = simulate_linearized_sgd(r1, theta0, o), b = simulate_linearized_sgd(dense, theta0, o);
  CHECK(rel_err(a.final_theta, b.final_theta) < 1e-10);
  CHECK(rel_err(a.mean_loss, b.mean_loss) < 1e-10);
}

TEST_CASE("With orthogonal features the mean loss grows as (gamma0 + (1 - eta s^2/N)^2)^t, mu from eq. 3",
          "[noise][stability][sgd]") {
  // g_i = e_i (s = 1), H_i = e_i e_i^T, H = I / N, d = N = 10, B = 2 with replacement. Each
  // coordinate is multiplied by (1 - (eta/B) c)^2, c ~ Binomial(B, 1/N), whose mean is
  // (1 - eta/N)^2 + eta^2 (1 - 1/N) / (N B) = (1 - eta/N)^2 + gamma0, gamma0 = eta^2 mu ||H||_F^2 / B
  // with mu = 1 - 1/N at every theta (SPEC 4, 002 Thm 3.5).
  const Index n = 10, b = 2, steps = 3;
  const Matrix<D> features = Matrix<D>::Identity(n, n);
  RankOneSamples<D> samples(features);
  Rng rng(34);
  const Vector<D> theta0 = random_matrix(n, 1, rng).col(0);
  // mu at theta0 from alignment_factors: per-sample gradients (g_i . theta) g_i, G = H = I / N.
  DenseOperator<D> g_op(Matrix<D>(Matrix<D>::Identity(n, n) / static_cast<D>(n)));
  const Matrix<D> grads = features * theta0.asDiagonal();
  const D loss0 = 0.5 * theta0.squaredNorm() / static_cast<D>(n);
  const AlignmentFactors<D> a = alignment_factors(g_op, grads, loss0);
  REQUIRE(a.defined());
  CHECK(rel(*a.mu, 1 - 1.0 / static_cast<D>(n)) < 1e-12);
  CHECK(rel(*a.mu1, 1.0) < 1e-12);
  const D h_frob = std::sqrt(1.0 / static_cast<D>(n));
  for (D eta : {10.0, 5.0}) {
    INFO("eta = " << eta);
    const EscapeFactor<D> e = escape_factor(*a.mu, h_frob, eta, b);
    const D m_rate = e.gamma0 + (1 - eta / static_cast<D>(n)) * (1 - eta / static_cast<D>(n));
    const LinearizedSgdResult<D> r = simulate_linearized_sgd(samples, theta0, {eta, b, steps, 20000, 35});
    CHECK(rel(r.mean_loss(0), loss0) < 1e-12);
    for (Index t = 1; t <= steps; ++t) {
      const D expected = loss0 * std::pow(m_rate, static_cast<D>(t));
      INFO("t = " << t << " mean " << r.mean_loss(t) << " expected " << expected << " se " << r.mean_loss_std_error(t));
      CHECK(r.mean_loss_std_error(t) < 0.1 * expected);
      CHECK(std::abs(r.mean_loss(t) - expected) < 5 * r.mean_loss_std_error(t));
      CHECK(r.mean_loss(t) > loss0 * std::pow(e.gamma0, static_cast<D>(t)) * 0.8);  // Thm 3.5
      CHECK(r.geometric_mean_loss(t) < r.mean_loss(t));                               // typical < mean
    }
    CHECK(e.escapes());
    CHECK(r.growth_rate() > 1);
  }
}
