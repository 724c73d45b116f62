#pragma once
// Elementwise activations y = s(x). Backward: dx = dy * s'(x); R-op of backward:
// R(dx) = R(dy) * s'(x) + dy * s''(x) * R(x).
#include <cmath>
#include <numbers>

#include "curvature/nn/layer.hpp"

namespace curvature::nn {

namespace act {
/// Each activation gives s(x), s'(x) and s''(x); y = s(x) is passed too where it is cheaper.
struct Relu {
  static constexpr bool piecewise_linear = true;
  /// max(x, 0) commutes with a window maximum exactly; ties it creates (all x <= 0) have s' = 0.
  static constexpr bool commutes_with_max = true;
  template <class T> static T f(T x) { return x > T(0) ? x : T(0); }
  template <class T> static T d1(T x, T) { return x > T(0) ? T(1) : T(0); }
  template <class T> static T d2(T, T) { return T(0); }
};
struct Tanh {
  static constexpr bool piecewise_linear = false;
  template <class T> static T f(T x) { return std::tanh(x); }
  template <class T> static T d1(T, T y) { return T(1) - y * y; }
  template <class T> static T d2(T, T y) { return T(-2) * y * (T(1) - y * y); }
};
struct Sigmoid {
  static constexpr bool piecewise_linear = false;
  template <class T> static T f(T x) { return T(1) / (T(1) + std::exp(-x)); }
  template <class T> static T d1(T, T y) { return y * (T(1) - y); }
  template <class T> static T d2(T, T y) { return y * (T(1) - y) * (T(1) - T(2) * y); }
};
/// Exact GELU x Phi(x) (PyTorch's default, approximate='none').
struct Gelu {
  static constexpr bool piecewise_linear = false;
  template <class T> static T pdf(T x) { return std::exp(T(-0.5) * x * x) / std::sqrt(T(2) * std::numbers::pi_v<T>); }
  template <class T> static T cdf(T x) { return T(0.5) * std::erfc(-x / std::numbers::sqrt2_v<T>); }
  template <class T> static T f(T x) { return x * cdf(x); }
  template <class T> static T d1(T x, T) { return cdf(x) + x * pdf(x); }
  template <class T> static T d2(T x, T) { return pdf(x) * (T(2) - x * x); }
};
}  // namespace act

/// An elementwise activation layer; `F` supplies f, d1, d2 and, for LeakyReLU, a slope.
template <Scalar T, class F, class B = DefaultBackend>
class Elementwise : public Layer<T, B> {
 public:
  explicit Elementwise(std::string name, F f = {}) : name_(std::move(name)), f_(f) {}
  std::string name() const override { return name_; }
  TensorSpec bind(const TensorSpec& in) override { return this->out_ = this->in_ = in; }
  std::unique_ptr<Layer<T, B>> clone() const override { return std::make_unique<Elementwise>(name_, f_); }
  bool piecewise_linear(bool) const override { return F::piecewise_linear; }
  bool commutes_with_max() const override {
    if constexpr (requires { F::commutes_with_max; }) return F::commutes_with_max;
    else return false;
  }

  void forward(const Pass<T>&, const Matrix<T>& x, Matrix<T>& y) override {
    y.resize(x.rows(), x.cols());
    each(x.size(), [&](Index k) { y.data()[k] = f_.f(x.data()[k]); });
  }

  void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>* rx,
           Matrix<T>& ry) override {
    ry.resize(rx->rows(), rx->cols());
    for (Index r = 0; r < a.reps; ++r) scale_by_d1(x, y, *rx, ry, r);
  }

  void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>& dy,
                Matrix<T>* dx, const Sink<T>*) override {
    if (!dx) return;
    dx->resize(dy.rows(), dy.cols());
    for (Index r = 0; r < a.reps; ++r) scale_by_d1(x, y, dy, *dx, r);
  }

  void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>* rx,
                  const Matrix<T>*, const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx,
                  const Sink<T>*) override {
    if (!rdx) return;
    rdx->resize(rdy.rows(), rdy.cols());
    const Index m = x.size();
    for (Index r = 0; r < a.reps; ++r) {
      const T* xs = x.data(); const T* ys = y.data(); const T* g = dy.data();
      const T* rg = rdy.data() + r * m; T* o = rdx->data() + r * m;
      const T* rxs = rx ? rx->data() + r * m : nullptr;
      if (F::piecewise_linear || !rxs) {
        each(m, [&](Index k) { o[k] = rg[k] * f_.d1(xs[k], ys[k]); });
      } else {
        each(m, [&](Index k) { o[k] = rg[k] * f_.d1(xs[k], ys[k]) + g[k] * f_.d2(xs[k], ys[k]) * rxs[k]; });
      }
    }
  }

  bool has_jvp2() const override { return true; }
  /// rry = s'(x) rrx + s''(x) rx^2 (the second term vanishes for piecewise-linear s).
  bool jvp2(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>* rx, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    const bool curved = !F::piecewise_linear && rx;
    if (!rrx && !curved) return false;
    const Index m = x.size();
    rry.resize(x.rows(), a.reps * x.cols());
    for (Index r = 0; r < a.reps; ++r) {
      const T* xs = x.data(); const T* ys = y.data(); T* o = rry.data() + r * m;
      const T* rr = rrx ? rrx->data() + r * m : nullptr;
      const T* t = curved ? rx->data() + r * m : nullptr;
      if (rr && t) each(m, [&](Index k) { o[k] = f_.d1(xs[k], ys[k]) * rr[k] + f_.d2(xs[k], ys[k]) * t[k] * t[k]; });
      else if (rr) each(m, [&](Index k) { o[k] = f_.d1(xs[k], ys[k]) * rr[k]; });
      else each(m, [&](Index k) { o[k] = f_.d2(xs[k], ys[k]) * t[k] * t[k]; });
    }
    return true;
  }

 private:
  template <class Fn>
  void each(Index m, Fn&& fn) const {
    this->bk_.parallel_for(m, [&](Index k0, Index k1) {
      for (Index k = k0; k < k1; ++k) fn(k);
    });
  }
  /// out replica r = in replica r * s'(x).
  void scale_by_d1(const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>& in, Matrix<T>& out, Index r) const {
    const Index m = x.size();
    const T* xs = x.data(); const T* ys = y.data();
    const T* i = in.data() + r * m; T* o = out.data() + r * m;
    each(m, [&](Index k) { o[k] = i[k] * f_.d1(xs[k], ys[k]); });
  }

  std::string name_;
  F f_;
};

namespace act {
/// LeakyReLU with negative slope `slope` (PyTorch default 0.01). Not commutes_with_max: slope * x
/// can round two distinct negative inputs to one value, and the window maximum would then move.
struct LeakyRelu {
  static constexpr bool piecewise_linear = true;
  double slope = 0.01;
  template <class T> T f(T x) const { return x > T(0) ? x : static_cast<T>(slope) * x; }
  template <class T> T d1(T x, T) const { return x > T(0) ? T(1) : static_cast<T>(slope); }
  template <class T> T d2(T, T) const { return T(0); }
};
}  // namespace act

template <Scalar T, class B = DefaultBackend>
struct ReLU : Elementwise<T, act::Relu, B> {
  ReLU() : Elementwise<T, act::Relu, B>("relu") {}
};
template <Scalar T, class B = DefaultBackend>
struct Tanh : Elementwise<T, act::Tanh, B> {
  Tanh() : Elementwise<T, act::Tanh, B>("tanh") {}
};
template <Scalar T, class B = DefaultBackend>
struct Sigmoid : Elementwise<T, act::Sigmoid, B> {
  Sigmoid() : Elementwise<T, act::Sigmoid, B>("sigmoid") {}
};
template <Scalar T, class B = DefaultBackend>
struct GELU : Elementwise<T, act::Gelu, B> {
  GELU() : Elementwise<T, act::Gelu, B>("gelu") {}
};
template <Scalar T, class B = DefaultBackend>
struct LeakyReLU : Elementwise<T, act::LeakyRelu, B> {
  explicit LeakyReLU(double slope = 0.01)
      : Elementwise<T, act::LeakyRelu, B>(curvature::detail::cat("leakyrelu(", slope, ")"), act::LeakyRelu{slope}) {}
};

}  // namespace curvature::nn
