#pragma once
// A data set from NumPy arrays (io/npy.hpp): inputs N x D, N x H x W or N x C x H x W in C order
// (float32, float64, or uint8 taken as pixels and divided by 255), labels a 1-D int32/int64/uint8
// array of length N. A row-major N x ... array is, byte for byte, the library's D x N matrix.
// Errors are curvature::IoError naming the file.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/io/npy.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::data {

namespace detail {

/// The per-sample shape of an N x ... array: D x 1 x 1, 1 x H x W or C x H x W.
inline nn::Shape npy_sample_shape(const io::NpyArray& a, const std::string& path) {
  const auto& s = a.shape;
  switch (s.size()) {
    case 1: return nn::Shape{1, 1, 1};
    case 2: return nn::Shape{s[1], 1, 1};
    case 3: return nn::Shape{1, s[1], s[2]};
    case 4: return nn::Shape{s[1], s[2], s[3]};
    default:
      throw IoError(curvature::detail::cat("npy file '", path, "': inputs of rank ", s.size(),
                                           " are not supported; expected N x D, N x H x W or N x C x H x W"));
  }
}

template <Scalar T>
Matrix<T> npy_inputs(const std::string& path, nn::Shape& shape) {
  using curvature::detail::cat;
  const io::NpyArray a = io::read_npy(path);
  if (a.dtype != "float32" && a.dtype != "float64" && a.dtype != "uint8")
    throw IoError(cat("npy file '", path, "': inputs are ", a.dtype, "; expected float32, float64 or uint8"));
  if (a.shape.empty() || a.shape[0] == 0)
    throw IoError(cat("npy file '", path, "': no samples (expected an N x ... array with N >= 1)"));
  if (!io::all_finite(a)) throw IoError(cat("npy file '", path, "': inputs hold NaN or infinite values"));
  shape = npy_sample_shape(a, path);
  if (shape.size() == 0) throw IoError(cat("npy file '", path, "': the samples hold no values (a zero dimension)"));
  Matrix<T> x(shape.size(), a.shape[0]);
  io::detail::npy_convert(a, x.data());
  if (a.dtype == "uint8") x /= static_cast<T>(255);  // pixels, as the IDX and CIFAR readers give them
  return x;
}

inline Labels npy_labels(const std::string& path, Index n, const std::string& x_path) {
  using curvature::detail::cat;
  const io::NpyArray a = io::read_npy(path);
  if (!a.is_integer())
    throw IoError(cat("npy file '", path, "': labels are ", a.dtype, "; expected int64, int32 or uint8"));
  if (a.shape.size() != 1)
    throw IoError(cat("npy file '", path, "': labels must be a 1-D array, got rank ", a.shape.size()));
  if (a.shape[0] != n)
    throw IoError(cat("npy file '", path, "' holds ", a.shape[0], " labels but '", x_path, "' holds ", n,
                      " samples"));
  Labels y(static_cast<std::size_t>(n));
  io::detail::npy_convert(a, y.data());
  for (std::size_t i = 0; i < y.size(); ++i)
    if (y[i] < 0) throw IoError(cat("npy file '", path, "': label ", y[i], " of sample ", i, " is negative"));
  return y;
}

inline void check_label_range(const Labels& y, Index num_classes, const std::string& path) {
  for (std::size_t i = 0; i < y.size(); ++i)
    if (y[i] >= num_classes)
      throw IoError(curvature::detail::cat("npy file '", path, "': label ", y[i], " of sample ", i,
                                           " is outside [0, ", num_classes, ") (num_classes given)"));
}

inline Index max_label(const Labels& y) { return y.empty() ? -1 : *std::max_element(y.begin(), y.end()); }

}  // namespace detail

/// A data set from an inputs file and a labels file. num_classes = max label + 1 when 0; when
/// given, every label must be below it. The name is `name` (default: the inputs file).
template <Scalar T>
Dataset<T> load_npy_dataset(const std::string& x_path, const std::string& y_path, Index num_classes = 0,
                            const std::string& name = "") {
  CURVATURE_CHECK_VALUE(num_classes >= 0, "load_npy_dataset: num_classes must be >= 0 (0: from the labels), got ",
                        num_classes);
  Dataset<T> d;
  d.x = detail::npy_inputs<T>(x_path, d.shape);
  d.y = detail::npy_labels(y_path, d.x.cols(), x_path);
  d.num_classes = num_classes > 0 ? num_classes : detail::max_label(d.y) + 1;
  detail::check_label_range(d.y, d.num_classes, y_path);
  d.name = name.empty() ? x_path : name;
  return d;
}

/// x_train.npy, y_train.npy, x_test.npy and y_test.npy of `folder`. num_classes (when 0) is one
/// more than the largest label of either set; both sets must have the same sample shape. Named
/// "npy train (<folder>/x_train.npy)" and "npy test (<folder>/x_test.npy)".
template <Scalar T>
Split<T> load_npy_split(const std::string& folder, Index num_classes = 0) {
  namespace fs = std::filesystem;
  using curvature::detail::cat;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) throw IoError(cat("load_npy_split: folder '", folder, "' does not exist"));
  const auto file = [&](const char* base) {
    const fs::path p = fs::path(folder) / base;
    if (!fs::is_regular_file(p, ec))
      throw IoError(cat("load_npy_split: folder '", folder, "' has no ", base,
                        "; an npy folder holds x_train.npy, y_train.npy, x_test.npy and y_test.npy"));
    return p.string();
  };
  const std::string xtr = file("x_train.npy"), ytr = file("y_train.npy");
  const std::string xte = file("x_test.npy"), yte = file("y_test.npy");
  Split<T> s{load_npy_dataset<T>(xtr, ytr, num_classes, cat("npy train (", xtr, ")")),
             load_npy_dataset<T>(xte, yte, num_classes, cat("npy test (", xte, ")"))};
  if (!(s.train.shape == s.test.shape))
    throw IoError(cat("load_npy_split: '", xtr, "' holds samples of shape ", s.train.shape.str(), " but '", xte,
                      "' of shape ", s.test.shape.str()));
  if (num_classes == 0) s.train.num_classes = s.test.num_classes = std::max(s.train.num_classes, s.test.num_classes);
  return s;
}

}  // namespace curvature::data
