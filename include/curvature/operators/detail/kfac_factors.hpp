#pragma once
// Internals of K-FAC (operators/kfac.hpp, docs/kfac.md): the Kronecker factors of one layer from
// the inputs and output cotangents of one batched pass, and the map between a layer's slice of
// theta and the matrix on which a Kronecker product acts.
//
// Layout. A Linear or Conv2d layer with a = in + 1 (in = C*k*k for a convolution) and g = out
// holds theta_l = [vec_row(W) (g x in); b (g)]. In memory vec_row(W) is the column-major W^T
// (in x g), so the slice *is* the top of Wbar^T = [W^T; b^T] (a x g), the bias being its last row.
// For the row-major vec of Wbar = [W | b], (G (x) A) vec_row(Wbar) = vec_row(G Wbar A), i.e.
// Wbar^T -> A Wbar^T G: every K-FAC product is a product on the a x g matrix Wbar^T.
#include <Eigen/Core>

#include "curvature/core/types.hpp"

namespace curvature::detail {

/// Where one layer's parameters live and the sizes of its factors.
struct KfacShape {
  Index offset = 0;  ///< first parameter of the layer in theta
  Index a = 0;       ///< rows of A: inputs (or patch length) + 1 for the bias
  Index g = 0;       ///< rows of G: outputs (or output channels)
  Index size() const { return a * g; }
};

/// u (a x m*g) = [Wbar_r^T for each column r of v]: the layer's slices of the m columns of v.
template <class T>
void kfac_gather(const Matrix<T>& v, const KfacShape& s, Matrix<T>& u) {
  const Index m = v.cols();
  u.resize(s.a, m * s.g);
  for (Index r = 0; r < m; ++r) {
    const T* col = v.col(r).data() + s.offset;
    u.block(0, r * s.g, s.a - 1, s.g) = ConstMatrixMap<T>(col, s.a - 1, s.g);
    u.row(s.a - 1).segment(r * s.g, s.g) = ConstVectorMap<T>(col + (s.a - 1) * s.g, s.g).transpose();
  }
}

/// The inverse of kfac_gather: writes the m blocks of u into the layer's rows of out.
template <class T>
void kfac_scatter(const Matrix<T>& u, const KfacShape& s, Matrix<T>& out) {
  for (Index r = 0; r < out.cols(); ++r) {
    T* col = out.col(r).data() + s.offset;
    MatrixMap<T>(col, s.a - 1, s.g) = u.block(0, r * s.g, s.a - 1, s.g);
    VectorMap<T>(col + (s.a - 1) * s.g, s.g) = u.row(s.a - 1).segment(r * s.g, s.g).transpose();
  }
}

/// Copies the lower triangle into the upper one, so the factor is exactly symmetric.
template <class T>
void symmetrize_from_lower(Matrix<T>& m) {
  m.template triangularView<Eigen::StrictlyUpper>() = m.transpose();
}

/// A = scale * sum over columns z of zbar zbar^T, zbar = [z; 1] (the homogeneous input; bias last).
/// `z` holds one input (or patch) per column.
template <class T, class Z>
Matrix<T> input_factor(const Z& z, T scale) {
  const Index in = z.rows();
  Matrix<T> a = Matrix<T>::Zero(in + 1, in + 1);
  a.topLeftCorner(in, in).template selfadjointView<Eigen::Lower>().rankUpdate(z, scale);
  a.block(in, 0, 1, in) = scale * z.rowwise().sum().transpose();
  a(in, in) = scale * static_cast<T>(z.cols());
  symmetrize_from_lower(a);
  return a;
}

/// Lower triangle of g += scale * sum over the columns c of `c` of c c^T (one cotangent per column).
template <class T, class C>
void accumulate_output_factor(Matrix<T>& g, const C& c, T scale) {
  g.template selfadjointView<Eigen::Lower>().rankUpdate(c, scale);
}

}  // namespace curvature::detail
