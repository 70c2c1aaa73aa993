#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <xgrad/io/checkpoint.hpp>
#include <xgrad/ops.hpp>
#include <xgrad/optim/optimizer.hpp>

using namespace xgrad;
using xgrad::testing::contains;
using xgrad::testing::error_of;
using namespace xgrad::io;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/xgrad_test_ckpt_XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    ::chmod(path.c_str(), 0700);
    std::system(("rm -rf '" + path + "'").c_str());
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}
template <class T>
Tensor<T> ramp(const Shape& shape, double start, double step) {
  Tensor<T> t = empty_tensor<T>(shape);
  for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<T>(start + step * i);
  return t;
}

template <class T>
bool same(const Tensor<T>& a, const Tensor<T>& b) {
  if (shape_of(a) != shape_of(b)) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a.data()[i] != b.data()[i]) return false;
  return true;
}

// A hand-made file: 8-byte length, the header text as given, then `data`.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::string float_bytes(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_float_and_double) {
  TempDir d;
  const Tensor<float> w = ramp<float>({3, 2, 2}, -1.5, 0.25);
  const Tensor<float> b = ramp<float>({4}, 0.1, 1.0 / 3.0);
  Tensor<float> s = empty_tensor<float>(Shape{});
  *s.data() = 7.0f;
  const Tensor<float> none = empty_tensor<float>({0, 3});
  const Metadata meta = {{"epoch", "12"}, {"model", "lenet5"}, {"note", "ünïcødé \"q\""}};
  save_checkpoint<float>(d.file("f.safetensors"),
                         {{"conv1.weight", &w}, {"conv1.bias", &b}, {"step", &s}, {"empty", &none}},
                         meta);
  const Checkpoint<float> c = load_checkpoint<float>(d.file("f.safetensors"));
  BOOST_TEST(c.tensors.size() == 4u);
  BOOST_TEST(same(c.at("conv1.weight"), w));
  BOOST_TEST(same(c.at("conv1.bias"), b));
  BOOST_TEST(same(c.at("step"), s));
  BOOST_TEST(shape_of(c.at("step")).empty());
  BOOST_TEST(shape_of(c.at("empty")) == (Shape{0, 3}), boost::test_tools::per_element());
  BOOST_TEST(c.metadata == meta);
  BOOST_TEST(c.metadata.at("epoch") == "12");
  BOOST_CHECK_THROW(c.at("nope"), Error);
  // The file order follows the save order (data offsets).
  BOOST_TEST(c.tensors[0].first == "conv1.weight");
  BOOST_TEST(c.tensors[1].first == "conv1.bias");

  const Tensor<double> dw = ramp<double>({2, 5}, 1e-300, 0.1);
  save_checkpoint<double>(d.file("d.safetensors"), {{"w", &dw}}, {{"epoch", "3"}});
  const Checkpoint<double> cd = load_checkpoint<double>(d.file("d.safetensors"));
  BOOST_TEST(same(cd.at("w"), dw));
  BOOST_TEST(cd.metadata.at("epoch") == "3");

  // Header facts: 8-byte aligned data, dtypes, offsets.
  const CheckpointHeader h = read_checkpoint_header(d.file("f.safetensors"));
  BOOST_TEST(h.data_start % 8 == 0u);
  BOOST_REQUIRE(h.find("conv1.bias"));
  BOOST_TEST(std::string(dtype_name(h.find("conv1.bias")->dtype)) == dtype_name(DType::F32));
  BOOST_TEST(h.find("conv1.bias")->begin == 48u);
  BOOST_TEST(h.find("conv1.bias")->end == 64u);
  const std::string bytes = slurp(d.file("f.safetensors"));
  BOOST_TEST(bytes.size() == h.data_start + 4 * (12 + 4 + 1));
  // No tmp file is left behind.
  BOOST_TEST(!exists(d.file("f.safetensors.tmp")));
}

BOOST_AUTO_TEST_CASE(mixed_dtypes_in_one_file) {
  TempDir d;
  const Tensor<float> a = ramp<float>({2}, 1, 1);
  const Tensor<double> b = ramp<double>({3}, 0.5, 0.5);
  save_checkpoint(d.file("m"), {view_of("a", a), view_of("b", b)});
  const CheckpointHeader h = read_checkpoint_header(d.file("m"));
  BOOST_TEST(std::string(dtype_name(h.find("a")->dtype)) == dtype_name(DType::F32));
  BOOST_TEST(std::string(dtype_name(h.find("b")->dtype)) == dtype_name(DType::F64));
  BOOST_TEST(h.metadata.empty());
  const std::string e = error_of([&] { load_checkpoint<float>(d.file("m")); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "tensor 'b' is F64 but F32 was requested"));
  Tensor<double> bd = filled_tensor<double>({3}, 0.0);
  load_into<double>(d.file("m"), {{"b", &bd}}, LoadOptions{false, true});
  BOOST_TEST(same(bd, b));
}

BOOST_AUTO_TEST_CASE(save_rejects_bad_names) {
  TempDir d;
  const Tensor<float> a = ramp<float>({2}, 1, 1);
  BOOST_TEST(contains(error_of([&] {
                        save_checkpoint<float>(d.file("x"), {{"a", &a}, {"a", &a}});
                      }),
                      "duplicate tensor name 'a'"));
  BOOST_CHECK_THROW(save_checkpoint<float>(d.file("x"), {{"", &a}}), Error);
  BOOST_CHECK_THROW(save_checkpoint<float>(d.file("x"), {{"__metadata__", &a}}), Error);
  BOOST_CHECK_THROW(save_checkpoint<float>(d.file("x"), {{"a", nullptr}}), Error);
  BOOST_TEST(!exists(d.file("x")));
  BOOST_TEST(!exists(d.file("x.tmp")));
}

BOOST_AUTO_TEST_CASE(load_into_checks_names_shapes_dtypes) {
  TempDir d;
  const std::string p = d.file("model.safetensors");
  const Tensor<float> w = ramp<float>({10, 84}, 0, 0.01), b = ramp<float>({10}, 1, 1);
  save_checkpoint<float>(p, {{"fc.weight", &w}, {"fc.bias", &b}}, {{"epoch", "4"}});

  Tensor<float> w2 = filled_tensor<float>({10, 84}, 0.0f), b2 = filled_tensor<float>({10}, 0.0f);
  const float* w2_memory = w2.data();
  const Metadata m = load_into<float>(p, {{"fc.weight", &w2}, {"fc.bias", &b2}});
  BOOST_TEST(same(w2, w));
  BOOST_TEST(same(b2, b));
  BOOST_TEST(w2.data() == w2_memory);  // loaded in place
  BOOST_TEST(m.at("epoch") == "4");

  // Shape mismatch names the tensor and both shapes, and changes nothing.
  Tensor<float> wbad = filled_tensor<float>({10, 120}, -1.0f);
  Tensor<float> b3 = filled_tensor<float>({10}, -1.0f);
  std::string e = error_of([&] { load_into<float>(p, {{"fc.bias", &b3}, {"fc.weight", &wbad}}); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(e == "checkpoint: " + p +
                      ": tensor 'fc.weight' has shape [10,84] in the file but the destination "
                      "has shape [10,120]");
  BOOST_TEST(b3(0) == -1.0f);  // not half-loaded

  // Missing and unexpected names are all listed.
  Tensor<float> extra = filled_tensor<float>({1}, 0.0f);
  e = error_of([&] { load_into<float>(p, {{"fc.weight", &w2}, {"conv.weight", &extra}}); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, p));
  BOOST_TEST(contains(e, "missing in the file: 'conv.weight'"));
  BOOST_TEST(contains(e, "unexpected in the file: 'fc.bias'"));
  // ... unless allowed.
  load_into<float>(p, {{"fc.weight", &w2}, {"conv.weight", &extra}}, LoadOptions{true, true});
  BOOST_TEST(extra(0) == 0.0f);

  // Dtype mismatch.
  Tensor<double> wd = filled_tensor<double>({10, 84}, 0.0), bd = filled_tensor<double>({10}, 0.0);
  e = error_of([&] { load_into<double>(p, {{"fc.weight", &wd}, {"fc.bias", &bd}}); });
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "tensor 'fc.weight' is F32 in the file but the destination is F64"));
}

BOOST_AUTO_TEST_CASE(corrupt_and_truncated_files) {
  TempDir d;
  const std::string good_header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"epoch":"1"}})";
  const std::string data = float_bytes({1.5f, -2.0f});
  // The hand-made file itself is valid.
  spit(d.file("ok"), raw_file(good_header, data));
  const Checkpoint<float> ok = load_checkpoint<float>(d.file("ok"));
  BOOST_TEST(ok.at("a")(1) == -2.0f);
  BOOST_TEST(ok.metadata.at("epoch") == "1");

  auto expect = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    const std::string p = d.file(name);
    spit(p, bytes);
    const std::string e = error_of([&] { load_checkpoint<float>(p); });
    BOOST_TEST_INFO(name << ": " << e);
    BOOST_TEST(contains(e, "checkpoint: " + p + ": "));
    BOOST_TEST(contains(e, needle));
  };
  expect("short", "abc", "too short for the 8-byte header length");
  expect("empty", "", "too short");
  std::string huge_len = raw_file(good_header, data);
  huge_len[5] = 1;  // header length now about 2^40
  expect("hlen", huge_len, "goes beyond the file size");
  expect("cut_header", raw_file(good_header, data).substr(0, 30), "goes beyond the file size");
  expect("cut_data", raw_file(good_header, data).substr(0, 8 + good_header.size() + 5),
         "data_offsets [0,8] out of range for the 5 data bytes");
  expect("json", raw_file(R"({"a":{"dtype":"F32",)", data), "bad JSON header");
  expect("notobj", raw_file("[1,2]", ""), "not an object");
  expect("range", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", data),
         "out of range");
  expect("size", raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
         "hold 8 bytes but F32 [3] needs 12");
  expect("gap", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data),
         "gap or overlap");
  expect("trailing", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data),
         "4 bytes after the last tensor");
  expect("dtype", raw_file(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", data),
         "unsupported dtype I64");
  expect("fields", raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", data), "needs dtype, shape");
  expect("meta", raw_file(R"({"__metadata__":{"epoch":3}})", ""), "is not a string");
  expect("negshape", raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
         "not a list of sizes");
  const std::string missing = d.file("does_not_exist.safetensors");
  const std::string e = error_of([&] { load_checkpoint<float>(missing); });
  BOOST_TEST(contains(e, "checkpoint: " + missing + ": cannot open"));
  Tensor<float> dst = filled_tensor<float>({2}, 0.0f);
  BOOST_CHECK_THROW(load_into<float>(d.file("json"), {{"a", &dst}}), Error);
}

BOOST_AUTO_TEST_CASE(failed_save_midway_keeps_previous_file) {
  TempDir d;
  const std::string p = d.file("ckpt.safetensors");
  const Tensor<float> small = ramp<float>({16}, 0, 1);
  save_checkpoint<float>(p, {{"w", &small}}, {{"epoch", "1"}});
  const std::string before = slurp(p);
  BOOST_REQUIRE(!before.empty());

  // A write that fails after part of the data is out: cap the process's file size below the new
  // checkpoint (the kernel then fails write() with EFBIG; SIGXFSZ is ignored meanwhile).
  const Tensor<float> big = ramp<float>({256, 1024}, 0, 1e-3);  // 1 MiB
  struct rlimit old_limit;
  BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit cap = old_limit;
  cap.rlim_cur = 64 * 1024;
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &cap) == 0);
  const std::string e = error_of([&] {
    save_checkpoint<float>(p, {{"w", &big}}, {{"epoch", "2"}});
  });
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  BOOST_TEST_INFO(e);
  BOOST_TEST(contains(e, "checkpoint: " + p + ": "));
  BOOST_TEST(contains(e, std::strerror(EFBIG)));  // failed while writing, not before
  BOOST_TEST(slurp(p) == before);                 // byte-identical
  BOOST_TEST(!exists(p + ".tmp"));
  BOOST_TEST(load_checkpoint<float>(p).metadata.at("epoch") == "1");
  // Without the cap the same save succeeds and replaces the file.
  save_checkpoint<float>(p, {{"w", &big}}, {{"epoch", "2"}});
  BOOST_TEST(load_checkpoint<float>(p).metadata.at("epoch") == "2");
}

BOOST_AUTO_TEST_CASE(failed_save_other_causes) {
  TempDir d;
  const Tensor<float> t = ramp<float>({4}, 0, 1);
  // The directory does not exist.
  const std::string nodir = d.file("no/such/dir/ckpt");
  const std::string e = error_of([&] { save_checkpoint<float>(nodir, {{"t", &t}}); });
  BOOST_TEST(contains(e, "checkpoint: " + nodir + ": cannot create " + nodir + ".tmp"));
  // The destination is a directory: the rename fails, the tmp file is removed.
  ::mkdir(d.file("adir").c_str(), 0755);
  BOOST_CHECK_THROW(save_checkpoint<float>(d.file("adir"), {{"t", &t}}), Error);
  BOOST_TEST(!exists(d.file("adir.tmp")));
  struct stat st;
  BOOST_TEST((::stat(d.file("adir").c_str(), &st) == 0 && S_ISDIR(st.st_mode)));
  // A read-only directory (root ignores permissions, so only checked as another user).
  const std::string p = d.file("ro/ckpt");
  ::mkdir(d.file("ro").c_str(), 0755);
  save_checkpoint<float>(p, {{"t", &t}});
  const std::string before = slurp(p);
  ::chmod(d.file("ro").c_str(), 0555);
  if (::geteuid() == 0) {
    BOOST_TEST_MESSAGE("read-only directory case skipped: running as root");
  } else {
    const Tensor<float> t2 = ramp<float>({8}, 5, 1);
    BOOST_CHECK_THROW(save_checkpoint<float>(p, {{"t", &t2}}), Error);
    BOOST_TEST(slurp(p) == before);
  }
  ::chmod(d.file("ro").c_str(), 0755);
}

// Resuming: parameters (Variables) and Adam state go through one checkpoint; a fresh model and
// optimiser loaded from it continue exactly as the original.
BOOST_AUTO_TEST_CASE(resume_parameters_and_optimizer_state) {
  TempDir d;
  using V = Variable<float>;
  auto make_params = [] {
    return std::vector<std::pair<std::string, V>>{{"w", V(ramp<float>({2, 3}, -0.5, 0.2), true)},
                                                  {"b", V(ramp<float>({3}, 0.1, 0.1), true)}};
  };
  auto vars = [](const std::vector<std::pair<std::string, V>>& named) {
    std::vector<V> out;
    for (const auto& [n, v] : named) out.push_back(v);
    return out;
  };
  // loss = Σ (x·w + b)², a fixed input x [1,2].
  auto train_step = [](std::vector<std::pair<std::string, V>>& p, optim::Optimizer<float>& opt) {
    opt.zero_grad();
    V x(Tensor<float>{{1.0f, -2.0f}}, false);
    V y = add(matmul(x, p[0].second), p[1].second);
    sum(mul(y, y)).backward();
    opt.step();
  };
  auto p1 = make_params();
  optim::Adam<float> a1(vars(p1), optim::AdamOptions{0.05});
  train_step(p1, a1);
  train_step(p1, a1);
  const auto state = a1.export_state();
  save_checkpoint<float>(d.file("run.safetensors"),
                         [&] {
                           TensorRefs<float> refs = tensor_refs(p1, "model.");
                           const TensorRefs<float> st = tensor_refs(state);
                           refs.insert(refs.end(), st.begin(), st.end());
                           return refs;
                         }(),
                         {{"epoch", "2"}});

  auto p2 = make_params();
  optim::Adam<float> a2(vars(p2), optim::AdamOptions{0.05});
  const Metadata m = load_into<float>(d.file("run.safetensors"), tensor_dests(p2, "model."),
                                      LoadOptions{false, true});
  BOOST_TEST(m.at("epoch") == "2");
  a2.import_state(load_checkpoint<float>(d.file("run.safetensors")).tensors);
  BOOST_TEST(a2.step_count(0) == 2u);
  train_step(p1, a1);
  train_step(p2, a2);
  for (std::size_t k = 0; k < 2; ++k) BOOST_TEST(same(p1[k].second.value(), p2[k].second.value()));
}

namespace {

bool python_with_numpy() {
  if (::access("/usr/bin/python3", X_OK) != 0) return false;
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

int run_status(const std::string& cmd) {
  const int s = std::system(cmd.c_str());
  return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
}

template <class T>
std::string values_json(const Tensor<T>& t) {
  std::string s = "[";
  char buf[64];
  for (std::size_t i = 0; i < t.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.17g", static_cast<double>(t.data()[i]));
    s += (i ? "," : "") + std::string(buf);
  }
  return s + "]";
}

template <class T>
std::string entry_json(const std::string& name, const char* dtype, const Tensor<T>& t) {
  std::string shape = "[";
  for (std::size_t i = 0; i < t.dimension(); ++i)
    shape += (i ? "," : "") + std::to_string(t.shape()[i]);
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         "],\"values\":" + values_json(t) + "}";
}

}  // namespace

BOOST_AUTO_TEST_CASE(independent_python_reader_agrees) {
  if (!python_with_numpy()) {
    BOOST_TEST_MESSAGE("skipped: /usr/bin/python3 with numpy is not available");
    return;
  }
  TempDir d;
  const std::string script = std::string(XGRAD_SOURCE_DIR) + "/tests/read_safetensors.py";
  const Tensor<float> w = ramp<float>({2, 3, 2}, -0.7, 0.13);
  Tensor<float> s = empty_tensor<float>(Shape{});
  *s.data() = 3.25f;
  const Tensor<double> x = ramp<double>({5}, 1.0 / 3.0, 1e-7);
  const std::string f32 = d.file("f32.safetensors"), f64 = d.file("f64.safetensors");
  save_checkpoint<float>(f32, {{"conv.weight", &w}, {"scale", &s}}, {{"epoch", "9"}, {"k", "v"}});
  save_checkpoint<double>(f64, {{"x", &x}});

  const std::string spec32 = "{\"tensors\":{" + entry_json("conv.weight", "F32", w) + "," +
                             entry_json("scale", "F32", s) +
                             "},\"metadata\":{\"epoch\":\"9\",\"k\":\"v\"}}";
  const std::string spec64 = "{\"tensors\":{" + entry_json("x", "F64", x) + "},\"metadata\":{}}";
  spit(d.file("spec32.json"), spec32);
  spit(d.file("spec64.json"), spec64);
  const std::string py = "/usr/bin/python3 '" + script + "' ";
  BOOST_TEST(run_status(py + "'" + f32 + "' --expect '" + d.file("spec32.json") + "'") == 0);
  BOOST_TEST(run_status(py + "'" + f64 + "' --expect '" + d.file("spec64.json") + "'") == 0);
  // Negative control: the reader notices one changed value and a changed metadata entry.
  std::string wrong = spec32;
  wrong.replace(wrong.find("\"epoch\":\"9\""), 11, "\"epoch\":\"8\"");
  spit(d.file("wrong.json"), wrong);
  BOOST_TEST(run_status(py + "'" + f32 + "' --expect '" + d.file("wrong.json") + "' >/dev/null") ==
             1);
  Tensor<float> w_changed = w;
  w_changed(1, 2, 1) += 1e-6f;
  spit(d.file("wrong2.json"), "{\"tensors\":{" + entry_json("conv.weight", "F32", w_changed) + "," +
                                  entry_json("scale", "F32", s) + "}}");
  BOOST_TEST(run_status(py + "'" + f32 + "' --expect '" + d.file("wrong2.json") + "' >/dev/null") ==
             1);
  // And it rejects a truncated file.
  const std::string bytes = slurp(f32);
  spit(d.file("cut"), bytes.substr(0, bytes.size() - 3));
  BOOST_TEST(run_status(py + "'" + d.file("cut") + "' >/dev/null") == 1);
}
