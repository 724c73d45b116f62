#pragma once
// The training progress line: "epoch 3/20  batch 120/469  loss 0.4123  acc 0.8712  lr 0.01
// ETA 1:23", redrawn in place with '\r' at most a few times per second, and only when the stream
// is a terminal (ProgressMode::Auto): a log file or a pipe (CI, `2> log`) receives nothing.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "curvature/core/error.hpp"
#include "curvature/core/types.hpp"

#if defined(_WIN32)
#include <io.h>
#else
#include <unistd.h>
#endif

namespace curvature::train {

/// Auto: draw only when the stream is a terminal; Off: never; On: always (even into a file).
enum class ProgressMode { Auto, Off, On };

/// True when f is a terminal (isatty(fileno(f))).
inline bool is_terminal(std::FILE* f) {
  if (!f) return false;
#if defined(_WIN32)
  return _isatty(_fileno(f)) != 0;
#else
  return isatty(fileno(f)) != 0;
#endif
}

/// "42s", "3:07", "1:02:03".
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  if (s < 60) return curvature::detail::cat(s, "s");
  char buf[32];
  if (s < 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

/// Where training stands, as the progress line shows it.
struct ProgressState {
  Index epoch = 0, epochs = 0;    ///< 1-based epoch of epochs
  Index batch = 0, batches = 0;   ///< batches done in this epoch of batches
  double loss = 0, accuracy = 0;  ///< running means over the epoch so far
  double lr = 0;
  double eta_seconds = -1;        ///< < 0: unknown
};

/// An in-place progress line on a stream (stderr by default).
class ProgressDisplay {
 public:
  explicit ProgressDisplay(ProgressMode mode, std::FILE* out = stderr, double min_interval_s = 0.25)
      : out_(out ? out : stderr), interval_(min_interval_s) {
    enabled_ = mode == ProgressMode::On || (mode == ProgressMode::Auto && is_terminal(out_));
  }
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;
  ~ProgressDisplay() { clear(); }

  bool enabled() const { return enabled_; }
  std::FILE* stream() const { return out_; }

  /// Redraws the line when at least min_interval_s passed since the last draw, or when forced.
  void update(const ProgressState& s, bool force = false) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && drawn_ && std::chrono::duration<double>(now - last_).count() < interval_) return;
    last_ = now;
    draw(line(s));
  }

  /// Ends the current line with a newline, so that it stays visible.
  void finish_line() {
    if (!enabled_ || width_ == 0) return;
    std::fputc('\n', out_);
    std::fflush(out_);
    width_ = 0;
  }

  /// Blanks the current line (before other output to the same stream).
  void clear() {
    if (!enabled_ || width_ == 0) return;
    std::fprintf(out_, "\r%*s\r", static_cast<int>(width_), "");
    std::fflush(out_);
    width_ = 0;
  }

  static std::string line(const ProgressState& s) {
    char buf[192];
    std::snprintf(buf, sizeof buf, "epoch %lld/%lld  batch %lld/%lld  loss %.4f  acc %.4f  lr %.3g  ETA %s",
                  static_cast<long long>(s.epoch), static_cast<long long>(s.epochs), static_cast<long long>(s.batch),
                  static_cast<long long>(s.batches), s.loss, s.accuracy, s.lr, format_duration(s.eta_seconds).c_str());
    return buf;
  }

 private:
  void draw(const std::string& text) {
    // Pad with blanks over what a longer previous line left behind.
    const int pad = width_ > text.size() ? static_cast<int>(width_ - text.size()) : 0;
    std::fprintf(out_, "\r%s%*s", text.c_str(), pad, "");
    std::fflush(out_);
    width_ = text.size();
    drawn_ = true;
  }

  std::FILE* out_;
  double interval_;
  bool enabled_ = false;
  bool drawn_ = false;
  std::size_t width_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace curvature::train
