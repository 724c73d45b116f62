#pragma once
// Layout changes and Flatten. All are linear maps without parameters, so the JVP applies the map,
// the backward and its R-op apply the inverse (which is also the transpose).
#include "curvature/nn/layer.hpp"

namespace curvature::nn {

/// Converts between the Features ([C*H*W, N]) and Channels ([N*H*W, C]) layouts. Sequential
/// inserts it where a layer needs the other layout; users never add it themselves.
template <Scalar T, class B = DefaultBackend>
class Relayout final : public Layer<T, B> {
 public:
  explicit Relayout(Layout to) : to_(to) {}
  std::unique_ptr<Layer<T, B>> clone() const override { return std::make_unique<Relayout>(to_); }
  std::string name() const override { return to_ == Layout::Channels ? "to_channels" : "to_features"; }
  bool piecewise_linear(bool) const override { return true; }
  TensorSpec bind(const TensorSpec& in) override {
    this->in_ = in;
    this->out_ = TensorSpec{in.shape, to_};
    return this->out_;
  }
  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override { convert(a, x, y, to_); }
  void jvp(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    convert(a, *rx, ry, to_);
  }
  void backward(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>*) override {
    if (dx) convert(a, dy, *dx, other());
  }
  void backward_r(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>*, const Matrix<T>*,
                  const Matrix<T>&, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>*) override {
    if (rdx) convert(a, rdy, *rdx, other());
  }
  bool has_jvp2() const override { return true; }
  /// Linear: rry = the same map of rrx.
  bool jvp2(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>*, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    if (!rrx) return false;
    convert(a, *rrx, rry, to_);
    return true;
  }

 private:
  Layout other() const { return to_ == Layout::Channels ? Layout::Features : Layout::Channels; }

  /// Converts every replica of `in` to layout `to`.
  void convert(const Pass<T>& a, const Matrix<T>& in, Matrix<T>& out, Layout to) const {
    const Shape s = this->in_.shape;
    const Index hw = s.h * s.w, n = a.n, per = s.size() * n;
    const Index reps = in.size() / per;
    if (to == Layout::Channels) out.resize(n * hw, reps * s.c);
    else out.resize(s.size(), reps * n);
    for (Index r = 0; r < reps; ++r) {
      const T* src = in.data() + r * per;
      T* dst = out.data() + r * per;
      this->bk_.parallel_for(s.c, [&](Index c0, Index c1) {
        for (Index c = c0; c < c1; ++c)
          for (Index i = 0; i < n; ++i) {
            const Index feat = c * hw + i * s.size(), chan = c * n * hw + i * hw;  // (i, c, p) in each layout
            if (to == Layout::Channels) std::copy_n(src + feat, hw, dst + chan);
            else std::copy_n(src + chan, hw, dst + feat);
          }
      });
    }
  }

  Layout to_;
};

/// Flattens C x H x W to a vector of C*H*W features (PyTorch's nn.Flatten on NCHW).
template <Scalar T, class B = DefaultBackend>
class Flatten final : public Layer<T, B> {
 public:
  std::string name() const override { return "flatten"; }
  std::unique_ptr<Layer<T, B>> clone() const override { return std::make_unique<Flatten>(); }
  bool piecewise_linear(bool) const override { return true; }
  std::optional<Layout> required_layout() const override { return Layout::Features; }
  TensorSpec bind(const TensorSpec& in) override {
    this->in_ = in;
    this->out_ = TensorSpec{Shape{in.shape.size(), 1, 1}, Layout::Features};
    return this->out_;
  }
  void forward(const Pass<T>&, const Matrix<T>& x, Matrix<T>& y) override { y = x; }
  void jvp(const Pass<T>&, const Matrix<T>&, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    ry = *rx;
  }
  void backward(const Pass<T>&, const Matrix<T>&, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>*) override {
    if (dx) *dx = dy;
  }
  void backward_r(const Pass<T>&, const Matrix<T>&, const Matrix<T>&, const Matrix<T>*, const Matrix<T>*,
                  const Matrix<T>&, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>*) override {
    if (rdx) *rdx = rdy;
  }
  bool has_jvp2() const override { return true; }
  bool jvp2(const Pass<T>&, const Matrix<T>&, const Matrix<T>&, const Matrix<T>*, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    if (!rrx) return false;
    rry = *rrx;
    return true;
  }
};

}  // namespace curvature::nn
