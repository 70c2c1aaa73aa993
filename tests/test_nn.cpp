#define BOOST_TEST_MODULE nn
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <set>

#include <xgrad/nn/nn.hpp>
#include <xgrad/xgrad.hpp>

using namespace xgrad;
using xgrad::testing::contains;
using namespace xgrad::nn;
using V = Variable<double>;
using Vs = std::vector<V>;

namespace {

V input(const Shape& shape, std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  return V(uniform_init(-1.0, 1.0)(shape, rng), false, "x");
}

Shape out_shape(Module<double>& m, const Shape& in) {
  return m(input(in)).shape();
}
std::vector<std::string> names_of(const Module<double>& m) {
  std::vector<std::string> names;
  for (const auto& [name, v] : m.named_parameters()) names.push_back(name);
  return names;
}

// Checks d module(x) / d (x, every parameter) with gradcheck: each call installs gradcheck's
// copies of the parameters into the module, so gradients reach them.
GradcheckReport check_module(Module<double>& m, const Shape& x_shape) {
  const auto named = m.named_parameters();
  std::mt19937_64 rng(3);
  Vs inputs{V(away_from_zero_init()(x_shape, rng), true, "x")};
  for (const auto& [name, p] : named) {
    // Vectors (biases, BatchNorm γ and β) away from their 0/1 defaults, so they are exercised.
    Tensor<double> value = p.dim() == 1 ? uniform_init(0.5, 1.5)(p.shape(), rng) : p.value();
    inputs.emplace_back(value, true, name);
  }
  const auto fn = [&m, &named](const Vs& in) {
    for (std::size_t i = 0; i < named.size(); ++i) m.replace_parameter(named[i].first, in[i + 1]);
    return m(in[0]);
  };
  return gradcheck(fn, inputs);
}

}  // namespace

// ------------------------------------------------------------------------------ output shapes

BOOST_AUTO_TEST_CASE(layer_output_shapes) {
  Conv2d<double> conv(3, 5, 3, Conv2DParams{{2, 2}, {1, 1}});
  BOOST_TEST(out_shape(conv, {2, 3, 7, 7}) == Shape({2, 5, 4, 4}));
  Conv2d<double> conv_nobias(3, 4, 1, {}, false);
  BOOST_TEST(!conv_nobias.bias().defined());
  BOOST_TEST(conv_nobias.parameter_count() == 12u);
  BOOST_TEST(out_shape(conv_nobias, {1, 3, 5, 6}) == Shape({1, 4, 5, 6}));

  MaxPool2d<double> maxpool;
  BOOST_TEST(out_shape(maxpool, {2, 3, 7, 8}) == Shape({2, 3, 3, 4}));
  Pool2DParams p3;
  p3.kernel = {3, 3};
  p3.stride = {1, 1};
  p3.padding = {1, 1};
  AvgPool2d<double> avgpool(p3);
  BOOST_TEST(out_shape(avgpool, {2, 3, 5, 5}) == Shape({2, 3, 5, 5}));
  GlobalAvgPool2d<double> gap;
  BOOST_TEST(out_shape(gap, {2, 6, 5, 5}) == Shape({2, 6}));
  ReLU<double> relu_layer;
  BOOST_TEST(out_shape(relu_layer, {2, 3, 4}) == Shape({2, 3, 4}));
  Linear<double> fc(12, 7);
  BOOST_TEST(out_shape(fc, {5, 12}) == Shape({5, 7}));
  BOOST_TEST(fc.weight().shape() == Shape({7, 12}));
  BOOST_TEST(fc.parameter_count() == 12u * 7u + 7u);
  Flatten<double> flat;
  BOOST_TEST(out_shape(flat, {2, 3, 4, 5}) == Shape({2, 60}));
  Dropout<double> drop(0.5, 1);
  BOOST_TEST(out_shape(drop, {4, 9}) == Shape({4, 9}));
  BatchNorm2d<double> bn(3);
  BOOST_TEST(out_shape(bn, {2, 3, 4, 4}) == Shape({2, 3, 4, 4}));
  BOOST_TEST(bn.parameter_count() == 6u);

  Sequential<double> seq{std::make_shared<Conv2d<double>>(1, 2, 3),
                         std::make_shared<ReLU<double>>(), std::make_shared<Flatten<double>>()};
  seq.add(std::make_shared<Linear<double>>(2 * 3 * 3, 4));
  BOOST_TEST(seq.size() == 4u);
  BOOST_TEST(out_shape(seq, {3, 1, 5, 5}) == Shape({3, 4}));
  BOOST_TEST(seq.at(3)->type_name() == "Linear");
  BOOST_CHECK_THROW(seq.at(4), Error);
}

BOOST_AUTO_TEST_CASE(residual_block_shapes_with_and_without_projection) {
  ResidualBlock<double> same(4, 4, 1);
  BOOST_TEST(!same.has_projection());
  BOOST_TEST(out_shape(same, {2, 4, 6, 6}) == Shape({2, 4, 6, 6}));
  // conv1 + conv2 (no bias) + two BN
  BOOST_TEST(same.parameter_count() == 2u * 4u * 4u * 9u + 2u * 8u);

  ResidualBlock<double> down(4, 8, 2);
  BOOST_TEST(down.has_projection());
  BOOST_TEST(out_shape(down, {2, 4, 7, 7}) == Shape({2, 8, 4, 4}));
  BOOST_TEST(down.parameter_count() == 8u * 4u * 9u + 8u * 8u * 9u + 8u * 4u + 3u * 16u);

  ResidualBlock<double> widen(3, 5, 1);  // channels change at stride 1: still a projection
  BOOST_TEST(widen.has_projection());
  BOOST_TEST(out_shape(widen, {1, 3, 5, 5}) == Shape({1, 5, 5, 5}));

  // The output is a ReLU: never negative.
  const V y = same(input({2, 4, 6, 6}));
  BOOST_TEST(xt::amin(y.value())() >= 0.0);
}

BOOST_AUTO_TEST_CASE(inception_block_concatenates_branch_channels) {
  InceptionBlock<double> block(6, 4, 8, 2, 3);
  BOOST_TEST(block.out_channels() == 17u);
  BOOST_TEST(out_shape(block, {2, 6, 5, 7}) == Shape({2, 17, 5, 7}));
  InceptionBlock<double> explicit_reduce(6, 4, 8, 2, 3, 5, 1);
  BOOST_TEST(out_shape(explicit_reduce, {1, 6, 4, 4}) == Shape({1, 17, 4, 4}));
  // 1x1: 6·4+4; 3x3: 6·5+5 + 5·8·9+8; 5x5: 6·1+1 + 1·2·25+2; pool: 6·3+3
  BOOST_TEST(explicit_reduce.parameter_count() == 28u + 35u + 368u + 7u + 52u + 21u);
  const V y = block(input({2, 6, 5, 7}));
  BOOST_TEST(xt::amin(y.value())() >= 0.0);
}

BOOST_AUTO_TEST_CASE(models_map_28x28_images_to_10_logits) {
  for (const std::string& name : model_names()) {
    auto model = make_model<double>(name);
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST(out_shape(*model, {2, 1, 28, 28}) == Shape({2, 10}));
    }
  }
  auto lenet_f = lenet5<float>();
  Variable<float> xf(filled_tensor<float>({1, 1, 28, 28}, 0.5f));
  BOOST_TEST((*lenet_f)(xf).shape() == Shape({1, 10}));
}

BOOST_AUTO_TEST_CASE(make_model_rejects_unknown_names_listing_valid_ones) {
  try {
    make_model<float>("vgg");
    BOOST_FAIL("no throw");
  } catch (const Error& e) {
    const std::string msg = e.what();
    BOOST_TEST(contains(msg, "vgg"));
    for (const char* n : {"lenet", "convnet", "resnet", "inception"}) BOOST_TEST(contains(msg, n));
  }
}

// ------------------------------------------------------------------ the reference models' order

namespace {

// Bit-for-bit equality of two float tensors of one shape.
bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return shape_of(a) == shape_of(b) && std::equal(a.begin(), a.end(), b.begin());
}

// The model's logits and parameter gradients against the layer order as specified (each ReLU
// before its max-pool), computed with the functional ops on the model's own parameters.
void check_against_spec_order(
    Sequential<float>& model,
    const std::function<Variable<float>(const Variable<float>&,
                                        const std::vector<Variable<float>>&)>& spec) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.f, 1.f);
  Tensor<float> x = empty_tensor<float>({5, 1, 28, 28});
  for (float& v : x) v = normal(rng);
  const std::vector<Variable<float>> params = model.parameters();
  const Variable<float> ours = model.forward(Variable<float>(x));
  const Variable<float> theirs = spec(Variable<float>(x), params);
  BOOST_TEST(same_bits(ours.value(), theirs.value()), "logits differ");
  Tensor<float> g = empty_tensor<float>(shape_of(ours.value()));
  for (float& v : g) v = normal(rng);
  model.zero_grad();
  ours.backward(g);
  std::vector<Tensor<float>> grads;
  for (const Variable<float>& p : params) grads.push_back(p.grad());
  model.zero_grad();
  theirs.backward(g);
  for (std::size_t i = 0; i < params.size(); ++i)
    BOOST_TEST(same_bits(params[i].grad(), grads[i]), "gradient of parameter " << i << " differs");
}

}  // namespace

// lenet5() and convnet() apply each ReLU after the max-pool it precedes in the specification; the
// logits and gradients are still those of the specified order, bit for bit.
BOOST_AUTO_TEST_CASE(reference_models_compute_the_specified_order) {
  const Pool2DParams pool{{2, 2}, {2, 2}, {0, 0}};
  manual_seed(21);
  auto net = lenet5<float>();
  check_against_spec_order(*net, [&](const Variable<float>& x,
                                     const std::vector<Variable<float>>& p) {
    Variable<float> h = max_pool2d(relu(conv2d(x, p[0], p[1], Conv2DParams{{1, 1}, {2, 2}})), pool);
    h = flatten(max_pool2d(relu(conv2d(h, p[2], p[3])), pool));
    h = relu(linear(relu(linear(h, p[4], p[5])), p[6], p[7]));
    return linear(h, p[8], p[9]);
  });
  auto conv = convnet<float>();
  check_against_spec_order(
      *conv, [&](const Variable<float>& x, const std::vector<Variable<float>>& p) {
        Variable<float> h = relu(conv2d(relu(conv2d(x, p[0], p[1])), p[2], p[3]));
        h = flatten(max_pool2d(h, pool));
        return linear(relu(linear(h, p[4], p[5])), p[6], p[7]);
      });
}

// The names of the ops recorded in the graph that made `y`, once each node.
std::multiset<std::string> recorded_ops(const Variable<float>& y) {
  std::multiset<std::string> names;
  std::set<const Node<float>*> seen;
  std::vector<std::shared_ptr<Node<float>>> stack{y.grad_fn()};
  while (!stack.empty()) {
    const std::shared_ptr<Node<float>> node = stack.back();
    stack.pop_back();
    if (node == nullptr || !seen.insert(node.get()).second) continue;
    names.insert(node->name());
    for (const auto& input : node->inputs()) stack.push_back(input->grad_fn);
  }
  return names;
}

// A Conv2d followed by a MaxPool2d and a ReLU runs as one conv2d_max_pool2d (LeNet-5: twice; the
// convnet: once), one followed by a ReLU alone as conv2d_relu (the convnet's conv1): the same
// logits and gradients, bit for bit, as with the fusion off, on 1 and 2 threads. A subclass of
// Conv2d keeps its own forward.
BOOST_AUTO_TEST_CASE(sequential_fuses_conv_and_max_pool_with_the_same_bits) {
  for (const std::string model : {"lenet", "convnet"})
    for (int threads : {1, 2}) {
      BOOST_TEST_CONTEXT(model << ", " << threads << " threads") {
        const xgrad::testing::Threads use(threads);
        manual_seed(5);
        auto net = make_model<float>(model);
        auto* seq = dynamic_cast<Sequential<float>*>(net.get());
        BOOST_REQUIRE(seq != nullptr);
        BOOST_TEST(seq->fusion());
        std::mt19937_64 rng(9);
        const Variable<float> x(xt::cast<float>(uniform_init()({6, 1, 28, 28}, rng)));
        const std::vector<int> labels{0, 1, 2, 3, 4, 5};
        std::vector<Tensor<float>> results[2];
        for (bool fuse : {true, false}) {
          seq->set_fusion(fuse);
          for (auto [name, p] : net->named_parameters()) p.zero_grad(true);
          const Variable<float> logits = (*net)(x);
          const std::size_t pools = model == "lenet" ? 2u : 1u;
          const auto ops = recorded_ops(logits);
          BOOST_TEST(ops.count("conv2d_max_pool2d") == (fuse ? pools : 0u));
          BOOST_TEST(ops.count("max_pool2d") == (fuse ? 0u : pools));
          // Each pool is followed by a ReLU, which the fused op takes in; the convnet's conv1 by a
          // ReLU alone (conv2d_relu).
          const std::size_t conv_relus = model == "lenet" ? 0u : 1u;
          BOOST_TEST(ops.count("conv2d_relu") == (fuse ? conv_relus : 0u));
          const std::size_t relus = model == "lenet" ? 4u : 3u;
          BOOST_TEST(ops.count("relu") == (fuse ? relus - pools - conv_relus : relus));
          cross_entropy(logits, labels).backward();
          results[fuse ? 0 : 1].push_back(logits.value());
          for (const auto& [name, p] : net->named_parameters())
            results[fuse ? 0 : 1].push_back(p.grad());
        }
        BOOST_REQUIRE(results[0].size() == results[1].size());
        for (std::size_t i = 0; i < results[0].size(); ++i)
          BOOST_TEST(std::equal(results[0][i].begin(), results[0][i].end(), results[1][i].begin()),
                     "logits or gradient " << i << " differ");
      }
    }

  // A Conv2d whose forward is its own is not fused away.
  struct Doubled : Conv2d<float> {
    using Conv2d<float>::Conv2d;
    Variable<float> forward(const Variable<float>& x) override {
      const Variable<float> y = Conv2d<float>::forward(x);
      return mul(y, Variable<float>(filled_tensor<float>(y.shape(), 2.f)));
    }
  };
  Sequential<float> custom{std::make_shared<Doubled>(1, 2, 3),
                           std::make_shared<MaxPool2d<float>>()};
  const Variable<float> y = custom(Variable<float>(filled_tensor<float>({1, 1, 6, 6}, 1.f)));
  BOOST_TEST(recorded_ops(y).count("conv2d_max_pool2d") == 0u);
  BOOST_TEST(recorded_ops(y).count("mul") == 1u);
  // A pool followed by something else than a ReLU: fused without one.
  Sequential<float> no_relu{std::make_shared<Conv2d<float>>(1, 2, 3),
                            std::make_shared<MaxPool2d<float>>(),
                            std::make_shared<Flatten<float>>()};
  const auto ops = recorded_ops(no_relu(Variable<float>(filled_tensor<float>({1, 1, 6, 6}, 1.f))));
  BOOST_TEST(ops.count("conv2d_max_pool2d") == 1u);
  BOOST_TEST(ops.count("relu") == 0u);
}

// ------------------------------------------------------------------------- parameter counts

BOOST_AUTO_TEST_CASE(lenet5_has_61706_parameters) {
  BOOST_TEST(lenet5<double>()->parameter_count() == 61706u);
  BOOST_TEST(lenet5<float>()->parameter_count() == 61706u);
  BOOST_TEST(convnet<float>()->parameter_count() == 1199882u);
}

BOOST_AUTO_TEST_CASE(resnet_width_scales_every_stage) {
  BOOST_TEST(make_model<float>("resnet16")->parameter_count() == 77754u);
  BOOST_TEST(make_model<float>("resnet")->parameter_count() == 308074u);
  const std::string r = make_model<double>("resnet")->summary({1, 1, 28, 28});
  BOOST_TEST(contains(r, "ResidualBlock(32, 64, stride=2, projection)"));
  BOOST_TEST(contains(r, "[1,128,7,7]"));
  BOOST_TEST(contains(r, "Linear(128, 10)"));
  BOOST_CHECK_THROW(resnet_small<float>(0), Error);
}

BOOST_AUTO_TEST_CASE(named_parameters_are_unique_stable_and_dotted) {
  const std::vector<std::string> expected{"0.weight",  "0.bias", "3.weight", "3.bias",
                                          "7.weight",  "7.bias", "9.weight", "9.bias",
                                          "11.weight", "11.bias"};
  BOOST_TEST(names_of(*lenet5<double>()) == expected, boost::test_tools::per_element());
  for (const std::string& name : model_names()) {
    const auto a = names_of(*make_model<double>(name));
    const auto b = names_of(*make_model<double>(name));
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST(a == b, boost::test_tools::per_element());
      BOOST_TEST(std::set<std::string>(a.begin(), a.end()).size() == a.size());
    }
  }
  const auto resnet = names_of(*resnet_small<double>());
  for (const char* n : {"1.weight", "3.conv1.weight", "3.bn2.bias", "4.downsample.0.weight",
                        "5.downsample.1.weight", "7.bias"})
    BOOST_TEST(std::count(resnet.begin(), resnet.end(), n) == 1, n);
  BOOST_TEST(std::count(resnet.begin(), resnet.end(), "3.downsample.0.weight") == 0);
  const auto inception = names_of(*inception_small<double>());
  BOOST_TEST(std::count(inception.begin(), inception.end(), "3.branch3.2.weight") == 1);
  BOOST_TEST(std::count(inception.begin(), inception.end(), "5.branch_pool.1.bias") == 1);

  auto model = resnet_small<double>();
  const auto named = model->named_parameters();
  const auto params = model->parameters();
  BOOST_REQUIRE(named.size() == params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    BOOST_TEST(named[i].second.impl() == params[i].impl());
    BOOST_TEST(params[i].requires_grad());
  }
  std::vector<std::string> buffers;
  for (const auto& [name, t] : model->named_buffers()) buffers.push_back(name);
  BOOST_TEST(std::count(buffers.begin(), buffers.end(), "1.running_mean") == 1);
  BOOST_TEST(std::count(buffers.begin(), buffers.end(), "4.downsample.1.running_var") == 1);
}

namespace {
// A user-defined module: two registered parameters, one shared child.
struct Twin : Module<double> {
  std::shared_ptr<Linear<double>> shared = std::make_shared<Linear<double>>(3, 3);
  Twin() {
    register_module("a", shared);
    register_module("b", shared);
  }
  V forward(const V& x) override { return (*shared)((*shared)(x)); }
  void register_twice() { register_parameter("a", V(filled_tensor<double>({1}, 0.0))); }
};
}  // namespace

BOOST_AUTO_TEST_CASE(shared_modules_count_once_and_names_must_be_unique) {
  Twin twin;
  BOOST_TEST(names_of(twin) == std::vector<std::string>({"a.weight", "a.bias"}),
             boost::test_tools::per_element());
  BOOST_TEST(twin.parameter_count() == 12u);
  BOOST_CHECK_THROW(twin.register_twice(), Error);
  BOOST_CHECK_THROW(twin.replace_parameter("c.weight", V(filled_tensor<double>({3, 3}, 0.0))),
                    Error);
  BOOST_CHECK_THROW(twin.replace_parameter("a.weight", V(filled_tensor<double>({3, 2}, 0.0))),
                    Error);
  const V w(filled_tensor<double>({3, 3}, 0.25), true);
  twin.replace_parameter("a.weight", w);
  BOOST_TEST(twin.shared->weight().impl() == w.impl());
}

// ------------------------------------------------------------------------------- train / eval

BOOST_AUTO_TEST_CASE(dropout_drops_only_in_training) {
  Dropout<double> drop(0.5, 42);
  const V x(filled_tensor<double>({1000}, 1.0));
  BOOST_TEST(drop.is_training());
  const Tensor<double> y = drop(x).value();
  std::size_t zeros = 0;
  for (double v : y) {
    BOOST_TEST((v == 0.0 || v == 2.0));
    zeros += v == 0.0;
  }
  BOOST_TEST(zeros > 400u);
  BOOST_TEST(zeros < 600u);
  drop.eval();
  BOOST_TEST(!drop.is_training());
  BOOST_TEST(drop(x).value() == x.value());
  drop.train();
  BOOST_TEST(drop(x).value() != x.value());

  // Same seed, same masks.
  Dropout<double> d1(0.3, 9), d2(0.3, 9);
  BOOST_TEST(d1(x).value() == d2(x).value());
}

BOOST_AUTO_TEST_CASE(batch_norm_uses_batch_stats_in_training_and_running_stats_in_eval) {
  BatchNorm2d<double> bn(2);
  const V x = input({4, 2, 3, 3});
  const Tensor<double> y = bn(x).value();
  // Training: each channel normalised to mean 0, variance 1 (γ = 1, β = 0).
  for (std::size_t c = 0; c < 2; ++c) {
    const Tensor<double> ch = xt::view(y, xt::all(), c);
    BOOST_TEST(xt::mean(ch)() == 0.0, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(xt::variance(ch)() == 1.0, boost::test_tools::tolerance(1e-3));
  }
  // Running mean moved 10% of the way to the batch mean.
  const Tensor<double> x0 = xt::view(x.value(), xt::all(), 0);
  BOOST_TEST(bn.running_mean()(0) == 0.1 * xt::mean(x0)(), boost::test_tools::tolerance(1e-9));

  const Tensor<double> rm = bn.running_mean(), rv = bn.running_var();
  bn.eval();
  const Tensor<double> ye = bn(x).value();
  BOOST_TEST(bn.running_mean() == rm);  // eval leaves the statistics alone
  const double expect = (x.value()(1, 1, 2, 0) - rm(1)) / std::sqrt(rv(1) + 1e-5);
  BOOST_TEST(ye(1, 1, 2, 0) == expect, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(train_and_eval_reach_every_nested_module) {
  auto model = resnet_small<double>();
  model->eval();
  std::vector<Module<double>*> stack{model.get()};
  std::size_t visited = 0;
  while (!stack.empty()) {
    Module<double>* m = stack.back();
    stack.pop_back();
    BOOST_TEST(!m->is_training());
    ++visited;
    for (const auto& [name, child] : m->children()) stack.push_back(child.get());
  }
  BOOST_TEST(visited > 20u);
  model->train();
  BOOST_TEST(model->at(4)->children().back().second->children()[1].second->is_training());

  // In eval mode a model is a deterministic function; inference does not move BN stats.
  const V x = input({2, 1, 28, 28});
  model->eval();
  const Tensor<double> a = (*model)(x).value();
  const Tensor<double> b = (*model)(x).value();
  BOOST_TEST(a == b);
}

// ---------------------------------------------------------------------------------- seeding

BOOST_AUTO_TEST_CASE(same_seed_gives_identical_weights_different_seed_different) {
  const auto weights = [](const std::string& name, std::uint64_t seed) {
    manual_seed(seed);
    std::vector<Tensor<float>> out;
    for (const auto& p : make_model<float>(name)->parameters()) out.push_back(p.value());
    return out;
  };
  for (const std::string& name : model_names()) {
    BOOST_TEST_CONTEXT(name) {
      const auto a = weights(name, 1), b = weights(name, 1), c = weights(name, 2);
      BOOST_REQUIRE(a.size() == b.size());
      bool all_same = true, any_diff = false;
      for (std::size_t i = 0; i < a.size(); ++i) {
        all_same = all_same && a[i] == b[i];
        any_diff = any_diff || a[i] != c[i];
      }
      BOOST_TEST(all_same);
      BOOST_TEST(any_diff);
    }
  }
  // Float weights are the double draws rounded: one seed, one model in both precisions.
  manual_seed(5);
  const Tensor<double> wd = lenet5<double>()->parameters()[0].value();
  manual_seed(5);
  const Tensor<float> wf = lenet5<float>()->parameters()[0].value();
  for (std::size_t i = 0; i < wd.size(); ++i) BOOST_TEST(wf.data()[i] == float(wd.data()[i]));
}

BOOST_AUTO_TEST_CASE(default_init_matches_pytorch_bounds) {
  manual_seed(11);
  Conv2d<double> conv(6, 16, 5);
  const double bound = 1.0 / std::sqrt(6.0 * 25.0);  // kaiming_uniform(a=sqrt(5)) = 1/sqrt(fan_in)
  const Tensor<double>& w = conv.weight().value();
  BOOST_TEST(xt::amax(xt::abs(w))() <= bound);
  BOOST_TEST(xt::amax(xt::abs(w))() > 0.95 * bound);  // 2400 draws fill the interval
  BOOST_TEST(xt::amax(xt::abs(conv.bias().value()))() <= bound);
  BatchNorm2d<double> bn(4);
  BOOST_TEST(bn.weight().value() == filled_tensor<double>({4}, 1.0));
  BOOST_TEST(bn.bias().value() == filled_tensor<double>({4}, 0.0));
}

BOOST_AUTO_TEST_CASE(init_functions_follow_fans) {
  BOOST_TEST(fan_in({16, 6, 5, 5}) == 150u);
  BOOST_TEST(fan_out({16, 6, 5, 5}) == 400u);
  BOOST_TEST(fan_in({120, 400}) == 400u);
  BOOST_CHECK_THROW(fan_in({7}), Error);

  std::mt19937_64 rng(1);
  Tensor<double> w = empty_tensor<double>({200, 100});
  kaiming_normal(w, rng);  // std = sqrt(2/100)
  BOOST_TEST(std::sqrt(xt::variance(w)()) == std::sqrt(0.02), boost::test_tools::tolerance(0.03));
  BOOST_TEST(std::abs(xt::mean(w)()) < 0.003);
  kaiming_uniform(w, rng, 0.0, FanMode::fan_out);  // bound sqrt(6/200)
  BOOST_TEST(xt::amax(xt::abs(w))() <= std::sqrt(6.0 / 200.0));
  xavier_uniform(w, rng);  // bound sqrt(6/300)
  BOOST_TEST(xt::amax(xt::abs(w))() <= std::sqrt(6.0 / 300.0));
  BOOST_TEST(xt::amax(xt::abs(w))() > 0.99 * std::sqrt(6.0 / 300.0));
  xavier_normal(w, rng, 2.0);  // std = 2·sqrt(2/300)
  BOOST_TEST(std::sqrt(xt::variance(w)()) == 2.0 * std::sqrt(2.0 / 300.0),
             boost::test_tools::tolerance(0.03));
  zeros(w);
  BOOST_TEST(xt::amax(xt::abs(w))() == 0.0);
  ones(w);
  BOOST_TEST(xt::amin(w)() == 1.0);
}

// ---------------------------------------------------------------------------------- summary

BOOST_AUTO_TEST_CASE(summary_lists_each_layer_and_the_total) {
  auto model = lenet5<double>();
  const std::string s = model->summary({1, 1, 28, 28});
  BOOST_TEST_MESSAGE(s);
  for (const char* part :
       {"Conv2d(1, 6, kernel=5, stride=1, padding=2)", "Conv2d(6, 16, kernel=5, stride=1)",
        "MaxPool2d(kernel=2, stride=2)", "Flatten", "Linear(400, 120)", "Linear(120, 84)",
        "Linear(84, 10)", "[1,6,28,28]", "[1,16,5,5]", "[1,400]", "[1,10]", "48,120",
        "Total params: 61,706"})
    BOOST_TEST(contains(s, part), part);
  BOOST_TEST(std::count(s.begin(), s.end(), '\n') == 12 + 5);

  auto resnet = resnet_small<double>(16);
  const std::string r = resnet->summary({2, 1, 28, 28});
  BOOST_TEST(contains(r, "ResidualBlock(16, 32, stride=2, projection)"));
  BOOST_TEST(contains(r, "[2,64,7,7]"));
  BOOST_TEST(contains(r, "Total params: "));
}

BOOST_AUTO_TEST_CASE(summary_leaves_modes_and_running_stats_alone) {
  auto model = resnet_small<double>();
  model->at(3)->eval();  // mixed modes must come back as they were
  const auto before = model->named_buffers();
  std::vector<Tensor<double>> saved;
  for (const auto& [name, t] : before) saved.push_back(*t);
  model->summary({3, 1, 28, 28});
  BOOST_TEST(model->is_training());
  BOOST_TEST(!model->at(3)->is_training());
  BOOST_TEST(model->at(4)->is_training());
  const auto after = model->named_buffers();
  for (std::size_t i = 0; i < saved.size(); ++i) BOOST_TEST(*after[i].second == saved[i]);
}

BOOST_AUTO_TEST_CASE(summary_on_a_bad_shape_names_the_layer) {
  auto model = lenet5<double>();
  try {
    model->summary({1, 1, 32, 32});  // 16·6·6 = 576 features reach Linear(400, 120)
    BOOST_FAIL("no throw");
  } catch (const Error& e) {
    const std::string msg = e.what();
    BOOST_TEST_MESSAGE(msg);
    BOOST_TEST(contains(msg, "layer 7"));
    BOOST_TEST(contains(msg, "Linear(400, 120)"));
    BOOST_TEST(contains(msg, "[1,576]"));
  }
  try {
    model->summary({1, 3, 28, 28});  // three channels into Conv2d(1, 6)
    BOOST_FAIL("no throw");
  } catch (const Error& e) {
    BOOST_TEST(contains(e.what(), "layer 0"));
    BOOST_TEST(contains(e.what(), "Conv2d(1, 6"));
  }
  BOOST_TEST(model->is_training());
}

BOOST_AUTO_TEST_CASE(wrong_input_throws_from_the_op) {
  Conv2d<double> conv(3, 4, 3);
  BOOST_CHECK_THROW(conv(input({1, 2, 5, 5})), Error);
  BOOST_CHECK_THROW(conv(input({3, 5, 5})), Error);
  Linear<double> fc(5, 2);
  BOOST_CHECK_THROW(fc(input({2, 4})), Error);
  BatchNorm2d<double> bn(3);
  BOOST_CHECK_THROW(bn(input({2, 4, 3, 3})), Error);
  BOOST_CHECK_THROW(Conv2d<double>(3, 4, 3, Conv2DParams{{1, 1}, {0, 0}, {1, 1}, 2}), Error);
  BOOST_CHECK_THROW(Dropout<double>(1.0, 1), Error);
}

// -------------------------------------------------------------------------------- gradcheck

BOOST_AUTO_TEST_CASE(gradcheck_small_sequential_through_its_parameters) {
  manual_seed(21);
  Sequential<double> seq{std::make_shared<Conv2d<double>>(2, 3, 3, Conv2DParams{{1, 1}, {1, 1}}),
                         std::make_shared<BatchNorm2d<double>>(3),
                         std::make_shared<ReLU<double>>(),
                         std::make_shared<AvgPool2d<double>>(),
                         std::make_shared<Flatten<double>>(),
                         std::make_shared<Linear<double>>(12, 4)};
  BOOST_REQUIRE(seq.is_training());
  const GradcheckReport r = check_module(seq, {2, 2, 4, 4});
  BOOST_TEST(r.passed, r);
  BOOST_TEST(r.inputs.size() == 1u + 6u);
  for (const InputReport& in : r.inputs) BOOST_TEST(in.checked > 0u, in.name);
}

BOOST_AUTO_TEST_CASE(gradcheck_residual_blocks_through_their_parameters) {
  manual_seed(22);
  ResidualBlock<double> down(2, 3, 2);
  const GradcheckReport r = check_module(down, {2, 2, 4, 4});
  BOOST_TEST(r.passed, r);
  BOOST_TEST(r.inputs.size() == 1u + 9u);  // x, conv1, bn1 γβ, conv2, bn2 γβ, proj conv, γβ
  for (const InputReport& in : r.inputs) BOOST_TEST(in.checked > 0u, in.name);

  ResidualBlock<double> same(2, 2, 1);
  const GradcheckReport s = check_module(same, {2, 2, 3, 3});
  BOOST_TEST(s.passed, s);
}

BOOST_AUTO_TEST_CASE(gradcheck_inception_block_through_its_parameters) {
  manual_seed(23);
  InceptionBlock<double> block(2, 1, 2, 1, 1);
  const GradcheckReport r = check_module(block, {1, 2, 3, 3});
  BOOST_TEST(r.passed, r);
}

BOOST_AUTO_TEST_CASE(summary_of_a_single_block_and_of_nested_sequentials) {
  ResidualBlock<double> block(2, 4, 2);
  const std::string s = block.summary({1, 2, 6, 6});
  BOOST_TEST(contains(s, "ResidualBlock(2, 4, stride=2, projection)"));
  BOOST_TEST(contains(s, "[1,4,3,3]"));
  BOOST_TEST(contains(s, "Total params: " + std::to_string(block.parameter_count())));

  auto inner =
      std::make_shared<Sequential<double>>(std::initializer_list<std::shared_ptr<Module<double>>>{
          std::make_shared<ReLU<double>>(), std::make_shared<Flatten<double>>()});
  Sequential<double> outer{std::make_shared<Conv2d<double>>(1, 2, 3), inner};
  const std::string n = outer.summary({1, 1, 4, 4});
  BOOST_TEST(contains(n, "1.0 "));
  BOOST_TEST(contains(n, "1.1 "));
  BOOST_TEST(contains(n, "[1,8]"));
}

BOOST_AUTO_TEST_CASE(sgd_on_parameters_trains_the_model) {
  // parameters() share state with the model: updating them in place must lower the loss.
  manual_seed(3);
  Sequential<float> model{std::make_shared<Conv2d<float>>(1, 4, 3),
                          std::make_shared<BatchNorm2d<float>>(4), std::make_shared<ReLU<float>>(),
                          std::make_shared<Flatten<float>>(),
                          std::make_shared<Linear<float>>(4 * 4 * 4, 3)};
  std::mt19937_64 rng(4);
  Tensor<float> images = empty_tensor<float>({12, 1, 6, 6});
  uniform(images, -1.0, 1.0, rng);
  std::vector<int> labels;
  for (int i = 0; i < 12; ++i) labels.push_back(i % 3);
  const Variable<float> x(images);
  const auto loss = [&] { return cross_entropy(model(x), labels); };
  const float first = loss().item();
  for (int step = 0; step < 60; ++step) {
    model.zero_grad();
    loss().backward();
    for (Variable<float>& p : model.parameters()) p.mutable_value() -= 0.1f * p.grad();
  }
  const float last = loss().item();
  BOOST_TEST_MESSAGE("loss " << first << " -> " << last);
  BOOST_TEST(last < 0.25f * first);
}
