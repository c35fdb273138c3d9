// The timm ViT fixtures of tests/python/timm_vit_oracle.py (small random CLIP-, RETFound-
// and DINOv2-shaped timm models, their features, timm's resampling), made once per
// version of the script under the build folder and shared by the test processes.
#pragma once

#include <filesystem>
#include <string>

#include "interop.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::test {

inline const std::string kTimmVitScript = RETCLIP_SOURCE_DIR "/tests/python/timm_vit_oracle.py";

inline std::filesystem::path timm_vit_fixture(std::string* error) {
  return oracle_fixture("timm_vit", kTimmVitScript + " make", {kTimmVitScript}, error);
}

}  // namespace retclip::test
