#pragma once
// curvature-probe without --exact: matrix-free estimates with standard errors (SPEC 2). One set of
// M Rademacher probes (seed S) through H serves Hutchinson's trace, diagonal and Frobenius norm and
// the S_R estimates (ProbeCache); Fisher and empirical-Fisher diagonals are exact; damped inverses
// (F + lambda I)^-1 are applied by Jacobi-preconditioned CG on the exact Fisher operator.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "curvature/estimators/hutchinson.hpp"
#include "curvature/estimators/lanczos.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/measures/igs.hpp"
#include "curvature/operators/quadratic_forms.hpp"
#include "probe_exact.hpp"
#include "probe_operators.hpp"
#include "probe_report.hpp"

namespace curvature::probe {

/// H V blocks kept for reuse across the Hutchinson estimates (beyond it they are recomputed).
inline constexpr std::size_t probe_cache_bytes = std::size_t(1) << 30;
/// Per-sample or sketched gradients held at once by the damped IGS (a d x 64 block).
inline constexpr Index igs_chunk = 64;

inline HutchinsonOptions hutchinson_options(const Options& o) {
  HutchinsonOptions h;
  h.seed = o.seed;
  h.max_probes = o.probes;
  return h;
}

/// ||A||_F = sqrt(q) from q ~ ||A||_F^2; its standard error by the delta method, se(q) / (2 sqrt q).
inline void add_frobenius(Json& j, const Estimate<double>& q) {
  const double f = std::sqrt(std::max(q.value, 0.0));
  j["frobenius"] = f;
  j["frobenius_stderr"] = f > 0 ? q.std_error / (2 * f) : q.std_error;
}

/// lambda_max and top_eigenvalues [K] by Lanczos (largest algebraic), with Ritz residuals.
template <LinearOperator A>
void add_top_eigenvalues(Json& j, A& op, Index top, std::uint64_t seed) {
  LanczosOptions lo;
  lo.k = top;
  lo.tol = 1e-8;
  lo.seed = seed;
  lo.compute_eigenvectors = false;
  const LanczosResult<double> r = lanczos(op, lo);
  j["lambda_max"] = r.eigenvalues(0);
  j["top_eigenvalues"] = std::vector<double>(r.eigenvalues.data(), r.eigenvalues.data() + r.eigenvalues.size());
  j["top_eigenvalue_residuals"] =
      std::vector<double>(r.residual_norms.data(), r.residual_norms.data() + r.residual_norms.size());
  j["lanczos_status"] = to_string(r.status);
}

inline Json cg_json(const CgRecord& r) {
  Json j;
  j["status"] = to_string(r.status);
  j["max_relative_residual"] = r.max_relative_residual;
  j["matvecs"] = r.matvecs;
  return j;
}

/// Per lambda: Hutchinson on diag(w_lambda) H, i.e. sum_j H_jj / (f_j + lambda) (000 eq. 4), with its SE.
template <LinearOperator A>
void add_diagonal_riemannian(Json& j, const std::string& key, A& h, const Vector<double>& f_diag, const Options& o) {
  Json value = Json::object(), se = Json::object();
  for (double lambda : o.damping) {
    RowScaled<A> op(h, inverse_weights(f_diag, lambda));
    const Estimate<double> e = hutchinson_trace(op, hutchinson_options(o));
    value[lambda_key(lambda)] = e.value;
    se[lambda_key(lambda)] = e.std_error;
  }
  j[key] = value;
  j[key + "_stderr"] = se;
}

/// Per lambda: Hutchinson on (F + lambda I)^-1 H with CG solves (000 eq. 6, damped), with its SE.
template <LinearOperator A, LinearOperator F>
void add_riemannian(Json& j, A& h, F& f, const Vector<double>& f_diag, const Options& o) {
  Json value = Json::object(), se = Json::object(), cg = Json::object();
  for (double lambda : o.damping) {
    FisherSolve<F> solve(f, f_diag, CgOptions{lambda, o.cg_tol, o.cg_max_iterations});
    SolveAfter<FisherSolve<F>, A> op(solve, h);
    const Estimate<double> e = hutchinson_trace(op, hutchinson_options(o));
    value[lambda_key(lambda)] = e.value;
    se[lambda_key(lambda)] = e.std_error;
    cg[lambda_key(lambda)] = cg_json(solve.record());
  }
  j["riemannian_sharpness"] = value;
  j["riemannian_sharpness_stderr"] = se;
  j["riemannian_sharpness_cg"] = cg;
}

inline std::vector<std::int64_t> slice_targets(const std::vector<std::int64_t>& y, Index b, Index n) {
  return {y.begin() + b, y.begin() + b + n};
}
inline Matrix<double> slice_targets(const Matrix<double>& y, Index b, Index n) { return y.middleCols(b, n); }

/// q_i = g_i^T S g_i for every sample (S = (F + lambda I)^-1 by CG), igs_chunk samples at a time.
template <class L, LinearOperator S>
Vector<double> per_sample_igs_terms(Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y,
                                    S& solve) {
  Vector<double> q(x.cols());
  Matrix<double> g;
  for (Index b = 0; b < x.cols(); b += igs_chunk) {
    const Index c = std::min(igs_chunk, x.cols() - b);
    const Matrix<double> xb = x.middleCols(b, c);
    const typename L::Targets yb = slice_targets(y, b, c);
    per_sample_gradients(m, loss, xb, yb, g);
    q.segment(b, c) = per_sample_quadratic_forms(solve, g, igs_chunk);
  }
  return q;
}

/// M sketched gradients v_k = (1/sqrt N) sum_i r_ik g_i, r_ik = +-1 (probe family probe_seed(S, 101)),
/// igs_chunk at a time by one backward pass each: E[v_k v_k^T] = (1/N) sum_i g_i g_i^T, so
/// v_k^T S v_k are unbiased for IGS = (1/N) sum_i g_i^T S g_i. Returns the M values.
template <class L, LinearOperator S>
Vector<double> sketched_igs_terms(Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y,
                                  S& solve, const Options& o) {
  const Index n = x.cols();
  Vector<double> q(o.probes);
  Matrix<double> r, v;
  for (Index first = 0; first < o.probes; first += igs_chunk) {
    const Index c = std::min(igs_chunk, o.probes - first);
    r.resize(n, c);
    fill_probes(r, Probe::Rademacher, probe_seed(o.seed, 101), first);
    m.backward(x, [&](const Matrix<double>& f) {
      const Matrix<double> g = loss.gradient(f, y);  // K x N output gradients
      Matrix<double> out(g.rows(), n * c);
      for (Index k = 0; k < c; ++k) out.middleCols(k * n, n) = g * r.col(k).asDiagonal();
      return out;
    }, Reduction::PerReplica, v, 1.0 / std::sqrt(static_cast<double>(n)));
    q.segment(first, c) = per_sample_quadratic_forms(solve, v, igs_chunk);
  }
  return q;
}

/// IGS and IGS_b (001 eq. 6-7, b = N) with (F + lambda I)^-1 in place of F^+, lambda the first
/// --damping value, by CG. With N <= M every per-sample term is computed (igs_stderr = 0);
/// otherwise M sketched gradients estimate the mean, with its standard error. Not
/// reparametrization-invariant (SPEC 3).
template <class L, LinearOperator F>
void add_damped_igs(Json& j, Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y, F& f,
                    const Vector<double>& f_diag, const Options& o) {
  const double lambda = o.damping.front();
  FisherSolve<F> solve(f, f_diag, CgOptions{lambda, o.cg_tol, o.cg_max_iterations});
  const bool all = x.cols() <= o.probes;
  const Vector<double> q =
      all ? per_sample_igs_terms(m, loss, x, y, solve) : sketched_igs_terms(m, loss, x, y, solve, o);
  IgsResult<double> r;
  r.n = x.cols();
  r.damping = lambda;
  r.value = q.mean();
  const Matrix<double> gbar = loss_and_gradient(m, loss, x, y).gradient;
  r.full_batch = per_sample_quadratic_forms(solve, gbar)(0);
  const double spread = q.size() > 1 ? std::sqrt((q.array() - r.value).square().sum() / double(q.size() - 1)) : 0;
  j["igs"] = r.value;
  j["igs_stderr"] = all ? 0.0 : spread / std::sqrt(static_cast<double>(q.size()));
  j["igs_batch"] = minibatch_igs(r, r.n);  // b = N: gbar^T (F + lambda I)^-1 gbar, no sampling error
  j["igs_method"] = all ? "per_sample" : "sketch";
  j["igs_damping"] = lambda;
  j["igs_cg"] = cg_json(solve.record());
}

/// hessian: Hutchinson trace/diagonal/Frobenius on the cached H, Lanczos for the top eigenvalues.
template <LinearOperator A, LinearOperator C>
Json hessian_estimates(A& h, C& cached, Index top, const Options& o) {
  const Estimate<double> tr = hutchinson_trace(cached, hutchinson_options(o));
  const DiagonalEstimate<double> diag = hutchinson_diagonal(cached, hutchinson_options(o));
  Json j;
  j["trace"] = tr.value;
  j["trace_stderr"] = tr.std_error;
  add_frobenius(j, frobenius_norm_squared(cached, hutchinson_options(o)));
  add_top_eigenvalues(j, h, top, o.seed);
  j["diagonal_sum"] = diag.value.sum();  // the same probes as the trace: equal to it up to rounding
  j["diagonal_sum_stderr"] = tr.std_error;
  return j;
}

/// fisher: exact trace (sum of the exact diagonal), Hutchinson Frobenius norm, Lanczos top eigenvalues.
template <LinearOperator F>
Json fisher_estimates(F& f, const Vector<double>& f_diag, Index top, const Options& o) {
  Json j;
  j["trace"] = f_diag.sum();
  add_frobenius(j, frobenius_norm_squared(f, hutchinson_options(o)));
  add_top_eigenvalues(j, f, top, o.seed);
  return j;
}

/// The whole report without --exact.
template <class L>
Json estimator_report(Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y, const Options& o) {
  Json j = header_keys(m, loss, x, y);
  const Index top = std::min(o.top, m.num_params());
  HessianOperator h(m, loss, x, y);
  ProbeCache cached(h, probe_cache_bytes);
  FisherOperator f(m, loss, x, y);
  const Vector<double> f_diag = fisher_diagonal(m, loss, x, y), ef_diag = empirical_fisher_diagonal(m, loss, x, y);
  j["hessian"] = hessian_estimates(h, cached, top, o);
  j["fisher"] = fisher_estimates(f, f_diag, top, o);
  j["empirical_fisher"] = Json{{"trace", ef_diag.sum()}};
  j["euclidean_sharpness"] = j["hessian"]["trace"];
  j["euclidean_sharpness_stderr"] = j["hessian"]["trace_stderr"];
  add_diagonal_riemannian(j, "riemannian_sharpness_diag", cached, f_diag, o);
  add_diagonal_riemannian(j, "riemannian_sharpness_diag_ef", cached, ef_diag, o);
  add_riemannian(j, cached, f, f_diag, o);
  add_damped_igs(j, m, loss, x, y, f, f_diag, o);
  j["hessian"]["probe_products"] = cached.matvecs();  // H V columns all Hutchinson estimates cost together
  add_trailer(j, m, loss, x, y, o, j["hessian"]["frobenius"].get<double>());
  return j;
}

}  // namespace curvature::probe
