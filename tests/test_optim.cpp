#define BOOST_TEST_MODULE optim
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <xgrad/optim/optimizer.hpp>
#include <xgrad/optim/scheduler.hpp>
#include <xgrad/xgrad.hpp>

using namespace xgrad;
using namespace xgrad::optim;
using V = Variable<double>;

namespace {

// Makes p.grad == g exactly: zero the gradient, then backward through Σ p·g.
template <class T>
void set_grad(Variable<T>& p, const Tensor<T>& g) {
  p.zero_grad();
  Variable<T> c(g, false);
  sum(mul(p, c)).backward();
}

void check_values(const Tensor<double>& got, std::vector<double> want, double tol = 1e-12) {
  BOOST_REQUIRE_EQUAL(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    BOOST_TEST(got.data()[i] == want[i], boost::test_tools::tolerance(tol));
}

const Tensor<double>* find_state(const NamedTensors<double>& s, const std::string& name) {
  for (const auto& [n, t] : s)
    if (n == name) return &t;
  return nullptr;
}

using OptimizerPtr = std::unique_ptr<Optimizer<double>>;

// Two optimisers of one kind over two lists of parameters, for tests that run the same updates
// twice: kind 0 is SGD with `sgd`, kind 1 Adam with its defaults.
std::pair<OptimizerPtr, OptimizerPtr> twin_optimizers(int kind, std::vector<V> first,
                                                      std::vector<V> second,
                                                      const SGDOptions& sgd) {
  if (kind == 0)
    return {std::make_unique<SGD<double>>(first, sgd), std::make_unique<SGD<double>>(second, sgd)};
  return {std::make_unique<Adam<double>>(first, AdamOptions{}),
          std::make_unique<Adam<double>>(second, AdamOptions{})};
}

}  // namespace

// Hand computation, lr 0.1, momentum 0.9, p0 = [1, -2], g1 = [0.5, 1], g2 = [-1, 2]:
//   step 1: b = g1 = [0.5, 1];                  p = p0 - 0.1 b = [0.95, -2.1]
//   step 2: b = 0.9 [0.5, 1] + [-1, 2] = [-0.55, 2.9];  p = [0.95 + 0.055, -2.1 - 0.29]
BOOST_AUTO_TEST_CASE(sgd_momentum_two_steps) {
  V p(Tensor<double>{1.0, -2.0}, true, "p");
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  SGD<double> opt({p}, o);
  set_grad(p, Tensor<double>{0.5, 1.0});
  opt.step();
  check_values(p.value(), {0.95, -2.1});
  set_grad(p, Tensor<double>{-1.0, 2.0});
  opt.step();
  check_values(p.value(), {1.005, -2.39});
  const auto state = opt.export_state();
  BOOST_REQUIRE_EQUAL(state.size(), 1u);
  BOOST_TEST(state[0].first == "sgd.momentum.0");
  check_values(state[0].second, {-0.55, 2.9});
}

// Dampening 0.5: the first step still copies the gradient (PyTorch), the second uses
//   b = 0.9 [0.5, 1] + 0.5 [-1, 2] = [-0.05, 1.9];  p = [0.95 + 0.005, -2.1 - 0.19]
BOOST_AUTO_TEST_CASE(sgd_momentum_dampening) {
  V p(Tensor<double>{1.0, -2.0}, true, "p");
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.dampening = 0.5;
  SGD<double> opt({p}, o);
  set_grad(p, Tensor<double>{0.5, 1.0});
  opt.step();
  check_values(p.value(), {0.95, -2.1});
  set_grad(p, Tensor<double>{-1.0, 2.0});
  opt.step();
  check_values(p.value(), {0.955, -2.29});
}

// Nesterov, lr 0.1, momentum 0.9, weight decay 0.1, p0 = [1, -2]:
//   step 1: d = [0.5, 1] + 0.1 [1, -2] = [0.6, 0.8]; b = d; g = d + 0.9 b = [1.14, 1.52]
//           p = [1 - 0.114, -2 - 0.152] = [0.886, -2.152]
//   step 2: d = [-1, 2] + 0.1 [0.886, -2.152] = [-0.9114, 1.7848]
//           b = 0.9 [0.6, 0.8] + d = [-0.3714, 2.5048]
//           g = d + 0.9 b = [-1.24566, 4.03912]; p = [0.886 + 0.124566, -2.152 - 0.403912]
BOOST_AUTO_TEST_CASE(sgd_nesterov_weight_decay_two_steps) {
  V p(Tensor<double>{1.0, -2.0}, true, "p");
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.nesterov = true;
  o.weight_decay = 0.1;
  SGD<double> opt({p}, o);
  set_grad(p, Tensor<double>{0.5, 1.0});
  opt.step();
  check_values(p.value(), {0.886, -2.152});
  set_grad(p, Tensor<double>{-1.0, 2.0});
  opt.step();
  check_values(p.value(), {1.010566, -2.555912});
  check_values(opt.export_state()[0].second, {-0.3714, 2.5048});
}

BOOST_AUTO_TEST_CASE(sgd_plain_and_float) {
  // No momentum: p = p - lr (g + wd p) = 1 - 0.5 (2 + 0.2·1) = -0.1
  Variable<float> p(Tensor<float>{1.0f}, true, "p");
  SGDOptions o;
  o.lr = 0.5;
  o.weight_decay = 0.2;
  SGD<float> opt({p}, o);
  set_grad(p, Tensor<float>{2.0f});
  opt.step();
  BOOST_TEST(p.value()(0) == -0.1f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(opt.export_state().empty());
}

// Several parameters, some large enough for the parallel update (20,000 + 3 + 30,000 elements):
// every element follows the momentum formula, whatever the thread count.
BOOST_AUTO_TEST_CASE(sgd_updates_many_and_large_parameters) {
  const std::vector<std::size_t> sizes = {20000, 3, 30000};
  std::vector<Variable<float>> params;
  std::vector<Tensor<float>> p0, g1, g2;
  for (std::size_t s : sizes) {
    Tensor<float> v = empty_tensor<float>({s}), a = empty_tensor<float>({s}),
                  b = empty_tensor<float>({s});
    for (std::size_t i = 0; i < s; ++i) {
      v.data()[i] = 0.001f * float(i % 997) - 0.5f;
      a.data()[i] = 0.01f * float(i % 13) - 0.06f;
      b.data()[i] = 0.02f * float(i % 7) - 0.07f;
    }
    params.emplace_back(v, true);
    p0.push_back(v);
    g1.push_back(a);
    g2.push_back(b);
  }
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  SGD<float> opt(params, o);
  for (std::size_t k = 0; k < params.size(); ++k) set_grad(params[k], g1[k]);
  opt.step();
  for (std::size_t k = 0; k < params.size(); ++k) set_grad(params[k], g2[k]);
  opt.step();
  for (std::size_t k = 0; k < params.size(); ++k) {
    double worst = 0;
    for (std::size_t i = 0; i < sizes[k]; ++i) {
      // b1 = d1 = g1 + wd·p0; p1 = p0 - lr·b1; b2 = 0.9·b1 + g2 + wd·p1; p2 = p1 - lr·b2
      const double p = p0[k].data()[i];
      const double b1 = g1[k].data()[i] + 0.01 * p;
      const double p1 = p - 0.1 * b1;
      const double b2 = 0.9 * b1 + g2[k].data()[i] + 0.01 * p1;
      const double p2 = p1 - 0.1 * b2;
      worst = std::max(worst, std::abs(double(params[k].value().data()[i]) - p2));
    }
    BOOST_TEST(worst < 1e-6, "parameter " << k << ": worst error " << worst);
  }
}

// A gradient whose shape no longer matches its parameter is reported before anything changes.
BOOST_AUTO_TEST_CASE(sgd_shape_mismatch_changes_nothing) {
  V a(Tensor<double>{1.0, 2.0}, true, "a"), b(Tensor<double>{3.0, 4.0}, true, "b");
  SGDOptions o;
  o.lr = 0.1;
  SGD<double> opt({a, b}, o);
  set_grad(a, Tensor<double>{1.0, 1.0});
  set_grad(b, Tensor<double>{1.0, 1.0});
  b.mutable_value() = Tensor<double>{3.0, 4.0, 5.0};  // b changed shape after backward
  try {
    opt.step();
    BOOST_ERROR("step() accepted a gradient of the wrong shape");
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find("parameter 1 has shape [3]") != std::string::npos,
               e.what());
  }
  check_values(a.value(), {1.0, 2.0});  // the first parameter was not updated either
}

BOOST_AUTO_TEST_CASE(sgd_option_checks) {
  V p(Tensor<double>{1.0}, true);
  SGDOptions o;
  o.nesterov = true;  // without momentum
  BOOST_CHECK_THROW(SGD<double>({p}, o), Error);
  o.momentum = 0.9;
  o.dampening = 0.1;
  BOOST_CHECK_THROW(SGD<double>({p}, o), Error);
  SGDOptions neg;
  neg.lr = -1.0;
  BOOST_CHECK_THROW(SGD<double>({p}, neg), Error);
  SGD<double> ok({p}, SGDOptions{});
  BOOST_CHECK_THROW(ok.set_lr(-0.1), Error);
  ok.set_lr(0.25);
  BOOST_TEST(ok.lr() == 0.25);
  BOOST_CHECK_THROW(SGD<double>({V()}, SGDOptions{}), Error);
}

// Adam, lr 0.1, betas (0.9, 0.999), eps 1e-8, p0 = [1, -2], g1 = [0.5, 1], g2 = [-1, 2]:
//   step 1: m = 0.1 g1 = [0.05, 0.1]; v = 0.001 g1² = [0.00025, 0.001]; bc1 = 0.1, bc2 = 0.001
//           p = p0 - (0.1/0.1) m / (sqrt(v)/sqrt(0.001) + 1e-8)
//             = [1 - 0.05/(0.5 + 1e-8), -2 - 0.1/(1 + 1e-8)]
//   step 2: m = 0.9 [0.05, 0.1] + 0.1 [-1, 2] = [-0.055, 0.29]
//           v = 0.999 [0.00025, 0.001] + 0.001 [1, 4] = [0.00124975, 0.004999]
//           bc1 = 1 - 0.81 = 0.19, bc2 = 1 - 0.998001 = 0.001999
//           p = p1 - 0.1 (m/0.19) / (sqrt(v/0.001999) + 1e-8) ≈ [0.93661035424, -2.19651820097]
BOOST_AUTO_TEST_CASE(adam_two_steps) {
  V p(Tensor<double>{1.0, -2.0}, true, "p");
  AdamOptions o;
  o.lr = 0.1;
  Adam<double> opt({p}, o);
  set_grad(p, Tensor<double>{0.5, 1.0});
  opt.step();
  const double p1a = 1.0 - 0.05 / (0.5 + 1e-8), p1b = -2.0 - 0.1 / (1.0 + 1e-8);
  check_values(p.value(), {p1a, p1b});
  set_grad(p, Tensor<double>{-1.0, 2.0});
  opt.step();
  check_values(p.value(), {0.9366103542405656, -2.1965182009718345}, 1e-11);
  const auto s = opt.export_state();
  BOOST_REQUIRE(find_state(s, "adam.exp_avg.0"));
  check_values(*find_state(s, "adam.exp_avg.0"), {-0.055, 0.29});
  check_values(*find_state(s, "adam.exp_avg_sq.0"), {0.00124975, 0.004999});
  check_values(*find_state(s, "adam.step.0"), {2.0});
  BOOST_TEST(opt.step_count(0) == 2u);
}

// Adam with L2 weight decay 0.1: g = [0.5, 1] + 0.1 [1, -2] = [0.6, 0.8]; on the first step
// m/sqrt(v) (bias corrected) is g/|g|, so p = p0 - 0.1 [0.6/(0.6+1e-8), 0.8/(0.8+1e-8)].
BOOST_AUTO_TEST_CASE(adam_l2_first_step) {
  V p(Tensor<double>{1.0, -2.0}, true, "p");
  AdamOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.1;
  Adam<double> opt({p}, o);
  set_grad(p, Tensor<double>{0.5, 1.0});
  opt.step();
  check_values(p.value(), {1.0 - 0.1 * 0.6 / (0.6 + 1e-8), -2.0 - 0.1 * 0.8 / (0.8 + 1e-8)});
}

// AdamW, lr 0.1, weight decay 0.1: p ← p (1 - 0.01), then the plain Adam step (same moments
// as adam_two_steps since the decay does not touch the gradient):
//   step 1: p = [0.99 - 0.05/(0.5+1e-8), -1.98 - 0.1/(1+1e-8)]
//   step 2: p = 0.99 p1 - 0.1 (m/0.19) / (sqrt(v/0.001999) + 1e-8), m, v as in adam_two_steps
BOOST_AUTO_TEST_CASE(adamw_two_steps) {
  V p(Tensor<double>{1.0, -2.0}, true, "p");
  AdamOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.1;
  AdamW<double> opt({p}, o);
  BOOST_TEST(opt.prefix() == "adamw");
  set_grad(p, Tensor<double>{0.5, 1.0});
  opt.step();
  const double p1a = 0.99 - 0.05 / (0.5 + 1e-8), p1b = -1.98 - 0.1 / (1.0 + 1e-8);
  check_values(p.value(), {p1a, p1b});
  set_grad(p, Tensor<double>{-1.0, 2.0});
  opt.step();
  const double u_a = 0.1 * (-0.055 / 0.19) / (std::sqrt(0.00124975 / 0.001999) + 1e-8);
  const double u_b = 0.1 * (0.29 / 0.19) / (std::sqrt(0.004999 / 0.001999) + 1e-8);
  check_values(p.value(), {0.99 * p1a - u_a, 0.99 * p1b - u_b}, 1e-11);
  BOOST_TEST(AdamOptions::adamw_defaults().weight_decay == 1e-2);
}

BOOST_AUTO_TEST_CASE(params_without_grad_are_skipped) {
  V a(Tensor<double>{1.0}, true, "a");
  V b(Tensor<double>{5.0}, true, "b");  // never reached by backward
  SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  so.weight_decay = 0.5;
  SGD<double> sgd({a, b}, so);
  AdamW<double> adamw({a, b});
  set_grad(a, Tensor<double>{1.0});
  sgd.step();
  adamw.step();
  BOOST_TEST(b.value()(0) == 5.0);
  BOOST_TEST(!b.has_grad());
  BOOST_TEST(sgd.export_state().size() == 1u);
  BOOST_TEST(adamw.step_count(1) == 0u);
  sgd.zero_grad();
  BOOST_TEST(a.grad()(0) == 0.0);
}

// zero_grad(true) drops the gradients instead of zeroing them. For parameters the backward
// reaches, the updates must not change, bit for bit; one it does not reach is skipped, as in
// PyTorch, where zero_grad() would go on updating it with a zero gradient.
BOOST_AUTO_TEST_CASE(zero_grad_set_to_none_gives_the_same_updates) {
  for (int kind = 0; kind < 2; ++kind) {
    V a(Tensor<double>{1.0, -2.0, 0.5}, true), b(Tensor<double>{3.0}, true);
    V a2(a.value(), true), b2(b.value(), true);
    SGDOptions so;
    so.lr = 0.1;
    so.momentum = 0.9;
    so.weight_decay = 0.01;
    so.nesterov = true;
    auto [o1, o2] = twin_optimizers(kind, {a, b}, {a2, b2}, so);
    for (int step = 0; step < 4; ++step) {
      // Step 0 reaches both parameters; the later steps reach only a.
      o1->zero_grad();
      o2->zero_grad(true);
      const V c(Tensor<double>{0.3, -0.7, 1.1 * step}, false);
      sum(mul(mul(a, a), c)).backward();
      sum(mul(mul(a2, a2), c)).backward();
      if (step == 0) {
        sum(mul(b, b)).backward();
        sum(mul(b2, b2)).backward();
      }
      BOOST_TEST(!b2.has_grad() == (step > 0));
      o1->step();
      o2->step();
      BOOST_TEST(std::equal(a.value().begin(), a.value().end(), a2.value().begin()));
    }
    // b moved on after step 0 with zero_grad() (momentum or Adam's averages), not with (true).
    BOOST_TEST(b.value()(0) != b2.value()(0));
  }
}

BOOST_AUTO_TEST_CASE(state_round_trip_continues_identically) {
  // Two parameters, one step each, export, import into a fresh optimiser over copies, then one
  // more identical step on both: the values must agree exactly.
  for (int kind = 0; kind < 2; ++kind) {
    V a(Tensor<double>{1.0, 2.0}, true), b(Tensor<double>{{-1.0, 0.5}}, true);
    V a2(a.value(), true), b2(b.value(), true);
    SGDOptions so;
    so.lr = 0.1;
    so.momentum = 0.9;
    auto [o1, o2] = twin_optimizers(kind, {a, b}, {a2, b2}, so);
    set_grad(a, Tensor<double>{0.3, -0.2});
    set_grad(b, Tensor<double>{{0.1, 0.7}});
    o1->step();
    a2.mutable_value() = a.value();
    b2.mutable_value() = b.value();
    NamedTensors<double> state = o1->export_state();
    state.emplace_back("model.weight", Tensor<double>{9.0});  // other prefixes are ignored
    o2->import_state(state);
    set_grad(a, Tensor<double>{-0.5, 0.4});
    set_grad(b, Tensor<double>{{0.2, -0.1}});
    set_grad(a2, Tensor<double>{-0.5, 0.4});
    set_grad(b2, Tensor<double>{{0.2, -0.1}});
    o1->step();
    o2->step();
    for (std::size_t i = 0; i < 2; ++i) {
      BOOST_TEST(a.value()(i) == a2.value()(i));
      BOOST_TEST(b.value()(0, i) == b2.value()(0, i));
    }
  }
}

BOOST_AUTO_TEST_CASE(state_import_errors) {
  V a(Tensor<double>{1.0, 2.0}, true);
  SGDOptions so;
  so.momentum = 0.9;
  SGD<double> sgd({a}, so);
  auto expect = [](auto fn, const std::string& needle) {
    try {
      fn();
      BOOST_ERROR("no throw, expected: " + needle);
    } catch (const Error& e) {
      BOOST_TEST_INFO(e.what());
      BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  expect([&] { sgd.import_state({{"sgd.momentum.0", Tensor<double>{1.0}}}); }, "[2]");
  expect(
      [&] {
        sgd.import_state({{"sgd.momentum.3", Tensor<double>{1.0, 1.0}}});
      },
      "sgd.momentum.3");
  expect(
      [&] {
        sgd.import_state({{"sgd.velocity.0", Tensor<double>{1.0, 1.0}}});
      },
      "sgd.velocity.0");
  expect([&] { sgd.import_state({{"sgd.momentum", Tensor<double>{1.0, 1.0}}}); }, "sgd.momentum");
  Adam<double> adam({a}, AdamOptions{});
  expect([&] { adam.import_state({{"adam.exp_avg.0", Tensor<double>{1.0, 1.0}}}); }, "incomplete");
}

BOOST_AUTO_TEST_CASE(step_lr_sequence) {
  V p(Tensor<double>{1.0}, true);
  SGDOptions o;
  o.lr = 0.1;
  SGD<double> opt({p}, o);
  StepLR<double> sched(opt, 3, 0.5);
  const std::vector<double> want = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125};
  for (std::size_t e = 0; e < want.size(); ++e) {
    BOOST_TEST(sched.epoch() == e);
    BOOST_TEST(opt.lr() == want[e], boost::test_tools::tolerance(1e-15));
    sched.step();
  }
  sched.set_epoch(4);
  BOOST_TEST(opt.lr() == 0.05, boost::test_tools::tolerance(1e-15));
  BOOST_CHECK_THROW(StepLR<double>(opt, 0), Error);
}

BOOST_AUTO_TEST_CASE(cosine_lr_sequence) {
  V p(Tensor<double>{1.0}, true);
  SGDOptions o;
  o.lr = 0.1;
  SGD<double> opt({p}, o);
  CosineAnnealingLR<double> sched(opt, 4, 0.01);
  // eta_min + (0.1 - 0.01)(1 + cos(pi e / 4))/2, with cos(pi/4) = sqrt(2)/2; past T_max the
  // cosine rises again (PyTorch).
  const double h = std::sqrt(2.0) / 2.0;
  const std::vector<double> want = {
      0.1,  0.01 + 0.09 * (1 + h) / 2, 0.055, 0.01 + 0.09 * (1 - h) / 2,
      0.01, 0.01 + 0.09 * (1 - h) / 2, 0.055};
  for (std::size_t e = 0; e < want.size(); ++e) {
    BOOST_TEST(opt.lr() == want[e], boost::test_tools::tolerance(1e-12));
    sched.step();
  }
  BOOST_CHECK_THROW(CosineAnnealingLR<double>(opt, 0), Error);
}

BOOST_AUTO_TEST_CASE(clip_grad_norm_scales_when_over) {
  V a(Tensor<double>{0.0, 0.0}, true), b(Tensor<double>{0.0}, true), c(Tensor<double>{1.0}, true);
  set_grad(a, Tensor<double>{3.0, 4.0});
  set_grad(b, Tensor<double>{12.0});
  // c has no gradient and is skipped; total = sqrt(9 + 16 + 144) = 13.
  const double total = clip_grad_norm<double>({a, b, c}, 6.5);
  BOOST_TEST(total == 13.0, boost::test_tools::tolerance(1e-14));
  const double coef = 6.5 / (13.0 + 1e-6);
  check_values(a.grad(), {3.0 * coef, 4.0 * coef});
  check_values(b.grad(), {12.0 * coef});
  // Under the limit: unchanged, and the norm is now about 6.5.
  const double again = clip_grad_norm<double>({a, b, c}, 100.0);
  BOOST_TEST(again == 13.0 * coef, boost::test_tools::tolerance(1e-12));
  check_values(b.grad(), {12.0 * coef});
  BOOST_CHECK_THROW(clip_grad_norm<double>({a}, 0.0), Error);

  Variable<float> f(Tensor<float>{0.0f}, true);
  set_grad(f, Tensor<float>{-10.0f});
  BOOST_TEST(clip_grad_norm<float>({f}, 1.0) == 10.0, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(f.grad()(0) == -1.0f, boost::test_tools::tolerance(1e-5f));
}
