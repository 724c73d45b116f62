#pragma once
// Curvature matrices as matrix-free operators (SPEC 1) and what is built on the operator concept
// alone: wrappers, dense materialisation, quadratic forms (docs/operators.md).
#include "curvature/operators/curvature_matrices.hpp"
#include "curvature/operators/dense.hpp"
#include "curvature/operators/kfac.hpp"
#include "curvature/operators/linear_operator.hpp"
#include "curvature/operators/quadratic_forms.hpp"
#include "curvature/operators/sample_operators.hpp"
#include "curvature/operators/wrappers.hpp"
