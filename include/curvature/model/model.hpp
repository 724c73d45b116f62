#pragma once
#include "curvature/model/derivatives.hpp"
