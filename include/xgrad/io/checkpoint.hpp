// Checkpoints in the safetensors format, written atomically.
//
// File layout (https://github.com/huggingface/safetensors):
//   8 bytes   little-endian uint64 N, the header length
//   N bytes   UTF-8 JSON: {"<name>": {"dtype": "F32"|"F64", "shape": [...],
//                                     "data_offsets": [begin, end]}, ...,
//                          "__metadata__": {"<key>": "<value>", ...}}
//             padded with spaces to a multiple of 8 bytes
//   the data  raw little-endian row-major tensors; offsets are relative to the data's start, and
//             the tensors tile it with no gap or overlap.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.hpp"
#include "xgrad/variable.hpp"

namespace xgrad::io {

enum class DType { F32, F64 };

/// "F32" / "F64".
const char* dtype_name(DType dtype);
/// 4 / 8.
std::size_t dtype_size(DType dtype);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::F64;
}

using Metadata = std::map<std::string, std::string>;

/// Named tensors to save (the pointers must stay valid during the call).
template <class T>
using TensorRefs = std::vector<std::pair<std::string, const Tensor<T>*>>;
/// Named destinations to load into.
template <class T>
using TensorDests = std::vector<std::pair<std::string, Tensor<T>*>>;

/// Builds TensorRefs from named tensors (optimiser state), named Variables (their values: model
/// parameters) or named tensor pointers (buffers), optionally prefixing every name. The sources
/// must outlive the refs.
template <class T>
TensorRefs<T> tensor_refs(const std::vector<std::pair<std::string, Tensor<T>>>& named,
                          const std::string& prefix = {}) {
  TensorRefs<T> out;
  for (const auto& [name, t] : named) out.emplace_back(prefix + name, &t);
  return out;
}
template <class T>
TensorRefs<T> tensor_refs(const std::vector<std::pair<std::string, Variable<T>>>& named,
                          const std::string& prefix = {}) {
  TensorRefs<T> out;
  for (const auto& [name, v] : named) out.emplace_back(prefix + name, &v.value());
  return out;
}
template <class T>
TensorRefs<T> tensor_refs(const std::vector<std::pair<std::string, Tensor<T>*>>& named,
                          const std::string& prefix = {}) {
  TensorRefs<T> out;
  for (const auto& [name, t] : named) out.emplace_back(prefix + name, t);
  return out;
}

/// Destinations for load_into from named Variables: their values, updated in place (graphs and
/// optimisers holding the Variables see the loaded values).
template <class T>
TensorDests<T> tensor_dests(const std::vector<std::pair<std::string, Variable<T>>>& named,
                            const std::string& prefix = {}) {
  TensorDests<T> out;
  for (const auto& [name, v] : named) {
    Variable<T> handle = v;  // shares the value
    out.emplace_back(prefix + name, &handle.mutable_value());
  }
  return out;
}

/// A tensor of either dtype, by reference: lets one file hold float and double tensors.
struct TensorView {
  std::string name;
  DType dtype;
  Shape shape;
  const void* data;  ///< shape_numel(shape) contiguous elements of dtype
};

template <class T>
TensorView view_of(std::string name, const Tensor<T>& t) {
  return TensorView{std::move(name), dtype_of<T>(), shape_of(t), t.data()};
}

/// Saves tensors and string metadata to `path`, atomically: the file is written to
/// "<path>.tmp", flushed and fsync'ed, renamed over `path`, and the directory is fsync'ed. On any
/// failure the tmp file is removed, `path` is left as it was, and xgrad::Error names the file and
/// the cause. Throws (before writing) on an empty or duplicate name, the name "__metadata__", or
/// a null data pointer.
void save_checkpoint(const std::string& path, const std::vector<TensorView>& tensors,
                     const Metadata& metadata = {});
template <class T>
void save_checkpoint(const std::string& path, const TensorRefs<T>& tensors,
                     const Metadata& metadata = {});

/// One tensor's header entry.
struct TensorEntry {
  std::string name;
  DType dtype;
  Shape shape;
  std::uint64_t begin, end;  ///< byte offsets in the data section
};

/// A checkpoint's parsed and validated header: tensors in file (offset) order.
struct CheckpointHeader {
  std::vector<TensorEntry> tensors;
  Metadata metadata;
  std::uint64_t data_start = 0;  ///< 8 + header length
  const TensorEntry* find(const std::string& name) const;
};

/// Reads and validates the header. Throws xgrad::Error "checkpoint: <path>: ..." on a missing
/// file, a file shorter than 8 bytes, a header length beyond the file, bad JSON, a malformed
/// entry, an unsupported dtype, data offsets out of range or inconsistent with the shape, and
/// offsets that overlap, leave gaps, or leave bytes after the last tensor.
CheckpointHeader read_checkpoint_header(const std::string& path);

/// Loaded tensors (file order) and metadata.
template <class T>
struct Checkpoint {
  std::vector<std::pair<std::string, Tensor<T>>> tensors;
  Metadata metadata;
  bool contains(const std::string& name) const;
  /// Throws xgrad::Error naming the tensor when absent.
  const Tensor<T>& at(const std::string& name) const;
};

/// Loads every tensor as T. Throws like read_checkpoint_header, and naming the tensor when one
/// is not of dtype T (no silent conversion).
template <class T>
Checkpoint<T> load_checkpoint(const std::string& path);

struct LoadOptions {
  bool allow_missing = false;     ///< destinations absent from the file keep their values
  bool allow_unexpected = false;  ///< file tensors without a destination are ignored
};

/// Loads the file's tensors into existing destinations with the same names. Every check is done
/// before any destination is written, so a failed load changes nothing: names (lists all missing
/// and unexpected ones), dtypes, and shapes ("tensor 'fc.weight' has shape [10,84] in the file
/// but the destination has shape [10,120]"). Returns the metadata.
template <class T>
Metadata load_into(const std::string& path, const TensorDests<T>& destinations,
                   const LoadOptions& options = {});

}  // namespace xgrad::io
