// The progress line is drawn only on a terminal (or when forced), in place and throttled;
// epoch summaries are separate lines.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include <unistd.h>

#include "curvature/backend/serial.hpp"
#include "curvature/loss/cross_entropy.hpp"
#include "curvature/nn/builders.hpp"
#include "curvature/optim/optim.hpp"
#include "curvature/train/train.hpp"
#include "train/fixtures.hpp"

using namespace curvature;
using Catch::Matchers::Contains;
using D = double;

namespace {

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  for (std::size_t k; (k = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, k);
  return s;
}

/// Points the process's stderr (file descriptor 2) at a temporary file until finish().
class StderrCapture {
 public:
  StderrCapture() : tmp_(std::tmpfile()) {
    std::fflush(stderr);
    saved_ = dup(fileno(stderr));
    dup2(fileno(tmp_), fileno(stderr));
  }
  std::string finish() {
    std::fflush(stderr);
    dup2(saved_, fileno(stderr));
    close(saved_);
    std::string s = read_all(tmp_);
    std::fclose(tmp_);
    return s;
  }

 private:
  std::FILE* tmp_;
  int saved_ = -1;
};

train::TrainResult run(const train::TrainOptions& o) {
  const auto d = testing::blobs<D>(64, 2, 4, 1);
  auto model = nn::mlp<D, backend::Serial>(2, {8}, 4, "relu", 1);
  optim::SGD<D> opt;
  return train::train(model, loss::CrossEntropy<D>(), opt, optim::Constant(0.1), d, o);
}

}  // namespace

TEST_CASE("Progress output is empty when stderr is not a terminal", "[train][progress]") {
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 16;
  StderrCapture cap;
  const bool tty = train::is_terminal(stderr);
  run(o);  // ProgressMode::Auto, no summary
  const std::string out = cap.finish();
  CHECK_FALSE(tty);
  CHECK(out.empty());
}

TEST_CASE("Forced progress redraws one line in place; summaries are one line per epoch", "[train][progress]") {
  train::TrainOptions o;
  o.epochs = 2;
  o.batch_size = 16;
  SECTION("progress forced on stderr") {
    o.progress = train::ProgressMode::On;
    StderrCapture cap;
    run(o);
    const std::string out = cap.finish();
    INFO(out);
    CHECK_THAT(out, Contains("\repoch 1/2  batch ") && Contains("epoch 2/2  batch 4/4  loss ") && Contains("ETA"));
    CHECK(std::count(out.begin(), out.end(), '\n') == 2);  // each epoch's final line stays
  }
  SECTION("summaries only, into a log stream that is not a terminal") {
    std::FILE* log = std::tmpfile();
    o.epoch_summary = true;
    o.log = log;
    run(o);
    const std::string out = read_all(log);
    std::fclose(log);
    INFO(out);
    CHECK(out.find('\r') == std::string::npos);
    CHECK(std::count(out.begin(), out.end(), '\n') == 2);
    CHECK_THAT(out, Contains("epoch 1/2: train loss ") && Contains("epoch 2/2: train loss ") && Contains("accuracy"));
  }
}

TEST_CASE("The progress line is redrawn at most a few times per second", "[train][progress]") {
  std::FILE* f = std::tmpfile();
  CHECK_FALSE(train::ProgressDisplay(train::ProgressMode::Auto, f).enabled());  // a file is no terminal
  CHECK_FALSE(train::ProgressDisplay(train::ProgressMode::Off, f).enabled());
  {
    train::ProgressDisplay p(train::ProgressMode::On, f, 0.25);
    REQUIRE(p.enabled());
    train::ProgressState s{1, 1, 0, 10000, 1.0, 0.5, 0.1, 3.0};
    for (Index b = 1; b <= 10000; ++b) {
      s.batch = b;
      p.update(s);
    }
    p.update(s, true);  // forced: always drawn
  }
  const std::string out = read_all(f);
  std::fclose(f);
  const auto draws = std::count(out.begin(), out.end(), '\r');
  CHECK(draws >= 2);
  CHECK(draws <= 6);  // first draw, maybe one more, the forced one, the clearing on destruction
  CHECK(train::format_duration(42) == "42s");
  CHECK(train::format_duration(187) == "3:07");
  CHECK(train::format_duration(3723) == "1:02:03");
  CHECK(train::format_duration(-1) == "?");
}
