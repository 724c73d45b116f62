// The OpenMP and serial backends compute the same results (to rounding) on the same inputs.
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::random_matrix;
using curvature::testing::rel_err;
using D = double;

template <class B>
nn::Sequential<D, B> backend_mlp(B b) {
  nn::Sequential<D, B> m(nn::Shape{20, 1, 1}, b);
  m.add(nn::Linear<D, B>(64)).add(nn::Tanh<D, B>()).add(nn::Linear<D, B>(48)).add(nn::ReLU<D, B>());
  m.add(nn::Linear<D, B>(5));
  m.init(3);
  return m;
}

TEST_CASE("OpenMP and serial backends agree on every derivative", "[backend]") {
  auto serial = backend_mlp(backend::Serial{});
  auto omp = backend_mlp(backend::OpenMP{2});
  REQUIRE(omp.backend().threads() == 2);
  Rng rng(1);
  const Index n = 33;
  const Matrix<D> x = random_matrix(20, n, rng);
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(5));
  loss::CrossEntropy<D> ce;
  const D tol = 1e-12;
  CHECK(rel_err(loss_and_gradient(serial, ce, x, y).gradient, loss_and_gradient(omp, ce, x, y).gradient) < tol);
  const Matrix<D> v = random_matrix(serial.num_params(), 3, rng);
  CHECK(rel_err(hvp(serial, ce, x, y, v), hvp(omp, ce, x, y, v)) < tol);
  Matrix<D> a, b;
  per_sample_gradients(serial, ce, x, y, a);
  per_sample_gradients(omp, ce, x, y, b);
  CHECK(rel_err(a, b) < tol);
  CHECK(rel_err(ggn_diagonal(serial, ce, x, y), ggn_diagonal(omp, ce, x, y)) < tol);
  CHECK(rel_err(empirical_fisher_diagonal(serial, ce, x, y), empirical_fisher_diagonal(omp, ce, x, y)) < tol);
  per_sample_ggn_diagonal(serial, ce, x, y, a);
  per_sample_ggn_diagonal(omp, ce, x, y, b);
  CHECK(rel_err(a, b) < tol);
}
