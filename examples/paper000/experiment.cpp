// The six reproductions of paper 000 (see experiment.hpp): flags, training runs with checkpoint
// measurements (train/protocol.hpp), the paper's tables on stdout, and CSV + JSON + PNG files.
#include "experiment.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <curvature/curvature.hpp>

#ifndef PAPER000_PLOT_SCRIPT
#define PAPER000_PLOT_SCRIPT "plot.py"
#endif

namespace paper000 {
namespace {

using namespace curvature;
using T = float;
using Backend = backend::OpenMP;
using Net = nn::Sequential<T, Backend>;
using CE = loss::CrossEntropy<T>;
using json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
  Experiment experiment{};
  std::string name;  // e.g. "batch-size"
  std::string arch = "mlp";
  std::string data_kind = "auto";
  std::string data_dir;
  Index train_subset = 0, test_subset = 0;
  Index epochs = 0;  // 0: the experiment's scaled default
  Index measure_every = 0;
  std::vector<Index> batch_sizes;
  std::vector<double> lrs;
  std::vector<std::uint64_t> seeds;
  double lr = 0.01, adam_lr = 0.001, momentum = 0;
  std::string schedule = "constant";
  train::SharpnessProtocol protocol;
  std::string fisher = "mc";
  Index cov_batches = 200;
  std::vector<double> alphas;
  int threads = 0;
  std::string out_dir;
  bool plot = true, paper = false, quiet = false, checkpoints = false;
};

struct RunSpec {
  std::string optimizer;  // "sgd" or "adam"
  double lr = 0;
  Index batch_size = 0;
  std::uint64_t seed = 0;
  std::string label;
};

struct Point {
  Index epoch = 0;
  double train_loss = 0, train_acc = 0, test_loss = 0, test_acc = 0;
  std::optional<Estimate<T>> sr, se, sr_adam;
  std::optional<train::NoiseAlignment<T>> align;
  double train_seconds = 0, measure_seconds = 0;
};

struct RunResult {
  RunSpec spec;
  std::vector<Point> points;
  std::string failure;  // non-empty when training diverged
};

struct Measure {
  bool sharpness = true;
  bool alignment = false;
  std::vector<Index> epochs;  // 1-based epochs at which to measure
};

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Models, data, optimizers

Net build(const Config& c, const nn::Shape& in, std::uint64_t seed) {
  Backend be{c.threads};
  if (c.arch == "mlp") return nn::mlp<T, Backend>(in.size(), {256, 256}, 10, "relu", seed, be);
  return nn::tiny_cnn<T, Backend>(in, seed, be);
}

data::Split<T> load_data(const Config& c) {
  data::DataOptions o;
  o.kind = c.data_kind == "auto" ? std::string() : c.data_kind;
  o.folder = c.data_dir;
  o.train_size = c.train_subset;
  o.test_size = c.test_subset;
  data::Split<T> s = data::load_dataset<T>(o);
  data::normalize(s);  // per channel, with the training set's mean and standard deviation
  return s;
}

using AnyOptimizer = std::variant<optim::SGD<T>, optim::Adam<T>>;

AnyOptimizer make_optimizer(const Config& c, const RunSpec& s) {
  if (s.optimizer == "adam") return optim::Adam<T>(optim::AdamOptions{});
  optim::SgdOptions o;
  o.momentum = c.momentum;
  return optim::SGD<T>(o);
}

// ---------------------------------------------------------------------------------------------
// One training run with measurements at chosen epochs

RunResult run_one(const Config& c, const RunSpec& spec, const data::Split<T>& d, const Measure& what) {
  RunResult res;
  res.spec = spec;
  Net m = build(c, d.train.shape, spec.seed);
  const CE ce;
  AnyOptimizer opt = make_optimizer(c, spec);
  train::TrainOptions to;
  to.epochs = c.epochs;
  to.batch_size = spec.batch_size;
  to.seed = spec.seed;
  to.epoch_summary = false;
  if (c.checkpoints) {  // the flat parameters at every measured epoch, as .npy
    to.checkpoint_epochs = what.epochs;
    to.checkpoint_dir = (std::filesystem::path(c.out_dir) / "checkpoints").string();
    to.checkpoint_prefix = detail::cat(spec.optimizer, "_b", spec.batch_size, "_lr", spec.lr, "_seed", spec.seed);
  }
  double measure_seconds = 0;

  std::visit([&](auto& o) {
    train::Callbacks<Net> cb;
    cb.on_epoch_end.push_back([&](const train::EpochReport& r, Net& net) {
      if (std::find(what.epochs.begin(), what.epochs.end(), r.epoch) == what.epochs.end()) return train::Control::Continue;
      const auto t0 = std::chrono::steady_clock::now();
      Point p;
      p.epoch = r.epoch;
      p.train_loss = r.train_loss;
      p.train_acc = r.train_accuracy;
      const train::Evaluation ev = train::evaluate(net, ce, d.test);
      p.test_loss = ev.loss;
      p.test_acc = ev.accuracy;
      train::SharpnessProtocol proto = c.protocol;
      proto.seed = spec.seed * 1000003 + static_cast<std::uint64_t>(r.epoch);
      if (what.sharpness) {
        const Vector<T>* v = nullptr;
        if constexpr (std::is_same_v<std::decay_t<decltype(o)>, optim::Adam<T>>) v = &o.second_moment();
        const auto s = train::measure_sharpness(net, ce, d.train, proto, v);
        p.sr = s.riemannian;
        p.se = s.euclidean;
        p.sr_adam = s.adam;
        if (what.alignment)
          p.align = train::noise_alignment(net, ce, d.train, s.fisher_diagonal, spec.lr, spec.batch_size, c.cov_batches,
                                           proto.seed ^ 0xA11Cu);
      } else if (what.alignment) {
        const Vector<T> g = train::fisher_diagonal_over_batches(net, ce, d.train, proto.fisher_batches,
                                                                proto.fisher_batch_size, proto.fisher, proto.seed);
        p.align = train::noise_alignment(net, ce, d.train, g, spec.lr, spec.batch_size, c.cov_batches,
                                         proto.seed ^ 0xA11Cu);
      }
      p.measure_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      measure_seconds += p.measure_seconds;
      res.points.push_back(p);
      if (!c.quiet) {
        std::fprintf(stderr, "  %-22s epoch %3ld  test acc %.4f", spec.label.c_str(), static_cast<long>(r.epoch),
                     p.test_acc);
        if (p.sr) std::fprintf(stderr, "  S_R %.4g +- %.2g  S_E %.4g", double(p.sr->value), double(p.sr->std_error),
                               double(p.se->value));
        if (p.align) std::fprintf(stderr, "  cos %.4f gamma %.3g", double(p.align->cosine), double(p.align->gamma));
        std::fprintf(stderr, "  (%.1fs)\n", p.measure_seconds);
      }
      return train::Control::Continue;
    });
    try {
      const auto t0 = std::chrono::steady_clock::now();
      if (c.schedule == "cosine") {
        train::train(m, ce, o, optim::CosineAnnealing(spec.lr, c.epochs), d.train, to, cb);
      } else {
        train::train(m, ce, o, optim::Constant(spec.lr), d.train, to, cb);
      }
      const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (Point& p : res.points) p.train_seconds = total - measure_seconds;
    } catch (const train::DivergenceError& e) {
      res.failure = e.what();
      std::fprintf(stderr, "  %s: %s\n", spec.label.c_str(), e.what());
    }
  }, opt);
  return res;
}

std::vector<Index> every(Index step, Index last) {
  std::vector<Index> e;
  if (step > 0)
    for (Index k = step; k < last; k += step) e.push_back(k);
  e.push_back(last);
  return e;
}

// ---------------------------------------------------------------------------------------------
// Statistics over seeds

struct Stat {
  double mean = NAN, std = NAN, min = NAN, max = NAN;
  Index n = 0;
};

Stat stat(const std::vector<double>& v) {
  Stat s;
  s.n = static_cast<Index>(v.size());
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / double(v.size() - 1)) : 0.0;  // sample std, as "mean +- std over seeds"
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  return s;
}

const Point* final_point(const RunResult& r) {
  return r.failure.empty() && !r.points.empty() ? &r.points.back() : nullptr;
}

/// Final-epoch S_R, S_E, test accuracy and Adam-metric S_R over the runs that `keep` selects (the
/// seeds of one configuration); diverged runs are left out.
struct FinalStats {
  Stat sr, se, acc, sr_adam;
};

template <class Keep>
FinalStats final_stats(const std::vector<RunResult>& runs, Keep&& keep) {
  std::vector<double> vr, ve, va, vad;
  for (const RunResult& r : runs)
    if (keep(r.spec))
      if (const Point* p = final_point(r)) {
        vr.push_back(p->sr->value);
        ve.push_back(p->se->value);
        va.push_back(p->test_acc);
        if (p->sr_adam) vad.push_back(p->sr_adam->value);
      }
  return {stat(vr), stat(ve), stat(va), stat(vad)};
}

// ---------------------------------------------------------------------------------------------
// Output: JSON, CSV, figure

json estimate_json(const std::optional<Estimate<T>>& e) {
  if (!e) return nullptr;
  return json{{"value", double(e->value)}, {"stderr", double(e->std_error)}, {"probes", e->probes}};
}

json run_json(const RunResult& r) {
  json pts = json::array();
  for (const Point& p : r.points) {
    json j{{"epoch", p.epoch},          {"train_loss", p.train_loss}, {"train_acc", p.train_acc},
           {"test_loss", p.test_loss},  {"test_acc", p.test_acc},     {"s_r", estimate_json(p.sr)},
           {"s_e", estimate_json(p.se)}, {"s_r_adam", estimate_json(p.sr_adam)}};
    if (p.align)
      j["alignment"] = json{{"cosine", double(p.align->cosine)},
                            {"gamma", double(p.align->gamma)},
                            {"best_scale", double(p.align->best_scale)},
                            {"batches", p.align->batches}};
    j["measure_seconds"] = p.measure_seconds;
    pts.push_back(j);
  }
  return json{{"label", r.spec.label},         {"optimizer", r.spec.optimizer}, {"lr", r.spec.lr},
              {"batch_size", r.spec.batch_size}, {"seed", r.spec.seed},        {"failure", r.failure},
              {"train_seconds", r.points.empty() ? 0.0 : r.points.back().train_seconds},
              {"points", pts}};
}

std::string csv_num(double v) {
  if (!std::isfinite(v)) return "";
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

std::string runs_csv(const std::vector<RunResult>& runs) {
  std::string s =
      "label,optimizer,lr,batch_size,seed,epoch,train_loss,train_acc,test_loss,test_acc,s_r,s_r_stderr,s_e,"
      "s_e_stderr,s_r_adam,s_r_adam_stderr,cosine,gamma,best_scale,failure\n";
  for (const RunResult& r : runs) {
    auto row = [&](const Point* p) {
      auto est = [](const std::optional<Estimate<T>>& e) {
        return e ? csv_num(e->value) + "," + csv_num(e->std_error) : std::string(",");
      };
      s += "\"" + r.spec.label + "\"," + r.spec.optimizer + "," + csv_num(r.spec.lr) + "," +
           std::to_string(r.spec.batch_size) + "," + std::to_string(r.spec.seed) + ",";
      if (p) {
        s += std::to_string(p->epoch) + "," + csv_num(p->train_loss) + "," + csv_num(p->train_acc) + "," +
             csv_num(p->test_loss) + "," + csv_num(p->test_acc) + "," + est(p->sr) + "," + est(p->se) + "," +
             est(p->sr_adam) + ",";
        s += p->align ? csv_num(p->align->cosine) + "," + csv_num(p->align->gamma) + "," + csv_num(p->align->best_scale)
                      : std::string(",,");
      } else {
        s += ",,,,,,,,,,,,,,";
      }
      std::string f = r.failure;
      std::replace(f.begin(), f.end(), '"', '\'');
      s += ",\"" + f + "\"\n";
    };
    if (r.points.empty()) row(nullptr);
    for (const Point& p : r.points) row(&p);
  }
  return s;
}

/// Writes `text` to `path` completely or not at all (temporary file, then rename).
void write_atomic(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw IoError(detail::cat("cannot write ", tmp.string()));
    f << text;
    f.flush();
    if (!f) throw IoError(detail::cat("write failed: ", tmp.string()));
  }
  std::filesystem::rename(tmp, path);
}

json series(const std::string& label, const std::vector<double>& x, const std::vector<double>& y,
            const std::vector<double>& yerr = {}) {
  json s{{"label", label}, {"x", x}, {"y", y}};
  if (!yerr.empty()) s["yerr"] = yerr;
  return s;
}

json panel(const std::string& title, const std::string& xl, const std::string& yl, bool xlog, bool ylog,
           json ser) {
  return json{{"title", title}, {"xlabel", xl}, {"ylabel", yl}, {"xlog", xlog}, {"ylog", ylog}, {"series", ser}};
}

// ---------------------------------------------------------------------------------------------
// Table printing

void rule(int n) {
  for (int i = 0; i < n; ++i) std::putchar('-');
  std::putchar('\n');
}

std::string pm(const Stat& s, const char* fmt) {
  if (s.n == 0) return "diverged";
  char a[64], b[64];
  std::snprintf(a, sizeof a, fmt, s.mean);
  if (s.n < 2) return a;
  std::snprintf(b, sizeof b, fmt, s.std);
  return std::string(a) + " +- " + b;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// ---------------------------------------------------------------------------------------------
// The experiments

struct Outcome {
  std::vector<RunResult> runs;
  json summary = json::array();
  json figure;
  std::string table_name;
};

std::string run_label(const RunSpec& s) {
  return detail::cat(s.optimizer == "adam" ? "Adam" : "SGD", " B=", s.batch_size, " lr=", s.lr, " seed=", s.seed);
}

RunSpec spec(const std::string& opt, double lr, Index b, std::uint64_t seed) {
  RunSpec s{opt, lr, b, seed, ""};
  s.label = run_label(s);
  return s;
}

Outcome batch_size(const Config& c, const data::Split<T>& d) {
  Outcome out;
  out.table_name = "Table 4 (batch-size ablation, SGD, eta = " + fmt("%g", c.lr) + ", final epoch)";
  Measure m{true, false, every(c.measure_every, c.epochs)};
  for (Index b : c.batch_sizes)
    for (auto seed : c.seeds) out.runs.push_back(run_one(c, spec("sgd", c.lr, b, seed), d, m));
  std::printf("\n%s, %s, mean +- std over %zu seed(s)\n", out.table_name.c_str(), c.arch.c_str(), c.seeds.size());
  std::printf("%6s %12s %26s %22s %18s\n", "B", "eta/B", "S_R", "S_E", "test acc");
  rule(88);
  std::vector<double> xb, sr, sr_sd, se, se_sd, acc, acc_sd;
  for (Index b : c.batch_sizes) {
    const FinalStats f = final_stats(out.runs, [&](const RunSpec& s) { return s.batch_size == b; });
    const Stat &a = f.sr, &e = f.se, &t = f.acc;
    std::printf("%6ld %12.3g %26s %22s %18s\n", static_cast<long>(b), c.lr / double(b), pm(a, "%.1f").c_str(),
                pm(e, "%.2f").c_str(), pm(t, "%.4f").c_str());
    out.summary.push_back(json{{"batch_size", b},      {"eta_over_b", c.lr / double(b)}, {"s_r_mean", a.mean},
                               {"s_r_std", a.std},     {"s_e_mean", e.mean},            {"s_e_std", e.std},
                               {"test_acc_mean", t.mean}, {"test_acc_std", t.std},      {"seeds", a.n}});
    if (a.n) {
      xb.push_back(double(b));
      sr.push_back(a.mean);
      sr_sd.push_back(a.std);
      se.push_back(e.mean);
      se_sd.push_back(e.std);
      acc.push_back(t.mean);
      acc_sd.push_back(t.std);
    }
  }
  out.figure = json{{"title", "Fig. 3 (000): sharpness against batch size, SGD eta = " + fmt("%g", c.lr)},
                    {"panels", json::array({panel("Riemannian sharpness", "batch size B", "S_R", true, true,
                                                  json::array({series("S_R", xb, sr, sr_sd)})),
                                            panel("Euclidean sharpness", "batch size B", "S_E = tr H", true, true,
                                                  json::array({series("S_E", xb, se, se_sd)})),
                                            panel("Test accuracy", "batch size B", "accuracy", true, false,
                                                  json::array({series("test acc", xb, acc, acc_sd)}))})}};
  return out;
}

Outcome learning_rate(const Config& c, const data::Split<T>& d) {
  Outcome out;
  const Index b = c.batch_sizes.front();
  out.table_name = "Table 5 (learning-rate ablation, SGD, B = " + std::to_string(b) + ", final epoch)";
  Measure m{true, false, every(c.measure_every, c.epochs)};
  for (double lr : c.lrs)
    for (auto seed : c.seeds) out.runs.push_back(run_one(c, spec("sgd", lr, b, seed), d, m));
  std::printf("\n%s, %s, mean +- std over %zu seed(s)\n", out.table_name.c_str(), c.arch.c_str(), c.seeds.size());
  std::printf("%8s %12s %26s %22s %18s\n", "eta", "eta/B", "S_R", "S_E", "test acc");
  rule(90);
  std::vector<double> xs, sr, sr_sd, acc, acc_sd;
  for (double lr : c.lrs) {
    const FinalStats f = final_stats(out.runs, [&](const RunSpec& s) { return s.lr == lr; });
    const Stat &a = f.sr, &e = f.se, &t = f.acc;
    std::printf("%8g %12.3g %26s %22s %18s\n", lr, lr / double(b), pm(a, "%.1f").c_str(), pm(e, "%.2f").c_str(),
                pm(t, "%.4f").c_str());
    out.summary.push_back(json{{"lr", lr},           {"eta_over_b", lr / double(b)}, {"s_r_mean", a.mean},
                               {"s_r_std", a.std},   {"s_e_mean", e.mean},          {"s_e_std", e.std},
                               {"test_acc_mean", t.mean}, {"test_acc_std", t.std},  {"seeds", a.n}});
    if (a.n) {
      xs.push_back(lr);
      sr.push_back(a.mean);
      sr_sd.push_back(a.std);
      acc.push_back(t.mean);
      acc_sd.push_back(t.std);
    }
  }
  out.figure = json{{"title", "Fig. 4 (000): sharpness against learning rate, B = " + std::to_string(b)},
                    {"panels", json::array({panel("Riemannian sharpness", "learning rate eta", "S_R", true, true,
                                                  json::array({series("S_R", xs, sr, sr_sd)})),
                                            panel("Test accuracy", "learning rate eta", "accuracy", true, false,
                                                  json::array({series("test acc", xs, acc, acc_sd)}))})}};
  return out;
}

/// The optimizer configurations of Tables 6-8: MLP: SGD B = 32, SGD B = 512, Adam B = 128;
/// TinyCNN: SGD B = 128, Adam B = 128.
std::vector<RunSpec> optimizer_specs(const Config& c, std::uint64_t seed) {
  if (c.arch == "mlp")
    return {spec("sgd", c.lr, 32, seed), spec("sgd", c.lr, 512, seed), spec("adam", c.adam_lr, 128, seed)};
  return {spec("sgd", c.lr, 128, seed), spec("adam", c.adam_lr, 128, seed)};
}

Outcome dynamics(const Config& c, const data::Split<T>& d) {
  Outcome out;
  out.table_name = c.arch == "mlp" ? "Table 6 (training dynamics, MLP)" : "Table 7 (training dynamics, TinyCNN)";
  Measure m{true, false, every(c.measure_every, c.epochs)};
  const std::uint64_t seed = c.seeds.front();
  for (const RunSpec& s : optimizer_specs(c, seed)) out.runs.push_back(run_one(c, s, d, m));
  std::printf("\n%s, seed %lu\n", out.table_name.c_str(), static_cast<unsigned long>(seed));
  std::printf("%-26s %6s %10s %22s %18s\n", "optimizer", "epoch", "test acc", "S_R", "S_E");
  rule(86);
  json p_sr = json::array(), p_se = json::array(), p_acc = json::array();
  for (const RunResult& r : out.runs) {
    std::vector<double> ep, sr, sre, se, acc;
    for (const Point& p : r.points) {
      std::printf("%-26s %6ld %10.4f %22s %18s\n", r.spec.label.c_str(), static_cast<long>(p.epoch), p.test_acc,
                  (fmt("%.1f", p.sr->value) + " +- " + fmt("%.1f", p.sr->std_error)).c_str(),
                  (fmt("%.2f", p.se->value) + " +- " + fmt("%.2f", p.se->std_error)).c_str());
      out.summary.push_back(json{{"label", r.spec.label}, {"epoch", p.epoch}, {"test_acc", p.test_acc},
                                 {"s_r", double(p.sr->value)}, {"s_r_stderr", double(p.sr->std_error)},
                                 {"s_e", double(p.se->value)}, {"s_e_stderr", double(p.se->std_error)}});
      ep.push_back(double(p.epoch));
      sr.push_back(p.sr->value);
      sre.push_back(p.sr->std_error);
      se.push_back(p.se->value);
      acc.push_back(p.test_acc);
    }
    if (!r.failure.empty()) std::printf("%-26s diverged: %s\n", r.spec.label.c_str(), r.failure.c_str());
    p_sr.push_back(series(r.spec.label, ep, sr, sre));
    p_se.push_back(series(r.spec.label, ep, se));
    p_acc.push_back(series(r.spec.label, ep, acc));
  }
  out.figure = json{{"title", out.table_name + " (000)"},
                    {"panels", json::array({panel("S_R", "epoch", "S_R", false, true, p_sr),
                                            panel("S_E", "epoch", "S_E = tr H", false, true, p_se),
                                            panel("Test accuracy", "epoch", "accuracy", false, false, p_acc)})}};
  return out;
}

Outcome optimizers(const Config& c, const data::Split<T>& d) {
  Outcome out;
  out.table_name = "Table 8 (SGD vs Adam, final epoch) with Adam's metric (eq. 45)";
  Measure m{true, false, every(0, c.epochs)};
  for (auto seed : c.seeds)
    for (const RunSpec& s : optimizer_specs(c, seed)) out.runs.push_back(run_one(c, s, d, m));
  std::printf("\n%s, %s, mean +- std over %zu seed(s)\n", out.table_name.c_str(), c.arch.c_str(), c.seeds.size());
  std::printf("%-18s %18s %24s %20s %24s\n", "configuration", "test acc", "S_R (Fisher metric)", "S_E",
              "S_R^Adam (eq. 45)");
  rule(110);
  std::vector<std::string> cats;
  std::vector<double> sr, sr_sd, se, se_sd;
  for (const RunSpec& s0 : optimizer_specs(c, 0)) {
    const FinalStats f = final_stats(
        out.runs, [&](const RunSpec& s) { return s.optimizer == s0.optimizer && s.batch_size == s0.batch_size; });
    const std::string name = detail::cat(s0.optimizer == "adam" ? "Adam" : "SGD", " B=", s0.batch_size);
    const Stat &a = f.sr, &e = f.se, &t = f.acc, &ad = f.sr_adam;
    std::printf("%-18s %18s %24s %20s %24s\n", name.c_str(), pm(t, "%.4f").c_str(), pm(a, "%.1f").c_str(),
                pm(e, "%.2f").c_str(), ad.n ? pm(ad, "%.4g").c_str() : "-");
    out.summary.push_back(json{{"configuration", name}, {"test_acc_mean", t.mean}, {"s_r_mean", a.mean},
                               {"s_r_std", a.std},      {"s_e_mean", e.mean},     {"s_e_std", e.std},
                               {"s_r_adam_mean", ad.n ? json(ad.mean) : json(nullptr)}, {"seeds", a.n}});
    if (a.n) {
      cats.push_back(name);
      sr.push_back(a.mean);
      sr_sd.push_back(a.std);
      se.push_back(e.mean);
      se_sd.push_back(e.std);
    }
  }
  json p1{{"kind", "bars"}, {"title", "Riemannian sharpness S_R"}, {"ylabel", "S_R"}, {"ylog", true},
          {"categories", cats}, {"series", json::array({series("S_R", {}, sr, sr_sd)})}};
  json p2{{"kind", "bars"}, {"title", "Euclidean sharpness S_E"}, {"ylabel", "S_E"}, {"ylog", true},
          {"categories", cats}, {"series", json::array({series("S_E", {}, se, se_sd)})}};
  out.figure = json{{"title", "Fig. 5 (000): S_R and S_E by optimizer"}, {"panels", json::array({p1, p2})}};
  return out;
}

Outcome alignment(const Config& c, const data::Split<T>& d) {
  Outcome out;
  out.table_name = "Tables 1-3 (gradient-noise alignment at the mid-training checkpoint)";
  const Index mid = std::max<Index>(1, c.epochs / 2);
  Measure m{false, true, {mid, c.epochs}};
  std::vector<RunSpec> specs;
  for (auto seed : c.seeds) {
    for (Index b : c.batch_sizes) specs.push_back(spec("sgd", c.lr, b, seed));
    for (Index b : c.batch_sizes) specs.push_back(spec("adam", c.adam_lr, b, seed));
  }
  const Index b128 = std::find(c.batch_sizes.begin(), c.batch_sizes.end(), 128) != c.batch_sizes.end()
                         ? 128 : c.batch_sizes.front();
  for (double lr : c.lrs)
    if (lr != c.lr) specs.push_back(spec("sgd", lr, b128, c.seeds.front()));
  for (const RunSpec& s : specs) out.runs.push_back(run_one(c, s, d, m));

  auto at = [&](const RunResult& r, Index epoch) -> const Point* {
    if (!r.failure.empty()) return nullptr;
    for (const Point& p : r.points)
      if (p.epoch == epoch) return &p;
    return nullptr;
  };
  std::printf("\nTable 1: cosine(diag Sigma_hat, diag G_hat) at epoch %ld (mid-training), %s, over batch sizes "
              "and seeds\n", static_cast<long>(mid), c.arch.c_str());
  std::printf("%-10s %8s %8s %8s %8s %6s\n", "optimizer", "mean", "std", "min", "max", "runs");
  rule(54);
  for (const char* o : {"sgd", "adam"}) {
    std::vector<double> v;
    for (const RunResult& r : out.runs)
      if (r.spec.optimizer == o && r.spec.lr == (std::string(o) == "adam" ? c.adam_lr : c.lr))
        if (const Point* p = at(r, mid)) v.push_back(p->align->cosine);
    const Stat s = stat(v);
    std::printf("%-10s %8.4f %8.4f %8.4f %8.4f %6ld\n", o, s.mean, s.std, s.min, s.max, static_cast<long>(s.n));
    out.summary.push_back(json{{"table", 1}, {"optimizer", o}, {"cosine_mean", s.mean}, {"cosine_std", s.std},
                               {"cosine_min", s.min}, {"cosine_max", s.max}, {"runs", s.n}});
  }
  std::printf("\nTable 2: gamma and cosine against B (SGD, eta = %g), epoch %ld; c* = best scale "
              "<Sigma_hat, G_hat>/||G_hat||^2 beside eta/B\n", c.lr, static_cast<long>(mid));
  std::printf("%6s %11s %20s %18s %11s\n", "B", "eta/B", "gamma", "cosine", "c*");
  rule(72);
  std::vector<double> xb, gam, gam_sd, cosv, cos_sd, best, etab;
  for (Index b : c.batch_sizes) {
    std::vector<double> g, co, bs;
    for (const RunResult& r : out.runs)
      if (r.spec.optimizer == "sgd" && r.spec.lr == c.lr && r.spec.batch_size == b)
        if (const Point* p = at(r, mid)) {
          g.push_back(p->align->gamma);
          co.push_back(p->align->cosine);
          bs.push_back(p->align->best_scale);
        }
    const Stat sg = stat(g), sc = stat(co), sb = stat(bs);
    std::printf("%6ld %11.3g %20s %18s %11.3g\n", static_cast<long>(b), c.lr / double(b), pm(sg, "%.4g").c_str(),
                pm(sc, "%.4f").c_str(), sb.mean);
    out.summary.push_back(json{{"table", 2}, {"batch_size", b}, {"eta_over_b", c.lr / double(b)},
                               {"gamma_mean", sg.mean}, {"gamma_std", sg.std}, {"cosine_mean", sc.mean},
                               {"best_scale", sb.mean}});
    if (sg.n) {
      xb.push_back(double(b));
      gam.push_back(sg.mean);
      gam_sd.push_back(sg.std);
      cosv.push_back(sc.mean);
      cos_sd.push_back(sc.std);
      best.push_back(sb.mean);
      etab.push_back(c.lr / double(b));
    }
  }
  std::printf("\nTable 3: learning-rate ablation (SGD, B = %ld, seed %lu), epoch %ld\n", static_cast<long>(b128),
              static_cast<unsigned long>(c.seeds.front()), static_cast<long>(mid));
  std::printf("%8s %11s %11s %9s %11s %9s\n", "eta", "eta/B", "gamma", "cosine", "c*", "test acc");
  rule(64);
  for (double lr : c.lrs)
    for (const RunResult& r : out.runs)
      if (r.spec.optimizer == "sgd" && r.spec.lr == lr && r.spec.batch_size == b128 && r.spec.seed == c.seeds.front())
        if (const Point* p = at(r, mid)) {
          std::printf("%8g %11.3g %11.4g %9.4f %11.3g %9.4f\n", lr, lr / double(b128), double(p->align->gamma),
                      double(p->align->cosine), double(p->align->best_scale), p->test_acc);
          out.summary.push_back(json{{"table", 3}, {"lr", lr}, {"eta_over_b", lr / double(b128)},
                                     {"gamma", double(p->align->gamma)}, {"cosine", double(p->align->cosine)},
                                     {"best_scale", double(p->align->best_scale)}, {"test_acc", p->test_acc}});
        }
  out.figure = json{{"title", "Tables 1-2 (000): gradient noise against the Fisher, SGD"},
                    {"panels", json::array({panel("cosine alignment (eq. 35)", "batch size B", "cosine", true, false,
                                                  json::array({series("cosine", xb, cosv, cos_sd)})),
                                            panel("gamma (eq. 36)", "batch size B", "gamma", true, true,
                                                  json::array({series("gamma", xb, gam, gam_sd)})),
                                            panel("scale of Sigma_hat against G_hat", "batch size B", "scale", true,
                                                  true, json::array({series("best fit c*", xb, best),
                                                                     series("eta/B (eq. 36)", xb, etab)}))})}};
  return out;
}

/// Layer pairs (l1, l2) such that scaling l1 (weights and bias) by alpha and l2's weights by
/// 1/alpha leaves the network's function unchanged: a parameter layer, then ReLU (and pooling),
/// then the next parameter layer.
std::pair<Index, Index> rescaling_pair(const Net& m) {
  Index first = -1;
  for (Index l = 0; l < m.num_layers(); ++l)
    if (m.layer(l).num_params() > 0) {
      if (first < 0) first = l;
      else return {first, l};
    }
  throw ValueError("rescaling: the model needs two parameter layers");
}

Outcome rescaling(const Config& c, const data::Split<T>& d) {
  Outcome out;
  out.table_name = "Sec. 6.5 (rescaling: layer 1 x alpha, layer 2 weights / alpha)";
  const RunSpec s = spec("sgd", c.lr, c.batch_sizes.front(), c.seeds.front());
  // Train once; the measurements happen after training, on the final parameters.
  Net m = build(c, d.train.shape, s.seed);
  {
    const CE ce;
    optim::SGD<T> opt(optim::SgdOptions{c.momentum, 0, 0, false});
    train::TrainOptions to;
    to.epochs = c.epochs;
    to.batch_size = s.batch_size;
    to.seed = s.seed;
    train::train(m, ce, opt, optim::Constant(s.lr), d.train, to);
  }
  const CE ce;
  const auto [l1, l2] = rescaling_pair(m);
  const Index o1 = m.param_offset(l1), n1 = m.layer(l1).num_params();
  const Index o2 = m.param_offset(l2), w2 = m.layer(l2).num_params() - m.layer(l2).output_spec().shape.c;
  const Vector<T> theta = m.params();
  const data::Dataset<T> probe = data::head(d.test, 1000);
  const Matrix<T> f0 = m.forward(probe.x);
  train::SharpnessProtocol mc = c.protocol, exact = c.protocol;
  mc.fisher = train::FisherKind::MonteCarlo;
  exact.fisher = train::FisherKind::Exact;
  mc.seed = exact.seed = 7;  // the same batches, labels and probes at every alpha

  std::printf("\n%s, %s, trained %ld epochs (SGD B=%ld eta=%g)\n", out.table_name.c_str(), c.arch.c_str(),
              static_cast<long>(c.epochs), static_cast<long>(s.batch_size), s.lr);
  std::printf("%7s %9s %9s %22s %8s %24s %8s %24s %8s\n", "alpha", "max|df|", "test acc", "S_E", "ratio",
              "S_R (MC Fisher diag)", "ratio", "S_R (exact F diag)", "ratio");
  rule(128);
  double base_se = 0, base_mc = 0, base_ex = 0;
  std::vector<double> xs, rse, rmc, rex;
  std::vector<double> alphas = c.alphas;
  if (std::find(alphas.begin(), alphas.end(), 1.0) == alphas.end()) alphas.insert(alphas.begin(), 1.0);
  std::sort(alphas.begin(), alphas.end());
  // alpha = 1 first, for the ratios.
  std::stable_partition(alphas.begin(), alphas.end(), [](double a) { return a == 1.0; });
  for (double alpha : alphas) {
    Vector<T> p = theta;
    p.segment(o1, n1) *= T(alpha);
    p.segment(o2, w2) /= T(alpha);
    m.set_params(p);
    const double df = (m.forward(probe.x) - f0).cwiseAbs().maxCoeff();
    const train::Evaluation ev = train::evaluate(m, ce, d.test);
    const auto a = train::measure_sharpness(m, ce, d.train, mc);
    const auto b = train::measure_sharpness(m, ce, d.train, exact);
    if (alpha == 1.0) {
      base_se = a.euclidean.value;
      base_mc = a.riemannian.value;
      base_ex = b.riemannian.value;
    }
    const double q_se = a.euclidean.value / base_se, q_mc = a.riemannian.value / base_mc,
                 q_ex = b.riemannian.value / base_ex;
    std::printf("%7g %9.1e %9.4f %22s %8.3f %24s %8.3f %24s %8.3f\n", alpha, df, ev.accuracy,
                (fmt("%.4g", a.euclidean.value) + " +- " + fmt("%.2g", a.euclidean.std_error)).c_str(), q_se,
                (fmt("%.5g", a.riemannian.value) + " +- " + fmt("%.2g", a.riemannian.std_error)).c_str(), q_mc,
                (fmt("%.5g", b.riemannian.value) + " +- " + fmt("%.2g", b.riemannian.std_error)).c_str(), q_ex);
    out.summary.push_back(json{{"alpha", alpha},
                               {"max_abs_output_change", df},
                               {"test_acc", ev.accuracy},
                               {"s_e", double(a.euclidean.value)},
                               {"s_e_stderr", double(a.euclidean.std_error)},
                               {"s_r_mc", double(a.riemannian.value)},
                               {"s_r_mc_stderr", double(a.riemannian.std_error)},
                               {"s_r_exact_diag", double(b.riemannian.value)},
                               {"s_r_exact_diag_stderr", double(b.riemannian.std_error)},
                               {"ratio_s_e", q_se},
                               {"ratio_s_r_mc", q_mc},
                               {"ratio_s_r_exact_diag", q_ex}});
    xs.push_back(alpha);
    rse.push_back(q_se);
    rmc.push_back(q_mc);
    rex.push_back(q_ex);
  }
  out.figure = json{{"title", "Sec. 6.5 (000): measure(alpha) / measure(1) under a function-preserving rescaling"},
                    {"panels", json::array({panel(c.arch + ": layer 1 x alpha, layer 2 weights / alpha", "alpha",
                                                  "ratio to alpha = 1", true, true,
                                                  json::array({series("S_E = tr H", xs, rse),
                                                               series("S_R, MC Fisher diag (000 eq. 2)", xs, rmc),
                                                               series("S_R, exact Fisher diag", xs, rex)}))})}};
  return out;
}

// ---------------------------------------------------------------------------------------------
// Flags and main

const char* experiment_name(Experiment e) {
  switch (e) {
    case Experiment::BatchSize: return "batch-size";
    case Experiment::LearningRate: return "learning-rate";
    case Experiment::Dynamics: return "dynamics";
    case Experiment::Optimizers: return "optimizers";
    case Experiment::Alignment: return "alignment";
    case Experiment::Rescaling: return "rescaling";
  }
  return "?";
}

/// The scaled defaults (each under 10 minutes on 2 cores with Fashion-MNIST) and, with --paper,
/// the paper's protocol; flags given explicitly win over both.
void apply_defaults(Config& c, const CLI::App& app) {
  const bool mlp = c.arch == "mlp";
  auto unset = [&](const char* flag) { return app.count(flag) == 0; };
  if (c.paper) {
    if (unset("--epochs")) c.epochs = mlp ? 20 : 30;
    if (unset("--measure-every")) c.measure_every = 5;
    if (unset("--seeds"))
      c.seeds = (c.experiment == Experiment::LearningRate || c.experiment == Experiment::Dynamics ||
                 c.experiment == Experiment::Rescaling)
                    ? std::vector<std::uint64_t>{0}
                    : std::vector<std::uint64_t>{0, 1, 2};
    if (unset("--cov-batches")) c.cov_batches = 200;
  } else {
    // Scaled: fewer epochs (and for TinyCNN a training subset), one seed.
    if (unset("--epochs")) c.epochs = mlp ? 10 : 4;
    if (unset("--measure-every")) c.measure_every = mlp ? 5 : 2;
    if (unset("--seeds")) c.seeds = {0};
    if (unset("--train-subset") && !mlp) c.train_subset = 10000;
    if (unset("--test-subset") && !mlp) c.test_subset = 2000;
    if (unset("--hessian-samples") && !mlp) c.protocol.hessian_samples = 256;
    if (unset("--cov-batches")) c.cov_batches = 50;
    if (c.experiment == Experiment::Alignment && unset("--epochs")) c.epochs = mlp ? 4 : 2;
  }
  if (unset("--batch-sizes"))
    c.batch_sizes = (c.experiment == Experiment::LearningRate || c.experiment == Experiment::Rescaling)
                        ? std::vector<Index>{128}
                        : std::vector<Index>{32, 128, 512};
  if (unset("--lrs"))
    c.lrs = c.experiment == Experiment::Alignment && !c.paper ? std::vector<double>{0.01}
                                                               : std::vector<double>{0.001, 0.01, 0.05, 0.1};
  if (unset("--alphas")) c.alphas = {0.1, 0.5, 2, 10};
  if (unset("--out")) c.out_dir = std::string("results/paper000-") + c.name + "-" + c.arch;
  if (c.fisher == "mc") c.protocol.fisher = train::FisherKind::MonteCarlo;
  else if (c.fisher == "exact") c.protocol.fisher = train::FisherKind::Exact;
  else c.protocol.fisher = train::FisherKind::Empirical;
  if (c.epochs < 1) throw ValueError(detail::cat("--epochs must be >= 1, got ", c.epochs));
  for (Index b : c.batch_sizes)
    if (b < 1) throw ValueError(detail::cat("--batch-sizes: ", b, " is not a batch size"));
  for (double lr : c.lrs)
    if (!(lr > 0)) throw ValueError(detail::cat("--lrs: ", lr, " is not a learning rate"));
  for (double a : c.alphas)
    if (!(a > 0)) throw ValueError(detail::cat("--alphas: ", a, " must be > 0 (ReLU is positively homogeneous)"));
  if (c.seeds.empty()) throw ValueError("--seeds: need at least one seed");
}

int run(Experiment e, int argc, char** argv) {
  Config c;
  c.experiment = e;
  c.name = experiment_name(e);
  CLI::App app{"Reproduction of paper 000 (Fisher-geometric sharpness): " + c.name +
               ". Defaults are scaled to finish in minutes on 2 cores; --paper runs the paper's protocol.",
               "paper000-" + c.name};
  app.add_option("--arch", c.arch, "mlp (784-256-256-10 ReLU) or cnn (TinyCNN)")
      ->check(CLI::IsMember({"mlp", "cnn"}));
  app.add_option("--data-kind", c.data_kind, "auto, fashion-mnist, mnist, cifar10, npy or synthetic")
      ->check(CLI::IsMember({"auto", "fashion-mnist", "mnist", "cifar10", "npy", "synthetic"}));
  app.add_option("--data", c.data_dir, "data folder (else $CURVATURE_DATA, else /usr/share/datasets/fashion-mnist, "
                                       "else the built-in synthetic task)");
  app.add_option("--train-subset", c.train_subset, "use the first N training samples (0: all)");
  app.add_option("--test-subset", c.test_subset, "use the first N test samples (0: all)");
  app.add_option("--epochs", c.epochs, "epochs per run");
  app.add_option("--measure-every", c.measure_every, "measure every N epochs (and at the last)");
  app.add_option("--batch-sizes", c.batch_sizes, "batch sizes")->delimiter(',');
  app.add_option("--lrs", c.lrs, "learning rates of the lr ablation")->delimiter(',');
  app.add_option("--seeds", c.seeds, "seeds")->delimiter(',');
  app.add_option("--lr", c.lr, "SGD learning rate where it is fixed (paper: 0.01)");
  app.add_option("--adam-lr", c.adam_lr, "Adam learning rate (the paper does not state it; default 0.001)");
  app.add_option("--momentum", c.momentum, "SGD momentum (paper: plain SGD)");
  app.add_option("--schedule", c.schedule, "constant or cosine")->check(CLI::IsMember({"constant", "cosine"}));
  app.add_option("--fisher-batches", c.protocol.fisher_batches, "N_b: Fisher mini-batches (paper: 30)");
  app.add_option("--fisher-batch-size", c.protocol.fisher_batch_size, "samples per Fisher batch");
  app.add_option("--fisher", c.fisher, "Fisher diagonal: mc (000 eq. 2), exact or empirical")
      ->check(CLI::IsMember({"mc", "exact", "empirical"}));
  app.add_option("--probes", c.protocol.probes, "Hutchinson probes n_p (paper: 100)");
  app.add_option("--hessian-samples", c.protocol.hessian_samples, "training samples the Hessian is taken on");
  app.add_flag("--exact-hessian", c.protocol.exact_hessian_diagonal,
               "H_jj exactly (diag H = diag GGN for these ReLU networks) instead of n_p Hutchinson probes");
  app.add_option("--lambda", c.protocol.lambda, "damping of eq. 4 (paper: 1e-6)");
  app.add_option("--cov-batches", c.cov_batches, "K: mini-batches for the noise covariance (paper: 200)");
  app.add_option("--alphas", c.alphas, "rescaling factors (rescaling only)")->delimiter(',');
  app.add_option("--threads", c.threads, "threads (0: all cores)");
  app.add_option("--out", c.out_dir, "output folder (default results/paper000-<experiment>-<arch>)");
  app.add_flag("--paper", c.paper, "the paper's protocol: 20 (MLP) / 30 (CNN) epochs, 3 seeds, full data");
  bool no_plot = false;
  app.add_flag("--no-plot", no_plot, "do not render the PNG");
  app.add_flag("--quiet", c.quiet, "no per-measurement lines on stderr");
  app.add_flag("--checkpoints", c.checkpoints,
               "save the flat parameters (.npy) at every measured epoch under <out>/checkpoints/");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err);
  }
  c.plot = !no_plot;
  apply_defaults(c, app);

  const data::Split<T> d = load_data(c);
  const int threads = Backend{c.threads}.threads();
  std::printf("paper000-%s: %s on %s\n  %ld train / %ld test samples of %s, %d thread(s), float32\n", c.name.c_str(),
              c.arch.c_str(), d.train.name.c_str(), static_cast<long>(d.train.size()), static_cast<long>(d.test.size()),
              d.train.shape.str().c_str(), threads);
  std::printf("  protocol: %ld epochs, S_R with %s Fisher diag over N_b = %ld batches of %ld, %s on "
              "%ld samples, lambda = %g\n",
              static_cast<long>(c.epochs), train::to_string(c.protocol.fisher), static_cast<long>(c.protocol.fisher_batches),
              static_cast<long>(c.protocol.fisher_batch_size),
              c.protocol.exact_hessian_diagonal ? "exact H diagonal"
                                                : ("n_p = " + std::to_string(c.protocol.probes) + " probes").c_str(),
              static_cast<long>(c.protocol.hessian_samples), c.protocol.lambda);
  std::fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  Outcome out;
  switch (e) {
    case Experiment::BatchSize: out = batch_size(c, d); break;
    case Experiment::LearningRate: out = learning_rate(c, d); break;
    case Experiment::Dynamics: out = dynamics(c, d); break;
    case Experiment::Optimizers: out = optimizers(c, d); break;
    case Experiment::Alignment: out = alignment(c, d); break;
    case Experiment::Rescaling: out = rescaling(c, d); break;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  namespace fs = std::filesystem;
  fs::create_directories(c.out_dir);
  const fs::path base = fs::path(c.out_dir) / ("paper000-" + c.name);
  json config{{"arch", c.arch},
              {"data", d.train.name},
              {"train_samples", d.train.size()},
              {"test_samples", d.test.size()},
              {"epochs", c.epochs},
              {"measure_every", c.measure_every},
              {"batch_sizes", c.batch_sizes},
              {"lrs", c.lrs},
              {"seeds", c.seeds},
              {"lr", c.lr},
              {"adam_lr", c.adam_lr},
              {"momentum", c.momentum},
              {"schedule", c.schedule},
              {"fisher", train::to_string(c.protocol.fisher)},
              {"fisher_batches", c.protocol.fisher_batches},
              {"fisher_batch_size", c.protocol.fisher_batch_size},
              {"probes", c.protocol.probes},
              {"exact_hessian_diagonal", c.protocol.exact_hessian_diagonal},
              {"hessian_samples", c.protocol.hessian_samples},
              {"lambda", c.protocol.lambda},
              {"cov_batches", c.cov_batches},
              {"threads", threads},
              {"paper_protocol", c.paper}};
  json runs = json::array();
  for (const RunResult& r : out.runs) runs.push_back(run_json(r));
  json doc{{"paper", "000"}, {"experiment", c.name}, {"table", out.table_name}, {"config", config},
           {"seconds", seconds}, {"summary", out.summary}, {"runs", runs}, {"figure", out.figure}};
  if (e == Experiment::Rescaling) {
    // One run, measured after training: the table is the record.
    write_atomic(base.string() + ".csv", [&] {
      std::string s = "alpha,max_abs_output_change,test_acc,s_e,s_e_stderr,s_r_mc,s_r_mc_stderr,s_r_exact_diag,"
                      "s_r_exact_diag_stderr,ratio_s_e,ratio_s_r_mc,ratio_s_r_exact_diag\n";
      for (const json& r : out.summary) {
        std::vector<std::string> f;
        for (const char* k : {"alpha", "max_abs_output_change", "test_acc", "s_e", "s_e_stderr", "s_r_mc",
                              "s_r_mc_stderr", "s_r_exact_diag", "s_r_exact_diag_stderr", "ratio_s_e", "ratio_s_r_mc",
                              "ratio_s_r_exact_diag"})
          f.push_back(csv_num(r[k].get<double>()));
        s += join(f, ",") + "\n";
      }
      return s;
    }());
  } else {
    write_atomic(base.string() + ".csv", runs_csv(out.runs));
  }
  write_atomic(base.string() + ".json", doc.dump(2) + "\n");
  std::printf("\n%.0f s. Results: %s.csv and %s.json\n", seconds, base.string().c_str(), base.string().c_str());

  const std::string png = base.string() + ".png";
  const std::string script = PAPER000_PLOT_SCRIPT;
  const std::string cmd = "python3 '" + script + "' '" + base.string() + ".json' '" + png + "'";
  if (c.plot) {
    // Debian's matplotlib lives with /usr/bin/python3; try that if the python3 on PATH lacks it.
    int rc = std::system((cmd + " 2>/dev/null").c_str());
    if (rc != 0 && fs::exists("/usr/bin/python3"))
      rc = std::system(("/usr/bin/" + cmd + " 2>/dev/null").c_str());
    if (rc == 0) std::printf("Figure: %s\n", png.c_str());
    else
      std::printf("Figure not rendered (needs python3-matplotlib: apt-get install python3-matplotlib); "
                  "then run: %s\n", cmd.c_str());
  } else {
    std::printf("Figure: run %s\n", cmd.c_str());
  }
  return 0;
}

}  // namespace

int main(Experiment e, int argc, char** argv) {
  try {
    return run(e, argc, argv);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "paper000-%s: error: %s\n", experiment_name(e), ex.what());
    return 1;
  }
}

}  // namespace paper000
