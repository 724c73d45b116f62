# Finds the BLAS behind curvature::blas and sets CURVATURE_BLAS_LIBRARIES (empty when none) and
# CURVATURE_BLAS_IS_OPENBLAS.
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
