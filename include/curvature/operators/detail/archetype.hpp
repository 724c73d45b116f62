#pragma once
// A model archetype: declares exactly what the model concepts ask for, defines nothing. The
// operator headers instantiate their class templates with it to static_assert that each shipped
// operator models LinearOperator for every model that models the concepts, without depending on nn/.
#include "curvature/core/concepts.hpp"

namespace curvature::detail {

template <Scalar T>
struct ModelArchetype {
  using scalar_type = T;
  Index num_params() const;
  const Vector<T>& params() const;
  Matrix<T> forward(const Matrix<T>& x);
  Vector<T> vjp(const Matrix<T>& x, const Matrix<T>& df);
  template <class F, class Out>
  void backward(const Matrix<T>& x, F&& out_fn, Reduction mode, Out& out, T scale);
  Matrix<T> jvp(const Matrix<T>& x, const Matrix<T>& v);
  template <class Rop>
  void hvp(const Matrix<T>& x, const Matrix<T>& v, Rop&& rop, Reduction mode, Matrix<T>& out, T scale);
};

static_assert(HvpModel<ModelArchetype<double>> && PerSampleModel<ModelArchetype<double>>);

}  // namespace curvature::detail
