// Atomic file writes, reads and CRC-32.
#include "retclip/util/fs.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "retclip/util/error.hpp"

namespace retclip::util {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  RETCLIP_CHECK_USAGE(in.good(), "cannot open ", path.string(), ": ", std::strerror(errno),
                      ". HINT: check the path (relative paths are taken from the current "
                      "directory or the manifest's folder)");
  std::ostringstream ss;
  ss << in.rdbuf();
  RETCLIP_CHECK(!in.bad(), "error while reading ", path.string());
  return ss.str();
}

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  RETCLIP_CHECK(fd >= 0, "cannot create ", tmp.string(), ": ", std::strerror(errno));
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(str_cat("cannot write ", tmp.string(), ": ", std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  RETCLIP_CHECK(::fsync(fd) == 0, "fsync failed for ", tmp.string(), ": ", std::strerror(errno));
  ::close(fd);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  RETCLIP_CHECK(!ec, "cannot rename ", tmp.string(), " to ", path.string(), ": ", ec.message());
  fsync_path(path.has_parent_path() ? path.parent_path() : fs::path("."));
}

namespace {
int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path) == 0 || errno == ENOENT ? 0 : -1;
}
}  // namespace

void remove_tree(const fs::path& path, std::error_code& ec) {
  ec.clear();
  if (::nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
    ec = std::error_code(errno, std::generic_category());
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  remove_tree(path, ec);
  RETCLIP_CHECK(!ec, "cannot remove ", path.string(), ": ", ec.message());
}

namespace {
std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

}  // namespace retclip::util
