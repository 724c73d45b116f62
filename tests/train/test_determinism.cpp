// The same seed gives bit-identical trained parameters with backend::Serial and backend::OpenMP at
// 1 and 2 threads. The models are large enough that OpenMP splits their products across threads
// (m n k >= 2^20, see backend/openmp.hpp), so the comparison exercises the parallel paths.
#include <catch2/catch.hpp>

#include "curvature/loss/cross_entropy.hpp"
#include "curvature/nn/builders.hpp"
#include "curvature/optim/optim.hpp"
#include "curvature/train/train.hpp"
#include "train/fixtures.hpp"

using namespace curvature;
using D = double;

namespace {

template <class B>
Vector<D> train_mlp(B backend) {
  auto model = nn::mlp<D, B>(64, {256, 256}, 4, "relu", 7, backend);
  const auto d = testing::blobs<D>(512, 64, 4, 11);
  optim::SGD<D> opt({.momentum = 0.9, .weight_decay = 1e-4});
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 128;
  o.seed = 5;
  train::train(model, loss::CrossEntropy<D>(), opt, optim::Constant(0.05), d, o);
  return model.params();
}

template <class B>
Vector<float> train_cnn(B backend) {
  auto model = nn::tiny_cnn<float, B>(nn::Shape{1, 28, 28}, 3, backend);
  auto d = testing::blobs<float>(128, 784, 10, 13, 1.0, 1.0);
  d.shape = nn::Shape{1, 28, 28};
  optim::Adam<float> opt;
  train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 32;
  train::train(model, loss::CrossEntropy<float>(), opt, optim::Constant(1e-3), d, o);
  return model.params();
}

}  // namespace

// Why this holds: backend::OpenMP splits a product only at multiples of Eigen's register block
// (gebp_traits mr rows / nr columns, swapped for a row-major destination such as a Linear weight
// gradient). Before it did, a boundary inside a block handed some rows to another micro-kernel that
// adds the k terms in another order: the MLP then differed by 2e-17 relative after 8 SGD steps and
// TinyCNN by 7e-7 (3e-4 in the worst entry) after 4 Adam steps at 2 threads.
template <class T>
double rel_diff(const Vector<T>& a, const Vector<T>& b) {
  return double((a - b).norm() / b.norm());
}

TEST_CASE("Training is reproducible across backends and thread counts", "[train][determinism]") {
  SECTION("MLP 64-256-256-4, float64, SGD with momentum: Serial == OpenMP(1), OpenMP(2), bit for bit") {
    const Vector<D> serial = train_mlp(backend::Serial{});
    CHECK(train_mlp(backend::OpenMP{1}) == serial);
    const Vector<D> omp2 = train_mlp(backend::OpenMP{2});
    INFO("relative difference at 2 threads " << rel_diff(omp2, serial));
    CHECK(omp2 == serial);
  }
  SECTION("TinyCNN 1x28x28, float32, Adam: Serial == OpenMP(1), OpenMP(2), bit for bit") {
    const Vector<float> serial = train_cnn(backend::Serial{});
    CHECK(train_cnn(backend::OpenMP{1}) == serial);
    const Vector<float> omp2 = train_cnn(backend::OpenMP{2});
    INFO("relative difference at 2 threads " << rel_diff(omp2, serial));
    CHECK(omp2 == serial);
  }
}
