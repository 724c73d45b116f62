#pragma once
// Fully connected layer y = W x + b; W [out, in] row-major then b [out] in theta (PyTorch layout).
#include <cmath>

#include "curvature/nn/detail/dense_grad.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::nn {

template <Scalar T, class B = DefaultBackend>
class Linear final : public Layer<T, B> {
 public:
  explicit Linear(Index out_features) : kout_(out_features) {
    CURVATURE_CHECK_VALUE(out_features > 0, "Linear: out_features must be positive, got ", out_features);
  }

  std::string name() const override { return curvature::detail::cat("linear(", kout_, ")"); }
  std::optional<Layout> required_layout() const override { return Layout::Features; }

  TensorSpec bind(const TensorSpec& in) override {
    CURVATURE_CHECK_SHAPE(in.shape.h == 1 && in.shape.w == 1, "Linear: input of shape ", in.shape.str(),
                          " is an image; add flatten before linear(", kout_, ")");
    this->in_ = in;
    kin_ = in.shape.c;
    this->out_ = TensorSpec{Shape{kout_, 1, 1}, Layout::Features};
    return this->out_;
  }

  Index num_params() const override { return kout_ * kin_ + kout_; }
  bool piecewise_linear(bool) const override { return true; }
  bool assigns_sink(Reduction mode) const override { return mode != Reduction::PerSampleSquares; }
  std::unique_ptr<Layer<T, B>> clone() const override { return std::make_unique<Linear>(kout_); }

  /// PyTorch's default: kaiming_uniform(a = sqrt 5) for W and U(-1/sqrt(in), 1/sqrt(in)) for b,
  /// i.e. both uniform in +-1/sqrt(in).
  void init(T* p, Rng& rng) const override {
    const T bound = T(1) / std::sqrt(static_cast<T>(kin_));
    for (Index j = 0; j < num_params(); ++j) p[j] = rng.uniform<T>(-bound, bound);
  }

  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override {
    y.resize(kout_, x.cols());
    this->bk_.gemm(y, weight(a.p), x, T(1), false);
    y.colwise() += bias(a.p);
  }

  void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& /*y*/, const Matrix<T>* rx,
           Matrix<T>& ry) override {
    const Index n = x.cols();
    ry.resize(kout_, a.reps * n);
    if (rx) this->bk_.gemm(ry, weight(a.p), *rx, T(1), false);
    else ry.setZero();
    if (!a.v) return;
    for (Index r = 0; r < a.reps; ++r) {
      auto blk = ry.middleCols(r * n, n);
      this->bk_.gemm(blk, weight(a.vr(r)), x, T(1), true);
      blk.colwise() += bias(a.vr(r));
    }
  }

  void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& /*y*/, const Matrix<T>& dy,
                Matrix<T>* dx, const Sink<T>* sink) override {
    if (dx) {
      dx->resize(kin_, dy.cols());
      this->bk_.gemm(*dx, weight(a.p).transpose(), dy, T(1), false);
    }
    if (sink) detail::dense_param_grad<T>(this->bk_, *sink, a.n, a.reps, {{&dy, &x}});
  }

  void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& /*y*/, const Matrix<T>* rx,
                  const Matrix<T>* /*ry*/, const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx,
                  const Sink<T>* sink) override {
    const Index n = x.cols();
    if (rdx) {  // R(dx) = W^T R(dy) + V^T dy
      rdx->resize(kin_, rdy.cols());
      this->bk_.gemm(*rdx, weight(a.p).transpose(), rdy, T(1), false);
      if (a.v)
        for (Index r = 0; r < a.reps; ++r) {
          auto blk = rdx->middleCols(r * n, n);
          this->bk_.gemm(blk, weight(a.vr(r)).transpose(), dy, T(1), true);
        }
    }
    if (!sink) return;  // R(dW) = R(dy) x^T + dy R(x)^T
    if (rx) detail::dense_param_grad<T>(this->bk_, *sink, n, a.reps, {{&rdy, &x}, {&dy, rx, false}});
    else detail::dense_param_grad<T>(this->bk_, *sink, n, a.reps, {{&rdy, &x}});
  }

  bool has_jvp2() const override { return true; }
  /// rry_r = W rrx_r + 2 V_r rx_r (y is bilinear in (W, x); the bias enters linearly).
  bool jvp2(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& /*y*/, const Matrix<T>* rx, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    const Index n = x.cols();
    const bool cross = rx && a.v;
    if (!rrx && !cross) return false;
    rry.resize(kout_, a.reps * n);
    if (rrx) this->bk_.gemm(rry, weight(a.p), *rrx, T(1), false);
    if (cross)
      for (Index r = 0; r < a.reps; ++r) {
        auto blk = rry.middleCols(r * n, n);
        this->bk_.gemm(blk, weight(a.vr(r)), replica(*rx, r, n), T(2), rrx != nullptr);
      }
    return true;
  }

  Index in_features() const { return kin_; }
  Index out_features() const { return kout_; }

 private:
  ConstRowMatrixMap<T> weight(const T* p) const { return ConstRowMatrixMap<T>(p, kout_, kin_); }
  ConstVectorMap<T> bias(const T* p) const { return ConstVectorMap<T>(p + kout_ * kin_, kout_); }

  Index kout_, kin_ = 0;
};

}  // namespace curvature::nn
