#pragma once
// Sharpness measures (SPEC 3): IGS and IGS_b, the Fisher-Rao norm, per-layer breakdowns.
#include "curvature/measures/fisher_rao.hpp"
#include "curvature/measures/igs.hpp"
#include "curvature/measures/parameter_groups.hpp"
