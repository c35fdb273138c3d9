// Cheap checks of an encoded image before (and instead of trusting) the decoder: format
// and dimensions from the header, the pixel limit (data.max_image_pixels), and the
// integrity of the compressed data, which OpenCV's decoder only warns about on stderr.
//
//   data::ImageInfo info = data::probe_image(bytes, "a.jpg");   // "JPEG", 4000 x 3000
//   data::check_pixel_limit(info, cfg.data.max_image_pixels, "a.jpg");
//   data::check_image_integrity(bytes, info, "a.jpg");        // throws on damaged data
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace retclip::data {

/// Default of data.max_image_pixels: twice the largest fundus camera frame (about
/// 5000 x 4000), far below what would exhaust memory in the decode threads.
constexpr int64_t kDefaultMaxImagePixels = 40'000'000;

/// What an image header says.
struct ImageInfo {
  std::string format;  ///< "JPEG", "PNG", "TIFF", "BMP", "WebP"
  int64_t width = 0, height = 0;
  int64_t pixels() const { return width * height; }
};

/// Format and dimensions of encoded image data, from the header fields alone. Throws
/// UsageError naming `where` for data that is none of JPEG, PNG, TIFF, BMP, WebP (e.g.
/// text or HTML saved as .jpg), for a header that ends early or contradicts itself,
/// and for zero dimensions.
ImageInfo probe_image(std::string_view bytes, const std::string& where);

/// probe_image reading only the header fields from the file: a few small reads (a
/// JPEG's marker segments are skipped by their lengths, a TIFF directory is read where
/// it lies), whatever the size of the file.
ImageInfo probe_image_file(const std::string& path, const std::string& where);

/// Throws UsageError naming `path` when it cannot hold an image: missing, a dangling
/// symlink or a symlink loop, a directory or another non-regular file, empty, or not
/// readable by this process. Costs one stat and one open.
void check_image_file(const std::string& path);

/// Smallest width and height the preprocessing accepts (a fundus photograph is never
/// smaller; a 1 x 1 or 8 x 8 file is an icon or a placeholder).
constexpr int64_t kMinImageSide = 16;

/// Throws UsageError naming `where` when the header gives a side under kMinImageSide.
void check_min_size(const ImageInfo& info, const std::string& where);

/// Throws UsageError naming `where` when the image has more pixels than `max_pixels`
/// (key data.max_image_pixels). max_pixels <= 0 disables the check.
void check_pixel_limit(const ImageInfo& info, int64_t max_pixels, const std::string& where);

/// Checks the compressed data the decoder would otherwise accept with a warning:
/// JPEG: every scan is entropy-decoded by libjpeg with its warnings ("Corrupt JPEG
/// data: N extraneous bytes before marker", "Premature end of JPEG file", bad Huffman
/// code, ...) turned into errors; warnings about metadata only (unknown JFIF revision,
/// Adobe transform, ICC marker) are ignored. PNG: every chunk's CRC, IHDR first, IDAT
/// present, IEND last. Other formats: nothing. Throws UsageError naming `where`.
void check_image_integrity(std::string_view bytes, const ImageInfo& info, const std::string& where);

/// The first `n` bytes as printable text with \xNN escapes, for "not an image" messages.
std::string printable_prefix(std::string_view bytes, size_t n = 16);

}  // namespace retclip::data
