// Base64 codec (standard and urlsafe alphabets) for the RET-CLIP tsv layout, whose
// images are base64-encoded JPEGs.
#include "retclip/data/base64.hpp"

#include <fmt/format.h>

#include <string>

#include "retclip/util/error.hpp"

namespace retclip::data {

namespace {

constexpr char kStdAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 0..63 for a base64 digit of either alphabet, -1 otherwise.
int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

std::string printable(unsigned char c) {
  if (c >= 32 && c < 127) return str_cat("'", static_cast<char>(c), "'");
  return fmt::format("byte 0x{:02X}", c);
}

}  // namespace

std::string base64_encode(std::string_view bytes, bool urlsafe, bool pad) {
  const char* abc = urlsafe ? kUrlAlphabet : kStdAlphabet;
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) |
                 (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                 static_cast<unsigned char>(bytes[i + 2]);
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += abc[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    if (rest == 2) out += abc[(v >> 6) & 63];
    if (pad) out.append(rest == 1 ? "==" : "=");
  }
  return out;
}

bool base64_try_decode(std::string_view text, std::string* out, std::string* error) {
  auto fail = [&](std::string msg) {
    if (error) *error = std::move(msg);
    return false;
  };
  // Padding: only at the end, at most two, and then the length is a multiple of 4.
  size_t n = text.size();
  size_t padding = 0;
  while (n > 0 && text[n - 1] == '=' && padding < 3) {
    --n;
    ++padding;
  }
  if (padding > 2) return fail(str_cat("too much '=' padding at the end (", padding, ")"));
  if (padding > 0 && text.size() % 4 != 0)
    return fail(str_cat("padded length ", text.size(), " is not a multiple of 4"));
  if (n % 4 == 1)
    return fail(str_cat("length ", n,
                        " (without padding) is 1 more than a multiple of 4: "
                        "the data is cut short"));
  bool std_chars = false, url_chars = false;
  std::string res;
  res.reserve(n / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const int v = b64_value(c);
    if (v < 0) {
      if (c == '=') return fail(str_cat("'=' padding in the middle, at character ", i));
      return fail(str_cat("invalid character ", printable(c), " at character ", i));
    }
    if (c == '+' || c == '/') std_chars = true;
    if (c == '-' || c == '_') url_chars = true;
    if (std_chars && url_chars)
      return fail(
          str_cat("mixes the standard ('+', '/') and urlsafe ('-', '_') alphabets "
                  "(at character ",
                  i, ")"));
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      res += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return fail(
        "non-zero bits after the last byte (not canonical base64; the data may be "
        "cut short)");
  if (out) *out = std::move(res);
  return true;
}

std::string base64_decode(std::string_view text) {
  std::string out, err;
  RETCLIP_CHECK_USAGE(base64_try_decode(text, &out, &err), "invalid base64: ", err);
  return out;
}

}  // namespace retclip::data
