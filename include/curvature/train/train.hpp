#pragma once
// Training: the loop, callbacks, checkpoints, evaluation and the progress line (docs/training.md).
#include "curvature/train/loop.hpp"
#include "curvature/train/progress.hpp"
#include "curvature/train/protocol.hpp"
