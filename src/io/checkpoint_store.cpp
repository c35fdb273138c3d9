// Checkpoint store: atomic directory-per-step checkpoints with a checksummed
// COMPLETE marker, keep-last-K + keep-every-M pruning, and resume resolution.
#include "retclip/io/checkpoint_store.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "retclip-checkpoint";
constexpr int kVersion = 1;

// Directory trees are removed with util::remove_tree, never std::filesystem::remove_all
// (see util/fs.hpp).
using util::remove_tree;

void write_all_fsync(const fs::path& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  RETCLIP_CHECK(fd >= 0, "cannot create ", path.string(), ": ", std::strerror(errno),
                ". HINT: check that checkpoint.dir is writable");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw Error(str_cat("cannot write ", path.string(), ": ", std::strerror(e),
                          ". HINT: is the disk full?"));
    }
    off += static_cast<size_t>(n);
  }
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  RETCLIP_CHECK(rc == 0, "fsync failed for ", path.string(), ": ", std::strerror(e));
}

void fsync_file(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  RETCLIP_CHECK(fd >= 0, "cannot open ", path.string(), " to fsync it: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  RETCLIP_CHECK(rc == 0, "fsync failed for ", path.string(), ": ", std::strerror(e));
}

// Size and CRC-32 of a file, streamed in 1 MiB pieces (model files can be GBs).
// Returns false when the file cannot be read.
bool file_size_crc(const fs::path& path, int64_t& size, uint32_t& crc) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::vector<char> buf(1 << 20);
  size = 0;
  crc = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    auto n = in.gcount();
    if (n <= 0) break;
    crc = util::crc32(buf.data(), static_cast<size_t>(n), crc);
    size += n;
  }
  return !in.bad();
}

bool valid_file_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos &&
         n != CheckpointStore::kMarker;
}

// Parses a COMPLETE marker; returns a reason on failure.
std::optional<CheckpointInfo> parse_marker(const fs::path& ckpt, std::string& reason) {
  const fs::path marker = ckpt / CheckpointStore::kMarker;
  std::error_code ec;
  if (!fs::exists(marker, ec)) {
    reason = "no COMPLETE marker (interrupted while writing?)";
    return std::nullopt;
  }
  std::string text;
  try {
    text = util::read_file(marker);
  } catch (const Error& e) {
    reason = str_cat("unreadable COMPLETE marker: ", e.what());
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    reason = "COMPLETE marker is not valid JSON";
    return std::nullopt;
  }
  try {
    if (j.at("format").get<std::string>() != kFormat) {
      reason = str_cat("COMPLETE marker has format '", j.at("format").get<std::string>(),
                       "', expected '", kFormat, "'");
      return std::nullopt;
    }
    if (j.at("version").get<int>() > kVersion) {
      reason = str_cat("COMPLETE marker version ", j.at("version").get<int>(),
                       " is newer than this retclip reads (", kVersion, ")");
      return std::nullopt;
    }
    CheckpointInfo info;
    info.path = ckpt;
    info.step = j.at("step").get<int64_t>();
    info.time = j.at("time").get<double>();
    info.config_hash = j.at("config_hash").get<std::string>();
    for (const auto& f : j.at("files")) {
      CheckpointFileRecord r;
      r.name = f.at("name").get<std::string>();
      r.size = f.at("size").get<int64_t>();
      r.crc32 = static_cast<uint32_t>(std::stoul(f.at("crc32").get<std::string>(), nullptr, 16));
      if (!valid_file_name(r.name)) {
        reason = str_cat("COMPLETE marker lists an invalid file name '", r.name, "'");
        return std::nullopt;
      }
      info.files.push_back(std::move(r));
    }
    info.meta = j.value("meta", nlohmann::json());
    auto named = CheckpointStore::parse_dir_name(ckpt.filename().string());
    if (named && *named != info.step) {
      reason = str_cat("COMPLETE marker says step ", info.step, " but the directory is ",
                       ckpt.filename().string());
      return std::nullopt;
    }
    return info;
  } catch (const std::exception& e) {
    reason = str_cat("COMPLETE marker lacks a field or has a wrong type: ", e.what());
    return std::nullopt;
  }
}

}  // namespace

CheckpointFile CheckpointFile::bytes(std::string name, std::string data) {
  auto shared = std::make_shared<std::string>(std::move(data));
  return {std::move(name), [shared](const fs::path& p) { write_all_fsync(p, *shared); }};
}

CheckpointFile CheckpointFile::writer(std::string name, std::function<void(const fs::path&)> fn) {
  return {std::move(name), std::move(fn)};
}

CheckpointStore::Options CheckpointStore::options_from(const config::CheckpointConfig& cfg,
                                                       std::string config_hash) {
  Options o;
  o.keep_last = cfg.keep_last;
  o.keep_every = cfg.keep_every;
  o.config_hash = std::move(config_hash);
  return o;
}

std::string CheckpointStore::dir_name(int64_t step) {
  RETCLIP_CHECK(step >= 0, "expected a non-negative checkpoint step but got ", step);
  std::string digits = std::to_string(step);
  if (digits.size() < 8) digits.insert(0, 8 - digits.size(), '0');
  return "step-" + digits;
}

std::optional<int64_t> CheckpointStore::parse_dir_name(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return std::nullopt;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

CheckpointStore::CheckpointStore(fs::path dir, Options options)
    : dir_(std::move(dir)), options_(std::move(options)) {}

void CheckpointStore::remove_leftovers() const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || name.find(".tmp-") == std::string::npos) continue;
    std::error_code rm;
    remove_tree(e.path(), rm);
    if (rm)
      log::warn("cannot remove leftover {}: {}", e.path().string(), rm.message());
    else
      log::info("removed leftover {} (an interrupted checkpoint write)", e.path().string());
  }
}

fs::path CheckpointStore::save(int64_t step, const std::vector<CheckpointFile>& files,
                               const nlohmann::json& meta) {
  std::set<std::string> names;
  for (const auto& f : files) {
    RETCLIP_CHECK(valid_file_name(f.name), "checkpoint file name '", f.name,
                  "' is not a plain file name (or is the reserved COMPLETE)");
    RETCLIP_CHECK(names.insert(f.name).second, "checkpoint file '", f.name, "' given twice");
    RETCLIP_CHECK(static_cast<bool>(f.write), "checkpoint file '", f.name, "' has no writer");
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  RETCLIP_CHECK(!ec, "cannot create the checkpoint directory ", dir_.string(), ": ", ec.message(),
                ". HINT: set checkpoint.dir to a writable place");
  remove_leftovers();

  const std::string pid = std::to_string(::getpid());
  const fs::path final_path = dir_ / dir_name(step);
  const fs::path tmp = dir_ / (dir_name(step) + ".tmp-" + pid);
  fs::create_directories(tmp);
  try {
    nlohmann::ordered_json marker;
    marker["format"] = kFormat;
    marker["version"] = kVersion;
    marker["step"] = step;
    marker["config_hash"] = options_.config_hash;
    auto records = nlohmann::ordered_json::array();
    for (const auto& f : files) {
      const fs::path p = tmp / f.name;
      f.write(p);
      RETCLIP_CHECK(fs::is_regular_file(p), "checkpoint writer for '", f.name, "' did not create ",
                    p.string());
      fsync_file(p);
      int64_t size = 0;
      uint32_t crc = 0;
      RETCLIP_CHECK(file_size_crc(p, size, crc), "cannot read back ", p.string());
      nlohmann::ordered_json r;
      r["name"] = f.name;
      r["size"] = size;
      r["crc32"] = util::hex32(crc);
      records.push_back(std::move(r));
    }
    marker["files"] = std::move(records);
    marker["time"] =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (!meta.is_null()) marker["meta"] = meta;
    util::fsync_path(tmp);  // the files' directory entries before the marker
    write_all_fsync(tmp / kMarker, marker.dump(2) + "\n");
    util::fsync_path(tmp);

    // Re-saving a step (e.g. after resuming from it): move the old one aside under a
    // leftover name, so a crash here still leaves a complete step-N or a cleanable tmp.
    if (fs::exists(final_path)) {
      const fs::path old = dir_ / (dir_name(step) + ".tmp-" + pid + "-old");
      fs::rename(final_path, old);
      fs::rename(tmp, final_path);
      remove_tree(old);
    } else {
      fs::rename(tmp, final_path);
    }
    util::fsync_path(dir_);
  } catch (...) {
    std::error_code rm;
    remove_tree(tmp, rm);
    throw;
  }
  log::info("saved checkpoint {} ({} files)", final_path.string(), files.size());
  prune(step);
  return final_path;
}

std::vector<CheckpointInfo> CheckpointStore::list() const {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!e.is_directory()) continue;
    if (!parse_dir_name(e.path().filename().string())) continue;
    std::string reason;
    if (auto info = parse_marker(e.path(), reason)) out.push_back(std::move(*info));
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

CheckpointCheck CheckpointStore::verify(const fs::path& path) {
  CheckpointCheck c;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    c.reason = "not a directory";
    return c;
  }
  auto info = parse_marker(path, c.reason);
  if (!info) return c;
  for (const auto& f : info->files) {
    int64_t size = 0;
    uint32_t crc = 0;
    const fs::path p = path / f.name;
    if (!fs::is_regular_file(p, ec)) {
      c.reason = str_cat("file ", f.name, " listed in COMPLETE is missing");
      return c;
    }
    if (!file_size_crc(p, size, crc)) {
      c.reason = str_cat("file ", f.name, " is unreadable");
      return c;
    }
    if (size != f.size) {
      c.reason = str_cat("file ", f.name, " has ", size, " bytes, COMPLETE records ", f.size);
      return c;
    }
    if (crc != f.crc32) {
      c.reason = str_cat("file ", f.name, " has CRC-32 ", util::hex32(crc), ", COMPLETE records ",
                         util::hex32(f.crc32), " (corrupted)");
      return c;
    }
  }
  c.ok = true;
  c.info = std::move(info);
  return c;
}

std::optional<CheckpointInfo> CheckpointStore::latest_complete() const {
  // Every step-N directory, newest first, markers or not: a broken newest one must be
  // reported, not silently passed over.
  std::vector<std::pair<int64_t, fs::path>> dirs;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return std::nullopt;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!e.is_directory()) continue;
    if (auto s = parse_dir_name(e.path().filename().string())) dirs.emplace_back(*s, e.path());
  }
  std::sort(dirs.begin(), dirs.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [step, path] : dirs) {
    auto check = verify(path);
    if (check.ok) return std::move(check.info);
    log::warn("skipping checkpoint {}: {}", path.string(), check.reason);
  }
  return std::nullopt;
}

std::optional<CheckpointInfo> CheckpointStore::resolve(const std::string& resume) const {
  if (resume.empty()) return std::nullopt;
  if (resume == "auto" || resume == "auto-or-scratch") {
    auto latest = latest_complete();
    if (latest) return latest;
    // Broken step-N directories are evidence (and possibly repairable): a fresh run
    // would overwrite them, so auto stops unless the user asks for scratch.
    std::vector<std::string> broken;
    std::error_code ec;
    if (fs::is_directory(dir_, ec))
      for (const auto& e : fs::directory_iterator(dir_, ec))
        if (e.is_directory() && parse_dir_name(e.path().filename().string()))
          broken.push_back(e.path().filename().string() + ": " + verify(e.path()).reason);
    std::sort(broken.begin(), broken.end());
    if (!broken.empty() && resume == "auto") {
      std::string list;
      for (const auto& b : broken) list += "\n  " + b;
      throw UsageError(
          str_cat("checkpoint.resume=auto: no usable checkpoint in ", dir_.string(), "; found ",
                  broken.size(), " broken:", list,
                  "\nHINT: move them away or pass --resume PATH to one you repaired; --resume "
                  "auto-or-scratch starts from scratch and overwrites them"));
    }
    log::info("resume={}: no complete checkpoint in {}, starting from scratch", resume,
              dir_.string());
    return std::nullopt;
  }
  const fs::path p(resume);
  std::error_code ec;
  RETCLIP_CHECK_USAGE(fs::is_directory(p, ec),
                      "checkpoint.resume: expected a checkpoint "
                      "directory but '",
                      resume, "' ", fs::exists(p, ec) ? "is not a directory" : "does not exist",
                      ". HINT: pass a step-NNNNNNNN directory, a checkpoints directory or auto");
  if (fs::exists(p / kMarker, ec) || parse_dir_name(p.filename().string())) {
    auto check = verify(p);
    RETCLIP_CHECK_USAGE(check.ok, "checkpoint.resume: ", p.string(),
                        " is not usable: ", check.reason,
                        ". HINT: use --set checkpoint.resume=auto to take the "
                        "newest complete checkpoint instead");
    return std::move(check.info);
  }
  CheckpointStore other(p, options_);
  auto latest = other.latest_complete();
  RETCLIP_CHECK_USAGE(latest.has_value(), "checkpoint.resume: ", p.string(),
                      " holds no complete checkpoint (step-NNNNNNNN with a valid COMPLETE). "
                      "HINT: check the path, or leave checkpoint.resume empty to start fresh");
  return latest;
}

std::vector<fs::path> CheckpointStore::prune(int64_t protect) {
  std::vector<fs::path> removed;
  auto all = list();
  if (options_.keep_last <= 0) return removed;
  const auto n = static_cast<int64_t>(all.size());
  for (int64_t i = 0; i < n; ++i) {
    const auto& c = all[static_cast<size_t>(i)];
    const bool recent = i >= n - options_.keep_last;
    const bool milestone = options_.keep_every > 0 && c.step % options_.keep_every == 0;
    if (recent || milestone || c.step == protect) continue;
    std::error_code ec;
    remove_tree(c.path, ec);
    if (ec) {
      log::warn("cannot remove old checkpoint {}: {}", c.path.string(), ec.message());
      continue;
    }
    removed.push_back(c.path);
  }
  if (!removed.empty()) util::fsync_path(dir_);
  return removed;
}

// ---------------------------------------------------------------------------------
// Training checkpoints as export and eval read them

std::string CheckpointLayout::rng_file(const std::string& kind, int rank) {
  return rank == 0 ? "rng_" + kind + ".bin"
                   : "rng_" + kind + ".rank" + std::to_string(rank) + ".bin";
}

fs::path resolve_checkpoint_dir(const std::string& path) {
  fs::path p(path);
  RETCLIP_CHECK_USAGE(fs::exists(p), "checkpoint path ", path, " does not exist");
  if (fs::exists(p / CheckpointStore::kMarker)) {
    CheckpointCheck c = CheckpointStore::verify(p);
    RETCLIP_CHECK_USAGE(c.ok, "checkpoint ", path, " is not usable: ", c.reason);
    return p;
  }
  if (fs::exists(p / "checkpoints")) p /= "checkpoints";
  CheckpointStore store(p, {});
  auto latest = store.latest_complete();
  RETCLIP_CHECK_USAGE(latest.has_value(), "no complete checkpoint under ", p.string(),
                      ". HINT: pass a step-NNNNNNNN directory, a checkpoints directory or a run "
                      "directory");
  return latest->path;
}

CheckpointContents open_checkpoint(const std::string& path) {
  CheckpointContents c;
  c.dir = resolve_checkpoint_dir(path);
  c.weights = c.dir / CheckpointLayout::kWeights;
  c.config_yaml = util::read_file(c.dir / CheckpointLayout::kConfig);
  const fs::path state = c.dir / CheckpointLayout::kTrainerState;
  try {
    c.step = nlohmann::json::parse(util::read_file(state)).at("step").get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    throw UsageError(str_cat(state.string(), ": expected a JSON object with an integer \"step\"",
                             ". HINT: the checkpoint is not a retclip training checkpoint; pass "
                             "the step-NNNNNNNN directory of a `retclip train` run"));
  }
  return c;
}

}  // namespace retclip::io
