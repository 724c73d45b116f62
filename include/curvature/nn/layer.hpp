#pragma once
// The layer interface of the built-in autodiff. Differentiation is layer-level: every layer has
// batched rules for forward, JVP, backward (VJP) and the R-op of the backward pass, each written
// as a few dense products over the whole batch.
//
// Tensors are column-major matrices. Two layouts:
//  - Features: [C*H*W, N], one column per sample (NCHW row-major per sample).
//  - Channels: [N*H*W, C], one column per channel (CNHW), so a convolution over the whole batch
//    is one product.
// A tensor that carries R "replicas" (R tangent directions, or R factor columns per sample) holds
// them as R consecutive column blocks, each shaped like the plain tensor.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "curvature/backend/backend.hpp"
#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"

namespace curvature::nn {

using curvature::Reduction;

enum class Layout { Features, Channels };

/// Per-sample shape C x H x W (vectors have h = w = 1).
struct Shape {
  Index c = 1, h = 1, w = 1;
  Index size() const { return c * h * w; }
  bool operator==(const Shape&) const = default;
  std::string str() const { return curvature::detail::cat(c, "x", h, "x", w); }
};

struct TensorSpec {
  Shape shape;
  Layout layout = Layout::Features;
  /// Rows and columns of the matrix that holds n samples (one replica).
  Index rows(Index n) const { return layout == Layout::Features ? shape.size() : n * shape.h * shape.w; }
  Index cols(Index n) const { return layout == Layout::Features ? n : shape.c; }
};

/// Where a layer writes its parameter contributions: `out` points at the layer's first row of a
/// column-major d x ncols matrix with leading dimension `ld`; values are multiplied by `scale`
/// and added, or, when `assign` is set, the layer's rows hold garbage and its first contribution
/// to each entry assigns (set only for a layer whose assigns_sink(mode) is true; PerColumn
/// contributions always assign, each layer owning its rows of every column).
template <class T>
struct Sink {
  Reduction mode = Reduction::Sum;
  T* out = nullptr;
  Index ld = 0;
  T scale = T(1);
  bool assign = false;
  T* col(Index j) const { return out + j * ld; }
};

namespace detail {
/// dst += value, or dst = value when `assign` (a Sink's first write).
template <class V, class E>
void add_or_assign(V&& dst, const E& value, bool assign) {
  if (assign) dst = value;
  else dst += value;
}

/// A max-pool's map of one plane through its window choices (Layer::max_pool_choices, q output
/// pixels): out[o] = in[choice[o]] ...
template <class T>
void gather_choices(const std::int32_t* choice, Index q, const T* in, T* out) {
  for (Index o = 0; o < q; ++o) out[o] = in[choice[o]];
}
/// ... and its transpose, added in pixel order into out (zeroed by the caller).
template <class T>
void scatter_choices(const std::int32_t* choice, Index q, const T* in, T* out) {
  for (Index o = 0; o < q; ++o) out[choice[o]] += in[o];
}
}  // namespace detail

/// Arguments shared by one layer call.
template <class T>
struct Pass {
  const T* p = nullptr;  ///< the layer's parameters
  const T* v = nullptr;  ///< the layer's block of tangent direction 0 (null: no direction)
  Index v_ld = 0;        ///< distance between directions in v
  Index n = 0;           ///< samples
  Index reps = 1;        ///< replicas in tangents / cotangents
  bool train = false;    ///< training mode (BatchNorm)
  const T* vr(Index r) const { return v + r * v_ld; }
};

/// Replica r of tensor m whose plain (one-replica) form has `cols` columns. A tensor with a single
/// replica is shared by all r (broadcast).
template <class M>
auto replica(M& m, Index r, Index cols) {
  return m.middleCols(m.cols() == cols ? 0 : r * cols, cols);
}

/// A layer of the built-in autodiff, for scalar T and backend B.
template <Scalar T, class B>
class Layer {
 public:
  virtual ~Layer() = default;

  /// PyTorch-like description, e.g. "linear(256)".
  virtual std::string name() const = 0;
  /// Layout the layer needs its input in, or none when any layout works.
  virtual std::optional<Layout> required_layout() const { return std::nullopt; }
  /// Checks the input spec (throws ShapeError naming the layer) and returns the output spec.
  virtual TensorSpec bind(const TensorSpec& in) = 0;
  virtual Index num_params() const { return 0; }
  /// PyTorch's default initialisation, drawn from rng.
  virtual void init(T* /*p*/, Rng& /*rng*/) const {}
  /// True when samples are coupled (BatchNorm in training mode): no per-sample quantities.
  virtual bool couples_samples(bool /*train*/) const { return false; }
  /// True when the output is piecewise linear in the input and affine in each single parameter of
  /// the layer (Linear, Conv2d, ReLU, LeakyReLU, pooling, layout changes, BatchNorm in eval mode).
  /// A network of such layers has d^2 f / d theta_j^2 = 0 almost everywhere, so the diagonal of its
  /// Hessian equals the diagonal of its GGN exactly (curvature::hessian_diagonal).
  virtual bool piecewise_linear(bool /*train*/) const { return false; }
  /// True for an elementwise s that commutes with a window maximum bit for bit, derivatives
  /// included: max_j s(x_j) = s(max_j x_j), and wherever s merges inputs that the maximum would
  /// tell apart, s' is zero (ReLU: s = 0, s' = 0 for x <= 0). Sequential runs a max-pool that
  /// follows such a layer first, so s touches a k x k times smaller tensor.
  virtual bool commutes_with_max() const { return false; }
  /// True for max pooling (see commutes_with_max).
  virtual bool is_max_pool() const { return false; }
  /// True when backward and backward_r, given a sink of this mode with Sink::assign set, write
  /// every one of the layer's entries, the first write assigning. Sequential then leaves those rows
  /// of its output unzeroed (21.5 MB for a block of 20 HVPs of the MNIST MLP); a BLAS product
  /// assigns with beta = 0, while Eigen's zeroes its slice of C just before it (its kernel only
  /// adds), where the data is about to be read anyway.
  virtual bool assigns_sink(Reduction /*mode*/) const { return false; }
  /// True when the layer's JVP and R-op do work once per call that all the directions of a block
  /// share (Conv2d: the patches or padded planes of x meet every direction's weights in one
  /// product). Sequential then keeps a block of directions whole rather than running it in
  /// replica groups, which would repeat that work once per group.
  virtual bool shares_across_directions() const { return false; }
  /// For a max-pool: the window choice of each output pixel in the last forward pass, plane by
  /// plane (plane i * C + c for sample i and channel c, Ho*Wo entries, each an index into the
  /// input plane), N*C*Ho*Wo entries for that pass's N samples; empty for other layers.
  virtual std::span<const std::int32_t> max_pool_choices() const { return {}; }
  /// True when jvp_pooled and jvp2_pooled work (Conv2d on its direct kernel). Sequential then
  /// runs this layer's JVPs together with a max-pool that follows it.
  virtual bool pools_jvp() const { return false; }
  /// jvp of this layer, then jvp of the max-pool `pool` that takes its output (whose forward pass
  /// has run): rz = the pool's output tangent, the two calls' values (to rounding), without the
  /// full-size tangent of this layer's output (the next layers never read it: the pool's R-op
  /// and this layer's ignore their output tangents). Only when pools_jvp().
  virtual void jvp_pooled(const Pass<T>& /*a*/, const Matrix<T>& /*x*/, const Matrix<T>* /*rx*/,
                          const Layer& /*pool*/, Matrix<T>& /*rz*/) {
    throw UnsupportedError(name() + ": no pooled JVP");
  }
  /// jvp2 of this layer, then the pool's, in the same way; returns false (rrz untouched) when the
  /// result is zero.
  virtual bool jvp2_pooled(const Pass<T>& /*a*/, const Matrix<T>& /*x*/, const Matrix<T>* /*rx*/,
                           const Matrix<T>* /*rrx*/, const Layer& /*pool*/, Matrix<T>& /*rrz*/) {
    throw UnsupportedError(name() + ": no pooled second-order JVP");
  }
  /// True when backward_r_pooled works for a sink of this mode (Conv2d on its direct kernel with a
  /// summed sink). Sequential then runs the R-op of a max-pool that follows together with this
  /// layer's.
  virtual bool pools_rop(Reduction /*mode*/) const { return false; }
  /// backward_r of the max-pool `pool` that takes this layer's output (whose forward pass has run),
  /// then this layer's: rdz is the R-derivative of the pool's output cotangent (a.reps replicas),
  /// dy the cotangent of this layer's output (one replica), rdx and sink as for backward_r. The
  /// two calls' values (to rounding), without the full-size R-derivative of this layer's output
  /// cotangent. Only when pools_rop(sink mode).
  virtual void backward_r_pooled(const Pass<T>& /*a*/, const Matrix<T>& /*x*/, const Matrix<T>* /*rx*/,
                                 const Matrix<T>& /*dy*/, const Matrix<T>& /*rdz*/, const Layer& /*pool*/,
                                 Matrix<T>* /*rdx*/, const Sink<T>* /*sink*/) {
    throw UnsupportedError(name() + ": no pooled R-op");
  }
  /// A new, unbound layer with this one's settings and buffers (BatchNorm's running statistics)
  /// but none of its per-call caches, or null when the layer cannot be copied. Sequential runs a
  /// large batch as shards, each through its own copies of the layers (see Sequential's "Batch
  /// shards"); a model with a layer that returns null runs whole batches.
  virtual std::unique_ptr<Layer> clone() const { return nullptr; }

  /// y = f(x).
  virtual void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) = 0;
  /// ry = J_x rx + J_theta v, for reps directions. rx == nullptr means rx = 0. Called only when
  /// rx is non-null or the layer has parameters.
  virtual void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>* rx,
                   Matrix<T>& ry) = 0;
  /// forward, then jvp along the pass's directions: y = f(x) and ry = J_x rx + J_theta v. Layers
  /// override it to share work between the two (Conv2d builds the patches of x once).
  virtual void forward_jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx, Matrix<T>& y, Matrix<T>& ry) {
    Pass<T> f = a;
    f.v = nullptr;
    f.reps = 1;
    forward(f, x, y);
    jvp(a, x, y, rx, ry);
  }
  /// dx = J_x^T dy (when dx is non-null) and the parameter contributions J_theta^T dy into sink
  /// (when non-null); dy has a.reps replicas.
  virtual void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>& dy,
                        Matrix<T>* dx, const Sink<T>* sink) = 0;
  /// R-op of backward along the directions: given dy (one replica), its R-derivative rdy
  /// (a.reps replicas) and the forward tangents rx, ry (null means zero), computes rdx and the
  /// R-derivative of the parameter gradient into sink.
  virtual void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>& y, const Matrix<T>* rx,
                          const Matrix<T>* ry, const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx,
                          const Sink<T>* sink) = 0;
  /// Whether the layer implements jvp2 (second-order forward mode).
  virtual bool has_jvp2() const { return false; }
  /// Second-order forward (Taylor) mode along theta + t v, for a.reps directions: given the first
  /// and second t-derivatives rx, rrx of the input (null means zero), sets rry to the second
  /// t-derivative of the output,
  ///   rry = J_x rrx + D2_xx[rx, rx] + 2 D2_x,theta[rx, v] + D2_theta,theta[v, v],
  /// and returns true, or returns false (rry untouched) when it is zero. Called after jvp with the
  /// same pass, x, y and rx (layers may reuse what jvp computed for rx, as backward_r does).
  virtual bool jvp2(const Pass<T>& /*a*/, const Matrix<T>& /*x*/, const Matrix<T>& /*y*/, const Matrix<T>* /*rx*/,
                    const Matrix<T>* /*rrx*/, Matrix<T>& /*rry*/) {
    throw UnsupportedError(name() + ": no second-order forward mode (jvp2)");
  }

  /// The backend the layer runs its loops and products on (set by Sequential; a block of layers
  /// passes it on to its inner layers).
  virtual void set_backend(const B& b) { bk_ = b; }
  const TensorSpec& input_spec() const { return in_; }
  const TensorSpec& output_spec() const { return out_; }

 protected:
  TensorSpec in_{}, out_{};
  B bk_{};
};

}  // namespace curvature::nn
