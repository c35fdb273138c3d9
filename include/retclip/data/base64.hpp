// Base64 (RFC 4648) for the RET-CLIP / Chinese-CLIP image tsv: the standard and the
// urlsafe alphabet, with or without '=' padding, and strict errors that say where.
//
//   std::string b64 = data::base64_encode(jpeg_bytes, /*urlsafe=*/true);
//   std::string jpeg = data::base64_decode(b64);   // accepts either alphabet
#pragma once

#include <string>
#include <string_view>

namespace retclip::data {

/// Encodes bytes; urlsafe uses '-' and '_' instead of '+' and '/'.
std::string base64_encode(std::string_view bytes, bool urlsafe = false, bool pad = true);

/// Decodes standard or urlsafe base64 (one alphabet per input), padding optional.
/// Returns false and fills `error` with what is wrong and at which character (an
/// invalid character, mixed alphabets, padding in the middle, a length that is 1
/// mod 4, non-zero trailing bits).
bool base64_try_decode(std::string_view text, std::string* out, std::string* error);

/// As base64_try_decode; throws UsageError with the reason.
std::string base64_decode(std::string_view text);

}  // namespace retclip::data
