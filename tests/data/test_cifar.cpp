// CIFAR-10 binary batches: records read back in PyTorch's C x H x W order, the six-file folder
// (also inside cifar-10-batches-bin/), and rejection of malformed files naming the file.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "curvature/data/cifar.hpp"
#include "data/data_fixtures.hpp"

using namespace curvature;
using namespace data_test;
using Catch::Contains;

namespace {

/// Value of channel c, row r, column s of record `sample` (see add_cifar_record) over 255.
template <class T>
T cifar_value(std::size_t c, std::size_t r, std::size_t s, std::size_t sample) {
  return static_cast<T>((c * 50 + r * 3 + s + sample) % 256) / static_cast<T>(255);
}

template <class T>
void check_records(const data::Dataset<T>& d, const std::vector<unsigned char>& labels, std::size_t first_sample) {
  REQUIRE(d.size() == Index(labels.size()));
  REQUIRE(d.dim() == 3072);
  REQUIRE(d.shape == nn::Shape{3, 32, 32});
  for (std::size_t i = 0; i < labels.size(); ++i) {
    CHECK(d.y[i] == labels[i]);
    for (std::size_t c = 0; c < 3; ++c)
      for (std::size_t r = 0; r < 32; ++r)
        for (std::size_t s = 0; s < 32; ++s)  // row of x: c * 1024 + r * 32 + s, as PyTorch flattens C x H x W
          REQUIRE(d.x(Index(c * 1024 + r * 32 + s), Index(i)) == cifar_value<T>(c, r, s, first_sample + i));
  }
}

/// Writes a CIFAR folder: five training batches of 2 records and a test batch of 3.
void write_cifar_folder(const std::string& dir) {
  for (int k = 1; k <= 5; ++k) {
    Bytes b;
    for (std::size_t i = 0; i < 2; ++i) add_cifar_record(b, static_cast<unsigned char>((2 * (k - 1) + i) % 10), 2 * (k - 1) + i);
    write_file(dir + "/data_batch_" + std::to_string(k) + ".bin", b);
  }
  Bytes t;
  for (std::size_t i = 0; i < 3; ++i) add_cifar_record(t, static_cast<unsigned char>(9 - i), 100 + i);
  write_file(dir + "/test_batch.bin", t);
}

}  // namespace

TEMPLATE_TEST_CASE("A CIFAR-10 batch reads back label and R, G, B planes of every record", "[data][cifar]", float,
                   double) {
  TempDir tmp;
  Bytes b;
  const std::vector<unsigned char> labels = {6, 0, 9, 3};
  for (std::size_t i = 0; i < labels.size(); ++i) add_cifar_record(b, labels[i], i);
  write_file(tmp.file("batch.bin"), b);
  const auto d = data::load_cifar_batch<TestType>(tmp.file("batch.bin"));
  check_records(d, labels, 0);
  CHECK(d.num_classes == 10);
  // Spot checks by hand: record 1, green plane (c = 1), row 2, column 5 = (50 + 6 + 5 + 1) / 255.
  CHECK(d.x(1024 + 2 * 32 + 5, 1) == static_cast<TestType>(62) / static_cast<TestType>(255));
  d.check();
}

TEST_CASE("load_cifar10 concatenates data_batch_1..5 in order and reads test_batch", "[data][cifar]") {
  TempDir tmp;
  for (const char* sub_name : {"flat", "outer/cifar-10-batches-bin"}) {
    const std::string sub = sub_name;
    const std::string dir = tmp.sub(sub);
    write_cifar_folder(dir);
    const std::string given = sub == "flat" ? dir : tmp.file("outer");
    const auto s = data::load_cifar10<float>(given);
    std::vector<unsigned char> train_labels;
    for (std::size_t i = 0; i < 10; ++i) train_labels.push_back(static_cast<unsigned char>(i));
    check_records(s.train, train_labels, 0);
    check_records(s.test, {9, 8, 7}, 100);
    CHECK_THAT(s.train.name, Contains("cifar10 train") && Contains(dir));
    CHECK_THAT(s.test.name, Contains("cifar10 test") && Contains(dir + "/test_batch.bin"));
  }
}

TEST_CASE("Malformed CIFAR-10 files and folders are rejected naming the file", "[data][cifar]") {
  TempDir tmp;
  Bytes b;
  add_cifar_record(b, 1, 0);
  add_cifar_record(b, 2, 1);
  Bytes cut(b.begin(), b.end() - 1);
  write_file(tmp.file("cut.bin"), cut);
  REQUIRE_THROWS_AS(data::load_cifar_batch<float>(tmp.file("cut.bin")), IoError);
  REQUIRE_THROWS_WITH(data::load_cifar_batch<float>(tmp.file("cut.bin")),
                      Contains(tmp.file("cut.bin")) && Contains("size 6145 bytes is not a positive multiple of the 3073"));
  Bytes longer = b;
  longer.push_back(0);
  write_file(tmp.file("long.bin"), longer);
  REQUIRE_THROWS_WITH(data::load_cifar_batch<float>(tmp.file("long.bin")),
                      Contains(tmp.file("long.bin")) && Contains("size 6147 bytes"));
  write_file(tmp.file("empty.bin"), {});
  REQUIRE_THROWS_WITH(data::load_cifar_batch<float>(tmp.file("empty.bin")),
                      Contains(tmp.file("empty.bin")) && Contains("size 0 bytes"));
  Bytes bad = b;
  bad[3073] = 10;  // label of record 1
  write_file(tmp.file("label.bin"), bad);
  REQUIRE_THROWS_WITH(data::load_cifar_batch<float>(tmp.file("label.bin")),
                      Contains(tmp.file("label.bin")) && Contains("label 10 of record 1 is outside [0, 10)"));
  REQUIRE_THROWS_WITH(data::load_cifar_batch<float>(tmp.file("none.bin")),
                      Contains(tmp.file("none.bin")) && Contains("file not found"));

  const std::string dir = tmp.sub("c");
  write_cifar_folder(dir);
  fs::remove(dir + "/data_batch_4.bin");
  REQUIRE_THROWS_AS(data::load_cifar10<float>(dir), IoError);
  REQUIRE_THROWS_WITH(data::load_cifar10<float>(dir), Contains("folder '" + dir + "'") && Contains("no data_batch_4.bin"));
  write_file(dir + "/data_batch_4.bin", cut);
  REQUIRE_THROWS_WITH(data::load_cifar10<float>(dir), Contains(dir + "/data_batch_4.bin"));
  REQUIRE_THROWS_WITH(data::load_cifar10<float>(tmp.file("absent")), Contains(tmp.file("absent")));
}
