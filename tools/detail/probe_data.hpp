#pragma once
// curvature-probe: the command line's options and what they load (shared/CLI.md): the model from
// --input-shape/--arch/--params, the batch from --inputs/--targets, the optional --vector. Every
// failure throws a curvature::Error whose one-line message names the flag, the file and the value.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "curvature/backend/backend.hpp"
#include "curvature/io/npy.hpp"
#include "curvature/loss/cross_entropy.hpp"
#include "curvature/loss/mse.hpp"
#include "curvature/nn/arch.hpp"

namespace curvature::probe {

using curvature::detail::cat;
using Net = nn::Sequential<double, DefaultBackend>;

/// Runs f(); a library error from it is rethrown, same type, with the flag in front of its message.
template <class F>
auto for_flag(const std::string& flag, F&& f) -> decltype(f()) {
  const auto prefixed = [&](const Error& e) {
    const std::string what = e.what();
    return what.rfind(flag, 0) == 0 ? what : cat(flag, ": ", what);
  };
  try {
    return f();
  } catch (const IoError& e) {
    throw IoError(prefixed(e));
  } catch (const ShapeError& e) {
    throw ShapeError(prefixed(e));
  } catch (const ValueError& e) {
    throw ValueError(prefixed(e));
  }
}

/// Exact mode forms d x d matrices; above this size it refuses (CLI.md, --exact).
inline constexpr Index exact_max_params = 5000;

/// Every flag of CLI.md plus the tool's own (CG tolerance and iteration cap).
struct Options {
  std::string input_shape, arch, loss, params, inputs, targets, vector, output;
  bool exact = false;
  Index probes = 100;
  std::uint64_t seed = 0;
  std::vector<double> damping{1e-6};
  Index top = 5;
  bool top_given = false;  ///< --top on the command line: K > d is then an error, not clamped
  Index batch_size = 128;
  double lr = 0.01;
  int threads = 0;  ///< 0: OpenMP's default
  double cg_tol = 1e-8;
  Index cg_max_iterations = 1000;
};

/// Checks the values CLI11 cannot check alone (ranges that depend on other flags).
inline void check_options(const Options& o) {
  for (double l : o.damping)
    CURVATURE_CHECK_VALUE(std::isfinite(l) && l >= 0, "--damping: lambda = ", l, " must be finite and >= 0");
  if (!o.exact)
    for (double l : o.damping)
      CURVATURE_CHECK_VALUE(l > 0, "--damping: lambda = 0 needs --exact (the pseudo-inverse); estimator mode solves "
                                   "(F + lambda I) x = b by CG and needs lambda > 0");
  CURVATURE_CHECK_VALUE(std::isfinite(o.lr) && o.lr > 0, "--lr: eta = ", o.lr, " must be finite and > 0");
  CURVATURE_CHECK_VALUE(std::isfinite(o.cg_tol) && o.cg_tol >= 0, "--cg-tol: ", o.cg_tol, " must be finite and >= 0");
}

inline DefaultBackend make_backend([[maybe_unused]] int threads) {
#if defined(_OPENMP)
  return DefaultBackend{threads};
#else
  return DefaultBackend{};
#endif
}

/// The model of --input-shape and --arch with the parameters of --params (float64 arithmetic).
inline Net load_model(const Options& o) {
  Net m = nn::parse_arch<double, DefaultBackend>(nn::parse_shape(o.input_shape), o.arch, make_backend(o.threads));
  if (m.couples_samples())
    throw ValueError(cat("--arch: '", o.arch, "' couples the samples of a batch (batchnorm in training mode); "
                         "curvature-probe needs per-sample gradients"));
  if (o.exact && m.num_params() > exact_max_params)
    throw ValueError(cat("--exact: the model has d = ", m.num_params(), " parameters; exact mode forms d x d ",
                         "matrices and is limited to d <= ", exact_max_params, " (use --probes M instead)"));
  const Vector<double> p = for_flag("--params", [&] { return io::load_parameters<double>(o.params, m.num_params()); });
  if (!all_finite(p)) throw ValueError(cat("--params: file '", o.params, "' contains NaN or Inf"));
  m.set_params(p);
  return m;
}

namespace detail {

/// The float data of a .npy array as a column-major (numel / rows) x rows matrix: row r of the
/// C-order array becomes column r (one sample per column, as io::load_batch lays it out).
inline Matrix<double> columns_of(const io::NpyArray& a, Index rows) {
  Matrix<double> m(rows > 0 ? a.size() / rows : 0, rows);
  const Index n = a.size();
  if (a.dtype == "float64") {
    std::memcpy(m.data(), a.bytes.data(), static_cast<std::size_t>(n) * sizeof(double));
  } else {
    for (Index i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, a.bytes.data() + i * Index(sizeof(float)), sizeof(float));
      m.data()[i] = v;
    }
  }
  return m;
}

/// An array's shape as "(12, 4)".
inline std::string shape_text(const std::vector<Index>& s) {
  std::string out = "(";
  for (std::size_t k = 0; k < s.size(); ++k) out += cat(k ? ", " : "", s[k]);
  return out + (s.size() == 1 ? ",)" : ")");
}

/// Float data, finite: checks an array read for `flag`.
inline void check_float_array(const io::NpyArray& a, const std::string& flag, const std::string& path,
                              const char* what) {
  if (!a.is_floating())
    throw IoError(cat(flag, ": file '", path, "' holds ", a.dtype, " data; ", what, " must be float32 or float64"));
  if (!io::all_finite(a)) throw ValueError(cat(flag, ": file '", path, "' contains NaN or Inf"));
}

inline io::NpyArray read_array(const std::string& flag, const std::string& path) {
  return for_flag(flag, [&] { return io::read_npy(path); });
}

inline io::NpyArray read_float_array(const std::string& flag, const std::string& path, const char* what) {
  io::NpyArray a = read_array(flag, path);
  check_float_array(a, flag, path, what);
  return a;
}

}  // namespace detail

/// --inputs: N x D or N x C x H x W (N x C*H*W accepted too), float, finite; D x N out.
inline Matrix<double> load_inputs(const std::string& path, const nn::Shape& s) {
  const io::NpyArray a = detail::read_float_array("--inputs", path, "inputs");
  const std::vector<Index> flat{s.size()}, image{s.c, s.h, s.w};
  const std::vector<Index> trailing(a.shape.size() > 1 ? a.shape.begin() + 1 : a.shape.end(), a.shape.end());
  if (a.shape.size() < 2 || a.shape[0] < 1 || (trailing != flat && trailing != image))
    throw ShapeError(cat("--inputs: file '", path, "' holds an array of shape ", detail::shape_text(a.shape),
                         " but --input-shape ", s.str(), " needs N x ", s.size(),
                         s.h * s.w > 1 ? cat(" or N x ", s.c, " x ", s.h, " x ", s.w) : std::string(), " with N >= 1"));
  return detail::columns_of(a, a.shape[0]);
}

/// --targets for ce: N integer labels in [0, K).
inline std::vector<std::int64_t> load_class_labels(const std::string& path, Index n, Index k) {
  const std::vector<std::int64_t> y = for_flag("--targets", [&] { return io::load_labels(path); });
  CURVATURE_CHECK_SHAPE(static_cast<Index>(y.size()) == n, "--targets: file '", path, "' holds ", y.size(),
                        " labels but --inputs holds ", n, " samples");
  for (std::size_t i = 0; i < y.size(); ++i)
    CURVATURE_CHECK_VALUE(y[i] >= 0 && y[i] < k, "--targets: file '", path, "': label ", y[i], " of sample ", i,
                          " is outside [0, ", k, ") (the model has ", k, " outputs)");
  return y;
}

/// --targets for mse: float N x K (N when K = 1) as K x N, or integer labels one-hot encoded.
inline Matrix<double> load_regression_targets(const std::string& path, Index n, Index k) {
  const io::NpyArray a = detail::read_array("--targets", path);
  if (a.is_integer()) return loss::MeanSquaredError<double>::one_hot(load_class_labels(path, n, k), k);
  detail::check_float_array(a, "--targets", path, "float targets");
  const bool fits = (a.shape == std::vector<Index>{n, k}) || (k == 1 && a.shape == std::vector<Index>{n});
  CURVATURE_CHECK_SHAPE(fits, "--targets: file '", path, "' holds an array of shape ", detail::shape_text(a.shape),
                        "; mse needs N x K = (", n, ", ", k, ") float targets or N integer labels");
  return detail::columns_of(a, n);
}

/// --vector: d floats, finite.
inline Vector<double> load_direction(const std::string& path, Index d) {
  const io::NpyArray a = detail::read_float_array("--vector", path, "the vector");
  CURVATURE_CHECK_SHAPE(a.size() == d, "--vector: file '", path, "' holds ", a.size(), " values but the model has ",
                        d, " parameters");
  return detail::columns_of(a, 1).col(0);
}

}  // namespace curvature::probe
