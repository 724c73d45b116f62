#pragma once
// K-FAC (Martens & Grosse 2015) for Linear layers and KFC (Grosse & Martens 2016) for Conv2d
// layers: the Fisher of the mean loss (SPEC 0-1), F = (1/N) sum_i J_i^T Lambda_i J_i, replaced by a
// block-diagonal matrix with one block per layer, each a Kronecker product G (x) A of an output
// factor G and an input factor A (docs/kfac.md). KfacOperator applies F_kfac, KfacInverse applies
// (F_kfac + lambda I)^-1 exactly per block, or its factored-damping variant; both model
// LinearOperator (SPEC 3: S_R "structured (K-FAC)", damped IGS).
//
// The factors are computed once, at construction, from one forward and one backward pass of the
// batch at the model's parameters of that moment; the operators hold no reference to the model,
// the loss or the batch. Rebuild after a parameter update.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Eigenvalues>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"
#include "curvature/core/rng.hpp"
#include "curvature/model/derivatives.hpp"
#include "curvature/nn/conv2d.hpp"
#include "curvature/nn/linear.hpp"
#include "curvature/nn/sequential.hpp"
#include "curvature/operators/detail/kfac_factors.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

/// Which output cotangents build the factor G (docs/kfac.md, "Fisher types").
enum class KfacFisher {
  Exact,       ///< the columns of the loss-Hessian factor S_i: E_y[G] exactly (= GGN; true Fisher for CE/MSE)
  MonteCarlo,  ///< S labels y~ ~ p(.|x_i) per sample (KfacOptions::mc_samples, ::seed)
  Empirical    ///< the true labels' gradients (not a Fisher; Kunstner et al. 2019)
};

/// How the damping lambda enters the inverse (docs/kfac.md, "Damping").
enum class KfacDamping {
  Exact,    ///< (G (x) A + lambda I)^-1, exactly, by the factors' eigendecompositions
  Factored  ///< (G + sqrt(lambda)/pi I)^-1 (x) (A + pi sqrt(lambda) I)^-1, Martens & Grosse 2015 Sec. 6.3
};

struct KfacOptions {
  KfacFisher fisher = KfacFisher::Exact;
  Index mc_samples = 1;    ///< S, labels drawn per sample (MonteCarlo only)
  std::uint64_t seed = 0;  ///< Rng(seed) draws the labels (MonteCarlo only)
};

/// The Kronecker factors of one layer. Its parameters theta[offset, offset + size()) are
/// [vec_row(W) (out x in); b (out)] (SPEC 0); in the row-major order of Wbar = [W | b] its block is
/// G (x) A, i.e. F_kfac[(o, j), (o', j')] = G(o, o') A(j, j') with the bias at j = in.
template <Scalar T>
struct KfacBlock {
  Index layer = 0;      ///< index of the layer in the Sequential
  std::string name;     ///< the layer's name(), e.g. "linear(6)"
  Index offset = 0;     ///< first parameter of the layer in theta
  Index in = 0;         ///< Linear: in_features; Conv2d: C*k*k (patch length)
  Index out = 0;        ///< Linear: out_features; Conv2d: output channels
  Index positions = 1;  ///< output positions per sample (Conv2d: Ho*Wo; Linear: 1)
  Matrix<T> A;          ///< (in+1) x (in+1): (1/N) sum_i sum_t abar_it abar_it^T, bias entry last
  Matrix<T> G;          ///< out x out: (1/(N T n_r)) sum_i sum_t sum_r b_itr b_itr^T (T positions, n_r see docs)

  Index size() const { return out * (in + 1); }
  detail::KfacShape shape() const { return {offset, in + 1, out}; }
};

template <Scalar T, class B>
class KfacInverse;

/// F_kfac = blockdiag_l(G_l (x) A_l) on theta (mapped to the library's layout), as a LinearOperator.
template <Scalar T, class B = DefaultBackend>
class KfacOperator {
 public:
  using Scalar = T;

  /// Builds the factors of every Linear and Conv2d layer of `m` on the batch (x, y) with one
  /// forward and one backward pass. Throws ShapeError for a batch mismatch, ValueError for
  /// mc_samples < 1, UnsupportedError for a layer with parameters that is not Linear or Conv2d.
  template <Loss L>
  KfacOperator(nn::Sequential<T, B>& m, const L& loss, const Matrix<T>& x, const typename L::Targets& y,
               KfacOptions options = {})
      : opt_(options), d_(m.num_params()), n_(x.cols()), bk_(m.backend()) {
    static_assert(std::same_as<scalar_of<L>, T>, "KfacOperator: model and loss must use the same scalar type");
    CURVATURE_CHECK_SHAPE(x.cols() > 0, "KfacOperator: x has no samples (0 columns)");
    detail::check_batch(m, loss, x, y, "KfacOperator");
    CURVATURE_CHECK_VALUE(opt_.fisher != KfacFisher::MonteCarlo || opt_.mc_samples >= 1,
                          "KfacOperator: mc_samples (S) must be >= 1, got ", opt_.mc_samples);
    collect_layers(m);
    run_pass(m, loss, x, y);
    for (KfacBlock<T>& blk : blocks_) compute_factors(m, x, blk);
  }

  /// d, the number of parameters.
  Index dim() const { return d_; }
  /// N, the samples the factors were averaged over.
  Index batch_size() const { return n_; }
  const KfacOptions& options() const { return opt_; }
  /// One block per Linear / Conv2d layer, in layer order; they cover theta.
  Index num_blocks() const { return static_cast<Index>(blocks_.size()); }
  const KfacBlock<T>& block(Index k) const { return blocks_.at(static_cast<std::size_t>(k)); }
  const std::vector<KfacBlock<T>>& blocks() const { return blocks_; }
  const B& backend() const { return bk_; }

  /// out = F_kfac V (d x m, overwritten): per block two products, Wbar^T -> A Wbar^T G.
  void apply(const Matrix<T>& v, Matrix<T>& out) {
    CURVATURE_CHECK_SHAPE(v.rows() == d_, "KfacOperator::apply: V has ", v.rows(), " rows but the operator acts on d = ",
                          d_, " parameters");
    CURVATURE_CHECK_VALUE(&v != &out, "KfacOperator::apply: out must not be the same matrix as V");
    out.resize(d_, v.cols());
    if (v.cols() == 0) return;
    for (const KfacBlock<T>& blk : blocks_) {
      const detail::KfacShape s = blk.shape();
      detail::kfac_gather(v, s, u_);
      y_.resize(s.a, u_.cols());
      bk_.gemm(y_, blk.A, u_, T(1), false);
      for (Index r = 0; r < v.cols(); ++r) bk_.gemm(u_.middleCols(r * s.g, s.g), y_.middleCols(r * s.g, s.g), blk.G, T(1), false);
      detail::kfac_scatter(u_, s, out);
    }
  }

  /// (F_kfac + lambda I)^-1 (or its factored variant) as an operator; lambda > 0.
  KfacInverse<T, B> inverse(T lambda, KfacDamping damping = KfacDamping::Exact) const {
    return KfacInverse<T, B>(*this, lambda, damping);
  }

 private:
  /// One block per layer with parameters; anything but Linear and Conv2d is rejected by name.
  void collect_layers(nn::Sequential<T, B>& m) {
    Index covered = 0;
    for (Index l = 0; l < m.num_layers(); ++l) {
      const nn::Layer<T, B>& layer = m.layer(l);
      if (layer.num_params() == 0) continue;
      KfacBlock<T> blk;
      blk.layer = l;
      blk.name = layer.name();
      blk.offset = m.param_offset(l);
      if (const auto* lin = dynamic_cast<const nn::Linear<T, B>*>(&layer)) {
        blk.in = lin->in_features();
        blk.out = lin->out_features();
      } else if (const auto* conv = dynamic_cast<const nn::Conv2d<T, B>*>(&layer)) {
        blk.in = conv->patch_size();
        blk.out = conv->out_channels();
        blk.positions = conv->positions();
      } else {
        throw UnsupportedError(curvature::detail::cat(
            "KfacOperator: layer ", l, " (", layer.name(), ") has ", layer.num_params(),
            " parameters but K-FAC supports only linear and conv layers; remove it or freeze it into a "
            "parameter-free layer"));
      }
      covered += blk.size();
      blocks_.push_back(std::move(blk));
    }
    CURVATURE_CHECK_VALUE(covered == d_, "KfacOperator: blocks cover ", covered, " of ", d_, " parameters");
  }

  /// One forward and one backward pass with R cotangent replicas per sample; the gradient it
  /// reduces is scratch, the factors come from the layers' inputs and output cotangents.
  template <class L>
  void run_pass(nn::Sequential<T, B>& m, const L& loss, const Matrix<T>& x, const typename L::Targets& y) {
    Vector<T> scratch;
    m.backward(x, [&](const Matrix<T>& f) -> Matrix<T> {
      if constexpr (requires { loss.check(f, y); }) loss.check(f, y);  // targets vs outputs (labels in range)
      switch (opt_.fisher) {
        case KfacFisher::Exact: return loss.hessian_factor(f, y);
        case KfacFisher::Empirical: return loss.gradient(f, y);
        case KfacFisher::MonteCarlo: break;
      }
      Rng rng(opt_.seed);
      Matrix<T> cot(f.rows(), opt_.mc_samples * f.cols());
      for (Index s = 0; s < opt_.mc_samples; ++s) cot.middleCols(s * f.cols(), f.cols()) = loss.gradient(f, loss.sample(f, rng));
      return cot;
    }, Reduction::Sum, scratch, T(1), nn::Sharding::Off);  // the factors read the whole batch's layer state
  }

  /// A = (1/N) sum_{i,t} abar abar^T; G = (1/(N T n_r)) sum_{i,t,r} b b^T (KFC: A sums, G averages
  /// over the T positions, so T = 1 gives Linear's factors; n_r = S for MonteCarlo, else 1).
  void compute_factors(nn::Sequential<T, B>& m, const Matrix<T>& x, KfacBlock<T>& blk) {
    const T inv_n = T(1) / static_cast<T>(n_);
    const T draws = opt_.fisher == KfacFisher::MonteCarlo ? static_cast<T>(opt_.mc_samples) : T(1);
    const T g_scale = inv_n / (draws * static_cast<T>(blk.positions));
    const Matrix<T>& cot = m.output_cotangent(blk.layer);
    blk.G = Matrix<T>::Zero(blk.out, blk.out);
    if (auto* conv = dynamic_cast<const nn::Conv2d<T, B>*>(&m.layer(blk.layer))) {
      Matrix<T> patches;  // [N*T, C*k*k]
      conv->patches(m.layer_input(blk.layer, x), n_, patches);
      blk.A = detail::input_factor(patches.transpose(), inv_n);
      for (Index r = 0; r < cot.cols() / blk.out; ++r)  // replica r: [N*T, Cout]
        detail::accumulate_output_factor(blk.G, cot.middleCols(r * blk.out, blk.out).transpose(), g_scale);
    } else {
      blk.A = detail::input_factor(m.layer_input(blk.layer, x), inv_n);  // [in, N]
      detail::accumulate_output_factor(blk.G, cot, g_scale);            // [out, R*N]
    }
    detail::symmetrize_from_lower(blk.G);
  }

  KfacOptions opt_;
  Index d_, n_;
  B bk_;
  std::vector<KfacBlock<T>> blocks_;
  Matrix<T> u_, y_;  // apply's gathered block and product, reused
};

/// (F_kfac + lambda I)^-1 (KfacDamping::Exact) or the factored-damping inverse
/// (G + sqrt(lambda)/pi I)^-1 (x) (A + pi sqrt(lambda) I)^-1 per block (KfacDamping::Factored,
/// pi = sqrt((tr A / dim A) / (tr G / dim G)), 1 when tr G = 0), as a LinearOperator. Both are
/// applied through the eigendecompositions A = Q_A diag(s_a) Q_A^T, G = Q_G diag(s_g) Q_G^T,
/// computed once: Wbar^T -> Q_A [(Q_A^T Wbar^T Q_G) ./ D] Q_G^T with D(j, o) = s_a,j s_g,o + lambda
/// (Exact) or (s_a,j + pi sqrt(lambda)) (s_g,o + sqrt(lambda)/pi) (Factored).
template <Scalar T, class B = DefaultBackend>
class KfacInverse {
 public:
  using Scalar = T;

  KfacInverse(const KfacOperator<T, B>& op, T lambda, KfacDamping damping = KfacDamping::Exact)
      : d_(op.dim()), lambda_(lambda), damping_(damping), bk_(op.backend()) {
    CURVATURE_CHECK_VALUE(lambda > T(0) && std::isfinite(lambda), "KfacInverse: the damping lambda must be positive "
                          "and finite (the undamped K-FAC matrix is singular in general), got ", lambda);
    for (const KfacBlock<T>& blk : op.blocks()) blocks_.push_back(factorize(blk));
  }

  Index dim() const { return d_; }
  T lambda() const { return lambda_; }
  KfacDamping damping() const { return damping_; }
  /// pi of block k (1 for KfacDamping::Exact).
  T pi(Index k) const { return blocks_.at(static_cast<std::size_t>(k)).pi; }

  /// out = (F_kfac + lambda I)^-1 V, or the factored inverse (d x m, overwritten).
  void apply(const Matrix<T>& v, Matrix<T>& out) {
    CURVATURE_CHECK_SHAPE(v.rows() == d_, "KfacInverse::apply: V has ", v.rows(), " rows but the operator acts on d = ",
                          d_, " parameters");
    CURVATURE_CHECK_VALUE(&v != &out, "KfacInverse::apply: out must not be the same matrix as V");
    out.resize(d_, v.cols());
    if (v.cols() == 0) return;
    for (const Block& blk : blocks_) {
      const Index g = blk.shape.g;
      detail::kfac_gather(v, blk.shape, u_);
      y_.resize(blk.shape.a, u_.cols());
      bk_.gemm(y_, blk.qa.transpose(), u_, T(1), false);
      for (Index r = 0; r < v.cols(); ++r) {
        z_.resize(blk.shape.a, g);
        bk_.gemm(z_, y_.middleCols(r * g, g), blk.qg, T(1), false);
        z_.array() *= blk.inv_d.array();
        bk_.gemm(y_.middleCols(r * g, g), z_, blk.qg.transpose(), T(1), false);
      }
      bk_.gemm(u_, blk.qa, y_, T(1), false);
      detail::kfac_scatter(u_, blk.shape, out);
    }
  }

 private:
  struct Block {
    detail::KfacShape shape;
    Matrix<T> qa, qg, inv_d;  // eigenvectors of A and G; 1 / D (a x g)
    T pi = T(1);
  };

  static void eigen(const Matrix<T>& m, Matrix<T>& q, Vector<T>& s) {
    Eigen::SelfAdjointEigenSolver<Matrix<T>> es(m);
    q = es.eigenvectors();
    s = es.eigenvalues().cwiseMax(T(0));  // PSD by construction: negative values are round-off
  }

  Block factorize(const KfacBlock<T>& blk) const {
    Block b;
    b.shape = blk.shape();
    Vector<T> sa, sg;
    eigen(blk.A, b.qa, sa);
    eigen(blk.G, b.qg, sg);
    if (damping_ == KfacDamping::Exact) {
      b.inv_d = ((sa * sg.transpose()).array() + lambda_).inverse().matrix();
      return b;
    }
    const T mean_a = blk.A.trace() / static_cast<T>(blk.A.rows());
    const T mean_g = blk.G.trace() / static_cast<T>(blk.G.rows());
    b.pi = mean_a > T(0) && mean_g > T(0) ? std::sqrt(mean_a / mean_g) : T(1);
    const T root = std::sqrt(lambda_);
    const Vector<T> da = (sa.array() + b.pi * root).matrix();
    const Vector<T> dg = (sg.array() + root / b.pi).matrix();
    b.inv_d = (da * dg.transpose()).array().inverse().matrix();
    return b;
  }

  Index d_;
  T lambda_;
  KfacDamping damping_;
  B bk_;
  std::vector<Block> blocks_;
  Matrix<T> u_, y_, z_;
};

static_assert(LinearOperator<KfacOperator<double, backend::Serial>>);
static_assert(LinearOperator<KfacOperator<float>>);
static_assert(LinearOperator<KfacInverse<double, backend::Serial>>);
static_assert(LinearOperator<KfacInverse<float>>);

}  // namespace curvature
