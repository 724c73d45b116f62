#pragma once
// Parameter-gradient reductions of a convolution, whose contribution for column (r, i) is
// sum_t B_t(r)_i^T A_t(r)_i: A = output cotangent rows of sample i [P, Cout], B = im2col rows of
// sample i [P, C*k*k]. The weight block is W^T [CKK, Cout] (W row-major [Cout, CKK] in theta),
// followed by the bias [Cout].
#include <initializer_list>
#include <vector>

#include "curvature/nn/layer.hpp"

namespace curvature::nn::detail {

template <class T>
struct ConvTerm {
  const Matrix<T>* a;  ///< [N*P, R*Cout] or [N*P, Cout] (shared by all replicas)
  const Matrix<T>* b;  ///< [N*P, R*CKK] or [N*P, CKK]
  bool bias = true;    ///< false for the R-op term dy * cols(R x), which has no bias part
};

struct ConvDims {
  Index n, p, ckk, cout, reps;
};

template <class T>
auto conv_a(const ConvTerm<T>& t, const ConvDims& d, Index r) { return replica(*t.a, r, d.cout); }
template <class T>
auto conv_b(const ConvTerm<T>& t, const ConvDims& d, Index r) { return replica(*t.b, r, d.ckk); }

/// Sum over all columns (squares = false) or over replicas into per-replica columns.
template <class T, class B>
void conv_sum(const B& bk, const Sink<T>& s, const ConvDims& d, const ConvTerm<T>& t, bool per_replica) {
  for (Index r = 0; r < d.reps; ++r) {
    const Index col = per_replica ? r : 0;
    MatrixMap<T> wt(s.col(col), d.ckk, d.cout);
    VectorMap<T> bias(s.col(col) + d.ckk * d.cout, d.cout);
    auto a = conv_a(t, d, r);
    bk.gemm(wt, conv_b(t, d, r).transpose(), a, s.scale, true);
    if (t.bias) bias += s.scale * a.colwise().sum().transpose();
  }
}

/// The gradient of column (r, i) into g (CKK*Cout + Cout values); first term assigns.
template <class T>
void conv_column(const ConvDims& d, std::initializer_list<ConvTerm<T>> terms, Index r, Index i, T scale, T* g) {
  MatrixMap<T> wt(g, d.ckk, d.cout);
  VectorMap<T> bias(g + d.ckk * d.cout, d.cout);
  bool first = true;
  for (const ConvTerm<T>& t : terms) {
    auto a = conv_a(t, d, r).middleRows(i * d.p, d.p);
    auto b = conv_b(t, d, r).middleRows(i * d.p, d.p);
    if (first) {
      wt.noalias() = scale * b.transpose() * a;
      bias = scale * a.colwise().sum().transpose();
    } else {
      wt.noalias() += scale * b.transpose() * a;
      if (t.bias) bias += scale * a.colwise().sum().transpose();
    }
    first = false;
  }
}

template <class T, class B>
void conv_per_column(const B& bk, const Sink<T>& s, const ConvDims& d, std::initializer_list<ConvTerm<T>> terms) {
  bk.parallel_for(d.reps * d.n, [&](Index c0, Index c1) {
    for (Index c = c0; c < c1; ++c) conv_column(d, terms, c / d.n, c % d.n, s.scale, s.col(c));
  });
}

/// Squares of per-column gradients, summed per sample (per_sample) or over everything.
template <class T, class B>
void conv_squares(const B& bk, const Sink<T>& s, const ConvDims& d, const ConvTerm<T>& t, bool per_sample) {
  const Index size = d.ckk * d.cout + d.cout;
  const int nt = bk.threads();
  std::vector<Vector<T>> acc(per_sample ? 0 : nt, Vector<T>::Zero(size));
  bk.parallel_for(d.n, [&](Index i0, Index i1) {
    Vector<T> g(size);
    int tid = 0;  // parallel_for's chunk t starts at n * t / nt
    while (tid + 1 < nt && d.n * (tid + 1) / nt <= i0) ++tid;
    for (Index i = i0; i < i1; ++i)
      for (Index r = 0; r < d.reps; ++r) {
        conv_column<T>(d, {t}, r, i, T(1), g.data());
        if (per_sample) VectorMap<T>(s.col(i), size) += s.scale * g.array().square().matrix();
        else acc[tid] += g.array().square().matrix();
      }
  });
  if (!per_sample)
    for (const auto& a : acc) VectorMap<T>(s.out, size) += s.scale * a;
}

/// Reduces the contributions of a convolution into the sink.
template <class T, class B>
void conv_param_grad(const B& bk, const Sink<T>& s, const ConvDims& d, std::initializer_list<ConvTerm<T>> terms) {
  switch (s.mode) {
    case Reduction::Sum:
    case Reduction::PerReplica:
      for (const ConvTerm<T>& t : terms) conv_sum(bk, s, d, t, s.mode == Reduction::PerReplica);
      break;
    case Reduction::PerColumn:
      conv_per_column(bk, s, d, terms);
      break;
    case Reduction::SumSquares:
    case Reduction::PerSampleSquares:
      CURVATURE_CHECK_VALUE(terms.size() == 1, "conv: sums of squares of a second-order quantity");
      conv_squares(bk, s, d, *terms.begin(), s.mode == Reduction::PerSampleSquares);
      break;
  }
}

}  // namespace curvature::nn::detail
