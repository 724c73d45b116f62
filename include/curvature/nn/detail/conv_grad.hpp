#pragma once
// Per-sample parameter-gradient reductions of a convolution, whose contribution for column (r, i) is
// sum_t B_t(r)_i^T A_t(r)_i: A = output cotangent rows of sample i [P, Cout], B = im2col rows of
// sample i [P, C*k*k]. The weight block is W^T [CKK, Cout] (W row-major [Cout, CKK] in theta),
// followed by the bias [Cout].
#include <algorithm>
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

/// The gradients of sample i for every replica r of term t: g [CKK, R*Cout] (block r is
/// B(r)_i^T A(r)_i) and the bias parts gb [R*Cout]. When the im2col factor is shared by the
/// replicas, all R blocks are one product B_i^T [A(0)_i ... A(R-1)_i].
template <class T>
void conv_sample(const ConvTerm<T>& t, const ConvDims& d, Index i, Matrix<T>& g, Vector<T>& gb) {
  g.resize(d.ckk, d.reps * d.cout);
  gb.resize(d.reps * d.cout);
  if (t.b->cols() == d.ckk && t.a->cols() == d.reps * d.cout) {
    auto a = t.a->middleRows(i * d.p, d.p);
    g.noalias() = t.b->middleRows(i * d.p, d.p).transpose() * a;
    gb.noalias() = a.colwise().sum().transpose();
  } else {
    for (Index r = 0; r < d.reps; ++r) {
      auto a = conv_a(t, d, r).middleRows(i * d.p, d.p);
      g.middleCols(r * d.cout, d.cout).noalias() = conv_b(t, d, r).middleRows(i * d.p, d.p).transpose() * a;
      gb.segment(r * d.cout, d.cout) = a.colwise().sum().transpose();
    }
  }
  if (!t.bias) gb.setZero();
}

/// Per-column gradients into column r*N + i; the first term assigns, later terms add (each
/// parameter row of a column is owned by one layer, so the output needs no zeroing pass).
template <class T, class B>
void conv_per_column(const B& bk, const Sink<T>& s, const ConvDims& d, std::initializer_list<ConvTerm<T>> terms) {
  bk.parallel_for(d.n, [&](Index i0, Index i1) {
    Matrix<T> g;
    Vector<T> gb;
    for (Index i = i0; i < i1; ++i) {
      bool first = true;
      for (const ConvTerm<T>& t : terms) {
        conv_sample(t, d, i, g, gb);
        for (Index r = 0; r < d.reps; ++r) {
          MatrixMap<T> wt(s.col(r * d.n + i), d.ckk, d.cout);
          VectorMap<T> bias(s.col(r * d.n + i) + d.ckk * d.cout, d.cout);
          if (first) {
            wt = s.scale * g.middleCols(r * d.cout, d.cout);
            bias = s.scale * gb.segment(r * d.cout, d.cout);
          } else {
            wt += s.scale * g.middleCols(r * d.cout, d.cout);
            bias += s.scale * gb.segment(r * d.cout, d.cout);
          }
        }
        first = false;
      }
    }
  });
}

/// dst += scale * sum_r (gradient of column (r, i))^2 for one sample i.
template <class T>
void conv_add_squares(const ConvTerm<T>& t, const ConvDims& d, Index i, T scale, T* dst, Matrix<T>& g,
                      Vector<T>& gb) {
  conv_sample(t, d, i, g, gb);
  MatrixMap<T> wt(dst, d.ckk, d.cout);
  VectorMap<T> bias(dst + d.ckk * d.cout, d.cout);
  for (Index r = 0; r < d.reps; ++r) {
    wt += scale * g.middleCols(r * d.cout, d.cout).array().square().matrix();
    bias += scale * gb.segment(r * d.cout, d.cout).array().square().matrix();
  }
}

/// Squares of per-column gradients, summed per sample (per_sample) or over everything. The total
/// is summed in one accumulator per chunk of samples. The chunks depend on N alone, never on the
/// thread count, so the sum is added in the same order (and gives the same bits) at any thread
/// count; 16 chunks keep up to 16 threads busy.
template <class T, class B>
void conv_squares(const B& bk, const Sink<T>& s, const ConvDims& d, const ConvTerm<T>& t, bool per_sample) {
  const Index size = d.ckk * d.cout + d.cout;
  const Index chunks = std::min<Index>(16, d.n);
  std::vector<Vector<T>> acc(per_sample ? 0 : chunks, Vector<T>::Zero(size));
  bk.parallel_for(chunks, [&](Index k0, Index k1) {
    Matrix<T> g;
    Vector<T> gb;
    for (Index k = k0; k < k1; ++k)
      for (Index i = d.n * k / chunks; i < d.n * (k + 1) / chunks; ++i) {
        if (per_sample) conv_add_squares(t, d, i, s.scale, s.col(i), g, gb);
        else conv_add_squares(t, d, i, T(1), acc[k].data(), g, gb);
      }
  });
  if (!per_sample)
    for (const auto& a : acc) VectorMap<T>(s.out, size) += s.scale * a;
}

/// Reduces the per-sample contributions of a convolution into the sink (PerColumn and the sums of
/// squares); Conv2d computes the summed reductions (Sum, PerReplica) chunk by chunk itself.
template <class T, class B>
void conv_param_grad(const B& bk, const Sink<T>& s, const ConvDims& d, std::initializer_list<ConvTerm<T>> terms) {
  switch (s.mode) {
    case Reduction::Sum:
    case Reduction::PerReplica:
      CURVATURE_CHECK_VALUE(false, "conv_param_grad: summed reductions are Conv2d's chunked products");
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
