# Helpers for the project's own binaries (tests, examples, benchmarks); nothing here reaches the
# installed targets.

# Links `target` with curvature::curvature and every enabled backend target, and gives it the
# project's warning and architecture flags.
function(curvature_link_all target)
  target_link_libraries(${target} PRIVATE curvature::curvature)
  if(TARGET curvature_openmp)
    target_link_libraries(${target} PRIVATE curvature::openmp)
  endif()
  if(TARGET curvature_blas)
    target_link_libraries(${target} PRIVATE curvature::blas)
  endif()
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(CURVATURE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(CURVATURE_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
    # GCC 12's AVX-512 headers self-initialise placeholders (`__Y = __Y`), which -Wuninitialized
    # reports inside every Eigen kernel (GCC bug 105593, fixed in GCC 13).
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
    endif()
  endif()
endfunction()
