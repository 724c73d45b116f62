#pragma once
// Per-layer breakdowns: every diagonal-based measure is a sum over parameters, so its value per
// layer is the sum over that layer's slice of the flat parameter vector.
#include <string>
#include <vector>

#include "curvature/core/concepts.hpp"
#include "curvature/core/error.hpp"

namespace curvature {

/// A contiguous slice [offset, offset + size) of the flat parameter vector, named after its layer.
struct ParameterGroup {
  std::string name;
  Index offset = 0;
  Index size = 0;
};

/// A model that exposes its layers (the library's Sequential does).
template <class M>
concept LayeredModel = Model<M> && requires(const M& m, Index l) {
  { m.num_layers() } -> std::convertible_to<Index>;
  { m.layer(l).name() } -> std::convertible_to<std::string>;
  { m.layer(l).num_params() } -> std::convertible_to<Index>;
  { m.param_offset(l) } -> std::convertible_to<Index>;
};

/// One group per layer with parameters, named "<index>:<layer>" (e.g. "0:linear(256)"), in
/// parameter order; a model without layers is one group "all".
template <Model M>
std::vector<ParameterGroup> parameter_groups(const M& m) {
  std::vector<ParameterGroup> groups;
  if constexpr (LayeredModel<M>) {
    for (Index l = 0; l < m.num_layers(); ++l)
      if (const Index n = m.layer(l).num_params(); n > 0)
        groups.push_back({std::to_string(l) + ":" + m.layer(l).name(), m.param_offset(l), n});
  } else {
    groups.push_back({"all", 0, m.num_params()});
  }
  return groups;
}

/// The sum of `terms` (one per parameter) over each group.
template <Scalar T>
std::vector<T> sum_by_group(const Vector<T>& terms, const std::vector<ParameterGroup>& groups) {
  std::vector<T> out;
  out.reserve(groups.size());
  for (const ParameterGroup& g : groups) {
    CURVATURE_CHECK_SHAPE(g.offset >= 0 && g.size >= 0 && g.offset + g.size <= terms.size(), "sum_by_group: group '",
                          g.name, "' [", g.offset, ", ", g.offset + g.size, ") is outside ", terms.size(), " terms");
    out.push_back(terms.segment(g.offset, g.size).sum());
  }
  return out;
}

}  // namespace curvature
