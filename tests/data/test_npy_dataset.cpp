// Data sets from NumPy arrays: shapes from the array rank, dtypes, label checks and the
// x_train/y_train/x_test/y_test folder, with errors naming the file.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "curvature/data/npy_dataset.hpp"
#include "curvature/io/npy.hpp"
#include "data/data_fixtures.hpp"

using namespace curvature;
using namespace data_test;
using Catch::Contains;

TEMPLATE_TEST_CASE("An N x C x H x W float array with int64 labels becomes a data set", "[data][npy]", float, double) {
  TempDir tmp;
  std::vector<float> x(4 * 2 * 3 * 5);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * float(i) - 7.0f;
  io::save_npy(tmp.file("x.npy"), x.data(), {4, 2, 3, 5});
  io::save_labels(tmp.file("y.npy"), {2, 0, 5, 2});
  const auto d = data::load_npy_dataset<TestType>(tmp.file("x.npy"), tmp.file("y.npy"));
  REQUIRE(d.size() == 4);
  CHECK(d.shape == nn::Shape{2, 3, 5});
  CHECK(d.num_classes == 6);
  CHECK(d.y == data::Labels{2, 0, 5, 2});
  for (Index i = 0; i < 4; ++i)  // sample i is NumPy row i: elements i * 30 ... i * 30 + 29
    for (Index k = 0; k < 30; ++k) REQUIRE(d.x(k, i) == static_cast<TestType>(x[std::size_t(i * 30 + k)]));
  CHECK(d.name == tmp.file("x.npy"));
  d.check();
  CHECK(data::load_npy_dataset<TestType>(tmp.file("x.npy"), tmp.file("y.npy"), 10, "mine").num_classes == 10);
}

TEST_CASE("npy inputs of rank 2 and 3, uint8 pixels and int32 labels", "[data][npy]") {
  TempDir tmp;
  const std::vector<double> x2 = {1, 2, 3, 4, 5, 6};
  io::save_npy(tmp.file("x2.npy"), x2.data(), {2, 3});
  const std::vector<std::int32_t> y2 = {1, 0};
  io::save_npy(tmp.file("y2.npy"), y2.data(), {2});
  const auto d2 = data::load_npy_dataset<double>(tmp.file("x2.npy"), tmp.file("y2.npy"));
  CHECK(d2.shape == nn::Shape{3, 1, 1});
  CHECK(d2.x.col(1) == Vector<double>::LinSpaced(3, 4, 6));
  CHECK(d2.y == data::Labels{1, 0});
  CHECK(d2.num_classes == 2);

  std::vector<std::uint8_t> x3(3 * 2 * 2);
  for (std::size_t i = 0; i < x3.size(); ++i) x3[i] = static_cast<std::uint8_t>(20 * i + 15);
  io::save_npy(tmp.file("x3.npy"), x3.data(), {3, 2, 2});
  io::save_labels(tmp.file("y3.npy"), {0, 1, 2});
  const auto d3 = data::load_npy_dataset<float>(tmp.file("x3.npy"), tmp.file("y3.npy"));
  CHECK(d3.shape == nn::Shape{1, 2, 2});
  for (Index i = 0; i < 3; ++i)
    for (Index k = 0; k < 4; ++k) CHECK(d3.x(k, i) == float(x3[std::size_t(i * 4 + k)]) / 255.0f);
}

TEST_CASE("Bad npy inputs and labels are rejected naming the file", "[data][npy]") {
  TempDir tmp;
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  io::save_npy(tmp.file("x.npy"), x.data(), {3, 2});
  const auto reject = [&](const std::string& xf, const std::string& yf, const std::string& named,
                          const std::string& problem, Index k = 0) {
    REQUIRE_THROWS_AS(data::load_npy_dataset<float>(xf, yf, k), IoError);
    REQUIRE_THROWS_WITH(data::load_npy_dataset<float>(xf, yf, k), Contains(named) && Contains(problem));
  };
  io::save_labels(tmp.file("y_short.npy"), {0, 1});
  reject(tmp.file("x.npy"), tmp.file("y_short.npy"), tmp.file("y_short.npy"),
         "holds 2 labels but '" + tmp.file("x.npy") + "' holds 3 samples");
  io::save_npy(tmp.file("y_float.npy"), x.data(), {3});
  reject(tmp.file("x.npy"), tmp.file("y_float.npy"), tmp.file("y_float.npy"), "labels are float32");
  io::save_labels(tmp.file("y_neg.npy"), {0, -1, 1});
  reject(tmp.file("x.npy"), tmp.file("y_neg.npy"), tmp.file("y_neg.npy"), "label -1 of sample 1 is negative");
  io::save_labels(tmp.file("y.npy"), {0, 4, 1});
  reject(tmp.file("x.npy"), tmp.file("y.npy"), tmp.file("y.npy"), "label 4 of sample 1 is outside [0, 3)", 3);
  const std::vector<std::int64_t> y2d = {0, 1, 0};
  io::save_npy(tmp.file("y2d.npy"), y2d.data(), {3, 1});
  reject(tmp.file("x.npy"), tmp.file("y2d.npy"), tmp.file("y2d.npy"), "1-D");
  const std::vector<std::int32_t> xi = {1, 2, 3};
  io::save_npy(tmp.file("x_int.npy"), xi.data(), {3, 1});
  reject(tmp.file("x_int.npy"), tmp.file("y.npy"), tmp.file("x_int.npy"), "inputs are int32");
  std::vector<float> xn = x;
  xn[4] = std::numeric_limits<float>::quiet_NaN();
  io::save_npy(tmp.file("x_nan.npy"), xn.data(), {3, 2});
  reject(tmp.file("x_nan.npy"), tmp.file("y.npy"), tmp.file("x_nan.npy"), "NaN");
  io::save_npy(tmp.file("x5.npy"), x.data(), {3, 1, 1, 2, 1});
  reject(tmp.file("x5.npy"), tmp.file("y.npy"), tmp.file("x5.npy"), "rank 5");
  reject(tmp.file("x.npy"), tmp.file("missing.npy"), tmp.file("missing.npy"), "file not found");
}

TEST_CASE("load_npy_split reads a folder of four arrays; num_classes covers both sets", "[data][npy]") {
  TempDir tmp;
  const std::string dir = tmp.sub("n");
  const std::vector<float> xtr = {0, 1, 2, 3, 4, 5, 6, 7}, xte = {8, 9, 10, 11};
  io::save_npy(dir + "/x_train.npy", xtr.data(), {4, 2});
  io::save_labels(dir + "/y_train.npy", {0, 1, 2, 1});
  io::save_npy(dir + "/x_test.npy", xte.data(), {2, 2});
  io::save_labels(dir + "/y_test.npy", {4, 0});
  const auto s = data::load_npy_split<float>(dir);
  CHECK(s.train.size() == 4);
  CHECK(s.test.size() == 2);
  CHECK(s.train.num_classes == 5);
  CHECK(s.test.num_classes == 5);
  CHECK(s.test.x(1, 1) == 11.0f);
  CHECK_THAT(s.train.name, Contains("npy train (" + dir + "/x_train.npy)"));
  CHECK_THAT(s.test.name, Contains("npy test (" + dir + "/x_test.npy)"));

  io::save_npy(dir + "/x_test.npy", xte.data(), {1, 4});
  io::save_labels(dir + "/y_test.npy", {0});
  REQUIRE_THROWS_WITH(data::load_npy_split<float>(dir), Contains(dir + "/x_test.npy") && Contains("4x1x1"));
  fs::remove(dir + "/y_test.npy");
  REQUIRE_THROWS_AS(data::load_npy_split<float>(dir), IoError);
  REQUIRE_THROWS_WITH(data::load_npy_split<float>(dir), Contains("folder '" + dir + "'") && Contains("no y_test.npy"));
}
