#pragma once
// 2-D convolution with square kernel, stride, zero padding and bias (PyTorch nn.Conv2d), in the
// Channels layout [N*H*W, C]: with the im2col matrix cols [N*Ho*Wo, C*k*k] of the whole batch,
// the forward pass is one product y = cols W^T, and theta holds W [Cout, C, k, k] row-major,
// i.e. the column-major W^T [C*k*k, Cout], then b [Cout].
#include <cmath>

#include "curvature/nn/detail/conv_grad.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::nn {

template <Scalar T, class B = DefaultBackend>
class Conv2d final : public Layer<T, B> {
 public:
  Conv2d(Index out_channels, Index kernel, Index stride = 1, Index padding = 0)
      : cout_(out_channels), k_(kernel), s_(stride), pad_(padding) {
    CURVATURE_CHECK_VALUE(out_channels > 0 && kernel > 0 && stride > 0 && padding >= 0, "Conv2d: invalid ",
                          name(), " (channels, kernel and stride must be positive, padding non-negative)");
  }

  std::string name() const override {
    return curvature::detail::cat("conv(", cout_, ",k=", k_, ",s=", s_, ",p=", pad_, ")");
  }
  std::optional<Layout> required_layout() const override { return Layout::Channels; }

  TensorSpec bind(const TensorSpec& in) override {
    const Shape s = in.shape;
    ho_ = (s.h + 2 * pad_ - k_) / s_ + 1;
    wo_ = (s.w + 2 * pad_ - k_) / s_ + 1;
    CURVATURE_CHECK_SHAPE(s.h + 2 * pad_ >= k_ && s.w + 2 * pad_ >= k_, name(), ": input ", s.str(),
                          " is smaller than the kernel");
    this->in_ = in;
    ckk_ = s.c * k_ * k_;
    this->out_ = TensorSpec{Shape{cout_, ho_, wo_}, Layout::Channels};
    return this->out_;
  }

  Index num_params() const override { return ckk_ * cout_ + cout_; }

  /// PyTorch's default: weight and bias uniform in +-1/sqrt(C*k*k).
  void init(T* p, Rng& rng) const override {
    const T bound = T(1) / std::sqrt(static_cast<T>(ckk_));
    for (Index j = 0; j < num_params(); ++j) p[j] = rng.uniform<T>(-bound, bound);
  }

  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override {
    im2col(x, a.n, cols_);
    cols_of_ = x.data();
    y.resize(a.n * ho_ * wo_, cout_);
    this->bk_.gemm(y, cols_, weight_t(a.p), T(1), false);
    y.rowwise() += bias(a.p).transpose();
  }

  void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    const Index rows = a.n * ho_ * wo_;
    ry.resize(rows, a.reps * cout_);
    if (rx) {
      rcols_.resize(rows, a.reps * ckk_);
      for (Index r = 0; r < a.reps; ++r) im2col_block(*rx, r, a.n, rcols_.data() + r * rows * ckk_);
    }
    const Matrix<T>& cols = cached_cols(x, a.n);
    for (Index r = 0; r < a.reps; ++r) {
      auto blk = ry.middleCols(r * cout_, cout_);
      if (rx) this->bk_.gemm(blk, rcols_.middleCols(r * ckk_, ckk_), weight_t(a.p), T(1), false);
      else blk.setZero();
      if (a.v) {
        this->bk_.gemm(blk, cols, weight_t(a.vr(r)), T(1), true);
        blk.rowwise() += bias(a.vr(r)).transpose();
      }
    }
  }

  void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>* sink) override {
    const Index reps = dy.cols() / cout_;
    if (dx) {
      dx->resize(x.rows(), reps * this->in_.shape.c);
      for (Index r = 0; r < reps; ++r) input_grad(a.p, dy.middleCols(r * cout_, cout_), *dx, r, a.n, false);
    }
    if (sink) detail::conv_param_grad<T>(this->bk_, *sink, dims(a.n, reps), {{&dy, &cached_cols(x, a.n)}});
  }

  void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>*,
                  const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>* sink) override {
    if (rdx) {  // R(dx) = convT(R dy; W) + convT(dy; V)
      rdx->resize(x.rows(), a.reps * this->in_.shape.c);
      for (Index r = 0; r < a.reps; ++r) {
        input_grad(a.p, rdy.middleCols(r * cout_, cout_), *rdx, r, a.n, false);
        if (a.v) input_grad(a.vr(r), dy, *rdx, r, a.n, true);
      }
    }
    if (!sink) return;  // R(dW) terms: (R dy, cols x) and (dy, cols R x)
    const Matrix<T>& cols = cached_cols(x, a.n);
    if (rx) detail::conv_param_grad<T>(this->bk_, *sink, dims(a.n, a.reps), {{&rdy, &cols}, {&dy, &rcols_, false}});
    else detail::conv_param_grad<T>(this->bk_, *sink, dims(a.n, a.reps), {{&rdy, &cols}});
  }

 private:
  ConstMatrixMap<T> weight_t(const T* p) const { return ConstMatrixMap<T>(p, ckk_, cout_); }
  ConstVectorMap<T> bias(const T* p) const { return ConstVectorMap<T>(p + ckk_ * cout_, cout_); }
  detail::ConvDims dims(Index n, Index reps) const { return {n, ho_ * wo_, ckk_, cout_, reps}; }

  const Matrix<T>& cached_cols(const Matrix<T>& x, Index n) {
    if (cols_of_ != x.data() || cols_.rows() != n * ho_ * wo_) {
      im2col(x, n, cols_);
      cols_of_ = x.data();
    }
    return cols_;
  }

  void im2col(const Matrix<T>& x, Index n, Matrix<T>& cols) const {
    cols.resize(n * ho_ * wo_, ckk_);
    im2col_block(x, 0, n, cols.data());
  }

  /// cols(i*P + o, (c*k + ki)*k + kj) = x_r(i*H*W + (ho*s - pad + ki)*W + wo*s - pad + kj, c), 0 outside.
  void im2col_block(const Matrix<T>& x, Index r, Index n, T* cols) const {
    const Shape s = this->in_.shape;
    const Index p = ho_ * wo_, c_in = s.c;
    const T* src = x.data() + r * x.rows() * c_in;
    this->bk_.parallel_for(ckk_, [&](Index q0, Index q1) {
      for (Index q = q0; q < q1; ++q) {
        const Index c = q / (k_ * k_), ki = (q / k_) % k_, kj = q % k_;
        T* dst = cols + q * n * p;
        for (Index i = 0; i < n; ++i) {
          const T* plane = src + c * x.rows() + i * s.h * s.w;
          for (Index oh = 0; oh < ho_; ++oh) {
            const Index ih = oh * s_ - pad_ + ki;
            T* out = dst + i * p + oh * wo_;
            if (ih < 0 || ih >= s.h) {
              std::fill(out, out + wo_, T(0));
              continue;
            }
            for (Index ow = 0; ow < wo_; ++ow) {
              const Index iw = ow * s_ - pad_ + kj;
              out[ow] = (iw >= 0 && iw < s.w) ? plane[ih * s.w + iw] : T(0);
            }
          }
        }
      }
    });
  }

  /// Replica r of dx (+)= col2im(dy W): the input cotangent of the convolution with weights p.
  template <class Dy>
  void input_grad(const T* p, const Dy& dy, Matrix<T>& dx, Index r, Index n, bool accumulate) const {
    const Shape s = this->in_.shape;
    const Index pp = ho_ * wo_;
    Matrix<T> dcols(n * pp, ckk_);
    this->bk_.gemm(dcols, dy, weight_t(p).transpose(), T(1), false);
    auto out = dx.middleCols(r * s.c, s.c);
    this->bk_.parallel_for(s.c, [&](Index c0, Index c1) {
      for (Index c = c0; c < c1; ++c) {
        T* plane0 = out.col(c).data();
        if (!accumulate) std::fill(plane0, plane0 + out.rows(), T(0));
        for (Index q = c * k_ * k_; q < (c + 1) * k_ * k_; ++q) {
          const Index ki = (q / k_) % k_, kj = q % k_;
          const T* src = dcols.data() + q * n * pp;
          for (Index i = 0; i < n; ++i)
            for (Index oh = 0; oh < ho_; ++oh) {
              const Index ih = oh * s_ - pad_ + ki;
              if (ih < 0 || ih >= s.h) continue;
              T* row = plane0 + i * s.h * s.w + ih * s.w;
              const T* in = src + i * pp + oh * wo_;
              for (Index ow = 0; ow < wo_; ++ow) {
                const Index iw = ow * s_ - pad_ + kj;
                if (iw >= 0 && iw < s.w) row[iw] += in[ow];
              }
            }
        }
      }
    });
  }

  Index cout_, k_, s_, pad_;
  Index ho_ = 0, wo_ = 0, ckk_ = 0;
  Matrix<T> cols_, rcols_;       // im2col of the last input and of its tangents
  const T* cols_of_ = nullptr;   // which input cols_ belongs to
};

}  // namespace curvature::nn
