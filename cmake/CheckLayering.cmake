# Fails when a header includes a header of a concern higher in the stack (STYLE.md: includes
# point down only). Run as: cmake -DROOT=<repo> -P cmake/CheckLayering.cmake
#
# A header in include/curvature/<A>/ may include headers of <A> or of a concern below <A>. Only
# include/curvature/curvature.hpp may include curvature.hpp's own level (everything) and nothing
# else may include it. A folder missing from the order is an error: place new concerns here.
set(order core backend io nn loss model operators estimators measures noise optim sde data train cuda)

if(NOT ROOT)
  get_filename_component(ROOT ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
endif()
set(base ${ROOT}/include/curvature)
file(GLOB_RECURSE headers RELATIVE ${base} ${base}/*.hpp ${base}/*.h ${base}/*.inl ${base}/*.ipp ${base}/*.cuh)

# Sets `out` to the concern (first folder under include/curvature) of the header `inc` included
# from `from` (relative to include/curvature), or to "" when it is not a curvature header.
function(included_concern from inc out)
  set(rel "")
  if(inc MATCHES "^curvature/(.*)$")
    set(rel ${CMAKE_MATCH_1})
  else()
    # A relative include ("detail/x.hpp", "../nn/x.hpp") resolves against the including header.
    get_filename_component(dir ${base}/${from} DIRECTORY)
    get_filename_component(abs ${dir}/${inc} ABSOLUTE)
    if(EXISTS ${abs})
      file(RELATIVE_PATH r ${base} ${abs})
      if(NOT r MATCHES "^\\.\\.")
        set(rel ${r})
      endif()
    endif()
  endif()
  if(rel STREQUAL "")
    set(${out} "" PARENT_SCOPE)
  elseif(NOT rel MATCHES "/")
    set(${out} "${rel}" PARENT_SCOPE)  # a top-level header such as curvature.hpp
  else()
    string(REGEX MATCH "^[^/]+" c ${rel})
    set(${out} "${c}" PARENT_SCOPE)
  endif()
endfunction()

set(errors "")
foreach(h ${headers})
  if(h STREQUAL "curvature.hpp")
    continue()  # the aggregate of everything
  endif()
  if(NOT h MATCHES "/")
    string(APPEND errors "include/curvature/${h}: headers belong in a concern folder\n")
    continue()
  endif()
  string(REGEX MATCH "^[^/]+" concern ${h})
  list(FIND order ${concern} level)
  if(level EQUAL -1)
    string(APPEND errors "include/curvature/${h}: folder '${concern}' is not in the layer order "
                         "(add it to cmake/CheckLayering.cmake)\n")
    continue()
  endif()
  file(STRINGS ${base}/${h} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
  foreach(line ${lines})
    string(REGEX MATCH "include[ \t]*[<\"]([^>\"]+)[>\"]" _ "${line}")
    included_concern(${h} "${CMAKE_MATCH_1}" dep)
    if(dep STREQUAL "")
      continue()
    endif()
    list(FIND order ${dep} dep_level)
    if(dep STREQUAL "curvature.hpp")
      string(APPEND errors "include/curvature/${h}: includes the aggregate curvature.hpp; "
                           "include the headers it needs\n")
    elseif(dep_level EQUAL -1)
      string(APPEND errors "include/curvature/${h}: includes '${CMAKE_MATCH_1}', outside the layers\n")
    elseif(dep_level GREATER level)
      string(APPEND errors "include/curvature/${h}: '${concern}' includes '${CMAKE_MATCH_1}' of the "
                           "higher layer '${dep}'\n")
    endif()
  endforeach()
endforeach()
if(errors)
  string(REPLACE ";" " < " shown "${order}")
  message(FATAL_ERROR "Layering violations (layers, lowest first: ${shown}):\n${errors}")
endif()
list(LENGTH headers n)
message(STATUS "layering: ${n} headers checked")
