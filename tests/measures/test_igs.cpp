// IGS, IGS_b and the Fisher-Rao norm against dense computations done here: Jacobians from
// unit-vector JVPs, Lambda in closed form, F^-1 by LDLT, mini-batch expectations by enumeration.
#include <Eigen/Eigenvalues>
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "curvature/measures/measures.hpp"
#include "support/references.hpp"

using namespace curvature;
using namespace curvature::testing;

namespace {

/// Tanh keeps every hidden unit alive, so the Jacobian stack has the rank its shape allows; the
/// leaky ReLU is 1-homogeneous, as the rescaling test needs (a plain ReLU net of this size has dead
/// units on a small batch, which lowers F's rank).
Net mlp(std::uint64_t seed, bool leaky = false) {
  Net m(nn::Shape{3, 1, 1});
  m.add(nn::Linear<D, S>(5));
  if (leaky) m.add(nn::LeakyReLU<D, S>(0.1));
  else m.add(nn::Tanh<D, S>());
  m.add(nn::Linear<D, S>(4));
  if (leaky) m.add(nn::LeakyReLU<D, S>(0.1));
  else m.add(nn::Tanh<D, S>());
  m.add(nn::Linear<D, S>(3));
  m.init(seed);
  return m;
}

D probability_of_label(Net& m, const Matrix<D>& xi, std::int64_t y) { return softmax(m.forward(xi).col(0))(y); }

}  // namespace

TEST_CASE("IGS with a full-row-rank Jacobian stack equals sum_i (1/p_yi - 1)", "[measures][igs]") {
  Rng rng(11);
  Net m = mlp(3);  // d = 20 + 24 + 15 = 59 >= N (C - 1) = 16
  const Index n = 8;
  const Matrix<D> x = random_matrix(3, n, rng);
  const auto y = labels(n, 3, rng);
  loss::CrossEntropy<D> ce;
  const IgsResult<D> r = information_geometric_sharpness(m, ce, x, y);
  D closed = 0;
  for (Index i = 0; i < n; ++i) closed += 1 / probability_of_label(m, Matrix<D>(x.col(i)), y[i]) - 1;
  CHECK(r.rank == n * 2);
  CHECK(r.value == Approx(closed).epsilon(1e-9));
  CHECK(r.gap > 1e6);
}

TEST_CASE("IGS with a rank-deficient Fisher equals the mean of g_i^T F^+ g_i on F's range", "[measures][igs]") {
  Rng rng(12);
  Net m(nn::Shape{6, 1, 1});
  m.add(nn::Linear<D, S>(4)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(3));
  m.init(9);
  const Index n = 40;  // N (C - 1) = 80 > d = 43, yet F has rank d - 5: softmax ignores a common
                       // shift of the logits, i.e. last bias + c 1 and last weight + 1 u^T (u in R^4)
  const Matrix<D> x = random_matrix(6, n, rng);
  const auto y = labels(n, 3, rng);
  loss::CrossEntropy<D> ce;
  const Index rank = m.num_params() - 5;
  Eigen::SelfAdjointEigenSolver<Matrix<D>> eig(dense_ggn(m, ce, x));  // ascending eigenvalues
  const Vector<D> ev = eig.eigenvalues();
  INFO("eigenvalues " << ev(4) << " | " << ev(5) << " ... " << ev(ev.size() - 1));
  REQUIRE(ev(5) > 1e6 * std::abs(ev(4)));  // a clear gap after the 5 null directions
  const Matrix<D> u = eig.eigenvectors().rightCols(rank);
  const Matrix<D> fplus = u * ev.tail(rank).cwiseInverse().asDiagonal() * u.transpose();
  const Matrix<D> g = sample_gradients(m, ce, x, y);
  const D expected = g.cwiseProduct(fplus * g).colwise().sum().mean();
  const IgsResult<D> r = information_geometric_sharpness(m, ce, x, y);
  CHECK(r.rank == rank);
  CHECK(r.value == Approx(expected).epsilon(1e-9));
  const Vector<D> gbar = g.rowwise().mean();
  CHECK(r.full_batch == Approx(gbar.dot(fplus * gbar)).epsilon(1e-9));
}

TEST_CASE("IGS_b equals the enumerated mean over all mini-batches", "[measures][igs]") {
  Rng rng(13);
  Net m = mlp(5);
  const Index n = 6;
  const Matrix<D> x = random_matrix(3, n, rng);
  const auto y = labels(n, 3, rng);
  loss::CrossEntropy<D> ce;
  const IgsResult<D> r = information_geometric_sharpness(m, ce, x, y);
  const FisherPseudoInverse<D> pinv = fisher_pseudo_inverse(m, ce, x, y);
  const Matrix<D> g = sample_gradients(m, ce, x, y);
  for (Index b : {1, 2, 3, 6}) {
    // Without replacement: every subset of size b, by bitmask.
    D sum = 0;
    Index count = 0;
    for (unsigned mask = 0; mask < (1u << n); ++mask) {
      if (static_cast<Index>(__builtin_popcount(mask)) != b) continue;
      Vector<D> gb = Vector<D>::Zero(g.rows());
      for (Index i = 0; i < n; ++i)
        if (mask & (1u << i)) gb += g.col(i) / static_cast<D>(b);
      sum += pinv.quadratic_forms(gb)(0);
      ++count;
    }
    CHECK(minibatch_igs(r, b) == Approx(sum / static_cast<D>(count)).epsilon(1e-9));
    // With replacement: every ordered b-tuple.
    D sum_r = 0;
    Index tuples = 1;
    for (Index k = 0; k < b; ++k) tuples *= n;
    for (Index t = 0; t < tuples; ++t) {
      Vector<D> gb = Vector<D>::Zero(g.rows());
      for (Index k = 0, u = t; k < b; ++k, u /= n) gb += g.col(u % n) / static_cast<D>(b);
      sum_r += pinv.quadratic_forms(gb)(0);
    }
    CHECK(minibatch_igs(r, b, BatchSampling::WithReplacement) ==
          Approx(sum_r / static_cast<D>(tuples)).epsilon(1e-9));
  }
  CHECK_THROWS_WITH(minibatch_igs(r, 0), Catch::Contains("b = 0"));
  CHECK_THROWS_WITH(minibatch_igs(r, 7), Catch::Contains("exceeds the 6 samples"));
}

TEST_CASE("Fisher-Rao norm equals theta^T F theta from explicit Jacobians", "[measures][fisher_rao]") {
  Rng rng(14);
  Net m = mlp(6);
  const Matrix<D> x = random_matrix(3, 9, rng);
  const auto y = labels(9, 3, rng);
  loss::CrossEntropy<D> ce;
  const Vector<D> theta = m.params();
  const D expected = theta.dot(dense_ggn(m, ce, x) * theta);
  CHECK(fisher_rao_norm(m, ce, x, y) == Approx(expected).epsilon(1e-10));
}

TEST_CASE("Rescaling one leaky-ReLU layer by alpha and the next by 1/alpha leaves IGS and the Fisher-Rao norm",
          "[measures][reparametrization]") {
  Rng rng(15);
  Net m = mlp(7, true);
  const Matrix<D> x = random_matrix(3, 8, rng);
  const auto y = labels(8, 3, rng);
  loss::CrossEntropy<D> ce;
  const Matrix<D> f0 = m.forward(x);
  const D igs0 = information_geometric_sharpness(m, ce, x, y).value;
  const D fr0 = fisher_rao_norm(m, ce, x, y);
  const D tr0 = hvp(m, ce, x, y, Matrix<D>::Identity(m.num_params(), m.num_params())).trace();
  // Layer 0 (W 5x3, b 5) times alpha, layer 2's weight (4x5) times 1/alpha: ReLU is 1-homogeneous.
  const D alpha = 10;
  Vector<D> p = m.params();
  p.segment(m.param_offset(0), 20) *= alpha;
  p.segment(m.param_offset(2), 20) /= alpha;
  m.set_params(p);
  REQUIRE(curvature::testing::rel_err(m.forward(x), f0) < 1e-12);
  CHECK(information_geometric_sharpness(m, ce, x, y).value == Approx(igs0).epsilon(1e-9));
  CHECK(fisher_rao_norm(m, ce, x, y) == Approx(fr0).epsilon(1e-9));
  const D tr1 = hvp(m, ce, x, y, Matrix<D>::Identity(m.num_params(), m.num_params())).trace();
  CHECK(std::abs(tr1 - tr0) > 0.1 * std::abs(tr0));  // tr(H) is not invariant
}

TEST_CASE("The exact pseudo-inverse refuses models that are too large", "[measures][igs]") {
  Rng rng(16);
  Net m = mlp(8);
  const Matrix<D> x = random_matrix(3, 4, rng);
  const auto y = labels(4, 3, rng);
  loss::CrossEntropy<D> ce;
  CHECK_THROWS_WITH(fisher_pseudo_inverse(m, ce, x, y, 10), Catch::Contains("d = 59 exceeds max_params = 10"));
  CHECK_THROWS_WITH(information_geometric_sharpness(m, ce, x, {0, 1}), Catch::Contains("4 inputs but 2 targets"));
}
