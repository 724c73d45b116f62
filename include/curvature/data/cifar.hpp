#pragma once
// CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"):
// records of 1 label byte and 3072 pixel bytes, the 32x32 red plane, then green, then blue, rows
// top to bottom. That is exactly PyTorch's C x H x W order, so a record's pixels become one column
// as they are. Values are pixel / 255. Errors are curvature::IoError naming the file.
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/data/idx.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::data {

inline constexpr Index cifar_record_bytes = 1 + 3 * 32 * 32;

/// One CIFAR-10 binary batch file: N = size / 3073 samples of shape 3 x 32 x 32, labels in [0, 10).
template <Scalar T>
Dataset<T> load_cifar_batch(const std::string& path) {
  namespace fs = std::filesystem;
  using curvature::detail::cat;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw detail::file_error(path, "file not found");
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) throw detail::file_error(path, "cannot determine the file size");
  if (size == 0 || size % cifar_record_bytes != 0)
    throw detail::file_error(
        path, cat("size ", size, " bytes is not a positive multiple of the ", cifar_record_bytes,
                  "-byte CIFAR-10 record (1 label byte + 3072 pixel bytes)",
                  size > 0 && size % (cifar_record_bytes + 1) == 0 ? "; CIFAR-100 files (2 label bytes) are not supported"
                                                                    : ""));
  std::ifstream in(path, std::ios::binary);
  std::vector<unsigned char> b(static_cast<std::size_t>(size));
  if (!in || !in.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(size)))
    throw detail::file_error(path, "read error");
  const Index n = static_cast<Index>(size) / cifar_record_bytes, d = cifar_record_bytes - 1;
  Dataset<T> out{Matrix<T>(d, n), Labels(static_cast<std::size_t>(n)), 10, nn::Shape{3, 32, 32}, path};
  std::array<T, 256> lut;
  for (int p = 0; p < 256; ++p) lut[static_cast<std::size_t>(p)] = static_cast<T>(p) / static_cast<T>(255);
  for (Index i = 0; i < n; ++i) {
    const unsigned char* r = b.data() + i * cifar_record_bytes;
    if (r[0] >= 10)
      throw detail::file_error(path, cat("label ", int(r[0]), " of record ", i, " is outside [0, 10)"));
    out.y[static_cast<std::size_t>(i)] = r[0];
    T* col = out.x.col(i).data();
    for (Index k = 0; k < d; ++k) col[k] = lut[r[1 + k]];
  }
  return out;
}

namespace detail {

/// Concatenates the samples of several data sets of the same shape.
template <Scalar T>
Dataset<T> concat(std::vector<Dataset<T>> parts, const std::string& name) {
  Index n = 0;
  for (const auto& p : parts) n += p.size();
  Dataset<T> out{Matrix<T>(parts.front().dim(), n), {}, parts.front().num_classes, parts.front().shape, name};
  out.y.reserve(static_cast<std::size_t>(n));
  Index at = 0;
  for (const auto& p : parts) {
    out.x.middleCols(at, p.size()) = p.x;
    out.y.insert(out.y.end(), p.y.begin(), p.y.end());
    at += p.size();
  }
  return out;
}

}  // namespace detail

/// CIFAR-10's 50,000 training images (data_batch_1.bin ... data_batch_5.bin, in that order) and
/// 10,000 test images (test_batch.bin) from `folder`, or from `folder`/cifar-10-batches-bin as the
/// archive unpacks. Named "cifar10 train (<folder>/data_batch_{1..5}.bin)" and
/// "cifar10 test (<folder>/test_batch.bin)".
template <Scalar T>
Split<T> load_cifar10(const std::string& folder) {
  namespace fs = std::filesystem;
  using curvature::detail::cat;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) throw IoError(cat("load_cifar10: folder '", folder, "' does not exist"));
  fs::path dir(folder);
  if (!fs::exists(dir / "data_batch_1.bin", ec) && fs::is_directory(dir / "cifar-10-batches-bin", ec))
    dir /= "cifar-10-batches-bin";
  const auto file = [&](const std::string& base) {
    const fs::path p = dir / base;
    if (!fs::is_regular_file(p, ec))
      throw IoError(cat("load_cifar10: folder '", dir.string(), "' has no ", base,
                        "; a CIFAR-10 folder holds data_batch_1.bin ... data_batch_5.bin and test_batch.bin "
                        "(the binary version, cifar-10-binary.tar.gz)"));
    return p.string();
  };
  std::vector<std::string> train_files;
  for (int k = 1; k <= 5; ++k) train_files.push_back(file(cat("data_batch_", k, ".bin")));
  const std::string test_file = file("test_batch.bin");
  std::vector<Dataset<T>> parts;
  for (const auto& f : train_files) parts.push_back(load_cifar_batch<T>(f));
  Split<T> s;
  s.train = detail::concat(std::move(parts), cat("cifar10 train (", (dir / "data_batch_{1..5}.bin").string(), ")"));
  s.test = load_cifar_batch<T>(test_file);
  s.test.name = cat("cifar10 test (", test_file, ")");
  return s;
}

}  // namespace curvature::data
