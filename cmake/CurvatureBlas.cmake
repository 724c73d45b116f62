# Finds the BLAS behind curvature::blas and sets CURVATURE_BLAS_LIBRARIES (empty when none).
#
# A single-threaded OpenBLAS: the OpenMP backend splits products across threads itself, so a
# threaded BLAS inside each of its threads would oversubscribe the cores. First Debian's serial
# variant (libopenblas0-serial: /usr/lib/<multiarch>/openblas-serial/libopenblas.so.0), searched
# only in <prefix>/lib*/openblas-serial folders, never the plain lib folder, whose libopenblas.so
# is Debian's threaded variant; set -DCURVATURE_BLAS_LIBRARY=<path> to name another serial BLAS.
# Failing that, whatever find_package(BLAS) gives, with a warning to make it single-threaded.
set(CURVATURE_BLAS_LIBRARIES "")

set(_curvature_serial_dirs "")
foreach(prefix ${CMAKE_PREFIX_PATH} ${CMAKE_SYSTEM_PREFIX_PATH})
  foreach(lib lib/${CMAKE_LIBRARY_ARCHITECTURE} lib lib64)
    list(APPEND _curvature_serial_dirs ${prefix}/${lib}/openblas-serial)
  endforeach()
endforeach()
find_library(CURVATURE_BLAS_LIBRARY NAMES libopenblas.so.0 openblas
             PATHS ${_curvature_serial_dirs} NO_DEFAULT_PATH
             DOC "Single-threaded BLAS that curvature::blas routes Eigen's products to")
unset(_curvature_serial_dirs)

if(CURVATURE_BLAS_LIBRARY)
  set(CURVATURE_BLAS_LIBRARIES ${CURVATURE_BLAS_LIBRARY})
  message(STATUS "curvature::blas: serial BLAS ${CURVATURE_BLAS_LIBRARY}")
else()
  find_package(BLAS QUIET)
  if(BLAS_FOUND)
    set(CURVATURE_BLAS_LIBRARIES ${BLAS_LIBRARIES} ${BLAS_LINKER_FLAGS})
    message(WARNING "curvature::blas: serial OpenBLAS (Debian package libopenblas0-serial) not found; "
                    "using ${BLAS_LIBRARIES}, which may be multi-threaded: run with "
                    "OPENBLAS_NUM_THREADS=1 (or your BLAS's equivalent) so it does not compete "
                    "with the OpenMP backend.")
  endif()
endif()
