#pragma once
// Architectures from text: curvature-probe's --arch and --input-shape syntax (CLI.md).
//   spec  := layer ("," layer)*            whitespace anywhere between tokens
//   layer := name | name "(" [arg ("," arg)*] ")"
//   arg   := value | key "=" value
// Layers (PyTorch semantics, bias always present): linear(OUT), conv(OUT,k=K[,s=S][,p=P]),
// maxpool(K[,s=S]), avgpool(K[,s=S]) (S defaults to K), flatten, relu, leakyrelu([A]) (A = 0.01),
// tanh, sigmoid, gelu, batchnorm[(eps=E,momentum=M)] (1e-5, 0.1). Names are case-insensitive.
// Sequential::describe() of a parsed model parses back to the same model.
//
// Errors: malformed text throws ValueError naming the token and its position (0-based character
// offset in the spec), e.g. "parse_arch: unknown layer 'conv3d' at position 12"; a layer that does
// not fit the shape it receives throws ShapeError (from bind()) prefixed with the token.
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "curvature/nn/activation.hpp"
#include "curvature/nn/batchnorm.hpp"
#include "curvature/nn/conv2d.hpp"
#include "curvature/nn/linear.hpp"
#include "curvature/nn/pool.hpp"
#include "curvature/nn/reshape.hpp"
#include "curvature/nn/sequential.hpp"

namespace curvature::nn {

namespace detail {

inline std::string_view trim(std::string_view s, std::size_t* pos = nullptr) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  if (pos) *pos += b;
  return s.substr(b, e - b);
}

inline std::string lower(std::string_view s) {
  std::string o(s);
  for (char& ch : o) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return o;
}

/// One layer of a spec: its text, position, lower-case name and arguments (key "" = positional).
struct LayerCall {
  std::string_view text;
  std::size_t pos = 0;
  std::string name;
  std::vector<std::pair<std::string, std::string_view>> args;
  std::vector<bool> used;

  [[noreturn]] void fail(const std::string& what, std::string_view hint = {}) const {
    throw ValueError(curvature::detail::cat("parse_arch: ", what, " in '", text, "' at position ", pos,
                                            hint.empty() ? "" : " (e.g. ", hint, hint.empty() ? "" : ")"));
  }
  /// The i-th positional argument, if present.
  std::optional<std::string_view> positional(std::size_t i) {
    for (std::size_t k = 0; k < args.size(); ++k)
      if (args[k].first.empty() && i-- == 0) return take(k);
    return std::nullopt;
  }
  std::optional<std::string_view> keyword(std::string_view key) {
    for (std::size_t k = 0; k < args.size(); ++k)
      if (args[k].first == key) return take(k);
    return std::nullopt;
  }
  std::string_view take(std::size_t k) {
    used[k] = true;
    return args[k].second;
  }
  /// Throws for an argument no reader asked for.
  void finish() const {
    for (std::size_t k = 0; k < args.size(); ++k)
      if (!used[k]) {
        const auto& [key, v] = args[k];
        fail(curvature::detail::cat("unexpected argument '", key, key.empty() ? "" : "=", v, "' for ", name));
      }
  }
  Index integer(std::string_view v, const char* what, Index min) const {
    Index out = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc{} || end != v.data() + v.size() || v.empty()) fail(curvature::detail::cat("invalid integer '", v, "' for ", what));
    if (out < min) fail(curvature::detail::cat(what, " must be at least ", min, ", got ", out));
    return out;
  }
  double real(std::string_view v, const char* what) const {
    double out = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc{} || end != v.data() + v.size() || v.empty() || !std::isfinite(out))
      fail(curvature::detail::cat("invalid number '", v, "' for ", what));
    return out;
  }
  Index required(const char* what, std::optional<std::string_view> v, Index min, const char* example) const {
    if (!v) fail(curvature::detail::cat("missing ", what), example);
    return integer(*v, what, min);
  }
};

/// Splits "name(args)" into a LayerCall; `pos` is the offset of `tok` in the spec.
inline LayerCall parse_call(std::string_view tok, std::size_t pos) {
  LayerCall c;
  c.text = trim(tok, &pos);
  c.pos = pos;
  if (c.text.empty()) throw ValueError(curvature::detail::cat("parse_arch: empty layer at position ", pos));
  const std::size_t open = c.text.find('('), close = c.text.rfind(')');
  c.name = lower(trim(c.text.substr(0, std::min(open, c.text.size()))));
  if (open == std::string_view::npos) {
    if (close != std::string_view::npos) c.fail("unbalanced parentheses");
  } else {
    if (close == std::string_view::npos || close < open) c.fail("unbalanced parentheses");
    if (close + 1 != c.text.size()) c.fail(curvature::detail::cat("unexpected text after ')'"));
    const std::string_view inner = c.text.substr(open + 1, close - open - 1);
    if (inner.find_first_of("()") != std::string_view::npos) c.fail("nested parentheses");
    if (!trim(inner).empty())
      for (std::size_t b = 0; b <= inner.size();) {
        const std::size_t e = std::min(inner.find(',', b), inner.size());
        const std::string_view arg = trim(inner.substr(b, e - b));
        if (arg.empty()) c.fail("empty argument");
        const std::size_t eq = arg.find('=');
        if (eq == std::string_view::npos) c.args.emplace_back("", arg);
        else c.args.emplace_back(lower(trim(arg.substr(0, eq))), trim(arg.substr(eq + 1)));
        b = e + 1;
      }
  }
  if (c.name.empty()) c.fail("missing layer name");
  for (char ch : c.name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') c.fail(curvature::detail::cat("invalid layer name '", c.name, "'"));
  c.used.assign(c.args.size(), false);
  return c;
}

/// Splits the spec at the commas outside parentheses: (token, offset) pairs.
inline std::vector<std::pair<std::string_view, std::size_t>> split_layers(std::string_view spec) {
  std::vector<std::pair<std::string_view, std::size_t>> out;
  int depth = 0;
  std::size_t begin = 0;
  for (std::size_t k = 0; k <= spec.size(); ++k) {
    const char ch = k < spec.size() ? spec[k] : ',';
    if (ch == '(') ++depth;
    else if (ch == ')') --depth;
    if (depth < 0 || (k == spec.size() && depth != 0))
      throw ValueError(curvature::detail::cat("parse_arch: unbalanced parentheses in '",
                                              trim(spec.substr(begin, k - begin)), "' at position ", begin));
    if (ch == ',' && depth == 0) {
      out.emplace_back(spec.substr(begin, k - begin), begin);
      begin = k + 1;
    }
  }
  return out;
}

template <Scalar T, class B>
void add_pool(Sequential<T, B>& m, LayerCall& c) {
  const Index k = c.required("K", c.positional(0), 1, "maxpool(2)");
  const auto s = c.keyword("s");
  const Index stride = s ? c.integer(*s, "s", 1) : k;
  c.finish();
  if (c.name == "maxpool") m.add(MaxPool2d<T, B>(k, stride));
  else m.add(AvgPool2d<T, B>(k, stride));
}

template <Scalar T, class B>
void add_parametrised(Sequential<T, B>& m, LayerCall& c) {
  if (c.name == "linear") {
    const Index out = c.required("OUT", c.positional(0), 1, "linear(10)");
    c.finish();
    m.add(Linear<T, B>(out));
  } else if (c.name == "conv") {
    const Index out = c.required("OUT", c.positional(0), 1, "conv(16,k=3)");
    const Index k = c.required("k=", c.keyword("k"), 1, "conv(16,k=3)");
    const auto s = c.keyword("s"), p = c.keyword("p");
    const Index stride = s ? c.integer(*s, "s", 1) : 1, pad = p ? c.integer(*p, "p", 0) : 0;
    c.finish();
    m.add(Conv2d<T, B>(out, k, stride, pad));
  } else {  // batchnorm
    const auto e = c.keyword("eps"), mo = c.keyword("momentum");
    const double eps = e ? c.real(*e, "eps") : 1e-5, mom = mo ? c.real(*mo, "momentum") : 0.1;
    c.finish();
    if (eps <= 0) c.fail("eps must be positive");
    if (mom < 0 || mom > 1) c.fail("momentum must be in [0, 1]");
    m.add(BatchNorm<T, B>(eps, mom));
  }
}

template <Scalar T, class B>
void add_parameterless(Sequential<T, B>& m, LayerCall& c) {
  if (c.name == "leakyrelu") {
    const auto a = c.positional(0);
    const double slope = a ? c.real(*a, "A") : 0.01;
    c.finish();
    m.add(LeakyReLU<T, B>(slope));
    return;
  }
  c.finish();
  if (c.name == "flatten") m.add(Flatten<T, B>());
  else if (c.name == "relu") m.add(ReLU<T, B>());
  else if (c.name == "tanh") m.add(Tanh<T, B>());
  else if (c.name == "sigmoid") m.add(Sigmoid<T, B>());
  else m.add(GELU<T, B>());
}

/// Appends the layer `c` names; a ShapeError from bind() is prefixed with the token.
template <Scalar T, class B>
void add_call(Sequential<T, B>& m, LayerCall& c) {
  const std::string& n = c.name;
  try {
    if (n == "linear" || n == "conv" || n == "batchnorm") add_parametrised(m, c);
    else if (n == "maxpool" || n == "avgpool") add_pool(m, c);
    else if (n == "flatten" || n == "relu" || n == "leakyrelu" || n == "tanh" || n == "sigmoid" || n == "gelu")
      add_parameterless(m, c);
    else
      throw ValueError(curvature::detail::cat("parse_arch: unknown layer '", n, "' at position ", c.pos,
                                              " (known: linear, conv, maxpool, avgpool, flatten, relu, leakyrelu, "
                                              "tanh, sigmoid, gelu, batchnorm)"));
  } catch (const ShapeError& e) {
    throw ShapeError(curvature::detail::cat("parse_arch: '", c.text, "' at position ", c.pos, ": ", e.what()));
  }
}

}  // namespace detail

/// The model the --arch spec describes for per-sample inputs of shape `input`, initialised like
/// PyTorch with seed 0 (load real parameters with set_params).
template <Scalar T, class B = DefaultBackend>
Sequential<T, B> parse_arch(Shape input, std::string_view spec, B backend = B{}) {
  if (detail::trim(spec).empty()) throw ValueError("parse_arch: empty architecture");
  Sequential<T, B> m(input, backend);
  for (const auto& [tok, pos] : detail::split_layers(spec)) {
    detail::LayerCall c = detail::parse_call(tok, pos);
    detail::add_call(m, c);
  }
  m.init(0);
  return m;
}

/// --input-shape: "D" (vectors) or "CxHxW" (images), positive integers, whitespace tolerated.
inline Shape parse_shape(std::string_view text) {
  const auto bad = [&] {
    return ValueError(curvature::detail::cat("parse_shape: invalid shape '", text,
                                             "'; expected D or CxHxW with positive integers, e.g. 784 or 3x32x32"));
  };
  std::vector<Index> dims;
  for (std::size_t b = 0; b <= text.size();) {
    const std::size_t e = std::min(text.find_first_of("xX", b), text.size());
    const std::string_view part = detail::trim(text.substr(b, e - b));
    Index v = 0;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || ec != std::errc{} || end != part.data() + part.size() || v <= 0) throw bad();
    dims.push_back(v);
    b = e + 1;
  }
  if (dims.size() == 1) return Shape{dims[0], 1, 1};
  if (dims.size() == 3) return Shape{dims[0], dims[1], dims[2]};
  throw bad();
}

}  // namespace curvature::nn
