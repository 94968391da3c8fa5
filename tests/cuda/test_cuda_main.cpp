// Entry point of the CUDA tests. Without a usable CUDA device they print why and exit with 77,
// which ctest reports as skipped (SKIP_RETURN_CODE); the sources still compile wherever nvcc is.
#include <cuda_runtime_api.h>

#include <cstdio>

#if defined(MLKV_CATCH3)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("mlkv CUDA tests SKIPPED: no CUDA device (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    std::printf("mlkv CUDA tests on %s (compute capability %d.%d)\n", prop.name, prop.major, prop.minor);
  }
  return Catch::Session().run(argc, argv);
}
