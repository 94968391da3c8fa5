// expect: MLKV_GEOMETRIES names unknown geometry .*pythia-9000
// Compile-fail test (tests/compile_fail/check.cmake): a selection naming a geometry that
// mlkv/compiled_geometries.hpp does not know; with MLKV_CONTROL the selection is valid.
#ifdef MLKV_CONTROL
#define MLKV_GEOMETRIES "paper,MLKV-2"
#else
#define MLKV_GEOMETRIES "paper,pythia-9000"
#endif
#include <mlkv/compiled_geometries.hpp>

int main() { return static_cast<int>(mlkv::compiled_geometries.size()); }
