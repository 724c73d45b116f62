#pragma once
// Data sets (docs/data.md): the in-memory Dataset and mini-batch sampling, readers for MNIST-format
// IDX (plain or gzip), CIFAR-10 binary batches and NumPy arrays, transforms (normalisation, label
// noise, splits), the built-in synthetic task and load_dataset, which picks among them.
#include "curvature/data/cifar.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/data/idx.hpp"
#include "curvature/data/locate.hpp"
#include "curvature/data/npy_dataset.hpp"
#include "curvature/data/synthetic.hpp"
#include "curvature/data/transforms.hpp"
