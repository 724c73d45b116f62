#pragma once
// The reproductions of paper 000 (Ahmed, Sarmah, Dutta 2026), one binary per table group; all of
// them share experiment.cpp, compiled once. docs/reproductions.md lists the commands and results.
namespace paper000 {

enum class Experiment {
  BatchSize,     ///< Table 4, Fig. 3: S_R, S_E, test accuracy against B at eta = 0.01
  LearningRate,  ///< Table 5, Fig. 4: against eta at B = 128
  Dynamics,      ///< Tables 6-7: S_R, S_E, test accuracy every few epochs (SGD small/large batch, Adam)
  Optimizers,    ///< Table 8, Fig. 5, eq. 45: SGD vs Adam, with Adam's own metric
  Alignment,     ///< Tables 1-3: cosine and gamma of the gradient-noise covariance against the Fisher
  Rescaling      ///< Sec. 6.5: measures under a function-preserving layer rescaling
};

/// Parses the flags of `argv` for `e`, runs it, prints its table and writes CSV, JSON and PNG.
/// Returns the process exit status (errors are printed as one line).
int main(Experiment e, int argc, char** argv);

}  // namespace paper000
