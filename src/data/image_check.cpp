// Image headers (JPEG, PNG, TIFF, BMP, WebP) parsed from their bytes, the pixel limit,
// and integrity checks of the compressed data: libjpeg with warnings made errors, PNG
// chunk CRCs. Runs before OpenCV decodes, which prints libjpeg's warnings to stderr
// and returns the damaged pixels as if nothing happened.
#include "retclip/data/image_check.hpp"

#include <fmt/format.h>

// jpeglib.h needs size_t and FILE declared first.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

extern "C" {
#include <jerror.h>
#include <jpeglib.h>
}

#include <csetjmp>
#include <cstdlib>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::data {

namespace {

uint32_t be16(std::string_view b, size_t i) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[i])) << 8) |
         static_cast<unsigned char>(b[i + 1]);
}
uint32_t be32(std::string_view b, size_t i) {
  return (be16(b, i) << 16) | be16(b, i + 2);
}
uint32_t le16(std::string_view b, size_t i) {
  return static_cast<unsigned char>(b[i]) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[i + 1])) << 8);
}
uint32_t le32(std::string_view b, size_t i) {
  return le16(b, i) | (le16(b, i + 2) << 16);
}
uint32_t le24(std::string_view b, size_t i) {
  return le16(b, i) | (static_cast<uint32_t>(static_cast<unsigned char>(b[i + 2])) << 16);
}
unsigned char u8(std::string_view b, size_t i) {
  return static_cast<unsigned char>(b[i]);
}

/// Random access to the bytes of an encoded image, in memory or in a file; the
/// header parsers read only the fields they need.
class ByteSource {
 public:
  explicit ByteSource(const std::string& where) : where_(where) {}
  virtual ~ByteSource() = default;
  /// `n` bytes at `offset`; throws UsageError when the data ends first.
  std::string_view need(uint64_t offset, size_t n, const char* format) {
    std::string_view v = read(offset, n);
    if (v.size() < n)
      throw UsageError(str_cat("image ", where_, " ends inside its ", format, " header (at byte ",
                               offset + v.size(),
                               "). HINT: the file is truncated or damaged; "
                               "re-export it, or fix or remove its row"));
    return v;
  }
  /// Up to `n` bytes at `offset` (fewer at the end of the data).
  virtual std::string_view read(uint64_t offset, size_t n) = 0;

 protected:
  std::string where_;
};

class MemoryBytes final : public ByteSource {
 public:
  MemoryBytes(std::string_view b, const std::string& where) : ByteSource(where), b_(b) {}
  std::string_view read(uint64_t offset, size_t n) override {
    return offset >= b_.size() ? std::string_view() : b_.substr(offset, n);
  }

 private:
  std::string_view b_;
};

class FileBytes final : public ByteSource {
 public:
  FileBytes(std::ifstream& in, const std::string& where) : ByteSource(where), in_(in) {}
  std::string_view read(uint64_t offset, size_t n) override {
    buf_.resize(n);
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(buf_.data(), static_cast<std::streamsize>(n));
    if (in_.bad())
      throw UsageError(str_cat("image ", where_, " cannot be read: ", std::strerror(errno),
                               ". HINT: check the disk and the file's permissions"));
    buf_.resize(static_cast<size_t>(in_.gcount()));
    return buf_;
  }

 private:
  std::ifstream& in_;
  std::string buf_;
};

bool has_prefix(std::string_view b, std::string_view magic) {
  return b.size() >= magic.size() && b.substr(0, magic.size()) == magic;
}

[[noreturn]] void bad_header(const std::string& where, const std::string& format,
                             const std::string& what) {
  throw UsageError(str_cat("image ", where, " has a broken ", format, " header: ", what,
                           ". HINT: the file is damaged or was written by a broken tool; "
                           "re-export it, or fix or remove its row"));
}

void check_dims(const ImageInfo& info, const std::string& where, const char* field) {
  if (info.width <= 0 || info.height <= 0)
    bad_header(where, info.format,
               fmt::format("{} gives {} x {} pixels", field, info.width, info.height));
}

/// SOFn markers (frame headers carrying the dimensions): C0-CF except DHT (C4),
/// JPG (C8) and DAC (CC).
bool is_sof(unsigned char m) {
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/// Walks the marker segments (skipping their bodies) to the first frame header.
ImageInfo probe_jpeg(ByteSource& src, const std::string& where) {
  uint64_t i = 2;
  for (;;) {
    std::string_view m = src.need(i, 2, "JPEG");
    if (u8(m, 0) != 0xFF)
      bad_header(where, "JPEG",
                 fmt::format("expected a marker at byte {}, found 0x{:02X}", i, u8(m, 0)));
    const unsigned char code = u8(m, 1);
    if (code == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (code == 0x01 || (code >= 0xD0 && code <= 0xD7)) {  // markers without a length
      i += 2;
      continue;
    }
    if (code == 0xDA || code == 0xD9)
      bad_header(where, "JPEG", "no frame header (SOF) before the image data");
    std::string_view seg = src.need(i, is_sof(code) ? 9 : 4, "JPEG");
    const uint32_t len = be16(seg, 2);
    if (len < 2) bad_header(where, "JPEG", fmt::format("segment at byte {} has length {}", i, len));
    if (is_sof(code)) {
      ImageInfo info{"JPEG", be16(seg, 7), be16(seg, 5)};
      check_dims(info, where, "the frame header");
      return info;
    }
    i += 2 + len;
  }
}

ImageInfo probe_png(ByteSource& src, const std::string& where) {
  std::string_view b = src.need(0, 24, "PNG");
  if (b.substr(12, 4) != "IHDR") bad_header(where, "PNG", "the first chunk is not IHDR");
  ImageInfo info{"PNG", be32(b, 16), be32(b, 20)};
  if (info.width > INT32_MAX || info.height > INT32_MAX) info.width = info.height = 0;
  check_dims(info, where, "IHDR");
  return info;
}

ImageInfo probe_bmp(ByteSource& src, const std::string& where) {
  std::string_view b = src.need(0, 26, "BMP");
  ImageInfo info{"BMP", 0, 0};
  if (le32(b, 14) == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    info.width = le16(b, 18);
    info.height = le16(b, 20);
  } else {
    info.width = static_cast<int32_t>(le32(b, 18));
    info.height = static_cast<int32_t>(le32(b, 22));
    if (info.height < 0) info.height = -info.height;  // top-down rows
  }
  check_dims(info, where, "the header");
  return info;
}

/// Classic TIFF and BigTIFF: ImageWidth (256) and ImageLength (257) of the first
/// image directory, wherever in the file it is.
ImageInfo probe_tiff(ByteSource& src, const std::string& where) {
  std::string_view h = src.need(0, 16, "TIFF");
  const bool le = h[0] == 'I';
  auto r16 = [le](std::string_view b, size_t i) { return le ? le16(b, i) : be16(b, i); };
  auto r32 = [le](std::string_view b, size_t i) { return le ? le32(b, i) : be32(b, i); };
  auto r64 = [&](std::string_view b, size_t i) {
    return le ? (static_cast<uint64_t>(r32(b, i + 4)) << 32) | r32(b, i)
              : (static_cast<uint64_t>(r32(b, i)) << 32) | r32(b, i + 4);
  };
  const bool big = r16(h, 2) == 43;  // BigTIFF: 64-bit offsets and counts
  const size_t entry = big ? 20 : 12, count_size = big ? 8 : 2;
  const uint64_t ifd = big ? r64(h, 8) : r32(h, 4);
  std::string_view c = src.need(ifd, count_size, "TIFF");
  const uint64_t n = big ? r64(c, 0) : r16(c, 0);
  if (n > 4096) bad_header(where, "TIFF", fmt::format("the first directory claims {} entries", n));
  const std::string dir(src.need(ifd + count_size, static_cast<size_t>(n * entry), "TIFF"));
  ImageInfo info{"TIFF", 0, 0};
  for (uint64_t k = 0; k < n; ++k) {
    const size_t e = static_cast<size_t>(k * entry);
    const uint32_t tag = r16(dir, e), type = r16(dir, e + 2);
    const size_t value = e + (big ? 12 : 8);
    int64_t v = 0;
    if (type == 3) v = r16(dir, value);  // SHORT
    if (type == 4) v = r32(dir, value);  // LONG
    if (type == 16 && big) v = static_cast<int64_t>(std::min<uint64_t>(r64(dir, value), INT64_MAX));
    if (tag == 256) info.width = v;
    if (tag == 257) info.height = v;
  }
  check_dims(info, where, "the first directory (ImageWidth, ImageLength)");
  return info;
}

ImageInfo probe_webp(ByteSource& src, const std::string& where) {
  std::string_view b = src.need(0, 30, "WebP");
  const std::string_view chunk = b.substr(12, 4);
  ImageInfo info{"WebP", 0, 0};
  if (chunk == "VP8X") {
    info.width = le24(b, 24) + 1;
    info.height = le24(b, 27) + 1;
  } else if (chunk == "VP8L") {
    if (u8(b, 20) != 0x2F) bad_header(where, "WebP", "bad lossless signature");
    const uint32_t bits = le32(b, 21);
    info.width = (bits & 0x3FFF) + 1;
    info.height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (chunk == "VP8 ") {
    if (u8(b, 23) != 0x9D || u8(b, 24) != 0x01 || u8(b, 25) != 0x2A)
      bad_header(where, "WebP", "bad key-frame start code");
    info.width = le16(b, 26) & 0x3FFF;
    info.height = le16(b, 28) & 0x3FFF;
  } else {
    bad_header(where, "WebP", fmt::format("unknown first chunk '{}'", printable_prefix(chunk, 4)));
  }
  check_dims(info, where, "the header");
  return info;
}

ImageInfo probe(ByteSource& src, const std::string& where) {
  const std::string head(src.read(0, 16));
  if (head.empty())
    throw UsageError(str_cat("image ", where,
                             " is empty (0 bytes). HINT: the file was not "
                             "written completely; re-export it"));
  if (has_prefix(head, "\xFF\xD8\xFF")) return probe_jpeg(src, where);
  if (has_prefix(head, "\x89PNG\r\n\x1A\n")) return probe_png(src, where);
  for (const char* magic : {"II*\0", "MM\0*", "II+\0", "MM\0+"})
    if (has_prefix(head, std::string_view(magic, 4))) return probe_tiff(src, where);
  if (has_prefix(head, "BM")) return probe_bmp(src, where);
  if (has_prefix(head, "RIFF") && head.size() >= 12 && head.substr(8, 4) == "WEBP")
    return probe_webp(src, where);
  throw UsageError(str_cat("image ", where, " is not an image (it starts with '",
                           printable_prefix(head),
                           "'). HINT: expected JPEG, PNG, TIFF, BMP or WebP data; the file may "
                           "be text or HTML saved under an image name; fix or remove its row"));
}

// ---- JPEG through libjpeg ----------------------------------------------------------
// libjpeg reports errors through error_exit (must not return) and warnings through
// emit_message(level -1). Both jump back to check_jpeg with the formatted message.
// Nothing with a destructor lives between setjmp and longjmp.

struct JpegErrors {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace output
  const int code = cinfo->err->msg_code;
  // Warnings about metadata leave the pixels intact.
  if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC) return;
  auto* e = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

/// Entropy-decodes every scan at 1/8 scale (the IDCT then uses only the DC term, so
/// the cost is mostly Huffman decoding) and reads to the end-of-image marker.
/// Returns false with libjpeg's message when it errs or warns.
bool jpeg_decodes_cleanly(const unsigned char* data, size_t size, char* message) {
  jpeg_decompress_struct cinfo;
  JpegErrors err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_on_error;
  err.pub.emit_message = jpeg_on_message;
  err.message[0] = '\0';
  JSAMPLE* volatile row = nullptr;  // assigned after setjmp, read after longjmp
  if (setjmp(err.jump)) {
    std::free(row);
    std::strcpy(message, err.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.scale_num = 1;
  cinfo.scale_denom = 8;
  cinfo.dct_method = JDCT_IFAST;
  cinfo.do_fancy_upsampling = FALSE;
  jpeg_start_decompress(&cinfo);
  row = static_cast<JSAMPLE*>(
      std::malloc(static_cast<size_t>(cinfo.output_width) * cinfo.output_components));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[1] = {const_cast<JSAMPLE*>(row)};
    jpeg_read_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_decompress(&cinfo);
  std::free(row);
  row = nullptr;
  jpeg_destroy_decompress(&cinfo);
  return true;
}

void check_png_chunks(std::string_view b, const std::string& where) {
  auto damaged = [&](const std::string& what) {
    throw UsageError(str_cat("image ", where, " is a damaged PNG: ", what,
                             ". HINT: the file was altered after it was written (bad disk, "
                             "interrupted copy); re-export it, or fix or remove its row"));
  };
  size_t i = 8;
  bool first = true, idat = false;
  while (i + 12 <= b.size()) {
    const uint32_t len = be32(b, i);
    const std::string_view name = b.substr(i + 4, 4);
    if (len > b.size() - i - 12)
      damaged(fmt::format("chunk '{}' at byte {} claims {} bytes but the file ends first",
                          printable_prefix(name, 4), i, len));
    const uint32_t want = be32(b, i + 8 + len);
    const uint32_t got = util::crc32(b.substr(i + 4, 4 + len));
    if (want != got)
      damaged(
          fmt::format("chunk '{}' at byte {} fails its CRC check (stored {:08x}, computed "
                      "{:08x})",
                      printable_prefix(name, 4), i, want, got));
    if (first && name != "IHDR") damaged("the first chunk is not IHDR");
    first = false;
    if (name == "IDAT") idat = true;
    if (name == "IEND") {
      if (!idat) damaged("no image data (IDAT) before IEND");
      return;
    }
    i += 12 + len;
  }
  damaged(fmt::format("the file ends at byte {} without an IEND chunk (truncated)", b.size()));
}

}  // namespace

std::string printable_prefix(std::string_view b, size_t n) {
  std::string out;
  for (size_t i = 0; i < b.size() && i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(b[i]);
    if (c >= 32 && c < 127)
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02X}", c);
  }
  return out;
}

ImageInfo probe_image(std::string_view bytes, const std::string& where) {
  MemoryBytes src(bytes, where);
  return probe(src, where);
}

void check_image_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);  // follows symlinks
  if (ec || !fs::exists(st)) {
    std::error_code lec;
    const bool is_link = fs::is_symlink(fs::symlink_status(path, lec));
    if (is_link && ec.value() == ELOOP)
      throw UsageError(str_cat("image file ", path, " is a symlink loop (", ec.message(),
                               "). HINT: point the link at the image file itself"));
    if (is_link)
      throw UsageError(str_cat("image file ", path, " is a dangling symlink (its target ",
                               fs::read_symlink(path, lec).string(),
                               " does not exist). HINT: copy the image itself, or fix the link"));
    throw UsageError(
        str_cat("image file not found: ", path,
                ec && ec != std::errc::no_such_file_or_directory ? " (" + ec.message() + ")" : "",
                ". HINT: image paths in a manifest are relative to the manifest's "
                "folder; check the path and that the file was copied"));
  }
  if (fs::is_directory(st))
    throw UsageError(str_cat("expected an image file but ", path,
                             " is a directory. HINT: name the image file inside it"));
  if (!fs::is_regular_file(st))
    throw UsageError(str_cat("expected an image file but ", path,
                             " is not a regular file (a device, pipe or socket). HINT: copy the "
                             "image to a regular file"));
  const auto size = fs::file_size(path, ec);
  if (!ec && size == 0)
    throw UsageError(str_cat("image ", path,
                             " is empty (0 bytes). HINT: the file was not "
                             "written completely; re-export it"));
  std::ifstream in(path, std::ios::binary);
  if (!in.good())
    throw UsageError(str_cat("image file ", path, " cannot be opened: ", std::strerror(errno),
                             ". HINT: check the file's permissions (the user running retclip "
                             "must be able to read it)"));
}

ImageInfo probe_image_file(const std::string& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good())
    throw UsageError(str_cat("image ", where, " cannot be opened: ", std::strerror(errno),
                             ". HINT: check the file's permissions"));
  FileBytes src(in, where);
  return probe(src, where);
}

void check_min_size(const ImageInfo& info, const std::string& where) {
  if (info.width >= kMinImageSide && info.height >= kMinImageSide) return;
  throw UsageError(fmt::format(
      "image {} is too small: {}x{} px, expected at least {}x{}. HINT: this is not a fundus "
      "photograph (a thumbnail, icon or placeholder?); remove it from the manifest",
      where, info.width, info.height, kMinImageSide, kMinImageSide));
}

void check_pixel_limit(const ImageInfo& info, int64_t max_pixels, const std::string& where) {
  if (max_pixels <= 0 || info.pixels() <= max_pixels) return;
  throw UsageError(fmt::format(
      "image {} is {} x {} = {:.1f} megapixels, above the limit of {:.1f} megapixels "
      "(data.max_image_pixels = {}); decoding it would need about {:.1f} GiB. HINT: fundus "
      "photographs are up to about 20 megapixels; downscale this file, or raise "
      "data.max_image_pixels (pack: --max-image-pixels) if such images are expected",
      where, info.width, info.height, info.pixels() / 1e6, max_pixels / 1e6, max_pixels,
      info.pixels() * 3.0 / (1 << 30)));
}

void check_image_integrity(std::string_view bytes, const ImageInfo& info,
                           const std::string& where) {
  if (info.format == "JPEG") {
    char message[JMSG_LENGTH_MAX];
    if (!jpeg_decodes_cleanly(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                              message))
      throw UsageError(str_cat("image ", where, " is a damaged JPEG: libjpeg reports '", message,
                               "'. HINT: the compressed data was altered (bad disk, interrupted "
                               "copy, bit rot) and would decode to wrong pixels; re-export it, "
                               "or fix or remove its row"));
  } else if (info.format == "PNG") {
    check_png_chunks(bytes, where);
  }
}

}  // namespace retclip::data
