#pragma once
// Gradient-noise statistics (SPEC 4; docs/noise.md): the mini-batch covariance diagonal and its
// alignment with the Fisher (000 Sec. 5), 002's alignment factors, norm uniformity, stability
// bounds and linearized SGD, and 003's noise-curvature power law in the Hessian eigenbasis.
#include "curvature/noise/alignment.hpp"
#include "curvature/noise/minibatch.hpp"
#include "curvature/noise/spectrum.hpp"
#include "curvature/noise/stability.hpp"
