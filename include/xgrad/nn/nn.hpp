// The module library: Module, layers, initialisers and reference models.
#pragma once

#include "xgrad/nn/init.hpp"
#include "xgrad/nn/layers.hpp"
#include "xgrad/nn/models.hpp"
#include "xgrad/nn/module.hpp"
