// paper000-rescaling: see experiment.hpp and docs/reproductions.md.
#include "experiment.hpp"

int main(int argc, char** argv) { return paper000::main(paper000::Experiment::Rescaling, argc, argv); }
