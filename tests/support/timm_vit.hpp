// The timm ViT fixtures of tests/python/timm_vit_oracle.py (small random CLIP-, RETFound-
// and DINOv2-shaped timm models, their features, timm's resampling), made once per
// version of the script under the build folder and shared by the test processes.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "interop.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::test {

inline const std::string kTimmVitScript = RETCLIP_SOURCE_DIR "/tests/python/timm_vit_oracle.py";

inline std::filesystem::path timm_vit_fixture(std::string* error) {
  namespace fs = std::filesystem;
  const std::string crc = util::hex32(util::crc32(util::read_file(kTimmVitScript)));
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / ("timm_vit_" + crc);
  if (fs::exists(dir / "DONE")) return dir;
  fs::path tmp = dir;
  tmp += ".tmp-" + std::to_string(::getpid());
  util::remove_tree(tmp);
  const fs::path log = tmp.string() + ".log";
  if (run("python3 " + kTimmVitScript + " make " + tmp.string(), log) != 0) {
    *error = "oracle script failed; see " + log.string();
    return {};
  }
  util::write_file_atomic(tmp / "DONE", "ok");
  std::error_code ec;
  fs::rename(tmp, dir, ec);  // another test process may have won the race: use its copy
  if (ec) util::remove_tree(tmp);
  fs::remove(log, ec);
  return dir;
}

}  // namespace retclip::test
