#pragma once
// Everything the library offers. Individual concerns can be included on their own.
#include "curvature/backend/backend.hpp"
#include "curvature/core/core.hpp"
#include "curvature/estimators/estimators.hpp"
#include "curvature/io/io.hpp"
#include "curvature/loss/loss.hpp"
#include "curvature/measures/measures.hpp"
#include "curvature/model/model.hpp"
#include "curvature/nn/nn.hpp"
#include "curvature/noise/noise.hpp"
#include "curvature/operators/operators.hpp"
