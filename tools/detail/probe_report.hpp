#pragma once
// curvature-probe: the JSON document (shared/CLI.md, "JSON keys"), the keys both modes share, the
// noise block (SPEC 4; filled in when curvature/noise lands) and the atomic --output write.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "curvature/measures/fisher_rao.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/noise/noise.hpp"
#include "curvature/operators/curvature_matrices.hpp"
#include "probe_data.hpp"

namespace curvature::probe {

using Json = nlohmann::ordered_json;  // keys stay in the order of CLI.md

/// A "<lambda>" key: C's %g (CLI.md), e.g. "1e-06", "0.001".
inline std::string lambda_key(double lambda) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", lambda);
  return buf;
}

/// Two damping values with the same %g key would overwrite each other in the JSON.
inline void check_damping_keys(const std::vector<double>& damping) {
  for (std::size_t a = 0; a < damping.size(); ++a)
    for (std::size_t b = a + 1; b < damping.size(); ++b)
      CURVATURE_CHECK_VALUE(lambda_key(damping[a]) != lambda_key(damping[b]), "--damping: values ", a + 1, " and ",
                            b + 1, " are both written as \"", lambda_key(damping[a]), "\"");
}

template <class L>
inline constexpr bool is_ce = std::is_same_v<L, loss::CrossEntropy<double>>;

/// Fraction of samples whose largest logit is the label's.
inline double accuracy(const Matrix<double>& f, const std::vector<std::int64_t>& y) {
  Index hits = 0;
  for (Index i = 0; i < f.cols(); ++i) {
    Index best = 0;
    f.col(i).maxCoeff(&best);
    hits += best == y[static_cast<std::size_t>(i)];
  }
  return static_cast<double>(hits) / static_cast<double>(f.cols());
}

/// num_params, num_samples, loss, accuracy (ce only), gradient_norm: the same in both modes.
template <class L>
Json header_keys(Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y) {
  const LossGradient<double> lg = loss_and_gradient(m, loss, x, y);
  Json j;
  j["num_params"] = m.num_params();
  j["num_samples"] = x.cols();
  j["loss"] = lg.loss;
  if constexpr (is_ce<L>) j["accuracy"] = accuracy(m.forward(x), y);
  j["gradient_norm"] = lg.gradient.norm();
  return j;
}

/// hvp, fvp (only with --vector): H V and F V, exact products.
template <class L>
void add_vector_products(Json& j, Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y,
                         const Options& o) {
  if (o.vector.empty()) return;
  const Matrix<double> v = load_direction(o.vector, m.num_params());
  Matrix<double> hv, fv;
  HessianOperator(m, loss, x, y).apply(v, hv);
  FisherOperator(m, loss, x, y).apply(v, fv);
  j["hvp"] = std::vector<double>(hv.data(), hv.data() + hv.size());
  j["fvp"] = std::vector<double>(fv.data(), fv.data() + fv.size());
}

/// What the SPEC 4 statistics need beyond the model and the batch.
struct NoiseInputs {
  Index batch_size = 128;          ///< --batch-size B
  double lr = 0.01;                ///< --lr eta
  double hessian_frobenius = 0;    ///< ||H||_F of this report (exact or estimated)
  bool exact = false;              ///< --exact: dense computations are allowed (d <= 5000)
  Index probes = 100;              ///< --probes M (estimator mode)
  std::uint64_t seed = 0;          ///< --seed S
};

/// A JSON number, or null where the statistic is undefined (std::nullopt or NaN).
inline Json number_or_null(std::optional<double> v) {
  return v && std::isfinite(*v) ? Json(*v) : Json(nullptr);
}

/// SPEC 4's statistics at these parameters:
///   cosine_diag      000 eq. 35: cosine(diag Sigma, diag F), with the exact per-sample covariance
///                    diagonal (1/N) sum g_i^2 - gbar^2 (eq. 34's mini-batch covariance is Sigma/B
///                    in expectation; the cosine does not see the 1/B) and the exact Fisher diagonal
///   alignment_mu     002 eq. 3: Tr(Sigma G) / (2 L ||G||_F^2), centred Sigma (null if L < 1e-12)
///   alignment_mu1    the same with the uncentred Sigma1
///   stability_bound  002 Prop. 3.4 with mu1 at these parameters: min(B / sqrt((B - 1) mu1),
///                    2 B / mu1) / eta (mu0 of Thm 3.3 is not computable; stability_bound_mu says so)
/// ||G||_F^2 is exact with --exact and a Hutchinson estimate with --probes otherwise.
template <class L>
Json noise_block(Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y, const NoiseInputs& in) {
  Json j;
  const Vector<double> second = empirical_fisher_diagonal(m, loss, x, y);
  const Vector<double> g = loss_and_gradient(m, loss, x, y).gradient;
  const Vector<double> sigma = (second.array() - g.array().square()).cwiseMax(0.0);
  j["cosine_diag"] = number_or_null(cosine_alignment(sigma, fisher_diagonal(m, loss, x, y)));
  AlignmentOptions ao;
  ao.exact_frobenius = in.exact;
  ao.hutchinson.max_probes = in.probes;
  ao.hutchinson.seed = in.seed;
  const AlignmentFactors<double> a = alignment_factors(m, loss, x, y, ao);
  j["alignment_mu"] = number_or_null(a.mu);
  j["alignment_mu1"] = number_or_null(a.mu1);
  if (a.mu1 && *a.mu1 > 0)
    j["stability_bound"] = number_or_null(linear_stability_bound_mu1(*a.mu1, in.lr, in.batch_size).value);
  else
    j["stability_bound"] = nullptr;
  j["stability_bound_mu"] = "mu1 at these parameters (002 Prop. 3.4)";
  return j;
}

/// fisher_rao_norm, noise, hvp/fvp and the run's settings: the keys after the curvature blocks.
template <class L>
void add_trailer(Json& j, Net& m, const L& loss, const Matrix<double>& x, const typename L::Targets& y,
                 const Options& o, double hessian_frobenius) {
  j["fisher_rao_norm"] = fisher_rao_norm(m, loss, x, y);
  const NoiseInputs in{o.batch_size, o.lr, hessian_frobenius, o.exact, o.probes, o.seed};
  j["noise"] = noise_block(m, loss, x, y, in);
  add_vector_products(j, m, loss, x, y, o);
  j["loss_function"] = o.loss;
  j["mode"] = o.exact ? "exact" : "estimator";
  if (!o.exact) {
    j["probes"] = o.probes;
    j["seed"] = o.seed;
  }
  j["damping"] = o.damping;
  j["batch_size"] = o.batch_size;
  j["lr"] = o.lr;
}

/// Writes text to `path` completely or not at all: a temporary file in the same directory, then
/// rename(2), which replaces the target atomically. An empty path means standard output.
inline void write_output(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  if (path.empty()) {
    std::cout << text << std::flush;
    if (!std::cout) throw IoError("standard output: write failed");
    return;
  }
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / cat(".", target.filename().string(), ".tmp.", ::getpid(), ".",
                                                   std::random_device{}());
  std::error_code ec;
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(cat("--output: cannot create a temporary file next to '", path, "'"));
    out << text;
    out.close();
    if (!out) throw IoError(cat("--output: writing '", path, "' failed (disk full or permission denied?)"));
    fs::rename(tmp, target, ec);
    if (ec) throw IoError(cat("--output: cannot rename the temporary file to '", path, "': ", ec.message()));
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace curvature::probe
