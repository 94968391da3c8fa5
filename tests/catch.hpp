#pragma once
// The test macros, from Catch2 2.13 (Debian) or Catch2 3 (the GPU machine).
#if defined(MLKV_CATCH3)
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#else
#include <catch2/catch.hpp>
#endif
