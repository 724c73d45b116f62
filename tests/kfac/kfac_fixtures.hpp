#pragma once
// Small models and independent references for the K-FAC tests: textbook forward passes of an MLP
// and a conv net written here from the parameter layout of SPEC 0 (no pass of the library), the
// Jacobians of the output with respect to each layer's output by the chain rule, and the Kronecker
// block placed by hand in the library's parameter order. The closed-form output Hessians, softmax,
// exact one-sample Jacobians and batch-size-1 gradients are the shared ones of
// support/references.hpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "curvature/curvature.hpp"
#include "curvature/operators/kfac.hpp"
#include "support/references.hpp"

namespace kfix {

using namespace curvature;
using namespace curvature::testing;
using Kfac = KfacOperator<D, S>;

/// The operator applied to the identity: its d x d matrix.
template <class Op>
Matrix<D> dense(Op& op) {
  Matrix<D> out;
  op.apply(Matrix<D>::Identity(op.dim(), op.dim()), out);
  return out;
}

/// Where entry (o, j) of Wbar = [W | b] (j = in: the bias) lives in theta (SPEC 0).
inline Index lib_index(Index offset, Index in, Index out, Index o, Index j) {
  return offset + (j < in ? o * in + j : out * in + o);
}

/// Adds the block Gf (x) Af (row-major order of Wbar) to m at the layer's parameters, entry by entry.
inline void place_kron(Matrix<D>& m, Index offset, const Matrix<D>& gf, const Matrix<D>& af) {
  const Index in = af.rows() - 1, out = gf.rows();
  for (Index o = 0; o < out; ++o)
    for (Index j = 0; j <= in; ++j)
      for (Index o2 = 0; o2 < out; ++o2)
        for (Index j2 = 0; j2 <= in; ++j2)
          m(lib_index(offset, in, out, o, j), lib_index(offset, in, out, o2, j2)) += gf(o, o2) * af(j, j2);
}

/// [z; 1].
inline Vector<D> homogeneous(const Vector<D>& z) {
  Vector<D> a(z.size() + 1);
  a << z, 1;
  return a;
}

/// 4 -> 6 -> 5 -> 3 with Tanh (layers 0, 2, 4 are Linear; d = 83).
inline Net small_mlp(std::uint64_t seed) {
  Net m(nn::Shape{4, 1, 1});
  m.add(nn::Linear<D, S>(6)).add(nn::Tanh<D, S>()).add(nn::Linear<D, S>(5)).add(nn::Tanh<D, S>());
  m.add(nn::Linear<D, S>(3));
  m.init(seed);
  return m;
}

/// W (row-major in theta) and b of the Linear layer l.
struct DenseParams {
  Matrix<D> w;
  Vector<D> b;
};
inline DenseParams linear_params(const Net& m, Index l) {
  const auto& lin = dynamic_cast<const nn::Linear<D, S>&>(m.layer(l));
  const Index in = lin.in_features(), out = lin.out_features(), off = m.param_offset(l);
  DenseParams p;
  p.w = ConstRowMatrixMap<D>(m.params().data() + off, out, in);
  p.b = m.params().segment(off + out * in, out);
  return p;
}

/// Per sample of small_mlp, by hand: the inputs a_l of the three Linear layers, the outputs f and
/// the Jacobians J_l = df / dz_l of the output with respect to each Linear layer's output z_l.
struct MlpSample {
  std::vector<Vector<D>> inputs;
  std::vector<Matrix<D>> jac;
  Vector<D> f;
};
inline MlpSample mlp_by_hand(const Net& m, const Vector<D>& x) {
  const DenseParams l0 = linear_params(m, 0), l1 = linear_params(m, 2), l2 = linear_params(m, 4);
  MlpSample s;
  const Vector<D> a1 = (l0.w * x + l0.b).array().tanh().matrix();
  const Vector<D> a2 = (l1.w * a1 + l1.b).array().tanh().matrix();
  s.f = l2.w * a2 + l2.b;
  s.inputs = {x, a1, a2};
  const Matrix<D> j2 = Matrix<D>::Identity(3, 3);
  const Matrix<D> j1 = l2.w * (1 - a2.array().square()).matrix().asDiagonal();
  const Matrix<D> j0 = j1 * l1.w * (1 - a1.array().square()).matrix().asDiagonal();
  s.jac = {j0, j1, j2};
  return s;
}

}  // namespace kfix
