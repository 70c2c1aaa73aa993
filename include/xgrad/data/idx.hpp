// Reading IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xgrad::data {

/// IDX magic numbers (big-endian in the file): unsigned bytes, 3 dimensions / 1 dimension.
constexpr std::uint32_t kIdxImagesMagic = 0x00000803;
constexpr std::uint32_t kIdxLabelsMagic = 0x00000801;

/// An IDX array of unsigned bytes: dimensions (outermost first) and the data, row-major.
struct IdxArray {
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> data;
};

/// The whole content of a file, gunzipped when it starts with the gzip magic bytes 1f 8b.
/// Throws xgrad::Error "idx: <path>: ..." when the file is missing or the gzip stream is corrupt
/// or truncated.
std::vector<std::uint8_t> read_file_maybe_gzip(const std::string& path);

/// Reads an IDX file of unsigned bytes and checks it: the magic number must be `expected_magic`
/// (0x00000803 for images, 0x00000801 for labels), no dimension may be 0, and the data after
/// the header must be exactly the product of the dimensions. Throws xgrad::Error naming the file
/// and the problem, e.g. "idx: /path/x.gz: truncated: header says 60000 images of 28x28
/// (47040000 bytes) but only 1000 bytes follow".
IdxArray read_idx(const std::string& path, std::uint32_t expected_magic);

/// read_idx(path, kIdxImagesMagic): dims [N, rows, cols].
IdxArray read_idx_images(const std::string& path);
/// read_idx(path, kIdxLabelsMagic): dims [N].
IdxArray read_idx_labels(const std::string& path);

}  // namespace xgrad::data
