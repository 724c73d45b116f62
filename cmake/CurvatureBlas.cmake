# Finds the BLAS behind curvature::blas and sets CURVATURE_BLAS_LIBRARIES (empty when none),
# CURVATURE_BLAS_IS_OPENBLAS, and CURVATURE_BLAS_FOR_PROJECT: whether the project's own binaries
# (tests, examples, benchmarks, curvature-probe) route Eigen's products to it (see the end).
#
# The backends run one single-threaded product per thread, so the BLAS must be safe to call from
# several threads at once. Debian's serial OpenBLAS (libopenblas0-serial) is not: it is built
# without locking, and curvature-probe at --threads 2 gave a different IGS on 6 of 20 identical runs
# with it (57.3 once 3994). Its threaded build (libopenblas0-pthread: <prefix>/lib/<multiarch>/
# openblas-pthread/libopenblas.so.0) locks and gave the same bits on 15 of 15; curvature's headers
# set it to one thread per call (backend/blas.hpp). Searched only in openblas-pthread folders;
# set -DCURVATURE_BLAS_LIBRARY=<path> to name another thread-safe BLAS. Failing that, whatever
# find_package(BLAS) gives, with a warning.
set(CURVATURE_BLAS_LIBRARIES "")
set(CURVATURE_BLAS_IS_OPENBLAS OFF)

set(_curvature_blas_dirs "")
foreach(prefix ${CMAKE_PREFIX_PATH} ${CMAKE_SYSTEM_PREFIX_PATH})
  foreach(lib lib/${CMAKE_LIBRARY_ARCHITECTURE} lib lib64)
    list(APPEND _curvature_blas_dirs ${prefix}/${lib}/openblas-pthread)
  endforeach()
endforeach()
find_library(CURVATURE_BLAS_LIBRARY NAMES libopenblas.so.0 openblas
             PATHS ${_curvature_blas_dirs} NO_DEFAULT_PATH
             DOC "Thread-safe BLAS that curvature::blas routes Eigen's products to")
unset(_curvature_blas_dirs)

if(CURVATURE_BLAS_LIBRARY)
  set(CURVATURE_BLAS_LIBRARIES ${CURVATURE_BLAS_LIBRARY})
  if(CURVATURE_BLAS_LIBRARY MATCHES "openblas")
    set(CURVATURE_BLAS_IS_OPENBLAS ON)
  endif()
  message(STATUS "curvature::blas: ${CURVATURE_BLAS_LIBRARY}")
else()
  find_package(BLAS QUIET)
  if(BLAS_FOUND)
    set(CURVATURE_BLAS_LIBRARIES ${BLAS_LIBRARIES} ${BLAS_LINKER_FLAGS})
    message(WARNING "curvature::blas: Debian's threaded OpenBLAS (libopenblas0-pthread) not found; "
                    "using ${BLAS_LIBRARIES}. It must be safe to call from several threads at once "
                    "and should run each call on one thread (for OpenBLAS: OPENBLAS_NUM_THREADS=1), "
                    "since the OpenMP backend already runs one product per thread.")
  endif()
endif()

# CURVATURE_USE_BLAS=AUTO: the project's own binaries use the BLAS unless Eigen's kernels are
# wider than the ones OpenBLAS chose. With -march=native on an AVX-512 CPU Eigen emits 512-bit
# kernels, while Debian 12's OpenBLAS 0.3.21 falls back to its 256-bit Haswell kernels on CPUs it
# does not know (AMD Zen 4 and 5). Measured on such a VM (AMD EPYC family 26, 2026-12-02, one
# thread, bench_gemm on the MLP's and TinyCNN's layer-shaped float products): Eigen 111-140
# GFLOP/s, OpenBLAS 92-97; MLP 100-probe Hutchinson diagonal 278-296 ms with OpenBLAS, 224-233 ms with Eigen
# (benchmarks/README.md). Where OpenBLAS runs AVX-512 kernels of its own (SkylakeX, Cooperlake,
# SapphireRapids) or the CPU has none, the BLAS stays: it ran 93-97 GFLOP/s against Eigen's
# 71-75 on the machine of 2026-12-01. The probe runs at configure time on the build machine;
# OPENBLAS_CORETYPE, if set then, steers OpenBLAS's choice as it does at run time.
# curvature::blas itself is built and exported either way, for consumers to choose.
set(CURVATURE_BLAS_FOR_PROJECT OFF)
if(CURVATURE_BLAS_LIBRARIES)
  set(CURVATURE_BLAS_FOR_PROJECT ON)
  if(CURVATURE_USE_BLAS STREQUAL "AUTO" AND CURVATURE_BLAS_IS_OPENBLAS AND CURVATURE_NATIVE
     AND NOT CMAKE_CROSSCOMPILING)
    try_run(_curvature_probe_run _curvature_probe_compiled ${CMAKE_BINARY_DIR}/curvature_blas_probe
            ${PROJECT_SOURCE_DIR}/cmake/blas_probe.cpp
            COMPILE_DEFINITIONS -march=native
            LINK_LIBRARIES ${CURVATURE_BLAS_LIBRARIES}
            RUN_OUTPUT_VARIABLE _curvature_probe_out)
    if(_curvature_probe_compiled AND _curvature_probe_run EQUAL 0)
      list(GET _curvature_probe_out 0 _curvature_isa)
      list(GET _curvature_probe_out 1 _curvature_core)
      string(TOLOWER "${_curvature_core}" _curvature_core_lc)
      if(_curvature_isa STREQUAL "avx512" AND NOT _curvature_core_lc MATCHES "skylakex|cooperlake|sapphirerapids")
        set(CURVATURE_BLAS_FOR_PROJECT OFF)
        message(STATUS "curvature: OpenBLAS chose its ${_curvature_core} kernels on this AVX-512 CPU; the "
                       "project's binaries use Eigen's 512-bit kernels (CURVATURE_USE_BLAS=ON forces OpenBLAS)")
      else()
        message(STATUS "curvature: OpenBLAS kernels ${_curvature_core} (${_curvature_isa} target): "
                       "the project's binaries use OpenBLAS")
      endif()
    else()
      message(STATUS "curvature: the BLAS probe did not run; the project's binaries use OpenBLAS")
    endif()
    unset(_curvature_probe_run)
    unset(_curvature_probe_compiled)
    unset(_curvature_probe_out)
  endif()
endif()
