#define BOOST_TEST_MODULE data
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <xgrad/data/dataset.hpp>
#include <xgrad/data/idx.hpp>
#include <xgrad/data/loader.hpp>

using namespace xgrad;
using xgrad::testing::contains;
using xgrad::testing::error_of;
using namespace xgrad::data;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/xgrad_test_data_XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

void put_be32(std::vector<std::uint8_t>& b, std::uint32_t v) {
  b.push_back(v >> 24);
  b.push_back((v >> 16) & 0xff);
  b.push_back((v >> 8) & 0xff);
  b.push_back(v & 0xff);
}

// An IDX image file's bytes: pixel (i, r, c) = (7i + 3r + c) mod 256.
std::vector<std::uint8_t> idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w) {
  std::vector<std::uint8_t> b;
  put_be32(b, 0x00000803);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  for (std::uint32_t i = 0; i < n; ++i)
    for (std::uint32_t r = 0; r < h; ++r)
      for (std::uint32_t c = 0; c < w; ++c) b.push_back((7 * i + 3 * r + c) % 256);
  return b;
}

std::uint8_t pixel(std::size_t i, std::size_t r, std::size_t c) {
  return (7 * i + 3 * r + c) % 256;
}

// An IDX label file's bytes: label i = (3i + 1) mod 10.
std::vector<std::uint8_t> idx_labels(std::uint32_t n) {
  std::vector<std::uint8_t> b;
  put_be32(b, 0x00000801);
  put_be32(b, n);
  for (std::uint32_t i = 0; i < n; ++i) b.push_back((3 * i + 1) % 10);
  return b;
}

void write_raw(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  BOOST_REQUIRE(f);
  if (!bytes.empty())
    BOOST_REQUIRE_EQUAL(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile gz = gzopen(path.c_str(), "wb");
  BOOST_REQUIRE(gz);
  BOOST_REQUIRE_EQUAL(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())),
                      static_cast<int>(bytes.size()));
  BOOST_REQUIRE_EQUAL(gzclose(gz), Z_OK);
}

std::vector<std::uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}
// A 28x28 fixture dataset of n samples in `dir`, named like Fashion-MNIST's files.
void write_fashion_fixture(const std::string& dir, const std::string& prefix, std::uint32_t n) {
  write_gz(dir + "/" + prefix + "-images-idx3-ubyte.gz", idx_images(n, 28, 28));
  write_gz(dir + "/" + prefix + "-labels-idx1-ubyte.gz", idx_labels(n));
}

Dataset small_dataset(std::uint32_t n, std::uint32_t h = 28, std::uint32_t w = 28) {
  Tensor<std::uint8_t> imgs = empty_tensor<std::uint8_t>({n, h, w});
  std::vector<std::uint8_t> labels(n);
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = (3 * i + 1) % 10;
    for (std::size_t r = 0; r < h; ++r)
      for (std::size_t c = 0; c < w; ++c) imgs(i, r, c) = pixel(i, r, c);
  }
  return Dataset(std::move(imgs), std::move(labels), 10);
}

}  // namespace

// ---- IDX ------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(idx_raw_and_gzip_read_the_same) {
  TempDir d;
  write_raw(d.file("img"), idx_images(5, 4, 3));
  write_gz(d.file("img.gz"), idx_images(5, 4, 3));
  write_raw(d.file("lab"), idx_labels(5));
  write_gz(d.file("lab.gz"), idx_labels(5));
  // The gzip fixture really is compressed (starts with 1f 8b).
  const auto gzbytes = slurp(d.file("img.gz"));
  BOOST_REQUIRE(gzbytes.size() > 2);
  BOOST_TEST(gzbytes[0] == 0x1f);
  BOOST_TEST(gzbytes[1] == 0x8b);
  for (const char* name : {"img", "img.gz"}) {
    IdxArray a = read_idx_images(d.file(name));
    BOOST_TEST(a.dims == (std::vector<std::size_t>{5, 4, 3}), boost::test_tools::per_element());
    BOOST_REQUIRE_EQUAL(a.data.size(), 60u);
    for (std::size_t i = 0; i < 5; ++i)
      for (std::size_t r = 0; r < 4; ++r)
        for (std::size_t c = 0; c < 3; ++c)
          BOOST_TEST(a.data[i * 12 + r * 3 + c] == pixel(i, r, c));
  }
  for (const char* name : {"lab", "lab.gz"}) {
    IdxArray a = read_idx_labels(d.file(name));
    BOOST_TEST(a.dims == (std::vector<std::size_t>{5}), boost::test_tools::per_element());
    BOOST_TEST(a.data == (std::vector<std::uint8_t>{1, 4, 7, 0, 3}),
               boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(idx_missing_file) {
  TempDir d;
  const std::string p = d.file("nope.gz");
  const std::string e = error_of([&] { read_idx_images(p); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "idx: " + p + ": cannot open"));
}

BOOST_AUTO_TEST_CASE(idx_truncated_raw_and_gzip) {
  TempDir d;
  auto bytes = idx_images(60, 28, 28);
  bytes.resize(16 + 1000);  // header + 1000 bytes
  write_raw(d.file("t"), bytes);
  write_gz(d.file("t.gz"), bytes);
  for (const char* name : {"t", "t.gz"}) {
    const std::string e = error_of([&] { read_idx_images(d.file(name)); });
    BOOST_TEST_INFO(e);
    BOOST_TEST(e == "idx: " + d.file(name) +
                        ": truncated: header says 60 images of 28x28 (47040 bytes) but only 1000 "
                        "bytes follow");
  }
  auto lab = idx_labels(10);
  lab.resize(8 + 4);
  write_raw(d.file("l"), lab);
  const std::string e = error_of([&] { read_idx_labels(d.file("l")); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, d.file("l") + ": truncated: header says 10 labels (10 bytes) but only 4"));
  // Cut inside the header, and an empty file.
  bytes.resize(10);
  write_raw(d.file("h"), bytes);
  BOOST_TEST(
      contains(error_of([&] { read_idx_images(d.file("h")); }), "truncated: header needs 16"));
  write_raw(d.file("empty"), {});
  BOOST_TEST(contains(error_of([&] { read_idx_images(d.file("empty")); }), "truncated"));
}

BOOST_AUTO_TEST_CASE(idx_truncated_gzip_stream) {
  // A gzip file cut in the middle of its compressed stream is an error, not a short read.
  TempDir d;
  write_gz(d.file("full.gz"), idx_images(200, 28, 28));
  auto gz = slurp(d.file("full.gz"));
  gz.resize(gz.size() / 2);
  write_raw(d.file("cut.gz"), gz);
  const std::string e = error_of([&] { read_idx_images(d.file("cut.gz")); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "idx: " + d.file("cut.gz") + ": "));
  BOOST_TEST((contains(e, "truncated") || contains(e, "corrupt")));
}

BOOST_AUTO_TEST_CASE(idx_bad_magic) {
  TempDir d;
  write_gz(d.file("labels.gz"), idx_labels(4));
  const std::string e = error_of([&] { read_idx_images(d.file("labels.gz")); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(
      e, "idx: " + d.file("labels.gz") + ": bad magic number 0x00000801, expected 0x00000803"));
  std::vector<std::uint8_t> junk = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!'};
  write_raw(d.file("junk"), junk);
  BOOST_TEST(contains(error_of([&] { read_idx_labels(d.file("junk")); }), "bad magic number"));
}

BOOST_AUTO_TEST_CASE(idx_count_mismatch_and_zero_dimension) {
  TempDir d;
  auto bytes = idx_images(3, 4, 4);
  bytes.push_back(9);  // one byte more than the header says
  write_raw(d.file("extra"), bytes);
  const std::string e = error_of([&] { read_idx_images(d.file("extra")); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(e == "idx: " + d.file("extra") +
                      ": count mismatch: header says 3 images of 4x4 (48 bytes) but 49 bytes "
                      "follow");
  write_raw(d.file("zero"), idx_images(0, 4, 4));
  BOOST_TEST(contains(error_of([&] { read_idx_images(d.file("zero")); }), "dimension 0 is 0"));
}

// ---- Dataset & Fashion-MNIST loading --------------------------------------------------------

BOOST_AUTO_TEST_CASE(fashion_loader_on_fixture) {
  TempDir d;
  write_fashion_fixture(d.path, "train", 50);
  write_fashion_fixture(d.path, "t10k", 20);
  Dataset train = load_fashion_mnist(d.path, true);
  Dataset test = load_fashion_mnist(d.path, false);
  BOOST_TEST(train.size() == 50u);
  BOOST_TEST(test.size() == 20u);
  BOOST_TEST(train.rows() == 28u);
  BOOST_TEST(train.cols() == 28u);
  BOOST_TEST(shape_of(train.images()) == (Shape{50, 28, 28}), boost::test_tools::per_element());
  BOOST_TEST(train.image(3)[2 * 28 + 5] == pixel(3, 2, 5));
  BOOST_TEST(train.label(7) == (3 * 7 + 1) % 10);
  BOOST_TEST(train.class_names().size() == 10u);
  BOOST_TEST(fashion_mnist_classes()[0] == "T-shirt/top");
  BOOST_TEST(fashion_mnist_classes()[9] == "Ankle boot");
  BOOST_CHECK_THROW(train.image(50), Error);
}

BOOST_AUTO_TEST_CASE(fashion_loader_errors) {
  TempDir d;
  // Missing files name the path.
  std::string e = error_of([&] { load_fashion_mnist(d.path, true); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, d.path + "/train-images-idx3-ubyte.gz"));
  // Image and label counts differ.
  write_gz(d.file("train-images-idx3-ubyte.gz"), idx_images(5, 28, 28));
  write_gz(d.file("train-labels-idx1-ubyte.gz"), idx_labels(4));
  e = error_of([&] { load_fashion_mnist(d.path, true); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "count mismatch"));
  BOOST_TEST(contains(e, "5 images"));
  BOOST_TEST(contains(e, "4 labels"));
  // A label out of range.
  auto lab = idx_labels(5);
  lab.back() = 10;
  write_gz(d.file("train-labels-idx1-ubyte.gz"), lab);
  e = error_of([&] { load_fashion_mnist(d.path, true); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "label 10 of sample 4"));
  // Not 28x28.
  write_gz(d.file("train-images-idx3-ubyte.gz"), idx_images(5, 8, 8));
  BOOST_TEST(contains(error_of([&] { load_fashion_mnist(d.path, true); }), "expected 28x28"));
  // Uncompressed files are used when the .gz is absent.
  write_raw(d.file("t10k-images-idx3-ubyte"), idx_images(3, 28, 28));
  write_raw(d.file("t10k-labels-idx1-ubyte"), idx_labels(3));
  BOOST_TEST(load_fashion_mnist(d.path, false).size() == 3u);
}

BOOST_AUTO_TEST_CASE(dataset_subset_limit_split) {
  Dataset ds = small_dataset(30, 4, 4);
  Dataset lim = ds.limit(7);
  BOOST_TEST(lim.size() == 7u);
  BOOST_TEST(lim.image(6)[5] == ds.image(6)[5]);
  BOOST_TEST(ds.limit(100).size() == 30u);
  Dataset sub = ds.subset({5, 2, 5});
  BOOST_TEST(sub.size() == 3u);
  BOOST_TEST(sub.label(0) == ds.label(5));
  BOOST_TEST(sub.image(1)[3] == ds.image(2)[3]);
  BOOST_CHECK_THROW(ds.subset({30}), Error);

  auto [train, val] = ds.split(8, 42);
  BOOST_TEST(train.size() == 22u);
  BOOST_TEST(val.size() == 8u);
  // Identify samples by their first pixel (7i mod 256 is distinct for i < 30).
  auto ids = [](const Dataset& d) {
    std::vector<int> v;
    for (std::size_t i = 0; i < d.size(); ++i) v.push_back(d.image(i)[0]);
    return v;
  };
  std::set<int> all;
  for (int id : ids(train)) all.insert(id);
  for (int id : ids(val)) BOOST_TEST(all.insert(id).second);  // disjoint
  BOOST_TEST(all.size() == 30u);
  auto [train2, val2] = ds.split(8, 42);
  BOOST_TEST(ids(val2) == ids(val), boost::test_tools::per_element());
  auto [train3, val3] = ds.split(8, 43);
  BOOST_TEST(ids(val3) != ids(val));
  BOOST_CHECK_THROW(ds.split(31, 1), Error);
}

BOOST_AUTO_TEST_CASE(dataset_rejects_bad_input) {
  BOOST_CHECK_THROW(Dataset(empty_tensor<std::uint8_t>({3, 2, 2}), {0, 1}, 10), Error);
  BOOST_CHECK_THROW(Dataset(filled_tensor<std::uint8_t>({2, 2, 2}, 0), {0, 12}, 10), Error);
  BOOST_CHECK_THROW(Dataset(empty_tensor<std::uint8_t>({2, 4}), {0, 1}, 10), Error);
}

// ---- DataLoader -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(loader_covers_every_sample_once_per_epoch) {
  Dataset ds = small_dataset(103, 5, 5);
  LoaderOptions o;
  o.batch_size = 10;
  o.seed = 7;
  DataLoader<float> loader(ds, o);
  BOOST_TEST(loader.num_batches() == 11u);
  std::vector<std::vector<std::size_t>> orders;
  for (std::size_t e = 0; e < 3; ++e) {
    std::vector<int> seen(103, 0);
    std::vector<std::size_t> order;
    std::size_t batches = 0;
    for (const Batch<float>& b : loader.epoch(e)) {
      ++batches;
      BOOST_TEST(b.size() == (batches == 11 ? 3u : 10u));
      BOOST_TEST(shape_of(b.images) == (Shape{b.size(), 1, 5, 5}),
                 boost::test_tools::per_element());
      for (std::size_t k = 0; k < b.size(); ++k) {
        ++seen[b.indices[k]];
        order.push_back(b.indices[k]);
        BOOST_TEST(b.labels[k] == int(ds.label(b.indices[k])));
      }
    }
    BOOST_TEST(batches == 11u);
    for (int s : seen) BOOST_TEST(s == 1);
    orders.push_back(order);
  }
  // Shuffled (not the identity) and different per epoch.
  std::vector<std::size_t> identity(103);
  for (std::size_t i = 0; i < 103; ++i) identity[i] = i;
  BOOST_TEST(orders[0] != identity);
  BOOST_TEST(orders[0] != orders[1]);
  BOOST_TEST(orders[1] != orders[2]);
  // The epoch's order is what order() says, and is reproducible.
  BOOST_TEST(orders[1] == loader.order(1), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(loader_shuffle_depends_on_seed) {
  Dataset ds = small_dataset(50, 2, 2);
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 1;
  DataLoader<float> a(ds, o), b(ds, o);
  o.seed = 2;
  DataLoader<float> c(ds, o);
  BOOST_TEST(a.order(0) == b.order(0), boost::test_tools::per_element());
  BOOST_TEST(a.order(3) == b.order(3), boost::test_tools::per_element());
  BOOST_TEST(a.order(0) != c.order(0));
  o.shuffle = false;
  DataLoader<float> plain(ds, o);
  for (std::size_t e = 0; e < 2; ++e) {
    const auto ord = plain.order(e);
    for (std::size_t i = 0; i < ord.size(); ++i) BOOST_TEST(ord[i] == i);
  }
}

BOOST_AUTO_TEST_CASE(loader_drop_last) {
  Dataset ds = small_dataset(23, 2, 2);
  LoaderOptions o;
  o.batch_size = 5;
  o.drop_last = true;
  DataLoader<double> loader(ds, o);
  BOOST_TEST(loader.num_batches() == 4u);
  BOOST_TEST(loader.num_samples() == 20u);
  std::set<std::size_t> seen;
  std::size_t n = 0;
  for (const auto& b : loader.epoch(0)) {
    BOOST_TEST(b.size() == 5u);
    for (std::size_t i : b.indices) seen.insert(i);
    ++n;
  }
  BOOST_TEST(n == 4u);
  BOOST_TEST(seen.size() == 20u);  // no repeats
  o.drop_last = false;
  BOOST_TEST(DataLoader<double>(ds, o).num_batches() == 5u);
  o.batch_size = 0;
  BOOST_CHECK_THROW(DataLoader<double>(ds, o), Error);
}

BOOST_AUTO_TEST_CASE(loader_normalisation_values) {
  Dataset ds = small_dataset(4, 3, 3);
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.mean = 0.2860;
  o.std = 0.3530;
  DataLoader<double> loader(ds, o);
  const Batch<double> b = loader.epoch(0)[0];
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t r = 0; r < 3; ++r)
      for (std::size_t c = 0; c < 3; ++c) {
        const double want = (pixel(i, r, c) / 255.0 - 0.2860) / 0.3530;
        BOOST_TEST(b.images(i, 0, r, c) == want, boost::test_tools::tolerance(1e-12));
      }
  // Pixel 0 → -mean/std, pixel 255 → (1-mean)/std, in float too.
  Tensor<std::uint8_t> img = empty_tensor<std::uint8_t>({1, 1, 2});
  img(0, 0, 0) = 0;
  img(0, 0, 1) = 255;
  DataLoader<float> lf(Dataset(img, {3}, 10), o);
  const Batch<float> bf = lf.epoch(0)[0];
  BOOST_TEST(bf.images(0, 0, 0, 0) == float(-0.2860 / 0.3530), boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(bf.images(0, 0, 0, 1) == float((1 - 0.2860) / 0.3530),
             boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(bf.labels[0] == 3);
  BOOST_CHECK_THROW(lf.epoch(0)[1], Error);
}

BOOST_AUTO_TEST_CASE(crop_flip_by_hand) {
  // 3x3 image 1..9, pad 1.
  const std::uint8_t in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::uint8_t out[9];
  crop_flip(in, 3, 3, 1, 1, 1, false, out);  // centre crop: identity
  BOOST_TEST(std::vector<int>(out, out + 9) == (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}),
             boost::test_tools::per_element());
  crop_flip(in, 3, 3, 1, 0, 0, false, out);  // shifted down-right, zeros enter top-left
  BOOST_TEST(std::vector<int>(out, out + 9) == (std::vector<int>{0, 0, 0, 0, 1, 2, 0, 4, 5}),
             boost::test_tools::per_element());
  crop_flip(in, 3, 3, 1, 2, 1, false, out);  // shifted up
  BOOST_TEST(std::vector<int>(out, out + 9) == (std::vector<int>{4, 5, 6, 7, 8, 9, 0, 0, 0}),
             boost::test_tools::per_element());
  crop_flip(in, 3, 3, 0, 0, 0, true, out);  // mirror
  BOOST_TEST(std::vector<int>(out, out + 9) == (std::vector<int>{3, 2, 1, 6, 5, 4, 9, 8, 7}),
             boost::test_tools::per_element());
  crop_flip(in, 3, 3, 1, 1, 2, true, out);  // crop shifted left in padded space, then mirrored
  BOOST_TEST(std::vector<int>(out, out + 9) == (std::vector<int>{0, 3, 2, 0, 6, 5, 0, 9, 8}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(augmentation_shape_determinism_and_content) {
  Dataset ds = small_dataset(40);
  LoaderOptions o;
  o.batch_size = 16;
  o.seed = 5;
  o.augment.pad = 4;
  o.augment.hflip = true;
  DataLoader<float> a(ds, o), b(ds, o);
  o.seed = 6;
  DataLoader<float> c(ds, o);
  const Batch<float> ba = a.epoch(2)[1], bb = b.epoch(2)[1];
  BOOST_TEST(shape_of(ba.images) == (Shape{16, 1, 28, 28}), boost::test_tools::per_element());
  BOOST_TEST(ba.indices == bb.indices, boost::test_tools::per_element());
  bool same = true;
  for (std::size_t k = 0; k < ba.images.size(); ++k)
    same &= ba.images.data()[k] == bb.images.data()[k];
  BOOST_TEST(same);
  // Augmentation depends on (seed, epoch, index), not on the batch position: the same sample in
  // a different seed's loader is (almost surely) augmented differently somewhere in the set.
  const std::vector<std::size_t> all = [] {
    std::vector<std::size_t> v(40);
    for (std::size_t i = 0; i < 40; ++i) v[i] = i;
    return v;
  }();
  const Batch<float> xa = a.make_batch(all, 0), xc = c.make_batch(all, 0),
                     xa1 = a.make_batch(all, 1);
  bool differs_seed = false, differs_epoch = false;
  for (std::size_t k = 0; k < xa.images.size(); ++k) {
    differs_seed |= xa.images.data()[k] != xc.images.data()[k];
    differs_epoch |= xa.images.data()[k] != xa1.images.data()[k];
  }
  BOOST_TEST(differs_seed);
  BOOST_TEST(differs_epoch);
  // Each augmented image equals crop_flip of the original for some offset and flip, and both
  // flipped and unflipped, shifted and unshifted images occur.
  int flipped = 0, shifted = 0;
  for (std::size_t i = 0; i < 40; ++i) {
    bool found = false;
    for (std::size_t dy = 0; dy <= 8 && !found; ++dy)
      for (std::size_t dx = 0; dx <= 8 && !found; ++dx)
        for (int f = 0; f < 2 && !found; ++f) {
          std::uint8_t want[28 * 28];
          crop_flip(ds.image(i), 28, 28, 4, dy, dx, f == 1, want);
          bool eq = true;
          for (std::size_t p = 0; p < 28 * 28 && eq; ++p)
            eq = xa.images.data()[i * 784 + p] == float(want[p] / 255.0);
          if (eq) {
            found = true;
            flipped += f;
            shifted += (dy != 4 || dx != 4);
          }
        }
    BOOST_TEST(found, "sample " << i);
  }
  BOOST_TEST(flipped > 0);
  BOOST_TEST(flipped < 40);
  BOOST_TEST(shifted > 0);
  o.augment.pad = 9;
  BOOST_CHECK_THROW(DataLoader<float>(ds, o), Error);
}

BOOST_AUTO_TEST_CASE(real_fashion_mnist_if_installed) {
  const std::string dir = default_fashion_mnist_dir();
  BOOST_TEST(dir == "/usr/share/datasets/fashion-mnist");
  struct stat st;
  if (::stat((dir + "/train-images-idx3-ubyte.gz").c_str(), &st) != 0) {
    BOOST_TEST_MESSAGE("skipped: " << dir
                                   << " not installed (apt-get install dataset-fashion-mnist)");
    return;
  }
  for (bool train : {true, false}) {
    Dataset ds = load_fashion_mnist(dir, train);
    BOOST_TEST(ds.size() == (train ? 60000u : 10000u));
    BOOST_TEST(ds.rows() == 28u);
    BOOST_TEST(ds.cols() == 28u);
    std::vector<std::size_t> per_class(10, 0);
    for (std::uint8_t l : ds.labels()) {
      BOOST_REQUIRE(l < 10);
      ++per_class[l];
    }
    // Fashion-MNIST is balanced: 6000 / 1000 images per class.
    for (std::size_t n : per_class) BOOST_TEST(n == (train ? 6000u : 1000u));
    if (train) {
      // The training mean pixel is about 0.2860 (the usual normalisation constant).
      double s = 0;
      for (std::size_t k = 0; k < ds.images().size(); ++k) s += ds.images().data()[k];
      BOOST_TEST(s / ds.images().size() / 255.0 == 0.2860, boost::test_tools::tolerance(1e-3));
      DataLoader<float> loader(ds.limit(256), LoaderOptions::fashion_mnist(64, 0));
      BOOST_TEST(loader.num_batches() == 4u);
      BOOST_TEST(shape_of(loader.epoch(0)[0].images) == (Shape{64, 1, 28, 28}),
                 boost::test_tools::per_element());
    }
  }
}
