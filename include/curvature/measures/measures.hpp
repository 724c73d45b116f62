#pragma once
// Sharpness measures (SPEC 3): S_E and S_R in every form, IGS and IGS_b (exact and damped), the
// Fisher-Rao norm, m-sharpness, per-layer breakdowns.
#include "curvature/measures/fisher_rao.hpp"
#include "curvature/measures/igs.hpp"
#include "curvature/measures/parameter_groups.hpp"
#include "curvature/measures/sharpness.hpp"
