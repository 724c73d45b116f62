#pragma once
// Max and average pooling (PyTorch MaxPool2d / AvgPool2d, no padding, floor mode) in the Channels
// layout. Both are piecewise linear: the JVP and the backward R-op reuse the first-order rules.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "curvature/nn/layer.hpp"

namespace curvature::nn {

namespace detail {
/// Shared geometry and replica handling of the pooling layers.
template <Scalar T, class B>
class PoolBase : public Layer<T, B> {
 public:
  PoolBase(const char* kind, Index kernel, Index stride) : kind_(kind), k_(kernel), s_(stride > 0 ? stride : kernel) {
    CURVATURE_CHECK_VALUE(kernel > 0 && stride >= 0, kind, ": kernel must be positive and stride non-negative");
  }
  std::string name() const override { return curvature::detail::cat(kind_, "(", k_, ",s=", s_, ")"); }
  std::optional<Layout> required_layout() const override { return Layout::Channels; }
  bool piecewise_linear(bool) const override { return true; }
  TensorSpec bind(const TensorSpec& in) override {
    const Shape s = in.shape;
    CURVATURE_CHECK_SHAPE(s.c >= 1 && s.h >= 1 && s.w >= 1, name(), ": input ", s.str(), " is not an image");
    CURVATURE_CHECK_SHAPE(s.h >= k_ && s.w >= k_, name(), ": input ", s.str(), " is smaller than the window ", k_,
                          "x", k_);
    this->in_ = in;
    ho_ = (s.h - k_) / s_ + 1;
    wo_ = (s.w - k_) / s_ + 1;
    this->out_ = TensorSpec{Shape{s.c, ho_, wo_}, Layout::Channels};
    return this->out_;
  }
  void jvp(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    apply(a.n, *rx, ry);
  }
  void backward(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>*) override {
    if (dx) apply_transpose(a.n, dy, *dx);
  }
  void backward_r(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>*, const Matrix<T>*,
                  const Matrix<T>&, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>*) override {
    if (rdx) apply_transpose(a.n, rdy, *rdx);
  }
  bool has_jvp2() const override { return true; }
  /// Piecewise linear: rry = the pooling map (window choices of the forward pass) of rrx.
  bool jvp2(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>*, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    if (!rrx) return false;
    apply(a.n, *rrx, rry);
    return true;
  }

 protected:
  /// The pooling as a linear map of its input given the window choices of the last forward pass:
  /// out(plane, o) = sum_j w(o, j) in(plane, j) over the window of o.
  virtual void apply_plane(Index c, const T* in, T* out) const = 0;
  virtual void apply_plane_transpose(Index c, const T* in, T* out) const = 0;

  /// y = pool(x) for every replica; one (replica, channel) column per task.
  void apply(Index n, const Matrix<T>& x, Matrix<T>& y) const {
    const Index c = this->in_.shape.c, hw = this->in_.shape.h * this->in_.shape.w, p = ho_ * wo_;
    y.resize(n * p, x.cols());
    this->bk_.parallel_for(x.cols(), [&](Index j0, Index j1) {
      for (Index j = j0; j < j1; ++j)
        for (Index i = 0; i < n; ++i) apply_plane(i * c + j % c, x.col(j).data() + i * hw, y.col(j).data() + i * p);
    });
  }
  /// dx = pool^T(dy); each plane is zeroed just before its scatter, while it is in cache.
  void apply_transpose(Index n, const Matrix<T>& dy, Matrix<T>& dx) const {
    const Index c = this->in_.shape.c, hw = this->in_.shape.h * this->in_.shape.w, p = ho_ * wo_;
    dx.resize(n * hw, dy.cols());
    this->bk_.parallel_for(dy.cols(), [&](Index j0, Index j1) {
      for (Index j = j0; j < j1; ++j)
        for (Index i = 0; i < n; ++i) {
          T* plane = dx.col(j).data() + i * hw;
          std::fill(plane, plane + hw, T(0));
          apply_plane_transpose(i * c + j % c, dy.col(j).data() + i * p, plane);
        }
    });
  }

  const char* kind_;
  Index k_, s_, ho_ = 0, wo_ = 0;
};
}  // namespace detail

/// Max pooling; the forward pass records the first maximum of each window (PyTorch's choice).
template <Scalar T, class B = DefaultBackend>
class MaxPool2d final : public detail::PoolBase<T, B> {
 public:
  explicit MaxPool2d(Index kernel, Index stride = 0) : detail::PoolBase<T, B>("maxpool", kernel, stride) {}
  std::unique_ptr<Layer<T, B>> clone() const override { return std::make_unique<MaxPool2d>(this->k_, this->s_); }
  bool is_max_pool() const override { return true; }
  std::span<const std::int32_t> max_pool_choices() const override { return arg_; }

  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override {
    const Shape s = this->in_.shape;
    const Index p = this->ho_ * this->wo_, hw = s.h * s.w;
    CURVATURE_CHECK_SHAPE(hw <= std::numeric_limits<std::int32_t>::max(), this->name(), ": plane too large");
    arg_.resize(static_cast<std::size_t>(a.n * s.c * p));
    y.resize(a.n * p, s.c);
    this->bk_.parallel_for(s.c, [&](Index c0, Index c1) {
      for (Index c = c0; c < c1; ++c)
        for (Index i = 0; i < a.n; ++i) argmax_plane(x.col(c).data() + i * hw, y.col(c).data() + i * p, &arg_[(i * s.c + c) * p]);
    });
  }

 private:
  /// Window maxima of one plane. The window offsets (ki, kj) are visited in row-major order with
  /// a strict comparison, so the first maximum wins as in PyTorch; the inner loop runs over a row
  /// of windows so that it vectorises.
  void argmax_plane(const T* in, T* out, std::int32_t* arg) const {
    if (this->k_ == 2) return argmax_plane_k<2>(in, out, arg);
    if (this->k_ == 3) return argmax_plane_k<3>(in, out, arg);
    const Index w = this->in_.shape.w, k = this->k_, st = this->s_, wo = this->wo_;
    for (Index oh = 0; oh < this->ho_; ++oh) {
      T* o = out + oh * wo;
      std::int32_t* ar = arg + oh * wo;
      const Index base = oh * st * w;
      for (Index ow = 0; ow < wo; ++ow) {
        o[ow] = in[base + ow * st];
        ar[ow] = static_cast<std::int32_t>(base + ow * st);
      }
      for (Index ki = 0; ki < k; ++ki)
        for (Index kj = ki == 0 ? 1 : 0; kj < k; ++kj) {
          const Index off = base + ki * w + kj;
          for (Index ow = 0; ow < wo; ++ow) {
            const T v = in[off + ow * st];
            if (v > o[ow]) {
              o[ow] = v;
              ar[ow] = static_cast<std::int32_t>(off + ow * st);
            }
          }
        }
    }
  }
  /// The same for a window size K known at compile time: the window is unrolled and the loop over
  /// a row of windows vectorises with selects.
  template <int K>
  void argmax_plane_k(const T* __restrict in, T* __restrict out, std::int32_t* __restrict arg) const {
    const Index w = this->in_.shape.w, st = this->s_, wo = this->wo_;
    for (Index oh = 0; oh < this->ho_; ++oh)
      for (Index ow = 0; ow < wo; ++ow) {
        const Index j0 = oh * st * w + ow * st;
        T best = in[j0];
        std::int32_t at = static_cast<std::int32_t>(j0);
        for (int ki = 0; ki < K; ++ki)
          for (int kj = ki == 0 ? 1 : 0; kj < K; ++kj) {
            const Index j = j0 + ki * w + kj;
            const bool greater = in[j] > best;  // strict: the first maximum wins
            best = greater ? in[j] : best;
            at = greater ? static_cast<std::int32_t>(j) : at;
          }
        out[oh * wo + ow] = best;
        arg[oh * wo + ow] = at;
      }
  }
  void apply_plane(Index plane, const T* in, T* out) const override {
    const Index q = this->ho_ * this->wo_;
    nn::detail::gather_choices(&arg_[plane * q], q, in, out);
  }
  void apply_plane_transpose(Index plane, const T* in, T* out) const override {
    const Index q = this->ho_ * this->wo_;
    nn::detail::scatter_choices(&arg_[plane * q], q, in, out);
  }

  std::vector<std::int32_t> arg_;  // window maximum of each (sample, channel, output pixel)
};

/// Average pooling over k x k windows.
template <Scalar T, class B = DefaultBackend>
class AvgPool2d final : public detail::PoolBase<T, B> {
 public:
  explicit AvgPool2d(Index kernel, Index stride = 0) : detail::PoolBase<T, B>("avgpool", kernel, stride) {}
  std::unique_ptr<Layer<T, B>> clone() const override { return std::make_unique<AvgPool2d>(this->k_, this->s_); }
  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override { this->apply(a.n, x, y); }

 private:
  template <bool Transpose>
  void window(const T* in, T* out) const {
    const Index w = this->in_.shape.w;
    const T scale = T(1) / static_cast<T>(this->k_ * this->k_);
    for (Index oh = 0; oh < this->ho_; ++oh)
      for (Index ow = 0; ow < this->wo_; ++ow) {
        T acc = 0;
        for (Index ki = 0; ki < this->k_; ++ki)
          for (Index kj = 0; kj < this->k_; ++kj) {
            const Index j = (oh * this->s_ + ki) * w + ow * this->s_ + kj;
            if constexpr (Transpose) out[j] += scale * in[oh * this->wo_ + ow];
            else acc += in[j];
          }
        if constexpr (!Transpose) out[oh * this->wo_ + ow] = scale * acc;
      }
  }
  void apply_plane(Index, const T* in, T* out) const override { window<false>(in, out); }
  void apply_plane_transpose(Index, const T* in, T* out) const override { window<true>(in, out); }
};

}  // namespace curvature::nn
