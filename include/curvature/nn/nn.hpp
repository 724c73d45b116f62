#pragma once
#include "curvature/nn/activation.hpp"
#include "curvature/nn/builders.hpp"
#include "curvature/nn/layer.hpp"
#include "curvature/nn/linear.hpp"
#include "curvature/nn/reshape.hpp"
#include "curvature/nn/sequential.hpp"
