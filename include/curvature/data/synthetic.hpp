#pragma once
// A built-in synthetic classification task, so that the examples run without any data set.
//
// Generation, all in integer arithmetic on curvature::Rng draws followed by pixel / 255, so the
// data are bit-identical on every machine and compiler (no libm, no std:: distributions):
//  * a "world" drawn from the seed: a mid-grey base image, one smooth template per class and 8
//    smooth nuisance images, each a sum of bumps (1 - d^2/r^2)^2 with random centres, radii 4-9 px
//    and signs (class templates +-150, nuisance images +-48 grey levels);
//  * sample i has class i mod 10 (so every prefix of the data set is balanced) and a latent
//    z in R^8 (each coordinate a sum of three uniforms: mean 0, sd 1); its image is
//    base + template_class + sum_j z_j nuisance_j, translated by up to +-2 pixels in x and y, plus
//    uniform pixel noise in [-pixel_noise, pixel_noise], clamped to [0, 255];
//  * label noise: round(label_noise * N) labels of each set replaced by another class (flip_labels).
// Inputs are 1 x 28 x 28 in [0, 1], 10 classes: the MNIST MLP and the 1x28x28 TinyCNN take them.
// The heavy pixel noise is what a network can memorise, hence the generalisation gap.
//
// Measured with a scratch program (not part of the library; float; data seed = model seed =
// sampler seed - 100 = s): nn::mnist_mlp (784-256-256-10 ReLU, loss::CrossEntropy) trained with
// plain SGD, lr 0.05, B = 128 (BatchSampler, 94 steps an epoch) on the default 12000 / 2000:
//                 s =  0     1     2     3     4    mean
//   5 epochs   train  69.6  70.2  72.8  66.3  80.9  72.0 %
//              test   65.2  68.0  70.1  63.3  77.4  68.8 %
//   10 epochs  train  81.0  78.2  78.6  76.3  87.9  80.4 %
//              test   74.1  70.1  71.4  68.4  82.4  73.3 %
// i.e. a generalisation gap of 5.5-8.2 points after 10 epochs (12.9 after 20 epochs for s = 0:
// train 87.2 %, test 74.3 %); double gives the same (s = 0: 81.0 / 74.0 %); chance is 10 %.
#include <algorithm>
#include <array>
#include <cstdint>
#include <iomanip>
#include <string>
#include <vector>

#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/core/types.hpp"
#include "curvature/data/dataset.hpp"
#include "curvature/data/transforms.hpp"
#include "curvature/nn/layer.hpp"

namespace curvature::data {

/// Sizes, seed and noise of the synthetic task.
struct SyntheticOptions {
  Index n_train = 12000;
  Index n_test = 2000;
  std::uint64_t seed = 0;
  double label_noise = 0.05;  ///< fraction of labels replaced by another class, in each set
  int pixel_noise = 260;      ///< half-width of the uniform pixel noise, grey levels (0: none)
};

namespace detail {

inline constexpr int syn_side = 28, syn_pixels = syn_side * syn_side, syn_classes = 10, syn_latent = 8;
inline constexpr std::int64_t syn_one = 1024;  // fixed-point 1.0 of the latent coordinates

/// Uniform integer in [lo, hi].
inline std::int64_t uniform_int(Rng& rng, std::int64_t lo, std::int64_t hi) {
  return lo + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(hi - lo + 1)));
}

/// Sum of `bumps` bumps amp * (1 - d^2/r^2)^2; amp = +-magnitude (random sign), or uniform in
/// [lo_amp, magnitude] when lo_amp >= 0. Grey levels, one int per pixel.
inline std::vector<std::int64_t> smooth_image(Rng& rng, int bumps, std::int64_t magnitude, std::int64_t lo_amp = -1) {
  std::vector<std::int64_t> img(syn_pixels, 0);
  for (int b = 0; b < bumps; ++b) {
    const auto cu = uniform_int(rng, 5, 22), cv = uniform_int(rng, 5, 22), rad = uniform_int(rng, 4, 9);
    const auto amp = lo_amp >= 0 ? uniform_int(rng, lo_amp, magnitude) : (rng.below(2) ? magnitude : -magnitude);
    const auto r2 = rad * rad;
    for (int u = 0; u < syn_side; ++u)
      for (int v = 0; v < syn_side; ++v) {
        const std::int64_t t = r2 - ((u - cu) * (u - cu) + (v - cv) * (v - cv));
        if (t > 0) img[std::size_t(u * syn_side + v)] += amp * t * t / (r2 * r2);
      }
  }
  return img;
}

/// The images of a seed's world, summed per class: base + template_c, and the nuisance images.
struct SyntheticWorld {
  std::vector<std::int64_t> mean;      ///< syn_classes x syn_pixels: base + class template
  std::vector<std::int64_t> nuisance;  ///< syn_latent x syn_pixels, grey levels per unit latent

  explicit SyntheticWorld(std::uint64_t seed) {
    Rng rng(seed, 0x776f726c64ull);  // "world"
    const auto base = smooth_image(rng, 3, 150, 90);
    for (int c = 0; c < syn_classes; ++c) {
      const auto t = smooth_image(rng, 3, 150);
      for (int p = 0; p < syn_pixels; ++p) mean.push_back(base[std::size_t(p)] + t[std::size_t(p)]);
    }
    for (int j = 0; j < syn_latent; ++j) {
      const auto a = smooth_image(rng, 4, 48);
      nuisance.insert(nuisance.end(), a.begin(), a.end());
    }
  }

  /// 784 pixel bytes of one sample of class c, drawn from rng.
  void render(int c, int noise, Rng& rng, unsigned char* out) const {
    std::array<std::int64_t, syn_latent> z;
    for (auto& e : z)
      e = uniform_int(rng, -syn_one, syn_one) + uniform_int(rng, -syn_one, syn_one) + uniform_int(rng, -syn_one, syn_one);
    const auto dx = uniform_int(rng, -2, 2), dy = uniform_int(rng, -2, 2);
    for (int u = 0; u < syn_side; ++u)
      for (int v = 0; v < syn_side; ++v) {
        const std::int64_t su = u - dy, sv = v - dx;  // translated source pixel; outside: black
        std::int64_t p = 0;
        if (su >= 0 && su < syn_side && sv >= 0 && sv < syn_side) {
          const auto at = std::size_t(su * syn_side + sv);
          std::int64_t acc = 0;
          for (int j = 0; j < syn_latent; ++j) acc += z[std::size_t(j)] * nuisance[std::size_t(j) * syn_pixels + at];
          p = mean[std::size_t(c) * syn_pixels + at] + acc / syn_one;
        }
        if (noise > 0) p += uniform_int(rng, -noise, noise);
        out[u * syn_side + v] = static_cast<unsigned char>(std::clamp<std::int64_t>(p, 0, 255));
      }
  }
};

/// n samples of one set; sample i is drawn from its own stream (seed, set, i).
template <Scalar T>
Dataset<T> synthetic_set(const SyntheticWorld& w, const SyntheticOptions& o, std::uint64_t set, Index n) {
  Dataset<T> d{Matrix<T>(syn_pixels, n), Labels(static_cast<std::size_t>(n)), syn_classes,
               nn::Shape{1, syn_side, syn_side}, ""};
  std::array<T, 256> lut;
  for (int p = 0; p < 256; ++p) lut[std::size_t(p)] = static_cast<T>(p) / static_cast<T>(255);
  std::array<unsigned char, syn_pixels> img;
  for (Index i = 0; i < n; ++i) {
    Rng rng(o.seed, (set << 40) + static_cast<std::uint64_t>(i));
    const int c = static_cast<int>(i % syn_classes);
    w.render(c, o.pixel_noise, rng, img.data());
    for (int k = 0; k < syn_pixels; ++k) d.x(k, i) = lut[img[std::size_t(k)]];
    d.y[static_cast<std::size_t>(i)] = c;
  }
  flip_labels(d, o.label_noise, Rng::mix(o.seed ^ (0x6e6f697365ull + set)));  // "noise"
  return d;
}

}  // namespace detail

/// The synthetic task of this header: o.n_train + o.n_test samples, 10 classes, 1 x 28 x 28 in
/// [0, 1], a deterministic function of the options. Named
/// "synthetic (seed s, 10 classes, 1x28x28, pixel noise 260, 5% label noise) train" / "... test".
template <Scalar T>
Split<T> synthetic_task(const SyntheticOptions& o = {}) {
  CURVATURE_CHECK_VALUE(o.n_train >= 1 && o.n_test >= 1, "synthetic_task: n_train and n_test must be >= 1, got ",
                        o.n_train, " and ", o.n_test);
  CURVATURE_CHECK_VALUE(o.label_noise >= 0 && o.label_noise <= 1,
                        "synthetic_task: label_noise must be in [0, 1], got ", o.label_noise);
  CURVATURE_CHECK_VALUE(o.pixel_noise >= 0 && o.pixel_noise <= 100000,
                        "synthetic_task: pixel_noise must be in [0, 100000], got ", o.pixel_noise);
  const detail::SyntheticWorld w(o.seed);
  Split<T> s{detail::synthetic_set<T>(w, o, 1, o.n_train), detail::synthetic_set<T>(w, o, 2, o.n_test)};
  const auto title = curvature::detail::cat("synthetic (seed ", o.seed, ", 10 classes, 1x28x28, pixel noise ",
                                            o.pixel_noise, ", ", std::setprecision(3), o.label_noise * 100,
                                            "% label noise)");
  s.train.name = title + " train";
  s.test.name = title + " test";
  return s;
}

}  // namespace curvature::data
