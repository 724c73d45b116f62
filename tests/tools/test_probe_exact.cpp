// curvature-probe --exact against dense matrices built in the test: F from explicit Jacobians and
// closed-form output Hessians, EF from batch-size-1 gradients, H materialised (checked against
// central differences of gradients), S_R by LDLT solves, IGS by the softmax closed form
// sum_i (1/p_{y_i} - 1) and by an explicit pseudo-inverse. Agreement to 1e-8 relative.
#include <Eigen/Eigenvalues>

#include "tools/probe_fixture.hpp"

using namespace probe_test;
using Json = nlohmann::json;

namespace {

constexpr double tol = 1e-8;

void check_close(const Json& v, double exact, double rel = tol) {
  INFO("tool " << v << ", reference " << exact);
  REQUIRE(v.is_number());
  CHECK(rel_diff(v.get<double>(), exact) <= rel);
}

/// trace, frobenius, lambda_max and top eigenvalues of a block against the dense matrix a.
void check_matrix_block(const Json& b, const Matrix<double>& a, Index top) {
  const Vector<double> ev = Eigen::SelfAdjointEigenSolver<Matrix<double>>(a, Eigen::EigenvaluesOnly).eigenvalues();
  check_close(b["trace"], a.trace());
  check_close(b["frobenius"], a.norm());
  check_close(b["lambda_max"], ev(ev.size() - 1));
  REQUIRE(b["top_eigenvalues"].size() == static_cast<std::size_t>(top));
  for (Index k = 0; k < top; ++k) check_close(b["top_eigenvalues"][k], ev(ev.size() - 1 - k), 1e-7);
}

/// F^+ from F's eigenpairs above 1e-9 lambda_max, with that rank.
std::pair<Matrix<double>, Index> pseudo_inverse(const Matrix<double>& f) {
  Eigen::SelfAdjointEigenSolver<Matrix<double>> es(f);
  const Vector<double>& e = es.eigenvalues();
  Vector<double> inv = Vector<double>::Zero(e.size());
  Index rank = 0;
  for (Index k = 0; k < e.size(); ++k)
    if (e(k) > 1e-9 * e.maxCoeff()) inv(k) = 1 / e(k), ++rank;
  return {es.eigenvectors() * inv.asDiagonal() * es.eigenvectors().transpose(), rank};
}

void check_sharpness(const Json& j, const Reference& r, const std::vector<double>& damping) {
  const Index d = r.h.rows();
  const auto [fp, rank] = pseudo_inverse(r.f);
  for (double lambda : damping) {
    char key[32];
    std::snprintf(key, sizeof key, "%g", lambda);
    INFO("lambda " << key);
    const double dense = lambda > 0 ? (r.f + lambda * Matrix<double>::Identity(d, d)).ldlt().solve(r.h).trace()
                                    : (fp * r.h).trace();
    check_close(j["riemannian_sharpness"][key], dense);
    const Vector<double> fd = r.f.diagonal().array() + lambda, efd = r.ef.diagonal().array() + lambda;
    check_close(j["riemannian_sharpness_diag"][key], (r.h.diagonal().array() / fd.array()).sum());
    check_close(j["riemannian_sharpness_diag_ef"][key], (r.h.diagonal().array() / efd.array()).sum());
  }
}

void check_igs(const Json& j, Problem& p, const Reference& r, Index expected_rank) {
  const auto [fp, rank] = pseudo_inverse(r.f);
  REQUIRE(rank == expected_rank);
  CHECK(j["fisher"]["rank"] == rank);
  CHECK(j["igs_rank"] == rank);
  CHECK(j["igs_gap"].get<double>() > 1e6);
  check_close(j["igs"], (r.g.transpose() * fp * r.g).trace() / static_cast<double>(r.g.cols()));
  check_close(j["igs_batch"], r.grad.dot(fp * r.grad));
  if (p.loss != "ce") return;
  // Softmax CE with the Jacobian stack of full row rank: g_i^T F^+ g_i = N (1/p_{y_i} - 1) (SPEC 3).
  const Matrix<double> logits = p.model.forward(p.x);
  double closed = 0;
  for (Index i = 0; i < p.x.cols(); ++i) {
    const Vector<double> e = (logits.col(i).array() - logits.col(i).maxCoeff()).exp();
    closed += e.sum() / e(p.labels[i]) - 1;
  }
  check_close(j["igs"], closed);
}

void check_header(const Json& j, Problem& p, const Reference& r) {
  CHECK(j["num_params"] == p.model.num_params());
  CHECK(j["num_samples"] == p.x.cols());
  check_close(j["loss"], r.loss);
  check_close(j["gradient_norm"], r.grad.norm());
  check_close(j["fisher_rao_norm"], p.model.params().dot(r.f * p.model.params()));
  if (p.loss == "ce") {
    const Matrix<double> logits = p.model.forward(p.x);
    double hits = 0;
    for (Index i = 0; i < p.x.cols(); ++i) {
      Index c = 0;
      logits.col(i).maxCoeff(&c);
      hits += c == p.labels[i];
    }
    CHECK(j["accuracy"].get<double>() == Approx(hits / static_cast<double>(p.x.cols())));
  } else {
    CHECK_FALSE(j.contains("accuracy"));
  }
  // SPEC 4 from the dense F and batch-size-1 gradients: 000 eq. 35 on the exact per-sample
  // covariance diagonal, 002 eq. 3's mu and mu1, Prop. 3.4's bound with the defaults B = 128, eta = 0.01.
  const double n = static_cast<double>(r.g.cols());
  const Vector<double> sigma = (r.g.array().square().rowwise().sum() / n - r.grad.array().square()).cwiseMax(0.0);
  const Vector<double> fdiag = r.f.diagonal();
  check_close(j["noise"]["cosine_diag"], sigma.dot(fdiag) / (sigma.norm() * fdiag.norm()));
  const double tr1 = (r.g.transpose() * r.f * r.g).trace() / n, tr = tr1 - r.grad.dot(r.f * r.grad);
  const double denom = 2 * r.loss * r.f.squaredNorm();
  check_close(j["noise"]["alignment_mu1"], tr1 / denom);
  check_close(j["noise"]["alignment_mu"], tr / denom);
  const double mu1 = tr1 / denom;
  check_close(j["noise"]["stability_bound"], std::min(128 / std::sqrt(127 * mu1), 256 / mu1) / 0.01);
}

/// Runs --exact with a --vector and checks every key against the references.
void check_exact_run(const Scratch& s, Problem& p, Index expected_rank) {
  const Reference r = reference(p);
  Rng rng(7);
  const Vector<double> v = uniform(p.model.num_params(), 1, rng, 1.0).col(0);
  io::save_npy(s.path("v.npy"), v);
  std::vector<std::string> args = p.flags(s);
  for (const char* a : {"--exact", "--damping", "0,1e-06,0.001", "--top", "4"}) args.push_back(a);
  args.insert(args.end(), {"--vector", s.path("v.npy")});
  const RunResult res = s.run(args);
  INFO(res.err);
  REQUIRE(res.status == 0);
  CHECK(res.err.empty());
  const Json j = res.json();
  check_header(j, p, r);
  check_matrix_block(j["hessian"], r.h, 4);
  check_close(j["hessian"]["diagonal_sum"], r.h.trace());
  CHECK(j["hessian"]["trace_stderr"] == 0.0);
  check_matrix_block(j["fisher"], r.f, 4);
  check_matrix_block(j["empirical_fisher"], r.ef, 4);
  check_close(j["euclidean_sharpness"], r.h.trace());
  check_sharpness(j, r, {0.0, 1e-6, 1e-3});
  check_igs(j, p, r, expected_rank);
  const Vector<double> hv = r.h * v, fv = r.f * v;
  REQUIRE(j["hvp"].size() == static_cast<std::size_t>(v.size()));
  for (Index i = 0; i < v.size(); ++i) {
    CHECK(std::abs(j["hvp"][i].get<double>() - hv(i)) <= tol * hv.norm());
    CHECK(std::abs(j["fvp"][i].get<double>() - fv(i)) <= tol * fv.norm());
  }
}

}  // namespace

TEST_CASE("the materialised reference Hessian matches central differences of gradients", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "4", "linear(5),tanh,linear(3)", "ce", 12);
  const Reference r = reference(p);
  const Index d = p.model.num_params();
  const double h = 1e-5;
  Matrix<double> fd(d, d);
  const Vector<double> theta = p.model.params();
  for (Index c = 0; c < d; ++c) {
    Vector<double> t = theta;
    t(c) += h;
    p.model.set_params(t);
    const Vector<double> gp = loss_and_gradient(p.model, loss::CrossEntropy<double>{}, p.x, p.labels).gradient;
    t(c) -= 2 * h;
    p.model.set_params(t);
    const Vector<double> gm = loss_and_gradient(p.model, loss::CrossEntropy<double>{}, p.x, p.labels).gradient;
    fd.col(c) = (gp - gm) / (2 * h);
  }
  p.model.set_params(theta);
  CHECK((fd - r.h).norm() <= 1e-7 * r.h.norm());
}

TEST_CASE("--exact on a tanh MLP with cross-entropy reproduces dense H, F, EF, S_R and IGS", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "4", "linear(5),tanh,linear(3)", "ce", 12);
  check_exact_run(s, p, 12 * (3 - 1));  // N (C - 1) <= d = 43: the softmax closed form holds
}

TEST_CASE("--exact on a conv net over 1x6x6 images with mse and one-hot labels", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "1x6x6", "conv(2,k=3),tanh,maxpool(2),flatten,linear(3)", "mse", 12);
  REQUIRE(p.model.num_params() == 47);
  check_exact_run(s, p, 12 * 3);  // N K = 36 <= d = 47
}

TEST_CASE("--exact with mse and float N x K targets", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "4", "linear(5),tanh,linear(3)", "mse", 12, /*float_targets=*/true);
  check_exact_run(s, p, 12 * 3);  // N K = 36 <= d = 43
}

TEST_CASE("float32 parameters and inputs, int32 labels and flattened images are accepted", "[tools][probe]") {
  Scratch s;
  Problem p = make_problem(s, "1x6x6", "conv(2,k=3),tanh,maxpool(2),flatten,linear(3)", "ce", 12);
  const Eigen::VectorXf pf = p.model.params().cast<float>();
  const Eigen::MatrixXf xf = p.x.cast<float>();
  std::vector<std::int32_t> y32(p.labels.begin(), p.labels.end());
  io::save_npy(s.path("params.npy"), pf.data(), {pf.size()});
  io::save_npy(s.path("inputs.npy"), xf.data(), {xf.cols(), xf.rows()});  // N x 36
  io::save_npy(s.path("targets.npy"), y32.data(), {static_cast<Index>(y32.size())});
  std::vector<std::string> args = p.flags(s);
  args.push_back("--exact");
  const RunResult res = s.run(args);
  INFO(res.err);
  REQUIRE(res.status == 0);
  p.model.set_params(pf.cast<double>());
  p.x = xf.cast<double>();
  const Reference r = reference(p);
  check_close(res.json()["hessian"]["trace"], r.h.trace());
  check_close(res.json()["fisher"]["trace"], r.f.trace());
}
