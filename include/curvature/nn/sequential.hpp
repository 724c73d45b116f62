#pragma once
// Sequential composition of layers with one flat parameter vector (PyTorch parameters_to_vector
// layout: layer by layer, each layer's parameters in PyTorch's order).
//
// All differentiation entry points are stateless for the caller: each runs its own forward pass
// and receives what it needs of the loss through a callback, so a whole gradient, HVP block or
// Fisher diagonal is one call with one forward pass.
#include <algorithm>
#include <atomic>
#include <concepts>
#include <memory>
#include <string>
#include <vector>

#include "curvature/core/allocator.hpp"
#include "curvature/nn/layer.hpp"
#include "curvature/nn/reshape.hpp"

namespace curvature::nn {

template <Scalar T, class B = DefaultBackend>
class Sequential {
 public:
  using scalar_type = T;
  using backend_type = B;
  using LayerPtr = std::unique_ptr<Layer<T, B>>;

  explicit Sequential(Shape input, B backend = B{}) : in_{input, Layout::Features}, bk_(backend) {
    curvature::detail::tune_allocator_once();
    CURVATURE_CHECK_VALUE(input.size() > 0, "Sequential: empty input shape ", input.str());
  }
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  /// Appends a layer (by value); a layout change is inserted first when the layer needs one.
  /// A max-pool added right after an activation that commutes with it (ReLU:
  /// Layer::commutes_with_max) runs before that activation: pool(relu(x)) = relu(pool(x)) with
  /// the same window choices and derivatives, bit for bit, and the activation then touches k x k
  /// times fewer values in every pass. layer(l) follows this execution order; describe() keeps
  /// the order of the calls to add().
  template <class L>
    requires std::derived_from<L, Layer<T, B>>
  Sequential& add(L layer) {
    return add(LayerPtr(std::make_unique<L>(std::move(layer))));
  }
  /// A layer that does not fit (ShapeError from its bind) leaves the model as it was.
  Sequential& add(LayerPtr layer) {
    std::string name = layer->name();
    LayerPtr act;
    if (layer->is_max_pool() && !layers_.empty() && layers_.back()->commutes_with_max()) {
      act = std::move(layers_.back());
      layers_.pop_back();
      offsets_.pop_back();
    }
    const std::size_t kept = layers_.size();
    try {
      if (auto req = layer->required_layout(); req && *req != spec().layout)
        push(std::make_unique<Relayout<T, B>>(*req));
      push(std::move(layer));
    } catch (...) {  // drop a layout change pushed for it; put the activation back as it was
      layers_.resize(kept);
      offsets_.resize(kept);
      if (act) offsets_.push_back(num_params()), layers_.push_back(std::move(act));
      throw;
    }
    if (act) push(std::move(act));
    names_.push_back(std::move(name));
    return *this;
  }

  Index num_params() const { return params_.size(); }
  Index input_size() const { return in_.shape.size(); }
  Shape input_shape() const { return in_.shape; }
  Index output_size() const { return spec().shape.size(); }
  const B& backend() const { return bk_; }
  Index num_layers() const { return static_cast<Index>(layers_.size()); }
  const Layer<T, B>& layer(Index l) const { return *layers_[l]; }
  /// Writable access to a layer (per-layer statistics such as K-FAC's need the layer's caches).
  Layer<T, B>& mutable_layer(Index l) { return *layers_[l]; }
  /// After forward/backward on x: the input layer l saw (x itself for l = 0).
  const Matrix<T>& layer_input(Index l, const Matrix<T>& x) const {
    CURVATURE_CHECK_VALUE(l >= 0 && l < num_layers() && acts_.size() == layers_.size(),
                          "Sequential::layer_input: layer ", l, " of ", num_layers(), " (run a pass first)");
    return input(l, x);
  }
  /// After backward(): the cotangent of layer l's output (rows as the layer's output, R*N columns
  /// for R replicas), for every layer from the first one with parameters.
  const Matrix<T>& output_cotangent(Index l) const {
    CURVATURE_CHECK_VALUE(l >= first_param_layer() && l < num_layers() && dys_.size() == layers_.size(),
                          "Sequential::output_cotangent: layer ", l, " has no cotangent (run backward first)");
    return dys_[l];
  }
  Index param_offset(Index l) const { return offsets_[l]; }

  const Vector<T>& params() const { return params_; }
  /// Writable parameters; a write takes effect at the next call.
  Vector<T>& mutable_params() { return params_; }
  void set_params(const Vector<T>& p) {
    CURVATURE_CHECK_SHAPE(p.size() == num_params(), "Sequential::set_params: got ", p.size(),
                          " values but the model has ", num_params(), " parameters");
    params_ = p;
  }
  /// PyTorch's default initialisation of every layer, from `seed`.
  void init(std::uint64_t seed) {
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      Rng rng(seed, l);
      layers_[l]->init(params_.data() + offsets_[l], rng);
    }
  }
  void set_training(bool train) { train_ = train; }
  bool training() const { return train_; }
  /// True when some layer couples samples in the current mode (no per-sample quantities).
  bool couples_samples() const {
    return std::any_of(layers_.begin(), layers_.end(), [&](const LayerPtr& l) { return l->couples_samples(train_); });
  }
  /// The first layer (in the current mode) that is not piecewise linear in its input and affine in
  /// each parameter (Layer::piecewise_linear), or "" when there is none.
  std::string curved_layer() const {
    for (const auto& l : layers_)
      if (!l->piecewise_linear(train_)) return l->name();
    return "";
  }
  /// True when every layer is piecewise linear (Layer::piecewise_linear): then diag(H) = diag(GGN).
  bool piecewise_linear() const { return curved_layer().empty(); }
  /// The architecture in curvature-probe's --arch syntax.
  std::string describe() const {
    std::string s;
    for (const auto& name : names_) {
      if (!s.empty()) s += ',';
      s += name;
    }
    return s;
  }

  /// Outputs f(x_i) as a K x N matrix for inputs X (D x N, one sample per column).
  Matrix<T> forward(const Matrix<T>& x) {
    run_forward(x);
    return acts_.back();
  }

  /// sum_i J_i^T dF_i (the base Model concept's vector-Jacobian product).
  Vector<T> vjp(const Matrix<T>& x, const Matrix<T>& df) {
    Vector<T> out;
    backward(x, [&](const Matrix<T>&) { return df; }, Reduction::Sum, out, T(1));
    return out;
  }

  /// One forward pass, then the backward pass of the cotangents `out_fn(F)` (K x R*N: R replicas
  /// of N samples), reduced into `out` (d x ncols, overwritten) as `mode` says, times `scale`.
  template <class OutFn, class Out>
    requires std::same_as<Out, Matrix<T>> || std::same_as<Out, Vector<T>>
  void backward(const Matrix<T>& x, OutFn&& out_fn, Reduction mode, Out& out, T scale) {
    run_forward(x);
    const Index n = x.cols();
    const Index last = num_layers() - 1, first = first_param_layer();
    dys_.resize(layers_.size());
    dys_[last] = out_fn(acts_.back());
    const Matrix<T>& df = dys_[last];
    CURVATURE_CHECK_SHAPE(df.rows() == output_size() && df.cols() % n == 0 && df.cols() > 0,
                          "Sequential::backward: cotangent is ", df.rows(), "x", df.cols(), ", expected ",
                          output_size(), "x(R*", n, ")");
    const Index reps = df.cols() / n;
    prepare_out(mode, n, reps, out);
    // The cotangent of each layer's output lives in its own buffer, kept between calls: the sizes
    // repeat from call to call, so the large ones (conv activations times replicas) are allocated
    // and page-faulted once, not on every pass.
    for (Index l = last; l >= first; --l) {
      const Pass<T> a = pass(l, n, reps, nullptr, 0);
      Sink<T> s;
      layers_[l]->backward(a, input(l, x), acts_[l], dys_[l], l > first ? &dys_[l - 1] : nullptr,
                           sink(l, mode, out, scale, s));
    }
  }

  /// Forward-mode product: J V for the d x m block V, as K x (m*N) (replica r = J v_r).
  Matrix<T> jvp(const Matrix<T>& x, const Matrix<T>& v) {
    run_forward_jvp(x, v);
    if (!active_.back()) return Matrix<T>::Zero(output_size(), v.cols() * x.cols());
    return racts_.back();
  }

  /// Exact second-order pass (Pearlmutter's R-op): forward, JVP along the d x m block V, then
  /// `rop(F, RF, dF, RdF)` fills the output cotangent dF (K x N) and its R-derivative RdF
  /// (K x m*N), and the R-op of the backward pass is reduced into `out` (PerReplica: H v_r for a
  /// mean loss; PerColumn with unscaled per-sample dF: H_i v_r).
  template <class Rop>
  void hvp(const Matrix<T>& x, const Matrix<T>& v, Rop&& rop, Reduction mode, Matrix<T>& out, T scale) {
    run_forward_jvp(x, v);
    const Index n = x.cols(), m = v.cols();
    const Index last = num_layers() - 1, first = first_param_layer();
    prepare_out(mode, n, m, out);
    if (first > last) return;
    if (!active_.back()) rf_.setZero(output_size(), m * n);
    dys_.resize(layers_.size());
    rdys_.resize(layers_.size());
    rop(acts_.back(), active_.back() ? racts_.back() : rf_, dys_[last], rdys_[last]);
    for (Index l = last; l >= first; --l) {
      const bool need_dx = l > first;
      const Matrix<T>* rx = (l > 0 && active_[l - 1]) ? &racts_[l - 1] : nullptr;
      Sink<T> s;
      layers_[l]->backward_r(pass(l, n, m, v.data(), v.rows()), input(l, x), acts_[l], rx,
                             active_[l] ? &racts_[l] : nullptr, dys_[l], rdys_[l],
                             need_dx ? &rdys_[l - 1] : nullptr, sink(l, mode, out, scale, s));
      if (!need_dx) break;
      layers_[l]->backward(pass(l, n, 1, nullptr, 0), input(l, x), acts_[l], dys_[l], &dys_[l - 1], nullptr);
    }
  }

  /// True when every layer has a second-order forward mode (jvp2), so jet2 works.
  bool supports_jet2() const {
    return std::all_of(layers_.begin(), layers_.end(), [](const LayerPtr& l) { return l->has_jvp2(); });
  }

  /// Second-order forward (Taylor) mode along the curves theta + t v_r for the columns of the d x m
  /// block V: one forward pass, the JVP, then the second t-derivatives layer by layer; calls
  /// `fn(F, RF, RRF)` with the outputs F (K x N), their first and second t-derivatives (K x m*N,
  /// replica r for v_r). With the loss, d^2/dt^2 ell(f_i) = RF' Lambda_i RF + grad ell_i' RRF is
  /// v_r' H_i v_r without a backward pass (about half the products of an HVP on the MLP).
  /// Throws UnsupportedError unless supports_jet2().
  template <class Fn>
  void jet2(const Matrix<T>& x, const Matrix<T>& v, Fn&& fn) {
    if (!supports_jet2()) {
      for (const auto& l : layers_)
        if (!l->has_jvp2())
          throw UnsupportedError("Sequential::jet2: layer " + l->name() + " has no second-order forward mode");
    }
    run_forward_jvp(x, v);
    const Index n = x.cols(), m = v.cols();
    rracts_.resize(layers_.size());
    std::vector<bool> on(layers_.size(), false);
    for (Index l = 0; l < num_layers(); ++l) {
      const Matrix<T>* rx = (l > 0 && active_[l - 1]) ? &racts_[l - 1] : nullptr;
      const Matrix<T>* rrx = (l > 0 && on[l - 1]) ? &rracts_[l - 1] : nullptr;
      if (!rx && !rrx && layers_[l]->num_params() == 0) continue;
      on[l] = layers_[l]->jvp2(pass(l, n, m, v.data(), v.rows()), input(l, x), acts_[l], rx, rrx, rracts_[l]);
    }
    if (!active_.back()) rf_.setZero(output_size(), m * n);
    if (!on.back()) rrf_.setZero(output_size(), m * n);
    fn(acts_.back(), active_.back() ? racts_.back() : rf_, on.back() ? rracts_.back() : rrf_);
  }

 private:
  TensorSpec spec() const { return layers_.empty() ? in_ : layers_.back()->output_spec(); }

  void push(LayerPtr layer) {
    layer->set_backend(bk_);
    const TensorSpec next = layer->bind(spec());
    (void)next;
    offsets_.push_back(num_params());
    const Index old = num_params();
    params_.conservativeResize(old + layer->num_params());
    Rng rng(0, layers_.size());
    layer->init(params_.data() + old, rng);
    layers_.push_back(std::move(layer));
  }

  Index first_param_layer() const {
    for (Index l = 0; l < num_layers(); ++l)
      if (layers_[l]->num_params() > 0) return l;
    return num_layers();
  }

  const Matrix<T>& input(Index l, const Matrix<T>& x) const { return l == 0 ? x : acts_[l - 1]; }

  Pass<T> pass(Index l, Index n, Index reps, const T* v, Index v_ld) const {
    return Pass<T>{params_.data() + offsets_[l], v ? v + offsets_[l] : nullptr, v_ld, n, reps, train_};
  }

  void run_forward(const Matrix<T>& x) {
    check_input(x);
    acts_.resize(layers_.size());
    for (Index l = 0; l < num_layers(); ++l) layers_[l]->forward(pass(l, x.cols(), 1, nullptr, 0), input(l, x), acts_[l]);
  }

  void check_input(const Matrix<T>& x) {
    CURVATURE_CHECK_SHAPE(!layers_.empty(), "Sequential: the model has no layers");
    if (spec().layout != Layout::Features) push(std::make_unique<Relayout<T, B>>(Layout::Features));
    CURVATURE_CHECK_SHAPE(x.rows() == input_size() && x.cols() > 0, "Sequential::forward: input is ", x.rows(),
                          "x", x.cols(), " but the model takes ", input_size(), " (", in_.shape.str(),
                          ") features per sample, one sample per column");
    check_finite(x);
  }

  void check_finite(const Matrix<T>& x) const {
    std::atomic<bool> ok{true};
    const T* d = x.data();
    bk_.parallel_for(x.size(), [&](Index k0, Index k1) {
      if (!all_finite(ConstVectorMap<T>(d + k0, k1 - k0))) ok = false;
    });
    CURVATURE_CHECK_VALUE(ok.load(), "Sequential::forward: input contains NaN or Inf");
  }

  /// The forward pass and the JVP along V, layer by layer (Layer::forward_jvp: a layer may share
  /// work between the two, as Conv2d shares the patches of x).
  void run_forward_jvp(const Matrix<T>& x, const Matrix<T>& v) {
    check_input(x);
    CURVATURE_CHECK_SHAPE(v.rows() == num_params() && v.cols() > 0, "Sequential: direction block is ", v.rows(),
                          "x", v.cols(), " but the model has ", num_params(), " parameters");
    const Index n = x.cols();
    acts_.resize(layers_.size());
    racts_.resize(layers_.size());
    active_.assign(layers_.size(), false);
    for (Index l = 0; l < num_layers(); ++l) {
      const bool in_active = l > 0 && active_[l - 1];
      if (!in_active && layers_[l]->num_params() == 0) {
        layers_[l]->forward(pass(l, n, 1, nullptr, 0), input(l, x), acts_[l]);
        continue;
      }
      layers_[l]->forward_jvp(pass(l, n, v.cols(), v.data(), v.rows()), input(l, x), in_active ? &racts_[l - 1] : nullptr,
                              acts_[l], racts_[l]);
      active_[l] = true;
    }
  }

  /// Sizes `out` for `mode`; zeroes it (in parallel) unless every entry will be written.
  template <class Out>
  void prepare_out(Reduction mode, Index n, Index reps, Out& out) const {
    const bool per_sample = mode == Reduction::PerColumn || mode == Reduction::PerSampleSquares ||
                            mode == Reduction::SumSquares;
    if (per_sample && couples_samples())
      throw UnsupportedError("Sequential: per-sample quantities are undefined while a layer couples samples "
                             "(BatchNorm in training mode); call set_training(false)");
    const Index cols = mode == Reduction::PerColumn ? reps * n
                       : mode == Reduction::PerSampleSquares ? n
                       : mode == Reduction::PerReplica ? reps : 1;
    if constexpr (std::same_as<Out, Vector<T>>)
      CURVATURE_CHECK_VALUE(cols == 1, "Sequential: a reduction with ", cols, " columns needs a Matrix output");
    out.resize(num_params(), cols);
    if (mode == Reduction::PerColumn) return;  // every entry is written
    // Only the rows of layers that add into their sink are zeroed; the others assign (sink()).
    T* o = out.data();
    const Index d = num_params();
    for (Index l = 0; l < num_layers(); ++l) {
      const Index np = layers_[l]->num_params(), off = offsets_[l];
      if (np == 0 || layers_[l]->assigns_sink(mode)) continue;
      if (cols == 1) bk_.parallel_for(np, [&](Index k0, Index k1) { std::fill(o + off + k0, o + off + k1, T(0)); });
      else
        bk_.parallel_for(cols, [&](Index c0, Index c1) {
          for (Index c = c0; c < c1; ++c) std::fill(o + c * d + off, o + c * d + off + np, T(0));
        });
    }
  }

  /// Layer l's sink in `out` (prepared by prepare_out for `mode`), or null when it has no parameters.
  template <class Out>
  const Sink<T>* sink(Index l, Reduction mode, Out& out, T scale, Sink<T>& s) const {
    if (layers_[l]->num_params() == 0) return nullptr;
    s = Sink<T>{mode, out.data() + offsets_[l], num_params(), scale, layers_[l]->assigns_sink(mode)};
    return &s;
  }

  TensorSpec in_;
  B bk_;
  std::vector<LayerPtr> layers_;   // in execution order (see add)
  std::vector<std::string> names_;  // the added layers' names, in the order of add()
  std::vector<Index> offsets_;
  Vector<T> params_;
  bool train_ = false;
  std::vector<Matrix<T>> acts_, racts_, rracts_;  // outputs, their tangents and second-order tangents
  std::vector<Matrix<T>> dys_, rdys_;  // cotangent (and its R-derivative) of each layer's output
  Matrix<T> rf_, rrf_;                 // zero output tangents when no layer depends on V
  std::vector<bool> active_;
};

}  // namespace curvature::nn
