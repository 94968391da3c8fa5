// expect: mlkv: query heads \(16\) must be a multiple of KV heads \(5\)
// Compile-fail test (tests/compile_fail/check.cmake): a selection adding an invalid geometry;
// with MLKV_CONTROL the added geometry is valid.
#ifdef MLKV_CONTROL
#define MLKV_GEOMETRIES "test;big=24/16/4/24/64"
#else
#define MLKV_GEOMETRIES "test;big=24/16/5/24/64"
#endif
#include <mlkv/compiled_geometries.hpp>

int main() { return static_cast<int>(mlkv::compiled_geometries.size()); }
