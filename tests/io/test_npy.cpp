// NumPy .npy reading and writing: round trips, hand-built files (independent of the writer),
// rejection of malformed files with messages naming the file and the problem, atomic writes.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "curvature/io/io.hpp"

using namespace curvature;
namespace fs = std::filesystem;
using Catch::Contains;

namespace {

/// A fresh directory under the system temp dir, removed with its contents on scope exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir = fs::temp_directory_path() /
          ("curvature_test_npy_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

/// Builds a .npy file byte by byte: magic, version, little-endian header length, header, data.
std::string npy_bytes(int major, const std::string& header, const std::string& data) {
  std::string out = "\x93NUMPY";
  out += char(major);
  out += char(0);
  const std::size_t len = header.size();
  const int len_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) out += char((len >> (8 * i)) & 0xff);
  return out + header + data;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
std::string raw(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
  return s;
}

std::string float64_file(const std::string& shape, const std::vector<double>& values) {
  return npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': " + shape + ", }\n",
                   raw(values));
}

std::size_t files_in(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEMPLATE_TEST_CASE("save_npy then read_npy round-trips floating arrays of several shapes", "[io][npy]",
                   float, double) {
  TempDir tmp;
  const std::string path = tmp.file("a.npy");
  for (const std::vector<Index>& shape : std::vector<std::vector<Index>>{
           {}, {0}, {1}, {7}, {3, 4}, {2, 3, 4, 5}, {5, 0, 2}}) {
    Index n = 1;
    for (Index s : shape) n *= s;
    Vector<TestType> x(n);
    for (Index i = 0; i < n; ++i) x[i] = static_cast<TestType>(0.25 * i - 3.0);
    io::save_npy(path, x.data(), shape);
    const io::NpyArray a = io::read_npy(path);
    CHECK(a.dtype == (std::is_same_v<TestType, float> ? "float32" : "float64"));
    CHECK(a.shape == shape);
    CHECK(a.size() == n);
    const Vector<TestType> y = io::load_npy_vector<TestType>(path);
    REQUIRE(y.size() == n);
    CHECK(y == x);
  }
}

TEST_CASE("int64 labels round-trip and are read back as labels", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("y.npy");
  const std::vector<std::int64_t> labels = {0, 3, 9, 1, -2, std::numeric_limits<std::int64_t>::max()};
  io::save_labels(path, labels);
  CHECK(io::read_npy(path).dtype == "int64");
  CHECK(io::load_labels(path) == labels);
  const std::vector<std::int64_t> grid = {1, 2, 3, 4, 5, 6};
  io::save_npy(path, grid.data(), {2, 3});
  const io::NpyArray a = io::read_npy(path);
  CHECK(a.shape == std::vector<Index>{2, 3});
  CHECK(io::load_npy_vector<double>(path) == Vector<double>::LinSpaced(6, 1, 6));
}

TEST_CASE("A D x N batch is written as the C-order N x D array and loaded back", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("x.npy");
  Matrix<double> batch(3, 2);  // two samples of dimension three, one per column
  batch << 1, 4, 2, 5, 3, 6;
  io::save_npy(path, batch);
  const io::NpyArray a = io::read_npy(path);
  CHECK(a.shape == std::vector<Index>{2, 3});
  // NumPy row 0 is sample 0: 1, 2, 3.
  CHECK(io::load_npy_vector<double>(path) == Vector<double>::LinSpaced(6, 1, 6));
  CHECK(io::load_batch<double>(path) == batch);
  io::save_npy(path, Vector<float>(Vector<float>::Constant(4, 2.5f)));
  CHECK(io::read_npy(path).shape == std::vector<Index>{4});
}

TEST_CASE("An N x C x H x W file loads as a (C*H*W) x N batch", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("img.npy");
  std::vector<double> v(2 * 3 * 2 * 2);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = double(i);
  write_file(path, float64_file("(2, 3, 2, 2)", v));
  const Matrix<float> m = io::load_batch<float>(path);
  REQUIRE(m.rows() == 12);
  REQUIRE(m.cols() == 2);
  CHECK(m(0, 1) == 12.0f);
  CHECK(m(11, 0) == 11.0f);
}

TEST_CASE("A hand-built version 1.0 file with odd spacing is read correctly", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("hand.npy");
  write_file(path, npy_bytes(1, "{ \"shape\" : (2,3) ,'fortran_order':False,'descr':'<f8'}   \n",
                             raw(std::vector<double>{1, 2, 3, 4, 5, 6})));
  const io::NpyArray a = io::read_npy(path);
  CHECK(a.dtype == "float64");
  CHECK(a.shape == std::vector<Index>{2, 3});
  CHECK(io::load_npy_vector<double>(path) == Vector<double>::LinSpaced(6, 1, 6));
}

TEST_CASE("Hand-built version 2.0 and 3.0 files with each dtype are read correctly", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("v2.npy");
  write_file(path, npy_bytes(2, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }\n",
                             raw(std::vector<std::int32_t>{7, -1, 0, 42})));
  CHECK(io::read_npy(path).dtype == "int32");
  CHECK(io::load_labels(path) == std::vector<std::int64_t>{7, -1, 0, 42});
  write_file(path, npy_bytes(3, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }\n",
                             std::string("\x01\x02\xff", 3)));
  CHECK(io::read_npy(path).dtype == "uint8");
  CHECK(io::load_labels(path) == std::vector<std::int64_t>{1, 2, 255});
  write_file(path, npy_bytes(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n",
                             raw(std::vector<float>{1.5f})));
  CHECK(io::read_npy(path).shape.empty());
  CHECK(io::load_npy_vector<double>(path) == Vector<double>::Constant(1, 1.5));
}

TEST_CASE("The writer's header is padded to a multiple of 64 bytes and ends in a newline", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("w.npy");
  io::save_npy(path, Vector<double>(Vector<double>::Zero(3)));
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The dict for shape (3,) is 58 characters, so with the 10-byte prefix it needs 128 bytes,
  // exactly what np.save writes.
  REQUIRE(bytes.size() == 128 + 24);
  CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  CHECK(static_cast<unsigned char>(bytes[8]) + 256 * static_cast<unsigned char>(bytes[9]) == 118);
  CHECK(bytes[127] == '\n');
  CHECK_THAT(bytes.substr(10, 117), Contains("'descr': '<f8'") && Contains("'shape': (3,)") &&
                                       Contains("'fortran_order': False"));
}

TEST_CASE("load_parameters checks the dtype and the parameter count", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("p.npy");
  io::save_npy(path, Vector<float>(Vector<float>::LinSpaced(1000, 0, 1)));
  CHECK(io::load_parameters<double>(path, 1000).size() == 1000);
  REQUIRE_THROWS_MATCHES(io::load_parameters<double>(path, 1234), ShapeError,
                         Catch::Message("load_parameters: file '" + path +
                                        "' holds 1000 values but the model has 1234 parameters"));
  io::save_labels(path, {1, 2, 3});
  REQUIRE_THROWS_AS(io::load_parameters<double>(path, 3), IoError);
  REQUIRE_THROWS_WITH(io::load_parameters<double>(path, 3), Contains(path) && Contains("int64"));
}

TEST_CASE("load_labels rejects float data and arrays that are not 1-D", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("y.npy");
  io::save_npy(path, Vector<float>(Vector<float>::Zero(3)));
  REQUIRE_THROWS_AS(io::load_labels(path), IoError);
  REQUIRE_THROWS_WITH(io::load_labels(path), Contains(path) && Contains("integers"));
  const std::vector<std::int64_t> grid = {1, 2, 3, 4};
  io::save_npy(path, grid.data(), {2, 2});
  REQUIRE_THROWS_AS(io::load_labels(path), ShapeError);
  REQUIRE_THROWS_WITH(io::load_labels(path), Contains(path) && Contains("1-D"));
}

TEST_CASE("Malformed files throw IoError naming the file and the problem", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("bad.npy");
  const std::string good_header = "{'descr': '<f8', 'fortran_order': False, 'shape': (500,), }\n";
  const auto check = [&](const std::string& bytes, const std::string& problem) {
    write_file(path, bytes);
    REQUIRE_THROWS_AS(io::read_npy(path), IoError);
    REQUIRE_THROWS_WITH(io::read_npy(path), Contains(path) && Contains(problem));
  };
  SECTION("bad magic") { check("\x93NUMPZ\x01\x00" + std::string(60, ' '), "bad magic"); }
  SECTION("too short") { check("\x93NU", "too short"); }
  SECTION("unsupported version") {
    check(npy_bytes(4, good_header, raw(std::vector<double>(500))), "unsupported version 4.0");
  }
  SECTION("unsupported dtype") {
    check(npy_bytes(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n", std::string(16, 0)),
          "unsupported dtype '<c8'");
  }
  SECTION("big-endian") {
    check(npy_bytes(1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }\n", std::string(16, 0)),
          "big-endian");
  }
  SECTION("fortran order") {
    check(npy_bytes(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n", std::string(32, 0)),
          "fortran_order");
  }
  SECTION("truncated data") {
    check(npy_bytes(1, good_header, std::string(1200, 0)),
          "expected 4000 bytes of data after the header, found 1200");
  }
  SECTION("trailing garbage") { check(npy_bytes(1, good_header, std::string(4008, 0)), "trailing"); }
  SECTION("unterminated header dict") {
    check(npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,", ""), "unterminated");
  }
  SECTION("header length past the end of the file") {
    check(npy_bytes(1, good_header, "").substr(0, 30), "truncated header");
  }
  SECTION("missing key") {
    check(npy_bytes(1, "{'descr': '<f8', 'shape': (2,)}\n", std::string(16, 0)), "'fortran_order' is missing");
  }
  SECTION("negative dimension") {
    check(npy_bytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (-2,)}\n", ""), "malformed header");
  }
  SECTION("structured dtype") {
    check(npy_bytes(1, "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,)}\n", std::string(8, 0)),
          "unsupported dtype");
  }
}

TEST_CASE("A missing file throws IoError saying it was not found", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("nothing_here.npy");
  REQUIRE_THROWS_AS(io::read_npy(path), IoError);
  REQUIRE_THROWS_WITH(io::load_parameters<float>(path, 3), Contains(path) && Contains("not found"));
  REQUIRE_THROWS_WITH(io::read_npy(tmp.dir.string()), Contains("not a regular file"));
}

TEST_CASE("NaN is not a read error; all_finite reports it", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("nan.npy");
  Vector<double> x = Vector<double>::Ones(4);
  CHECK(io::all_finite(x));
  x[2] = std::numeric_limits<double>::quiet_NaN();
  io::save_npy(path, x);
  CHECK_FALSE(io::all_finite(io::read_npy(path)));
  CHECK_FALSE(io::all_finite(io::load_npy_vector<double>(path)));
  io::save_labels(path, {1, 2});
  CHECK(io::all_finite(io::read_npy(path)));
}

TEMPLATE_TEST_CASE("all_finite agrees with std::isfinite on every coefficient", "[io][npy][core]", float, double) {
  using L = std::numeric_limits<TestType>;
  const auto reference = [](const auto& m) {  // coefficient by coefficient, through std::isfinite
    for (Index j = 0; j < m.cols(); ++j)
      for (Index i = 0; i < m.rows(); ++i)
        if (!std::isfinite(m(i, j))) return false;
    return true;
  };
  const TestType bad[] = {L::quiet_NaN(), L::infinity(), -L::infinity()};
  const TestType extreme[] = {L::max(), L::lowest(), L::min(), L::denorm_min(), -TestType(0)};
  for (Index n : {Index{1}, Index{17}, Index{1000}}) {  // below, at and past whole SIMD packets
    Vector<TestType> x = Vector<TestType>::LinSpaced(n, TestType(-3), TestType(5));
    for (TestType e : extreme) {
      x[n / 2] = e;
      CHECK(all_finite(x));
      CHECK(reference(x));
    }
    for (TestType b : bad)
      for (Index at : {Index{0}, n / 2, n - 1}) {
        Vector<TestType> y = x;
        y[at] = b;
        INFO("n = " << n << ", value " << b << " at " << at);
        CHECK_FALSE(all_finite(y));
        CHECK_FALSE(reference(y));
      }
  }
  // A block with a stride: only the coefficients inside it count.
  Matrix<TestType> m = Matrix<TestType>::Ones(9, 7);
  m(8, 6) = L::infinity();
  CHECK(all_finite(m.topLeftCorner(8, 6)));
  CHECK_FALSE(all_finite(m.bottomRightCorner(2, 2)));
  CHECK(all_finite(Vector<TestType>()));
}

TEST_CASE("Writes are atomic: a failed write throws and leaves no temporary file", "[io][npy]") {
  TempDir tmp;
  const std::string path = (tmp.dir / "no_such_dir" / "out.npy").string();
  REQUIRE_THROWS_AS(io::save_npy(path, Vector<double>(Vector<double>::Ones(3))), IoError);
  REQUIRE_THROWS_WITH(io::save_npy(path, Vector<double>(Vector<double>::Ones(3))), Contains(path));
  CHECK(files_in(tmp.dir) == 0);

  // Renaming onto a directory fails after the temporary file was written; it must be removed
  // and the existing target left alone.
  const std::string dir_target = tmp.file("target");
  fs::create_directories(fs::path(dir_target) / "inside");
  REQUIRE_THROWS_WITH(io::save_npy(dir_target, Vector<double>(Vector<double>::Ones(3))),
                      Contains(dir_target) && Contains("rename"));
  CHECK(files_in(tmp.dir) == 1);

  // A successful overwrite leaves exactly the target.
  const std::string ok = tmp.file("ok.npy");
  io::save_npy(ok, Vector<double>(Vector<double>::Ones(3)));
  io::save_npy(ok, Vector<double>(Vector<double>::Zero(5)));
  CHECK(files_in(tmp.dir) == 2);
  CHECK(io::load_npy_vector<double>(ok) == Vector<double>::Zero(5));
}

TEST_CASE("A header too long for version 1.0 is written as version 2.0 and read back", "[io][npy]") {
  TempDir tmp;
  const std::string path = tmp.file("deep.npy");
  const std::vector<Index> shape(30000, 1);  // "1, " per dimension: about 90 kB of header
  const double value = 3.5;
  io::save_npy(path, &value, shape);
  std::ifstream in(path, std::ios::binary);
  char prefix[8] = {};
  in.read(prefix, 8);
  CHECK(prefix[6] == 2);
  const io::NpyArray a = io::read_npy(path);
  CHECK(a.shape == shape);
  CHECK(io::load_npy_vector<double>(path) == Vector<double>::Constant(1, 3.5));
}
