#pragma once
// Parameter-gradient reductions for a dense weight W [kout, kin] (row-major in theta) followed
// by a bias [kout], when the contribution of column c is sum_t a_t[:, c] b_t[:, c]^T (Linear).
// Sums of squares never materialise per-sample gradients: sum_c (a_c b_c^T)^2 = (a^2)(b^2)^T.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#include "curvature/nn/layer.hpp"

namespace curvature::nn::detail {

/// dst[j] = alpha * src[j] for j < len, written with non-temporal (streaming) stores where the
/// target supports them: per-sample gradients (d x N, far larger than the caches) are written once
/// and not read back soon, so bypassing the cache saves the read-for-ownership of every line, which
/// otherwise doubles the memory traffic of a write-bound pass. Call stream_fence() before another
/// thread reads the data.
template <class T>
inline void stream_scaled(T* dst, const T* src, Index len, T alpha) {
  Index j = 0;
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#if defined(__AVX512F__)
  constexpr std::uintptr_t kBytes = 64;
#elif defined(__AVX__)
  constexpr std::uintptr_t kBytes = 32;
#else
  constexpr std::uintptr_t kBytes = 16;
#endif
  constexpr Index kLanes = static_cast<Index>(kBytes / sizeof(T));
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(dst) % kBytes;
    const Index head = mis == 0 ? 0 : std::min<Index>(len, static_cast<Index>((kBytes - mis) / sizeof(T)));
    for (; j < head; ++j) dst[j] = alpha * src[j];
    if (reinterpret_cast<std::uintptr_t>(dst + j) % kBytes == 0) {
      for (; j + kLanes <= len; j += kLanes) {
        if constexpr (std::is_same_v<T, float>) {
#if defined(__AVX512F__)
          _mm512_stream_ps(dst + j, _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(src + j)));
#elif defined(__AVX__)
          _mm256_stream_ps(dst + j, _mm256_mul_ps(_mm256_set1_ps(alpha), _mm256_loadu_ps(src + j)));
#else
          _mm_stream_ps(dst + j, _mm_mul_ps(_mm_set1_ps(alpha), _mm_loadu_ps(src + j)));
#endif
        } else {
#if defined(__AVX512F__)
          _mm512_stream_pd(dst + j, _mm512_mul_pd(_mm512_set1_pd(alpha), _mm512_loadu_pd(src + j)));
#elif defined(__AVX__)
          _mm256_stream_pd(dst + j, _mm256_mul_pd(_mm256_set1_pd(alpha), _mm256_loadu_pd(src + j)));
#else
          _mm_stream_pd(dst + j, _mm_mul_pd(_mm_set1_pd(alpha), _mm_loadu_pd(src + j)));
#endif
        }
      }
    }
  }
#endif
  for (; j < len; ++j) dst[j] = alpha * src[j];
}

/// Orders this thread's streaming stores before what follows (they are weakly ordered).
inline void stream_fence() {
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
  _mm_sfence();
#endif
}

/// One term of a contribution: a [kout, R*N or N], b [kin, R*N or N] (N columns = shared by all
/// replicas).
template <class T>
struct Term {
  const Matrix<T>* a;
  const Matrix<T>* b;
  bool bias = true;  ///< false for the term dy R(x)^T of an R-op, which has no bias part
};

/// Sum of the replicas of m (m itself when it has one replica), times the factor it then stands for.
template <class T>
Matrix<T> replica_sum(const Matrix<T>& m, Index n) {
  Matrix<T> s = m.middleCols(0, n);
  for (Index r = 1; r < m.cols() / n; ++r) s += m.middleCols(r * n, n);
  return s;
}

/// Sum (or sum of squares) of one term into the single column of s; `assign`: the first write.
template <class T, class B>
void dense_sum(const B& bk, const Sink<T>& s, Index n, Index reps, const Term<T>& t, bool squares, bool assign) {
  const Matrix<T>& a = *t.a;
  const Matrix<T>& b = *t.b;
  const Index kout = a.rows(), kin = b.rows();
  RowMatrixMap<T> w(s.out, kout, kin);
  VectorMap<T> bias(s.out + kout * kin, kout);
  if (assign && !t.bias && !squares) bias.setZero();
  if (squares) {
    CURVATURE_CHECK_VALUE(b.cols() == n || b.cols() == a.cols(), "dense_sum: replicated inputs in a sum of squares");
    Matrix<T> a2 = a.array().square().matrix();
    if (b.cols() == n && a.cols() != n) a2 = replica_sum(a2, n);
    Matrix<T> b2 = b.array().square().matrix();
    bk.gemm(w, a2, b2.transpose(), s.scale, !assign);
    add_or_assign(bias, s.scale * a2.rowwise().sum(), assign);
  } else if (a.cols() == b.cols()) {
    bk.gemm(w, a, b.transpose(), s.scale, !assign);
    if (t.bias) add_or_assign(bias, s.scale * a.rowwise().sum(), assign);
  } else if (b.cols() == n) {  // a replicated, b shared
    Matrix<T> as = replica_sum(a, n);
    bk.gemm(w, as, b.transpose(), s.scale, !assign);
    if (t.bias) add_or_assign(bias, s.scale * as.rowwise().sum(), assign);
  } else {  // a shared, b replicated
    Matrix<T> bs = replica_sum(b, n);
    bk.gemm(w, a, bs.transpose(), s.scale, !assign);
    if (t.bias) add_or_assign(bias, (s.scale * static_cast<T>(reps)) * a.rowwise().sum(), assign);
  }
}

/// One term into column r of s for each replica r; `assign`: the first write.
template <class T, class B>
void dense_per_replica(const B& bk, const Sink<T>& s, Index n, Index reps, const Term<T>& t, bool assign) {
  const Index kout = t.a->rows(), kin = t.b->rows();
  for (Index r = 0; r < reps; ++r) {
    RowMatrixMap<T> w(s.col(r), kout, kin);
    VectorMap<T> bias(s.col(r) + kout * kin, kout);
    auto ar = replica(*t.a, r, n);
    bk.gemm(w, ar, replica(*t.b, r, n).transpose(), s.scale, !assign);
    if (t.bias) add_or_assign(bias, s.scale * ar.rowwise().sum(), assign);
    else if (assign) bias.setZero();
  }
}

/// Per-column outer products; the first term assigns, later terms add (each parameter row of a
/// column is owned by one layer, so no zeroing pass over the d x R*N output is needed).
template <class T, class B>
void dense_per_column(const B& bk, const Sink<T>& s, Index n, Index reps, std::initializer_list<Term<T>> terms) {
  const Index kout = terms.begin()->a->rows(), kin = terms.begin()->b->rows();
  if (terms.size() == 1) {  // per-sample gradients: a write-bound pass, streamed past the caches
    const Term<T>& t = *terms.begin();
    bk.parallel_for(reps * n, [&](Index c0, Index c1) {
      for (Index c = c0; c < c1; ++c) {
        const Index r = c / n, i = c % n;
        const auto ac = replica(*t.a, r, n).col(i);
        const T* bc = replica(*t.b, r, n).col(i).data();
        T* w = s.col(c);
        for (Index k = 0; k < kout; ++k) stream_scaled(w + k * kin, bc, kin, s.scale * ac(k));
        VectorMap<T>(w + kout * kin, kout) = s.scale * ac;
      }
      stream_fence();
    });
    return;
  }
  bk.parallel_for(reps * n, [&](Index c0, Index c1) {
    for (Index c = c0; c < c1; ++c) {
      const Index r = c / n, i = c % n;
      RowMatrixMap<T> w(s.col(c), kout, kin);
      VectorMap<T> bias(s.col(c) + kout * kin, kout);
      bool first = true;
      for (const Term<T>& t : terms) {
        auto ac = replica(*t.a, r, n).col(i);
        auto bc = replica(*t.b, r, n).col(i);
        if (first) {
          w.noalias() = (s.scale * ac) * bc.transpose();
          bias = s.scale * ac;  // the first term always carries the bias
        } else {
          w.noalias() += (s.scale * ac) * bc.transpose();
          if (t.bias) bias += s.scale * ac;
        }
        first = false;
      }
    }
  });
}

template <class T, class B>
void dense_per_sample_squares(const B& bk, const Sink<T>& s, Index n, Index reps, const Term<T>& t) {
  const Index kout = t.a->rows(), kin = t.b->rows();
  const bool shared_b = t.b->cols() == n;
  bk.parallel_for(n, [&](Index i0, Index i1) {
    Vector<T> a2(kout);
    for (Index i = i0; i < i1; ++i) {
      RowMatrixMap<T> w(s.col(i), kout, kin);
      VectorMap<T> bias(s.col(i) + kout * kin, kout);
      if (shared_b) {
        a2.setZero();
        for (Index r = 0; r < reps; ++r) a2 += replica(*t.a, r, n).col(i).array().square().matrix();
        w.noalias() += (s.scale * a2) * t.b->col(i).array().square().matrix().transpose();
        bias += s.scale * a2;
      } else {
        for (Index r = 0; r < reps; ++r) {
          a2 = replica(*t.a, r, n).col(i).array().square().matrix();
          w.noalias() += (s.scale * a2) * replica(*t.b, r, n).col(i).array().square().matrix().transpose();
          bias += s.scale * a2;
        }
      }
    }
  });
}

/// Reduces the contributions sum_t a_t b_t^T of a dense layer into the sink.
template <class T, class B>
void dense_param_grad(const B& bk, const Sink<T>& s, Index n, Index reps, std::initializer_list<Term<T>> terms) {
  switch (s.mode) {
    case Reduction::Sum: {
      bool first = s.assign;
      for (const Term<T>& t : terms) dense_sum(bk, s, n, reps, t, false, std::exchange(first, false));
      break;
    }
    case Reduction::PerReplica: {
      bool first = s.assign;
      for (const Term<T>& t : terms) dense_per_replica(bk, s, n, reps, t, std::exchange(first, false));
      break;
    }
    case Reduction::PerColumn:
      dense_per_column(bk, s, n, reps, terms);
      break;
    case Reduction::SumSquares:
      CURVATURE_CHECK_VALUE(terms.size() == 1, "SumSquares reduction of a second-order quantity");
      dense_sum(bk, s, n, reps, *terms.begin(), true, s.assign);
      break;
    case Reduction::PerSampleSquares:
      CURVATURE_CHECK_VALUE(terms.size() == 1, "PerSampleSquares reduction of a second-order quantity");
      dense_per_sample_squares(bk, s, n, reps, *terms.begin());
      break;
  }
}

}  // namespace curvature::nn::detail
