// conv2d and zero_pad: the fast kernels against the course's loop reference, hand-worked cases,
// error messages, and independence from the thread count.
#define BOOST_TEST_MODULE conv
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <xgrad/xgrad.hpp>

#include "reference/conv_reference.hpp"
#include "test_util.hpp"

using namespace xgrad;
namespace ref = xgrad::reference;
using xgrad::testing::Threads;

namespace {

template <class T>
Tensor<T> random_tensor(const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  Tensor<T> t = empty_tensor<T>(shape);
  for (T& v : t) v = T(dist(rng));
  return t;
}

template <class T>
Tensor<T> tensor_from(const Shape& shape, const std::vector<double>& values) {
  Tensor<T> t = empty_tensor<T>(shape);
  BOOST_REQUIRE_EQUAL(t.size(), values.size());
  for (std::size_t i = 0; i < values.size(); ++i) t.data()[i] = T(values[i]);
  return t;
}

// max |a - b| / max(1, max |b|): a scale-aware distance between a result and its oracle.
template <class A, class B>
double max_rel_diff(const Tensor<A>& a, const Tensor<B>& b) {
  BOOST_REQUIRE(shape_of(a) == shape_of(b));
  double diff = 0, scale = 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a.data()[i]) - double(b.data()[i])));
    scale = std::max(scale, std::abs(double(b.data()[i])));
  }
  return diff / scale;
}

template <class T>
void check_exact(const Tensor<T>& got, const Shape& shape, const std::vector<double>& want) {
  BOOST_REQUIRE(shape_of(got) == shape);
  for (std::size_t i = 0; i < want.size(); ++i)
    BOOST_TEST(double(got.data()[i]) == want[i], "element " << i);
}

std::string params_str(const Conv2DParams& p) {
  return "stride {" + std::to_string(p.stride[0]) + "," + std::to_string(p.stride[1]) + "} pad {" +
         std::to_string(p.padding[0]) + "," + std::to_string(p.padding[1]) + "} dil {" +
         std::to_string(p.dilation[0]) + "," + std::to_string(p.dilation[1]) + "} groups " +
         std::to_string(p.groups);
}

struct RandomConv {
  Shape x, w;
  bool bias;
  Conv2DParams p;
};

// A random valid configuration, small enough for the loop reference.
RandomConv random_conv(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  RandomConv c;
  c.p.groups = pick(1, 3);
  const int cg = pick(1, 3), cog = pick(1, 3), n = pick(1, 3);
  const int kh = pick(1, 4), kw = pick(1, 4);
  c.p.stride = {pick(1, 3), pick(1, 3)};
  c.p.padding = {pick(0, 2), pick(0, 2)};
  c.p.dilation = {pick(1, 2), pick(1, 2)};
  const int span_h = c.p.dilation[0] * (kh - 1) + 1, span_w = c.p.dilation[1] * (kw - 1) + 1;
  const int h = std::max(1, span_h - 2 * c.p.padding[0] + pick(0, 6));
  const int w = std::max(1, span_w - 2 * c.p.padding[1] + pick(0, 6));
  c.x = {std::size_t(n), std::size_t(cg * c.p.groups), std::size_t(h), std::size_t(w)};
  c.w = {std::size_t(cog * c.p.groups), std::size_t(cg), std::size_t(kh), std::size_t(kw)};
  c.bias = pick(0, 3) != 0;
  return c;
}

// Runs the fast conv2d in precision T on double data and compares y, dx, dw, db with the
// reference (computed in double) to `tol`.
template <class T>
void compare_with_reference(const RandomConv& c, std::uint64_t seed, double tol) {
  std::mt19937_64 rng(seed);
  const Tensor<double> x64 = random_tensor<double>(c.x, rng);
  const Tensor<double> w64 = random_tensor<double>(c.w, rng);
  const Tensor<double> b64 = random_tensor<double>({c.w[0]}, rng);
  const Tensor<double> zref = ref::conv_forward_ref(x64, w64, c.bias ? &b64 : nullptr, c.p);
  const Tensor<double> dz = random_tensor<double>(shape_of(zref), rng);
  const ref::ConvGradsRef<double> gref = ref::conv_backward_ref(dz, x64, w64, c.p);

  Variable<T> x(xt::cast<T>(x64), true, "x"), w(xt::cast<T>(w64), true, "w");
  Variable<T> b;
  if (c.bias) b = Variable<T>(xt::cast<T>(b64), true, "b");
  const Variable<T> y = conv2d(x, w, b, c.p);
  BOOST_TEST_CONTEXT("x " << shape_str(c.x) << " w " << shape_str(c.w) << " " << params_str(c.p)
                          << (c.bias ? " bias" : " no bias")) {
    BOOST_TEST(max_rel_diff(y.value(), zref) < tol, "forward");
    const Tensor<T> dz_t = xt::cast<T>(dz);
    y.backward(dz_t);
    BOOST_TEST(max_rel_diff(x.grad(), gref.dA_prev) < tol, "dx");
    BOOST_TEST(max_rel_diff(w.grad(), gref.dW) < tol, "dw");
    if (c.bias) BOOST_TEST(max_rel_diff(b.grad(), gref.db) < tol, "db");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Worked by hand
// ---------------------------------------------------------------------------------------------

// x = [[1,2,3],[4,5,6],[7,8,9]], w = [[1,2],[3,4]], b = 1:
//   y[0,0] = 1·1 + 2·2 + 3·4 + 4·5 + 1 = 38, and so on.
// With dY = ones: db = 4; dW[p,q] = Σ of the four windows' element (p,q) = [[12,16],[24,28]];
// dX[i,j] = Σ of the weights that touch x[i,j] = [[1,3,2],[4,10,6],[3,7,4]].
BOOST_AUTO_TEST_CASE(hand_computed_3x3_input_2x2_kernel) {
  Variable<double> x(tensor_from<double>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9}), true);
  Variable<double> w(tensor_from<double>({1, 1, 2, 2}, {1, 2, 3, 4}), true);
  Variable<double> b(tensor_from<double>({1}, {1}), true);
  const Variable<double> y = conv2d(x, w, b);
  check_exact(y.value(), {1, 1, 2, 2}, {38, 48, 68, 78});
  y.backward(filled_tensor<double>({1, 1, 2, 2}, 1.0));
  check_exact(x.grad(), {1, 1, 3, 3}, {1, 3, 2, 4, 10, 6, 3, 7, 4});
  check_exact(w.grad(), {1, 1, 2, 2}, {12, 16, 24, 28});
  check_exact(b.grad(), {1}, {4});
}

// Same x, a 3x3 kernel of ones, padding 1, stride 2: Ho = (3 + 2 - 3)/2 + 1 = 2. The windows
// start at padded (0,0), (0,2), (2,0), (2,2), i.e. they sum x[0:2,0:2], x[0:2,1:3], ...
// With dY = [[1,10],[100,1000]]: dX[i,j] = Σ of dY over windows containing x[i,j].
BOOST_AUTO_TEST_CASE(hand_computed_stride2_pad1_float) {
  Variable<float> x(tensor_from<float>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9}), true);
  Variable<float> w(filled_tensor<float>({1, 1, 3, 3}, 1.0f), true);
  Conv2DParams p;
  p.stride = {2, 2};
  p.padding = {1, 1};
  const Variable<float> y = conv2d(x, w, {}, p);
  check_exact(y.value(), {1, 1, 2, 2}, {12, 16, 24, 28});
  y.backward(tensor_from<float>({1, 1, 2, 2}, {1, 10, 100, 1000}));
  check_exact(x.grad(), {1, 1, 3, 3}, {1, 11, 10, 101, 1111, 1010, 100, 1100, 1000});
  // dW[p,q] = Σ_ij dY[i,j]·xpad[2i + p, 2j + q]; e.g. dW[1,1] = 1·1 + 10·3 + 100·7 + 1000·9.
  check_exact(w.grad(), {1, 1, 3, 3}, {5000, 6400, 500, 8020, 9731, 802, 50, 64, 5});
}

// x = 0..24 as 5x5, a 2x2 kernel of ones with dilation 2: y[i,j] = x[i,j] + x[i,j+2] +
// x[i+2,j] + x[i+2,j+2] = 4·(5i + j) + 24, on a 3x3 output.
BOOST_AUTO_TEST_CASE(hand_computed_dilation2) {
  std::vector<double> xs(25);
  for (int i = 0; i < 25; ++i) xs[i] = i;
  Variable<double> x(tensor_from<double>({1, 1, 5, 5}, xs));
  Variable<double> w(filled_tensor<double>({1, 1, 2, 2}, 1.0));
  Conv2DParams p;
  p.dilation = {2, 2};
  const Variable<double> y = conv2d(x, w, {}, p);
  std::vector<double> want;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) want.push_back(4.0 * (5 * i + j) + 24);
  check_exact(y.value(), {1, 1, 3, 3}, want);
}

// Two groups: channel 0 (all 1) feeds output 0 through w0 = ones·1, channel 1 (all 2) feeds
// output 1 through w1 = ones·3: y = [1·4, 2·3·4] = [4, 24] plus biases [10, 20].
BOOST_AUTO_TEST_CASE(hand_computed_groups) {
  Variable<double> x(tensor_from<double>({1, 2, 2, 2}, {1, 1, 1, 1, 2, 2, 2, 2}), true);
  Variable<double> w(tensor_from<double>({2, 1, 2, 2}, {1, 1, 1, 1, 3, 3, 3, 3}), true);
  Variable<double> b(tensor_from<double>({2}, {10, 20}), true);
  Conv2DParams p;
  p.groups = 2;
  const Variable<double> y = conv2d(x, w, b, p);
  check_exact(y.value(), {1, 2, 1, 1}, {14, 44});
  y.backward(tensor_from<double>({1, 2, 1, 1}, {1, 2}));
  check_exact(x.grad(), {1, 2, 2, 2}, {1, 1, 1, 1, 6, 6, 6, 6});
  check_exact(w.grad(), {2, 1, 2, 2}, {1, 1, 1, 1, 4, 4, 4, 4});
  check_exact(b.grad(), {2}, {1, 2});
}

// 1x1 kernels take the no-im2col path: y[co] = Σ_ci w[co,ci]·x[ci].
BOOST_AUTO_TEST_CASE(hand_computed_pointwise) {
  Variable<double> x(tensor_from<double>({1, 2, 1, 2}, {1, 2, 3, 4}), true);
  Variable<double> w(tensor_from<double>({1, 2, 1, 1}, {10, 100}), true);
  const Variable<double> y = conv2d(x, w);
  check_exact(y.value(), {1, 1, 1, 2}, {310, 420});
  y.backward(tensor_from<double>({1, 1, 1, 2}, {1, 2}));
  check_exact(x.grad(), {1, 2, 1, 2}, {10, 20, 100, 200});
  check_exact(w.grad(), {1, 2, 1, 1}, {1 * 1 + 2 * 2, 3 * 1 + 4 * 2});
}

// ---------------------------------------------------------------------------------------------
// Fast kernel against the loop reference
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(random_configs_match_reference_double) {
  std::mt19937_64 rng(2024);
  for (int t = 0; t < 150; ++t) compare_with_reference<double>(random_conv(rng), 100 + t, 1e-12);
}

BOOST_AUTO_TEST_CASE(random_configs_match_reference_float) {
  std::mt19937_64 rng(77);
  for (int t = 0; t < 100; ++t) compare_with_reference<float>(random_conv(rng), 500 + t, 1e-5);
}

// Wide images with many channels: the im2col buffer is split into bands of output rows.
BOOST_AUTO_TEST_CASE(banded_im2col_matches_reference) {
  RandomConv c;
  c.x = {2, 32, 34, 70};
  c.w = {3, 32, 3, 3};
  c.bias = true;
  c.p.padding = {1, 0};
  compare_with_reference<double>(c, 1, 1e-12);
  compare_with_reference<float>(c, 2, 1e-5);
  c.p.stride = {2, 1};
  c.p.dilation = {1, 2};
  c.p.groups = 2;
  c.x = {1, 32, 40, 70};
  c.w = {4, 16, 3, 3};
  compare_with_reference<double>(c, 3, 1e-12);
}

// dX through col2im (more than 32 output channels, or a row stride) with rows of several 8-lane
// chunks: the last chunk of a row overlaps the one before it (spans 26 and 25), exact multiples
// of 8, row stride and dilation.
BOOST_AUTO_TEST_CASE(col2im_rows_of_many_chunks_match_reference_float) {
  RandomConv wide{{1, 4, 26, 26}, {40, 4, 3, 3}, true, {}};
  compare_with_reference<float>(wide, 21, 1e-5);
  RandomConv strided{{2, 3, 20, 21}, {4, 3, 3, 4}, false, {}};
  strided.p.padding = {1, 2};
  strided.p.stride = {2, 1};
  strided.p.dilation = {2, 1};
  compare_with_reference<float>(strided, 22, 1e-5);
  RandomConv exact{{1, 2, 9, 16}, {36, 2, 2, 1}, true, {}};
  compare_with_reference<float>(exact, 23, 1e-5);
  RandomConv one_chunk{{1, 2, 6, 8}, {33, 2, 3, 1}, true, {}};
  compare_with_reference<float>(one_chunk, 24, 1e-5);
}

// dX by the folded kernel (at most 32 output channels, stride 1): several chunks of folded
// channels (13·3), unequal kernel sides with padding, dX rows narrower than a vector (masked
// stores), the widest kernel row it takes (8 with AVX2), one-row images, a kernel taller than dY is
// wide (blocks spanning several rows, whose rows of taps are skipped in part), a kernel one column
// wide, one input channel with 32 output channels (the convnet's conv1), and 2 input channels.
BOOST_AUTO_TEST_CASE(fold_dx_matches_reference_float) {
  RandomConv chunks{{2, 13, 9, 12}, {16, 13, 5, 3}, true, {}};
  chunks.p.padding = {2, 1};
  compare_with_reference<float>(chunks, 31, 1e-5);
  RandomConv narrow{{1, 4, 5, 6}, {4, 4, 4, 4}, false, {}};
  compare_with_reference<float>(narrow, 32, 1e-5);
  RandomConv wide_kernel{{1, 7, 20, 30}, {9, 7, 3, 8}, true, {}};
  compare_with_reference<float>(wide_kernel, 33, 1e-5);
  RandomConv one_row{{2, 5, 1, 12}, {3, 5, 1, 5}, true, {}};
  compare_with_reference<float>(one_row, 34, 1e-5);
  RandomConv tall{{3, 4, 12, 3}, {5, 4, 7, 2}, true, {}};
  tall.p.padding = {1, 0};
  compare_with_reference<float>(tall, 35, 1e-5);
  RandomConv one_column{{2, 6, 7, 11}, {16, 6, 3, 1}, false, {}};
  compare_with_reference<float>(one_column, 36, 1e-5);
  RandomConv first_layer{{2, 1, 28, 28}, {32, 1, 3, 3}, true, {}};
  compare_with_reference<float>(first_layer, 37, 1e-5);
  RandomConv two_channels{{3, 2, 9, 10}, {24, 2, 5, 4}, true, {}};
  two_channels.p.padding = {2, 1};
  compare_with_reference<float>(two_channels, 38, 1e-5);
}

BOOST_AUTO_TEST_CASE(lenet_shapes_match_reference_float) {
  RandomConv c1{{3, 1, 28, 28}, {6, 1, 5, 5}, true, {}};
  c1.p.padding = {2, 2};
  compare_with_reference<float>(c1, 11, 1e-5);
  RandomConv c2{{3, 6, 14, 14}, {16, 6, 5, 5}, true, {}};
  compare_with_reference<float>(c2, 12, 1e-5);
}

// The network input needs no gradient: dX is skipped, dW and db are still right.
BOOST_AUTO_TEST_CASE(input_without_grad_skips_dx) {
  std::mt19937_64 rng(5);
  const Tensor<double> x64 = random_tensor<double>({2, 3, 6, 6}, rng);
  const Tensor<double> w64 = random_tensor<double>({4, 3, 3, 3}, rng);
  Variable<double> x(x64, false), w(w64, true), b(filled_tensor<double>({4}, 0.5), true);
  const Variable<double> y = conv2d(x, w, b);
  const Tensor<double> dz = random_tensor<double>(y.shape(), rng);
  y.backward(dz);
  BOOST_TEST(!x.has_grad());
  const ref::ConvGradsRef<double> g = ref::conv_backward_ref(dz, x64, w64, Conv2DParams{});
  BOOST_TEST(max_rel_diff(w.grad(), g.dW) < 1e-12);
  BOOST_TEST(max_rel_diff(b.grad(), g.db) < 1e-12);
}

BOOST_AUTO_TEST_CASE(only_input_needs_grad) {
  std::mt19937_64 rng(6);
  const Tensor<double> x64 = random_tensor<double>({2, 2, 5, 7}, rng);
  const Tensor<double> w64 = random_tensor<double>({3, 2, 2, 3}, rng);
  Variable<double> x(x64, true), w(w64, false), b(filled_tensor<double>({3}, 0.5), false);
  Conv2DParams p;
  p.stride = {2, 1};
  p.padding = {1, 1};
  const Variable<double> y = conv2d(x, w, b, p);
  const Tensor<double> dz = random_tensor<double>(y.shape(), rng);
  y.backward(dz);
  BOOST_TEST(!w.has_grad());
  BOOST_TEST(!b.has_grad());
  const ref::ConvGradsRef<double> g = ref::conv_backward_ref(dz, x64, w64, p);
  BOOST_TEST(max_rel_diff(x.grad(), g.dA_prev) < 1e-12);
}

BOOST_AUTO_TEST_CASE(no_grad_guard_records_nothing) {
  Variable<float> x(filled_tensor<float>({1, 1, 4, 4}, 1.0f), true);
  Variable<float> w(filled_tensor<float>({2, 1, 3, 3}, 1.0f), true);
  NoGradGuard guard;
  const Variable<float> y = conv2d(x, w);
  BOOST_TEST(y.grad_fn() == nullptr);
  check_exact(y.value(), {1, 2, 2, 2}, {9, 9, 9, 9, 9, 9, 9, 9});
}

// ---------------------------------------------------------------------------------------------
// Thread count
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(one_and_two_threads_agree) {
  Threads restore(num_threads());
  std::mt19937_64 rng(9);
  const Tensor<float> x0 = random_tensor<float>({6, 4, 12, 11}, rng);
  const Tensor<float> w0 = random_tensor<float>({8, 2, 3, 3}, rng);
  const Tensor<float> b0 = random_tensor<float>({8}, rng);
  Conv2DParams p;
  p.groups = 2;
  p.padding = {1, 1};
  Tensor<float> dz;
  std::vector<Tensor<float>> results[2];
  for (int threads = 1; threads <= 2; ++threads) {
    set_num_threads(threads);
    Variable<float> x(x0, true), w(w0, true), b(b0, true);
    const Variable<float> y = conv2d(x, w, b, p);
    if (threads == 1) dz = random_tensor<float>(y.shape(), rng);
    y.backward(dz);
    results[threads - 1] = {y.value(), x.grad(), w.grad(), b.grad()};
  }
  const char* what[] = {"y", "dx", "dw", "db"};
  for (int i = 0; i < 4; ++i)
    BOOST_TEST(max_rel_diff(results[1][i], results[0][i]) < 1e-5, what[i]);
}

// The forward hands images to threads dynamically (ops/conv2d.cpp), which is sound only because an
// image's output is computed the same way by whichever thread takes it: the same bits on 1 thread,
// and on 2 threads run after run, for each forward path (direct rows, shifted planes, channels as
// lanes, im2col + GEMM, pointwise).
BOOST_AUTO_TEST_CASE(forward_is_the_same_bits_on_any_thread_count) {
  Threads restore(num_threads());
  struct Case {
    Shape x, w;
    int pad;
  };
  const Case cases[] = {{{9, 1, 16, 16}, {6, 1, 3, 3}, 1},   // direct rows (16 wide)
                        {{9, 1, 28, 28}, {6, 1, 5, 5}, 2},   // LeNet conv1: shifted planes
                        {{9, 1, 28, 28}, {32, 1, 3, 3}, 0},  // convnet conv1: shifted planes
                        {{9, 6, 14, 14}, {16, 6, 5, 5}, 0},  // LeNet conv2: channels as lanes
                        {{9, 8, 12, 12}, {16, 8, 3, 3}, 1},  // im2col + GEMM
                        {{9, 4, 6, 6}, {8, 4, 1, 1}, 0}};    // pointwise
  std::mt19937_64 rng(21);
  for (const Case& c : cases) {
    const Variable<float> x(random_tensor<float>(c.x, rng)), w(random_tensor<float>(c.w, rng));
    const Variable<float> b(random_tensor<float>({c.w[0]}, rng));
    Conv2DParams p;
    p.padding = {c.pad, c.pad};
    NoGradGuard no_grad;
    set_num_threads(1);
    const Tensor<float> one = conv2d(x, w, b, p).value();
    set_num_threads(2);
    for (int run = 0; run < 3; ++run) {
      const Tensor<float> two = conv2d(x, w, b, p).value();
      BOOST_TEST_REQUIRE(two.size() == one.size());
      BOOST_TEST(std::equal(one.begin(), one.end(), two.begin()),
                 "x " << shape_str(c.x) << " w " << shape_str(c.w) << ", 2-thread run " << run);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

namespace {

// Calls conv2d and checks it throws xgrad::Error naming conv2d and every string in `needles`.
void expect_conv_error(const Shape& xs, const Shape& ws, const Shape* bs, const Conv2DParams& p,
                       const std::vector<std::string>& needles) {
  Variable<float> x(filled_tensor<float>(xs, 1.0f)), w(filled_tensor<float>(ws, 1.0f));
  Variable<float> b;
  if (bs) b = Variable<float>(filled_tensor<float>(*bs, 1.0f));
  try {
    conv2d(x, w, b, p);
    BOOST_ERROR("no error for x " << shape_str(xs) << " w " << shape_str(ws));
  } catch (const Error& e) {
    const std::string msg = e.what();
    BOOST_TEST_MESSAGE(msg);
    BOOST_TEST(msg.find("conv2d") != std::string::npos, msg);
    for (const std::string& n : needles) BOOST_TEST(msg.find(n) != std::string::npos, msg);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(conv_errors_name_op_and_shapes) {
  const Conv2DParams def;
  // Channel mismatch, with the message from DESIGN.md.
  expect_conv_error({8, 3, 28, 28}, {6, 1, 5, 5}, nullptr, def,
                    {"input has 3 channels but weight expects 1", "[8,3,28,28]", "[6,1,5,5]"});
  // Kernel larger than the padded input.
  expect_conv_error({1, 1, 4, 4}, {1, 1, 5, 5}, nullptr, def, {"larger", "[1,1,4,4]", "[1,1,5,5]"});
  Conv2DParams dil;
  dil.dilation = {3, 1};
  expect_conv_error({1, 1, 6, 6}, {1, 1, 3, 3}, nullptr, dil, {"larger", "[1,1,6,6]"});
  // Stride 0 and negative.
  Conv2DParams s0;
  s0.stride = {0, 1};
  expect_conv_error({1, 1, 4, 4}, {1, 1, 3, 3}, nullptr, s0, {"stride", "[1,1,4,4]", "[1,1,3,3]"});
  Conv2DParams sneg;
  sneg.stride = {1, -2};
  expect_conv_error({1, 1, 4, 4}, {1, 1, 3, 3}, nullptr, sneg, {"stride", "-2", "[1,1,4,4]"});
  // Negative padding.
  Conv2DParams pneg;
  pneg.padding = {-1, 0};
  expect_conv_error({1, 1, 4, 4}, {1, 1, 3, 3}, nullptr, pneg, {"padding", "[1,1,4,4]"});
  // Dilation < 1.
  Conv2DParams d0;
  d0.dilation = {1, 0};
  expect_conv_error({1, 1, 4, 4}, {1, 1, 3, 3}, nullptr, d0, {"dilation", "[1,1,3,3]"});
  // Wrong ranks.
  expect_conv_error({1, 4, 4}, {1, 1, 3, 3}, nullptr, def, {"4-D", "[1,4,4]", "[1,1,3,3]"});
  expect_conv_error({1, 1, 4, 4}, {1, 3, 3}, nullptr, def, {"4-D", "[1,1,4,4]", "[1,3,3]"});
  const Shape b2d{2, 1}, b_wrong{3};
  expect_conv_error({1, 1, 4, 4}, {2, 1, 3, 3}, &b2d, def, {"bias", "[2,1]", "[2,1,3,3]"});
  expect_conv_error({1, 1, 4, 4}, {2, 1, 3, 3}, &b_wrong, def, {"bias", "[3]", "[2,1,3,3]"});
  // Groups that do not divide the channels, or zero.
  Conv2DParams g2;
  g2.groups = 2;
  expect_conv_error({1, 3, 4, 4}, {2, 1, 3, 3}, nullptr, g2, {"groups", "[1,3,4,4]", "[2,1,3,3]"});
  expect_conv_error({1, 4, 4, 4}, {3, 2, 3, 3}, nullptr, g2, {"groups", "[1,4,4,4]", "[3,2,3,3]"});
  Conv2DParams g0;
  g0.groups = 0;
  expect_conv_error({1, 1, 4, 4}, {1, 1, 3, 3}, nullptr, g0, {"groups", "[1,1,4,4]"});
  // Grouped channel mismatch: 4 input channels, groups 2, weight expects 2·3 = 6.
  expect_conv_error({1, 4, 4, 4}, {2, 3, 3, 3}, nullptr, g2,
                    {"input has 4 channels but weight expects 6", "[1,4,4,4]", "[2,3,3,3]"});
}

// ---------------------------------------------------------------------------------------------
// zero_pad
// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(zero_pad_values_and_gradient) {
  Variable<double> x(tensor_from<double>({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), true);
  const Variable<double> y = zero_pad(x, Pads{1, 0, 2, 1});
  // Each 2x2 plane becomes 3x5: one zero row on top, two zero columns left, one right.
  check_exact(y.value(), {1, 2, 3, 5}, {0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3, 4, 0,  //
                                        0, 0, 0, 0, 0, 0, 0, 5, 6, 0, 0, 0, 7, 8, 0});
  std::vector<double> g(30);
  for (int i = 0; i < 30; ++i) g[i] = i;
  y.backward(tensor_from<double>({1, 2, 3, 5}, g));
  check_exact(x.grad(), {1, 2, 2, 2}, {7, 8, 12, 13, 22, 23, 27, 28});
}

BOOST_AUTO_TEST_CASE(zero_pad_matches_reference) {
  std::mt19937_64 rng(3);
  const Tensor<float> x = random_tensor<float>({2, 3, 5, 4}, rng);
  const Variable<float> y = zero_pad(Variable<float>(x), Pads{2, 1, 0, 3});
  BOOST_TEST(max_rel_diff(y.value(), ref::zero_pad_ref(x, 2, 1, 0, 3)) == 0.0);
}

BOOST_AUTO_TEST_CASE(zero_pad_errors) {
  Variable<float> x(filled_tensor<float>({1, 1, 3, 3}, 1.0f));
  const auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string neg = message([&] { zero_pad(x, Pads{0, -1, 0, 0}); });
  BOOST_TEST(neg.find("zero_pad") != std::string::npos, neg);
  BOOST_TEST(neg.find("[1,1,3,3]") != std::string::npos, neg);
  BOOST_TEST(neg.find("-1") != std::string::npos, neg);
  Variable<float> x3(filled_tensor<float>({1, 3, 3}, 1.0f));
  const std::string rank = message([&] { zero_pad(x3, Pads{1, 1, 1, 1}); });
  BOOST_TEST(rank.find("zero_pad") != std::string::npos, rank);
  BOOST_TEST(rank.find("[1,3,3]") != std::string::npos, rank);
}

// conv2d_relu against relu(conv2d): the same kernels, so the same bits, on 1 and 2 threads, with
// the convnet's conv1 (the direct kernel) and conv2 (im2col and GEMM), LeNet's conv1 (the shift
// kernel) and conv2 (the lanes kernel), over batches of several chunks.
BOOST_AUTO_TEST_CASE(conv2d_relu_matches_the_separate_ops_bit_for_bit) {
  using xgrad::testing::FusedCase;
  using V = Variable<float>;
  Conv2DParams pad2;
  pad2.padding = {2, 2};
  Conv2DParams s2;
  s2.stride = {2, 2};
  const std::vector<FusedCase> cases{{"convnet_conv1", {20, 1, 28, 28}, {32, 1, 3, 3}, {}, true},
                                     {"convnet_conv2", {3, 32, 26, 26}, {64, 32, 3, 3}, {}, true},
                                     {"lenet_conv1", {17, 1, 28, 28}, {6, 1, 5, 5}, pad2, true},
                                     {"lenet_conv2", {9, 6, 14, 14}, {16, 6, 5, 5}, {}, false},
                                     {"stride2_odd", {3, 3, 11, 9}, {5, 3, 3, 3}, s2, true}};
  std::mt19937_64 rng(2027);
  const auto separate = [](const FusedCase& c, const V& x, const V& w, const V& b) {
    return relu(conv2d(x, w, b, c.conv));
  };
  const auto fused = [](const FusedCase& c, const V& x, const V& w, const V& b) {
    return conv2d_relu(x, w, b, c.conv);
  };
  BOOST_TEST(xgrad::testing::check_same_bits_as_separate_ops(cases, fused, separate, rng) == 10);
}

BOOST_AUTO_TEST_CASE(conv2d_relu_errors_name_the_op_and_shapes) {
  const Variable<float> x(filled_tensor<float>({1, 2, 6, 6}, 1.f));
  const Variable<float> w_bad(filled_tensor<float>({3, 4, 3, 3}, 1.f));
  BOOST_TEST(xgrad::testing::throws_with([&] { conv2d_relu(x, w_bad, {}); },
                                         {"conv2d_relu", "channels", "[1,2,6,6]", "[3,4,3,3]"}));
}
