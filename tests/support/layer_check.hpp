#pragma once
// The one shared checker of every layer's differentiation rules (in the spirit of dlib's
// test_layer): forward, backward (input and parameter VJP), JVP, the R-op of the backward pass,
// replicas and every Reduction are compared with central finite differences of the layer's own
// forward pass, or with single-sample / single-replica calls, in double precision.
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "curvature/nn/layer.hpp"

namespace curvature::testing {

using D = double;

inline Matrix<D> random_matrix(Index rows, Index cols, Rng& rng, D scale = 1) {
  Matrix<D> m(rows, cols);
  for (Index k = 0; k < m.size(); ++k) m.data()[k] = scale * rng.normal<D>();
  return m;
}

/// Relative error ||a - b|| / max(||b||, tiny).
inline D rel_err(const Matrix<D>& a, const Matrix<D>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return (a - b).norm() / std::max(b.norm(), D(1e-30));
}

/// Copy of m (one replica, layout of `spec`) with every sample except i set to zero.
inline Matrix<D> only_sample(const Matrix<D>& m, const nn::TensorSpec& spec, Index n, Index i) {
  Matrix<D> o = Matrix<D>::Zero(m.rows(), m.cols());
  if (spec.layout == nn::Layout::Features) {
    o.col(i) = m.col(i);
  } else {
    const Index hw = spec.shape.h * spec.shape.w;
    o.middleRows(i * hw, hw) = m.middleRows(i * hw, hw);
  }
  (void)n;
  return o;
}

template <class LayerT>
struct LayerProbe {
  LayerT& layer;
  nn::TensorSpec in, out;
  Index n, d;
  bool train;

  nn::Pass<D> pass(const Vector<D>& p, const D* v = nullptr, Index reps = 1) const {
    return nn::Pass<D>{p.data(), v, d, n, reps, train};
  }
  Matrix<D> forward(const Matrix<D>& x, const Vector<D>& p) const {
    Matrix<D> y;
    layer.forward(pass(p), x, y);
    return y;
  }
  /// (dx, parameter gradient) for cotangent dy (one replica) with a Sum sink.
  std::pair<Matrix<D>, Vector<D>> backward(const Matrix<D>& x, const Vector<D>& p, const Matrix<D>& dy,
                                           nn::Reduction mode = nn::Reduction::Sum, Index reps = 1,
                                           Matrix<D>* pout = nullptr) const {
    Matrix<D> y = forward(x, p), dx;
    Matrix<D> g = Matrix<D>::Zero(d, 1);
    if (pout) g = *pout;
    nn::Sink<D> s{mode, g.data(), d, D(1)};
    layer.backward(pass(p, nullptr, reps), x, y, dy, &dx, d ? &s : nullptr);
    if (pout) *pout = g;
    return {dx, g.col(0)};
  }
};

/// Checks `layer` on inputs of `in` with n samples. The layer is bound to `in` here.
template <class LayerT>
void check_layer(LayerT& layer, nn::TensorSpec in, Index n, std::uint64_t seed, bool train = false, D tol = 1e-6) {
  const nn::TensorSpec out = layer.bind(in);
  const Index d = layer.num_params();
  LayerProbe<LayerT> L{layer, in, out, n, d, train};
  Rng rng(seed);
  INFO("layer " << layer.name() << ", input " << in.shape.str() << ", n = " << n);
  const Matrix<D> x = random_matrix(in.rows(n), in.cols(n), rng);
  const Vector<D> p = random_matrix(d, 1, rng, 0.5).col(0);
  const Matrix<D> y = L.forward(x, p);
  REQUIRE(y.rows() == out.rows(n));
  REQUIRE(y.cols() == out.cols(n));
  const Matrix<D> dy = random_matrix(y.rows(), y.cols(), rng);
  const D h = 1e-6;

  SECTION("backward equals finite differences of <dy, f(x, p)>") {
    auto [dx, g] = L.backward(x, p, dy);
    Matrix<D> fdx(x.rows(), x.cols());
    for (Index k = 0; k < x.size(); ++k) {
      Matrix<D> xp = x, xm = x;
      xp.data()[k] += h;
      xm.data()[k] -= h;
      fdx.data()[k] = (L.forward(xp, p) - L.forward(xm, p)).cwiseProduct(dy).sum() / (2 * h);
    }
    CHECK(rel_err(dx, fdx) < tol);
    Vector<D> fg(d);
    for (Index k = 0; k < d; ++k) {
      Vector<D> pp = p, pm = p;
      pp[k] += h;
      pm[k] -= h;
      fg[k] = (L.forward(x, pp) - L.forward(x, pm)).cwiseProduct(dy).sum() / (2 * h);
    }
    if (d) CHECK(rel_err(g, fg) < tol);
  }

  const Matrix<D> rx = random_matrix(x.rows(), x.cols(), rng);
  const Vector<D> v = random_matrix(d, 1, rng).col(0);

  SECTION("jvp equals finite differences of f along (rx, v)") {
    Matrix<D> ry;
    layer.jvp(L.pass(p, d ? v.data() : nullptr), x, y, &rx, ry);
    const Matrix<D> fd = (L.forward(x + h * rx, p + h * v) - L.forward(x - h * rx, p - h * v)) / (2 * h);
    CHECK(rel_err(ry, fd) < tol);
    if (d) {  // no input tangent: the parameter part alone
      layer.jvp(L.pass(p, v.data()), x, y, nullptr, ry);
      const Matrix<D> fdv = (L.forward(x, p + h * v) - L.forward(x, p - h * v)) / (2 * h);
      CHECK(rel_err(ry, fdv) < tol);
    }
  }

  const Matrix<D> rdy = random_matrix(dy.rows(), dy.cols(), rng);

  SECTION("backward_r equals finite differences of the backward pass along (rx, v, rdy)") {
    for (bool with_rx : {true, false}) {
      INFO("with rx: " << with_rx);
      Matrix<D> ry, rdx;
      if (with_rx || d) layer.jvp(L.pass(p, d ? v.data() : nullptr), x, y, with_rx ? &rx : nullptr, ry);
      Vector<D> rg = Vector<D>::Zero(d);
      nn::Sink<D> s{nn::Reduction::Sum, rg.data(), d, D(1)};
      const bool have_ry = with_rx || d;
      layer.backward_r(L.pass(p, d ? v.data() : nullptr), x, y, with_rx ? &rx : nullptr, have_ry ? &ry : nullptr,
                       dy, rdy, &rdx, d ? &s : nullptr);
      const Matrix<D> rxs = with_rx ? rx : Matrix<D>(Matrix<D>::Zero(x.rows(), x.cols()));
      auto [dxp, gp] = L.backward(x + h * rxs, p + h * v, dy + h * rdy);
      auto [dxm, gm] = L.backward(x - h * rxs, p - h * v, dy - h * rdy);
      CHECK(rel_err(rdx, (dxp - dxm) / (2 * h)) < tol);
      if (d) CHECK(rel_err(rg, (gp - gm) / (2 * h)) < tol);
    }
  }

  SECTION("replicas equal separate calls") {
    const Index reps = 2;
    Matrix<D> V(d, reps);
    if (d) V << v, random_matrix(d, 1, rng).col(0);
    Matrix<D> rx2(x.rows(), 2 * x.cols()), rdy2(dy.rows(), 2 * dy.cols()), dy2(dy.rows(), 2 * dy.cols());
    rx2 << rx, random_matrix(x.rows(), x.cols(), rng);
    rdy2 << rdy, random_matrix(dy.rows(), dy.cols(), rng);
    dy2 << dy, rdy;
    Matrix<D> ry2, rdx2, dx2;
    layer.jvp(L.pass(p, d ? V.data() : nullptr, reps), x, y, &rx2, ry2);
    Matrix<D> RG = Matrix<D>::Zero(d, reps);
    nn::Sink<D> s{nn::Reduction::PerReplica, RG.data(), d, D(1)};
    layer.backward_r(L.pass(p, d ? V.data() : nullptr, reps), x, y, &rx2, &ry2, dy, rdy2, &rdx2, d ? &s : nullptr);
    layer.backward(L.pass(p, nullptr, reps), x, y, dy2, &dx2, nullptr);
    if (d) {  // a Sum over replicas equals the sum of the per-replica results
      Vector<D> total = Vector<D>::Zero(d);
      nn::Sink<D> st{nn::Reduction::Sum, total.data(), d, D(1)};
      Matrix<D> unused;
      layer.backward_r(L.pass(p, V.data(), reps), x, y, &rx2, &ry2, dy, rdy2, &unused, &st);
      CHECK(rel_err(total, RG.rowwise().sum()) < 1e-12);
      Vector<D> gsum = Vector<D>::Zero(d);
      nn::Sink<D> sg{nn::Reduction::Sum, gsum.data(), d, D(1)};
      layer.backward(L.pass(p, nullptr, reps), x, y, dy2, &unused, &sg);
      CHECK(rel_err(gsum, L.backward(x, p, dy).second + L.backward(x, p, rdy).second) < 1e-12);
    }
    for (Index r = 0; r < reps; ++r) {
      const Matrix<D> rxr = rx2.middleCols(r * x.cols(), x.cols()), rdyr = rdy2.middleCols(r * dy.cols(), dy.cols());
      Matrix<D> ry, rdx;
      const D* vr = d ? V.col(r).data() : nullptr;
      layer.jvp(L.pass(p, vr), x, y, &rxr, ry);
      CHECK(rel_err(Matrix<D>(ry2.middleCols(r * ry.cols(), ry.cols())), ry) < 1e-12);
      Vector<D> rg = Vector<D>::Zero(d);
      nn::Sink<D> s1{nn::Reduction::Sum, rg.data(), d, D(1)};
      layer.backward_r(L.pass(p, vr), x, y, &rxr, &ry, dy, rdyr, &rdx, d ? &s1 : nullptr);
      CHECK(rel_err(Matrix<D>(rdx2.middleCols(r * rdx.cols(), rdx.cols())), rdx) < 1e-12);
      if (d) CHECK(rel_err(RG.col(r), rg) < 1e-12);
      auto [dxr, gr] = L.backward(x, p, Matrix<D>(dy2.middleCols(r * dy.cols(), dy.cols())));
      CHECK(rel_err(Matrix<D>(dx2.middleCols(r * dxr.cols(), dxr.cols())), dxr) < 1e-12);
    }
  }

  SECTION("jvp2 equals finite differences of the JVP along the curve (x + t rx + t^2/2 rrx, p + t v)") {
    if (!layer.has_jvp2()) return;
    const Index reps = 2;
    Matrix<D> V(d, reps);
    if (d) V = random_matrix(d, reps, rng);
    const Matrix<D> rx2 = random_matrix(x.rows(), reps * x.cols(), rng);
    const Matrix<D> rrx2 = random_matrix(x.rows(), reps * x.cols(), rng);
    const Index xc = x.cols();
    for (int with = 0; with < 4; ++with) {
      const bool with_rx = with & 1, with_rrx = with & 2;
      INFO("with rx: " << with_rx << ", with rrx: " << with_rrx);
      // The reference, one replica at a time: the derivative at t = 0 of J(t) (rx + t rrx, v) by central
      // differences of the layer's first-order jvp (itself checked against the forward pass above).
      Matrix<D> ref(y.rows(), reps * y.cols());
      for (Index r = 0; r < reps; ++r) {
        const Matrix<D> rxr = with_rx ? Matrix<D>(rx2.middleCols(r * xc, xc)) : Matrix<D>::Zero(x.rows(), xc);
        const Matrix<D> rrxr = with_rrx ? Matrix<D>(rrx2.middleCols(r * xc, xc)) : Matrix<D>::Zero(x.rows(), xc);
        const Vector<D> vr = d ? Vector<D>(V.col(r)) : Vector<D>();
        Matrix<D> side[2];
        for (int k = 0; k < 2; ++k) {
          const D t = k ? -h : h;
          const Matrix<D> xt = x + t * rxr + (t * t / 2) * rrxr;
          const Vector<D> pt = d ? Vector<D>(p + t * vr) : p;
          const Matrix<D> tan = rxr + t * rrxr;
          const Matrix<D> yt = L.forward(xt, pt);
          layer.jvp(L.pass(pt, d ? vr.data() : nullptr), xt, yt, &tan, side[k]);
        }
        ref.middleCols(r * y.cols(), y.cols()) = (side[0] - side[1]) / (2 * h);
      }
      Matrix<D> ry, rry;
      const Matrix<D> y0 = L.forward(x, p);
      if (with_rx || d) layer.jvp(L.pass(p, d ? V.data() : nullptr, reps), x, y0, with_rx ? &rx2 : nullptr, ry);
      const bool on = layer.jvp2(L.pass(p, d ? V.data() : nullptr, reps), x, y0, with_rx ? &rx2 : nullptr,
                                 with_rrx ? &rrx2 : nullptr, rry);
      if (on) {
        CHECK(rel_err(rry, ref) < tol);
      } else {
        CHECK(ref.norm() < 1e-7 * (1 + y.norm()));  // "zero" must really be zero
      }
      if (with_rrx) CHECK(on);  // a second-order input tangent always reaches the output
    }
  }

  if (d == 0 || layer.couples_samples(train)) return;

  SECTION("per-sample reductions equal single-sample cotangents") {
    const Index reps = 2;
    Matrix<D> dy2(dy.rows(), 2 * dy.cols());
    dy2 << dy, rdy;
    Matrix<D> cols(d, reps * n), sq = Matrix<D>::Zero(d, n), sum_sq = Matrix<D>::Zero(d, 1);
    L.backward(x, p, dy2, nn::Reduction::PerColumn, reps, &cols);
    L.backward(x, p, dy2, nn::Reduction::PerSampleSquares, reps, &sq);
    L.backward(x, p, dy2, nn::Reduction::SumSquares, reps, &sum_sq);
    Matrix<D> ref_sq = Matrix<D>::Zero(d, n);
    for (Index r = 0; r < reps; ++r)
      for (Index i = 0; i < n; ++i) {
        const Matrix<D> dyr = dy2.middleCols(r * dy.cols(), dy.cols());
        const Vector<D> gi = L.backward(x, p, only_sample(dyr, out, n, i)).second;
        CHECK(rel_err(cols.col(r * n + i), gi) < 1e-12);
        ref_sq.col(i) += gi.array().square().matrix();
      }
    CHECK(rel_err(sq, ref_sq) < 1e-12);
    CHECK(rel_err(sum_sq.col(0), ref_sq.rowwise().sum()) < 1e-12);
  }

  SECTION("per-sample R-op equals single-sample R-ops") {
    Matrix<D> ry, cols(d, n);
    layer.jvp(L.pass(p, v.data()), x, y, &rx, ry);
    nn::Sink<D> s{nn::Reduction::PerColumn, cols.data(), d, D(1)};
    layer.backward_r(L.pass(p, v.data()), x, y, &rx, &ry, dy, rdy, nullptr, &s);
    for (Index i = 0; i < n; ++i) {
      Vector<D> gi = Vector<D>::Zero(d);
      nn::Sink<D> s1{nn::Reduction::Sum, gi.data(), d, D(1)};
      layer.backward_r(L.pass(p, v.data()), x, y, &rx, &ry, only_sample(dy, out, n, i), only_sample(rdy, out, n, i),
                       nullptr, &s1);
      CHECK(rel_err(cols.col(i), gi) < 1e-12);
    }
  }
}

}  // namespace curvature::testing
