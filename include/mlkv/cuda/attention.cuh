#pragma once
/// \file cuda/attention.cuh
/// Everything of the CUDA path: append with fused rotary, decode and causal prefill attention,
/// over contiguous and paged slot views (include under nvcc only).

#include "append.cuh"
#include "batch.hpp"
#include "common.cuh"
#include "decode.cuh"
#include "prefill.cuh"
