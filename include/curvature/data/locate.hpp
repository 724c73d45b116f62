#pragma once
// Picks and loads the data set an example runs on. Search order:
//   1. an explicit kind ("mnist", "fashion-mnist", "cifar10", "npy", "synthetic") with its folder,
//      or a folder alone (kind guessed from the files in it);
//   2. the folder in the environment variable CURVATURE_DATA (kind guessed);
//   3. the default folder /usr/share/datasets/fashion-mnist (Debian: dataset-fashion-mnist), when
//      it holds the four IDX files;
//   4. the built-in synthetic task (synthetic.hpp).
// A folder that is given (1 or 2) but cannot be read is an error, never a silent fallback.
// The data sets' names say what was loaded, with the path, so that examples can print them.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"
#include "curvature/data/cifar.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/data/idx.hpp"
#include "curvature/data/npy_dataset.hpp"
#include "curvature/data/synthetic.hpp"

namespace curvature::data {

/// What load_dataset loads; every field has a usable default.
struct DataOptions {
  std::string kind;        ///< "", "mnist", "fashion-mnist", "cifar10", "npy" or "synthetic"
  std::string folder;      ///< the data folder (required for the file kinds; guessed kind when kind is "")
  Index train_size = 0;    ///< keep the first train_size training samples (0: all)
  Index test_size = 0;     ///< keep the first test_size test samples (0: all)
  bool use_environment = true;  ///< consult CURVATURE_DATA when no kind or folder is given
  std::string default_folder = "/usr/share/datasets/fashion-mnist";  ///< "" skips step 3
  SyntheticOptions synthetic;  ///< the synthetic task, when it is used
};

namespace detail {

inline bool has_file(const std::filesystem::path& dir, const std::string& base) {
  std::error_code ec;
  return std::filesystem::is_regular_file(dir / base, ec) || std::filesystem::is_regular_file(dir / (base + ".gz"), ec);
}

inline bool is_idx_folder(const std::filesystem::path& dir) {
  return has_file(dir, "train-images-idx3-ubyte") && has_file(dir, "train-labels-idx1-ubyte") &&
         has_file(dir, "t10k-images-idx3-ubyte") && has_file(dir, "t10k-labels-idx1-ubyte");
}

/// The IDX kind named by the folder's path: "fashion-mnist" when it contains "fashion", else "mnist".
inline std::string idx_kind(const std::string& folder) {
  std::string lower = folder;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return lower.find("fashion") != std::string::npos ? "fashion-mnist" : "mnist";
}

}  // namespace detail

/// The kind of data in `folder` from the files it holds: "mnist"/"fashion-mnist" (the four IDX
/// files, plain or .gz; which of the two by the folder's name), "cifar10" (data_batch_1.bin, also
/// under cifar-10-batches-bin/) or "npy" (x_train.npy); "" when none is recognised.
inline std::string guess_kind(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  if (detail::is_idx_folder(dir)) return detail::idx_kind(folder);
  if (fs::is_regular_file(dir / "data_batch_1.bin", ec) ||
      fs::is_regular_file(dir / "cifar-10-batches-bin" / "data_batch_1.bin", ec))
    return "cifar10";
  if (fs::is_regular_file(dir / "x_train.npy", ec)) return "npy";
  return "";
}

namespace detail {

template <Scalar T>
Split<T> load_kind(const std::string& kind, const std::string& folder, const DataOptions& o) {
  using curvature::detail::cat;
  if (kind == "synthetic") return synthetic_task<T>(o.synthetic);
  if (kind != "mnist" && kind != "fashion-mnist" && kind != "cifar10" && kind != "npy")
    throw ValueError(cat("load_dataset: unknown kind '", kind,
                         "' (expected mnist, fashion-mnist, cifar10, npy or synthetic)"));
  if (folder.empty()) throw ValueError(cat("load_dataset: kind '", kind, "' needs a folder"));
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec))
    throw IoError(cat("load_dataset: folder '", folder, "' (kind ", kind, ") does not exist or is not a folder"));
  if (kind == "cifar10") return load_cifar10<T>(folder);
  if (kind == "npy") return load_npy_split<T>(folder);
  return load_mnist_format<T>(folder, kind);
}

/// Loads a folder that was given (option or environment) with its kind guessed; `how` says by whom.
template <Scalar T>
Split<T> load_given_folder(const std::string& folder, const std::string& how, const DataOptions& o) {
  using curvature::detail::cat;
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec))
    throw IoError(cat("load_dataset: folder '", folder, "' (", how, ") does not exist or is not a folder"));
  const std::string kind = guess_kind(folder);
  if (kind.empty())
    throw IoError(cat("load_dataset: folder '", folder, "' (", how, ") holds no data set recognised: expected ",
                      "the MNIST IDX files (train-images-idx3-ubyte[.gz], ...), CIFAR-10 batches ",
                      "(data_batch_1.bin, ...) or x_train.npy/y_train.npy/x_test.npy/y_test.npy"));
  return load_kind<T>(kind, folder, o);
}

}  // namespace detail

/// Loads the data set chosen by `o` (search order at the top of this header), then keeps the
/// first train_size / test_size samples when those are positive.
template <Scalar T>
Split<T> load_dataset(const DataOptions& o = {}) {
  CURVATURE_CHECK_VALUE(o.train_size >= 0 && o.test_size >= 0, "load_dataset: train_size and test_size must be ",
                        ">= 0 (0: all), got ", o.train_size, " and ", o.test_size);
  Split<T> s;
  const char* env = o.use_environment ? std::getenv("CURVATURE_DATA") : nullptr;
  if (!o.kind.empty()) s = detail::load_kind<T>(o.kind, o.folder, o);
  else if (!o.folder.empty()) s = detail::load_given_folder<T>(o.folder, "given in the options", o);
  else if (env && *env) s = detail::load_given_folder<T>(env, "from CURVATURE_DATA", o);
  else if (!o.default_folder.empty() && detail::is_idx_folder(o.default_folder))
    s = load_mnist_format<T>(o.default_folder, detail::idx_kind(o.default_folder));
  else s = synthetic_task<T>(o.synthetic);
  if (o.train_size > 0 && o.train_size < s.train.size()) s.train = head(s.train, o.train_size);
  if (o.test_size > 0 && o.test_size < s.test.size()) s.test = head(s.test, o.test_size);
  return s;
}

}  // namespace curvature::data
