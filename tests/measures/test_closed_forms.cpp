// Closed forms: a linear model under MSE has H = G = F = I_K (x) (1/N) sum_i xbar_i xbar_i^T
// (xbar = [x; 1]) in the [W | b] order, whatever its parameters; so tr(H) = K (1/N) sum ||xbar_i||^2.
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::random_matrix;
using D = double;
using S = backend::Serial;

TEST_CASE("A linear model's Hessian under MSE is the input second moment, per output", "[measures][closed_form]") {
  const Index in = 4, k = 3, n = 7;
  nn::Sequential<D, S> m(nn::Shape{in, 1, 1});
  m.add(nn::Linear<D, S>(k));
  m.init(3);
  Rng rng(4);
  const Matrix<D> x = random_matrix(in, n, rng);
  const Matrix<D> y = random_matrix(k, n, rng);
  loss::MeanSquaredError<D> mse;
  // Closed form in the library's layout: W [k, in] row-major (index o*in + j), then b (k*in + o).
  Matrix<D> xbar(in + 1, n);
  xbar << x, Matrix<D>::Ones(1, n);
  const Matrix<D> second = xbar * xbar.transpose() / static_cast<D>(n);
  const Index d = k * in + k;
  Matrix<D> expected = Matrix<D>::Zero(d, d);
  auto idx = [&](Index o, Index j) { return j < in ? o * in + j : k * in + o; };
  for (Index o = 0; o < k; ++o)
    for (Index j = 0; j <= in; ++j)
      for (Index j2 = 0; j2 <= in; ++j2) expected(idx(o, j), idx(o, j2)) = second(j, j2);

  HessianOperator h(m, mse, x, y);
  FisherOperator f(m, mse, x, y);
  CHECK(curvature::testing::rel_err(materialize(h), expected) < 1e-13);
  CHECK(curvature::testing::rel_err(materialize(f), expected) < 1e-13);
  HutchinsonOptions o;
  o.max_probes = 64;
  const Estimate<D> tr = hutchinson_trace(h, o);
  const D closed = static_cast<D>(k) * xbar.colwise().squaredNorm().mean();
  CHECK(std::abs(tr.value - closed) < 4 * tr.std_error + 1e-12);
  CHECK(expected.trace() == Approx(closed).epsilon(1e-14));
  // The K-FAC factorisation is exact here: G = I_K (MSE), A = the input second moment.
  KfacOperator kfac(m, mse, x, y);
  CHECK(curvature::testing::rel_err(materialize(kfac), expected) < 1e-13);
}
