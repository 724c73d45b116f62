#pragma once
// Operator algebra for any LinearOperator: damping A + lambda I (the damped Fisher/GGN of natural
// gradient and K-FAC, CG on G + lambda I), scaling alpha A (e.g. (eta/B) G of 000 eq. 36) and sums
// A + B. Each wraps an lvalue operator by reference and a temporary by value (like std::views::all):
//   GGNOperator g(m, ce, x, y);
//   Damped dg(g, 1e-3);                    // refers to g
//   Damped dm(MCFisherOperator(...), 1e-3);  // owns the MC Fisher operator
#include <cmath>
#include <concepts>
#include <type_traits>
#include <utility>

#include "curvature/core/error.hpp"
#include "curvature/operators/linear_operator.hpp"

namespace curvature {

namespace detail {
/// An operator held by value, or by reference when the wrapper was given an lvalue.
template <class A>
concept HeldOperator = LinearOperator<std::remove_cvref_t<A>> && !std::is_const_v<std::remove_reference_t<A>>;
template <class A>
using held_scalar = typename std::remove_cvref_t<A>::Scalar;
}  // namespace detail

/// A + lambda I with lambda >= 0 finite (ValueError otherwise).
template <class A>
  requires detail::HeldOperator<A>
class Damped {
 public:
  using Scalar = detail::held_scalar<A>;
  template <class Op>
  Damped(Op&& a, Scalar lambda) : a_(std::forward<Op>(a)), lambda_(lambda) {
    CURVATURE_CHECK_VALUE(std::isfinite(lambda) && lambda >= 0, "Damped: damping lambda must be finite and >= 0, got ",
                          lambda);
  }
  Index dim() const { return a_.dim(); }
  Scalar damping() const { return lambda_; }
  std::remove_reference_t<A>& base() { return a_; }

  /// out = A V + lambda V.
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    CURVATURE_CHECK_SHAPE(v.rows() == dim(), "Damped::apply: V has ", v.rows(), " rows but the operator acts on d = ",
                          dim());
    CURVATURE_CHECK_VALUE(&v != &out, "Damped::apply: out must not be the same matrix as V");
    a_.apply(v, out);
    out.noalias() += lambda_ * v;
  }
  /// q_r = v_r' A v_r + lambda ||v_r||^2, when A gives quadratic forms.
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q)
    requires QuadraticFormOperator<std::remove_reference_t<A>>
  {
    a_.quadratic_forms(v, q);
    q.noalias() += lambda_ * v.colwise().squaredNorm().transpose();
  }

 private:
  A a_;
  Scalar lambda_;
};
template <class Op, class T>
Damped(Op&&, T) -> Damped<Op>;

/// alpha A with alpha finite (any sign).
template <class A>
  requires detail::HeldOperator<A>
class Scaled {
 public:
  using Scalar = detail::held_scalar<A>;
  template <class Op>
  Scaled(Op&& a, Scalar alpha) : a_(std::forward<Op>(a)), alpha_(alpha) {
    CURVATURE_CHECK_VALUE(std::isfinite(alpha), "Scaled: factor alpha must be finite, got ", alpha);
  }
  Index dim() const { return a_.dim(); }
  Scalar factor() const { return alpha_; }
  std::remove_reference_t<A>& base() { return a_; }

  /// out = alpha (A V).
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    a_.apply(v, out);
    out *= alpha_;
  }
  /// q_r = alpha v_r' A v_r, when A gives quadratic forms.
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q)
    requires QuadraticFormOperator<std::remove_reference_t<A>>
  {
    a_.quadratic_forms(v, q);
    q *= alpha_;
  }

 private:
  A a_;
  Scalar alpha_;
};
template <class Op, class T>
Scaled(Op&&, T) -> Scaled<Op>;

/// A + B (same scalar type and dimension); one extra d x m buffer, kept between calls.
template <class A, class B>
  requires detail::HeldOperator<A> && detail::HeldOperator<B> &&
           std::same_as<detail::held_scalar<A>, detail::held_scalar<B>>
class OperatorSum {
 public:
  using Scalar = detail::held_scalar<A>;
  template <class OpA, class OpB>
  OperatorSum(OpA&& a, OpB&& b) : a_(std::forward<OpA>(a)), b_(std::forward<OpB>(b)) {
    CURVATURE_CHECK_SHAPE(a_.dim() == b_.dim(), "OperatorSum: operands act on d = ", a_.dim(), " and d = ", b_.dim(),
                          " parameters");
  }
  Index dim() const { return a_.dim(); }

  /// out = A V + B V.
  void apply(const Matrix<Scalar>& v, Matrix<Scalar>& out) {
    CURVATURE_CHECK_VALUE(&v != &out, "OperatorSum::apply: out must not be the same matrix as V");
    a_.apply(v, out);
    b_.apply(v, buf_);
    out += buf_;
  }
  /// q_r = v_r' A v_r + v_r' B v_r, when both give quadratic forms.
  void quadratic_forms(const Matrix<Scalar>& v, Vector<Scalar>& q)
    requires QuadraticFormOperator<std::remove_reference_t<A>> && QuadraticFormOperator<std::remove_reference_t<B>>
  {
    a_.quadratic_forms(v, q);
    Vector<Scalar> qb;
    b_.quadratic_forms(v, qb);
    q += qb;
  }

 private:
  A a_;
  B b_;
  Matrix<Scalar> buf_;
};
template <class OpA, class OpB>
OperatorSum(OpA&&, OpB&&) -> OperatorSum<OpA, OpB>;

static_assert(LinearOperator<Damped<DenseOperator<double>>> && LinearOperator<Damped<DenseOperator<float>&>>);
static_assert(LinearOperator<Scaled<DenseOperator<double>>>);
static_assert(LinearOperator<OperatorSum<DenseOperator<double>&, DenseOperator<double>>>);

}  // namespace curvature
