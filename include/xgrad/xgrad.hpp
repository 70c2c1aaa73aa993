// The whole public API.
#pragma once

#include "xgrad/gradcheck.hpp"
#include "xgrad/graph.hpp"
#include "xgrad/node.hpp"
#include "xgrad/op.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/registry.hpp"
#include "xgrad/runtime.hpp"
#include "xgrad/tensor.hpp"
#include "xgrad/variable.hpp"
