#pragma once
// NumPy .npy files (format versions 1.0, 2.0, 3.0): flat parameter vectors in PyTorch's
// parameters_to_vector layout, input batches (N x D or N x C x H x W, C order), labels, results.
// Format: "\x93NUMPY", major, minor, header length (u16 for 1.0, u32 for 2.0/3.0, little-endian),
// a Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...)}, then the raw data.
// Only little-endian, C-order arrays of float32/float64/int32/int64/uint8 are supported.
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"

namespace curvature::io {

static_assert(std::endian::native == std::endian::little,
              "curvature::io reads and writes .npy data with memcpy and needs a little-endian host");

/// The element types a .npy file may hold here.
template <class T>
concept NpyElement = Scalar<T> || std::same_as<T, std::int32_t> || std::same_as<T, std::int64_t> ||
                     std::same_as<T, std::uint8_t>;

/// A .npy array as stored: dtype name, C-order shape and the raw little-endian element bytes.
struct NpyArray {
  std::string dtype;           ///< "float32", "float64", "int32", "int64" or "uint8"
  std::vector<Index> shape;    ///< C order; empty for a 0-d array (one element)
  std::vector<char> bytes;     ///< size() * item_size() bytes

  /// Number of elements: the product of the shape (1 for a 0-d array).
  Index size() const {
    Index n = 1;
    for (Index s : shape) n *= s;
    return n;
  }
  bool is_floating() const { return dtype == "float32" || dtype == "float64"; }
  bool is_integer() const { return !is_floating(); }
};

namespace detail {

using curvature::detail::cat;

inline IoError npy_error(const std::string& path, const std::string& what) {
  return IoError(cat("npy file '", path, "': ", what));
}

/// dtype name and item size for a supported element type.
template <NpyElement T>
constexpr const char* npy_dtype_name() {
  if constexpr (std::same_as<T, float>) return "float32";
  else if constexpr (std::same_as<T, double>) return "float64";
  else if constexpr (std::same_as<T, std::int32_t>) return "int32";
  else if constexpr (std::same_as<T, std::int64_t>) return "int64";
  else return "uint8";
}

template <NpyElement T>
constexpr const char* npy_descr() {
  if constexpr (std::same_as<T, float>) return "<f4";
  else if constexpr (std::same_as<T, double>) return "<f8";
  else if constexpr (std::same_as<T, std::int32_t>) return "<i4";
  else if constexpr (std::same_as<T, std::int64_t>) return "<i8";
  else return "|u1";
}

inline std::size_t npy_item_size(const std::string& dtype) {
  if (dtype == "float64" || dtype == "int64") return 8;
  if (dtype == "float32" || dtype == "int32") return 4;
  return 1;
}

/// Maps a descr ('<f4', ...) to a dtype name; rejects big-endian and unsupported types.
inline std::string npy_dtype_from_descr(const std::string& descr, const std::string& path) {
  if (descr == "<f4") return "float32";
  if (descr == "<f8") return "float64";
  if (descr == "<i4") return "int32";
  if (descr == "<i8") return "int64";
  if (descr == "|u1" || descr == "<u1") return "uint8";
  if (!descr.empty() && descr[0] == '>')
    throw npy_error(path, cat("big-endian data '", descr, "' is not supported; save it with ",
                              "arr.astype(arr.dtype.newbyteorder('<'))"));
  throw npy_error(path, cat("unsupported dtype '", descr,
                            "' (supported: '<f4', '<f8', '<i4', '<i8', '|u1')"));
}

/// Calls f(std::type_identity<T>{}) for the element type named by dtype.
template <class F>
decltype(auto) npy_visit(const std::string& dtype, F&& f) {
  if (dtype == "float32") return f(std::type_identity<float>{});
  if (dtype == "float64") return f(std::type_identity<double>{});
  if (dtype == "int32") return f(std::type_identity<std::int32_t>{});
  if (dtype == "int64") return f(std::type_identity<std::int64_t>{});
  return f(std::type_identity<std::uint8_t>{});
}

/// Recursive-descent parser for the header dict literal. Accepts exactly the keys 'descr',
/// 'fortran_order' and 'shape' (as NumPy does), single- or double-quoted, any whitespace.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string& descr, bool& fortran, std::vector<Index>& shape) {
    bool seen[3] = {false, false, false};
    expect('{');
    while (!peek_is('}')) {
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        descr = descr_value();
        seen[0] = true;
      } else if (key == "fortran_order") {
        fortran = bool_literal();
        seen[1] = true;
      } else if (key == "shape") {
        shape = shape_tuple();
        seen[2] = true;
      } else {
        fail(cat("unknown key '", key, "'"));
      }
      if (!peek_is('}')) expect(',');
    }
    expect('}');
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the closing '}'");
    const char* names[3] = {"descr", "fortran_order", "shape"};
    for (int k = 0; k < 3; ++k)
      if (!seen[k]) fail(cat("key '", names[k], "' is missing"));
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw npy_error(path_, cat("malformed header: ", what, " at offset ", pos_, " in \"", s_, "\""));
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' ||
                                s_[pos_] == '\r'))
      ++pos_;
  }
  bool peek_is(char c) {
    skip_space();
    if (pos_ >= s_.size()) fail(cat("unterminated dict, expected '", c, "'"));
    return s_[pos_] == c;
  }
  void expect(char c) {
    if (!peek_is(c)) fail(cat("expected '", c, "', found '", s_[pos_], "'"));
    ++pos_;
  }
  std::string string_literal() {
    skip_space();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) fail("expected a quoted string");
    const char q = s_[pos_++];
    const std::size_t end = s_.find(q, pos_);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  std::string descr_value() {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == '[')
      throw npy_error(path_, "unsupported dtype: structured arrays (a descr list) are not supported");
    return string_literal();
  }
  bool bool_literal() {
    skip_space();
    for (const bool value : {true, false}) {
      const std::string_view word = value ? "True" : "False";
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    fail("expected True or False");
  }
  Index integer() {
    skip_space();
    const std::size_t start = pos_;
    Index v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      if (v > (std::numeric_limits<Index>::max() - 9) / 10) fail("dimension too large");
      v = 10 * v + (s_[pos_++] - '0');
    }
    if (pos_ == start) fail("expected a non-negative integer dimension");
    if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 long suffix
    return v;
  }
  std::vector<Index> shape_tuple() {
    std::vector<Index> shape;
    expect('(');
    while (!peek_is(')')) {
      shape.push_back(integer());
      if (!peek_is(')')) expect(',');
    }
    expect(')');
    return shape;
  }

  std::string_view s_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

inline std::uint32_t read_le(const unsigned char* p, int nbytes) {
  std::uint32_t v = 0;
  for (int i = nbytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/// Reads the magic, version and header; returns the header text.
inline std::string read_npy_header(std::istream& in, const std::string& path) {
  unsigned char pre[12] = {};
  if (!in.read(reinterpret_cast<char*>(pre), 8))
    throw npy_error(path, "too short to be a .npy file (no magic string)");
  if (std::memcmp(pre, "\x93NUMPY", 6) != 0)
    throw npy_error(path, "bad magic string (not a .npy file; expected \"\\x93NUMPY\")");
  const int major = pre[6];
  if ((major != 1 && major != 2 && major != 3) || pre[7] != 0)
    throw npy_error(path, cat("unsupported version ", major, ".", int(pre[7]),
                              " (supported: 1.0, 2.0, 3.0)"));
  const int len_bytes = major == 1 ? 2 : 4;
  if (!in.read(reinterpret_cast<char*>(pre + 8), len_bytes))
    throw npy_error(path, "truncated header length");
  const std::uint32_t len = read_le(pre + 8, len_bytes);
  std::string header(len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(len)))
    throw npy_error(path, cat("truncated header: expected ", len, " bytes, found ", in.gcount()));
  return header;
}

/// Element count of shape times item size, rejecting overflow.
inline std::uintmax_t npy_data_bytes(const std::vector<Index>& shape, std::size_t item,
                                     const std::string& path) {
  std::uintmax_t n = item;
  for (Index s : shape) {
    if (s != 0 && n > std::numeric_limits<std::uintmax_t>::max() / static_cast<std::uintmax_t>(s))
      throw npy_error(path, "shape too large (element count overflows)");
    n *= static_cast<std::uintmax_t>(s);
  }
  return n;
}

/// Converts every element of a to T, in C order.
template <NpyElement T>
void npy_convert(const NpyArray& a, T* out) {
  npy_visit(a.dtype, [&]<class S>(std::type_identity<S>) {
    const Index n = a.size();
    for (Index i = 0; i < n; ++i) {
      S v;
      std::memcpy(&v, a.bytes.data() + i * Index(sizeof(S)), sizeof(S));
      out[i] = static_cast<T>(v);
    }
  });
}

}  // namespace detail

/// Reads a .npy file. Throws IoError naming the file for a missing/unreadable file, bad magic,
/// unsupported version, malformed header, unsupported or big-endian dtype, Fortran order,
/// truncated data or trailing bytes.
inline NpyArray read_npy(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw detail::npy_error(path, "file not found");
  if (!fs::is_regular_file(path, ec)) throw detail::npy_error(path, "not a regular file");
  const std::uintmax_t file_size = fs::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) throw detail::npy_error(path, "cannot open the file for reading");
  const std::string header = detail::read_npy_header(in, path);
  std::string descr;
  bool fortran = false;
  NpyArray a;
  detail::NpyHeaderParser(header, path).parse(descr, fortran, a.shape);
  a.dtype = detail::npy_dtype_from_descr(descr, path);
  if (fortran)
    throw detail::npy_error(path, "fortran_order is True; save a C-order array "
                                  "(np.ascontiguousarray) instead");
  const std::uintmax_t need = detail::npy_data_bytes(a.shape, detail::npy_item_size(a.dtype), path);
  const std::uintmax_t offset = static_cast<std::uintmax_t>(in.tellg());
  const std::uintmax_t have = file_size - offset;
  if (have < need)
    throw detail::npy_error(path, detail::cat("truncated data: expected ", need,
                                              " bytes of data after the header, found ", have));
  if (have > need)
    throw detail::npy_error(path, detail::cat("trailing garbage: ", have - need,
                                              " bytes after the expected ", need, " bytes of data"));
  a.bytes.resize(static_cast<std::size_t>(need));
  if (!in.read(a.bytes.data(), static_cast<std::streamsize>(need)))
    throw detail::npy_error(path, "read error while reading the data");
  return a;
}

/// All elements of any numeric array, converted to T and flattened in C order.
template <Scalar T>
Vector<T> load_npy_vector(const std::string& path) {
  const NpyArray a = read_npy(path);
  Vector<T> v(a.size());
  detail::npy_convert(a, v.data());
  return v;
}

/// A flat parameter vector (PyTorch parameters_to_vector layout). The file must hold float32 or
/// float64 data (IoError otherwise) with exactly expected_length elements (ShapeError otherwise).
template <Scalar T>
Vector<T> load_parameters(const std::string& path, Index expected_length) {
  const NpyArray a = read_npy(path);
  if (!a.is_floating())
    throw IoError(detail::cat("load_parameters: file '", path, "' holds ", a.dtype,
                              " data; parameters must be float32 or float64"));
  if (a.size() != expected_length)
    throw ShapeError(detail::cat("load_parameters: file '", path, "' holds ", a.size(),
                                 " values but the model has ", expected_length, " parameters"));
  Vector<T> v(a.size());
  detail::npy_convert(a, v.data());
  return v;
}

/// A batch stored as an N x ... C-order array (N x D, N x C x H x W), returned as the library's
/// column-major (prod of the trailing dims) x N matrix, one sample per column.
template <Scalar T>
Matrix<T> load_batch(const std::string& path) {
  const NpyArray a = read_npy(path);
  if (a.shape.empty())
    throw ShapeError(detail::cat("load_batch: file '", path, "' holds a 0-d array; ",
                                 "expected N x ... with one sample per row"));
  Index d = 1;  // features per sample: product of the trailing dims (1 for a 1-D array)
  for (std::size_t k = 1; k < a.shape.size(); ++k) d *= a.shape[k];
  Matrix<T> m(d, a.shape[0]);
  detail::npy_convert(a, m.data());
  return m;
}

/// Class labels: a 1-D int32, int64 or uint8 array. Float data is rejected (IoError), other
/// ranks too (ShapeError). Range checks against the number of classes are left to callers.
inline std::vector<std::int64_t> load_labels(const std::string& path) {
  const NpyArray a = read_npy(path);
  if (!a.is_integer())
    throw IoError(detail::cat("load_labels: file '", path, "' holds ", a.dtype,
                              " data; labels must be integers (int32, int64 or uint8)"));
  if (a.shape.size() != 1)
    throw ShapeError(detail::cat("load_labels: file '", path, "' holds an array of rank ",
                                 a.shape.size(), "; labels must be 1-D"));
  std::vector<std::int64_t> y(static_cast<std::size_t>(a.size()));
  detail::npy_convert(a, y.data());
  return y;
}

/// True when no element is NaN or infinite (integer arrays always are finite).
inline bool all_finite(const NpyArray& a) {
  if (!a.is_floating()) return true;
  return detail::npy_visit(a.dtype, [&]<class S>(std::type_identity<S>) {
    if constexpr (std::is_floating_point_v<S>) {
      for (Index i = 0; i < a.size(); ++i) {
        S v;
        std::memcpy(&v, a.bytes.data() + i * Index(sizeof(S)), sizeof(S));
        if (!std::isfinite(v)) return false;
      }
    }
    return true;
  });
}

/// True when no coefficient of an Eigen vector or matrix is NaN or infinite (core/types.hpp).
using curvature::all_finite;

namespace detail {

/// The header text (dict, space padding, '\n') and its prefix; the whole preamble is padded to a
/// multiple of 64 bytes as NumPy does. Version 2.0 is used only when 1.0's u16 length overflows.
inline std::string npy_preamble(const char* descr, const std::vector<Index>& shape) {
  std::string dict = cat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (");
  for (std::size_t k = 0; k < shape.size(); ++k) dict += cat(k ? ", " : "", shape[k]);
  dict += shape.size() == 1 ? ",), }" : "), }";
  const bool v1 = dict.size() + 1 + 10 <= 65535;
  const std::size_t prefix = v1 ? 10 : 12;
  const std::size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += char(v1 ? 1 : 2);
  out += char(0);
  const std::size_t len = dict.size();
  for (std::size_t i = 0; i < prefix - 8; ++i) out += char((len >> (8 * i)) & 0xff);
  return out + dict;
}

/// A name for the temporary file next to target, unique across threads and processes.
inline std::filesystem::path npy_temp_path(const std::filesystem::path& target) {
  static std::atomic<unsigned long> counter{0};
  std::random_device rd;
  const auto tag = cat(".", target.filename().string(), ".tmp.", rd(), rd(), ".",
                       counter.fetch_add(1));
  return target.parent_path() / tag;
}

/// Writes preamble and data to a temporary file, then renames it over path; on failure removes
/// the temporary file and throws IoError naming path.
inline void write_atomic(const std::string& path, const std::string& preamble, const char* data,
                         std::size_t nbytes) {
  namespace fs = std::filesystem;
  const fs::path tmp = npy_temp_path(fs::path(path));
  std::error_code ec;
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw npy_error(path, "cannot create a temporary file in the target directory");
    out.write(preamble.data(), static_cast<std::streamsize>(preamble.size()));
    if (nbytes) out.write(data, static_cast<std::streamsize>(nbytes));
    out.close();
    if (!out) throw npy_error(path, "write failed (disk full or permission denied?)");
    fs::rename(tmp, path, ec);
    if (ec) throw npy_error(path, cat("cannot rename the temporary file into place: ", ec.message()));
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace detail

/// Writes shape-many elements from data (C order) to path atomically: the file is either written
/// completely or left untouched. Throws ValueError for a negative dimension, IoError on failure.
template <NpyElement T>
void save_npy(const std::string& path, const T* data, const std::vector<Index>& shape) {
  Index n = 1;
  for (Index s : shape) {
    CURVATURE_CHECK_VALUE(s >= 0, "save_npy: negative dimension ", s, " in the shape for '", path, "'");
    n *= s;
  }
  CURVATURE_CHECK_VALUE(n == 0 || data != nullptr, "save_npy: null data for '", path, "'");
  detail::write_atomic(path, detail::npy_preamble(detail::npy_descr<T>(), shape),
                       reinterpret_cast<const char*>(data), static_cast<std::size_t>(n) * sizeof(T));
}

/// A vector as a 1-D array of shape (n,).
template <NpyElement T>
void save_npy(const std::string& path, const Vector<T>& v) {
  save_npy(path, v.data(), {v.size()});
}

/// A column-major D x N batch (one sample per column) as the byte-identical C-order N x D array.
template <NpyElement T>
void save_npy(const std::string& path, const Matrix<T>& m) {
  save_npy(path, m.data(), {m.cols(), m.rows()});
}

/// Labels as a 1-D int64 array.
inline void save_labels(const std::string& path, const std::vector<std::int64_t>& labels) {
  save_npy(path, labels.data(), {static_cast<Index>(labels.size())});
}

}  // namespace curvature::io
