// Shard format (writer, mmap reader, verification) and packing: pack_samples writes
// shards from decoded samples, pack_dataset runs a manifest through the image pipeline
// into them. All integers are little-endian; the byte layout is documented in
// docs/SHARDS.md and mirrored by the constants below.
#include "retclip/data/shards.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include "retclip/data/image.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/data/precheck.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"
#include "retclip/util/system.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "retclip shards are little-endian; this reader assumes a little-endian host"
#endif

namespace retclip::data {

namespace fs = std::filesystem;

namespace {

constexpr size_t kIndexEntryBytes = 20;  // u64 offset, u64 length, u32 crc32
constexpr size_t kFooterBytes = 32;      // u64 index offset, u64 count, u32 crc, u32 0, magic
constexpr size_t kPreambleBytes = 16;    // magic[8], u32 version, u32 header body length

template <typename T>
void put(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string header_body(const ShardHeader& h) {
  std::string b;
  put<uint32_t>(b, static_cast<uint32_t>(h.image_size));
  put<uint32_t>(b, static_cast<uint32_t>(h.channels));
  put<uint64_t>(b, static_cast<uint64_t>(h.record_count));
  put<uint8_t>(b, h.has_tokens ? 1 : 0);
  put<uint32_t>(b, static_cast<uint32_t>(h.context_length));
  put<uint32_t>(b, static_cast<uint32_t>(h.tokenizer.size()));
  b += h.tokenizer;
  return b;
}

std::string header_bytes(const ShardHeader& h) {
  std::string body = header_body(h);
  std::string out(kShardMagic, 8);
  put<uint32_t>(out, h.version);
  put<uint32_t>(out, static_cast<uint32_t>(body.size()));
  out += body;
  put<uint32_t>(out, util::crc32(body));
  return out;
}

// Bounds-checked cursor over a record's bytes (records may be read without a crc check).
struct Cursor {
  const uint8_t* p;
  const uint8_t* end;
  const std::string* where;
  const uint8_t* take(size_t n) {
    RETCLIP_CHECK_USAGE(static_cast<size_t>(end - p) >= n, *where,
                        ": record is shorter than its fields say (corrupt shard). HINT: run "
                        "`retclip pack --verify` on the shard set and repack it");
    const uint8_t* r = p;
    p += n;
    return r;
  }
  uint32_t u32() { return get<uint32_t>(take(4)); }
};

}  // namespace

bool ShardHeader::operator==(const ShardHeader& o) const {
  return version == o.version && image_size == o.image_size && channels == o.channels &&
         has_tokens == o.has_tokens && context_length == o.context_length &&
         tokenizer == o.tokenizer;
}

std::string shard_file_name(int64_t n) {
  return fmt::format("shard-{:05d}.rcs", n);
}

// ---------------------------------------------------------------------------------
// ShardRecordView

std::vector<int64_t> ShardRecordView::tokens() const {
  std::vector<int64_t> ids;
  if (!tokens_raw) return ids;
  ids.resize(static_cast<size_t>(context_length));
  for (int64_t i = 0; i < context_length; ++i) ids[i] = get<int32_t>(tokens_raw + 4 * i);
  return ids;
}

static cv::Mat wrap_pixels(const uint8_t* p, int64_t size, int64_t channels) {
  if (!p) return cv::Mat();
  return cv::Mat(static_cast<int>(size), static_cast<int>(size), CV_8UC(static_cast<int>(channels)),
                 const_cast<uint8_t*>(p));
}

namespace {

std::string percent_encode(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '%')
      out += "%25";
    else if (c == ';')
      out += "%3B";
    else if (c == '=')
      out += "%3D";
    else
      out += c;
  }
  return out;
}

std::string percent_decode(std::string_view v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size()) {
      const std::string_view code = v.substr(i + 1, 2);
      if (code == "25" || code == "3B" || code == "3D") {
        out += code == "25" ? '%' : code == "3B" ? ';' : '=';
        i += 2;
        continue;
      }
    }
    out += v[i];
  }
  return out;
}

}  // namespace

std::string ShardRecordView::label_value(std::string_view key) const {
  size_t pos = 0;
  while (pos <= label.size()) {
    size_t end = label.find(';', pos);
    if (end == std::string_view::npos) end = label.size();
    const std::string_view item = label.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq != std::string_view::npos && item.substr(0, eq) == key)
      return percent_decode(item.substr(eq + 1));
    pos = end + 1;
  }
  return "";
}

cv::Mat ShardRecordView::left_mat() const {
  return wrap_pixels(left, image_size, channels);
}
cv::Mat ShardRecordView::right_mat() const {
  return wrap_pixels(right, image_size, channels);
}

// ---------------------------------------------------------------------------------
// ShardWriter

ShardWriter::ShardWriter(std::string path, ShardHeader header)
    : path_(std::move(path)), header_(std::move(header)) {
  RETCLIP_CHECK_USAGE(header_.image_size > 0 && header_.channels > 0, "shard ", path_,
                      ": expected a positive image size and channel count but "
                      "got ",
                      header_.image_size, " and ", header_.channels);
  RETCLIP_CHECK_USAGE(!header_.has_tokens || header_.context_length > 0, "shard ", path_,
                      ": token ids requested with context length ", header_.context_length,
                      ". HINT: pass --context L > 0");
  if (!header_.has_tokens) header_.context_length = 0;
  header_.record_count = 0;
  tmp_path_ = fmt::format("{}.tmp-{}", path_, static_cast<long>(::getpid()));
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  RETCLIP_CHECK_USAGE(file_, "cannot create shard ", tmp_path_, ": ", std::strerror(errno),
                      ". HINT: check that the output directory exists and is writable");
  std::string h = header_bytes(header_);
  RETCLIP_CHECK(std::fwrite(h.data(), 1, h.size(), file_) == h.size(), "write failed: ", tmp_path_);
  pos_ = h.size();
}

ShardWriter::~ShardWriter() {
  if (file_) std::fclose(file_);
  if (!finished_) std::remove(tmp_path_.c_str());
}

void ShardWriter::add(const ShardRecord& r) {
  RETCLIP_CHECK(!finished_, "ShardWriter::add after finish() on ", path_);
  const size_t px = static_cast<size_t>(header_.image_size * header_.image_size * header_.channels);
  auto check_eye = [&](bool has, const std::vector<uint8_t>& v, const char* eye) {
    RETCLIP_CHECK_USAGE(!has || v.size() == px, "shard ", path_, " patient ", r.patient_id,
                        ": expected ", px, " bytes of ", eye, " pixels (", header_.image_size, "x",
                        header_.image_size, "x", header_.channels, ") but got ", v.size());
  };
  check_eye(r.has_left, r.left, "left");
  check_eye(r.has_right, r.right, "right");
  RETCLIP_CHECK_USAGE(r.has_left || r.has_right, "shard ", path_, " patient ", r.patient_id,
                      ": a record needs at least one eye");
  RETCLIP_CHECK_USAGE(
      !header_.has_tokens || static_cast<int64_t>(r.tokens.size()) == header_.context_length,
      "shard ", path_, " patient ", r.patient_id, ": expected ", header_.context_length,
      " token ids but got ", r.tokens.size());
  std::string rec;
  rec.reserve(px * 2 + r.report.size() + 64 + 4 * r.tokens.size());
  put<uint32_t>(rec, static_cast<uint32_t>(r.patient_id.size()));
  rec += r.patient_id;
  put<uint8_t>(rec, static_cast<uint8_t>((r.has_left ? 1 : 0) | (r.has_right ? 2 : 0)));
  if (r.has_left) rec.append(reinterpret_cast<const char*>(r.left.data()), px);
  if (r.has_right) rec.append(reinterpret_cast<const char*>(r.right.data()), px);
  put<uint32_t>(rec, static_cast<uint32_t>(r.report.size()));
  rec += r.report;
  put<uint32_t>(rec, static_cast<uint32_t>(r.label.size()));
  rec += r.label;
  if (header_.has_tokens) {
    for (int64_t id : r.tokens) {
      RETCLIP_CHECK_USAGE(id >= INT32_MIN && id <= INT32_MAX, "token id ", id,
                          " does not fit the shard's int32 ids (patient ", r.patient_id, ")");
      put<int32_t>(rec, static_cast<int32_t>(id));
    }
  }
  RETCLIP_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size(),
                "write failed: ", tmp_path_, " (disk full?)");
  index_.push_back({pos_, rec.size(), util::crc32(rec)});
  pos_ += rec.size();
}

int64_t ShardWriter::finish() {
  RETCLIP_CHECK(!finished_, "ShardWriter::finish called twice on ", path_);
  std::string tail;
  for (const auto& e : index_) {
    put<uint64_t>(tail, e.offset);
    put<uint64_t>(tail, e.length);
    put<uint32_t>(tail, e.crc);
  }
  const uint32_t index_crc = util::crc32(tail);
  put<uint64_t>(tail, pos_);
  put<uint64_t>(tail, index_.size());
  put<uint32_t>(tail, index_crc);
  put<uint32_t>(tail, 0);
  tail.append(kShardEndMagic, 8);
  bool ok = std::fwrite(tail.data(), 1, tail.size(), file_) == tail.size();
  // The header carries the final record count: rewrite it in place.
  header_.record_count = static_cast<int64_t>(index_.size());
  std::string h = header_bytes(header_);
  ok = ok && std::fseek(file_, 0, SEEK_SET) == 0 &&
       std::fwrite(h.data(), 1, h.size(), file_) == h.size();
  ok = ok && std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  RETCLIP_CHECK(ok, "writing shard ", tmp_path_, " failed: ", std::strerror(errno));
  RETCLIP_CHECK(std::rename(tmp_path_.c_str(), path_.c_str()) == 0, "cannot rename ", tmp_path_,
                " to ", path_, ": ", std::strerror(errno));
  util::fsync_path(fs::path(path_).parent_path().empty() ? fs::path(".")
                                                         : fs::path(path_).parent_path());
  finished_ = true;
  return header_.record_count;
}

// ---------------------------------------------------------------------------------
// ShardFile

std::shared_ptr<ShardFile> ShardFile::open(const std::string& path) {
  std::shared_ptr<ShardFile> f(new ShardFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  RETCLIP_CHECK_USAGE(fd >= 0, "cannot open shard ", path, ": ", std::strerror(errno),
                      ". HINT: is this a shard set written by `retclip pack`?");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw UsageError(str_cat("cannot stat shard ", path, ": ", std::strerror(errno)));
  }
  f->bytes_ = static_cast<size_t>(st.st_size);
  const std::string hint =
      ". HINT: the file is truncated or not a shard; rerun `retclip pack` "
      "(it rewrites shards that do not verify)";
  if (f->bytes_ < kPreambleBytes + kFooterBytes) {
    ::close(fd);
    throw UsageError(str_cat("shard ", path, ": expected at least ", kPreambleBytes + kFooterBytes,
                             " bytes but the file has ", f->bytes_, hint));
  }
  void* m = ::mmap(nullptr, f->bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  RETCLIP_CHECK(m != MAP_FAILED, "mmap of shard ", path, " failed: ", std::strerror(errno));
  f->data_ = static_cast<const uint8_t*>(m);
  const uint8_t* d = f->data_;
  RETCLIP_CHECK_USAGE(std::memcmp(d, kShardMagic, 8) == 0, "shard ", path,
                      ": expected magic RCSHARD1 at byte 0 but found something else", hint);
  f->header_.version = get<uint32_t>(d + 8);
  RETCLIP_CHECK_USAGE(f->header_.version == kShardVersion, "shard ", path, ": format version ",
                      f->header_.version, " but this build reads version ", kShardVersion,
                      ". HINT: repack with this retclip version");
  const uint32_t body_len = get<uint32_t>(d + 12);
  RETCLIP_CHECK_USAGE(kPreambleBytes + body_len + 4 + kFooterBytes <= f->bytes_, "shard ", path,
                      ": header length ", body_len, " exceeds the file size ", f->bytes_, hint);
  const uint8_t* body = d + kPreambleBytes;
  const uint32_t hcrc = get<uint32_t>(body + body_len);
  RETCLIP_CHECK_USAGE(util::crc32(body, body_len) == hcrc, "shard ", path,
                      ": header checksum mismatch", hint);
  RETCLIP_CHECK_USAGE(body_len >= 25, "shard ", path, ": header too short (", body_len, " bytes)",
                      hint);
  ShardHeader& h = f->header_;
  h.image_size = get<uint32_t>(body);
  h.channels = get<uint32_t>(body + 4);
  h.record_count = static_cast<int64_t>(get<uint64_t>(body + 8));
  h.has_tokens = body[16] != 0;
  h.context_length = get<uint32_t>(body + 17);
  const uint32_t tok_len = get<uint32_t>(body + 21);
  RETCLIP_CHECK_USAGE(25 + tok_len == body_len, "shard ", path, ": inconsistent header", hint);
  h.tokenizer.assign(reinterpret_cast<const char*>(body + 25), tok_len);

  const uint8_t* foot = d + f->bytes_ - kFooterBytes;
  RETCLIP_CHECK_USAGE(std::memcmp(foot + 24, kShardEndMagic, 8) == 0, "shard ", path,
                      ": footer magic RCSHEND1 missing (", f->bytes_, " bytes)", hint);
  const uint64_t index_off = get<uint64_t>(foot);
  const uint64_t count = get<uint64_t>(foot + 8);
  const uint32_t index_crc = get<uint32_t>(foot + 16);
  RETCLIP_CHECK_USAGE(count == static_cast<uint64_t>(h.record_count) &&
                          index_off + count * kIndexEntryBytes + kFooterBytes == f->bytes_,
                      "shard ", path, ": footer says ", count, " records at offset ", index_off,
                      " but the header says ", h.record_count, " records and the file has ",
                      f->bytes_, " bytes", hint);
  f->index_ = d + index_off;
  RETCLIP_CHECK_USAGE(util::crc32(f->index_, count * kIndexEntryBytes) == index_crc, "shard ", path,
                      ": index checksum mismatch", hint);
  const uint64_t records_begin = kPreambleBytes + body_len + 4;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t off = get<uint64_t>(f->index_ + i * kIndexEntryBytes);
    const uint64_t len = get<uint64_t>(f->index_ + i * kIndexEntryBytes + 8);
    RETCLIP_CHECK_USAGE(off >= records_begin && off + len <= index_off, "shard ", path, " record ",
                        i, ": index entry points outside the record area", hint);
  }
  return f;
}

ShardFile::~ShardFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), bytes_);
}

ShardRecordView ShardFile::record(int64_t i, bool verify) const {
  RETCLIP_CHECK(i >= 0 && i < header_.record_count, "shard ", path_, ": record ", i,
                " out of range [0, ", header_.record_count, ")");
  const uint8_t* e = index_ + static_cast<size_t>(i) * kIndexEntryBytes;
  const uint64_t off = get<uint64_t>(e), len = get<uint64_t>(e + 8);
  const uint32_t crc = get<uint32_t>(e + 16);
  const uint8_t* p = data_ + off;
  const std::string where = str_cat(path_, " record ", i);
  if (verify) {
    const uint32_t found = util::crc32(p, len);
    RETCLIP_CHECK_USAGE(found == crc, where, ": crc32 mismatch (expected ", util::hex32(crc),
                        ", found ", util::hex32(found),
                        "): the shard is corrupt. HINT: delete this shard file and rerun the "
                        "same `retclip pack` command to rebuild it");
  }
  Cursor c{p, p + len, &where};
  ShardRecordView v;
  v.image_size = header_.image_size;
  v.channels = header_.channels;
  const uint32_t pid_len = c.u32();
  v.patient_id = std::string_view(reinterpret_cast<const char*>(c.take(pid_len)), pid_len);
  const uint8_t flags = *c.take(1);
  v.has_left = flags & 1;
  v.has_right = flags & 2;
  const size_t px = static_cast<size_t>(header_.image_size * header_.image_size * header_.channels);
  if (v.has_left) v.left = c.take(px);
  if (v.has_right) v.right = c.take(px);
  const uint32_t rep_len = c.u32();
  v.report = std::string_view(reinterpret_cast<const char*>(c.take(rep_len)), rep_len);
  const uint32_t lab_len = c.u32();
  v.label = std::string_view(reinterpret_cast<const char*>(c.take(lab_len)), lab_len);
  if (header_.has_tokens) {
    v.context_length = header_.context_length;
    v.tokens_raw = c.take(static_cast<size_t>(4 * header_.context_length));
  }
  return v;
}

void ShardFile::verify_all() const {
  for (int64_t i = 0; i < header_.record_count; ++i) record(i, /*verify=*/true);
}

// ---------------------------------------------------------------------------------
// ShardReader

static ShardSetInfo read_index_json(const std::string& dir) {
  const fs::path p = fs::path(dir) / "index.json";
  RETCLIP_CHECK_USAGE(fs::exists(p), "expected ", p.string(),
                      " (a shard set written by `retclip pack`) but it does not exist. HINT: "
                      "pack with `retclip pack --manifest M --out ",
                      dir,
                      " --size 224`; an interrupted pack writes index.json only when it "
                      "completes, so rerun the same command to resume it");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::read_file(p));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(str_cat(p.string(), ": not valid JSON (", e.what(),
                             "). HINT: rerun `retclip pack` to rewrite it"));
  }
  ShardSetInfo info;
  try {
    RETCLIP_CHECK_USAGE(j.value("format", "") == "RCSHARD1", p.string(),
                        ": expected \"format\": \"RCSHARD1\"");
    info.image_size = j.at("image_size").get<int64_t>();
    info.channels = j.at("channels").get<int64_t>();
    info.records = j.at("records").get<int64_t>();
    info.has_tokens = j.at("has_tokens").get<bool>();
    info.context_length = j.at("context_length").get<int64_t>();
    info.tokenizer = j.value("tokenizer", "");
    info.source_manifest = j.value("source_manifest", "");
    const std::string preprocess = j.value("preprocess", "fundus_crop");
    RETCLIP_CHECK_USAGE(config::from_name(preprocess, info.preprocess), p.string(),
                        ": \"preprocess\" is '", preprocess,
                        "', expected fundus_crop or resize. HINT: rerun `retclip pack` to "
                        "rewrite it");
    info.preprocess_version = j.value("preprocess_version", int64_t{1});
    for (const auto& s : j.at("shards")) {
      info.files.push_back(s.at("file").get<std::string>());
      info.records_per_file.push_back(s.at("records").get<int64_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(str_cat(p.string(), ": missing or mistyped key (", e.what(),
                             "). HINT: rerun `retclip pack` to rewrite it"));
  }
  if (info.preprocess_version != kPreprocessVersion) {
    const bool older = info.preprocess_version < kPreprocessVersion;
    std::string cmd = str_cat("retclip pack --manifest ",
                              info.source_manifest.empty() ? "M" : info.source_manifest,
                              " --out NEW_DIR --size ", info.image_size, " --preprocess ",
                              config::name(info.preprocess));
    if (info.has_tokens)
      cmd += str_cat(" --tokenizer FILE --context ", info.context_length);
    throw UsageError(str_cat(
        p.string(), ": the shards were packed with image preprocessing version ",
        info.preprocess_version,
        older ? " (before version 2, the fundus crop padded its square with the photograph "
                "around the field of view instead of black)"
              : " (a newer retclip)",
        " but this retclip makes version ", kPreprocessVersion,
        " and trains only on shards that match it. HINT: re-pack the manifest: `", cmd,
        "` (or delete ", dir, " and pack into it again)"));
  }
  return info;
}

std::string shard_tokenizer_file_name(const std::string& type) {
  return type == "sentencepiece" ? "tokenizer.model" : "vocab.txt";
}

std::optional<ShardTokenizer> resolve_shard_tokenizer(const std::string& dir,
                                                      const std::string& recorded) {
  if (recorded.empty()) return std::nullopt;
  const fs::path index = fs::path(dir) / "index.json";
  const size_t colon = recorded.find(':');
  RETCLIP_CHECK_USAGE(colon != std::string::npos && colon > 0 && colon + 1 < recorded.size(),
                      index.string(), ": expected \"tokenizer\" as \"type:file\" but found '",
                      recorded, "'. HINT: set data.tokenizer.path (and data.tokenizer.type) to "
                      "the tokenizer the shards were packed with, or re-pack them");
  ShardTokenizer t;
  t.type = recorded.substr(0, colon);
  const fs::path file = recorded.substr(colon + 1);
  std::vector<fs::path> looked;
  if (file.is_absolute()) {
    looked.push_back(file);
  } else {
    looked.push_back(fs::absolute(fs::path(dir) / file).lexically_normal());
    looked.push_back(fs::absolute(file).lexically_normal());
  }
  std::error_code ec;
  for (const fs::path& q : looked) {
    if (fs::is_regular_file(q, ec)) {
      t.path = q.string();
      return t;
    }
  }
  std::string where;
  for (const fs::path& q : looked) where += (where.empty() ? "" : " and ") + q.string();
  throw UsageError(str_cat(
      "the shards in ", dir, " record their tokenizer as '", recorded, "' (", index.string(),
      ") but the file '", file.string(), "' is not there: looked for ", where,
      ". HINT: set data.tokenizer.path to the tokenizer file the shards were packed with "
      "(--set data.tokenizer.path=FILE), or re-pack with `retclip pack --tokenizer FILE` "
      "(which keeps a copy beside index.json)"));
}

std::shared_ptr<ShardReader> ShardReader::open(const std::string& dir, bool verify_on_read) {
  auto r = std::shared_ptr<ShardReader>(new ShardReader());
  r->dir_ = dir;
  r->verify_ = verify_on_read;
  r->info_ = read_index_json(dir);
  int64_t total = 0;
  for (size_t k = 0; k < r->info_.files.size(); ++k) {
    auto f = ShardFile::open((fs::path(dir) / r->info_.files[k]).string());
    RETCLIP_CHECK_USAGE(f->size() == r->info_.records_per_file[k] &&
                            f->header().image_size == r->info_.image_size &&
                            f->header().has_tokens == r->info_.has_tokens &&
                            f->header().context_length == r->info_.context_length,
                        f->path(), ": holds ", f->size(), " records of ", f->header().image_size,
                        " px but index.json says ", r->info_.records_per_file[k], " records of ",
                        r->info_.image_size,
                        " px. HINT: the set mixes two packs; repack into an empty directory");
    r->starts_.push_back(total);
    total += f->size();
    r->files_.push_back(std::move(f));
  }
  RETCLIP_CHECK_USAGE(total == r->info_.records, dir, "/index.json: says ", r->info_.records,
                      " records but the shards hold ", total,
                      ". HINT: repack into an empty directory");
  return r;
}

std::pair<size_t, int64_t> ShardReader::locate(int64_t i) const {
  RETCLIP_CHECK(i >= 0 && i < info_.records, "shard set ", dir_, ": record ", i,
                " out of range [0, ", info_.records, ")");
  auto it = std::upper_bound(starts_.begin(), starts_.end(), i);
  const size_t k = static_cast<size_t>(it - starts_.begin()) - 1;
  return {k, i - starts_[k]};
}

ShardRecordView ShardReader::record(int64_t i) const {
  auto [k, j] = locate(i);
  return files_[k]->record(j, verify_);
}

std::string ShardReader::describe(int64_t i) const {
  auto [k, j] = locate(i);
  return str_cat(files_[k]->path(), " record ", j);
}

VerifyReport verify_shard_set(const std::string& dir) {
  auto reader = ShardReader::open(dir, /*verify_on_read=*/false);
  VerifyReport rep;
  for (const auto& name : reader->info().files) {
    auto f = ShardFile::open((fs::path(dir) / name).string());
    f->verify_all();
    rep.shards += 1;
    rep.records += f->size();
    rep.bytes += static_cast<int64_t>(fs::file_size(fs::path(dir) / name));
  }
  return rep;
}

// ---------------------------------------------------------------------------------
// Packing

namespace {

std::string labels_string(const Sample& s) {
  std::string out;
  auto add = [&](const std::string& k, const std::string& v) {
    if (!out.empty()) out += ';';
    out += percent_encode(k) + "=" + percent_encode(v);
  };
  if (!s.split.empty()) add("split", s.split);
  for (const auto& [k, v] : s.labels) add(k, v);
  if (!s.left_report.empty()) add("left_report", s.left_report);
  if (!s.right_report.empty()) add("right_report", s.right_report);
  return out;
}

ShardRecord make_record(const Sample& s, int64_t size, const PackHooks& hooks) {
  ShardRecord r;
  r.patient_id = s.patient_id;
  r.report = s.report;
  r.label = labels_string(s);
  RETCLIP_CHECK_USAGE(s.left.present() || s.right.present(), s.origin,
                      ": both eyes are missing (a patient needs at least one image)");
  auto eye = [&](const ImageRef& ref, const char* name, std::vector<uint8_t>& out) {
    if (!ref.present()) return false;
    const std::string where = str_cat(s.origin, " (", name, ")");
    cv::Mat m = hooks.prepare_image(ref, where);
    RETCLIP_CHECK(m.type() == CV_8UC3 && m.rows == size && m.cols == size, where,
                  ": image pipeline returned ", m.cols, "x", m.rows, " type ", m.type(),
                  ", expected ", size, "x", size, " uint8 RGB");
    if (!m.isContinuous()) m = m.clone();
    out.assign(m.data, m.data + m.total() * m.elemSize());
    return true;
  };
  r.has_left = eye(s.left, "left", r.left);
  r.has_right = eye(s.right, "right", r.right);
  if (hooks.encode_text) r.tokens = hooks.encode_text(s.report);
  return r;
}

}  // namespace

PackReport pack_samples(const std::vector<Sample>& samples, const PackOptions& o,
                        const PackHooks& hooks) {
  const auto t0 = std::chrono::steady_clock::now();
  RETCLIP_CHECK_USAGE(!samples.empty(), "nothing to pack: the manifest ", o.manifest,
                      " has no usable rows", o.split.empty() ? "" : " for split " + o.split,
                      ". HINT: check --split and the manifest format");
  RETCLIP_CHECK_USAGE(o.shard_size > 0, "expected --shard-size > 0 but got ", o.shard_size);
  RETCLIP_CHECK_USAGE(o.image_size > 0, "expected --size > 0 but got ", o.image_size);
  RETCLIP_CHECK(static_cast<bool>(hooks.prepare_image), "pack_samples: no image pipeline");
  fs::create_directories(o.out);

  // pack.json fingerprints the input rows and options; shards left by an interrupted run
  // are reused only when it matches (another manifest must not pass for this one).
  uint32_t fp = 0;
  for (const Sample& s : samples)
    for (const std::string* f : {&s.patient_id, &s.left.path, &s.left.bytes, &s.right.path,
                                 &s.right.bytes, &s.report, &s.split})
      fp = util::crc32(*f + '\x1f', fp);
  for (const Sample& s : samples)  // per-eye reports, where the manifest has them
    for (const std::string* f : {&s.left_report, &s.right_report})
      if (!f->empty()) fp = util::crc32(*f + '\x1e', fp);
  std::string fingerprint =
      fmt::format("{}:{}:{}:{}:{}:{}", util::hex32(fp), samples.size(), o.image_size, o.shard_size,
                  hooks.encode_text ? o.context_length : 0, hooks.tokenizer_description);
  if (o.preprocess != Preprocess::kFundusCrop)
    fingerprint += std::string(":") + config::name(o.preprocess);
  fingerprint += fmt::format(":pv{}", kPreprocessVersion);
  if (!hooks.tokenizer_digest.empty()) fingerprint += ":tok-" + hooks.tokenizer_digest;
  const fs::path pack_json = fs::path(o.out) / "pack.json";
  if (fs::exists(pack_json)) {
    std::string old;
    try {
      old = nlohmann::json::parse(util::read_file(pack_json)).value("fingerprint", "");
    } catch (const nlohmann::json::exception&) {
    }
    RETCLIP_CHECK_USAGE(old == fingerprint, o.out, " holds shards of a different pack (",
                        pack_json.string(), " has fingerprint ", old, ", this pack is ",
                        fingerprint, "). HINT: choose an empty --out, or delete ", o.out,
                        " to repack");
  } else {
    for (const auto& e : fs::directory_iterator(o.out))
      RETCLIP_CHECK_USAGE(e.path().extension() != ".rcs", o.out, " already holds ",
                          e.path().filename().string(),
                          " but no pack.json. HINT: choose an "
                          "empty --out, or delete ",
                          o.out, " to repack");
    nlohmann::json pj;
    pj["fingerprint"] = fingerprint;
    pj["manifest"] = o.manifest;
    util::write_file_atomic(pack_json, pj.dump(2) + "\n");
  }

  ShardHeader tmpl;
  tmpl.image_size = o.image_size;
  tmpl.channels = 3;
  tmpl.has_tokens = static_cast<bool>(hooks.encode_text);
  tmpl.context_length = tmpl.has_tokens ? o.context_length : 0;
  tmpl.tokenizer = tmpl.has_tokens ? hooks.tokenizer_description : "";

  const int64_t n = static_cast<int64_t>(samples.size());
  const int64_t nshards = (n + o.shard_size - 1) / o.shard_size;
  const int64_t threads = std::max<int64_t>(1, o.threads > 0 ? o.threads : util::available_cores());
  const int64_t chunk = std::max<int64_t>(32, threads * 8);

  PackReport rep;
  std::set<std::string> bad_patients;  // a patient named by several texts counts once
  std::vector<int64_t> per_file(static_cast<size_t>(nshards), 0);
  std::optional<util::Progress> bar;
  if (o.progress) bar.emplace("pack", n, "patients");

  for (int64_t s = 0; s < nshards; ++s) {
    const int64_t a = s * o.shard_size, b = std::min(n, a + o.shard_size);
    const std::string path = (fs::path(o.out) / shard_file_name(s)).string();
    if (fs::exists(path)) {
      try {
        auto f = ShardFile::open(path);
        ShardHeader h = f->header();
        h.record_count = 0;
        if (h == tmpl) {
          f->verify_all();
          per_file[s] = f->size();
          rep.records += f->size();
          rep.shards_reused += 1;
          if (bar) bar->advance(b - a);
          continue;
        }
        log::warn("{} was packed with other options (size/tokens/tokenizer): repacking it", path);
      } catch (const Error& e) {
        log::warn("{} does not verify ({}): repacking it", path, e.what());
      }
      std::remove(path.c_str());  // (fs::remove may bind to libtorch's incompatible copy)
    }
    ShardWriter writer(path, tmpl);
    for (int64_t c0 = a; c0 < b; c0 += chunk) {
      const int64_t c1 = std::min(b, c0 + chunk);
      std::vector<std::optional<ShardRecord>> recs(static_cast<size_t>(c1 - c0));
      std::vector<std::string> errors(static_cast<size_t>(c1 - c0));
      std::atomic<int64_t> next{c0};
      auto work = [&] {
        for (int64_t i = next++; i < c1; i = next++) {
          try {
            recs[i - c0] = make_record(samples[i], o.image_size, hooks);
          } catch (const std::exception& e) {
            errors[i - c0] = e.what();
          }
        }
      };
      std::vector<std::thread> pool;
      for (int64_t t = 1; t < std::min(threads, c1 - c0); ++t) pool.emplace_back(work);
      work();
      for (auto& t : pool) t.join();
      for (int64_t i = c0; i < c1; ++i) {
        if (!recs[i - c0]) {
          const Sample& sm = samples[i];
          const std::string origin = sm.origin.empty() ? str_cat("row ", i) : sm.origin;
          RETCLIP_CHECK_USAGE(o.on_bad_sample == BadSamplePolicy::kSkip, "bad sample at ", origin,
                              " (patient ", sm.patient_id, "): ", errors[i - c0],
                              ". HINT: fix or remove the row, or pass --on-bad-sample skip");
          if (bad_patients.insert(sm.patient_id).second) {
            rep.bad_samples += 1;
            rep.bad.push_back({origin, errors[i - c0], sm.patient_id});
          }
          continue;
        }
        writer.add(*recs[i - c0]);
      }
      if (bar) bar->advance(c1 - c0);
    }
    per_file[s] = writer.finish();
    rep.records += per_file[s];
  }
  if (bar) bar->finish();
  RETCLIP_CHECK_USAGE(rep.records > 0, "every sample of ", o.manifest,
                      " was bad; nothing was packed. HINT: check the image paths");

  nlohmann::json j;
  j["format"] = "RCSHARD1";
  j["version"] = kShardVersion;
  j["image_size"] = o.image_size;
  j["preprocess"] = config::name(o.preprocess);
  j["preprocess_version"] = kPreprocessVersion;
  j["channels"] = 3;
  j["records"] = rep.records;
  j["has_tokens"] = tmpl.has_tokens;
  j["context_length"] = tmpl.context_length;
  j["tokenizer"] = tmpl.tokenizer;
  j["source_manifest"] = o.manifest;
  j["split"] = o.split;
  j["shard_size"] = o.shard_size;
  j["shards"] = nlohmann::json::array();
  for (int64_t s = 0; s < nshards; ++s)
    j["shards"].push_back({{"file", shard_file_name(s)}, {"records", per_file[s]}});
  util::write_file_atomic(fs::path(o.out) / "index.json", j.dump(2) + "\n");
  rep.shards = nshards;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

// ---------------------------------------------------------------------------------
// pack_dataset

namespace {

PackReport pack_dataset_into(const PackOptions& o) {
  // The tokenizer and the manifest are read before anything is written, so that a wrong
  // file or type fails without touching options.out.
  std::shared_ptr<Tokenizer> tok;
  std::string tok_bytes;
  if (!o.tokenizer_path.empty()) {
    tok = load_tokenizer(o.tokenizer_type, o.tokenizer_path);
    tok_bytes = util::read_file(o.tokenizer_path);
  }
  ReadReport read;
  std::vector<Sample> samples = read_samples(o.manifest, o.format, o.split, o.on_bad_sample, &read);
  // Every bad sample of the pack, whichever stage found it, is listed beside the shards.
  fs::create_directories(o.out);
  auto bad_log = std::make_shared<BadSampleLog>((fs::path(o.out) / kBadSamplesFile).string());
  bad_log->add(read.bad);
  PrecheckOptions pre_opts;
  pre_opts.max_pixels = o.max_image_pixels;
  pre_opts.policy = o.on_bad_sample;
  pre_opts.log = bad_log.get();
  PrecheckReport pre;
  samples = precheck_samples(std::move(samples), pre_opts, &pre);
  PackHooks hooks;
  const int64_t size = o.image_size, max_pixels = o.max_image_pixels;
  const Preprocess how = o.preprocess;
  hooks.prepare_image = [size, max_pixels, how](const ImageRef& ref, const std::string& where) {
    return preprocess_image(decode_image(ref, max_pixels), size, how, where);
  };
  if (tok) {
    const int64_t t = o.context_length;
    hooks.encode_text = [tok, t](const std::string& text) { return tok->encode(text, t); };
    // The set carries its own copy, recorded relative to index.json, so that it can be
    // trained from any directory and moved as a whole.
    const std::string name = shard_tokenizer_file_name(tok->type());
    const fs::path copy = fs::path(o.out) / name;
    std::error_code ec;
    if (fs::exists(copy, ec)) {
      RETCLIP_CHECK_USAGE(util::read_file(copy) == tok_bytes, copy.string(),
                          " already exists and differs from --tokenizer ", o.tokenizer_path,
                          ". HINT: choose an empty --out (the set keeps its own copy of the "
                          "tokenizer under that name)");
    } else {
      util::write_file_atomic(copy, tok_bytes);
    }
    hooks.tokenizer_description = tok->type() + ":" + name;
    hooks.tokenizer_digest = util::hex32(util::crc32(tok_bytes));
  }
  PackReport rep = pack_samples(samples, o, hooks);
  bad_log->add(rep.bad);
  // Rows the manifest reader and the pre-check dropped count as bad samples too.
  std::vector<BadSample> all = read.bad;
  all.insert(all.end(), pre.bad.begin(), pre.bad.end());
  all.insert(all.end(), rep.bad.begin(), rep.bad.end());
  rep.bad = std::move(all);
  rep.bad_samples = static_cast<int64_t>(rep.bad.size());
  rep.bad_list = bad_log->path();
  return rep;
}

}  // namespace

PackReport pack_dataset(const PackOptions& o) {
  std::error_code ec;
  const bool created = !o.out.empty() && !fs::exists(o.out, ec);
  try {
    return pack_dataset_into(o);
  } catch (...) {
    // A failed pack into a new directory leaves nothing behind. (A pack that is killed
    // keeps its finished shards, which the same command then reuses.)
    if (created) util::remove_tree(o.out, ec);
    throw;
  }
}

}  // namespace retclip::data
