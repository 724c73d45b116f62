// The OpenMP and serial backends compute the same bits on the same inputs: every derivative and
// curvature diagonal of an MLP and of a small conv net, at 1 and 2 threads. (Sums whose chunking
// followed the thread count, as the conv layers' squared-gradient sums once did, differ here in
// the last bits; training through split products is covered by tests/train/test_determinism.cpp.)
#include <catch2/catch.hpp>

#include "curvature/curvature.hpp"
#include "support/layer_check.hpp"

using namespace curvature;
using curvature::testing::random_matrix;
using D = double;

namespace {

template <class B>
nn::Sequential<D, B> backend_mlp(B b) {
  nn::Sequential<D, B> m(nn::Shape{20, 1, 1}, b);
  m.add(nn::Linear<D, B>(64)).add(nn::Tanh<D, B>()).add(nn::Linear<D, B>(48)).add(nn::ReLU<D, B>());
  m.add(nn::Linear<D, B>(5));
  m.init(3);
  return m;
}

template <class B>
nn::Sequential<D, B> backend_cnn(B b) {
  auto m = nn::parse_arch<D, B>(nn::Shape{2, 10, 10},
                                "conv(4,k=3,p=1),relu,maxpool(2),conv(6,k=3),tanh,flatten,linear(5)", b);
  m.init(4);
  return m;
}

/// Every derivative of `a` and `b` (the same network on two backends), compared bit for bit.
template <class MA, class MB>
void check_same_bits(MA& a, MB& b) {
  Rng rng(1);
  const Index n = 33, din = a.input_shape().size();
  const Matrix<D> x = random_matrix(din, n, rng);
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(5));
  loss::CrossEntropy<D> ce;
  CHECK(loss_and_gradient(a, ce, x, y).gradient == loss_and_gradient(b, ce, x, y).gradient);
  const Matrix<D> v = random_matrix(a.num_params(), 3, rng);
  CHECK(hvp(a, ce, x, y, v) == hvp(b, ce, x, y, v));
  CHECK(hessian_quadratic_forms(a, ce, x, y, v) == hessian_quadratic_forms(b, ce, x, y, v));
  Matrix<D> pa, pb;
  per_sample_gradients(a, ce, x, y, pa);
  per_sample_gradients(b, ce, x, y, pb);
  CHECK(pa == pb);
  CHECK(ggn_diagonal(a, ce, x, y) == ggn_diagonal(b, ce, x, y));
  CHECK(empirical_fisher_diagonal(a, ce, x, y) == empirical_fisher_diagonal(b, ce, x, y));
  per_sample_ggn_diagonal(a, ce, x, y, pa);
  per_sample_ggn_diagonal(b, ce, x, y, pb);
  CHECK(pa == pb);
}

}  // namespace

TEST_CASE("OpenMP and serial backends give the same bits for every derivative", "[backend]") {
  SECTION("MLP 20-64-48-5") {
    auto serial = backend_mlp(backend::Serial{});
    auto omp1 = backend_mlp(backend::OpenMP{1});
    auto omp2 = backend_mlp(backend::OpenMP{2});
    REQUIRE(omp2.backend().threads() == 2);
    check_same_bits(serial, omp1);
    check_same_bits(serial, omp2);
  }
  SECTION("conv net 2x10x10 with pooling") {
    auto serial = backend_cnn(backend::Serial{});
    auto omp1 = backend_cnn(backend::OpenMP{1});
    auto omp2 = backend_cnn(backend::OpenMP{2});
    check_same_bits(serial, omp1);
    check_same_bits(serial, omp2);
  }
}
