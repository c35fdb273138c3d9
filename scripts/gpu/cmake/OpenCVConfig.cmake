# A minimal OpenCV package for the CUDA machine (scripts/gpu/check.sh): the core and
# imgproc libraries of the Debian packages unpacked under ${RETCLIP_GPU_PREFIX}/usr.
# Debian's own OpenCVConfig.cmake (libopencv-dev) imports every OpenCV module and fails
# when one is missing; this one knows only the two retclip needs without imgcodecs.
set(_rc_usr "${RETCLIP_GPU_PREFIX}/usr")
set(_rc_lib "${_rc_usr}/lib/x86_64-linux-gnu")
set(OpenCV_VERSION 4.6.0)
set(OpenCV_INCLUDE_DIRS "${_rc_usr}/include/opencv4")
set(OpenCV_LIBS)
foreach(_rc_m core imgproc)
  if(NOT EXISTS "${_rc_lib}/libopencv_${_rc_m}.so.406")
    set(OpenCV_FOUND FALSE)
    set(OpenCV_NOT_FOUND_MESSAGE "no ${_rc_lib}/libopencv_${_rc_m}.so.406: run scripts/gpu/prepare.sh, then check.sh")
    return()
  endif()
  if(NOT TARGET opencv_${_rc_m})
    add_library(opencv_${_rc_m} SHARED IMPORTED)
    set_target_properties(opencv_${_rc_m} PROPERTIES
      IMPORTED_LOCATION "${_rc_lib}/libopencv_${_rc_m}.so.406"
      INTERFACE_INCLUDE_DIRECTORIES "${OpenCV_INCLUDE_DIRS}")
  endif()
  list(APPEND OpenCV_LIBS opencv_${_rc_m})
endforeach()
if(TARGET opencv_imgproc)
  set_property(TARGET opencv_imgproc PROPERTY INTERFACE_LINK_LIBRARIES opencv_core)
endif()
foreach(_rc_c ${OpenCV_FIND_COMPONENTS})
  if(NOT _rc_c MATCHES "^(core|imgproc)$")
    set(OpenCV_FOUND FALSE)
    set(OpenCV_NOT_FOUND_MESSAGE "OpenCV ${_rc_c} is not in the CUDA bundle: configure with -DRETCLIP_WITH_IMGCODECS=OFF")
    return()
  endif()
endforeach()
set(OpenCV_FOUND TRUE)
