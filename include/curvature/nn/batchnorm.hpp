#pragma once
// Batch normalisation (PyTorch nn.BatchNorm1d for vectors, nn.BatchNorm2d for images). Per channel c,
//   y = gamma_c xhat + beta_c,   xhat = (x - mu_c) s_c,   s_c = 1 / sqrt(var_c + eps),
// where mu, var are the mean and biased variance of the m = N*H*W values of channel c in the batch
// (training mode) or the running estimates (eval mode). theta holds gamma [C] then beta [C]
// (PyTorch order); the running mean and variance are buffers, not parameters.
//
// One class serves every input: required_layout() is none and channel c is rows
// c*H*W .. c*H*W + H*W - 1 of a Features tensor [C*H*W, N] (for vectors, row c) or column c of a
// Channels tensor [N*H*W, C], so a BatchNorm after a convolution needs no layout change.
//
// Derivatives. The Jacobian of xhat with respect to x is, per channel, the symmetric map
//   P(u) = s (u - mean(u) - xhat mean(xhat u))   (training: the batch statistics move with x)
//   P(u) = s u                                    (eval),
// so  JVP:  ry = gamma P(rx) + v_gamma xhat + v_beta;   VJP:  dx = P(gamma dy),
//     grad gamma = sum dy xhat,  grad beta = sum dy.
// R-op of the VJP along (rx, v, rdy), with rxhat = P(rx) (differentiating s and xhat inside P,
// using R(s) = -s^2 mean(xhat rx)):
//   R(dx) = P(v_gamma dy + gamma rdy) + R(P)(gamma dy),
//   R(P)(u) = -s mean(xhat rx) P(u) - s (rxhat mean(xhat u) + xhat mean(rxhat u))  (0 in eval),
//   R(grad gamma) = sum (rdy xhat + dy rxhat),  R(grad beta) = sum rdy.
// In training mode the samples are coupled: only Sum and PerReplica reductions exist.
#include <cmath>
#include <memory>
#include <string>

#include "curvature/nn/layer.hpp"

namespace curvature::nn {

namespace detail {

/// Per-channel reductions and broadcasts over one replica of a tensor (see the header comment).
template <class T>
struct ChannelOps {
  Index c, hw, n;
  bool channels;  ///< Channels layout [N*H*W, C], else Features [C*H*W, N]

  Index size() const { return c * hw * n; }
  /// [C, N]: the sum over the H*W values of each (channel, sample).
  Matrix<T> sample_sums(const T* a) const {
    const Matrix<T> cs = ConstMatrixMap<T>(a, hw, c * n).colwise().sum();
    if (channels) return ConstMatrixMap<T>(cs.data(), n, c).transpose();
    return ConstMatrixMap<T>(cs.data(), c, n);
  }
  /// [C]: the sum over the m = N*H*W values of each channel.
  Vector<T> sums(const T* a) const {
    if (channels) return ConstMatrixMap<T>(a, n * hw, c).colwise().sum().transpose();
    return sample_sums(a).rowwise().sum();
  }
  /// [C]: per-channel sums of a (.) b.
  Vector<T> dot_sums(const T* a, const T* b) const {
    const Vector<T> ab = ConstVectorMap<T>(a, size()).cwiseProduct(ConstVectorMap<T>(b, size()));
    return sums(ab.data());
  }
  /// out = f_c * in, or out += f_c * in (in may equal out).
  void scale(const T* in, const Vector<T>& f, T* out, bool accumulate) const {
    if (channels) {
      auto prod = ConstMatrixMap<T>(in, n * hw, c).array().rowwise() * f.transpose().array();
      MatrixMap<T> o(out, n * hw, c);
      if (accumulate) o.array() += prod;
      else o.array() = prod;
    } else {
      const Vector<T> e = expand(f);
      auto prod = ConstMatrixMap<T>(in, c * hw, n).array().colwise() * e.array();
      MatrixMap<T> o(out, c * hw, n);
      if (accumulate) o.array() += prod;
      else o.array() = prod;
    }
  }
  /// out += b_c.
  void shift(const Vector<T>& b, T* out) const {
    if (channels) MatrixMap<T>(out, n * hw, c).rowwise() += b.transpose();
    else MatrixMap<T>(out, c * hw, n).colwise() += expand(b);
  }
  /// f_c repeated H*W times per channel (the Features row pattern).
  Vector<T> expand(const Vector<T>& f) const {
    Vector<T> e(c * hw);
    for (Index k = 0; k < c; ++k) e.segment(k * hw, hw).setConstant(f[k]);
    return e;
  }
};

/// Reduces per-column parameter contributions g [d, R*N] (column r*N + i) into the sink.
template <class T>
void reduce_columns(const Sink<T>& s, const Matrix<T>& g, Index n, Index reps) {
  const Index d = g.rows();
  switch (s.mode) {
    case Reduction::Sum: VectorMap<T>(s.out, d) += s.scale * g.rowwise().sum(); break;
    case Reduction::PerReplica:
      for (Index r = 0; r < reps; ++r) VectorMap<T>(s.col(r), d) += s.scale * g.middleCols(r * n, n).rowwise().sum();
      break;
    case Reduction::PerColumn:  // assigns: the layer owns these rows of every column
      for (Index k = 0; k < reps * n; ++k) VectorMap<T>(s.col(k), d) = s.scale * g.col(k);
      break;
    case Reduction::PerSampleSquares:
      for (Index r = 0; r < reps; ++r)
        for (Index i = 0; i < n; ++i) VectorMap<T>(s.col(i), d) += s.scale * g.col(r * n + i).cwiseAbs2();
      break;
    case Reduction::SumSquares: VectorMap<T>(s.out, d) += s.scale * g.cwiseAbs2().rowwise().sum(); break;
  }
}

}  // namespace detail

template <Scalar T, class B = DefaultBackend>
class BatchNorm final : public Layer<T, B> {
 public:
  explicit BatchNorm(double eps = 1e-5, double momentum = 0.1) : eps_(eps), momentum_(momentum) {
    CURVATURE_CHECK_VALUE(eps > 0, "BatchNorm: eps must be positive, got ", eps);
    CURVATURE_CHECK_VALUE(momentum >= 0 && momentum <= 1, "BatchNorm: momentum must be in [0, 1], got ", momentum);
  }

  /// "batchnorm", or "batchnorm(eps=E,momentum=M)" for non-default constants (parse_arch syntax).
  std::string name() const override {
    if (eps_ == 1e-5 && momentum_ == 0.1) return "batchnorm";
    return curvature::detail::cat("batchnorm(eps=", eps_, ",momentum=", momentum_, ")");
  }

  /// Keeps running statistics already set for the same number of channels; else mean 0, var 1.
  TensorSpec bind(const TensorSpec& in) override {
    CURVATURE_CHECK_SHAPE(in.shape.size() > 0, "BatchNorm: empty input shape ", in.shape.str());
    this->in_ = this->out_ = in;
    if (running_mean_.size() != in.shape.c) {
      running_mean_ = Vector<T>::Zero(in.shape.c);
      running_var_ = Vector<T>::Ones(in.shape.c);
    }
    return this->out_;
  }
  Index num_params() const override { return 2 * channels(); }
  /// Keeps the running statistics (bind() keeps them for the same channels).
  std::unique_ptr<Layer<T, B>> clone() const override {
    auto c = std::make_unique<BatchNorm>(eps_, momentum_);
    c->running_mean_ = running_mean_;
    c->running_var_ = running_var_;
    return c;
  }
  /// PyTorch's initialisation: gamma = 1, beta = 0.
  void init(T* p, Rng&) const override {
    VectorMap<T>(p, channels()).setOnes();
    VectorMap<T>(p + channels(), channels()).setZero();
  }
  bool couples_samples(bool train) const override { return train; }
  /// Eval mode is affine in the input and in each of gamma, beta; training mode normalises by the
  /// batch's own statistics, which is not.
  bool piecewise_linear(bool train) const override { return !train; }

  Index channels() const { return this->in_.shape.c; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }
  const Vector<T>& running_mean() const { return running_mean_; }
  const Vector<T>& running_var() const { return running_var_; }
  void set_running_stats(const Vector<T>& mean, const Vector<T>& var) {
    CURVATURE_CHECK_SHAPE(mean.size() == var.size() && (channels() == 0 || mean.size() == channels()),
                          "BatchNorm::set_running_stats: got ", mean.size(), " means and ", var.size(),
                          " variances for ", channels(), " channels");
    CURVATURE_CHECK_VALUE((var.array() >= T(0)).all(), "BatchNorm::set_running_stats: negative variance");
    running_mean_ = mean;
    running_var_ = var;
  }

  /// y = gamma xhat + beta; in training mode also updates the running statistics as PyTorch does
  /// (momentum average, unbiased variance), once per forward call.
  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override {
    const Stats st = stats(a, x, true);
    const auto o = ops(a.n);
    y.resize(x.rows(), x.cols());
    o.scale(st.xhat.data(), gamma(a.p), y.data(), false);
    o.shift(beta(a.p), y.data());
  }

  void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    const Stats st = stats(a, x, false);
    const auto o = ops(a.n);
    const Index m = o.size();
    ry.resize(x.rows(), a.reps * x.cols());
    for (Index r = 0; r < a.reps; ++r) {
      T* out = ry.data() + r * m;
      if (rx) {
        project(st, o, rep(*rx, r, m), out);
        o.scale(out, gamma(a.p), out, false);
      } else {
        VectorMap<T>(out, m).setZero();
      }
      if (!a.v) continue;
      o.scale(st.xhat.data(), gamma(a.vr(r)), out, true);
      o.shift(beta(a.vr(r)), out);
    }
  }

  void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>* sink) override {
    const Stats st = stats(a, x, false);
    const auto o = ops(a.n);
    const Index m = o.size(), reps = dy.size() / m, c = channels();
    if (dx) dx->resize(dy.rows(), dy.cols());
    Matrix<T> g(2 * c, reps * a.n);
    for (Index r = 0; r < reps; ++r) {
      const T* d = dy.data() + r * m;
      if (dx) {
        o.scale(d, gamma(a.p), dx->data() + r * m, false);
        project(st, o, dx->data() + r * m, dx->data() + r * m);
      }
      if (sink) {
        const Matrix<T> dxh = ConstVectorMap<T>(d, m).cwiseProduct(ConstVectorMap<T>(st.xhat.data(), m));
        g.block(0, r * a.n, c, a.n) = o.sample_sums(dxh.data());
        g.block(c, r * a.n, c, a.n) = o.sample_sums(d);
      }
    }
    if (sink) reduce(a, *sink, g, reps);
  }

  void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>*,
                  const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>* sink) override {
    const Stats st = stats(a, x, false);
    const auto o = ops(a.n);
    const Index m = o.size(), c = channels();
    Matrix<T> g(2 * c, a.reps * a.n), rxhat(rx ? m : 0, 1);
    const CoupledTerms ct = (rdx && rx && a.train) ? coupled_terms(a, st, o, dy) : CoupledTerms{};
    if (rdx) rdx->resize(rdy.rows(), rdy.cols());
    for (Index r = 0; r < a.reps; ++r) {
      if (rx) project(st, o, rep(*rx, r, m), rxhat.data());
      if (rdx) rdx_replica(a, st, o, ct, r, rx ? rep(*rx, r, m) : nullptr, rxhat.data(), dy, rdy, rdx->data() + r * m);
      if (!sink) continue;
      Vector<T> t = ConstVectorMap<T>(rdy.data() + r * m, m).cwiseProduct(ConstVectorMap<T>(st.xhat.data(), m));
      if (rx) t += ConstVectorMap<T>(dy.data(), m).cwiseProduct(rxhat.col(0));
      g.block(0, r * a.n, c, a.n) = o.sample_sums(t.data());
      g.block(c, r * a.n, c, a.n) = o.sample_sums(rdy.data() + r * m);
    }
    if (sink) reduce(a, *sink, g, a.reps);
  }

 private:
  struct Stats {
    Vector<T> s;     ///< 1 / sqrt(var + eps) per channel
    Matrix<T> xhat;  ///< normalised input
    bool train;      ///< batch statistics (training mode), else running ones
  };
  /// The parts of R(P)(gamma dy) shared by every replica (training mode).
  struct CoupledTerms {
    Matrix<T> pg;       ///< P(gamma dy)
    Vector<T> mean_xg;  ///< mean(xhat gamma dy)
    Matrix<T> g;        ///< gamma dy
  };

  detail::ChannelOps<T> ops(Index n) const {
    const Shape s = this->in_.shape;
    return {s.c, s.h * s.w, n, this->in_.layout == Layout::Channels};
  }
  ConstVectorMap<T> gamma(const T* p) const { return ConstVectorMap<T>(p, channels()); }
  ConstVectorMap<T> beta(const T* p) const { return ConstVectorMap<T>(p + channels(), channels()); }
  /// Replica r of a tensor whose plain form has m values (a single replica is shared by all r).
  static const T* rep(const Matrix<T>& t, Index r, Index m) { return t.data() + (t.size() == m ? 0 : r * m); }

  /// Batch (training) or running (eval) statistics of x; `update` moves the running estimates.
  Stats stats(const Pass<T>& a, const Matrix<T>& x, bool update) {
    const auto o = ops(a.n);
    const Index m = a.n * o.hw;
    CURVATURE_CHECK_SHAPE(x.size() == o.size(), "BatchNorm: input has ", x.size(), " values, expected ", o.size(),
                          " (", a.n, " samples of ", this->in_.shape.str(), ")");
    Stats st{Vector<T>(channels()), x, a.train};
    if (!a.train) {
      st.s = (running_var_.array() + static_cast<T>(eps_)).rsqrt();
      o.shift(-running_mean_, st.xhat.data());
      o.scale(st.xhat.data(), st.s, st.xhat.data(), false);
      return st;
    }
    CURVATURE_CHECK_VALUE(m > 1, "BatchNorm: training mode needs more than 1 value per channel, got ", a.n,
                          " samples of ", this->in_.shape.str(), " (PyTorch refuses this too)");
    const Vector<T> mu = o.sums(x.data()) / static_cast<T>(m);
    o.shift(-mu, st.xhat.data());  // centred first: the two-pass variance
    const Vector<T> var = o.dot_sums(st.xhat.data(), st.xhat.data()) / static_cast<T>(m);
    st.s = (var.array() + static_cast<T>(eps_)).rsqrt();
    o.scale(st.xhat.data(), st.s, st.xhat.data(), false);
    if (update) {
      const T mom = static_cast<T>(momentum_);
      running_mean_ = (T(1) - mom) * running_mean_ + mom * mu;
      running_var_ = (T(1) - mom) * running_var_ + (mom * static_cast<T>(m) / static_cast<T>(m - 1)) * var;
    }
    return st;
  }

  /// out = P(u) (u may equal out).
  void project(const Stats& st, const detail::ChannelOps<T>& o, const T* u, T* out) const {
    const Index m = o.size();
    if (st.train) {
      const T inv_m = T(1) / static_cast<T>(m / o.c);
      const Vector<T> mean_u = o.sums(u) * inv_m, mean_xu = o.dot_sums(st.xhat.data(), u) * inv_m;
      if (out != u) std::copy_n(u, m, out);
      o.shift(-mean_u, out);
      o.scale(st.xhat.data(), -mean_xu, out, true);
    } else if (out != u) {
      std::copy_n(u, m, out);
    }
    o.scale(out, st.s, out, false);
  }

  CoupledTerms coupled_terms(const Pass<T>& a, const Stats& st, const detail::ChannelOps<T>& o, const Matrix<T>& dy) const {
    const Index m = o.size();
    CoupledTerms ct{Matrix<T>(m, 1), Vector<T>(), Matrix<T>(m, 1)};
    o.scale(dy.data(), gamma(a.p), ct.g.data(), false);
    project(st, o, ct.g.data(), ct.pg.data());
    ct.mean_xg = o.dot_sums(st.xhat.data(), ct.g.data()) / static_cast<T>(m / o.c);
    return ct;
  }

  /// Replica r of R(dx) = P(v_gamma dy + gamma rdy) + R(P)(gamma dy).
  void rdx_replica(const Pass<T>& a, const Stats& st, const detail::ChannelOps<T>& o, const CoupledTerms& ct,
                   Index r, const T* rx, const T* rxhat, const Matrix<T>& dy, const Matrix<T>& rdy, T* out) const {
    const Index m = o.size();
    o.scale(rdy.data() + r * m, gamma(a.p), out, false);
    if (a.v) o.scale(dy.data(), gamma(a.vr(r)), out, true);
    project(st, o, out, out);
    if (!rx || !a.train) return;
    const T inv_m = T(1) / static_cast<T>(m / o.c);
    const Vector<T> k1 = -(st.s.cwiseProduct(o.dot_sums(st.xhat.data(), rx)) * inv_m);
    const Vector<T> k3 = -(st.s.cwiseProduct(o.dot_sums(rxhat, ct.g.data())) * inv_m);
    o.scale(ct.pg.data(), k1, out, true);
    o.scale(rxhat, -st.s.cwiseProduct(ct.mean_xg), out, true);
    o.scale(st.xhat.data(), k3, out, true);
  }

  void reduce(const Pass<T>& a, const Sink<T>& s, const Matrix<T>& g, Index reps) const {
    if (a.train && s.mode != Reduction::Sum && s.mode != Reduction::PerReplica)
      throw UnsupportedError("BatchNorm: per-sample reductions are undefined in training mode, where the batch "
                             "statistics couple the samples; call set_training(false)");
    detail::reduce_columns(s, g, a.n, reps);
  }

  double eps_, momentum_;
  Vector<T> running_mean_, running_var_;
};

}  // namespace curvature::nn
