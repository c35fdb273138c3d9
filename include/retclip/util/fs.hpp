// File helpers with the guarantees checkpoints and shards rely on: whole-file
// reads with clear errors, atomic writes (temporary name, fsync, rename, fsync of
// the directory) and a CRC-32 for record and file checksums.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace retclip::util {

namespace fs = std::filesystem;

/// Reads a whole file; throws UsageError naming the path when it cannot be read.
std::string read_file(const fs::path& path);

/// Writes `bytes` to `path` atomically: `path.tmp-<pid>` is written, fsynced and
/// renamed over `path`, then the directory is fsynced. A crash leaves either the
/// old file or the new one, never a torn one.
void write_file_atomic(const fs::path& path, std::string_view bytes);

/// fsyncs a file or directory (no-op where the OS refuses directories).
void fsync_path(const fs::path& path);

/// Removes a file or a directory tree (no error when it does not exist). Use this, not
/// std::filesystem::remove_all: libtorch.so from the 2.11 wheel exports its own copy of
/// the std::filesystem functions, and its remove_all crashes in processes that load it.
void remove_tree(const fs::path& path);
/// As above; reports a failure in `ec` instead of throwing.
void remove_tree(const fs::path& path, std::error_code& ec);

/// CRC-32 (IEEE 802.3, as zlib's crc32). `crc` chains calls over pieces.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);
inline uint32_t crc32(std::string_view s, uint32_t crc = 0) {
  return crc32(s.data(), s.size(), crc);
}

/// Hex string of a 32-bit value, 8 digits.
std::string hex32(uint32_t v);

}  // namespace retclip::util
