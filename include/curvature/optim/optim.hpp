#pragma once
// Optimizers on the flat parameter vector and learning-rate schedules (SPEC 5; docs/training.md).
#include "curvature/optim/adam.hpp"
#include "curvature/optim/schedule.hpp"
#include "curvature/optim/sgd.hpp"
