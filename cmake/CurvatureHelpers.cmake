# Helpers for the project's own binaries (tests, examples, benchmarks); nothing here reaches the
# installed targets.

# Links `target` with curvature::curvature, every enabled backend target and, where the build
# chose it for the project (CURVATURE_BLAS_FOR_PROJECT), curvature::blas, and gives it the
# project's warning and architecture flags (C++ sources only: nvcc takes host flags differently).
function(curvature_link_all target)
  target_link_libraries(${target} PRIVATE curvature::curvature)
  if(TARGET curvature_openmp)
    target_link_libraries(${target} PRIVATE curvature::openmp)
  endif()
  if(TARGET curvature_blas AND CURVATURE_BLAS_FOR_PROJECT)
    target_link_libraries(${target} PRIVATE curvature::blas)
  endif()
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)  # -std=c++20, not gnu++20
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra>")
  if(CURVATURE_WERROR)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Werror>")
  endif()
  if(CURVATURE_NATIVE)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-march=native>")
    # GCC 12's AVX-512 headers self-initialise placeholders (`__Y = __Y`), which -Wuninitialized
    # reports inside every Eigen kernel (GCC bug 105593, fixed in GCC 13).
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Wno-uninitialized;-Wno-maybe-uninitialized>")
    endif()
  endif()
endfunction()
