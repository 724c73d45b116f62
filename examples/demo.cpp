// The quick-start demo: the exact derivatives of the MNIST MLP (784-256-256-10, ReLU) on one
// batch of 128 inputs, with their cost, and a check of the exact HVP against finite differences.
// Data: a fixed random batch (the training demo with real Fashion-MNIST data comes with the
// training examples).
#include <chrono>
#include <cstdio>
#include <curvature/curvature.hpp>

using namespace curvature;

template <class F>
double median_ms(F&& f, int reps = 21) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main() {
  using T = float;
  auto model = nn::mnist_mlp<T>(0);
  const Index n = 128;
  Rng rng(10);
  Matrix<T> x(784, n);
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = rng.normal<T>();
  std::vector<std::int64_t> y(n);
  for (auto& v : y) v = static_cast<std::int64_t>(rng.below(10));
  loss::CrossEntropy<T> ce;
  std::printf("MNIST MLP 784-256-256-10 (ReLU), d = %ld parameters, batch %ld, float32, %d thread(s) (%s backend)\n",
              static_cast<long>(model.num_params()), static_cast<long>(n), model.backend().threads(),
              model.backend().name);

  LossGradient<T> lg{};
  const double t_grad = median_ms([&] { lg = loss_and_gradient(model, ce, x, y); });
  std::printf("  loss %.5f, |g| = %.5f                 gradient:               %7.2f ms\n", lg.loss,
              lg.gradient.norm(), t_grad);

  Matrix<T> v(model.num_params(), 1);
  for (Index k = 0; k < v.size(); ++k) v.data()[k] = rng.rademacher<T>();
  Matrix<T> hv;
  const double t_hvp = median_ms([&] { hv = hvp(model, ce, x, y, v); });
  std::printf("  v'Hv = %.5f (Rademacher v)           exact HVP (R-op):       %7.2f ms\n", v.col(0).dot(hv.col(0)),
              t_hvp);

  Matrix<T> g;
  const double t_psg = median_ms([&] { per_sample_gradients(model, ce, x, y, g); });
  std::printf("  %ld x %ld per-sample gradients (%.0f MB)  into a reused buffer:  %7.2f ms\n",
              static_cast<long>(g.rows()), static_cast<long>(g.cols()), g.size() * 4.0 / 1e6, t_psg);

  Vector<T> fd, efd;
  const double t_f = median_ms([&] { fd = fisher_diagonal(model, ce, x, y); });
  const double t_ef = median_ms([&] { efd = empirical_fisher_diagonal(model, ce, x, y); });
  std::printf("  tr F = %.5f                          exact Fisher diagonal:  %7.2f ms\n", fd.sum(), t_f);
  std::printf("  tr EF = %.5f (true labels)          empirical Fisher diag.: %7.2f ms\n", efd.sum(), t_ef);

  // Trust: the exact HVP against central differences of gradients, in double precision.
  auto m64 = nn::mnist_mlp<double>(0);
  const Matrix<double> x64 = x.cast<double>(), v64 = v.cast<double>();
  const Vector<double> p0 = m64.params();
  const double h = 1e-7;  // small enough that no ReLU changes state between theta +- h v
  m64.set_params(p0 + h * v64.col(0));
  const Vector<double> gp = loss_and_gradient(m64, loss::CrossEntropy<double>{}, x64, y).gradient;
  m64.set_params(p0 - h * v64.col(0));
  const Vector<double> gm = loss_and_gradient(m64, loss::CrossEntropy<double>{}, x64, y).gradient;
  m64.set_params(p0);
  const Matrix<double> hv64 = hvp(m64, loss::CrossEntropy<double>{}, x64, y, v64);
  const double err = (hv64.col(0) - (gp - gm) / (2 * h)).norm() / hv64.norm();
  std::printf("  exact HVP vs central differences (float64): relative error %.1e\n", err);
  return err < 1e-5 ? 0 : 1;
}
