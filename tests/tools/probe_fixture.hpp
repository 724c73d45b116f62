#pragma once
// Shared by the curvature-probe tests: running the built binary, a scratch directory of .npy
// files, and dense reference matrices built here from explicit Jacobians and per-sample gradients.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "curvature/io/npy.hpp"
#include "curvature/loss/cross_entropy.hpp"
#include "curvature/loss/mse.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/nn/arch.hpp"
#include "curvature/operators/curvature_matrices.hpp"
#include "curvature/operators/dense.hpp"

namespace probe_test {

namespace fs = std::filesystem;
using namespace curvature;
using Net = nn::Sequential<double, backend::Serial>;

/// The binary: $CURVATURE_PROBE, else build/examples/curvature-probe next to build/tests/test_tools.
inline std::string probe_binary() {
  if (const char* env = std::getenv("CURVATURE_PROBE")) return env;
  return (fs::canonical("/proc/self/exe").parent_path().parent_path() / "examples" / "curvature-probe").string();
}

struct RunResult {
  int status = -1;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
  /// Exactly one non-empty line on standard error.
  bool one_error_line() const {
    return err.size() > 1 && err.back() == '\n' && err.find('\n') == err.size() - 1;
  }
};

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// A scratch directory, removed at the end of the test.
struct Scratch {
  fs::path dir;
  Scratch() {
    static int counter = 0;
    dir = fs::temp_directory_path() / ("curvature_probe_test_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(counter++));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }

  /// Runs the binary with `args` (each quoted for the shell).
  RunResult run(const std::vector<std::string>& args) const {
    const std::string bin = probe_binary();
    REQUIRE_MESSAGE_BINARY(bin);
    std::string cmd = "'" + bin + "'";
    for (const std::string& a : args) cmd += " '" + a + "'";
    cmd += " >'" + path("stdout.txt") + "' 2>'" + path("stderr.txt") + "'";
    const int raw = std::system(cmd.c_str());
    RunResult r;
    r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    r.out = slurp(path("stdout.txt"));
    r.err = slurp(path("stderr.txt"));
    fs::remove(path("stdout.txt"));
    fs::remove(path("stderr.txt"));
    return r;
  }

  static void REQUIRE_MESSAGE_BINARY(const std::string& bin) {
    INFO("curvature-probe not found at " << bin
                                         << ": build the target curvature-probe or set CURVATURE_PROBE");
    REQUIRE(fs::exists(bin));
  }
};

/// A model and its batch written as .npy files, with the flags that describe them.
struct Problem {
  std::string shape, arch, loss;
  Net model;
  Matrix<double> x;
  std::vector<std::int64_t> labels;  // ce, or mse with integer targets
  Matrix<double> targets;            // mse: K x N (one-hot of labels, or float targets)

  std::vector<std::string> flags(const Scratch& s) const {
    return {"--input-shape", shape, "--arch", arch, "--loss", loss, "--params", s.path("params.npy"),
            "--inputs", s.path("inputs.npy"), "--targets", s.path("targets.npy")};
  }
};

inline Matrix<double> uniform(Index r, Index c, Rng& rng, double scale) {
  Matrix<double> m(r, c);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = scale * (2 * rng.uniform<double>() - 1);
  return m;
}

/// Builds the model of (shape, arch) with seed-0 PyTorch initialisation and N random samples, and
/// writes params.npy, inputs.npy (N x D or N x C x H x W) and targets.npy into s.
inline Problem make_problem(const Scratch& s, const std::string& shape, const std::string& arch,
                            const std::string& loss, Index n, bool float_targets = false) {
  Problem p{shape, arch, loss, nn::parse_arch<double, backend::Serial>(nn::parse_shape(shape), arch), {}, {}, {}};
  Rng rng(42);
  p.model.mutable_params() *= 2.0;  // livelier logits than the default initialisation
  const nn::Shape in = p.model.input_shape();
  const Index k = p.model.output_size();
  p.x = uniform(in.size(), n, rng, 1.5);
  for (Index i = 0; i < n; ++i) p.labels.push_back(static_cast<std::int64_t>(rng.below(k)));
  io::save_npy(s.path("params.npy"), p.model.params());
  if (in.h * in.w > 1) io::save_npy(s.path("inputs.npy"), p.x.data(), {n, in.c, in.h, in.w});
  else io::save_npy(s.path("inputs.npy"), p.x);
  if (float_targets) {
    p.labels.clear();
    p.targets = uniform(k, n, rng, 1.0);
    io::save_npy(s.path("targets.npy"), p.targets);
  } else {
    p.targets = loss::MeanSquaredError<double>::one_hot(p.labels, k);
    io::save_labels(s.path("targets.npy"), p.labels);
  }
  return p;
}

/// Dense references computed here, independently of the tool's code paths.
struct Reference {
  Matrix<double> h, f, ef;  // Hessian (materialised), Fisher from explicit Jacobians, EF from per-sample gradients
  Matrix<double> g;         // per-sample gradients, d x N
  Vector<double> grad;      // mean gradient
  double loss = 0;
};

/// Lambda_i: CE diag(p) - p p^T, MSE I.
inline Matrix<double> output_hessian(const Problem& p, const Vector<double>& logits) {
  if (p.loss == "mse") return Matrix<double>::Identity(logits.size(), logits.size());
  const Vector<double> e = (logits.array() - logits.maxCoeff()).exp();
  const Vector<double> q = e / e.sum();
  return Matrix<double>(q.asDiagonal()) - q * q.transpose();
}

/// Per-sample loss and gradient from a batch of one.
inline LossGradient<double> sample_loss(Problem& p, Index i) {
  const Matrix<double> xi = p.x.col(i);
  if (p.loss == "ce") return loss_and_gradient(p.model, loss::CrossEntropy<double>{}, xi, {p.labels[i]});
  const Matrix<double> yi = p.targets.col(i);
  return loss_and_gradient(p.model, loss::MeanSquaredError<double>{}, xi, yi);
}

inline Reference reference(Problem& p) {
  const Index d = p.model.num_params(), n = p.x.cols();
  const Matrix<double> eye = Matrix<double>::Identity(d, d);
  Reference r{Matrix<double>::Zero(d, d), Matrix<double>::Zero(d, d), Matrix<double>::Zero(d, d),
              Matrix<double>(d, n), Vector<double>::Zero(d), 0};
  for (Index i = 0; i < n; ++i) {
    const Matrix<double> xi = p.x.col(i);
    const Matrix<double> ji = p.model.jvp(xi, eye);  // K x d: column c is J_i e_c
    r.f += ji.transpose() * output_hessian(p, p.model.forward(xi).col(0)) * ji;
    const LossGradient<double> lg = sample_loss(p, i);
    r.g.col(i) = lg.gradient;
    r.loss += lg.loss / static_cast<double>(n);
  }
  r.f /= static_cast<double>(n);
  r.ef = r.g * r.g.transpose() / static_cast<double>(n);
  r.grad = r.g.rowwise().mean();
  if (p.loss == "ce") r.h = materialize(HessianOperator(p.model, loss::CrossEntropy<double>{}, p.x, p.labels));
  else r.h = materialize(HessianOperator(p.model, loss::MeanSquaredError<double>{}, p.x, p.targets));
  r.h = (r.h + r.h.transpose()).eval() / 2;
  return r;
}

inline double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

/// |estimate - exact| <= 4 standard errors, with a positive, finite standard error.
inline void check_within_4se(const nlohmann::json& value, const nlohmann::json& se, double exact) {
  const double v = value.get<double>(), s = se.get<double>();
  INFO("estimate " << v << " +- " << s << ", exact " << exact);
  CHECK(s > 0);
  CHECK(std::abs(v - exact) <= 4 * s);
}

}  // namespace probe_test
