// Must NOT compile: a model with only the base Model concept asks for an HVP. The build of this
// file is a test that passes when the compiler prints the library's static_assert message.
#include <curvature/curvature.hpp>

struct GradientOnlyModel {
  using scalar_type = double;
  curvature::Vector<double> theta = curvature::Vector<double>::Zero(4);
  curvature::Index num_params() const { return theta.size(); }
  const curvature::Vector<double>& params() const { return theta; }
  curvature::Matrix<double> forward(const curvature::Matrix<double>& x) const { return x.topRows(2); }
  curvature::Vector<double> vjp(const curvature::Matrix<double>&, const curvature::Matrix<double>&) const {
    return theta;
  }
};

int main() {
  GradientOnlyModel m;
  const curvature::Matrix<double> x = curvature::Matrix<double>::Ones(2, 1), v = curvature::Matrix<double>::Ones(4, 1);
  const std::vector<std::int64_t> y{0};
  return static_cast<int>(curvature::hvp(m, curvature::loss::CrossEntropy<double>{}, x, y, v).size());
}
