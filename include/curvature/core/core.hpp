#pragma once
#include "curvature/core/allocator.hpp"
#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"
