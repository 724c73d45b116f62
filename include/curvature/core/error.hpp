#pragma once
// Errors thrown for bad input. Every message names the function (or file), the argument and the
// offending value, so a user can act on it without a debugger.
#include <sstream>
#include <stdexcept>
#include <string>

namespace curvature {

/// Base of every exception the library throws for bad input.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A tensor or vector has the wrong shape or length.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// An argument has a value outside its domain (NaN, negative size, unknown name).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A file could not be read or written, or its contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

/// The model or loss does not support the requested operation (e.g. per-sample gradients of a
/// BatchNorm layer in training mode, where samples are coupled).
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}
}  // namespace detail

}  // namespace curvature

/// Throws curvature::ShapeError with the given message parts when the condition is false.
#define CURVATURE_CHECK_SHAPE(cond, ...) \
  do {                                   \
    if (!(cond)) throw ::curvature::ShapeError(::curvature::detail::cat(__VA_ARGS__)); \
  } while (0)

/// Throws curvature::ValueError with the given message parts when the condition is false.
#define CURVATURE_CHECK_VALUE(cond, ...) \
  do {                                   \
    if (!(cond)) throw ::curvature::ValueError(::curvature::detail::cat(__VA_ARGS__)); \
  } while (0)
