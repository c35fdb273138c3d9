# bench_loader: loader throughput (patients/s) from JPEG files and from shards, plus
# packing; driven by scripts/bench_loader.sh, which also runs the PyTorch baseline.
add_executable(bench_loader ${CMAKE_CURRENT_SOURCE_DIR}/bench_loader.cpp)
target_link_libraries(bench_loader PRIVATE retclip_data)
target_compile_options(bench_loader PRIVATE ${RETCLIP_WARNINGS})
if(RETCLIP_USE_PCH)
  target_precompile_headers(bench_loader REUSE_FROM retclip_pch)
endif()
