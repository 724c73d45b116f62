#pragma once
// Sequential composition of layers with one flat parameter vector (PyTorch parameters_to_vector
// layout: layer by layer, each layer's parameters in PyTorch's order).
//
// All differentiation entry points are stateless for the caller: each runs its own forward pass
// and receives what it needs of the loss through a callback, so a whole gradient, HVP block or
// Fisher diagonal is one call with one forward pass.
//
// Batch shards. A gradient-like pass (backward with Reduction::Sum or SumSquares, an HVP of one
// direction) over N >= 128 samples runs as S = min(4, N / 64) shards of consecutive samples, each
// through its own copies of the layers (Layer::clone) with the model's parameters: every shard
// runs its forward pass, the callback sees the whole batch's outputs, every shard runs its
// backward pass into its own d-vector, and the shards' vectors are added in shard order. S depends
// on N alone, so results are the same bits on every backend and thread count. With a backend of
// t threads, 1 < t <= S (and S a multiple of t), the shards run concurrently, one thread each with
// serial products. For the MNIST MLP at B = 128 the 2-thread gradient then takes 0.637 ms against
// 0.67-0.69 ms with each product cut in two, and the HVP 1.175 against 1.36-1.40 ms; one thread
// pays ~8% for it (1.16-1.18 against 1.08-1.09 ms: the weights packed once per shard, the shards'
// own d-vectors zeroed and added, x copied; benchmarks/README.md). Otherwise the shards run one
// after another, each product split across the threads as before. Sharding::Off keeps a pass whole, so
// that layer_input(), output_cotangent() and the layers' caches describe it (K-FAC needs them).
//
// Replica groups. An HVP of m > 1 directions (PerReplica or PerColumn) and jet2 run one forward
// pass over the batch, then take the directions in groups of max(1, 256 / N): each group's JVP,
// second-order or R-op pass runs on tensors of one or two replicas, which stay in cache, where a
// whole block of 20 MLP directions at B = 128 moves 2.6 MB per layer and tensor through memory.
// The cotangents of the batch are computed once, with the first group. On t > 1 threads with at
// least t groups, t clones of the model (as for batch shards) take every t-th group side by side,
// each on one thread with serial products and its own forward pass. A direction's result equals
// the whole block's to rounding (often bit for bit: the products give each column the same sums);
// the groups depend on N and m alone, so results are the same bits on every backend and thread
// count. Not grouped: blocks through a layer that shares work across directions (Conv2d,
// Layer::shares_across_directions), Reduction::Sum, and passes with Sharding::Off; not side by
// side: layers that couple samples or cannot be cloned. MNIST MLP, B = 128, a block of 20 HVPs:
// 35.0 -> 33.2 ms on one thread, 22.5-25.6 -> 16.9-18.0 ms on two (benchmarks/README.md).
//
// Pooled JVPs. A layer whose pools_jvp() is true (Conv2d on its direct kernel) followed by a
// max-pool runs its JVPs together with the pool's (Layer::jvp_pooled, jvp2_pooled), without the
// full-size tangent of its output, which a block of directions otherwise writes to memory and
// reads back (see pooled()). Its R-op, for summed sinks, runs the pool's too (Layer::pools_rop,
// backward_r_pooled): the R-derivative of the pool's output cotangent is scattered through the
// window choices where the convolution reads it, without the full-size tensor (see pooled_rop()).
// From 16 directions on, Conv2d computes the terms that read its shared input only at the pool's
// choices (a quarter of those products for 2x2 windows), summed in another order than layer by
// layer; with fewer directions the fused passes give the same bits.
#include <algorithm>
#include <atomic>
#include <concepts>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "curvature/core/allocator.hpp"
#include "curvature/nn/layer.hpp"
#include "curvature/nn/reshape.hpp"

namespace curvature::nn {

/// Whether a pass may run as batch shards (Auto) or must run the whole batch through the model's
/// own layers (Off), see "Batch shards" above.
enum class Sharding { Auto, Off };

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

  Index num_params() const { return shared_params_ ? shard_d_ : params_.size(); }
  Index input_size() const { return in_.shape.size(); }
  Shape input_shape() const { return in_.shape; }
  Index output_size() const { return spec().shape.size(); }
  const B& backend() const { return bk_; }
  Index num_layers() const { return static_cast<Index>(layers_.size()); }
  const Layer<T, B>& layer(Index l) const { return *layers_[l]; }
  /// Writable access to a layer (per-layer statistics such as K-FAC's need the layer's caches).
  /// The batch shards' copies of the layers are made again at the next sharded pass, so changed
  /// settings or buffers (BatchNorm::set_running_stats) reach them.
  Layer<T, B>& mutable_layer(Index l) {
    shards_.clear();
    return *layers_[l];
  }
  /// A convolution followed by a max-pool computes its JVPs sample by sample into a scratch that
  /// stays in cache and hands on only the pool's choices (Layer::jvp_pooled; on by default).
  /// false runs the two layers one after the other, through the full-size tangent; the results
  /// agree to rounding (the same bits below 16 directions; for measurements and tests).
  void set_fused_pooling(bool on) {
    fuse_pool_ = on;
    shards_.clear();
  }

  /// After forward/backward on x: the input layer l saw (x itself for l = 0). Not after a pass
  /// that ran as batch shards (pass Sharding::Off to keep a pass whole).
  const Matrix<T>& layer_input(Index l, const Matrix<T>& x) const {
    CURVATURE_CHECK_VALUE(l >= 0 && l < num_layers() && acts_.size() == layers_.size() && !sharded_,
                          "Sequential::layer_input: layer ", l, " of ", num_layers(),
                          " (run a pass first, with Sharding::Off)");
    return input(l, x);
  }
  /// After backward(): the cotangent of layer l's output (rows as the layer's output, R*N columns
  /// for R replicas), for every layer from the first one with parameters. Not after a pass that
  /// ran as batch shards (pass Sharding::Off to keep a pass whole).
  const Matrix<T>& output_cotangent(Index l) const {
    CURVATURE_CHECK_VALUE(l >= first_param_layer() && l < num_layers() && dys_.size() == layers_.size() && !sharded_,
                          "Sequential::output_cotangent: layer ", l,
                          " has no cotangent (run backward first, with Sharding::Off)");
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
  /// Clears the batch shards on a change: a training-mode pass may move BatchNorm's running
  /// statistics in the model's own layers (such passes are never sharded).
  void set_training(bool train) {
    if (train != train_) shards_.clear();
    train_ = train;
  }
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

  /// The number of batch shards a pass over n samples with `mode` and `cols` output columns runs
  /// as (1: whole), when every layer can be cloned and no layer couples samples.
  static Index shard_count(Index n, Reduction mode, Index cols) {
    const bool summed = mode == Reduction::Sum || mode == Reduction::SumSquares ||
                        (mode == Reduction::PerReplica && cols == 1);
    return summed && n >= 2 * kShardSamples ? std::min<Index>(kMaxShards, n / kShardSamples) : 1;
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
  void backward(const Matrix<T>& x, OutFn&& out_fn, Reduction mode, Out& out, T scale,
                Sharding sharding = Sharding::Auto) {
    check_input(x);
    const Index n = x.cols(), last = num_layers() - 1;
    if (const Index s = shards_for(n, mode, 1, sharding); s > 1) {
      run_shards(x, s, [](Sequential& sh, const Matrix<T>& xs, Index) { sh.forward_layers(xs); });
      gather(s, n, 1, [](Sequential& sh) -> const Matrix<T>& { return sh.acts_.back(); }, fcat_);
      dcat_ = out_fn(fcat_);
      const Index reps = check_cotangent(dcat_, n);
      run_shards_into(x, s, out, [&](Sequential& sh, const Matrix<T>& xs, Index i0, auto& o) {
        sh.dys_.resize(sh.layers_.size());
        scatter(dcat_, n, i0, xs.cols(), reps, sh.dys_[last]);
        sh.prepare_out(mode, xs.cols(), reps, o);
        sh.backward_layers(xs, reps, mode, o, scale);
      });
      return;
    }
    forward_layers(x);
    sharded_ = false;
    dys_.resize(layers_.size());
    dys_[last] = out_fn(acts_.back());
    const Index reps = check_cotangent(dys_[last], n);
    prepare_out(mode, n, reps, out);
    backward_layers(x, reps, mode, out, scale);
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
  /// mean loss; PerColumn with unscaled per-sample dF: H_i v_r). In replica groups (see the top of
  /// the file) rop is called once per group, one call at a time but perhaps from a worker thread,
  /// RF and RdF holding that group's replicas: RdF_r must depend on RF_r alone (as Lambda_i RF_r
  /// does). `hooks` (ColumnHooks) are called around each group taken one after another, else once
  /// around the whole pass.
  template <class Rop>
  void hvp(const Matrix<T>& x, const Matrix<T>& v, Rop&& rop, Reduction mode, Matrix<T>& out, T scale,
           Sharding sharding = Sharding::Auto, const ColumnHooks& hooks = {}) {
    check_input(x);
    check_directions(v);
    const Index m = v.cols();
    const Index g = group_for(x.cols(), mode, m, sharding);
    const int w = g < m ? group_workers(m, g) : 1;
    if (g == m || (w > 1 && !hooks.concurrent_before)) hooks.call_before(0, m);
    hvp_pass(x, v, rop, mode, out, scale, sharding, hooks, g, w);
    if (g == m || w > 1) hooks.call_after(0, m);
  }

  /// hvp with hooks and Sharding::Auto.
  template <class Rop>
  void hvp(const Matrix<T>& x, const Matrix<T>& v, Rop&& rop, Reduction mode, Matrix<T>& out, T scale,
           const ColumnHooks& hooks) {
    hvp(x, v, std::forward<Rop>(rop), mode, out, scale, Sharding::Auto, hooks);
  }

  /// True when every layer has a second-order forward mode (jvp2), so jet2 works.
  bool supports_jet2() const {
    return std::all_of(layers_.begin(), layers_.end(), [](const LayerPtr& l) { return l->has_jvp2(); });
  }

  /// Second-order forward (Taylor) mode along the curves theta + t v_r for the columns of the d x m
  /// block V: one forward pass, the JVP, then the second t-derivatives layer by layer; calls
  /// `fn(F, RF, RRF)` with the outputs F (K x N), their first and second t-derivatives (K x m*N,
  /// replica r for v_r). With the loss, d^2/dt^2 ell(f_i) = RF' Lambda_i RF + grad ell_i' RRF is
  /// v_r' H_i v_r without a backward pass (about half the products of an HVP on the MLP). `hooks`
  /// as for hvp (after(0, m) follows fn). Throws UnsupportedError unless supports_jet2().
  template <class Fn>
  void jet2(const Matrix<T>& x, const Matrix<T>& v, Fn&& fn, const ColumnHooks& hooks = {}) {
    if (!supports_jet2()) {
      for (const auto& l : layers_)
        if (!l->has_jvp2())
          throw UnsupportedError("Sequential::jet2: layer " + l->name() + " has no second-order forward mode");
    }
    const Index n = x.cols(), m = v.cols();
    const Index g = group_for(n, Reduction::PerReplica, m, Sharding::Auto);
    if (g == m) {
      hooks.call_before(0, m);
      run_forward_jvp(x, v);
      const bool on = jvp2_layers(x, v.data(), v.rows(), m);
      if (!active_.back()) rf_.setZero(output_size(), m * n);
      if (!on) rrf_.setZero(output_size(), m * n);
      fn(acts_.back(), active_.back() ? racts_.back() : rf_, on ? rracts_.back() : rrf_);
      hooks.call_after(0, m);
      return;
    }
    // Replica groups (see the top of the file): the outputs' derivatives gathered for fn, which
    // runs once all groups are done (so no group's after(); after(0, m) follows fn).
    check_input(x);
    check_directions(v);
    const Index k_out = output_size();
    rfcat_.resize(k_out, m * n);
    rrfcat_.resize(k_out, m * n);
    const int w = group_workers(m, g);
    if (w > 1 && !hooks.concurrent_before) hooks.call_before(0, m);
    for_groups(x, m, g, w, hooks.before_only(), [&](Sequential& sq, Index r0, Index s, bool) {
      const T* vg = v.data() + r0 * v.rows();
      sq.jvp_layers(x, vg, v.rows(), s);
      const bool on = sq.jvp2_layers(x, vg, v.rows(), s);
      if (sq.active_.back()) rfcat_.middleCols(r0 * n, s * n) = sq.racts_.back();
      else rfcat_.middleCols(r0 * n, s * n).setZero();
      if (on) rrfcat_.middleCols(r0 * n, s * n) = sq.rracts_.back();
      else rrfcat_.middleCols(r0 * n, s * n).setZero();
    });
    fn(w > 1 ? shards_[0]->acts_.back() : acts_.back(), rfcat_, rrfcat_);
    hooks.call_after(0, m);
  }

 private:
  /// hvp after the checks, with the replica group size g and workers w (see group_for and
  /// group_workers); hooks are called here only for groups run one after another.
  template <class Rop>
  void hvp_pass(const Matrix<T>& x, const Matrix<T>& v, Rop& rop, Reduction mode, Matrix<T>& out, T scale,
                Sharding sharding, const ColumnHooks& hooks, Index g, int w) {
    const Index n = x.cols(), m = v.cols();
    const Index last = num_layers() - 1, first = first_param_layer();
    if (const Index s = shards_for(n, mode, m, sharding); s > 1 && first <= last) {
      run_shards(x, s, [&](Sequential& sh, const Matrix<T>& xs, Index) {
        sh.forward_jvp_layers(xs, v);
        if (!sh.active_.back()) sh.rf_.setZero(output_size(), m * xs.cols());
      });
      gather(s, n, 1, [](Sequential& sh) -> const Matrix<T>& { return sh.acts_.back(); }, fcat_);
      gather(s, n, m, [](Sequential& sh) -> const Matrix<T>& { return sh.active_.back() ? sh.racts_.back() : sh.rf_; },
             rfcat_);
      rop(fcat_, rfcat_, dcat_, rdcat_);
      run_shards_into(x, s, out, [&](Sequential& sh, const Matrix<T>& xs, Index i0, auto& o) {
        sh.dys_.resize(sh.layers_.size());
        sh.rdys_.resize(sh.layers_.size());
        scatter(dcat_, n, i0, xs.cols(), 1, sh.dys_[last]);
        scatter(rdcat_, n, i0, xs.cols(), m, sh.rdys_[last]);
        sh.prepare_out(mode, xs.cols(), m, o);
        sh.hvp_layers(xs, v.data(), v.rows(), m, mode, o.data(), scale, true);
      });
      return;
    }
    if (g < m) {  // replica groups (see the top of the file): one forward pass, then group by group
      prepare_out(mode, n, m, out);
      const Index col_stride = (mode == Reduction::PerColumn ? n : 1) * num_params();
      std::mutex rop_lock;  // concurrent groups call rop one at a time
      for_groups(x, m, g, w, hooks, [&](Sequential& sq, Index r0, Index s, bool first_group) {
        if (first > last) return;  // no parameters: prepare_out zeroed the output
        if (first_group) {
          sq.dys_.resize(layers_.size());
          sq.rdys_.resize(layers_.size());
        }
        const T* vg = v.data() + r0 * v.rows();
        sq.jvp_layers(x, vg, v.rows(), s);
        if (!sq.active_.back()) sq.rf_.setZero(output_size(), s * n);
        {
          const std::lock_guard<std::mutex> hold(rop_lock);
          rop(sq.acts_.back(), sq.active_.back() ? sq.racts_.back() : sq.rf_, sq.dys_[last], sq.rdys_[last]);
        }
        sq.hvp_layers(x, vg, v.rows(), s, mode, out.data() + r0 * col_stride, scale, first_group);
      });
      return;
    }
    forward_jvp_layers(x, v);
    sharded_ = false;
    prepare_out(mode, n, m, out);
    if (first > last) return;
    if (!active_.back()) rf_.setZero(output_size(), m * n);
    dys_.resize(layers_.size());
    rdys_.resize(layers_.size());
    rop(acts_.back(), active_.back() ? racts_.back() : rf_, dys_[last], rdys_[last]);
    hvp_layers(x, v.data(), v.rows(), m, mode, out.data(), scale, true);
  }

  TensorSpec spec() const { return layers_.empty() ? in_ : layers_.back()->output_spec(); }

  void push(LayerPtr layer) {
    shards_.clear();
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
    const T* p = shared_params_ ? shared_params_ : params_.data();
    return Pass<T>{p + offsets_[l], v ? v + offsets_[l] : nullptr, v_ld, n, reps, train_};
  }

  void run_forward(const Matrix<T>& x) {
    check_input(x);
    forward_layers(x);
    sharded_ = false;
  }

  void forward_layers(const Matrix<T>& x) {
    acts_.resize(layers_.size());
    for (Index l = 0; l < num_layers(); ++l) layers_[l]->forward(pass(l, x.cols(), 1, nullptr, 0), input(l, x), acts_[l]);
  }

  Index check_cotangent(const Matrix<T>& df, Index n) const {
    CURVATURE_CHECK_SHAPE(df.rows() == output_size() && df.cols() % n == 0 && df.cols() > 0,
                          "Sequential::backward: cotangent is ", df.rows(), "x", df.cols(), ", expected ",
                          output_size(), "x(R*", n, ")");
    return df.cols() / n;
  }

  /// The backward pass of the cotangent dys_.back() (reps replicas) into `out`, prepared by
  /// prepare_out. The cotangent of each layer's output lives in its own buffer, kept between
  /// calls: the sizes repeat from call to call, so the large ones (conv activations times
  /// replicas) are allocated and page-faulted once, not on every pass.
  template <class Out>
  void backward_layers(const Matrix<T>& x, Index reps, Reduction mode, Out& out, T scale) {
    const Index n = x.cols(), last = num_layers() - 1, first = first_param_layer();
    for (Index l = last; l >= first; --l) {
      const Pass<T> a = pass(l, n, reps, nullptr, 0);
      Sink<T> s;
      layers_[l]->backward(a, input(l, x), acts_[l], dys_[l], l > first ? &dys_[l - 1] : nullptr,
                           sink(l, mode, out, scale, s));
    }
  }

  /// The R-op of the backward pass, given the output cotangent and its R-derivative in dys_ and
  /// rdys_, into `out` (prepared by prepare_out).
  /// The `reps` directions are at v (v_ld apart); `out` points at their first column of the
  /// output. With `cotangents` false, dys_ holds the cotangents of this batch already (a later
  /// replica group), and only the R-op runs.
  void hvp_layers(const Matrix<T>& x, const T* v, Index v_ld, Index reps, Reduction mode, T* out, T scale,
                  bool cotangents) {
    const Index n = x.cols(), last = num_layers() - 1, first = first_param_layer();
    for (Index l = last; l >= first; --l) {
      if (l > first && pooled_rop(l - 1, mode)) {  // the max-pool l's R-op inside layer l - 1's
        if (cotangents)
          layers_[l]->backward(pass(l, n, 1, nullptr, 0), input(l, x), acts_[l], dys_[l], &dys_[l - 1], nullptr);
        --l;
        const bool need_dx = l > first;
        const Matrix<T>* rx = (l > 0 && active_[l - 1]) ? &racts_[l - 1] : nullptr;
        Sink<T> s;
        layers_[l]->backward_r_pooled(pass(l, n, reps, v, v_ld), input(l, x), rx, dys_[l], rdys_[l + 1],
                                      *layers_[l + 1], need_dx ? &rdys_[l - 1] : nullptr, sink(l, mode, out, scale, s));
        rdys_[l].resize(0, 0);
        if (!need_dx) break;
        if (cotangents)
          layers_[l]->backward(pass(l, n, 1, nullptr, 0), input(l, x), acts_[l], dys_[l], &dys_[l - 1], nullptr);
        continue;
      }
      const bool need_dx = l > first;
      const Matrix<T>* rx = (l > 0 && active_[l - 1]) ? &racts_[l - 1] : nullptr;
      Sink<T> s;
      layers_[l]->backward_r(pass(l, n, reps, v, v_ld), input(l, x), acts_[l], rx, active_[l] ? &racts_[l] : nullptr,
                             dys_[l], rdys_[l], need_dx ? &rdys_[l - 1] : nullptr, sink(l, mode, out, scale, s));
      if (!need_dx) break;
      if (cotangents)
        layers_[l]->backward(pass(l, n, 1, nullptr, 0), input(l, x), acts_[l], dys_[l], &dys_[l - 1], nullptr);
    }
  }

  // ---- Replica groups (see the top of the file) ----
  static constexpr Index kGroupColumns = 256;

  /// Directions per group of an m-direction HVP (PerReplica or PerColumn) or jet2 pass over n
  /// samples; m means one group, the whole block.
  Index group_for(Index n, Reduction mode, Index m, Sharding sharding) const {
    if (m <= 1 || sharding == Sharding::Off || !(mode == Reduction::PerReplica || mode == Reduction::PerColumn))
      return m;
    if (std::any_of(layers_.begin(), layers_.end(), [](const LayerPtr& l) { return l->shares_across_directions(); }))
      return m;
    return std::clamp<Index>(kGroupColumns / n, 1, m);
  }

  /// Runs body(sq, r0, s, first) for every replica group [r0, r0 + s) of an m-direction pass in
  /// groups of g, sq being the model that ran the forward pass over x for it and `first` whether
  /// the group is sq's first: with w == 1 on the model itself, one group after another, each
  /// between hooks.before(r0, r0 + s) and hooks.after(r0, r0 + s); with w > 1 on w clones side by
  /// side (run_workers; worker k takes groups k, k + w, ...), each group after hooks.before(r0,
  /// r0 + s) from its worker when hooks.concurrent_before, else without hooks (the caller's run
  /// around the whole pass).
  template <class Body>
  void for_groups(const Matrix<T>& x, Index m, Index g, int w, const ColumnHooks& hooks, Body&& body) {
    const auto run = [&](Sequential& sq, Index k) {
      sq.forward_layers(x);
      for (Index r0 = k * g; r0 < m; r0 += w * g) {
        const Index s = std::min(g, m - r0);
        if (w == 1 || hooks.concurrent_before) hooks.call_before(r0, r0 + s);
        body(sq, r0, s, r0 == k * g);
        if (w == 1) hooks.call_after(r0, r0 + s);
      }
    };
    if (w > 1) {
      run_workers(w, run);
    } else {
      run(*this, 0);
      sharded_ = false;
    }
  }

  /// The workers that run the groups of an m-direction pass side by side (1: the model alone, one
  /// group after another): the backend's t threads when it can run one-thread copies, there are at
  /// least t groups, no layer couples samples (a training-mode forward pass moves BatchNorm's
  /// running statistics) and every layer can be cloned.
  int group_workers(Index m, Index g) {
    if constexpr (ThreadedBackend<B>) {
      const int t = bk_.threads();
      if (t > 1 && (m + g - 1) / g >= t && !couples_samples() && make_clones(t)) return t;
    }
    return 1;
  }

  /// Runs f(worker, k) for k < w on w clones of the model side by side, one thread each; each
  /// worker runs its own forward pass. Exceptions thrown by a worker are rethrown here.
  template <class F>
  void run_workers(int w, F&& f) {
    sharded_ = true;
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(w));
    if constexpr (ThreadedBackend<B>) {
      const B one = bk_.with_threads(1);
      for (Index k = 0; k < w; ++k) {
        shards_[k]->use_backend(one);
        shards_[k]->train_ = train_;
        shards_[k]->shared_params_ = params_.data();
      }
    }
    bk_.parallel_for(w, [&](Index k0, Index k1) {
      for (Index k = k0; k < k1; ++k) {
        try {
          f(*shards_[k], k);
        } catch (...) {
          errors[static_cast<std::size_t>(k)] = std::current_exception();
        }
      }
    });
    for (const std::exception_ptr& e : errors)
      if (e) std::rethrow_exception(e);
  }

  // ---- Batch shards (see the top of the file) ----
  static constexpr Index kShardSamples = 64, kMaxShards = 4;

  /// The shards a pass runs as (1: whole): shard_count, when sharding is allowed, no layer couples
  /// samples and every layer can be cloned.
  Index shards_for(Index n, Reduction mode, Index cols, Sharding sharding) {
    const Index s = shard_count(n, mode, cols);
    if (s == 1 || sharding == Sharding::Off || couples_samples()) return 1;
    return make_clones(s) ? s : 1;
  }

  /// Makes at least k clones of the model (shards_, kept for later passes): each a Sequential of
  /// clones of the layers reading this model's parameters. False when a layer cannot be cloned.
  bool make_clones(Index k) {
    while (static_cast<Index>(shards_.size()) < k) {
      auto sh = std::make_unique<Sequential>(in_.shape, bk_);
      for (const LayerPtr& l : layers_) {
        LayerPtr c = l->clone();
        if (!c) {
          shards_.clear();
          return false;
        }
        c->set_backend(bk_);
        c->bind(sh->spec());
        sh->layers_.push_back(std::move(c));
      }
      sh->offsets_ = offsets_;
      sh->fuse_pool_ = fuse_pool_;
      sh->shared_params_ = params_.data();
      sh->shard_d_ = num_params();
      shards_.push_back(std::move(sh));
    }
    return true;
  }

  /// The first sample of shard k of s over n samples (shard k holds [begin(k), begin(k + 1))).
  static Index shard_begin(Index n, Index s, Index k) { return n * k / s; }

  /// Runs f(shard, x_k, k) for the s shards, x_k holding shard k's samples: concurrently with one
  /// thread each when the backend has 1 < t <= s threads (s a multiple of t), else one after
  /// another on the whole backend. Exceptions thrown by a shard are rethrown here.
  template <class F>
  void run_shards(const Matrix<T>& x, Index s, F&& f) {
    sharded_ = true;
    const int t = bk_.threads();
    const bool concurrent = ThreadedBackend<B> && t > 1 && t <= s && s % t == 0;
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(s));
    const auto run = [&](Index k) {
      Sequential& sh = *shards_[k];
      const Index i0 = shard_begin(x.cols(), s, k), len = shard_begin(x.cols(), s, k + 1) - i0;
      try {
        sh.train_ = train_;
        sh.shared_params_ = params_.data();
        sh.shard_x_ = x.middleCols(i0, len);
        f(sh, sh.shard_x_, k);
      } catch (...) {
        errors[static_cast<std::size_t>(k)] = std::current_exception();
      }
    };
    if (concurrent) {
      if constexpr (ThreadedBackend<B>) {
        const B one = bk_.with_threads(1);
        for (Index k = 0; k < s; ++k) shards_[k]->use_backend(one);
      }
      bk_.parallel_for(s, [&](Index k0, Index k1) {
        for (Index k = k0; k < k1; ++k) run(k);
      });
    } else {
      for (Index k = 0; k < s; ++k) shards_[k]->use_backend(bk_), run(k);
    }
    for (const std::exception_ptr& e : errors)
      if (e) std::rethrow_exception(e);
  }

  /// run_shards with f(shard, x_k, i0, out_k), i0 the shard's first sample: shard 0 writes `out`,
  /// shard k > 0 its own d x cols buffer, and these are then added to `out` in shard order (the
  /// same bits at any thread count).
  template <class Out, class F>
  void run_shards_into(const Matrix<T>& x, Index s, Out& out, F&& f) {
    run_shards(x, s, [&](Sequential& sh, const Matrix<T>& xs, Index k) {
      const Index i0 = shard_begin(x.cols(), s, k);
      if (k == 0) f(sh, xs, i0, out);
      else f(sh, xs, i0, sh.shard_out_);
    });
    T* o = out.data();
    const Index size = out.size();
    bk_.parallel_for(size, [&](Index j0, Index j1) {
      for (Index k = 1; k < s; ++k) {
        const T* a = shards_[k]->shard_out_.data();
        for (Index j = j0; j < j1; ++j) o[j] += a[j];
      }
    });
  }

  /// Sets the backend of a shard's layers.
  void use_backend(const B& b) {
    bk_ = b;
    for (const LayerPtr& l : layers_) l->set_backend(b);
  }

  /// The shards' tensors get(shard) (K x reps*len_k, replica-major) as one K x reps*n tensor.
  template <class Get>
  void gather(Index s, Index n, Index reps, Get&& get, Matrix<T>& all) {
    const Index k_out = output_size();
    all.resize(k_out, reps * n);
    for (Index k = 0; k < s; ++k) {
      const Index i0 = shard_begin(n, s, k), len = shard_begin(n, s, k + 1) - i0;
      const Matrix<T>& t = get(*shards_[k]);
      for (Index r = 0; r < reps; ++r) all.middleCols(r * n + i0, len) = t.middleCols(r * len, len);
    }
  }

  /// Samples [i0, i0 + len) of every replica of a K x reps*n tensor, as K x reps*len.
  static void scatter(const Matrix<T>& all, Index n, Index i0, Index len, Index reps, Matrix<T>& part) {
    part.resize(all.rows(), reps * len);
    for (Index r = 0; r < reps; ++r) part.middleCols(r * len, len) = all.middleCols(r * n + i0, len);
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
    check_directions(v);
    forward_jvp_layers(x, v);
    sharded_ = false;
  }

  void check_directions(const Matrix<T>& v) const {
    CURVATURE_CHECK_SHAPE(v.rows() == num_params() && v.cols() > 0, "Sequential: direction block is ", v.rows(),
                          "x", v.cols(), " but the model has ", num_params(), " parameters");
  }

  void forward_jvp_layers(const Matrix<T>& x, const Matrix<T>& v) {
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
      if (pooled(l)) {  // the convolution's tangent straight into the max-pool's (see pooled)
        layers_[l]->forward(pass(l, n, 1, nullptr, 0), input(l, x), acts_[l]);
        layers_[l + 1]->forward(pass(l + 1, n, 1, nullptr, 0), acts_[l], acts_[l + 1]);
        layers_[l]->jvp_pooled(pass(l, n, v.cols(), v.data(), v.rows()), input(l, x), in_active ? &racts_[l - 1] : nullptr,
                               *layers_[l + 1], racts_[l + 1]);
        racts_[l].resize(0, 0);
        active_[l] = active_[l + 1] = true;
        ++l;
        continue;
      }
      layers_[l]->forward_jvp(pass(l, n, v.cols(), v.data(), v.rows()), input(l, x), in_active ? &racts_[l - 1] : nullptr,
                              acts_[l], racts_[l]);
      active_[l] = true;
    }
  }

  /// Whether layer l's JVPs run together with the max-pool l + 1 that takes its output
  /// (Layer::jvp_pooled: the same values without the full-size tangent of layer l's output, whose
  /// slot in racts_ is left empty; nothing reads it, as the pool's R-op and layer l's ignore their
  /// output tangents). Off after set_fused_pooling(false).
  bool pooled(Index l) const {
    return fuse_pool_ && l + 1 < num_layers() && layers_[l + 1]->is_max_pool() && layers_[l]->pools_jvp();
  }

  /// Whether the R-op of the max-pool l + 1 runs inside layer l's (Layer::backward_r_pooled, for
  /// sinks of `mode`): the same values without the full-size R-derivative of layer l's output
  /// cotangent, whose slot in rdys_ is left empty. With the pooled JVPs (pooled(l)).
  bool pooled_rop(Index l, Reduction mode) const { return pooled(l) && layers_[l]->pools_rop(mode); }

  /// The JVP along the `reps` directions at v (v_ld apart), layer by layer, after forward_layers.
  void jvp_layers(const Matrix<T>& x, const T* v, Index v_ld, Index reps) {
    const Index n = x.cols();
    racts_.resize(layers_.size());
    active_.assign(layers_.size(), false);
    for (Index l = 0; l < num_layers(); ++l) {
      const bool in_active = l > 0 && active_[l - 1];
      if (!in_active && layers_[l]->num_params() == 0) continue;
      if (pooled(l)) {
        layers_[l]->jvp_pooled(pass(l, n, reps, v, v_ld), input(l, x), in_active ? &racts_[l - 1] : nullptr,
                               *layers_[l + 1], racts_[l + 1]);
        racts_[l].resize(0, 0);
        active_[l] = active_[l + 1] = true;
        ++l;
        continue;
      }
      layers_[l]->jvp(pass(l, n, reps, v, v_ld), input(l, x), acts_[l], in_active ? &racts_[l - 1] : nullptr,
                      racts_[l]);
      active_[l] = true;
    }
  }

  /// The second t-derivatives layer by layer (Layer::jvp2) after the JVP along the same
  /// directions; returns whether the output's (rracts_.back()) is non-zero.
  bool jvp2_layers(const Matrix<T>& x, const T* v, Index v_ld, Index reps) {
    const Index n = x.cols();
    rracts_.resize(layers_.size());
    std::vector<bool> on(layers_.size(), false);
    for (Index l = 0; l < num_layers(); ++l) {
      const Matrix<T>* rx = (l > 0 && active_[l - 1]) ? &racts_[l - 1] : nullptr;
      const Matrix<T>* rrx = (l > 0 && on[l - 1]) ? &rracts_[l - 1] : nullptr;
      if (!rx && !rrx && layers_[l]->num_params() == 0) continue;
      if (pooled(l)) {
        on[l + 1] = layers_[l]->jvp2_pooled(pass(l, n, reps, v, v_ld), input(l, x), rx, rrx, *layers_[l + 1], rracts_[l + 1]);
        ++l;
        continue;
      }
      on[l] = layers_[l]->jvp2(pass(l, n, reps, v, v_ld), input(l, x), acts_[l], rx, rrx, rracts_[l]);
    }
    return on.back();
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
    return sink(l, mode, out.data(), scale, s);
  }
  /// The same for an output whose first column starts at `out`.
  const Sink<T>* sink(Index l, Reduction mode, T* out, T scale, Sink<T>& s) const {
    if (layers_[l]->num_params() == 0) return nullptr;
    s = Sink<T>{mode, out + offsets_[l], num_params(), scale, layers_[l]->assigns_sink(mode)};
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
  bool fuse_pool_ = true;  // see pooled()
  // Batch shards: each a Sequential of clones of the layers, reading this model's parameters.
  std::vector<std::unique_ptr<Sequential>> shards_;
  bool sharded_ = false;                    // the last pass ran as shards (no whole-batch state)
  Matrix<T> fcat_, rfcat_, dcat_, rdcat_;   // the whole batch's outputs and output cotangents
  Matrix<T> rrfcat_;                        // jet2 in replica groups: all replicas' second derivatives
  const T* shared_params_ = nullptr;        // in a shard: the parameters of the model it belongs to
  Index shard_d_ = 0;                       // in a shard: their number
  Matrix<T> shard_x_, shard_out_;           // in a shard: its samples and (shard k > 0) its output
};

}  // namespace curvature::nn
