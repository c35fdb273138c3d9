# Finds every dependency retclip builds against. All come from Debian packages
# except LibTorch, which comes from the PyPI torch==2.11.0 wheel.

# LibTorch: ask the Python interpreter where the wheel keeps its CMake files.
if(NOT Torch_DIR)
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc ERROR_QUIET)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "retclip: python3 cannot import torch. HINT: run scripts/setup.sh, "
                        "which installs torch==2.11.0 from PyPI.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
endif()
# The wheel is a CUDA build: TorchConfig looks for the CUDA toolkit (nvcc 13.0 at
# /usr/local/cuda here). Torch ignores CMAKE_CUDA_ARCHITECTURES; its own arch list is
# only used for .cu sources, which retclip does not compile by default.
if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
find_package(Torch 2.11 REQUIRED)
if(NOT Torch_VERSION VERSION_EQUAL 2.11.0)
  message(WARNING "retclip is pinned to LibTorch 2.11.0, found ${Torch_VERSION}")
endif()

find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)
find_package(SentencePiece REQUIRED)
# libjpeg(-turbo) directly: the image checks run libjpeg with warnings turned into errors.
find_package(JPEG REQUIRED)
if(RETCLIP_WITH_IMGCODECS)
  find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs)
else()
  find_package(OpenCV REQUIRED COMPONENTS core imgproc)
endif()
if(RETCLIP_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
