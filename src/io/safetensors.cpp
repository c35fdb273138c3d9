// safetensors reader and writer. Validation follows the reference implementation
// (huggingface/safetensors `validate`): every byte of the buffer belongs to exactly one
// tensor, in offset order, and each tensor's byte range matches its shape and dtype.
#include "retclip/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::io {

namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  int64_t itemsize;
  int rank;  ///< position in the reference's Dtype enum (the writer sorts on it)
};

// Ranks follow the order of the reference's `Dtype` enum: BOOL, .., U8, I8, .., I16, ..,
// F16, BF16, I32, .., F32, .., F64, I64.
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", at::kBool, 1, 0},      {"U8", at::kByte, 1, 4},
    {"I8", at::kChar, 1, 5},        {"I16", at::kShort, 2, 11},
    {"F16", at::kHalf, 2, 13},      {"BF16", at::kBFloat16, 2, 14},
    {"I32", at::kInt, 4, 15},       {"F32", at::kFloat, 4, 17},
    {"F64", at::kDouble, 8, 19},    {"I64", at::kLong, 8, 20},
};

const DtypeInfo* dtype_by_name(const std::string& s) {
  for (const auto& d : kDtypes)
    if (s == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return &d;
  return nullptr;
}

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) s += std::string(s.empty() ? "" : ", ") + d.name;
  return s;
}

[[noreturn]] void bad(const std::string& where, const std::string& what, const std::string& hint) {
  throw UsageError(str_cat(where, ": not a valid safetensors file: ", what, ". HINT: ", hint));
}

const char* kHintCorrupt =
    "the file is truncated or corrupt; re-download or re-export it (retclip export / "
    "safetensors.torch.save_file)";

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void check_header_length(uint64_t n, uint64_t file_size, const std::string& where) {
  if (file_size < 8)
    bad(where, str_cat("file is ", file_size, " bytes, shorter than the 8-byte header length"),
        kHintCorrupt);
  if (n > kSafetensorsMaxHeader)
    bad(where, str_cat("header length ", n, " exceeds the limit of ", kSafetensorsMaxHeader, " bytes"),
        "the first 8 bytes are not a safetensors header length: the file is corrupt, or is "
        "another format (.pt/.bin) under a .safetensors name; re-export it or pass the original "
        "file");
  if (n > file_size - 8)
    bad(where, str_cat("header length ", n, " runs past the end of the file (", file_size, " bytes)"),
        kHintCorrupt);
}

std::string header_shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType t) {
  const DtypeInfo* d = dtype_by_type(t);
  RETCLIP_CHECK_USAGE(d != nullptr, "safetensors: cannot store dtype ", c10::toString(t),
                      "; expected one of ", known_dtypes(),
                      ". HINT: convert the tensor (e.g. .to(at::kFloat)) before saving");
  return d->name;
}

std::vector<SafetensorsEntry> parse_safetensors_header(std::string_view header_json,
                                                       uint64_t buffer_size,
                                                       const std::string& where,
                                                       std::map<std::string, std::string>* metadata) {
  using nlohmann::json;
  if (header_json.empty() || header_json.front() != '{')
    bad(where, "the header does not start with '{'", kHintCorrupt);

  // nlohmann keeps the last of duplicate keys silently; the callback sees each key.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(header_json.begin(), header_json.end(), cb);
  } catch (const json::parse_error& e) {
    // Only the position: the parser's own text quotes the raw header bytes.
    bad(where, str_cat("the ", header_json.size(), "-byte header is not valid JSON (error at byte ",
                       e.byte, ")"),
        kHintCorrupt);
  } catch (const json::exception&) {
    bad(where, str_cat("the ", header_json.size(), "-byte header is not valid JSON"), kHintCorrupt);
  }
  if (!header.is_object()) bad(where, "the header is not a JSON object", kHintCorrupt);
  if (!duplicate.empty())
    bad(where, str_cat("tensor name '", duplicate, "' appears twice in the header"),
        "the writer was broken; re-export the file");

  std::vector<SafetensorsEntry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad(where, "\"__metadata__\" is not an object", kHintCorrupt);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          bad(where, str_cat("metadata value for key '", m.key(), "' is not a string"),
              "safetensors metadata maps strings to strings");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string at_key = str_cat("tensor '", name, "'");
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad(where, str_cat(at_key, ": expected an object with dtype, shape and data_offsets"),
          kHintCorrupt);
    const json& jd = v["dtype"];
    const json& js = v["shape"];
    const json& jo = v["data_offsets"];
    if (!jd.is_string()) bad(where, str_cat(at_key, ": dtype is not a string"), kHintCorrupt);
    const DtypeInfo* d = dtype_by_name(jd.get<std::string>());
    if (!d)
      bad(where, str_cat(at_key, ": unknown dtype '", jd.get<std::string>(), "' (expected one of ",
                         known_dtypes(), ")"),
          "retclip reads the common float/int dtypes only; convert the file in Python first");
    if (!js.is_array()) bad(where, str_cat(at_key, ": shape is not an array"), kHintCorrupt);
    SafetensorsEntry e;
    e.name = name;
    e.dtype = d->type;
    uint64_t nbytes = static_cast<uint64_t>(d->itemsize);
    for (const auto& s : js) {
      if (!s.is_number_unsigned())
        bad(where, str_cat(at_key, ": shape entries must be non-negative integers"), kHintCorrupt);
      uint64_t dim = s.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) ||
          (dim != 0 && nbytes > UINT64_MAX / dim))
        bad(where, str_cat(at_key, ": shape overflows"), kHintCorrupt);
      nbytes *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      bad(where, str_cat(at_key, ": data_offsets must be two non-negative integers"), kHintCorrupt);
    e.begin = jo[0].get<uint64_t>();
    e.end = jo[1].get<uint64_t>();
    if (e.end < e.begin)
      bad(where, str_cat(at_key, ": data_offsets [", e.begin, ", ", e.end, "] end before they begin"),
          kHintCorrupt);
    if (e.end - e.begin != nbytes)
      bad(where, str_cat(at_key, ": shape ", header_shape_str(e.shape), " of ", d->name, " needs ", nbytes,
                         " bytes but data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin),
          kHintCorrupt);
    entries.push_back(std::move(e));
  }

  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const auto& e : entries) {
    if (e.begin != expect)
      bad(where, str_cat("tensor '", e.name, "' starts at byte ", e.begin, " of the data buffer but ",
                         e.begin < expect ? "the previous tensor ends at " : "there is a gap: previous ends at ",
                         expect, e.begin < expect ? " (overlapping ranges)" : ""),
          kHintCorrupt);
    expect = e.end;
  }
  if (expect != buffer_size)
    bad(where, str_cat("tensors cover ", expect, " bytes but the data buffer holds ", buffer_size),
        expect > buffer_size ? "the file is truncated; re-download or re-export it" : kHintCorrupt);
  return entries;
}

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& where) {
  check_header_length(bytes.size() >= 8 ? read_le64(reinterpret_cast<const unsigned char*>(bytes.data())) : 0,
                      bytes.size(), where);
  const uint64_t n = read_le64(reinterpret_cast<const unsigned char*>(bytes.data()));
  SafetensorsFile out;
  auto entries = parse_safetensors_header(bytes.substr(8, n), bytes.size() - 8 - n, where, &out.metadata);
  const char* buffer = bytes.data() + 8 + n;
  out.tensors.reserve(entries.size());
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), buffer + e.begin, e.end - e.begin);
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

namespace {

std::vector<SafetensorsEntry> open_and_parse(std::ifstream& in, const std::filesystem::path& path,
                                             uint64_t* data_start,
                                             std::map<std::string, std::string>* metadata) {
  const std::string where = path.string();
  in.open(path, std::ios::binary);
  RETCLIP_CHECK_USAGE(in.good(), "cannot open ", where, ": ", std::strerror(errno),
                      ". HINT: check the path");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len[8] = {0};
  if (file_size >= 8) in.read(reinterpret_cast<char*>(len), 8);
  const uint64_t n = read_le64(len);
  check_header_length(n, file_size, where);
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  RETCLIP_CHECK_USAGE(in.good(), "error reading the header of ", where);
  *data_start = 8 + n;
  return parse_safetensors_header(header, file_size - 8 - n, where, metadata);
}

}  // namespace

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  std::ifstream in;
  uint64_t data_start = 0;
  SafetensorsFile out;
  auto entries = open_and_parse(in, path, &data_start, &out.metadata);
  out.tensors.reserve(entries.size());
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
      RETCLIP_CHECK_USAGE(in.good(), "error reading tensor '", e.name, "' from ", path.string(),
                          ". HINT: the file may have been truncated while being read");
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

std::vector<SafetensorsEntry> inspect_safetensors(const std::filesystem::path& path,
                                                  std::map<std::string, std::string>* metadata) {
  std::ifstream in;
  uint64_t data_start = 0;
  return open_and_parse(in, path, &data_start, metadata);
}

std::string serialize_safetensors(const TensorList& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    at::Tensor t;  // CPU, contiguous
    const DtypeInfo* d;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    RETCLIP_CHECK_USAGE(t.defined(), "safetensors: tensor '", name, "' is undefined");
    RETCLIP_CHECK_USAGE(names.insert(name).second, "safetensors: tensor name '", name,
                        "' given twice. HINT: names in a state dict must be unique");
    RETCLIP_CHECK_USAGE(name != "__metadata__", "safetensors: '__metadata__' cannot name a tensor");
    const DtypeInfo* d = dtype_by_type(t.scalar_type());
    RETCLIP_CHECK_USAGE(d != nullptr, "safetensors: tensor '", name, "' has dtype ",
                        c10::toString(t.scalar_type()), "; expected one of ", known_dtypes(),
                        ". HINT: convert it before saving");
    items.push_back({&name, t.detach().to(at::kCPU).contiguous(), d});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.d->rank != b.d->rank ? a.d->rank > b.d->rank : *a.name < *b.name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& it : items) {
    const uint64_t n = static_cast<uint64_t>(it.t.numel()) * static_cast<uint64_t>(it.d->itemsize);
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = it.d->name;
    e["shape"] = it.t.sizes().vec();
    e["data_offsets"] = {offset, offset + n};
    header[*it.name] = std::move(e);
    offset += n;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& it : items)
    if (it.t.numel() > 0)
      out.append(static_cast<const char*>(it.t.data_ptr()), it.t.numel() * it.d->itemsize);
  return out;
}

void write_safetensors(const std::filesystem::path& path, const TensorList& tensors,
                       const std::map<std::string, std::string>& metadata) {
  util::write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

}  // namespace retclip::io
