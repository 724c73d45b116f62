#pragma once
// Hutchinson's estimators (SPEC 2; Hutchinson 1990, Avron and Toledo 2011, Bekas et al. 2007):
//   tr(A)     ~ (1/m) sum_k v_k^T A v_k,
//   diag(A)   ~ (1/m) sum_k v_k (.) A v_k,
//   ||A||_F^2 ~ (1/m) sum_k ||A v_k||^2        (= tr(A^T A), since E[v v^T] = I),
// with probes v_k drawn in blocks (one operator application per block) and a standard error from
// the spread of the per-probe values. Probe k depends only on (seed, k) (probes.hpp), and the
// adaptive stop is checked after every probe, so a result depends on the seed but not on the
// block size; a stop inside a block discards the rest of that block (counted in `matvecs`).
#include <algorithm>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

#include "curvature/estimators/detail/accumulate.hpp"
#include "curvature/estimators/detail/checks.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/operators/linear_operator.hpp"
#include "curvature/operators/quadratic_forms.hpp"

namespace curvature {

/// Options of the Hutchinson estimators.
struct HutchinsonOptions {
  Probe probe = Probe::Rademacher;
  std::uint64_t seed = 0;
  Index block_size = 16;   ///< probes per operator application (a d x block_size product)
  Index max_probes = 128;  ///< probes used when rel_tol = 0; the cap otherwise
  Index min_probes = 16;   ///< probes before the adaptive stop may end the run (rel_tol > 0)
  double rel_tol = 0;      ///< stop once std_error <= rel_tol |value|; 0: exactly max_probes
};

namespace detail {

inline void check_hutchinson_options(const HutchinsonOptions& o, const char* fn) {
  check_at_least(o.block_size, 1, fn, "block_size");
  check_at_least(o.max_probes, 1, fn, "max_probes");
  check_at_least(o.min_probes, 1, fn, "min_probes");
  check_non_negative(o.rel_tol, fn, "rel_tol");
  if (o.rel_tol > 0)
    CURVATURE_CHECK_VALUE(o.min_probes <= o.max_probes, fn, ": min_probes = ", o.min_probes,
                          " exceeds max_probes = ", o.max_probes);
}

/// Writes columns [j0, j1) of a probe block (ColumnHooks::before).
using ColumnFill = std::function<void(Index, Index)>;

/// The probe loop shared by the estimators: draws blocks of probes, calls `block(v)` once per
/// block (one operator application) and feeds probe j of the block to `sample(v, j)`, which adds
/// it to `acc`. A block callable as `block(v, fill)` writes the probes itself through fill(j0, j1)
/// (group by group, through ColumnHooks, while they stay in cache); the probes are the same.
/// Returns {matvecs, converged}.
template <LinearOperator A, class Acc, class Block, class Sample>
std::pair<Index, bool> probe_loop(A& op, const HutchinsonOptions& o, Acc& acc, Block&& block, Sample&& sample,
                                  const char* fn) {
  using T = typename A::Scalar;
  const Index d = checked_dim(op, fn);
  Matrix<T> v;
  Index matvecs = 0;
  for (Index first = 0; first < o.max_probes; first += o.block_size) {
    const Index m = std::min(o.block_size, o.max_probes - first);
    v.resize(d, m);
    if constexpr (std::is_invocable_v<Block&, const Matrix<T>&, const ColumnFill&>) {
      const ColumnFill fill = [&](Index j0, Index j1) { fill_probe_columns(v, o.probe, o.seed, first, j0, j1); };
      block(v, fill);
    } else {
      fill_probes(v, o.probe, o.seed, first);
      block(v);
    }
    matvecs += m;
    for (Index j = 0; j < m; ++j) {
      sample(v, j);
      if (o.rel_tol > 0 && acc.n >= o.min_probes && acc.met(o.rel_tol)) return {matvecs, true};
    }
  }
  return {matvecs, o.rel_tol == 0};
}

/// probe_loop with A V per block: `sample(v, av, j)`.
template <LinearOperator A, class Acc, class Sample>
std::pair<Index, bool> hutchinson_loop(A& op, const HutchinsonOptions& o, Acc& acc, Sample&& sample,
                                       const char* fn) {
  using T = typename A::Scalar;
  Matrix<T> av;
  return probe_loop(
      op, o, acc, [&](const Matrix<T>& v) { apply_checked(op, v, av, fn); },
      [&](const Matrix<T>& v, Index j) { sample(v, av, j); }, fn);
}

/// One block of a fixed-count Hutchinson diagonal: av = A V, then the products v (.) A v of all
/// the block's probes enter `acc` in one pass over the coordinates (WelfordVector::add_products),
/// with apply_checked's errors; non-finite products are found on the running mean (d values)
/// rather than on A V (d x block). Shared by hutchinson_diagonal and train::measure_sharpness.
/// With `fill` (probe_loop's), the probes are written here: for a ColumnHookOperator group by
/// group just before the operator reads them, each group's products entering `acc` as soon as they
/// are final (both while in cache); else all at once first.
template <LinearOperator A>
void apply_add_products(A& op, const Matrix<typename A::Scalar>& v, Matrix<typename A::Scalar>& av,
                        WelfordVector<typename A::Scalar>& acc, const char* fn, const ColumnFill* fill = nullptr) {
  if constexpr (ColumnHookOperator<A>) {
    if (fill) {
      const ColumnHooks hooks{*fill, [&](Index j0, Index j1) {
                                CURVATURE_CHECK_SHAPE(av.rows() == v.rows() && av.cols() == v.cols(), fn,
                                                      ": apply returned a ", av.rows(), "x", av.cols(),
                                                      " block for a ", v.rows(), "x", v.cols(), " input");
                                check_finite_result(acc.add_products(v, av, j0, j1), j1 - j0, fn);
                              },
                              true};
      op.apply(v, av, hooks);
      return;
    }
  }
  if (fill) (*fill)(0, v.cols());
  apply_shape_checked(op, v, av, fn);
  check_finite_result(acc.add_products(v, av, 0, v.cols()), v.cols(), fn);
}

/// An Estimate from a scalar accumulator.
template <class T>
Estimate<T> to_estimate(const Welford<T>& acc, std::pair<Index, bool> run) {
  return Estimate<T>{acc.mean, acc.std_error(), acc.n, run.first, run.second};
}

}  // namespace detail

/// tr(A) by Hutchinson's estimator (SPEC 2). Cost: `matvecs` = probes drawn (one block of
/// `block_size` columns per application). A QuadraticFormOperator gives v_k' A v_k directly (the
/// Hessian by second-order forward mode, Fishers by one JVP); the values are the same as from
/// A V to rounding. Throws ValueError for bad options or dim() < 1.
template <LinearOperator A>
Estimate<typename A::Scalar> hutchinson_trace(A& op, const HutchinsonOptions& options = {}) {
  using T = typename A::Scalar;
  detail::check_hutchinson_options(options, "hutchinson_trace");
  detail::Welford<T> acc;
  Vector<T> q;
  Matrix<T> av;
  auto run = detail::probe_loop(
      op, options, acc,
      [&](const Matrix<T>& v, const detail::ColumnFill& fill) {
        detail::block_quadratic_forms(op, v, q, av, "hutchinson_trace", &fill);
        CURVATURE_CHECK_VALUE(all_finite(q), "hutchinson_trace: the operator returned non-finite values (NaN or Inf) "
                              "for a block of ", v.cols(), " vectors");
      },
      [&](const Matrix<T>&, Index j) { acc.add(q(j)); }, "hutchinson_trace");
  return detail::to_estimate(acc, run);
}

/// ||A||_F^2 = tr(A^T A) ~ (1/m) sum_k ||A v_k||^2 (SPEC 2; 002's stability bound uses ||H||_F).
/// Same cost, options and errors as hutchinson_trace.
template <LinearOperator A>
Estimate<typename A::Scalar> frobenius_norm_squared(A& op, const HutchinsonOptions& options = {}) {
  using T = typename A::Scalar;
  detail::check_hutchinson_options(options, "frobenius_norm_squared");
  detail::Welford<T> acc;
  auto run = detail::hutchinson_loop(
      op, options, acc, [&](const Matrix<T>&, const Matrix<T>& av, Index j) { acc.add(av.col(j).squaredNorm()); },
      "frobenius_norm_squared");
  return detail::to_estimate(acc, run);
}

/// diag(A) ~ (1/m) sum_k v_k (.) A v_k (SPEC 2) with a standard error per coordinate. The
/// adaptive stop asks ||std_error||_2 <= rel_tol ||value||_2. With the same options it sees the
/// same probes as hutchinson_trace, so value.sum() equals that trace estimate (to rounding).
template <LinearOperator A>
DiagonalEstimate<typename A::Scalar> hutchinson_diagonal(A& op, const HutchinsonOptions& options = {}) {
  using T = typename A::Scalar;
  detail::check_hutchinson_options(options, "hutchinson_diagonal");
  constexpr const char* fn = "hutchinson_diagonal";
  detail::WelfordVector<T> acc(detail::checked_dim(op, fn));
  // With a fixed probe count the whole block enters the accumulator in one pass over the
  // coordinates; an adaptive stop needs the test after every probe, so probes enter one by one.
  // The finiteness test is on the running mean (d values) rather than on A V (d x block).
  Matrix<T> av;
  const bool adaptive = options.rel_tol > 0;
  auto run = detail::probe_loop(
      op, options, acc,
      [&](const Matrix<T>& v, const detail::ColumnFill& fill) {
        if (adaptive) {
          fill(0, v.cols());
          detail::apply_shape_checked(op, v, av, fn);
        } else {
          detail::apply_add_products(op, v, av, acc, fn, &fill);
        }
      },
      [&](const Matrix<T>& v, Index j) {
        if (adaptive) detail::check_finite_result(acc.add_products(v, av, j, j + 1), v.cols(), fn);
      },
      fn);
  return DiagonalEstimate<T>{acc.mean, acc.std_error(), acc.n, run.first, run.second};
}

}  // namespace curvature
