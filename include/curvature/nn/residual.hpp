#pragma once
// Residual block y = x + g(x), g a chain of layers (a small Sequential inside one layer). Its
// parameters are those of the inner layers in order (PyTorch order for a module whose children
// are the inner layers). Every rule delegates to the inner layers:
//   JVP      ry = rx + Rg,                     VJP   dx = dy + J_g^T dy,
//   R-op     R(dx) = R(dy) + R(J_g^T dy),      parameter contributions = those of g.
// Layouts: the block asks for the layout its first inner layer needs, inserts layout changes
// between inner layers at bind() and converts g's output back to the input layout.
//
// The inner activations of the last forward pass are kept with a copy of its input and parameters;
// a later call with a different input or parameters (possible outside Sequential) recomputes them.
// backward_r recomputes the inner tangents (one JVP of g) since the layer interface passes only
// the block's own tangents.
#include <algorithm>
#include <concepts>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "curvature/nn/layer.hpp"
#include "curvature/nn/reshape.hpp"

namespace curvature::nn {

template <Scalar T, class B = DefaultBackend>
class Residual final : public Layer<T, B> {
 public:
  using LayerPtr = std::unique_ptr<Layer<T, B>>;

  Residual() = default;
  Residual(Residual&&) noexcept = default;
  Residual& operator=(Residual&&) noexcept = default;

  /// Appends an inner layer (by value).
  template <class L>
    requires std::derived_from<L, Layer<T, B>>
  Residual& add(L layer) {
    return add(LayerPtr(std::make_unique<L>(std::move(layer))));
  }
  Residual& add(LayerPtr layer) {
    CURVATURE_CHECK_VALUE(layer != nullptr, "Residual::add: null layer");
    user_.push_back(std::move(layer));
    return *this;
  }

  std::string name() const override {
    std::string s = "residual(";
    for (std::size_t k = 0; k < user_.size(); ++k) {
      if (k) s += ',';
      s += user_[k]->name();
    }
    s += ')';
    return s;
  }
  std::optional<Layout> required_layout() const override {
    return user_.empty() ? std::nullopt : user_.front()->required_layout();
  }
  /// Binds the inner chain; its output must have the input's shape.
  TensorSpec bind(const TensorSpec& in) override {
    CURVATURE_CHECK_VALUE(!user_.empty(), "Residual: the block has no inner layers");
    this->in_ = this->out_ = in;
    relayouts_.clear();
    chain_.clear();
    offsets_.clear();
    TensorSpec cur = in;
    Index d = 0;
    for (const LayerPtr& l : user_) {
      if (auto req = l->required_layout(); req && *req != cur.layout) cur = link(relayout(*req), cur, d);
      cur = link(l.get(), cur, d);
    }
    CURVATURE_CHECK_SHAPE(cur.shape == in.shape, "Residual: ", name(), " maps ", in.shape.str(), " to ",
                          cur.shape.str(), "; a residual block must keep the shape");
    if (cur.layout != in.layout) link(relayout(in.layout), cur, d);
    num_params_ = d;
    cache_x_.resize(0, 0);
    return this->out_;
  }
  Index num_params() const override { return num_params_; }
  /// A block of clones of the inner layers (null when one of them cannot be cloned).
  std::unique_ptr<Layer<T, B>> clone() const override {
    auto c = std::make_unique<Residual>();
    for (const LayerPtr& l : user_) {
      LayerPtr inner = l->clone();
      if (!inner) return nullptr;
      c->add(std::move(inner));
    }
    return c;
  }
  /// Passes the backend on to the inner layers and layout changes.
  void set_backend(const B& b) override {
    this->bk_ = b;
    for (Layer<T, B>* l : chain_) l->set_backend(b);
  }
  void init(T* p, Rng& rng) const override {
    for (std::size_t k = 0; k < chain_.size(); ++k) chain_[k]->init(p + offsets_[k], rng);
  }
  bool couples_samples(bool train) const override {
    for (const LayerPtr& l : user_)
      if (l->couples_samples(train)) return true;
    return false;
  }
  bool piecewise_linear(bool train) const override {
    return std::all_of(user_.begin(), user_.end(), [&](const LayerPtr& l) { return l->piecewise_linear(train); });
  }
  bool shares_across_directions() const override {
    return std::any_of(user_.begin(), user_.end(), [](const LayerPtr& l) { return l->shares_across_directions(); });
  }
  Index num_inner() const { return static_cast<Index>(user_.size()); }

  void forward(const Pass<T>& a, const Matrix<T>& x, Matrix<T>& y) override {
    run_forward(a, x);
    y = x + acts_.back();
  }

  void jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, Matrix<T>& ry) override {
    refresh(a, x);
    run_jvp(a, x, rx);
    const Index m = x.size();
    if (active_.back()) ry = racts_.back();
    else ry = Matrix<T>::Zero(this->out_.rows(a.n), a.reps * this->out_.cols(a.n));
    if (rx)
      for (Index r = 0; r < a.reps; ++r) VectorMap<T>(ry.data() + r * m, m) += ConstVectorMap<T>(rep(*rx, r, m), m);
  }

  void backward(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>& dy, Matrix<T>* dx,
                const Sink<T>* sink) override {
    refresh(a, x);
    const Index last = dx ? 0 : first_param_layer();
    Matrix<T> g = dy, gx;
    for (Index k = size() - 1; k >= last; --k) {
      const Sink<T> s = sub_sink(sink, k);
      chain_[k]->backward(pass(a, k, dy.size() / x.size(), nullptr), input(k, x), acts_[k], g,
                          (k > last || dx) ? &gx : nullptr, s.out ? &s : nullptr);
      std::swap(g, gx);
    }
    if (dx) *dx = dy + g;
  }

  void backward_r(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>*,
                  const Matrix<T>& dy, const Matrix<T>& rdy, Matrix<T>* rdx, const Sink<T>* sink) override {
    refresh(a, x);
    run_jvp(a, x, rx);
    const Index last = rdx ? 0 : first_param_layer();
    Matrix<T> g = dy, rg = rdy, gx, rgx;
    for (Index k = size() - 1; k >= last; --k) {
      const bool need = k > last || rdx;
      const Matrix<T>* rin = k == 0 ? rx : (active_[k - 1] ? &racts_[k - 1] : nullptr);
      const Sink<T> s = sub_sink(sink, k);
      chain_[k]->backward_r(pass(a, k, a.reps, a.v), input(k, x), acts_[k], rin, active_[k] ? &racts_[k] : nullptr,
                            g, rg, need ? &rgx : nullptr, s.out ? &s : nullptr);
      if (k == last) break;
      chain_[k]->backward(pass(a, k, 1, nullptr), input(k, x), acts_[k], g, &gx, nullptr);
      std::swap(g, gx);
      std::swap(rg, rgx);
    }
    if (rdx) *rdx = rdy + rgx;
  }

  bool has_jvp2() const override {
    return std::all_of(chain_.begin(), chain_.end(), [](const Layer<T, B>* l) { return l->has_jvp2(); });
  }
  /// rry = rrx + the inner chain's second-order tangent.
  bool jvp2(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>&, const Matrix<T>* rx, const Matrix<T>* rrx,
            Matrix<T>& rry) override {
    refresh(a, x);
    run_jvp(a, x, rx);
    rracts_.resize(chain_.size());
    std::vector<bool> on(chain_.size(), false);
    for (Index k = 0; k < size(); ++k) {
      const Matrix<T>* rin = k == 0 ? rx : (active_[k - 1] ? &racts_[k - 1] : nullptr);
      const Matrix<T>* rrin = k == 0 ? rrx : (on[k - 1] ? &rracts_[k - 1] : nullptr);
      if (!rin && !rrin && (chain_[k]->num_params() == 0 || !a.v)) continue;
      on[k] = chain_[k]->jvp2(pass(a, k, a.reps, a.v), input(k, x), acts_[k], rin, rrin, rracts_[k]);
    }
    if (!on.back() && !rrx) return false;
    const Index m = x.size();
    if (on.back()) rry = rracts_.back();
    else rry = Matrix<T>::Zero(this->out_.rows(a.n), a.reps * this->out_.cols(a.n));
    if (rrx)
      for (Index r = 0; r < a.reps; ++r) VectorMap<T>(rry.data() + r * m, m) += ConstVectorMap<T>(rep(*rrx, r, m), m);
    return true;
  }

 private:
  Index size() const { return static_cast<Index>(chain_.size()); }
  Layer<T, B>* relayout(Layout to) {
    relayouts_.push_back(std::make_unique<Relayout<T, B>>(to));
    return relayouts_.back().get();
  }
  /// Appends l to the execution chain, bound to `cur`, at parameter offset d (advanced).
  TensorSpec link(Layer<T, B>* l, const TensorSpec& cur, Index& d) {
    l->set_backend(this->bk_);
    const TensorSpec next = l->bind(cur);
    chain_.push_back(l);
    offsets_.push_back(d);
    d += l->num_params();
    return next;
  }
  Index first_param_layer() const {
    for (Index k = 0; k < size(); ++k)
      if (chain_[k]->num_params() > 0) return k;
    return size();
  }
  const Matrix<T>& input(Index k, const Matrix<T>& x) const { return k == 0 ? x : acts_[k - 1]; }
  Pass<T> pass(const Pass<T>& a, Index k, Index reps, const T* v) const {
    return Pass<T>{a.p + offsets_[k], v ? v + offsets_[k] : nullptr, a.v_ld, a.n, reps, a.train};
  }
  /// The sink of inner layer k (out == nullptr: none).
  Sink<T> sub_sink(const Sink<T>* s, Index k) const {
    if (!s || chain_[k]->num_params() == 0) return Sink<T>{};
    return Sink<T>{s->mode, s->out + offsets_[k], s->ld, s->scale};
  }
  static const T* rep(const Matrix<T>& t, Index r, Index m) { return t.data() + (t.size() == m ? 0 : r * m); }

  void run_forward(const Pass<T>& a, const Matrix<T>& x) {
    acts_.resize(chain_.size());
    for (Index k = 0; k < size(); ++k) chain_[k]->forward(pass(a, k, 1, nullptr), input(k, x), acts_[k]);
    cache_x_ = x;
    if (num_params_ > 0) cache_p_ = ConstVectorMap<T>(a.p, num_params_);
    cache_train_ = a.train;
  }
  /// Recomputes the inner activations unless they belong to this input, parameters and mode.
  void refresh(const Pass<T>& a, const Matrix<T>& x) {
    const bool same = cache_x_.rows() == x.rows() && cache_x_.cols() == x.cols() && cache_train_ == a.train &&
                      std::memcmp(cache_x_.data(), x.data(), sizeof(T) * static_cast<std::size_t>(x.size())) == 0 &&
                      (num_params_ == 0 ||
                       std::memcmp(cache_p_.data(), a.p, sizeof(T) * static_cast<std::size_t>(num_params_)) == 0);
    if (!same) run_forward(a, x);
  }
  /// Inner tangents along the input tangent rx (null: zero) and the directions a.v (null: none).
  void run_jvp(const Pass<T>& a, const Matrix<T>& x, const Matrix<T>* rx) {
    racts_.resize(chain_.size());
    active_.assign(chain_.size(), false);
    for (Index k = 0; k < size(); ++k) {
      const Matrix<T>* rin = k == 0 ? rx : (active_[k - 1] ? &racts_[k - 1] : nullptr);
      if (!rin && (chain_[k]->num_params() == 0 || !a.v)) continue;
      chain_[k]->jvp(pass(a, k, a.reps, a.v), input(k, x), acts_[k], rin, racts_[k]);
      active_[k] = true;
    }
  }

  std::vector<LayerPtr> user_, relayouts_;
  std::vector<Layer<T, B>*> chain_;  ///< user layers with the layout changes between them
  std::vector<Index> offsets_;
  Index num_params_ = 0;
  std::vector<Matrix<T>> acts_, racts_, rracts_;
  std::vector<bool> active_;
  Matrix<T> cache_x_;
  Vector<T> cache_p_;
  bool cache_train_ = false;
};

}  // namespace curvature::nn
