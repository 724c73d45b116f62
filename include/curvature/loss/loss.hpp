#pragma once
#include "curvature/loss/cross_entropy.hpp"
#include "curvature/loss/mse.hpp"
