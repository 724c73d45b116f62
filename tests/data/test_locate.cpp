// load_dataset's search order: explicit kind and folder, a folder alone, CURVATURE_DATA, the
// default folder, the synthetic task; a given folder that cannot be read is an error.
#include <optional>
#include <string>

#include <catch2/catch.hpp>

#include "curvature/data/locate.hpp"
#include "curvature/io/npy.hpp"
#include "data/data_fixtures.hpp"

using namespace curvature;
using namespace data_test;
using Catch::Contains;
using Catch::StartsWith;

namespace {

/// Options that ignore the machine: no environment, no default folder, a small synthetic task.
data::DataOptions isolated() {
  data::DataOptions o;
  o.use_environment = false;
  o.default_folder = "";
  o.synthetic.n_train = 40;
  o.synthetic.n_test = 20;
  return o;
}

void write_npy_folder(const std::string& dir) {
  const std::vector<float> x = {0, 1, 2, 3, 4, 5};
  io::save_npy(dir + "/x_train.npy", x.data(), {3, 2});
  io::save_labels(dir + "/y_train.npy", {0, 1, 1});
  io::save_npy(dir + "/x_test.npy", x.data(), {3, 2});
  io::save_labels(dir + "/y_test.npy", {1, 0, 2});
}

}  // namespace

TEST_CASE("guess_kind recognises IDX, CIFAR-10 and npy folders", "[data][locate]") {
  TempDir tmp;
  write_mnist_folder(tmp.sub("digits"), 3, 2);
  write_mnist_folder(tmp.sub("Fashion-stuff"), 3, 2);
  write_npy_folder(tmp.sub("arrays"));
  tmp.sub("cifar/cifar-10-batches-bin");
  write_file(tmp.file("cifar/cifar-10-batches-bin/data_batch_1.bin"), {});
  tmp.sub("empty");
  CHECK(data::guess_kind(tmp.file("digits")) == "mnist");
  CHECK(data::guess_kind(tmp.file("Fashion-stuff")) == "fashion-mnist");
  CHECK(data::guess_kind(tmp.file("arrays")) == "npy");
  CHECK(data::guess_kind(tmp.file("cifar")) == "cifar10");
  CHECK(data::guess_kind(tmp.file("empty")).empty());
  CHECK(data::guess_kind(tmp.file("absent")).empty());
}

TEST_CASE("load_dataset takes the folder in CURVATURE_DATA before the default folder", "[data][locate]") {
  TempDir tmp;
  const std::string env_dir = tmp.sub("env-data"), default_dir = tmp.sub("default-data");
  write_mnist_folder(env_dir, 12, 6);
  write_mnist_folder(default_dir, 30, 10);
  data::DataOptions o = isolated();
  o.use_environment = true;
  o.default_folder = default_dir;
  {
    EnvGuard env("CURVATURE_DATA", env_dir);
    const auto s = data::load_dataset<float>(o);
    CHECK(s.train.size() == 12);
    CHECK_THAT(s.train.name, StartsWith("mnist train (" + env_dir + "/train-images-idx3-ubyte)"));
    o.use_environment = false;  // the option turns the environment off
    CHECK(data::load_dataset<float>(o).train.size() == 30);
    o.use_environment = true;
  }
  {
    EnvGuard env("CURVATURE_DATA", std::nullopt);
    const auto s = data::load_dataset<float>(o);
    CHECK(s.train.size() == 30);
    CHECK_THAT(s.test.name, Contains(default_dir + "/t10k-images-idx3-ubyte.gz"));
    o.default_folder = tmp.file("no-such-default");
    CHECK_THAT(data::load_dataset<float>(o).train.name, StartsWith("synthetic ("));
  }
  {  // an environment folder that cannot be read is an error, not a fallback
    EnvGuard env("CURVATURE_DATA", tmp.file("missing"));
    REQUIRE_THROWS_AS(data::load_dataset<float>(o), IoError);
    REQUIRE_THROWS_WITH(data::load_dataset<float>(o), Contains(tmp.file("missing")) && Contains("CURVATURE_DATA"));
    fs::remove(env_dir + "/train-labels-idx1-ubyte");
    EnvGuard env2("CURVATURE_DATA", env_dir);
    REQUIRE_THROWS_WITH(data::load_dataset<float>(o), Contains(env_dir) && Contains("holds no data set recognised"));
  }
}

TEST_CASE("load_dataset with an explicit kind or folder; bad ones are errors", "[data][locate]") {
  TempDir tmp;
  const std::string npy_dir = tmp.sub("arr"), idx_dir = tmp.sub("idx");
  write_npy_folder(npy_dir);
  write_mnist_folder(idx_dir, 25, 15);
  data::DataOptions o = isolated();
  o.kind = "npy";
  o.folder = npy_dir;
  auto s = data::load_dataset<double>(o);
  CHECK(s.train.num_classes == 3);
  CHECK_THAT(s.train.name, Contains(npy_dir + "/x_train.npy"));
  o.kind = "";  // folder alone: kind guessed
  CHECK(data::load_dataset<double>(o).train.size() == 3);
  o.kind = "fashion-mnist";
  o.folder = idx_dir;
  o.train_size = 10;
  o.test_size = 4;
  s = data::load_dataset<double>(o);
  CHECK(s.train.size() == 10);
  CHECK(s.test.size() == 4);
  CHECK_THAT(s.train.name, StartsWith("fashion-mnist train (" + idx_dir) && Contains("first 10"));
  o.train_size = o.test_size = 0;

  o.folder = tmp.file("nope");
  REQUIRE_THROWS_AS(data::load_dataset<double>(o), IoError);
  REQUIRE_THROWS_WITH(data::load_dataset<double>(o), Contains(tmp.file("nope")));
  o.kind = "cifar10";
  o.folder = idx_dir;  // exists, but holds no CIFAR batches
  REQUIRE_THROWS_WITH(data::load_dataset<double>(o), Contains(idx_dir) && Contains("data_batch_1.bin"));
  o.kind = "";
  o.folder = tmp.sub("nothing-here");
  REQUIRE_THROWS_WITH(data::load_dataset<double>(o), Contains(o.folder) && Contains("holds no data set recognised"));
  o.kind = "imagenet";
  REQUIRE_THROWS_AS(data::load_dataset<double>(o), ValueError);
  o.kind = "mnist";
  o.folder = "";
  REQUIRE_THROWS_WITH(data::load_dataset<double>(o), Contains("needs a folder"));
  o.kind = "synthetic";
  s = data::load_dataset<double>(o);
  CHECK(s.train.size() == 40);
  CHECK_THAT(s.train.name, StartsWith("synthetic (seed 0"));
}

TEST_CASE("load_dataset's default is Debian's Fashion-MNIST when installed", "[data][locate][real]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    WARN("skipped: " << dir << " is absent (Debian package dataset-fashion-mnist)");
    return;
  }
  data::DataOptions o;
  o.use_environment = false;
  o.train_size = 1000;
  o.test_size = 500;
  const auto s = data::load_dataset<float>(o);
  CHECK(s.train.size() == 1000);
  CHECK(s.test.size() == 500);
  CHECK_THAT(s.train.name, StartsWith("fashion-mnist train (" + dir));
}
