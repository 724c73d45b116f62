// tune_allocator, applied when the first model is built: a block above glibc's 32 MiB cap on the
// mmap threshold comes from the heap and stays in the process after free, instead of being mapped
// on every allocation and unmapped on every free (which re-faults its pages at each use: 100
// Hutchinson probes in blocks of 50 on the MNIST MLP took 300 ms instead of 161; see
// include/curvature/core/allocator.hpp).
#include <catch2/catch.hpp>

#include <cstdlib>

#include "curvature/curvature.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

TEST_CASE("Once a model is built, large blocks are not mapped one by one", "[core][allocator]") {
#if defined(__GLIBC__) && !defined(CURVATURE_NO_MALLOC_TUNING) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const auto model = curvature::nn::mlp<double>(4, {3}, 2);  // the first model tunes the allocator
  REQUIRE(model.num_params() == 4 * 3 + 3 + 3 * 2 + 2);
  REQUIRE(curvature::tune_allocator());
  const auto mapped = mallinfo2().hblks;
  for (int round = 0; round < 2; ++round) {  // freed and allocated again: still not mapped
    void* block = std::malloc(std::size_t{64} << 20);
    REQUIRE(block != nullptr);
    CHECK(mallinfo2().hblks == mapped);
    std::free(block);
  }
#else
  SUCCEED("not glibc >= 2.33, or CURVATURE_NO_MALLOC_TUNING: nothing to check");
#endif
}
