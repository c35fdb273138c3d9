# Helpers that give every retclip target the same flags, the shared precompiled
# header and (for tests) ctest registration with labels.

set(RETCLIP_WARNINGS -Wall -Wextra)

# One object library owns the precompiled LibTorch headers; every module reuses it
# (same flags everywhere, so one PCH serves all).
add_library(retclip_pch OBJECT ${CMAKE_SOURCE_DIR}/src/util/pch.cpp)
target_include_directories(retclip_pch PUBLIC ${CMAKE_SOURCE_DIR}/include)
target_link_libraries(retclip_pch PUBLIC ${TORCH_LIBRARIES})
# The torch wheel ships fmt 12 headers (found before Debian's fmt 9): use them header-only.
target_compile_definitions(retclip_pch PUBLIC FMT_HEADER_ONLY=1)
target_compile_options(retclip_pch PRIVATE ${RETCLIP_WARNINGS})
if(RETCLIP_USE_PCH)
  target_precompile_headers(retclip_pch PRIVATE ${CMAKE_SOURCE_DIR}/src/util/pch.hpp)
endif()

# retclip_module(<name> SOURCES ... DEPS ...): static library retclip_<name>.
function(retclip_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "retclip_module(${name}): no SOURCES given")
  endif()
  add_library(retclip_${name} STATIC ${ARG_SOURCES})
  target_include_directories(retclip_${name} PUBLIC ${CMAKE_SOURCE_DIR}/include)
  target_link_libraries(retclip_${name} PUBLIC ${TORCH_LIBRARIES} ${ARG_DEPS})
  target_compile_definitions(retclip_${name} PUBLIC FMT_HEADER_ONLY=1)
  target_compile_options(retclip_${name} PRIVATE ${RETCLIP_WARNINGS})
  if(RETCLIP_USE_PCH)
    target_precompile_headers(retclip_${name} REUSE_FROM retclip_pch)
  endif()
endfunction()

# retclip_test(<name> [SINGLE] SOURCES ... DEPS ... LABELS ...): one gtest executable
# per module, each test case registered with ctest under the given labels (SINGLE: the
# executable is one ctest test).
function(retclip_test name)
  cmake_parse_arguments(ARG "SINGLE" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_compile_options(${name} PRIVATE ${RETCLIP_WARNINGS})
  target_compile_definitions(${name} PRIVATE
    RETCLIP_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    RETCLIP_BINARY_DIR="${CMAKE_BINARY_DIR}")
  if(RETCLIP_USE_PCH)
    target_precompile_headers(${name} REUSE_FROM retclip_pch)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if(ARG_SINGLE)
    # One ctest test for the whole executable (suites with an expensive shared set-up).
    add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
    return()
  endif()
  include(GoogleTest)
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    DISCOVERY_TIMEOUT 120)
endfunction()
