# Helpers that give every retclip target the same flags, the shared precompiled
# header and (for tests) ctest registration with labels. docs/BUILD.md ("Compile time")
# says why the build is arranged this way and what each choice saves.

# -Werror=unused-function: in a unity batch an anonymous-namespace overload from another
# file can win overload resolution and leave this file's own function unused (and the
# output silently different); that must stop the build.
set(RETCLIP_WARNINGS -Wall -Wextra -Werror=unused-function)

# Unity build of the files that include LibTorch: up to RETCLIP_UNITY_BATCH of a target's
# tensor files compile as one translation unit, so the precompiled header is loaded and
# LibTorch's templates are instantiated and optimised once per batch instead of once per
# file (src/eval: 6 files, 140 s apart, 35 s together). Files listed with retclip_no_pch()
# stay single: they are quick alone, and touching one rebuilds only that file. Developers
# iterating on one tensor file can configure with -DRETCLIP_UNITY=OFF.
option(RETCLIP_UNITY "Compile each target's LibTorch files in unity batches" ON)
set(RETCLIP_UNITY_BATCH 8 CACHE STRING "files per unity translation unit")

# retclip_unity(<target>): the unity settings above for one target.
function(retclip_unity target)
  set_target_properties(${target} PROPERTIES
    UNITY_BUILD ${RETCLIP_UNITY} UNITY_BUILD_BATCH_SIZE ${RETCLIP_UNITY_BATCH})
  if(RETCLIP_UNITY)
    # A batched .cpp is an included file to gcc, which then warns about every class that
    # derives from an anonymous-namespace type (a gtest fixture): true of headers, not here.
    target_compile_options(${target} PRIVATE -Wno-subobject-linkage)
  endif()
endfunction()

# One object library owns the precompiled LibTorch headers; every target reuses it (same
# flags everywhere, so one PCH serves all). Loading it costs ~6 s per file, which only
# pays off where LibTorch is included: files that include none are listed with
# retclip_no_pch() and compile without it.
add_library(retclip_pch OBJECT ${CMAKE_SOURCE_DIR}/src/util/pch.cpp)
target_include_directories(retclip_pch PUBLIC ${CMAKE_SOURCE_DIR}/include)
target_link_libraries(retclip_pch PUBLIC ${TORCH_LIBRARIES})
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
  target_compile_options(retclip_${name} PRIVATE ${RETCLIP_WARNINGS})
  if(RETCLIP_USE_PCH)
    target_precompile_headers(retclip_${name} REUSE_FROM retclip_pch)
  endif()
  retclip_unity(retclip_${name})
endfunction()

# retclip_no_pch(<sources>): sources (of a target in the calling directory) that include
# no LibTorch header (compiled without the precompiled header, outside unity batches); tests/build/pch_lists_test.py checks each list against the includes.
function(retclip_no_pch)
  set_source_files_properties(${ARGN} PROPERTIES
    SKIP_PRECOMPILE_HEADERS ON SKIP_UNITY_BUILD_INCLUSION ON)
endfunction()

# retclip_test(<name> [SINGLE] SOURCES ... DEPS ... LABELS ...): one gtest executable
# per module, each test case registered with ctest under the given labels (SINGLE: the
# executable is one ctest test).
function(retclip_test name)
  cmake_parse_arguments(ARG "SINGLE" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  # A test's own code is glue around the library it tests (which keeps the release flags);
  # -O1 compiles it in about two thirds of the time -O3 takes.
  target_compile_options(${name} PRIVATE ${RETCLIP_WARNINGS} -O1)
  target_compile_definitions(${name} PRIVATE
    RETCLIP_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    RETCLIP_BINARY_DIR="${CMAKE_BINARY_DIR}")
  if(RETCLIP_USE_PCH)
    target_precompile_headers(${name} REUSE_FROM retclip_pch)
  endif()
  retclip_unity(${name})
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
