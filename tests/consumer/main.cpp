// Builds against the installed curvature and computes one exact HVP.
#include <cstdio>
#include <curvature/curvature.hpp>

int main() {
  using namespace curvature;
  nn::Sequential<double> m(nn::Shape{3, 1, 1});
  m.add(nn::Linear<double>(4)).add(nn::Tanh<double>()).add(nn::Linear<double>(2));
  m.init(0);
  Matrix<double> x = Matrix<double>::Ones(3, 2), v = Matrix<double>::Ones(m.num_params(), 1);
  const std::vector<std::int64_t> y{0, 1};
  const Matrix<double> hv = hvp(m, loss::CrossEntropy<double>{}, x, y, v);
  std::printf("consumer: d = %ld, v'Hv = %.6f\n", static_cast<long>(m.num_params()), v.col(0).dot(hv.col(0)));
  return hv.allFinite() ? 0 : 1;
}
