// Must NOT compile: per-sample gradients of a model that has only the base Model concept.
#include <curvature/curvature.hpp>

struct GradientOnlyModel {
  using scalar_type = float;
  curvature::Vector<float> theta = curvature::Vector<float>::Zero(4);
  curvature::Index num_params() const { return theta.size(); }
  const curvature::Vector<float>& params() const { return theta; }
  curvature::Matrix<float> forward(const curvature::Matrix<float>& x) const { return x.topRows(2); }
  curvature::Vector<float> vjp(const curvature::Matrix<float>&, const curvature::Matrix<float>&) const { return theta; }
};

int main() {
  GradientOnlyModel m;
  const curvature::Matrix<float> x = curvature::Matrix<float>::Ones(2, 1);
  curvature::Matrix<float> out;
  curvature::per_sample_gradients(m, curvature::loss::CrossEntropy<float>{}, x, std::vector<std::int64_t>{0}, out);
  return 0;
}
