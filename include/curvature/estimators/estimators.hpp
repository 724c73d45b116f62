#pragma once
// Estimators on any LinearOperator (SPEC 2): Hutchinson trace, diagonal and Frobenius norm,
// Hutch++, power iteration, Lanczos, stochastic Lanczos quadrature and conjugate gradients.
// See docs/estimators.md for formulas, costs and errors.
#include "curvature/estimators/cg.hpp"
#include "curvature/estimators/estimate.hpp"
#include "curvature/estimators/hutchinson.hpp"
#include "curvature/estimators/hutchpp.hpp"
#include "curvature/estimators/lanczos.hpp"
#include "curvature/estimators/power_iteration.hpp"
#include "curvature/estimators/probes.hpp"
#include "curvature/estimators/slq.hpp"
