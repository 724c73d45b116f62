// paper000-batch-size: see experiment.hpp and docs/reproductions.md.
#include "experiment.hpp"

int main(int argc, char** argv) { return paper000::main(paper000::Experiment::BatchSize, argc, argv); }
