// safetensors read/write, written here (no Rust library): the format is an 8-byte
// little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}
// with an optional "__metadata__" {str: str}, then the data buffer.
//
//   auto f = retclip::io::read_safetensors("vit.safetensors");
//   for (auto& [name, t] : f.tensors) ...;            // CPU, contiguous, owning
//   retclip::io::write_safetensors("out.safetensors", f.tensors, {{"format", "pt"}});
//
// The reader validates what the reference implementation validates (header length
// sane and inside the file, JSON valid, dtypes known, shape * itemsize == byte range,
// ranges contiguous from 0 to the end of the buffer, no duplicate names) and rejects
// anything else with a retclip::UsageError naming the file and the problem.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace retclip::io {

/// Named tensors in a fixed order.
using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

/// The largest header the reader accepts (the reference's limit: 100 MB).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

/// What a safetensors file holds. `tensors` are in file order (ascending data offset).
struct SafetensorsFile {
  TensorList tensors;
  std::map<std::string, std::string> metadata;
};

/// One header entry, validated. Byte offsets are relative to the data buffer.
struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// The safetensors dtype code ("F32", "BF16", ...) of a scalar type; throws UsageError
/// for types the format (as implemented here) does not carry.
std::string safetensors_dtype_name(at::ScalarType t);

/// Parses and validates a header (the JSON text) against a buffer of `buffer_size`
/// bytes. `where` names the source in errors. Entries come back sorted by offset.
std::vector<SafetensorsEntry> parse_safetensors_header(std::string_view header_json,
                                                       uint64_t buffer_size,
                                                       const std::string& where,
                                                       std::map<std::string, std::string>* metadata);

/// Decodes a whole safetensors file held in memory (`where` names it in errors).
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& where);

/// Reads a file from disk: the header first, then each tensor straight into its own
/// storage (no second copy of the file in memory).
SafetensorsFile read_safetensors(const std::filesystem::path& path);

/// Lists a file's entries without reading tensor data.
std::vector<SafetensorsEntry> inspect_safetensors(const std::filesystem::path& path,
                                                  std::map<std::string, std::string>* metadata = nullptr);

/// Encodes tensors as safetensors bytes, deterministically as the Python library does:
/// sorted by descending dtype rank then by name, compact JSON with "__metadata__" first,
/// header padded with spaces to a multiple of 8 bytes. Tensors may live on any device
/// and be non-contiguous; duplicate names are rejected.
std::string serialize_safetensors(const TensorList& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

/// serialize_safetensors + util::write_file_atomic.
void write_safetensors(const std::filesystem::path& path, const TensorList& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace retclip::io
