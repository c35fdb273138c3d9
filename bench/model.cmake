# bench_model: RET-CLIP forward+backward and training-step ms/step on CPU (C++), compared with PyTorch
# eager by scripts/bench_model.sh (bench/bench_model.py).
add_executable(bench_model ${CMAKE_CURRENT_SOURCE_DIR}/bench_model.cpp)
target_link_libraries(bench_model PRIVATE retclip_model retclip_loss retclip_train retclip_util)
target_compile_options(bench_model PRIVATE ${RETCLIP_WARNINGS})
if(RETCLIP_USE_PCH)
  target_precompile_headers(bench_model REUSE_FROM retclip_pch)
endif()
