#pragma once
// Reading and writing files: NumPy .npy arrays (parameters, inputs, labels, results).
#include "curvature/io/npy.hpp"
