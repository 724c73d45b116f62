// Batch shards (Sequential, "Batch shards"): passes over N >= 128 samples run as shards of
// consecutive samples, each through clones of the layers. Checked against batch-size-1 passes
// (which are never sharded), across backends and thread counts bit for bit, and for the cases
// that must not shard (coupled samples, a layer without clone) or must see fresh layer state.
#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "curvature/curvature.hpp"
#include "support/references.hpp"

using namespace curvature;
using namespace curvature::testing;

namespace {

/// The model's BatchNorm layer (mutable_layer: the shards are made again afterwards).
template <class B>
nn::BatchNorm<D, B>& batchnorm_of(nn::Sequential<D, B>& m) {
  for (Index l = 0; l < m.num_layers(); ++l)
    if (dynamic_cast<const nn::BatchNorm<D, B>*>(&m.layer(l))) return dynamic_cast<nn::BatchNorm<D, B>&>(m.mutable_layer(l));
  throw std::logic_error("no BatchNorm layer");
}

/// Every built-in layer kind the shards clone: conv, eval-mode BatchNorm, ReLU + max-pool (which
/// Sequential reorders), a residual block, average pooling, GELU, LeakyReLU, flatten, linear.
template <class B>
nn::Sequential<D, B> shard_net(B b) {
  nn::Sequential<D, B> m(nn::Shape{2, 8, 8}, b);
  nn::Residual<D, B> block;
  block.add(nn::Conv2d<D, B>(3, 3, 1, 1)).add(nn::Tanh<D, B>());
  m.add(nn::Conv2d<D, B>(3, 3, 1, 1)).add(nn::BatchNorm<D, B>()).add(nn::ReLU<D, B>()).add(nn::MaxPool2d<D, B>(2));
  m.add(std::move(block)).add(nn::AvgPool2d<D, B>(2)).add(nn::Flatten<D, B>());
  m.add(nn::Linear<D, B>(7)).add(nn::GELU<D, B>()).add(nn::Linear<D, B>(6)).add(nn::LeakyReLU<D, B>(0.1));
  m.add(nn::Linear<D, B>(4));
  m.init(11);
  Rng rng(12);
  batchnorm_of(m).set_running_stats(random_matrix(3, 1, rng, 0.3).col(0), Vector<D>::Constant(3, 0.7));
  return m;
}

/// A layer without clone(): y = 2x.
class Doubling final : public nn::Layer<D, S> {
 public:
  std::string name() const override { return "doubling"; }
  nn::TensorSpec bind(const nn::TensorSpec& in) override { return this->out_ = this->in_ = in; }
  void forward(const nn::Pass<D>&, const Matrix<D>& x, Matrix<D>& y) override { y = 2 * x; }
  void jvp(const nn::Pass<D>&, const Matrix<D>&, const Matrix<D>&, const Matrix<D>* rx, Matrix<D>& ry) override {
    ry = 2 * *rx;
  }
  void backward(const nn::Pass<D>&, const Matrix<D>&, const Matrix<D>&, const Matrix<D>& dy, Matrix<D>* dx,
                const nn::Sink<D>*) override {
    if (dx) *dx = 2 * dy;
  }
  void backward_r(const nn::Pass<D>&, const Matrix<D>&, const Matrix<D>&, const Matrix<D>*, const Matrix<D>*,
                  const Matrix<D>&, const Matrix<D>& rdy, Matrix<D>* rdx, const nn::Sink<D>*) override {
    if (rdx) *rdx = 2 * rdy;
  }
};

}  // namespace

TEST_CASE("Shard counts depend on the batch size and the reduction alone", "[model][shards]") {
  using Net2 = nn::Sequential<D, backend::OpenMP>;
  CHECK(Net2::shard_count(127, Reduction::Sum, 1) == 1);
  CHECK(Net2::shard_count(128, Reduction::Sum, 1) == 2);
  CHECK(Net2::shard_count(200, Reduction::SumSquares, 1) == 3);
  CHECK(Net2::shard_count(256, Reduction::PerReplica, 1) == 4);
  CHECK(Net2::shard_count(5000, Reduction::Sum, 1) == 4);
  CHECK(Net2::shard_count(256, Reduction::PerReplica, 2) == 1);  // a d x 2 reduction per shard: whole
  CHECK(Net2::shard_count(256, Reduction::PerColumn, 1) == 1);
  CHECK(Net2::shard_count(256, Reduction::PerSampleSquares, 1) == 1);
}

TEST_CASE("Sharded passes equal sums of batch-size-1 passes", "[model][shards]") {
  auto m = shard_net(S{});
  const CE ce;
  for (const Index n : {Index{128}, Index{200}, Index{256}}) {
    DYNAMIC_SECTION("N = " << n << " (" << Net::shard_count(n, Reduction::Sum, 1) << " shards)") {
      Rng rng(static_cast<std::uint64_t>(n));
      const Matrix<D> x = random_matrix(m.input_size(), n, rng);
      const Labels y = labels(n, 4, rng);
      const Matrix<D> v = random_matrix(m.num_params(), 1, rng);
      // References: one unsharded pass per sample.
      Vector<D> grad = Vector<D>::Zero(m.num_params()), ef = grad, ggn = grad, hv = grad;
      D loss = 0;
      for (Index i = 0; i < n; ++i) {
        const Matrix<D> xi = x.col(i);
        const Labels yi = target_of(y, i);
        const auto lg = loss_and_gradient(m, ce, xi, yi);
        loss += lg.loss / static_cast<D>(n);
        grad += lg.gradient / static_cast<D>(n);
        ef += lg.gradient.cwiseAbs2() / static_cast<D>(n);
        ggn += ggn_diagonal(m, ce, xi, yi) / static_cast<D>(n);
        hv += hvp(m, ce, xi, yi, v).col(0) / static_cast<D>(n);
      }
      const auto lg = loss_and_gradient(m, ce, x, y);
      CHECK_THROWS_AS(m.layer_input(1, x), ValueError);  // the pass ran as shards
      CHECK(lg.loss == Approx(loss).epsilon(1e-13));
      CHECK(rel_err(lg.gradient, grad) < 1e-12);
      CHECK(rel_err(empirical_fisher_diagonal(m, ce, x, y), ef) < 1e-12);
      CHECK(rel_err(ggn_diagonal(m, ce, x, y), ggn) < 1e-12);
      CHECK(rel_err(hvp(m, ce, x, y, v), hv) < 1e-12);
      // Whole-batch passes on request, with the layer state they leave.
      Vector<D> whole;
      m.backward(x, [&](const Matrix<D>& f) { return Matrix<D>(ce.gradient(f, y)); }, Reduction::Sum, whole,
                 D(1) / static_cast<D>(n), nn::Sharding::Off);
      CHECK(rel_err(whole, grad) < 1e-12);
      CHECK(m.layer_input(m.num_layers() - 1, x).cols() == n);
    }
  }
}

TEST_CASE("Sharded passes give the same bits on every backend and thread count", "[model][shards][backend]") {
  auto serial = shard_net(S{});
  const CE ce;
  for (const Index n : {Index{128}, Index{192}, Index{256}}) {
    Rng rng(static_cast<std::uint64_t>(n) + 1);
    const Matrix<D> x = random_matrix(serial.input_size(), n, rng);
    const Labels y = labels(n, 4, rng);
    const Matrix<D> v = random_matrix(serial.num_params(), 1, rng);
    const Vector<D> g = loss_and_gradient(serial, ce, x, y).gradient;
    const Matrix<D> hv = hvp(serial, ce, x, y, v);
    const Vector<D> ef = empirical_fisher_diagonal(serial, ce, x, y);
    for (const int threads : {1, 2, 3, 4}) {
      DYNAMIC_SECTION("N = " << n << ", OpenMP(" << threads << ")") {
        auto m = shard_net(backend::OpenMP{threads});  // concurrent shards where threads divide them
        CHECK(loss_and_gradient(m, ce, x, y).gradient == g);
        CHECK(hvp(m, ce, x, y, v) == hv);
        CHECK(empirical_fisher_diagonal(m, ce, x, y) == ef);
      }
    }
  }
}

TEST_CASE("Passes that must see the whole batch or fresh layer state", "[model][shards]") {
  const CE ce;
  Rng rng(21);
  const Index n = 128;
  auto m = shard_net(backend::OpenMP{2});
  const Matrix<D> x = random_matrix(m.input_size(), n, rng);
  const Labels y = labels(n, 4, rng);
  const auto whole = [&](auto& model) {
    Vector<D> g;
    model.backward(x, [&](const Matrix<D>& f) { return Matrix<D>(ce.gradient(f, y)); }, Reduction::Sum, g,
                   D(1) / static_cast<D>(n), nn::Sharding::Off);
    return g;
  };
  SECTION("BatchNorm in training mode couples the samples: one whole-batch pass") {
    m.set_training(true);
    const Vector<D> auto_g = loss_and_gradient(m, ce, x, y).gradient;
    CHECK(m.layer_input(m.num_layers() - 1, x).cols() == n);  // not sharded
    CHECK(auto_g == whole(m));               // shards would normalise each shard by its own statistics
  }
  SECTION("New running statistics reach the shards") {
    const Vector<D> before = loss_and_gradient(m, ce, x, y).gradient;  // shards made here
    batchnorm_of(m).set_running_stats(Vector<D>::Constant(3, 0.5), Vector<D>::Constant(3, 2.0));
    const Vector<D> after = loss_and_gradient(m, ce, x, y).gradient;
    CHECK(rel_err(after, before) > 1e-3);
    CHECK(rel_err(after, whole(m)) < 1e-12);
  }
  SECTION("A training-mode pass moves the running statistics, and the shards follow") {
    (void)loss_and_gradient(m, ce, x, y);  // shards made here
    m.set_training(true);
    (void)m.forward(x);
    (void)m.forward(x);
    m.set_training(false);
    CHECK(rel_err(loss_and_gradient(m, ce, x, y).gradient, whole(m)) < 1e-12);
  }
  SECTION("A layer without clone(): whole-batch passes") {
    nn::Sequential<D, S> u(nn::Shape{5, 1, 1});
    u.add(nn::Linear<D, S>(6)).add(nn::Tanh<D, S>());
    u.add(Doubling{});
    u.add(nn::Linear<D, S>(3));
    u.init(5);
    const Matrix<D> xu = random_matrix(5, n, rng);
    const Labels yu = labels(n, 3, rng);
    Vector<D> ref = Vector<D>::Zero(u.num_params());
    for (Index i = 0; i < n; ++i) ref += gradient_one(u, ce, xu, i, yu) / static_cast<D>(n);
    CHECK(rel_err(loss_and_gradient(u, ce, xu, yu).gradient, ref) < 1e-12);
    CHECK(u.layer_input(2, xu).cols() == n);  // not sharded
  }
}

namespace {

/// A net without convolutions (whose blocks of directions stay whole): linear, tanh, a residual
/// block of linear + GELU, LeakyReLU, ReLU, and optionally an eval-mode BatchNorm on features
/// (which has no second-order forward mode: jet2 needs the net without it).
template <class B>
nn::Sequential<D, B> group_net(B b, bool batchnorm) {
  nn::Sequential<D, B> m(nn::Shape{5, 1, 1}, b);
  nn::Residual<D, B> block;
  block.add(nn::Linear<D, B>(6)).add(nn::GELU<D, B>());
  m.add(nn::Linear<D, B>(6));
  if (batchnorm) m.add(nn::BatchNorm<D, B>());
  m.add(nn::Tanh<D, B>()).add(std::move(block));
  m.add(nn::Linear<D, B>(5)).add(nn::LeakyReLU<D, B>(0.1)).add(nn::Linear<D, B>(4)).add(nn::ReLU<D, B>());
  m.add(nn::Linear<D, B>(3));
  m.init(21);
  if (batchnorm) {
    Rng rng(22);
    batchnorm_of(m).set_running_stats(random_matrix(6, 1, rng, 0.3).col(0), Vector<D>::Constant(6, 0.6));
  }
  return m;
}

}  // namespace

TEST_CASE("HVP blocks and jet2 in replica groups equal whole blocks", "[model][shards]") {
  const CE ce;
  // N = 129: groups of one direction; N = 64: groups of four (the last one of three). With
  // BatchNorm the quadratic forms come from HVPs, without it from jet2.
  for (const bool batchnorm : {true, false})
  for (const Index n : {Index{129}, Index{64}}) {
    DYNAMIC_SECTION("N = " << n << (batchnorm ? ", BatchNorm" : ", jet2")) {
      auto m = group_net(S{}, batchnorm);
      REQUIRE(m.supports_jet2() == !batchnorm);
      Rng rng(static_cast<std::uint64_t>(n) + 5);
      const Matrix<D> x = random_matrix(m.input_size(), n, rng);
      const Labels y = labels(n, 3, rng);
      const Matrix<D> v = random_matrix(m.num_params(), 7, rng);
      const D inv_n = D(1) / static_cast<D>(n);
      // Reference: the mean of batch-size-1 HVP blocks (one sample: one group, the whole block).
      Matrix<D> hv_ref = Matrix<D>::Zero(m.num_params(), v.cols());
      for (Index i = 0; i < n; ++i) hv_ref += hvp(m, ce, Matrix<D>(x.col(i)), target_of(y, i), v) * inv_n;
      const Matrix<D> hv = hvp(m, ce, x, y, v);
      CHECK(rel_err(hv, hv_ref) < 1e-12);
      // The whole block (Sharding::Off keeps it whole), per replica and per column: equal to rounding.
      const auto rop = [&](const Matrix<D>& f, const Matrix<D>& rf, Matrix<D>& df, Matrix<D>& rdf) {
        df = ce.gradient(f, y) * inv_n;
        rdf = ce.hessian_product(f, y, rf) * inv_n;
      };
      Matrix<D> whole;
      m.hvp(x, v, rop, Reduction::PerReplica, whole, D(1), nn::Sharding::Off);
      CHECK(rel_err(hv, whole) < 1e-14);
      Matrix<D> per_sample, per_sample_whole;
      per_sample_hvp(m, ce, x, y, v, per_sample);
      m.hvp(x, v, [&](const Matrix<D>& f, const Matrix<D>& rf, Matrix<D>& df, Matrix<D>& rdf) {
        df = ce.gradient(f, y);
        rdf = ce.hessian_product(f, y, rf);
      }, Reduction::PerColumn, per_sample_whole, D(1), nn::Sharding::Off);
      CHECK(rel_err(per_sample, per_sample_whole) < 1e-14);
      for (const Index i : {Index{0}, n - 1}) {  // H_i v_r for the first and last sample
        const Matrix<D> hi = hvp(m, ce, Matrix<D>(x.col(i)), target_of(y, i), v);
        for (const Index r : {Index{0}, Index{6}}) CHECK(rel_err(per_sample.col(r * n + i), hi.col(r)) < 1e-12);
      }
      // Quadratic forms by second-order forward mode against v_r' H v_r.
      const Vector<D> q = hessian_quadratic_forms(m, ce, x, y, v);
      const Vector<D> q_ref = hv_ref.cwiseProduct(v).colwise().sum().transpose();
      CHECK(rel_err(q, q_ref) < 1e-11);
      // Groups side by side on 2 and 3 threads (workers), or one after another with split products
      // where there are fewer groups than threads: the same bits as on one thread.
      for (const int threads : {2, 3}) {
        auto mt = group_net(backend::OpenMP{threads}, batchnorm);
        CHECK(hessian_quadratic_forms(mt, ce, x, y, v) == q);
        CHECK(hvp(mt, ce, x, y, v) == hv);
        Matrix<D> per_sample_t;
        per_sample_hvp(mt, ce, x, y, v, per_sample_t);
        CHECK(per_sample_t == per_sample);
      }
    }
  }
}

TEST_CASE("Column hooks write directions and read results group by group", "[model][shards]") {
  const CE ce;
  Rng rng(31);
  const Index n = 129;  // groups of one direction
  auto ref_model = group_net(S{}, false);  // has jet2
  const Matrix<D> x = random_matrix(ref_model.input_size(), n, rng);
  const Labels y = labels(n, 3, rng);
  const Matrix<D> v_ref = random_matrix(ref_model.num_params(), 5, rng);
  HessianOperator ref_op(ref_model, ce, x, y);
  Matrix<D> hv_ref;
  ref_op.apply(v_ref, hv_ref);
  Vector<D> q_ref;
  ref_op.quadratic_forms(v_ref, q_ref);
  for (const int threads : {1, 2}) {
    DYNAMIC_SECTION("OpenMP(" << threads << ")") {
      auto m = group_net(backend::OpenMP{threads}, false);
      HessianOperator hop(m, ce, x, y);
      // The block starts as NaN: a column read before its before() would poison the results.
      Matrix<D> v = Matrix<D>::Constant(v_ref.rows(), v_ref.cols(), std::numeric_limits<D>::quiet_NaN()), out;
      std::vector<std::pair<Index, Index>> before, after;
      const ColumnHooks hooks{[&](Index j0, Index j1) {
                                before.emplace_back(j0, j1);
                                v.middleCols(j0, j1 - j0) = v_ref.middleCols(j0, j1 - j0);
                              },
                              [&](Index j0, Index j1) {
                                after.emplace_back(j0, j1);
                                CHECK(out.middleCols(j0, j1 - j0) == hv_ref.middleCols(j0, j1 - j0));  // final
                              }};
      hop.apply(v, out, hooks);
      CHECK(out == hv_ref);
      // One thread: groups one after another, hooks around each; two: workers, hooks around all.
      std::vector<std::pair<Index, Index>> expected;
      if (threads == 1)
        for (Index j = 0; j < 5; ++j) expected.emplace_back(j, j + 1);
      else
        expected.emplace_back(0, 5);
      CHECK(before == expected);
      CHECK(after == expected);
      v.setConstant(std::numeric_limits<D>::quiet_NaN());
      before.clear();
      Vector<D> q;
      hop.quadratic_forms(v, q, ColumnHooks{hooks.before, {}});
      CHECK(q == q_ref);
      CHECK(before == expected);
      // concurrent_before: with workers, each group's before() runs on the worker that takes it,
      // just before the group (so every group's, in some order); alone, as without it.
      std::vector<std::pair<Index, Index>> per_group;
      for (Index j = 0; j < 5; ++j) per_group.emplace_back(j, j + 1);
      std::mutex lock;
      const ColumnHooks concurrent{[&](Index j0, Index j1) {
                                     v.middleCols(j0, j1 - j0) = v_ref.middleCols(j0, j1 - j0);
                                     const std::lock_guard<std::mutex> hold(lock);
                                     before.emplace_back(j0, j1);
                                   },
                                   hooks.after, true};
      v.setConstant(std::numeric_limits<D>::quiet_NaN());
      before.clear();
      after.clear();
      hop.apply(v, out, concurrent);
      CHECK(out == hv_ref);
      std::sort(before.begin(), before.end());
      CHECK(before == per_group);
      CHECK(after == expected);
      v.setConstant(std::numeric_limits<D>::quiet_NaN());
      before.clear();
      hop.quadratic_forms(v, q, concurrent.before_only());
      CHECK(q == q_ref);
      std::sort(before.begin(), before.end());
      CHECK(before == per_group);
      // Hutchinson writes its probes and adds up the diagonal's products through the hooks: the
      // same bits as through an operator without them (all probes first, all products after).
      struct Plain {
        using Scalar = D;
        HessianOperator<nn::Sequential<D, backend::OpenMP>, CE>* op;
        Index dim() const { return op->dim(); }
        void apply(const Matrix<D>& a, Matrix<D>& b) { op->apply(a, b); }
        void quadratic_forms(const Matrix<D>& a, Vector<D>& b) { op->quadratic_forms(a, b); }
      } plain{&hop};
      static_assert(ColumnHookOperator<decltype(hop)> && !ColumnHookOperator<Plain>);
      HutchinsonOptions o;
      o.max_probes = 23;
      o.block_size = 6;
      o.seed = 9;
      const auto d_hooks = hutchinson_diagonal(hop, o), d_plain = hutchinson_diagonal(plain, o);
      CHECK(d_hooks.value == d_plain.value);
      CHECK(d_hooks.std_error == d_plain.std_error);
      CHECK(hutchinson_trace(hop, o).value == hutchinson_trace(plain, o).value);
    }
  }
}
