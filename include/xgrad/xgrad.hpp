// The whole public API.
#pragma once

#include "xgrad/gradcheck.hpp"
#include "xgrad/graph.hpp"
#include "xgrad/node.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/parallel.hpp"
#include "xgrad/registry.hpp"
#include "xgrad/runtime.hpp"
#include "xgrad/tensor.hpp"
#include "xgrad/variable.hpp"

#include "xgrad/data/dataset.hpp"
#include "xgrad/data/idx.hpp"
#include "xgrad/data/loader.hpp"
#include "xgrad/io/checkpoint.hpp"
#include "xgrad/nn/nn.hpp"
#include "xgrad/optim/optimizer.hpp"
#include "xgrad/optim/scheduler.hpp"
