#pragma once
// 2-D convolution with square kernel, stride, zero padding and bias (PyTorch nn.Conv2d), in the
// Channels layout [N*H*W, C]: with the im2col matrix cols [N*Ho*Wo, C*k*k] of the whole batch,
// the forward pass is one product y = cols W^T, and theta holds W [Cout, C, k, k] row-major,
// i.e. the column-major W^T [C*k*k, Cout], then b [Cout].
//
// Stride-1 layers run the forward pass, the JVP, the second-order forward mode and the input
// gradients (all convolutions: the transposed convolution of a stride-1 layer is one too), and
// the summed weight gradients for kernels 1, 3 and 5, through direct kernels instead
// (detail/direct_conv.hpp); per-sample reductions, K-FAC's patches and strided layers use im2col
// products. Conv2d::algorithm chooses.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <utility>
#include <vector>

#include "curvature/nn/detail/conv_grad.hpp"
#include "curvature/nn/detail/direct_conv.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::nn {

/// How a Conv2d computes its forward pass, JVPs, input gradients and summed weight gradients:
/// Auto takes Direct for stride 1, padding below the kernel size and output rows at least one
/// SIMD vector wide, Im2col otherwise.
enum class ConvAlgorithm { Auto, Im2col, Direct };

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

  /// Chooses the algorithm (both give the same values up to float rounding). Direct needs stride 1
  /// and padding < kernel; asking for it otherwise throws ValueError.
  Conv2d& algorithm(ConvAlgorithm a) {
    CURVATURE_CHECK_VALUE(a != ConvAlgorithm::Direct || (s_ == 1 && pad_ < k_), name(),
                          ": the direct algorithm needs stride 1 and padding smaller than the kernel");
    algo_ = a;
    return *this;
  }
  ConvAlgorithm algorithm() const { return algo_; }
  std::unique_ptr<Layer<T, B>> clone() const override {
    auto c = std::make_unique<Conv2d>(cout_, k_, s_, pad_);
    c->algo_ = algo_;
    return c;
  }
  /// True when the forward pass, JVPs and input gradients run the direct kernel (after bind).
  bool uses_direct() const {
    if (algo_ == ConvAlgorithm::Im2col || s_ != 1 || pad_ >= k_) return false;
    return algo_ == ConvAlgorithm::Direct || wo_ >= detail::direct_lanes<T>();
  }
  std::optional<Layout> required_layout() const override { return Layout::Channels; }

  TensorSpec bind(const TensorSpec& in) override {
    const Shape s = in.shape;
    CURVATURE_CHECK_SHAPE(s.c >= 1 && s.h >= 1 && s.w >= 1, name(), ": input ", s.str(), " is not an image");
    CURVATURE_CHECK_SHAPE(s.h + 2 * pad_ >= k_ && s.w + 2 * pad_ >= k_, name(), ": input ", s.str(),
                          " (padded by ", pad_, ") is smaller than the kernel ", k_, "x", k_);
    this->in_ = in;
    ho_ = (s.h + 2 * pad_ - k_) / s_ + 1;
    wo_ = (s.w + 2 * pad_ - k_) / s_ + 1;
    ckk_ = s.c * k_ * k_;
    this->out_ = TensorSpec{Shape{cout_, ho_, wo_}, Layout::Channels};
    return this->out_;
  }

  Index num_params() const override { return ckk_ * cout_ + cout_; }
  bool piecewise_linear(bool) const override { return true; }
  bool assigns_sink(Reduction mode) const override { return summed_mode(mode) || mode == Reduction::PerColumn; }

  /// The patches (or padded planes) of x meet all directions' weights in one product.
  bool shares_across_directions() const override { return true; }

  /// PyTorch's default: weight and bias uniform in +-1/sqrt(C*k*k).
  void init(T* p, Rng& rng) const override {
    const T bound = T(1) / std::sqrt(static_cast<T>(ckk_));
    for (Index j = 0; j < num_params(); ++j) p[j] = rng.uniform<T>(-bound, bound);
  }

  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override {
    cols_of_ = nullptr;  // x may be new data at the address of the last input
    y.resize(a.n * ho_ * wo_, cout_);
    if (uses_direct()) {
      detail::direct_pack(a.p, this->in_.shape.c, k_, cout_, false, pack(wpack_, ckk_ * cout_));
      for_samples(a.n, [&](Index g, Index i) {
        const T* padded = pad_sample(g, x, 0, i);
        detail::direct_conv_sample<T>(direct_shape(), padded, wpack_.data(), a.p + ckk_ * cout_, false,
                                   y.data() + i * ho_ * wo_, y.rows());
      });
      return;
    }
    for_chunks(a.n, [&](Index g, Index i0, Index m, T*) { forward_chunk(y, im2col_chunk(x, 0, i0, m, g), a.p, i0, m); });
  }

  /// ry_r = conv(rx_r; W) + conv(x; V_r) + vb_r.
  void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    forward_jvp_impl(a, x, rx, nullptr, ry);
  }

  /// forward and jvp with one im2col of x per chunk for both W and [V_0 ... V_R-1].
  void forward_jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, Matrix<T>& y, Matrix<T>& ry) override {
    cols_of_ = nullptr;
    y.resize(a.n * ho_ * wo_, cout_);
    forward_jvp_impl(a, x, rx, &y, ry);
  }

  void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>* sink) override {
    const Index reps = dy.cols() / cout_;
    if (dx) {  // dx_r = convT(dy_r; W)
      dx->resize(x.rows(), reps * this->in_.shape.c);
      for (Index r = 0; r < reps; ++r) input_grad(*dx, r, a.n, {{&dy, a.p}});
    }
    if (!sink) return;
    if (summed(*sink)) param_grad_sum(*sink, a.n, reps, {{&dy, &x}});
    else detail::conv_param_grad<T>(this->bk_, *sink, dims(a.n, reps), {{&dy, &cached_cols(x, a.n)}});
  }

  void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>*,
                  const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>* sink) override {
    if (rdx) {  // R(dx)_r = convT(R(dy)_r; W) + convT(dy; V_r), one col2im for both
      rdx->resize(x.rows(), a.reps * this->in_.shape.c);
      for (Index r = 0; r < a.reps; ++r) {
        if (a.v) input_grad(*rdx, r, a.n, {{&rdy, a.p}, {&dy, a.vr(r)}});
        else input_grad(*rdx, r, a.n, {{&rdy, a.p}});
      }
    }
    if (!sink) return;  // R(dW) terms: (R(dy), cols x) and (dy, cols R(x)), the latter without bias
    if (summed(*sink)) {
      if (rx) param_grad_sum(*sink, a.n, a.reps, {{&rdy, &x}, {&dy, rx, false}});
      else param_grad_sum(*sink, a.n, a.reps, {{&rdy, &x}});
      return;
    }
    const Matrix<T>& cols = cached_cols(x, a.n);
    const detail::ConvDims d = dims(a.n, a.reps);
    if (rx) detail::conv_param_grad<T>(this->bk_, *sink, d, {{&rdy, &cols}, {&dy, &tangent_cols(*rx, a.reps, a.n), false}});
    else detail::conv_param_grad<T>(this->bk_, *sink, d, {{&rdy, &cols}});
  }

  bool has_jvp2() const override { return true; }
  /// rry_r = conv(rrx_r; W) + 2 conv(rx_r; V_r) (y is bilinear in (W, x); the bias enters linearly).
  bool jvp2(const Pass<T>& a, const Matrix<T>&, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    const bool cross = rx && a.v;
    if (!rrx && !cross) return false;
    const Index p = ho_ * wo_;
    rry.resize(a.n * p, a.reps * cout_);
    if (uses_direct()) {
      jvp2_direct(a, rx, rrx, cross, rry);
      return true;
    }
    for_chunks(a.n, [&](Index g, Index i0, Index m, T*) {
      for (Index r = 0; r < a.reps; ++r) {
        auto blk = rry.middleCols(r * cout_, cout_).middleRows(i0 * p, m * p);
        if (rrx) Serial{}.gemm(blk, im2col_chunk(*rrx, rep_of(*rrx, r), i0, m, g), weight_t(a.p), T(1), false);
        if (cross)
          Serial{}.gemm(blk, im2col_chunk(*rx, rep_of(*rx, r), i0, m, g), weight_t(a.vr(r)), T(2), rrx != nullptr);
      }
    });
    return true;
  }

  /// On the direct kernel, the JVPs can run with a max-pool that follows (Sequential does so).
  bool pools_jvp() const override { return uses_direct(); }
  /// jvp, then the max-pool's jvp, sample by sample: each sample's output tangent planes are
  /// computed into a scratch that stays in cache and only the pool's choices leave it, where the
  /// layer by layer way writes the full-size tangent to memory and reads it back (TinyCNN, a block
  /// of 20 directions: 160 MB for the first convolution). From 16 directions on, their terms
  /// V_r * x are computed at the pool's choices alone (pooled_direction_terms): the same values
  /// summed in another order; with fewer, the same bits.
  void jvp_pooled(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, const Layer<T, B>& pool,
                  Matrix<T>& rz) override {
    rcols_of_ = nullptr;
    gather_directions(a);
    jvp_pooled_direct(a, x, rx, pool, rz);
  }
  /// jvp2, then the max-pool's jvp2, in the same way.
  bool jvp2_pooled(const Pass<T>& a, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>* rrx,
                   const Layer<T, B>& pool, Matrix<T>& rrz) override {
    const bool cross = rx && a.v;
    if (!rrx && !cross) return false;
    jvp2_pooled_direct(a, rx, rrx, cross, pool, rrz);
    return true;
  }

  /// On the direct kernel with a summed sink (Sum, PerReplica), the R-op can run with a max-pool
  /// that follows (Sequential does so).
  bool pools_rop(Reduction mode) const override {
    return uses_direct() && detail::direct_wgrad_supports(k_) && summed_mode(mode);
  }
  /// The max-pool's backward_r, then this layer's: the R-derivative of the pool's output cotangent
  /// is scattered through its window choices sample by sample (a chunk of samples for the weight
  /// gradient, one sample's padded planes for the input gradient), where it is read, rather than
  /// into a full-size tensor that goes to memory and back (TinyCNN, 20 directions: 160 MB for the
  /// first convolution). From 16 directions on, the term of the scattered cotangent against x
  /// is computed at the pool's choices alone (pooled_weight_terms), summed in another order than
  /// the two calls; with fewer, their bits.
  void backward_r_pooled(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, const Matrix<T>& dy,
                         const Matrix<T>& rdz, const Layer<T, B>& pool, Matrix<T>* rdx, const Sink<T>* sink) override {
    const PooledCotangent pc = pooled_cotangent(a, pool, rdz);
    CURVATURE_CHECK_VALUE(!sink || pools_rop(sink->mode), name(), ": a pooled R-op needs a summed sink");
    if (rdx) {  // R(dx)_r = convT(R(dy)_r; W) + convT(dy; V_r)
      rdx->resize(x.rows(), a.reps * this->in_.shape.c);
      for (Index r = 0; r < a.reps; ++r) {
        if (a.v) input_grad(*rdx, r, a.n, {{nullptr, a.p, &pc}, {&dy, a.vr(r)}});
        else input_grad(*rdx, r, a.n, {{nullptr, a.p, &pc}});
      }
    }
    if (!sink) return;
    // the pooled term at the choices alone when that pays (pooled_choices_only), as in the JVP
    const PooledCotangent* sparse = pooled_choices_only(a.reps, pc.q) ? &pc : nullptr;
    if (rx && sparse) param_grad_sum(*sink, a.n, a.reps, {{&dy, rx, false}}, &x, sparse);
    else if (rx) param_grad_sum(*sink, a.n, a.reps, {{nullptr, &x, true, &pc}, {&dy, rx, false}});
    else if (sparse) param_grad_sum(*sink, a.n, a.reps, {}, &x, sparse);
    else param_grad_sum(*sink, a.n, a.reps, {{nullptr, &x, true, &pc}});
  }

  Index out_channels() const { return cout_; }
  Index kernel() const { return k_; }
  Index stride() const { return s_; }
  Index padding() const { return pad_; }
  /// C*k*k: the rows of W^T, the length of one im2col patch.
  Index patch_size() const { return ckk_; }
  /// Output positions Ho*Wo per sample.
  Index positions() const { return ho_ * wo_; }
  /// The im2col patches [N*Ho*Wo, C*k*k] of the input x (Channels layout) of N samples, into out
  /// (K-FAC's input factor needs them). Const: it reads no cache and changes none, so a caller
  /// needs no writable layer (Sequential::mutable_layer drops the batch shards' copies).
  void patches(const Matrix<T>& x, Index n, Matrix<T>& out) const {
    CURVATURE_CHECK_SHAPE(x.rows() == n * this->in_.shape.h * this->in_.shape.w && x.cols() == this->in_.shape.c,
                          name(), "::patches: input is ", x.rows(), "x", x.cols(), " for ", n, " samples");
    im2col(x, n, out);
  }

 private:
  using Serial = curvature::backend::Serial;
  using StridedMap = Eigen::Map<Matrix<T>, 0, Eigen::OuterStride<>>;
  using ConstStridedMap = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;
  using ConstRowMajorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

  /// The R-derivative of a max-pool's output cotangent (a.reps replicas of Cout columns, the pool's
  /// output size) with the pool's window choices (q per plane): the cotangent of this layer's
  /// output is its scatter through the choices, built sample by sample where it is read
  /// (backward_r_pooled).
  struct PooledCotangent {
    const Matrix<T>* rdz;
    const std::int32_t* choices;
    Index q;
  };

  /// One cotangent of an input gradient: replica r of dy (or of the scatter of `pooled`),
  /// convolved transposed with weights w.
  struct InputTerm {
    const Matrix<T>* dy;
    const T* w;
    const PooledCotangent* pooled = nullptr;
  };

  ConstMatrixMap<T> weight_t(const T* p) const { return ConstMatrixMap<T>(p, ckk_, cout_); }
  ConstVectorMap<T> bias(const T* p) const { return ConstVectorMap<T>(p + ckk_ * cout_, cout_); }
  detail::ConvDims dims(Index n, Index reps) const { return {n, ho_ * wo_, ckk_, cout_, reps}; }

  /// Rows of samples [i0, i0 + m) of y = 1 b^T + cols W^T (the product accumulates onto the bias,
  /// saving a zeroing pass).
  void forward_chunk(Matrix<T>& y, const MatrixMap<T>& cols, const T* p, Index i0, Index m) const {
    auto blk = y.middleRows(i0 * ho_ * wo_, m * ho_ * wo_);
    fill_bias(blk, p);
    Serial{}.gemm(blk, cols, weight_t(p), T(1), true);
  }

  /// v_all_ = [V_0 ... V_{R-1}], so that the patches (or padded planes) of x meet every direction
  /// in one product.
  void gather_directions(const Pass<T>& a) {
    if (!a.v) return;
    v_all_.resize(ckk_, a.reps * cout_);
    for (Index r = 0; r < a.reps; ++r) v_all_.middleCols(r * cout_, cout_) = weight_t(a.vr(r));
  }

  /// ry = the JVP along the pass's directions and, when y is non-null, y = the forward pass; the
  /// patches of x serve both products of a chunk.
  void forward_jvp_impl(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, Matrix<T>* y, Matrix<T>& ry) {
    rcols_of_ = nullptr;
    const Index p = ho_ * wo_;
    ry.resize(a.n * p, a.reps * cout_);
    gather_directions(a);
    if (uses_direct()) return forward_jvp_direct(a, x, rx, y, ry);
    for_chunks(a.n, [&](Index g, Index i0, Index m, T*) {
      auto rows = ry.middleRows(i0 * p, m * p);
      if (y || a.v) {
        const MatrixMap<T> cols = im2col_chunk(x, 0, i0, m, g);
        if (y) forward_chunk(*y, cols, a.p, i0, m);
        if (a.v) {
          for (Index r = 0; r < a.reps; ++r) fill_bias(rows.middleCols(r * cout_, cout_), a.vr(r));
          Serial{}.gemm(rows, cols, v_all_, T(1), true);
        }
      }
      for (Index r = 0; r < a.reps; ++r) {
        auto blk = rows.middleCols(r * cout_, cout_);
        if (rx) Serial{}.gemm(blk, im2col_chunk(*rx, rep_of(*rx, r), i0, m, g), weight_t(a.p), T(1), a.v != nullptr);
        else if (!a.v) blk.setZero();
      }
    });
  }

  template <class M>
  void fill_bias(M&& y, const T* p) const {
    const T* b = p + ckk_ * cout_;
    for (Index c = 0; c < cout_; ++c) y.col(c).setConstant(b[c]);
  }

  /// Which replica of tensor m (one replica, shared, or one per replica) replica r reads.
  Index rep_of(const Matrix<T>& m, Index r) const { return m.cols() == this->in_.shape.c ? 0 : r; }

  /// Samples per chunk of the chunked products: the im2col rows of one chunk take at most 256 KB,
  /// so the product reads them back from cache. Whole-batch im2col matrices (14 and 19 MB for
  /// TinyCNN at B = 128) went through memory for every product (bench_nn, TinyCNN gradient at 1
  /// thread: 42.9 ms whole-batch, 29.6 ms chunked with the contiguous-span im2col below).
  Index chunk_samples(Index n) const {
    const Index bytes = static_cast<Index>(sizeof(T)) * ho_ * wo_ * ckk_;
    return std::clamp<Index>((Index{256} << 10) / bytes, 1, n);
  }

  /// Groups of chunks (at most 16, enough for 16 threads): see for_chunks.
  Index chunk_groups(Index n) const {
    const Index m = chunk_samples(n);
    return std::min<Index>(16, (n + m - 1) / m);
  }

  /// Calls f(g, i0, m, buf) for every chunk [i0, i0 + m) of the n samples, buf holding room for
  /// one chunk's im2col rows. The chunks are dealt to the groups g, run in parallel; each group
  /// takes its chunks in order, calling products in the calling thread. Chunks and groups depend on
  /// n and the shapes alone, never on the thread count, so per-group sums give the same bits at
  /// any thread count.
  template <class F>
  void for_chunks(Index n, F&& f) {
    const Index m = chunk_samples(n), chunks = (n + m - 1) / m, groups = chunk_groups(n);
    if (static_cast<Index>(scratch_.size()) < groups) scratch_.resize(groups), pads_of_.resize(groups, 0);
    this->bk_.parallel_for(groups, [&](Index g0, Index g1) {
      for (Index g = g0; g < g1; ++g) {
        Vector<T>& buf = scratch_[g];
        if (buf.size() < m * ho_ * wo_ * ckk_) buf.resize(m * ho_ * wo_ * ckk_), pads_of_[g] = 0;
        for (Index c = chunks * g / groups; c < chunks * (g + 1) / groups; ++c)
          f(g, c * m, std::min(m, n - c * m), buf.data());
      }
    });
  }

  /// The im2col rows [m*P, C*k*k] of samples [i0, i0 + m) of replica r of x, written to group g's
  /// scratch. The zero-padding entries sit at the same places for every chunk of m samples and
  /// nothing else writes there, so they are written only when the chunk size changes.
  MatrixMap<T> im2col_chunk(const Matrix<T>& x, Index r, Index i0, Index m, Index g) {
    T* buf = scratch_[g].data();
    im2col_cols(x, r, i0, m, 0, ckk_, buf, pads_of_[g] == m);
    pads_of_[g] = m;
    return MatrixMap<T>(buf, m * ho_ * wo_, ckk_);
  }

  /// One term of a summed parameter gradient: cotangent a [N*P, R*Cout or Cout] against the
  /// patches of input x [N*H*W, R*C or C].
  struct WeightTerm {
    const Matrix<T>* a;
    const Matrix<T>* x;
    bool bias = true;  ///< false for the R-op term dy * cols(R x), which has no bias part
    const PooledCotangent* pooled = nullptr;  ///< a is the scatter of this (reps replicas), a null
  };

  static bool summed_mode(Reduction m) { return m == Reduction::Sum || m == Reduction::PerReplica; }
  static bool summed(const Sink<T>& s) { return summed_mode(s.mode); }

  /// Sum (or PerReplica) reduction of sum_t patches(x_t)^T a_t, chunk by chunk: every group sums
  /// its chunks into its own partial ([CKK, R*Cout] weights, [Cout, R] biases), and the partials
  /// are added in group order. Patches shared by all replicas meet all R cotangents in one product.
  /// With `pooled`, also the pooled term of x at the pool's choices alone (pooled_weight_terms).
  void param_grad_sum(const Sink<T>& s, Index n, Index reps, std::initializer_list<WeightTerm> terms,
                      const Matrix<T>* pooled_x = nullptr, const PooledCotangent* pooled = nullptr) {
    const Index p = ho_ * wo_;
    const Index groups = chunk_groups(n);
    if (static_cast<Index>(part_.size()) < groups) part_.resize(groups), part_b_.resize(groups);
    for (Index g = 0; g < groups; ++g) part_[g].setZero(ckk_, reps * cout_), part_b_[g].setZero(cout_, reps);
    if (pooled) pooled_weight_terms(*pooled_x, *pooled, n, reps);
    if (terms.size() == 0) {  // only the pooled term
    } else if (uses_direct() && detail::direct_wgrad_supports(k_)) {
      param_grad_direct(n, reps, terms);
    } else for_chunks(n, [&](Index g, Index i0, Index m, T* buf) {
      const ConstMatrixMap<T> cols(buf, m * p, ckk_);
      for (const WeightTerm& t : terms) {
        const bool shared = t.x->cols() == this->in_.shape.c;
        for (Index r = 0; r < reps; ++r) {
          if (r == 0 || !shared) im2col_chunk(*t.x, shared ? 0 : r, i0, m, g);
          const bool all = shared && t.a->cols() == reps * cout_;  // one product for every replica
          const Index cols_a = all ? reps * cout_ : cout_;
          auto a = t.a->middleCols(all || t.a->cols() == cout_ ? 0 : r * cout_, cols_a).middleRows(i0 * p, m * p);
          Serial{}.gemm(part_[g].middleCols(r * cout_, cols_a), cols.transpose(), a, T(1), true);
          if (t.bias)
            for (Index q = 0; q < cols_a / cout_; ++q)
              part_b_[g].col(r + q) += a.middleCols(q * cout_, cout_).colwise().sum().transpose();
          if (all) break;
        }
      }
    });
    for (Index r = 0; r < reps; ++r) {
      const bool per_replica = s.mode == Reduction::PerReplica;
      T* out = s.col(per_replica ? r : 0);
      for (Index g = 0; g < groups; ++g) {
        const bool assign = s.assign && g == 0 && (per_replica || r == 0);  // the first write of out
        detail::add_or_assign(VectorMap<T>(out, ckk_ * cout_),
                              s.scale * ConstVectorMap<T>(part_[g].data() + r * ckk_ * cout_, ckk_ * cout_), assign);
        detail::add_or_assign(VectorMap<T>(out + ckk_ * cout_, cout_), s.scale * part_b_[g].col(r), assign);
      }
    }
  }

  /// param_grad_sum's partials on the direct kernel: each group takes its samples (as for_samples
  /// deals them) a few at a time (shifted copies of at most 256 KB), and correlates every term's
  /// input with its cotangent planes; when the input is shared by all replicas, the R*Cout
  /// cotangent planes go through as one set.
  void param_grad_direct(Index n, Index reps, std::initializer_list<WeightTerm> terms) {
    const Index p = ho_ * wo_, groups = chunk_groups(n), c = this->in_.shape.c, hw = this->in_.shape.h * this->in_.shape.w;
    const detail::DirectConvShape sx = direct_shape();
    const Index stride = sx.template shifted_size<T>();
    const Index sub = std::clamp<Index>((Index{256} << 10) / static_cast<Index>(sizeof(T) * stride), 1, n);
    if (static_cast<Index>(padded_.size()) < groups) padded_.resize(groups);
    if (static_cast<Index>(scattered_.size()) < groups) scattered_.resize(groups);
    this->bk_.parallel_for(groups, [&](Index g0, Index g1) {
      for (Index g = g0; g < g1; ++g) {
        const Index end = n * (g + 1) / groups;
        for (Index i0 = n * g / groups; i0 < end; i0 += sub) {
          const Index m = std::min(sub, end - i0);
          T* buf = pack(padded_[g], m * stride);
          for (const WeightTerm& t : terms) {
            const bool shared = t.x->cols() == c;
            // every replica at once; a pooled cotangent is scattered one replica at a time
            const bool all = shared && !t.pooled && t.a->cols() == reps * cout_;
            for (Index r = 0; r < reps; ++r) {
              if (r == 0 || !shared)
                for (Index i = 0; i < m; ++i)
                  detail::direct_shift(sx, t.x->data() + (shared ? 0 : r) * c * t.x->rows() + (i0 + i) * hw,
                                       t.x->rows(), buf + i * stride);
              const Index channels = all ? reps * cout_ : cout_;
              const T* a = nullptr;
              Index lda = m * p;
              if (t.pooled) {
                a = scatter_chunk(g, *t.pooled, r, i0, m);
              } else {
                lda = t.a->rows();
                a = t.a->data() + (all || t.a->cols() == cout_ ? 0 : r * cout_) * lda + i0 * p;
              }
              detail::direct_wgrad<T>(sx, m, buf, a, lda, channels, part_[g].data() + r * cout_ * ckk_, ckk_);
              if (t.bias)  // channel j of replica r + j / Cout (the same sums however a is laid out)
                for (Index j = 0; j < channels; ++j)
                  part_b_[g](j % cout_, r + j / cout_) += detail::fixed_order_sum(a + j * lda, m * p);
              if (all) break;
            }
          }
        }
      }
    });
  }

  /// im2col of the whole batch of x, for the per-sample reductions and K-FAC's patches; reused
  /// while x is the input of the last forward pass (which resets the cache: the chunked products
  /// never build it).
  const Matrix<T>& cached_cols(const Matrix<T>& x, Index n) {
    if (cols_of_ != x.data() || cols_.rows() != n * ho_ * wo_) {
      im2col(x, n, cols_);
      cols_of_ = x.data();
    }
    return cols_;
  }

  /// im2col of every replica of the tangent rx (per-sample R-op reductions), reused for the same rx
  /// until the next jvp.
  const Matrix<T>& tangent_cols(const Matrix<T>& rx, Index reps, Index n) {
    const Index rows = n * ho_ * wo_;
    if (rcols_of_ == rx.data() && rcols_.rows() == rows && rcols_.cols() == reps * ckk_) return rcols_;
    rcols_.resize(rows, reps * ckk_);
    const Index rx_reps = rx.cols() / this->in_.shape.c;
    for (Index r = 0; r < reps; ++r) im2col_block(rx, rx_reps == 1 ? 0 : r, n, rcols_.data() + r * rows * ckk_);
    rcols_of_ = rx.data();
    return rcols_;
  }

  void im2col(const Matrix<T>& x, Index n, Matrix<T>& cols) const {
    cols.resize(n * ho_ * wo_, ckk_);
    im2col_block(x, 0, n, cols.data());
  }

  /// Output positions o in [lo, hi) whose input o*s - pad + kk lies inside [0, len).
  std::pair<Index, Index> valid(Index kk, Index len, Index out) const {
    const Index lo = kk >= pad_ ? 0 : (pad_ - kk + s_ - 1) / s_;
    const Index last = len - 1 + pad_ - kk;
    const Index hi = last < 0 ? 0 : std::min(out, last / s_ + 1);
    return {std::min(lo, hi), hi};
  }

  /// im2col of all n samples of replica r of x, one block of columns per task.
  void im2col_block(const Matrix<T>& x, Index r, Index n, T* cols) const {
    this->bk_.parallel_for(ckk_, [&](Index q0, Index q1) { im2col_cols(x, r, 0, n, q0, q1, cols); });
  }

  /// Columns [q0, q1) of the im2col rows of samples [i0, i0 + m) of replica r of x:
  /// cols(i*P + oh*Wo + ow, (c*k + ki)*k + kj) = x_r((i0 + i)*H*W + (oh*s - pad + ki)*W + ow*s - pad + kj, c),
  /// 0 in the padding; column q starts at cols + q*m*P.
  void im2col_cols(const Matrix<T>& x, Index r, Index i0, Index m, Index q0, Index q1, T* cols,
                   bool pads_zero = false) const {
    const Shape s = this->in_.shape;
    const Index p = ho_ * wo_, hw = s.h * s.w;
    const T* src = x.data() + r * x.rows() * s.c;
    const bool rows_contiguous = s_ == 1 && wo_ == s.w;
    for (Index q = q0; q < q1; ++q) {
      const Index c = q / (k_ * k_), ki = (q / k_) % k_, kj = q % k_;
      const auto [h0, h1] = valid(ki, s.h, ho_);
      const auto [w0, w1] = valid(kj, s.w, wo_);
      for (Index i = 0; i < m; ++i) {
        T* out = cols + q * m * p + i * p;
        const T* plane = src + c * x.rows() + (i0 + i) * hw;
        if (rows_contiguous && h1 > h0 && w1 > w0) {
          // Output rows of the same width as the input rows: the valid entries of rows h0..h1-1
          // come from one contiguous input span; copy it whole, then zero the entries that
          // wrapped around from the neighbouring input rows.
          const Index first = h0 * wo_ + w0, last = (h1 - 1) * wo_ + w1;
          const T* in = plane + (h0 - pad_ + ki) * s.w + w0 - pad_ + kj;
          if (!pads_zero) std::fill(out, out + first, T(0));
          std::copy(in, in + (last - first), out + first);
          if (!pads_zero) std::fill(out + last, out + p, T(0));
          // column by column: strided stores, not one tiny memset call per row
          for (Index j = 0; j < w0; ++j)
            for (Index oh = h0; oh < h1; ++oh) out[oh * wo_ + j] = T(0);
          for (Index j = w1; j < wo_; ++j)
            for (Index oh = h0; oh < h1; ++oh) out[oh * wo_ + j] = T(0);
          continue;
        }
        if (!pads_zero) {
          std::fill(out, out + h0 * wo_, T(0));
          std::fill(out + h1 * wo_, out + p, T(0));
        }
        for (Index oh = h0; oh < h1; ++oh) {
          T* row = out + oh * wo_;
          if (!pads_zero) {
            std::fill(row, row + w0, T(0));
            std::fill(row + w1, row + wo_, T(0));
          }
          if (w1 == w0) continue;
          const T* in = plane + (oh * s_ - pad_ + ki) * s.w + w0 * s_ - pad_ + kj;
          if (s_ == 1) std::copy(in, in + (w1 - w0), row + w0);
          else
            for (Index j = 0; j < w1 - w0; ++j) row[w0 + j] = in[j * s_];
        }
      }
    }
  }

  // ---- direct kernel (stride 1) ----

  /// The forward convolution's geometry for the direct kernel.
  detail::DirectConvShape direct_shape(Index out_channels = 0) const {
    const Shape s = this->in_.shape;
    return {s.c, s.h, s.w, pad_, k_, out_channels ? out_channels : cout_};
  }

  /// The transposed convolution's: the output cotangent padded by k-1-p gives the input's size.
  detail::DirectConvShape transposed_shape() const { return {cout_, ho_, wo_, k_ - 1 - pad_, k_, this->in_.shape.c}; }

  static T* pack(Vector<T>& buf, Index size) {
    if (buf.size() < size) buf.resize(size);
    return buf.data();
  }

  /// Calls f(g, i) for every sample i, the samples dealt to groups g as for_chunks deals them.
  template <class F>
  void for_samples(Index n, F&& f) {
    const Index groups = chunk_groups(n);
    if (static_cast<Index>(padded_.size()) < groups) padded_.resize(groups);
    this->bk_.parallel_for(groups, [&](Index g0, Index g1) {
      for (Index g = g0; g < g1; ++g)
        for (Index i = n * g / groups; i < n * (g + 1) / groups; ++i) f(g, i);
    });
  }

  /// A zero-padded copy in buf of sample i of replica r of the Channels-layout tensor t, whose
  /// planes are s.h x s.w (padded by s.pad) with s.cin columns per replica.
  static const T* pad_planes(Vector<T>& buf, const detail::DirectConvShape& s, const Matrix<T>& t, Index r, Index i) {
    T* out = pack(buf, s.template pad_size<T>());
    detail::direct_pad(s, t.data() + r * s.cin * t.rows() + i * s.h * s.w, t.rows(), out);
    return out;
  }
  /// Sample i of replica r of x (the forward convolution's input geometry) padded into group g's buffer.
  const T* pad_sample(Index g, const Matrix<T>& x, Index r, Index i) { return pad_planes(padded_[g], direct_shape(), x, r, i); }

  /// The direct kernel's weights for a JVP: W, and [V_0 ... V_R-1] (v_all_) with their biases.
  void pack_jvp(const Pass<T>& a) {
    const Index c = this->in_.shape.c;
    detail::direct_pack(a.p, c, k_, cout_, false, pack(wpack_, ckk_ * cout_));
    if (!a.v) return;
    detail::direct_pack(v_all_.data(), c, k_, a.reps * cout_, false, pack(vpack_, ckk_ * a.reps * cout_));
    T* vb = pack(vbias_, a.reps * cout_);
    for (Index r = 0; r < a.reps; ++r) std::copy(a.vr(r) + ckk_ * cout_, a.vr(r) + ckk_ * cout_ + cout_, vb + r * cout_);
  }

  /// forward_jvp_impl on the direct kernel: per sample, the padded x meets W (y) and every V_r
  /// (all directions as one convolution with R*Cout outputs), then each padded rx_r meets W.
  void forward_jvp_direct(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, Matrix<T>* y, Matrix<T>& ry) {
    const Index p = ho_ * wo_, c = this->in_.shape.c;
    pack_jvp(a);
    const bool rx_shared = rx && rx->cols() == c;
    for_samples(a.n, [&](Index g, Index i) {
      if (y || a.v) {
        const T* padded = pad_sample(g, x, 0, i);
        if (y) detail::direct_conv_sample<T>(direct_shape(), padded, wpack_.data(), a.p + ckk_ * cout_, false,
                                          y->data() + i * p, y->rows());
        if (a.v) detail::direct_conv_sample<T>(direct_shape(a.reps * cout_), padded, vpack_.data(), vbias_.data(), false,
                                            ry.data() + i * p, ry.rows());
      }
      for (Index r = 0; r < a.reps; ++r)
        jvp_rx_sample(g, i, r, rx, rx_shared, a.v != nullptr, ry.data() + r * cout_ * ry.rows() + i * p, ry.rows());
    });
  }

  /// Replica r's term conv(rx_r; W) for sample i, added to the V_r term at out (plane stride ld)
  /// when `add`; zeros when there is no rx and nothing to add to. A shared rx is padded once (r = 0).
  void jvp_rx_sample(Index g, Index i, Index r, const Matrix<T>* rx, bool rx_shared, bool add, T* out, Index ld) {
    if (rx) {
      const T* padded = (r == 0 || !rx_shared) ? pad_sample(g, *rx, rx_shared ? 0 : r, i) : padded_[g].data();
      detail::direct_conv_sample<T>(direct_shape(), padded, wpack_.data(), nullptr, add, out, ld);
    } else if (!add) {
      for (Index o = 0; o < cout_; ++o) std::fill(out + o * ld, out + o * ld + ho_ * wo_, T(0));
    }
  }

  /// The direct kernel's weights for jvp2: W (with rrx) and each 2 V_r (cross terms; the factor 2
  /// packed into the weights: exact).
  void pack_jvp2(const Pass<T>& a, bool rrx, bool cross) {
    const Index c = this->in_.shape.c, w = ckk_ * cout_;
    if (rrx) detail::direct_pack(a.p, c, k_, cout_, false, pack(wpack_, w));
    if (!cross) return;
    T* vp = pack(vpack_, a.reps * w);
    for (Index r = 0; r < a.reps; ++r) {
      detail::direct_pack(a.vr(r), c, k_, cout_, false, vp + r * w);
      VectorMap<T>(vp + r * w, w) *= T(2);
    }
  }

  /// Replica r's output planes of jvp2 for sample i at out (plane stride ld): the padded rrx_r
  /// meets W and the padded rx_r meets 2 V_r.
  void jvp2_sample(Index g, Index i, Index r, const Matrix<T>* rx, const Matrix<T>* rrx, bool cross, T* out, Index ld) {
    if (rrx)
      detail::direct_conv_sample<T>(direct_shape(), pad_sample(g, *rrx, rep_of(*rrx, r), i), wpack_.data(), nullptr,
                                    false, out, ld);
    if (cross)
      detail::direct_conv_sample<T>(direct_shape(), pad_sample(g, *rx, rep_of(*rx, r), i), vpack_.data() + r * ckk_ * cout_,
                                    nullptr, rrx != nullptr, out, ld);
  }

  /// jvp2 on the direct kernel, per sample and replica (jvp2_sample).
  void jvp2_direct(const Pass<T>& a, const Matrix<T>* rx, const Matrix<T>* rrx, bool cross, Matrix<T>& rry) {
    const Index p = ho_ * wo_;
    pack_jvp2(a, rrx != nullptr, cross);
    for_samples(a.n, [&](Index g, Index i) {
      for (Index r = 0; r < a.reps; ++r)
        jvp2_sample(g, i, r, rx, rrx, cross, rry.data() + r * cout_ * rry.rows() + i * p, rry.rows());
    });
  }

  // ---- a max-pool after the convolution (jvp_pooled, jvp2_pooled) ----

  /// Replicas per chunk of a pooled pass: one sample's output planes of a chunk (<= 256 KB) stay
  /// in L2 between the kernel and the pool's gather. A chunk is whole blocks of direct_block
  /// channels, so the kernel computes every channel as in one call over all replicas.
  Index pooled_chunk(Index reps) const {
    if (cout_ % detail::direct_block != 0) return reps;
    const Index per = cout_ * ho_ * wo_ * static_cast<Index>(sizeof(T));
    return std::clamp<Index>((Index{256} << 10) / per, 1, reps);
  }
  /// A pooled pass (`what`) needs the direct kernel and a max-pool that takes this layer's output,
  /// whose forward pass ran on the same batch (its window choices: one per output pixel).
  void check_pool(const Pass<T>& a, const Layer<T, B>& pool, const char* what) const {
    CURVATURE_CHECK_VALUE(uses_direct() && pool.is_max_pool() && pool.input_spec().shape == this->out_.shape,
                          name(), ": a ", what, " needs the direct kernel and a max-pool that takes this layer's output");
    const Shape ps = pool.output_spec().shape;
    const std::size_t want = static_cast<std::size_t>(a.n * cout_ * ps.h * ps.w);
    CURVATURE_CHECK_VALUE(pool.max_pool_choices().size() == want, name(), ": a ", what, " over ", a.n,
                          " samples needs the window choices of the max-pool's forward pass over the same batch (",
                          want, " entries), found ", pool.max_pool_choices().size());
  }
  /// The checks, the output's size and the per-group buffers of a pooled pass of `rc` replicas a chunk.
  void prepare_pooled(const Pass<T>& a, const Layer<T, B>& pool, Index rc, Matrix<T>& rz) {
    check_pool(a, pool, "pooled JVP");
    const Shape ps = pool.output_spec().shape;
    rz.resize(a.n * ps.h * ps.w, a.reps * cout_);
    const Index groups = chunk_groups(a.n);
    if (static_cast<Index>(pooled_.size()) < groups) {
      pooled_.resize(groups);
      xpad_.resize(groups);
    }
    for (Index g = 0; g < groups; ++g) pack(pooled_[g], rc * cout_ * ho_ * wo_);
  }
  /// Sample i's rows of columns [j0, j0 + cols) of the pooled tangent rz: each output pixel takes
  /// the value that the pool's forward pass chose in its window, from the planes at buf (ho*wo
  /// apart, column j0 + j's first), as MaxPool2d::jvp does.
  void pooled_out(const Layer<T, B>& pool, Index i, Index j0, Index cols, const T* buf, Matrix<T>& rz) const {
    const std::int32_t* arg = pool.max_pool_choices().data();
    const Shape ps = pool.output_spec().shape;
    const Index q = ps.h * ps.w, p = ho_ * wo_;
    for (Index j = 0; j < cols; ++j) {
      detail::gather_choices(arg + (i * cout_ + (j0 + j) % cout_) * q, q, buf + j * p,
                             rz.data() + (j0 + j) * rz.rows() + i * q);
    }
  }

  /// The pooled cotangent of backward_r_pooled, after the checks of prepare_pooled's kind.
  PooledCotangent pooled_cotangent(const Pass<T>& a, const Layer<T, B>& pool, const Matrix<T>& rdz) const {
    check_pool(a, pool, "pooled R-op");
    const Shape ps = pool.output_spec().shape;
    CURVATURE_CHECK_SHAPE(rdz.rows() == a.n * ps.h * ps.w && rdz.cols() == a.reps * cout_, name(),
                          ": the pooled R-op's cotangent is ", rdz.rows(), "x", rdz.cols(), ", expected ",
                          a.n * ps.h * ps.w, "x", a.reps * cout_);
    return {&rdz, pool.max_pool_choices().data(), ps.h * ps.w};
  }

  /// Sample i of replica r of the scatter of pc (this layer's output cotangent), zero-padded for
  /// the transposed convolution of geometry s into buf: the values that scattering it into planes
  /// (MaxPool2d's backward: zeroed planes, out[choice] += in in pixel order) and padding those give.
  const T* scatter_padded(Vector<T>& buf, const detail::DirectConvShape& s, const PooledCotangent& pc, Index r,
                          Index i) const {
    T* out = pack(buf, s.template pad_size<T>());
    std::fill(out, out + s.template pad_size<T>(), T(0));
    const Index wp = s.wp();
    for (Index o = 0; o < cout_; ++o) {
      const std::int32_t* arg = pc.choices + (i * cout_ + o) * pc.q;
      const T* in = pc.rdz->data() + (r * cout_ + o) * pc.rdz->rows() + i * pc.q;
      T* plane = out + o * s.hp() * wp + s.pad * wp + s.pad;
      for (Index k = 0; k < pc.q; ++k) plane[(arg[k] / wo_) * wp + arg[k] % wo_] += in[k];
    }
    return out;
  }

  /// Samples [i0, i0 + m) of replica r of the scatter of pc into group g's scratch: Cout columns of
  /// m*Ho*Wo values (the layout of the full-size cotangent, m samples long).
  const T* scatter_chunk(Index g, const PooledCotangent& pc, Index r, Index i0, Index m) {
    const Index p = ho_ * wo_, ld = m * p;
    T* out = pack(scattered_[g], cout_ * ld);
    for (Index o = 0; o < cout_; ++o) {
      T* col = out + o * ld;
      std::fill(col, col + ld, T(0));
      const T* src = pc.rdz->data() + (r * cout_ + o) * pc.rdz->rows();
      for (Index i = i0; i < i0 + m; ++i)
        detail::scatter_choices(pc.choices + (i * cout_ + o) * pc.q, pc.q, src + i * pc.q, col + (i - i0) * p);
    }
    return out;
  }

  /// jvp_pooled on the direct kernel: forward_jvp_direct's products (without y), a chunk of
  /// replicas at a time into group g's scratch planes, each chunk then pooled into rz. With
  /// pooled_choices_only(a.reps) the directions' terms V_r * x are computed at the pool's choices
  /// alone, after the planes of W * rx_r are pooled (pooled_direction_terms).
  void jvp_pooled_direct(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, const Layer<T, B>& pool,
                         Matrix<T>& rz) {
    const Index p = ho_ * wo_, c = this->in_.shape.c, rc = pooled_chunk(a.reps);
    prepare_pooled(a, pool, rc, rz);
    pack_jvp(a);
    const bool sparse = a.v && pooled_choices_only(a.reps, rz.rows() / a.n);
    const bool rx_shared = rx && rx->cols() == c, dense_v = a.v && !sparse;
    if (!sparse || rx)
      for_samples(a.n, [&](Index g, Index i) {
        T* buf = pooled_[g].data();
        // x padded, in its own buffer: rx_r is padded into padded_[g] between chunks
        const T* px = dense_v ? pad_planes(xpad_[g], direct_shape(), x, 0, i) : nullptr;
        for (Index r0 = 0; r0 < a.reps; r0 += rc) {
          const Index nr = std::min(rc, a.reps - r0);
          if (dense_v)
            detail::direct_conv_sample<T>(direct_shape(nr * cout_), px, vpack_.data() + r0 * cout_ * ckk_,
                                          vbias_.data() + r0 * cout_, false, buf, p);
          for (Index r = r0; r < r0 + nr; ++r)
            jvp_rx_sample(g, i, r, rx, rx_shared, dense_v, buf + (r - r0) * cout_ * p, p);
          pooled_out(pool, i, r0 * cout_, nr * cout_, buf, rz);
        }
      });
    if (sparse) pooled_direction_terms(a, x, pool, rz, rx != nullptr);
  }

  /// Whether a pooled JVP of `reps` directions computes their terms V_r * x at the pool's choices
  /// alone (pooled_direction_terms): a max-pool passes on one pixel of each window, so of the
  /// planes that the direct kernel computes in full the pool keeps q of every ho*wo values (a
  /// quarter for 2x2 windows). The patches of x at the choices are gathered once for all the
  /// directions, and that gather pays for itself only across many of them (`kMinReps`). TinyCNN
  /// B = 128, 1 thread, 100 probes in blocks of b, choices against full planes: trace b = 4 1322
  /// against 1036 ms, b = 8 1054 / 980, b = 16 905-917 / 918-949, b = 20 882 / 932; diagonal b = 4
  /// 2460 / 2117, b = 8 2070 / 2065, b = 16 1880-1925 / 2054-2101.
  bool pooled_choices_only(Index reps, Index q) const {
    constexpr Index kMinReps = 16;
    return reps >= kMinReps && 2 * q <= ho_ * wo_;
  }

  /// The directions' terms of a pooled JVP where the pool chose: rz (+)= V_r * x + b_r at the pixels
  /// of the max-pool's choices (added to rz when `add`, else written). Per chunk of samples and
  /// output channel o, the patches of x at o's choices (for_choice_chunks) meet [V_0[o] ... V_R-1[o]]
  /// in one product, whose R columns land in column o of every replica of rz.
  void pooled_direction_terms(const Pass<T>& a, const Matrix<T>& x, const Layer<T, B>& pool, Matrix<T>& rz,
                              bool add) {
    const Index rows = rz.rows(), q = rows / a.n;
    to_channels_last(v_all_, vcl_);
    for_choice_chunks(x, pool.max_pool_choices().data(), a.n, q, [&](Index, Index i0, Index mq, Index o, const T* at) {
      StridedMap out(rz.data() + o * rows + i0 * q, mq, a.reps, Eigen::OuterStride<>(cout_ * rows));
      for (Index r = 0; r < a.reps; ++r) {
        const T b = vbias_[r * cout_ + o];
        if (add) out.col(r).array() += b;
        else out.col(r).setConstant(b);
      }
      const ConstStridedMap vt(vcl_.data() + o * ckk_, ckk_, a.reps, Eigen::OuterStride<>(cout_ * ckk_));
      Serial{}.gemm(out, ConstRowMajorMap(at, mq, ckk_), vt, T(1), true);
    });
  }

  /// The pooled term of a summed R-op's weight gradient where the pool chose: the patches of x at
  /// the choices of output channel o (for_choice_chunks) meet column o of every replica of the pooled
  /// cotangent in one product, added to group g's partials (param_grad_sum), rows permuted back
  /// from the channels-last patch order; the biases take the cotangent's sums.
  void pooled_weight_terms(const Matrix<T>& x, const PooledCotangent& pc, Index n, Index reps) {
    const Index rows = pc.rdz->rows();
    for_choice_chunks(x, pc.choices, n, pc.q, [&](Index g, Index i0, Index mq, Index o, const T* at) {
      const ConstStridedMap rd(pc.rdz->data() + o * rows + i0 * pc.q, mq, reps, Eigen::OuterStride<>(cout_ * rows));
      Matrix<T>& gw = wcl_[g];
      gw.resize(ckk_, reps);
      Serial{}.gemm(gw, ConstRowMajorMap(at, mq, ckk_).transpose(), rd, T(1), false);
      const Index c = this->in_.shape.c, kk = k_ * k_;
      for (Index r = 0; r < reps; ++r) {
        T* col = part_[g].data() + (r * cout_ + o) * ckk_;
        for (Index ci = 0; ci < c; ++ci)
          for (Index t = 0; t < kk; ++t) col[ci * kk + t] += gw(t * c + ci, r);
        part_b_[g](o, r) += rd.col(r).sum();
      }
    });
  }

  /// out = w ([C*k*k, cols], rows in the order (c, ki, kj)) with its rows in the channels-last
  /// patch order (ki, kj, c) of for_choice_chunks.
  void to_channels_last(const Matrix<T>& w, Matrix<T>& out) const {
    const Index c = this->in_.shape.c, kk = k_ * k_;
    out.resize(ckk_, w.cols());
    for (Index ci = 0; ci < c; ++ci)
      for (Index t = 0; t < kk; ++t) out.row(t * c + ci) = w.row(ci * kk + t);
  }

  /// Calls f(g, i0, m*q, o, rows) for every chunk [i0, i0 + m) of the n samples and output channel
  /// o, where rows [m*q, C*k*k] (row-major) are the patches of x at the pixels that the max-pool
  /// chose in plane o (choices: q per plane) of each sample: the samples are laid out channels-last
  /// and zero-padded, so that a patch is k runs of k*C contiguous values, in the order (ki, kj, c).
  /// Chunks of ~1 MB of rows (so that a product's other side is packed for many rows), dealt to
  /// chunk_groups(n) groups in order: no dependence on the thread count.
  template <class F>
  void for_choice_chunks(const Matrix<T>& x, const std::int32_t* choices, Index n, Index q, F&& f) {
    const Shape in = this->in_.shape;
    const Index c = in.c, wp = in.w + 2 * pad_, run = k_ * c, sample = (in.h + 2 * pad_) * wp * c;
    const Index per = std::clamp<Index>((Index{1} << 20) / (q * ckk_ * static_cast<Index>(sizeof(T))), 1, n);
    const Index chunks = (n + per - 1) / per, groups = chunk_groups(n);
    for (auto* bufs : {&gathered_, &xpad_})
      if (static_cast<Index>(bufs->size()) < groups) bufs->resize(groups);
    if (static_cast<Index>(wcl_.size()) < groups) wcl_.resize(groups);
    this->bk_.parallel_for(groups, [&](Index g0, Index g1) {
      for (Index g = g0; g < g1; ++g)
        for (Index ch = chunks * g / groups; ch < chunks * (g + 1) / groups; ++ch) {
          const Index i0 = ch * per, m = std::min(per, n - i0);
          T* xcl = pack(xpad_[g], m * sample);
          std::fill(xcl, xcl + m * sample, T(0));
          for (Index i = 0; i < m; ++i)
            for (Index ci = 0; ci < c; ++ci) {
              const T* plane = x.data() + ci * x.rows() + (i0 + i) * in.h * in.w;
              for (Index h = 0; h < in.h; ++h) {
                T* dst = xcl + i * sample + ((h + pad_) * wp + pad_) * c + ci;
                for (Index w = 0; w < in.w; ++w) dst[w * c] = plane[h * in.w + w];
              }
            }
          T* buf = pack(gathered_[g], m * q * ckk_);
          for (Index o = 0; o < cout_; ++o) {
            T* row = buf;
            for (Index i = 0; i < m; ++i) {
              const std::int32_t* arg = choices + ((i0 + i) * cout_ + o) * q;
              for (Index k = 0; k < q; ++k, row += ckk_) {
                const T* at = xcl + i * sample + ((arg[k] / wo_) * wp + arg[k] % wo_) * c;
                for (Index ki = 0; ki < k_; ++ki) std::copy(at + ki * wp * c, at + ki * wp * c + run, row + ki * run);
              }
            }
            f(g, i0, m * q, o, static_cast<const T*>(buf));
          }
        }
    });
  }

  /// jvp2_pooled on the direct kernel: jvp2_sample a chunk of replicas at a time, each chunk
  /// then pooled into rrz.
  void jvp2_pooled_direct(const Pass<T>& a, const Matrix<T>* rx, const Matrix<T>* rrx, bool cross,
                          const Layer<T, B>& pool, Matrix<T>& rrz) {
    const Index p = ho_ * wo_, rc = pooled_chunk(a.reps);
    prepare_pooled(a, pool, rc, rrz);
    pack_jvp2(a, rrx != nullptr, cross);
    for_samples(a.n, [&](Index g, Index i) {
      T* buf = pooled_[g].data();
      for (Index r0 = 0; r0 < a.reps; r0 += rc) {
        const Index nr = std::min(rc, a.reps - r0);
        for (Index r = r0; r < r0 + nr; ++r) jvp2_sample(g, i, r, rx, rrx, cross, buf + (r - r0) * cout_ * p, p);
        pooled_out(pool, i, r0 * cout_, nr * cout_, buf, rrz);
      }
    });
  }

  /// input_grad on the direct kernel: each term's replica of dy, padded by k-1-p, convolved with
  /// its flipped, channel-swapped weights, the terms summed in place.
  void input_grad_direct(Matrix<T>& dx, Index r, Index n, std::initializer_list<InputTerm> terms) {
    const Index c = this->in_.shape.c, hw = this->in_.shape.h * this->in_.shape.w;
    const detail::DirectConvShape sd = transposed_shape();
    if (tpack_.size() < terms.size()) tpack_.resize(terms.size());
    Index t = 0;
    for (const InputTerm& term : terms) detail::direct_pack(term.w, c, k_, cout_, true, pack(tpack_[t++], ckk_ * cout_));
    T* out = dx.data() + r * c * dx.rows();
    for_samples(n, [&](Index g, Index i) {
      Index j = 0;
      for (const InputTerm& term : terms) {
        const T* padded = term.pooled ? scatter_padded(padded_[g], sd, *term.pooled, r, i)
                                      : pad_planes(padded_[g], sd, *term.dy, term.dy->cols() == cout_ ? 0 : r, i);
        detail::direct_conv_sample<T>(sd, padded, tpack_[j].data(), nullptr, j > 0, out + i * hw, dx.rows());
        ++j;
      }
    });
  }

  /// Replica r of dx = col2im(sum_t dy_t W_t), the transposed convolution. The batch is processed
  /// in chunks of samples whose dcols (~1 MB) stay in cache between the product and the scatter.
  void input_grad(Matrix<T>& dx, Index r, Index n, std::initializer_list<InputTerm> terms) {
    if (uses_direct()) return input_grad_direct(dx, r, n, terms);
    const Index p = ho_ * wo_;
    const Index nb = std::clamp<Index>((Index{1} << 20) / static_cast<Index>(sizeof(T) * p * ckk_), 1, n);
    if (dcols_.size() < nb * p * ckk_) dcols_.resize(nb * p * ckk_);
    auto out = dx.middleCols(r * this->in_.shape.c, this->in_.shape.c);
    for (Index i0 = 0; i0 < n; i0 += nb) {
      const Index m = std::min(nb, n - i0);
      MatrixMap<T> dc(dcols_.data(), m * p, ckk_);
      bool first = true;
      for (const InputTerm& t : terms) {
        this->bk_.gemm(dc, replica(*t.dy, r, cout_).middleRows(i0 * p, m * p), weight_t(t.w).transpose(), T(1), !first);
        first = false;
      }
      col2im(dc.data(), m, i0, out);
    }
  }

  /// Samples [i0, i0 + m) of dx = the scatter-add of dcols; one input channel per task (no races).
  template <class Out>
  void col2im(const T* dc, Index m, Index i0, Out& out) const {
    const Shape s = this->in_.shape;
    const Index p = ho_ * wo_, hw = s.h * s.w;
    this->bk_.parallel_for(s.c, [&](Index c0, Index c1) {
      for (Index c = c0; c < c1; ++c) {
        T* plane0 = out.col(c).data() + i0 * hw;
        std::fill(plane0, plane0 + m * hw, T(0));
        for (Index q = c * k_ * k_; q < (c + 1) * k_ * k_; ++q) {
          const Index ki = (q / k_) % k_, kj = q % k_;
          const auto [h0, h1] = valid(ki, s.h, ho_);
          const auto [w0, w1] = valid(kj, s.w, wo_);
          if (w1 == w0) continue;
          for (Index i = 0; i < m; ++i)
            for (Index oh = h0; oh < h1; ++oh) {
              T* row = plane0 + i * hw + (oh * s_ - pad_ + ki) * s.w + w0 * s_ - pad_ + kj;
              const T* in = dc + q * m * p + i * p + oh * wo_ + w0;
              if (s_ == 1)
                for (Index j = 0; j < w1 - w0; ++j) row[j] += in[j];
              else
                for (Index j = 0; j < w1 - w0; ++j) row[j * s_] += in[j];
            }
        }
      }
    });
  }

  Index cout_, k_, s_, pad_;
  ConvAlgorithm algo_ = ConvAlgorithm::Auto;
  Index ho_ = 0, wo_ = 0, ckk_ = 0;
  std::vector<Vector<T>> padded_;    // per group: one sample's zero-padded planes (direct kernel)
  std::vector<Vector<T>> pooled_;    // per group: one sample's output planes of a chunk of a pooled JVP
  std::vector<Vector<T>> xpad_;      // per group: one sample's zero-padded x in a pooled JVP (a chunk's, channels-last, in for_choice_chunks)
  std::vector<Vector<T>> gathered_;  // per group: a chunk's patches at a max-pool's choices (for_choice_chunks)
  std::vector<Matrix<T>> wcl_;       // per group: one channel's pooled weight-gradient term (pooled_weight_terms)
  Matrix<T> vcl_;                    // v_all_ with rows in the channels-last patch order (pooled_direction_terms)
  std::vector<Vector<T>> scattered_;  // per group: a chunk of a pooled cotangent scattered (backward_r_pooled)
  Vector<T> wpack_, vpack_, vbias_;  // W, [V_0 ... V_R-1] and their biases packed for the direct kernel
  std::vector<Vector<T>> tpack_;     // per input-gradient term: flipped weights of the transposed conv
  Matrix<T> cols_, rcols_;        // im2col of the last input and of its tangents
  Vector<T> dcols_;               // one chunk of dy W for the input gradient
  std::vector<Vector<T>> scratch_;  // per group of chunks: one chunk's im2col rows
  std::vector<Index> pads_of_;      // per group: the chunk size its scratch's zero padding is for
  std::vector<Matrix<T>> part_;     // per group of chunks: partial weight gradients [CKK, R*Cout]
  std::vector<Matrix<T>> part_b_;   // and bias gradients [Cout, R]
  Matrix<T> v_all_;                 // the weights of all tangent directions, [CKK, R*Cout]
  const T* cols_of_ = nullptr;    // which input cols_ belongs to
  const T* rcols_of_ = nullptr;   // which tangent rcols_ belongs to
};

}  // namespace curvature::nn
