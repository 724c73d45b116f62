// curvature-probe's failures (CLI.md): a non-zero status, nothing on standard output and exactly
// one line on standard error naming the problem; --output written completely or not at all.
#include "tools/probe_fixture.hpp"

using namespace probe_test;

namespace {

/// Runs with the base flags of p, `replace`d (flag -> value) and `extra` appended.
RunResult run_with(const Scratch& s, const Problem& p, const std::vector<std::pair<std::string, std::string>>& replace,
                   const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = p.flags(s);
  for (const auto& [flag, value] : replace)
    for (std::size_t k = 0; k + 1 < args.size(); ++k)
      if (args[k] == flag) args[k + 1] = value;
  args.insert(args.end(), extra.begin(), extra.end());
  return s.run(args);
}

void check_failure(const RunResult& r, const std::string& names) {
  INFO("stderr: " << r.err);
  CHECK(r.status != 0);
  CHECK(r.out.empty());
  CHECK(r.one_error_line());
  CHECK(r.err.find(names) != std::string::npos);
}

}  // namespace

TEST_CASE("every error of the contract exits non-zero with one line on standard error", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "4", "linear(5),tanh,linear(3)", "ce", 12);
  std::ofstream(s.path("garbage.npy")) << "not a numpy file";
  Matrix<double> nan_x = p.x;
  nan_x(2, 5) = std::numeric_limits<double>::quiet_NaN();
  io::save_npy(s.path("nan.npy"), nan_x);
  io::save_npy(s.path("wide.npy"), Matrix<double>(Matrix<double>::Ones(5, 12)));
  io::save_npy(s.path("short.npy"), Vector<double>(Vector<double>::Ones(42)));
  Vector<double> nan_p = p.model.params();
  nan_p(0) = std::numeric_limits<double>::infinity();
  io::save_npy(s.path("nanp.npy"), nan_p);

  SECTION("unknown layer") { check_failure(run_with(s, p, {{"--arch", "linear(5),swish,linear(3)"}}), "unknown layer 'swish'"); }
  SECTION("layer that does not fit the input") { check_failure(run_with(s, p, {{"--arch", "conv(2,k=3),linear(3)"}}), "conv"); }
  SECTION("inputs of the wrong shape") { check_failure(run_with(s, p, {{"--inputs", s.path("wide.npy")}}), "wide.npy"); }
  SECTION("targets for another number of samples") {
    check_failure(run_with(s, p, {{"--targets", s.path("short.npy")}}), "short.npy");
  }
  SECTION("wrong parameter count") { check_failure(run_with(s, p, {{"--params", s.path("short.npy")}}), "42"); }
  SECTION("missing file") { check_failure(run_with(s, p, {{"--params", s.path("nope.npy")}}), "nope.npy"); }
  SECTION("malformed file") { check_failure(run_with(s, p, {{"--inputs", s.path("garbage.npy")}}), "garbage.npy"); }
  SECTION("NaN in the inputs") { check_failure(run_with(s, p, {{"--inputs", s.path("nan.npy")}}), "NaN"); }
  SECTION("NaN or Inf in the parameters") { check_failure(run_with(s, p, {{"--params", s.path("nanp.npy")}}), "NaN"); }
  SECTION("d > 5000 with --exact") {
    check_failure(run_with(s, p, {{"--arch", "linear(2000),tanh,linear(3)"}}, {"--exact"}), "d = 16003");
  }
  SECTION("label outside the classes") {
    std::vector<std::int64_t> y = p.labels;
    y[3] = 3;
    io::save_labels(s.path("y3.npy"), y);
    check_failure(run_with(s, p, {{"--targets", s.path("y3.npy")}}), "label 3");
  }
  SECTION("bad flag values") {
    check_failure(run_with(s, p, {}, {"--probes", "0"}), "--probes");
    check_failure(run_with(s, p, {}, {"--damping", "-1"}), "--damping");
    check_failure(run_with(s, p, {}, {"--damping", "1e-3,x"}), "--damping");
    check_failure(run_with(s, p, {}, {"--damping", "0"}), "--damping");  // 0 needs --exact
    check_failure(run_with(s, p, {}, {"--top", "0"}), "--top");
    check_failure(run_with(s, p, {}, {"--top", "44"}), "--top");
    check_failure(run_with(s, p, {}, {"--lr", "0"}), "--lr");
    check_failure(run_with(s, p, {}, {"--batch-size", "0"}), "--batch-size");
    check_failure(run_with(s, p, {}, {"--exact", "--probes", "10"}), "--probes");
    check_failure(run_with(s, p, {{"--loss", "hinge"}}), "--loss");
    check_failure(run_with(s, p, {{"--input-shape", "4x"}}), "shape");
    check_failure(run_with(s, p, {}, {"--no-such-flag"}), "--no-such-flag");
    check_failure(s.run({"--loss", "ce"}), "required");
  }
}

TEST_CASE("--output holds the complete JSON on success and is untouched on failure", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "4", "linear(5),tanh,linear(3)", "ce", 12);
  const std::string out = s.path("report.json");
  const RunResult ok = run_with(s, p, {}, {"--exact", "--output", out});
  REQUIRE(ok.status == 0);
  CHECK(ok.out.empty());
  const RunResult to_stdout = run_with(s, p, {}, {"--exact"});
  CHECK(nlohmann::json::parse(slurp(out)) == to_stdout.json());

  Matrix<double> nan_x = p.x;
  nan_x(0, 0) = std::numeric_limits<double>::quiet_NaN();
  io::save_npy(s.path("nan.npy"), nan_x);
  const std::string before = slurp(out);
  const RunResult failed = run_with(s, p, {{"--inputs", s.path("nan.npy")}}, {"--exact", "--output", out});
  CHECK(failed.status != 0);
  CHECK(slurp(out) == before);  // an existing report is left as it was
  const std::string fresh = s.path("fresh.json");
  CHECK(run_with(s, p, {{"--inputs", s.path("nan.npy")}}, {"--exact", "--output", fresh}).status != 0);
  CHECK_FALSE(fs::exists(fresh));
  for (const auto& e : fs::directory_iterator(s.dir))  // no temporary file left behind
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}
