// curvature-probe: every curvature measure of a saved model as one JSON document (shared/CLI.md,
// docs/curvature-probe.md). Exit status 0 on success; otherwise 1 (bad input) or CLI11's code (bad
// command line), with exactly one line on standard error naming the problem.
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "detail/probe_data.hpp"
#include "detail/probe_estimate.hpp"
#include "detail/probe_exact.hpp"
#include "detail/probe_report.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using namespace curvature;
using namespace curvature::probe;

/// The flags of CLI.md (and the tool's own --cg-tol, --cg-max-iter) bound to `o`.
void add_flags(CLI::App& app, Options& o) {
  app.add_option("--input-shape", o.input_shape, "D for vectors, CxHxW for images (NCHW)")->required();
  app.add_option("--arch", o.arch, "comma-separated layers, e.g. linear(5),tanh,linear(3)")->required();
  app.add_option("--loss", o.loss, "ce or mse")->required()->check(CLI::IsMember({"ce", "mse"}));
  app.add_option("--params", o.params, "flat float32/float64 parameters (.npy, parameters_to_vector order)")
      ->required();
  app.add_option("--inputs", o.inputs, "inputs, N x D or N x C x H x W (.npy)")->required();
  app.add_option("--targets", o.targets, "ce: N int labels; mse: N x K floats or N int labels (.npy)")->required();
  auto* exact = app.add_flag("--exact", o.exact, "dense matrices and exact measures (d <= 5000)");
  app.add_option("--probes", o.probes, "estimator mode: Hutchinson probes M (default 100)")
      ->check(CLI::Range(Index{1}, Index{1} << 40))
      ->excludes(exact);
  app.add_option("--seed", o.seed, "probe seed S (default 0)");
  app.add_option("--damping", o.damping, "lambda values for S_R, comma-separated (default 1e-6)")->delimiter(',');
  app.add_option("--vector", o.vector, "a vector V of length d (.npy): also report H V and F V");
  app.add_option("--top", o.top, "number of top eigenvalues K (default 5, at most d)")
      ->check(CLI::Range(Index{1}, Index{1} << 40));
  app.add_option("--batch-size", o.batch_size, "B for the stability bound and noise statistics (default 128)")
      ->check(CLI::Range(Index{1}, Index{1} << 40));
  app.add_option("--lr", o.lr, "eta for the stability bound and noise statistics (default 0.01)");
  app.add_option("--threads", o.threads, "OpenMP threads (default: OpenMP's)")->check(CLI::Range(1, 1 << 16));
  app.add_option("--output", o.output, "write the JSON here (atomically) instead of standard output");
  app.add_option("--cg-tol", o.cg_tol, "estimator mode: CG relative residual (default 1e-8)");
  app.add_option("--cg-max-iter", o.cg_max_iterations, "estimator mode: CG iterations per solve (default 1000)")
      ->check(CLI::Range(Index{1}, Index{1} << 40));
}

/// The report for loss L (the batch is loaded here: its targets depend on the loss).
template <class L>
Json run(const Options& o) {
  Net m = load_model(o);
  const Matrix<double> x = load_inputs(o.inputs, m.input_shape());
  typename L::Targets y;
  if constexpr (is_ce<L>) y = load_class_labels(o.targets, x.cols(), m.output_size());
  else y = load_regression_targets(o.targets, x.cols(), m.output_size());
  CURVATURE_CHECK_VALUE(!o.top_given || o.top <= m.num_params(), "--top: K = ", o.top,
                        " exceeds the number of parameters d = ", m.num_params());
  const L loss{};
  return o.exact ? exact_report(m, loss, x, y, o) : estimator_report(m, loss, x, y, o);
}

/// The message on one line (the contract allows exactly one line on standard error).
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int fail(const std::string& what, int status) {
  std::cerr << "curvature-probe: error: " << one_line(what) << '\n';
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"curvature-probe: the curvature of a saved model, as JSON (docs/curvature-probe.md)"};
  Options o;
  add_flags(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help
      std::cout << app.help();
      return 0;
    }
    return fail(e.what(), e.get_exit_code() != 0 ? e.get_exit_code() : 2);
  }
  try {
    o.top_given = app.count("--top") > 0;
    check_options(o);
    check_damping_keys(o.damping);
#if defined(_OPENMP)
    if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
    const Json j = o.loss == "ce" ? run<loss::CrossEntropy<double>>(o) : run<loss::MeanSquaredError<double>>(o);
    write_output(o.output, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  return 0;
}
