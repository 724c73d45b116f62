#pragma once
// Helpers of the data tests: a temporary folder, raw file writing (plain and gzip through zlib),
// IDX and CIFAR-10 files built byte by byte, independently of the readers under test.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <zlib.h>

namespace data_test {

namespace fs = std::filesystem;

/// A fresh directory under the system temp dir, removed with its contents on scope exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir = fs::temp_directory_path() / ("curvature_test_data_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (dir / name).string(); }
  std::string sub(const std::string& name) const {
    fs::create_directories(dir / name);
    return (dir / name).string();
  }
};

using Bytes = std::vector<unsigned char>;

inline void write_file(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

/// gzip-compresses b into path with zlib (a real gzip stream with header and trailer).
inline void write_gzip(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb9");
  if (!f) throw std::runtime_error("cannot create " + path);
  if (!b.empty()) gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
  gzclose(f);
}

inline Bytes read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void put_be32(Bytes& b, std::uint32_t v) {
  for (int k = 3; k >= 0; --k) b.push_back(static_cast<unsigned char>((v >> (8 * k)) & 0xff));
}

/// An IDX file: magic bytes 0, 0, type, ndim; big-endian dims; payload.
inline Bytes idx_bytes(unsigned char type, const std::vector<std::uint32_t>& dims, const Bytes& payload) {
  Bytes b = {0, 0, type, static_cast<unsigned char>(dims.size())};
  for (auto d : dims) put_be32(b, d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

/// Pixel k of image i: a pattern that differs between pixels and between images.
inline unsigned char pixel(std::size_t i, std::size_t k) { return static_cast<unsigned char>((7 * i + 13 * k + i * k) % 256); }

/// n images of h x w with pixel(i, k), as an IDX images file.
inline Bytes idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w) {
  Bytes payload;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t k = 0; k < std::size_t(h) * w; ++k) payload.push_back(pixel(i, k));
  return idx_bytes(0x08, {n, h, w}, payload);
}

inline Bytes idx_labels(const std::vector<unsigned char>& y) { return idx_bytes(0x08, {std::uint32_t(y.size())}, y); }

/// An MNIST-format folder: n_train / n_test images of h x w, labels i % 10; the test files gzipped.
inline void write_mnist_folder(const std::string& dir, std::uint32_t n_train, std::uint32_t n_test,
                               std::uint32_t h = 4, std::uint32_t w = 3) {
  std::vector<unsigned char> ytr, yte;
  for (std::uint32_t i = 0; i < n_train; ++i) ytr.push_back(static_cast<unsigned char>(i % 10));
  for (std::uint32_t i = 0; i < n_test; ++i) yte.push_back(static_cast<unsigned char>((i + 3) % 10));
  write_file(dir + "/train-images-idx3-ubyte", idx_images(n_train, h, w));
  write_file(dir + "/train-labels-idx1-ubyte", idx_labels(ytr));
  write_gzip(dir + "/t10k-images-idx3-ubyte.gz", idx_images(n_test, h, w));
  write_gzip(dir + "/t10k-labels-idx1-ubyte.gz", idx_labels(yte));
}

/// A CIFAR-10 record: label, then 3 planes of 32 x 32 where plane c, row r, column s holds
/// (c * 50 + r * 3 + s + sample) % 256.
inline void add_cifar_record(Bytes& b, unsigned char label, std::size_t sample) {
  b.push_back(label);
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t r = 0; r < 32; ++r)
      for (std::size_t s = 0; s < 32; ++s) b.push_back(static_cast<unsigned char>((c * 50 + r * 3 + s + sample) % 256));
}

/// Sets an environment variable for the scope (or unsets it), restoring the old value.
class EnvGuard {
 public:
  EnvGuard(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~EnvGuard() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace data_test
