// Catch2 entry point that builds with Debian's Catch2 2.13 and with Catch2 3.
#if defined(MLKV_CATCH3)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) { return Catch::Session().run(argc, argv); }
