#pragma once
/// \file mlkv.hpp
/// Umbrella header: everything host-side. CUDA headers come in only under nvcc.

#include "config.hpp"
#include "error.hpp"
#include "dtype.hpp"
#include "shape.hpp"
#include "presets.hpp"
#include "rope.hpp"
#include "cache/buffer.hpp"
#include "cache/view.hpp"
#include "cache/contiguous.hpp"
#include "cache/paged.hpp"
#include "plan.hpp"
#include "cpu/reference.hpp"
