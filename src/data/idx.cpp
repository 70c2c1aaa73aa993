#include "xgrad/data/idx.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include <zlib.h>

#include "xgrad/tensor.hpp"

namespace xgrad::data {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error("idx: " + path + ": " + what);
}

std::string dims_str(const std::vector<std::size_t>& dims, std::size_t from) {
  std::string s;
  for (std::size_t i = from; i < dims.size(); ++i)
    s += (i > from ? "x" : "") + std::to_string(dims[i]);
  return s;
}

// "60000 images of 28x28 (47040000 bytes)" / "60000 labels (60000 bytes)".
std::string describe(const std::vector<std::size_t>& dims, std::uint32_t magic, std::size_t bytes) {
  std::string s = std::to_string(dims.empty() ? 0 : dims[0]);
  if (magic == kIdxImagesMagic)
    s += " images of " + dims_str(dims, 1);
  else if (magic == kIdxLabelsMagic)
    s += " labels";
  else
    s = "dimensions " + dims_str(dims, 0);
  return s + " (" + std::to_string(bytes) + " bytes)";
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace

std::vector<std::uint8_t> read_file_maybe_gzip(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  unsigned char magic[2] = {0, 0};
  const std::size_t got = std::fread(magic, 1, 2, f.get());
  std::vector<std::uint8_t> out;
  if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    f.reset();
    gzFile gz = gzopen(path.c_str(), "rb");
    if (!gz) fail(path, "cannot open as gzip");
    std::unique_ptr<gzFile_s, int (*)(gzFile)> guard(gz, &gzclose);
    gzbuffer(gz, 1 << 17);
    std::vector<std::uint8_t> chunk(1 << 20);
    for (;;) {
      const int n = gzread(gz, chunk.data(), static_cast<unsigned>(chunk.size()));
      if (n < 0) {
        int code = 0;
        const char* msg = gzerror(gz, &code);
        fail(path, std::string("corrupt gzip data: ") + (msg ? msg : "unknown error"));
      }
      if (n == 0) break;
      out.insert(out.end(), chunk.begin(), chunk.begin() + n);
    }
    int code = 0;
    const char* msg = gzerror(gz, &code);
    if (code != Z_OK && code != Z_STREAM_END)
      fail(path, std::string("corrupt or truncated gzip data: ") + (msg ? msg : "unknown error"));
    return out;
  }
  out.assign(magic, magic + got);
  std::vector<std::uint8_t> chunk(1 << 20);
  for (;;) {
    const std::size_t n = std::fread(chunk.data(), 1, chunk.size(), f.get());
    out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
    if (n < chunk.size()) break;
  }
  if (std::ferror(f.get())) fail(path, std::string("read error: ") + std::strerror(errno));
  return out;
}

IdxArray read_idx(const std::string& path, std::uint32_t expected_magic) {
  const std::vector<std::uint8_t> bytes = read_file_maybe_gzip(path);
  if (bytes.size() < 4)
    fail(path, "truncated: " + std::to_string(bytes.size()) +
                   " bytes, too short for the 4-byte IDX magic number");
  auto be32 = [&](std::size_t at) {
    return (std::uint32_t(bytes[at]) << 24) | (std::uint32_t(bytes[at + 1]) << 16) |
           (std::uint32_t(bytes[at + 2]) << 8) | std::uint32_t(bytes[at + 3]);
  };
  const std::uint32_t magic = be32(0);
  if (magic != expected_magic) {
    const char* want = expected_magic == kIdxImagesMagic   ? " (uint8 images, 3 dimensions)"
                       : expected_magic == kIdxLabelsMagic ? " (uint8 labels, 1 dimension)"
                                                           : "";
    fail(path, "bad magic number " + hex32(magic) + ", expected " + hex32(expected_magic) + want);
  }
  const std::size_t rank = magic & 0xff;
  const std::size_t header = 4 + 4 * rank;
  if (bytes.size() < header)
    fail(path, "truncated: header needs " + std::to_string(header) + " bytes for " +
                   std::to_string(rank) + " dimensions but the file has " +
                   std::to_string(bytes.size()));
  IdxArray out;
  std::size_t count = 1;
  for (std::size_t d = 0; d < rank; ++d) {
    out.dims.push_back(be32(4 + 4 * d));
    if (out.dims.back() != 0 && count > (std::size_t(1) << 48) / out.dims.back())
      fail(path, "implausible dimensions " + dims_str(out.dims, 0) + " (more than 2^48 bytes)");
    count *= out.dims.back();
  }
  for (std::size_t d = 0; d < rank; ++d)
    if (out.dims[d] == 0)
      fail(path, "dimension " + std::to_string(d) + " is 0 (" + describe(out.dims, magic, 0) + ")");
  const std::size_t follow = bytes.size() - header;
  if (follow < count)
    fail(path, "truncated: header says " + describe(out.dims, magic, count) + " but only " +
                   std::to_string(follow) + " bytes follow");
  if (follow > count)
    fail(path, "count mismatch: header says " + describe(out.dims, magic, count) + " but " +
                   std::to_string(follow) + " bytes follow");
  out.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

IdxArray read_idx_images(const std::string& path) {
  return read_idx(path, kIdxImagesMagic);
}

IdxArray read_idx_labels(const std::string& path) {
  return read_idx(path, kIdxLabelsMagic);
}

}  // namespace xgrad::data
