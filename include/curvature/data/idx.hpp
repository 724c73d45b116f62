#pragma once
// MNIST-format IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed.
// Format (big-endian): two zero bytes, a data-type byte (0x08 = unsigned byte), a dimension count,
// then one u32 per dimension, then the payload in C order. Images are magic 0x00000803 (N x H x W),
// labels 0x00000801 (N). The payload must be exactly the product of the dimensions: a truncated
// file or trailing bytes are errors. gzip is recognised by its magic bytes 1f 8b and inflated with
// zlib. Every error is a curvature::IoError whose message names the file and the problem.
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <zlib.h>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::data {

namespace detail {

using curvature::detail::cat;

inline IoError file_error(const std::string& path, const std::string& what) {
  return IoError(cat("data file '", path, "': ", what));
}

inline std::string hex32(std::uint32_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int k = 7; k >= 0; --k) s += digits[(v >> (4 * k)) & 0xf];
  return s;
}

/// The decompressed contents of a gzip file, read with zlib in 1 MiB chunks.
inline std::vector<unsigned char> read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw file_error(path, "cannot open the gzip file for reading");
  std::vector<unsigned char> out;
  constexpr unsigned chunk = 1u << 20;
  int got = 0;
  do {
    const std::size_t old = out.size();
    out.resize(old + chunk);
    got = gzread(f, out.data() + old, chunk);
    out.resize(old + (got > 0 ? static_cast<std::size_t>(got) : 0));
  } while (got > 0);
  int errnum = Z_OK;
  const char* msg = gzerror(f, &errnum);
  const std::string what = msg ? msg : "unknown zlib error";
  gzclose(f);
  if (got < 0 || errnum != Z_OK)
    throw file_error(path, cat("corrupt or truncated gzip data (zlib: ", what, ")"));
  return out;
}

/// The whole file, inflated when it starts with the gzip magic 1f 8b.
inline std::vector<unsigned char> read_file_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw file_error(path, "file not found");
  if (!fs::is_regular_file(path, ec)) throw file_error(path, "not a regular file");
  const std::uintmax_t size = fs::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) throw file_error(path, "cannot open the file for reading");
  unsigned char magic[2] = {0, 0};
  if (size >= 2 && in.read(reinterpret_cast<char*>(magic), 2) && magic[0] == 0x1f && magic[1] == 0x8b)
    return read_gzip(path);
  in.clear();
  in.seekg(0);
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    throw file_error(path, "read error");
  return bytes;
}

inline std::uint32_t read_be32(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

/// An IDX file checked against the expected dimension count: its dims and where the payload starts.
struct IdxView {
  std::vector<unsigned char> bytes;
  std::vector<Index> dims;
  std::size_t offset = 0;  ///< first payload byte
};

inline IdxView read_idx(const std::string& path, unsigned ndim, const char* what) {
  IdxView v{read_file_bytes(path), {}, 0};
  const auto& b = v.bytes;
  const std::uint32_t expected = 0x0800u | ndim;
  if (b.size() < 4)
    throw file_error(path, cat("truncated: ", b.size(), " bytes, too short for the 4-byte IDX magic"));
  const std::uint32_t magic = read_be32(b.data());
  if (b[0] != 0 || b[1] != 0)
    throw file_error(path, cat("wrong magic ", hex32(magic), ": not an IDX file (expected ", hex32(expected),
                               " for ", what, ")"));
  if (b[2] != 0x08)
    throw file_error(path, cat("wrong magic ", hex32(magic), ": data type byte 0x", hex32(b[2]).substr(8),
                               " is not supported, expected 0x08 (unsigned byte)"));
  if (b[3] != ndim)
    throw file_error(path, cat("wrong magic ", hex32(magic), ": ", int(b[3]), " dimension(s), expected ", ndim,
                               " for ", what, " (", hex32(expected), ")"));
  v.offset = 4 + 4 * std::size_t{ndim};
  if (b.size() < v.offset)
    throw file_error(path, cat("truncated: ", b.size(), " bytes, too short for the ", v.offset, "-byte header"));
  std::uintmax_t need = 1;
  std::string dims_text;
  for (unsigned k = 0; k < ndim; ++k) {
    const std::uint32_t d = read_be32(b.data() + 4 + 4 * k);
    if (d == 0) throw file_error(path, cat("dimension ", k, " of the header is zero"));
    if (d > (std::uintmax_t{1} << 40) / need)  // more than 1 TiB: a corrupt header, not data
      throw file_error(path, cat("header dimension ", k, " = ", d, " is implausibly large"));
    need *= d;
    v.dims.push_back(static_cast<Index>(d));
    dims_text += cat(k ? " x " : "", d);
  }
  const std::uintmax_t have = b.size() - v.offset;
  if (have < need)
    throw file_error(path, cat("truncated: header says ", dims_text, " = ", need, " bytes, file has ", have));
  if (have > need)
    throw file_error(path, cat("trailing bytes: header says ", dims_text, " = ", need, " bytes, file has ", have,
                               " (", have - need, " extra)"));
  return v;
}

}  // namespace detail

/// Images of an IDX file: one image per column (H*W rows, PyTorch's 1 x H x W order).
template <Scalar T>
struct IdxImages {
  Matrix<T> x;       ///< H*W x N, pixel / 255 in [0, 1]
  nn::Shape shape;   ///< 1 x H x W
};

/// Reads an IDX image file (magic 0x00000803, N x H x W unsigned bytes), plain or gzip.
template <Scalar T>
IdxImages<T> load_idx_images(const std::string& path) {
  const detail::IdxView v = detail::read_idx(path, 3, "images");
  IdxImages<T> out;
  out.shape = nn::Shape{1, v.dims[1], v.dims[2]};
  out.x.resize(v.dims[1] * v.dims[2], v.dims[0]);
  std::array<T, 256> lut;  // pixel / 255, one correctly rounded division per value
  for (int p = 0; p < 256; ++p) lut[static_cast<std::size_t>(p)] = static_cast<T>(p) / static_cast<T>(255);
  const unsigned char* src = v.bytes.data() + v.offset;
  T* dst = out.x.data();
  for (Index i = 0; i < out.x.size(); ++i) dst[i] = lut[src[i]];
  return out;
}

/// Reads an IDX label file (magic 0x00000801, N unsigned bytes), plain or gzip.
inline Labels load_idx_labels(const std::string& path) {
  const detail::IdxView v = detail::read_idx(path, 1, "labels");
  return Labels(v.bytes.begin() + static_cast<std::ptrdiff_t>(v.offset), v.bytes.end());
}

namespace detail {

/// folder/base, or folder/base.gz when only the compressed file exists; IoError naming both.
inline std::string find_idx_file(const std::string& folder, const std::string& base) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path plain = fs::path(folder) / base;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  const fs::path gz = fs::path(folder) / (base + ".gz");
  if (fs::is_regular_file(gz, ec)) return gz.string();
  throw IoError(cat("load_mnist_format: folder '", folder, "' has no ", base, " (nor ", base,
                    ".gz); an MNIST-format folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally .gz"));
}

template <Scalar T>
Dataset<T> load_idx_pair(const std::string& images, const std::string& labels, const std::string& name,
                         Index num_classes) {
  IdxImages<T> im = load_idx_images<T>(images);
  Labels y = load_idx_labels(labels);
  if (static_cast<Index>(y.size()) != im.x.cols())
    throw IoError(cat("load_mnist_format: '", images, "' holds ", im.x.cols(), " images but '", labels,
                      "' holds ", y.size(), " labels"));
  for (std::size_t i = 0; i < y.size(); ++i)
    if (y[i] >= num_classes)
      throw file_error(labels, cat("label ", y[i], " of sample ", i, " is outside [0, ", num_classes, ")"));
  return Dataset<T>{std::move(im.x), std::move(y), num_classes, im.shape, cat(name, " (", images, ")")};
}

}  // namespace detail

/// The train and test sets of an MNIST-format folder (MNIST, Fashion-MNIST): the four files
/// train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
/// t10k-labels-idx1-ubyte, each plain or with .gz. Labels must be in [0, 10). The data sets are
/// named "<name> train (<image file>)" and "<name> test (<image file>)".
template <Scalar T>
Split<T> load_mnist_format(const std::string& folder, const std::string& name = "mnist") {
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec))
    throw IoError(curvature::detail::cat("load_mnist_format: folder '", folder, "' does not exist"));
  const auto file = [&](const char* base) { return detail::find_idx_file(folder, base); };
  const std::string tr_x = file("train-images-idx3-ubyte"), tr_y = file("train-labels-idx1-ubyte");
  const std::string te_x = file("t10k-images-idx3-ubyte"), te_y = file("t10k-labels-idx1-ubyte");
  Split<T> s{detail::load_idx_pair<T>(tr_x, tr_y, name + " train", 10),
             detail::load_idx_pair<T>(te_x, te_y, name + " test", 10)};
  if (!(s.train.shape == s.test.shape))
    throw IoError(curvature::detail::cat("load_mnist_format: '", tr_x, "' holds ", s.train.shape.str(),
                                         " images but '", te_x, "' holds ", s.test.shape.str()));
  return s;
}

}  // namespace curvature::data
