// MNIST-format IDX reading: values read back from hand-built plain and gzip files, header and size
// checks, load_mnist_format's file discovery and cross-file checks, and the real Fashion-MNIST
// of Debian's dataset-fashion-mnist when it is installed.
#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "curvature/data/idx.hpp"
#include "curvature/data/transforms.hpp"
#include "data/data_fixtures.hpp"

using namespace curvature;
using namespace data_test;
using Catch::Contains;

namespace {

template <class T>
void check_images(const data::IdxImages<T>& im, std::size_t n, std::size_t h, std::size_t w) {
  REQUIRE(im.shape == nn::Shape{1, Index(h), Index(w)});
  REQUIRE(im.x.rows() == Index(h * w));
  REQUIRE(im.x.cols() == Index(n));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t k = 0; k < h * w; ++k)
      REQUIRE(im.x(Index(k), Index(i)) == static_cast<T>(pixel(i, k)) / static_cast<T>(255));
}

}  // namespace

TEMPLATE_TEST_CASE("IDX images are read back pixel by pixel as pixel / 255, plain or gzip", "[data][idx]", float,
                   double) {
  TempDir tmp;
  write_file(tmp.file("a-idx3-ubyte"), idx_images(5, 3, 7));
  write_gzip(tmp.file("a-idx3-ubyte.gz"), idx_images(5, 3, 7));
  check_images(data::load_idx_images<TestType>(tmp.file("a-idx3-ubyte")), 5, 3, 7);
  check_images(data::load_idx_images<TestType>(tmp.file("a-idx3-ubyte.gz")), 5, 3, 7);
  // 256 images of 1 x 1 pixel: every byte value, 0 -> 0 and 255 -> 1 exactly.
  Bytes all(256);
  for (std::size_t v = 0; v < 256; ++v) all[v] = static_cast<unsigned char>(v);
  write_gzip(tmp.file("b.gz"), idx_bytes(0x08, {256, 1, 1}, all));
  const auto im = data::load_idx_images<TestType>(tmp.file("b.gz"));
  REQUIRE(im.x.cols() == 256);
  for (Index v = 0; v < 256; ++v) REQUIRE(im.x(0, v) == static_cast<TestType>(v) / static_cast<TestType>(255));
  CHECK(im.x(0, 0) == TestType(0));
  CHECK(im.x(0, 255) == TestType(1));
}

TEST_CASE("IDX labels are read back, plain or gzip", "[data][idx]") {
  TempDir tmp;
  const std::vector<unsigned char> y = {3, 0, 9, 255, 7, 1};
  write_file(tmp.file("l"), idx_labels(y));
  write_gzip(tmp.file("l.gz"), idx_labels(y));
  const data::Labels expected = {3, 0, 9, 255, 7, 1};
  CHECK(data::load_idx_labels(tmp.file("l")) == expected);
  CHECK(data::load_idx_labels(tmp.file("l.gz")) == expected);
}

TEST_CASE("Malformed IDX files are rejected with an IoError naming the file and the problem", "[data][idx]") {
  TempDir tmp;
  const auto reject_images = [&](const std::string& name, const Bytes& b, const std::string& problem, bool gz) {
    const std::string path = tmp.file(name);
    if (gz) write_gzip(path, b);
    else write_file(path, b);
    REQUIRE_THROWS_AS(data::load_idx_images<float>(path), IoError);
    REQUIRE_THROWS_WITH(data::load_idx_images<float>(path), Contains(path) && Contains(problem));
  };
  Bytes good = idx_images(4, 5, 6);
  for (bool gz : {false, true}) {
    const std::string z = gz ? ".gz" : "";
    Bytes shorter(good.begin(), good.end() - 1);
    reject_images("truncated" + z, shorter, "truncated: header says 4 x 5 x 6 = 120 bytes, file has 119", gz);
    Bytes longer = good;
    longer.push_back(0);
    longer.push_back(0);
    reject_images("trailing" + z, longer, "trailing bytes: header says 4 x 5 x 6 = 120 bytes, file has 122", gz);
    Bytes magic = good;
    magic[0] = 0x12;
    reject_images("magic" + z, magic, "wrong magic 0x12000803: not an IDX file", gz);
    Bytes dtype = good;
    dtype[2] = 0x0d;  // float
    reject_images("dtype" + z, dtype, "data type byte 0x0d is not supported", gz);
    reject_images("labels_as_images" + z, idx_labels({1, 2, 3}), "1 dimension(s), expected 3", gz);
    reject_images("header_cut" + z, Bytes(good.begin(), good.begin() + 9), "too short for the 16-byte header", gz);
    reject_images("tiny" + z, Bytes{0, 0}, "too short for the 4-byte IDX magic", gz);
    reject_images("zero_dim" + z, idx_bytes(0x08, {0, 5, 6}, {}), "dimension 0 of the header is zero", gz);
  }
  // A gzip stream cut short is a zlib error, not a silently short file.
  write_gzip(tmp.file("full.gz"), good);
  Bytes gz = read_raw(tmp.file("full.gz"));
  gz.resize(gz.size() - 12);
  write_file(tmp.file("cut.gz"), gz);
  REQUIRE_THROWS_WITH(data::load_idx_images<float>(tmp.file("cut.gz")),
                      Contains(tmp.file("cut.gz")) && Contains("corrupt or truncated gzip data"));
  REQUIRE_THROWS_WITH(data::load_idx_images<float>(tmp.file("missing")),
                      Contains(tmp.file("missing")) && Contains("file not found"));
  // Labels: the images magic is rejected as labels, and a label file's size is checked too.
  write_file(tmp.file("img_as_labels"), good);
  REQUIRE_THROWS_WITH(data::load_idx_labels(tmp.file("img_as_labels")),
                      Contains(tmp.file("img_as_labels")) && Contains("3 dimension(s), expected 1"));
  Bytes lab = idx_labels({1, 2, 3});
  lab.pop_back();
  write_file(tmp.file("lab_short"), lab);
  REQUIRE_THROWS_WITH(data::load_idx_labels(tmp.file("lab_short")),
                      Contains(tmp.file("lab_short")) && Contains("truncated: header says 3 = 3 bytes, file has 2"));
}

TEST_CASE("load_mnist_format reads the four files of a folder, plain or gzip", "[data][idx]") {
  TempDir tmp;
  const std::string dir = tmp.sub("mnist");
  write_mnist_folder(dir, 23, 11, 4, 3);
  const auto s = data::load_mnist_format<double>(dir, "mnist");
  REQUIRE(s.train.size() == 23);
  REQUIRE(s.test.size() == 11);
  CHECK(s.train.shape == nn::Shape{1, 4, 3});
  CHECK(s.train.num_classes == 10);
  CHECK(s.test.num_classes == 10);
  for (Index i = 0; i < 23; ++i) {
    CHECK(s.train.y[std::size_t(i)] == i % 10);
    for (Index k = 0; k < 12; ++k) REQUIRE(s.train.x(k, i) == double(pixel(std::size_t(i), std::size_t(k))) / 255.0);
  }
  for (Index i = 0; i < 11; ++i) {
    CHECK(s.test.y[std::size_t(i)] == (i + 3) % 10);
    for (Index k = 0; k < 12; ++k) REQUIRE(s.test.x(k, i) == double(pixel(std::size_t(i), std::size_t(k))) / 255.0);
  }
  CHECK_THAT(s.train.name, Contains("mnist train") && Contains(dir + "/train-images-idx3-ubyte"));
  CHECK_THAT(s.test.name, Contains("mnist test") && Contains(dir + "/t10k-images-idx3-ubyte.gz"));
  s.train.check();
  s.test.check();
}

TEST_CASE("load_mnist_format rejects missing files, count mismatches and labels >= 10", "[data][idx]") {
  TempDir tmp;
  const std::string dir = tmp.sub("m");
  write_mnist_folder(dir, 8, 5);
  fs::remove(dir + "/t10k-labels-idx1-ubyte.gz");
  REQUIRE_THROWS_AS(data::load_mnist_format<float>(dir), IoError);
  REQUIRE_THROWS_WITH(data::load_mnist_format<float>(dir),
                      Contains("folder '" + dir + "'") && Contains("no t10k-labels-idx1-ubyte"));
  REQUIRE_THROWS_WITH(data::load_mnist_format<float>(tmp.file("nowhere")),
                      Contains(tmp.file("nowhere")) && Contains("does not exist"));

  write_gzip(dir + "/t10k-labels-idx1-ubyte.gz", idx_labels({1, 2, 3, 4}));  // 4 labels for 5 images
  REQUIRE_THROWS_WITH(data::load_mnist_format<float>(dir),
                      Contains(dir + "/t10k-images-idx3-ubyte.gz' holds 5 images") &&
                          Contains(dir + "/t10k-labels-idx1-ubyte.gz' holds 4 labels"));

  write_gzip(dir + "/t10k-labels-idx1-ubyte.gz", idx_labels({1, 2, 10, 4, 5}));
  REQUIRE_THROWS_WITH(data::load_mnist_format<float>(dir),
                      Contains(dir + "/t10k-labels-idx1-ubyte.gz") && Contains("label 10 of sample 2 is outside [0, 10)"));

  write_gzip(dir + "/t10k-labels-idx1-ubyte.gz", idx_labels({1, 2, 3, 4, 5}));
  write_gzip(dir + "/t10k-images-idx3-ubyte.gz", idx_images(5, 3, 4));  // 3 x 4 against the train set's 4 x 3
  REQUIRE_THROWS_WITH(data::load_mnist_format<float>(dir), Contains("1x4x3") && Contains("1x3x4"));

  // The plain file wins over the .gz one when both are present.
  write_file(dir + "/t10k-images-idx3-ubyte", idx_images(5, 4, 3));
  CHECK(data::load_mnist_format<float>(dir).test.size() == 5);
}

TEST_CASE("Debian's Fashion-MNIST reads as 60000 + 10000 images with 6000 / 1000 per class", "[data][idx][real]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    WARN("skipped: " << dir << " is absent (Debian package dataset-fashion-mnist)");
    return;
  }
  const auto s = data::load_mnist_format<float>(dir, "fashion-mnist");
  REQUIRE(s.train.size() == 60000);
  REQUIRE(s.test.size() == 10000);
  CHECK(s.train.shape == nn::Shape{1, 28, 28});
  CHECK(data::class_counts(s.train) == std::vector<Index>(10, 6000));
  CHECK(data::class_counts(s.test) == std::vector<Index>(10, 1000));
  CHECK(s.train.x.minCoeff() == 0.0f);
  CHECK(s.train.x.maxCoeff() == 1.0f);
  CHECK(s.train.y[0] == 9);  // the first training image of Fashion-MNIST is an ankle boot
  CHECK_THAT(s.train.name, Contains("fashion-mnist train (" + dir + "/train-images-idx3-ubyte"));
}
