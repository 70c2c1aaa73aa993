#include "xgrad/io/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "xgrad checkpoints write tensors in host byte order, which must be little-endian"
#endif

namespace xgrad::io {

namespace {

using json = nlohmann::json;

constexpr std::uint64_t kMaxHeader = 100ull << 20;  // as the reference implementation

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error("checkpoint: " + path + ": " + what);
}

std::string errno_str() {
  return std::strerror(errno);
}

std::string quoted(const std::string& name) {
  return "'" + name + "'";
}

// Checked product of a shape's dimensions times the element size; false on overflow.
bool byte_size(const Shape& shape, std::size_t elem, std::uint64_t& out) {
  std::uint64_t n = elem;
  for (std::size_t d : shape) {
    if (d != 0 && n > (~std::uint64_t(0)) / d) return false;
    n *= d;
  }
  out = n;
  return true;
}

std::string dirname_of(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

const char* dtype_name(DType dtype) {
  return dtype == DType::F32 ? "F32" : "F64";
}

std::size_t dtype_size(DType dtype) {
  return dtype == DType::F32 ? 4 : 8;
}

// ---- save -----------------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const std::vector<TensorView>& tensors,
                     const Metadata& metadata) {
  json header = json::object();
  std::set<std::string> names;
  std::vector<std::uint64_t> sizes;
  std::uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    if (t.name.empty()) fail(path, "a tensor has an empty name");
    if (t.name == "__metadata__") fail(path, "'__metadata__' is reserved and cannot name a tensor");
    if (!names.insert(t.name).second) fail(path, "duplicate tensor name " + quoted(t.name));
    std::uint64_t bytes = 0;
    if (!byte_size(t.shape, dtype_size(t.dtype), bytes))
      fail(path, "tensor " + quoted(t.name) + " shape " + shape_str(t.shape) + " is too large");
    if (bytes > 0 && t.data == nullptr) fail(path, "tensor " + quoted(t.name) + " has no data");
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, "cannot create " + tmp + ": " + errno_str());
  std::string error;
  auto put = [&](const void* data, std::size_t n) {
    if (error.empty() && n > 0 && std::fwrite(data, 1, n, f) != n)
      error = "write to " + tmp + " failed: " + errno_str();
  };
  put(len, 8);
  put(text.data(), text.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) put(tensors[i].data, sizes[i]);
  if (error.empty() && std::fflush(f) != 0) error = "flush of " + tmp + " failed: " + errno_str();
  if (error.empty() && ::fsync(::fileno(f)) != 0)
    error = "fsync of " + tmp + " failed: " + errno_str();
  if (std::fclose(f) != 0 && error.empty()) error = "close of " + tmp + " failed: " + errno_str();
  if (error.empty() && std::rename(tmp.c_str(), path.c_str()) != 0)
    error = "rename of " + tmp + " over the checkpoint failed: " + errno_str();
  if (!error.empty()) {
    std::remove(tmp.c_str());
    fail(path, error + " (the previous file, if any, is unchanged)");
  }
  // Make the rename itself durable. Best effort: some file systems refuse fsync on a directory.
  const int dir = ::open(dirname_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

template <class T>
void save_checkpoint(const std::string& path, const TensorRefs<T>& tensors,
                     const Metadata& metadata) {
  std::vector<TensorView> views;
  views.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t) fail(path, "tensor " + quoted(name) + " is a null pointer");
    views.push_back(view_of(name, *t));
  }
  save_checkpoint(path, views, metadata);
}

// ---- header ---------------------------------------------------------------------------------

const TensorEntry* CheckpointHeader::find(const std::string& name) const {
  for (const TensorEntry& e : tensors)
    if (e.name == name) return &e;
  return nullptr;
}

namespace {

// Opens `path` and parses its header; leaves the file open for reading the data.
CheckpointHeader parse_header(const std::string& path, FilePtr& file) {
  file.reset(std::fopen(path.c_str(), "rb"));
  if (!file) fail(path, "cannot open: " + errno_str());
  struct stat st;
  if (::fstat(::fileno(file.get()), &st) != 0) fail(path, "cannot stat: " + errno_str());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const std::uint64_t file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size < 8)
    fail(path, "truncated: " + std::to_string(file_size) +
                   " bytes, too short for the 8-byte header length");
  unsigned char len[8];
  if (std::fread(len, 1, 8, file.get()) != 8) fail(path, "read error: " + errno_str());
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > file_size - 8)
    fail(path, "corrupt or truncated: header length " + std::to_string(n) +
                   " goes beyond the file size " + std::to_string(file_size));
  if (n > kMaxHeader) fail(path, "header length " + std::to_string(n) + " is implausibly large");
  std::string text(n, '\0');
  if (n > 0 && std::fread(text.data(), 1, n, file.get()) != n)
    fail(path, "read error: " + errno_str());
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, std::string("bad JSON header: ") + e.what());
  }
  if (!header.is_object()) fail(path, "bad header: the JSON is not an object");

  CheckpointHeader out;
  out.data_start = 8 + n;
  const std::uint64_t data_size = file_size - out.data_start;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "bad header: __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(path, "bad header: __metadata__ value of " + quoted(m.key()) + " is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string who = "tensor " + quoted(name);
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      fail(path, "bad header: " + who + " needs dtype, shape and data_offsets");
    const json& dt = v["dtype"];
    if (!dt.is_string()) fail(path, "bad header: " + who + " dtype is not a string");
    TensorEntry e;
    e.name = name;
    const std::string dts = dt.get<std::string>();
    if (dts == "F32")
      e.dtype = DType::F32;
    else if (dts == "F64")
      e.dtype = DType::F64;
    else
      fail(path, who + " has unsupported dtype " + dts + " (supported: F32, F64)");
    const json& sh = v["shape"];
    if (!sh.is_array()) fail(path, "bad header: " + who + " shape is not an array");
    for (const json& d : sh) {
      if (!d.is_number_unsigned())
        fail(path, "bad header: " + who + " shape " + sh.dump() + " is not a list of sizes");
      e.shape.push_back(d.get<std::size_t>());
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      fail(path, "bad header: " + who + " data_offsets " + off.dump() + " is not [begin, end]");
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    const std::string range = "[" + std::to_string(e.begin) + "," + std::to_string(e.end) + "]";
    if (e.begin > e.end || e.end > data_size)
      fail(path, "corrupt or truncated: " + who + " data_offsets " + range +
                     " out of range for the " + std::to_string(data_size) + " data bytes");
    std::uint64_t bytes = 0;
    if (!byte_size(e.shape, dtype_size(e.dtype), bytes) || bytes != e.end - e.begin)
      fail(path, "corrupt: " + who + " data_offsets " + range + " hold " +
                     std::to_string(e.end - e.begin) + " bytes but " + dts + " " +
                     shape_str(e.shape) + " needs " + std::to_string(bytes));
    out.tensors.push_back(std::move(e));
  }
  std::stable_sort(out.tensors.begin(), out.tensors.end(),
                   [](const TensorEntry& a, const TensorEntry& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  std::uint64_t at = 0;
  for (const TensorEntry& e : out.tensors) {
    if (e.begin != at)
      fail(path, "corrupt: tensor " + quoted(e.name) + " starts at data offset " +
                     std::to_string(e.begin) + " but the previous tensor ends at " +
                     std::to_string(at) + " (gap or overlap)");
    at = e.end;
  }
  if (at != data_size)
    fail(path, "corrupt: " + std::to_string(data_size - at) +
                   " bytes after the last tensor's data (file has " + std::to_string(file_size) +
                   " bytes)");
  return out;
}

template <class T>
void read_tensor(const std::string& path, std::FILE* f, const CheckpointHeader& h,
                 const TensorEntry& e, Tensor<T>& out) {
  out = empty_tensor<T>(e.shape);
  const std::uint64_t bytes = e.end - e.begin;
  if (bytes == 0) return;
  if (::fseeko(f, static_cast<off_t>(h.data_start + e.begin), SEEK_SET) != 0 ||
      std::fread(out.data(), 1, bytes, f) != bytes)
    fail(path, "read error in tensor " + quoted(e.name) + " (file changed while reading?)");
}

}  // namespace

CheckpointHeader read_checkpoint_header(const std::string& path) {
  FilePtr f;
  return parse_header(path, f);
}

// ---- load -----------------------------------------------------------------------------------

template <class T>
bool Checkpoint<T>::contains(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return true;
  return false;
}

template <class T>
const Tensor<T>& Checkpoint<T>::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  throw Error("checkpoint: no tensor " + quoted(name));
}

template <class T>
Checkpoint<T> load_checkpoint(const std::string& path) {
  FilePtr f;
  const CheckpointHeader h = parse_header(path, f);
  Checkpoint<T> out;
  out.metadata = h.metadata;
  for (const TensorEntry& e : h.tensors)
    if (e.dtype != dtype_of<T>())
      fail(path, "tensor " + quoted(e.name) + " is " + dtype_name(e.dtype) + " but " +
                     dtype_name(dtype_of<T>()) + " was requested");
  out.tensors.reserve(h.tensors.size());
  for (const TensorEntry& e : h.tensors) {
    out.tensors.emplace_back(e.name, Tensor<T>());
    read_tensor(path, f.get(), h, e, out.tensors.back().second);
  }
  return out;
}

template <class T>
Metadata load_into(const std::string& path, const TensorDests<T>& destinations,
                   const LoadOptions& options) {
  FilePtr f;
  const CheckpointHeader h = parse_header(path, f);
  std::set<std::string> dest_names;
  std::vector<std::string> missing, unexpected;
  for (const auto& [name, t] : destinations) {
    if (!t) fail(path, "destination " + quoted(name) + " is a null pointer");
    if (!dest_names.insert(name).second) fail(path, "duplicate destination " + quoted(name));
    if (!h.find(name)) missing.push_back(name);
  }
  for (const TensorEntry& e : h.tensors)
    if (!dest_names.count(e.name)) unexpected.push_back(e.name);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + quoted(v[i]);
    return s;
  };
  std::string names_error;
  if (!missing.empty() && !options.allow_missing)
    names_error += "missing in the file: " + join(missing);
  if (!unexpected.empty() && !options.allow_unexpected)
    names_error += (names_error.empty() ? "" : "; ") + std::string("unexpected in the file: ") +
                   join(unexpected);
  if (!names_error.empty()) fail(path, names_error);
  // Check every dtype and shape before reading anything, then read into temporaries, then
  // assign: a failed load leaves all destinations untouched.
  for (const auto& [name, t] : destinations) {
    const TensorEntry* e = h.find(name);
    if (!e) continue;
    if (e->dtype != dtype_of<T>())
      fail(path, "tensor " + quoted(name) + " is " + dtype_name(e->dtype) +
                     " in the file but the destination is " + dtype_name(dtype_of<T>()));
    if (e->shape != shape_of(*t))
      fail(path, "tensor " + quoted(name) + " has shape " + shape_str(e->shape) +
                     " in the file but the destination has shape " + shape_str(*t));
  }
  std::vector<Tensor<T>> loaded(destinations.size());
  for (std::size_t i = 0; i < destinations.size(); ++i)
    if (const TensorEntry* e = h.find(destinations[i].first))
      read_tensor(path, f.get(), h, *e, loaded[i]);
  for (std::size_t i = 0; i < destinations.size(); ++i)
    if (h.find(destinations[i].first)) {
      Tensor<T>& d = *destinations[i].second;
      std::copy(loaded[i].data(), loaded[i].data() + loaded[i].size(), d.data());
    }
  return h.metadata;
}

#define XGRAD_IO_INSTANTIATE(T)                                                                \
  template void save_checkpoint<T>(const std::string&, const TensorRefs<T>&, const Metadata&); \
  template struct Checkpoint<T>;                                                               \
  template Checkpoint<T> load_checkpoint<T>(const std::string&);                               \
  template Metadata load_into<T>(const std::string&, const TensorDests<T>&, const LoadOptions&);
XGRAD_IO_INSTANTIATE(float)
XGRAD_IO_INSTANTIATE(double)

}  // namespace xgrad::io
