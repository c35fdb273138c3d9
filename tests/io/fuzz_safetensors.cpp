// libFuzzer target for the safetensors reader: any input must either parse or throw
// retclip::UsageError (never crash, hang or throw anything else). Built only with clang:
//   ./fuzz_safetensors -max_total_time=60 corpus/
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "retclip/io/safetensors.hpp"
#include "retclip/util/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = retclip::io::parse_safetensors(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz-input");
    // A file that parses must survive a write/read round trip unchanged.
    auto again = retclip::io::parse_safetensors(retclip::io::serialize_safetensors(f.tensors, f.metadata),
                                                "fuzz-roundtrip");
    if (again.tensors.size() != f.tensors.size()) __builtin_trap();
  } catch (const retclip::UsageError&) {
  }
  return 0;
}
