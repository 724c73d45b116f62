#pragma once
// Softmax cross-entropy ell = -log softmax(f)_y (SPEC section 0), computed with log-sum-exp.
// Output Hessian Lambda = diag(p) - p p^T; symmetric factor S = diag(sqrt p) - p sqrt(p)^T.
#include <cmath>
#include <cstdint>
#include <vector>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"

namespace curvature::loss {

template <Scalar T>
struct CrossEntropy {
  using scalar_type = T;
  using Targets = std::vector<std::int64_t>;  ///< class labels in [0, K)
  static constexpr const char* name = "ce";

  Index num_targets(const Targets& y) const { return static_cast<Index>(y.size()); }

  /// Throws when labels and outputs disagree in count or a label is outside [0, K).
  void check(const Matrix<T>& f, const Targets& y) const {
    CURVATURE_CHECK_SHAPE(static_cast<Index>(y.size()) == f.cols(), "CrossEntropy: ", y.size(),
                          " labels for ", f.cols(), " samples");
    for (std::size_t i = 0; i < y.size(); ++i)
      CURVATURE_CHECK_VALUE(y[i] >= 0 && y[i] < f.rows(), "CrossEntropy: label ", y[i], " of sample ", i,
                            " is outside [0, ", f.rows(), ")");
  }

  /// Softmax of each column, stable for large logits.
  Matrix<T> probabilities(const Matrix<T>& f) const {
    Matrix<T> p(f.rows(), f.cols());
    for (Index i = 0; i < f.cols(); ++i) {
      p.col(i) = (f.col(i).array() - f.col(i).maxCoeff()).exp().matrix();
      p.col(i) /= p.col(i).sum();
    }
    return p;
  }

  Vector<T> values(const Matrix<T>& f, const Targets& y) const {
    check(f, y);
    Vector<T> v(f.cols());
    for (Index i = 0; i < f.cols(); ++i) {
      const T mx = f.col(i).maxCoeff();
      v[i] = mx + std::log((f.col(i).array() - mx).exp().sum()) - f(y[i], i);
    }
    return v;
  }

  /// d ell / d f = p - e_y per sample.
  Matrix<T> gradient(const Matrix<T>& f, const Targets& y) const {
    check(f, y);
    Matrix<T> g = probabilities(f);
    for (Index i = 0; i < f.cols(); ++i) g(y[i], i) -= T(1);
    return g;
  }

  /// Lambda_i u = p * u - p (p . u) for every column of u (u may hold R replicas of N columns).
  Matrix<T> hessian_product(const Matrix<T>& f, const Targets&, const Matrix<T>& u) const {
    const Matrix<T> p = probabilities(f);
    const Index n = f.cols();
    Matrix<T> out(u.rows(), u.cols());
    for (Index c = 0; c < u.cols(); ++c) {
      auto pc = p.col(c % n);
      out.col(c) = pc.cwiseProduct(u.col(c)) - pc * pc.dot(u.col(c));
    }
    return out;
  }

  /// K replicas: column c*N + i is S_i e_c = sqrt(p_c) (e_c - p).
  Matrix<T> hessian_factor(const Matrix<T>& f, const Targets&) const {
    const Matrix<T> p = probabilities(f);
    const Index k = f.rows(), n = f.cols();
    Matrix<T> s(k, k * n);
    for (Index c = 0; c < k; ++c)
      for (Index i = 0; i < n; ++i) {
        auto col = s.col(c * n + i);
        col = -std::sqrt(p(c, i)) * p.col(i);
        col[c] += std::sqrt(p(c, i));
      }
    return s;
  }

  /// One label per sample drawn from softmax(f).
  Targets sample(const Matrix<T>& f, Rng& rng) const {
    const Matrix<T> p = probabilities(f);
    Targets y(f.cols());
    for (Index i = 0; i < f.cols(); ++i) {
      const T u = rng.uniform<T>();
      T acc = 0;
      Index c = 0;
      for (; c < f.rows() - 1; ++c) {
        acc += p(c, i);
        if (u < acc) break;
      }
      y[i] = c;
    }
    return y;
  }
};

static_assert(Loss<CrossEntropy<float>> && Loss<CrossEntropy<double>>);

}  // namespace curvature::loss
