// Shard format: bitwise round trip, corruption named by shard and record, truncation
// rejected, deterministic multi-threaded packing and resume of an interrupted pack.
#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "retclip/data/shards.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

using namespace retclip::data;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSize = 16;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / ("shards_" + name);
  // Not fs::remove_all: libtorch.so exports an incompatible copy of it that crashes.
  EXPECT_EQ(std::system(("rm -rf '" + d.string() + "'").c_str()), 0);
  fs::create_directories(d);
  return d;
}

// A deterministic "image" from the path string; paths starting with "bad" fail to decode.
cv::Mat fake_image(const ImageRef& ref, const std::string& where) {
  if (ref.path.rfind("bad", 0) == 0)
    throw retclip::UsageError(where + ": cannot decode " + ref.path);
  cv::Mat m(kSize, kSize, CV_8UC3);
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(ref.path)));
  for (size_t i = 0; i < m.total() * 3; ++i) m.data[i] = static_cast<uint8_t>(rng());
  return m;
}

std::vector<int64_t> fake_tokens(const std::string& text) {
  std::vector<int64_t> ids(8, 0);
  ids[0] = 101;
  for (size_t i = 0; i < text.size() && i < 6; ++i) ids[i + 1] = 1000 + text[i];
  ids[7] = 102;
  return ids;
}

std::vector<Sample> make_samples(int n) {
  std::vector<Sample> v;
  for (int i = 0; i < n; ++i) {
    Sample s;
    s.patient_id = "P" + std::to_string(1000 + i);
    if (i % 7 != 3 || i % 5 == 2) s.left.path = "L" + std::to_string(i);
    if (i % 5 != 2) s.right.path = "R" + std::to_string(i);
    s.report = "report of patient " + std::to_string(i) + (i % 2 ? " with drusen" : "");
    s.labels["dr"] = std::to_string(i % 4);
    s.origin = "manifest.csv row " + std::to_string(i + 2);
    v.push_back(s);
  }
  return v;
}

PackHooks hooks() {
  PackHooks h;
  h.prepare_image = fake_image;
  h.encode_text = fake_tokens;
  h.tokenizer_description = "fake:test";
  return h;
}

PackOptions pack_opts(const fs::path& out, int64_t threads = 1) {
  PackOptions o;
  o.manifest = "manifest.csv";
  o.out = out.string();
  o.image_size = kSize;
  o.context_length = 8;
  o.threads = threads;
  o.shard_size = 10;
  o.progress = false;
  return o;
}

bool same_bytes(const void* a, const cv::Mat& m) {
  return std::memcmp(a, m.data, m.total() * m.elemSize()) == 0;
}

}  // namespace

TEST(Shards, RoundTripIsBitwise) {
  auto dir = fresh_dir("roundtrip");
  auto samples = make_samples(25);
  auto rep = pack_samples(samples, pack_opts(dir), hooks());
  EXPECT_EQ(rep.records, 25);
  EXPECT_EQ(rep.shards, 3);
  EXPECT_EQ(rep.bad_samples, 0);
  auto reader = ShardReader::open(dir.string());
  ASSERT_EQ(reader->size(), 25);
  EXPECT_EQ(reader->info().image_size, kSize);
  EXPECT_TRUE(reader->info().has_tokens);
  EXPECT_EQ(reader->info().tokenizer, "fake:test");
  for (int64_t i = 0; i < 25; ++i) {
    const Sample& s = samples[i];
    ShardRecordView r = reader->record(i);
    EXPECT_EQ(r.patient_id, s.patient_id);
    EXPECT_EQ(r.report, s.report);
    EXPECT_EQ(r.label, "dr=" + std::to_string(i % 4));
    ASSERT_EQ(r.has_left, s.left.present());
    ASSERT_EQ(r.has_right, s.right.present());
    if (r.has_left) {
      EXPECT_TRUE(same_bytes(r.left, fake_image(s.left, "")));
    } else {
      EXPECT_TRUE(r.left_mat().empty());
    }
    if (r.has_right) {
      EXPECT_TRUE(same_bytes(r.right, fake_image(s.right, "")));
    }
    EXPECT_EQ(r.tokens(), fake_tokens(s.report));
  }
  auto v = verify_shard_set(dir.string());
  EXPECT_EQ(v.shards, 3);
  EXPECT_EQ(v.records, 25);
}

TEST(Shards, ThreadCountDoesNotChangeTheBytes) {
  auto d1 = fresh_dir("threads1"), d3 = fresh_dir("threads3");
  auto samples = make_samples(23);
  pack_samples(samples, pack_opts(d1, 1), hooks());
  pack_samples(samples, pack_opts(d3, 3), hooks());
  for (int s = 0; s < 3; ++s)
    EXPECT_EQ(retclip::util::read_file(d1 / shard_file_name(s)),
              retclip::util::read_file(d3 / shard_file_name(s)));
}

TEST(Shards, CorruptedByteIsNamedByShardAndRecord) {
  auto dir = fresh_dir("corrupt");
  pack_samples(make_samples(25), pack_opts(dir), hooks());
  const fs::path shard = dir / shard_file_name(1);
  std::string bytes = retclip::util::read_file(shard);
  const size_t at = bytes.find("P1013");  // record 3 of shard 1
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5 + 1 + 20] ^= 0x40;  // a pixel byte of that record
  { std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes; }
  try {
    verify_shard_set(dir.string());
    FAIL() << "corruption not detected";
  } catch (const retclip::UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("shard-00001.rcs record 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("crc32 mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find("HINT"), std::string::npos) << msg;
  }
  auto reader = ShardReader::open(dir.string());
  EXPECT_NO_THROW(reader->record(12));
  EXPECT_THROW(reader->record(13), retclip::UsageError);  // verified on read
  auto unchecked = ShardReader::open(dir.string(), /*verify_on_read=*/false);
  EXPECT_NO_THROW(unchecked->record(13));
}

TEST(Shards, TruncatedShardIsRejected) {
  auto dir = fresh_dir("truncated");
  pack_samples(make_samples(25), pack_opts(dir), hooks());
  const fs::path shard = dir / shard_file_name(2);
  for (uintmax_t cut : {uintmax_t{1}, uintmax_t{40}, fs::file_size(shard) - 20}) {
    fs::copy_file(dir / shard_file_name(0), shard, fs::copy_options::overwrite_existing);
    fs::resize_file(shard, fs::file_size(shard) - cut);
    EXPECT_THROW(ShardFile::open(shard.string()), retclip::UsageError) << "cut " << cut;
  }
  EXPECT_THROW(ShardReader::open(dir.string()), retclip::UsageError);
  EXPECT_THROW(ShardReader::open((dir / "nope").string()), retclip::UsageError);
}

TEST(Shards, InterruptedPackResumesAndMatchesAFreshPack) {
  auto ref = fresh_dir("resume_ref"), dir = fresh_dir("resume");
  auto samples = make_samples(35);
  pack_samples(samples, pack_opts(ref), hooks());

  // First run dies in shard 2 (rows 20..29): an image that fails under policy "fail".
  PackHooks dying = hooks();
  dying.prepare_image = [](const ImageRef& r, const std::string& w) {
    if (r.path == "R24") throw retclip::Error(w + ": interrupted");
    return fake_image(r, w);
  };
  auto o = pack_opts(dir);
  o.on_bad_sample = BadSamplePolicy::kFail;
  try {
    pack_samples(samples, o, dying);
    FAIL() << "expected the bad sample to stop packing";
  } catch (const retclip::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.csv row 26"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(dir / shard_file_name(0)));
  EXPECT_TRUE(fs::exists(dir / shard_file_name(1)));
  EXPECT_FALSE(fs::exists(dir / shard_file_name(2)));
  EXPECT_FALSE(fs::exists(dir / "index.json"));
  for (const auto& e : fs::directory_iterator(dir))  // no temporary left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos);

  // Corrupt shard 1 too: the rerun must rebuild it rather than keep it.
  {
    std::string bytes = retclip::util::read_file(dir / shard_file_name(1));
    bytes[bytes.size() / 2] ^= 1;
    std::ofstream(dir / shard_file_name(1), std::ios::binary | std::ios::trunc) << bytes;
  }
  int64_t decoded = 0;
  PackHooks counting = hooks();
  counting.prepare_image = [&](const ImageRef& r, const std::string& w) {
    ++decoded;
    return fake_image(r, w);
  };
  auto rep = pack_samples(samples, pack_opts(dir), counting);
  EXPECT_EQ(rep.shards_reused, 1);
  EXPECT_EQ(rep.records, 35);
  int64_t expect_decoded = 0;
  for (int i = 10; i < 35; ++i)
    expect_decoded += samples[i].left.present() + samples[i].right.present();
  EXPECT_EQ(decoded, expect_decoded);
  for (int s = 0; s < 4; ++s)
    EXPECT_EQ(retclip::util::read_file(ref / shard_file_name(s)),
              retclip::util::read_file(dir / shard_file_name(s)))
        << shard_file_name(s);
  EXPECT_EQ(retclip::util::read_file(ref / "index.json"),
            retclip::util::read_file(dir / "index.json"));
}

TEST(Shards, AnotherManifestDoesNotReuseShards) {
  auto dir = fresh_dir("other");
  auto samples = make_samples(12);
  pack_samples(samples, pack_opts(dir), hooks());
  samples[3].report = "changed";
  try {
    pack_samples(samples, pack_opts(dir), hooks());
    FAIL() << "a different pack reused the directory";
  } catch (const retclip::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("different pack"), std::string::npos) << e.what();
  }
  auto o = pack_opts(dir);
  o.image_size = 8;
  EXPECT_THROW(pack_samples(make_samples(12), o, hooks()), retclip::UsageError);
}

TEST(Shards, BadSamplesAreSkippedAndSummarised) {
  auto dir = fresh_dir("bad");
  auto samples = make_samples(12);
  samples[4].right.path = "bad-4";
  samples[9].left.path = "bad-9";
  samples[9].right.path = "";
  auto rep = pack_samples(samples, pack_opts(dir), hooks());
  EXPECT_EQ(rep.records, 10);
  EXPECT_EQ(rep.bad_samples, 2);
  ASSERT_EQ(rep.bad.size(), 2u);
  EXPECT_EQ(rep.bad[0].origin, "manifest.csv row 6");
  EXPECT_NE(rep.bad[0].reason.find("bad-4"), std::string::npos);
  auto reader = ShardReader::open(dir.string());
  EXPECT_EQ(reader->record(4).patient_id, "P1005");  // row 4 dropped, order kept
}

TEST(Shards, EveryBadSampleIsKeptAndAPatientCountsOnce) {
  // Before: only the first five bad rows were kept, and a patient named by several
  // texts (RET-CLIP layout) was counted once per text.
  auto dir = fresh_dir("bad-all");
  auto samples = make_samples(20);
  for (int i : {1, 3, 5, 7, 9, 11, 13}) samples[i].left.path = "bad-" + std::to_string(i);
  samples[14] = samples[13];  // patient of row 13 named again by another text
  samples[14].origin = "texts.jsonl row 99";
  auto rep = pack_samples(samples, pack_opts(dir), hooks());
  EXPECT_EQ(rep.bad_samples, 7);
  ASSERT_EQ(rep.bad.size(), 7u);
  EXPECT_NE(rep.bad[6].reason.find("bad-13"), std::string::npos);
  EXPECT_EQ(rep.bad[6].patient_id, samples[13].patient_id);
  EXPECT_EQ(rep.records, 20 - 8);
}

TEST(Shards, WriterRejectsWrongSizes) {
  auto dir = fresh_dir("writer");
  ShardHeader h;
  h.image_size = 4;
  h.has_tokens = true;
  h.context_length = 3;
  ShardWriter w((dir / "x.rcs").string(), h);
  ShardRecord r;
  r.patient_id = "p";
  r.has_left = true;
  r.left.assign(4 * 4 * 3 - 1, 0);
  r.tokens = {1, 2, 3};
  EXPECT_THROW(w.add(r), retclip::UsageError);
  r.left.push_back(0);
  r.tokens = {1, 2};
  EXPECT_THROW(w.add(r), retclip::UsageError);
  r.tokens = {1, 2, 3};
  w.add(r);
  EXPECT_EQ(w.finish(), 1);
  auto f = ShardFile::open((dir / "x.rcs").string());
  EXPECT_EQ(f->size(), 1);
  EXPECT_EQ(f->record(0).tokens(), (std::vector<int64_t>{1, 2, 3}));
}

TEST(Shards, PerEyeReportsAndPreprocessingTravelWithTheSet) {
  auto dir = fresh_dir("per_eye");
  auto samples = make_samples(6);
  samples[0].left_report = "normal fundus";
  samples[0].right_report = "drusen; cup=0.6 (50%)";  // the label separators, escaped
  samples[1].left_report = "normal fundus";
  auto o = pack_opts(dir);
  o.preprocess = Preprocess::kResize;
  pack_samples(samples, o, hooks());
  auto reader = ShardReader::open(dir.string());
  EXPECT_EQ(reader->info().preprocess, Preprocess::kResize);
  ShardRecordView r0 = reader->record(0), r1 = reader->record(1), r2 = reader->record(2);
  EXPECT_EQ(r0.label_value("left_report"), "normal fundus");
  EXPECT_EQ(r0.label_value("right_report"), "drusen; cup=0.6 (50%)");
  EXPECT_EQ(r0.label_value("dr"), "0");
  EXPECT_EQ(r1.label_value("left_report"), "normal fundus");
  EXPECT_EQ(r1.label_value("right_report"), "");
  EXPECT_EQ(r2.label_value("left_report"), "");
  EXPECT_EQ(r2.label, "dr=2");  // without per-eye reports the label is as before
  // Another preprocessing is another pack: the shards are not reused for it.
  o.preprocess = Preprocess::kFundusCrop;
  EXPECT_THROW(pack_samples(samples, o, hooks()), retclip::UsageError);
  // A set packed before "preprocess" was recorded reads as fundus_crop.
  auto old = fresh_dir("per_eye_old");
  pack_samples(samples, pack_opts(old), hooks());
  const fs::path index = old / "index.json";
  std::string text = retclip::util::read_file(index);
  const auto at = text.find("\"preprocess\"");
  ASSERT_NE(at, std::string::npos);
  text.erase(at, text.find('\n', at) - at + 1);
  std::ofstream(index) << text;
  EXPECT_EQ(ShardReader::open(old.string())->info().preprocess, Preprocess::kFundusCrop);
}

namespace {

template <typename Fn>
std::string usage_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const retclip::UsageError& e) {
    return e.what();
  }
  return "<no UsageError>";
}

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg) << "\nwanted: " << (part)

/// Runs the rest of a scope in `dir`, then returns to the directory it started in
/// (chdir: the process-wide current directory, as a user's shell sets it).
class InDirectory {
 public:
  explicit InDirectory(const fs::path& dir) {
    char buf[PATH_MAX];
    EXPECT_NE(::getcwd(buf, sizeof buf), nullptr);
    before_ = buf;
    EXPECT_EQ(::chdir(dir.c_str()), 0) << dir;
  }
  ~InDirectory() { EXPECT_EQ(::chdir(before_.c_str()), 0); }

 private:
  std::string before_;
};

std::string abs_path(const fs::path& p) {
  return fs::absolute(p).lexically_normal().string();
}

}  // namespace

TEST(Shards, SetsOfAnOlderPreprocessingAreRefusedWithTheRepackCommand) {
  auto dir = fresh_dir("old_preprocess");
  pack_samples(make_samples(6), pack_opts(dir), hooks());
  const fs::path index = dir / "index.json";
  const std::string text = retclip::util::read_file(index);
  EXPECT_HAS(text, "\"preprocess_version\": " + std::to_string(kPreprocessVersion));
  EXPECT_EQ(ShardReader::open(dir.string())->info().preprocess_version, kPreprocessVersion);
  // As packed before the version was recorded (version 1: the fundus crop's padding
  // came from the photograph).
  std::string old = text;
  const auto at = old.find("\"preprocess_version\"");
  old.erase(at, old.find('\n', at) - at + 1);
  std::ofstream(index) << old;
  std::string msg = usage_error_of([&] { ShardReader::open(dir.string()); });
  EXPECT_HAS(msg, index.string() + ": the shards were packed with image preprocessing version 1");
  EXPECT_HAS(msg, "padded its square with the photograph around the field of view");
  EXPECT_HAS(msg, "HINT: re-pack the manifest: `retclip pack --manifest manifest.csv --out "
                  "NEW_DIR --size 16 --preprocess fundus_crop --tokenizer FILE --context 8`");
  EXPECT_HAS(usage_error_of([&] { verify_shard_set(dir.string()); }), "re-pack");
  // A version this build does not know is refused too.
  std::string newer = text;
  const std::string key = "\"preprocess_version\": " + std::to_string(kPreprocessVersion);
  newer.replace(newer.find(key), key.size(),
                "\"preprocess_version\": " + std::to_string(kPreprocessVersion + 1));
  std::ofstream(index) << newer;
  EXPECT_HAS(usage_error_of([&] { ShardReader::open(dir.string()); }), "(a newer retclip)");
  // An interrupted pack of the old pipeline is not resumed by this one.
  auto partial = fresh_dir("old_partial");
  pack_samples(make_samples(6), pack_opts(partial), hooks());
  const fs::path pack_json = partial / "pack.json";
  std::string pj = retclip::util::read_file(pack_json);
  const std::string pv = ":pv" + std::to_string(kPreprocessVersion);
  ASSERT_NE(pj.find(pv), std::string::npos) << pj;
  pj.erase(pj.find(pv), pv.size());
  std::ofstream(pack_json) << pj;
  EXPECT_HAS(usage_error_of([&] { pack_samples(make_samples(6), pack_opts(partial), hooks()); }),
             "holds shards of a different pack");
}

TEST(Shards, RecordedTokenizerIsFoundBesideIndexJsonFromAnyDirectory) {
  auto dir = fresh_dir("tok_resolve");
  retclip::util::write_file_atomic(dir / "tokenizer.model", "model bytes");
  EXPECT_FALSE(resolve_shard_tokenizer(dir.string(), "").has_value());
  auto t = resolve_shard_tokenizer(dir.string(), "sentencepiece:tokenizer.model");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->type, "sentencepiece");
  EXPECT_EQ(t->path, abs_path(dir / "tokenizer.model"));
  {
    // The set named relative to another directory: the file is still found, absolute.
    InDirectory in(dir.parent_path());
    t = resolve_shard_tokenizer(dir.filename().string(), "sentencepiece:tokenizer.model");
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->path, abs_path(dir / "tokenizer.model"));
  }
  {
    // A set packed before the copy: its file relative to where `pack` ran.
    auto elsewhere = fresh_dir("tok_resolve_cwd");
    retclip::util::write_file_atomic(elsewhere / "vocab.txt", "[PAD]\n");
    InDirectory in(elsewhere);
    t = resolve_shard_tokenizer(dir.string(), "wordpiece:vocab.txt");
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->path, abs_path(elsewhere / "vocab.txt"));
  }
  // Nowhere: the error names index.json, the record and every place looked at.
  const std::string msg =
      usage_error_of([&] { resolve_shard_tokenizer(dir.string(), "sentencepiece:tok.model"); });
  EXPECT_HAS(msg, "record their tokenizer as 'sentencepiece:tok.model' (" +
                      (dir / "index.json").string() + ")");
  EXPECT_HAS(msg, "looked for " + abs_path(dir / "tok.model") + " and " + abs_path("tok.model"));
  EXPECT_HAS(msg, "HINT: set data.tokenizer.path");
  EXPECT_HAS(usage_error_of([&] { resolve_shard_tokenizer(dir.string(), "vocab.txt"); }),
             "expected \"tokenizer\" as \"type:file\"");
}

#ifdef RETCLIP_WITH_IMGCODECS

namespace {

/// A manifest of `n` patients with small disc photographs (and `extra_rows` appended)
/// and a WordPiece vocab, in `dir`.
void write_pack_input(const fs::path& dir, int n, const std::string& extra_rows = "") {
  cv::Mat img(48, 64, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(img, {32, 24}, 20, cv::Scalar(40, 90, 200), cv::FILLED);
  cv::imwrite((dir / "eye.jpg").string(), img);
  std::string csv = "patient_id,left_image,right_image,report\n";
  for (int i = 0; i < n; ++i) csv += "P" + std::to_string(i) + ",eye.jpg,eye.jpg,left eye drusen\n";
  std::ofstream(dir / "m.csv") << csv << extra_rows;
  std::ofstream(dir / "words.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nleft\neye\ndr\n##usen\n";
}

PackOptions dataset_opts(const fs::path& dir, const std::string& out) {
  PackOptions o;
  o.manifest = (dir / "m.csv").string();
  o.out = (dir / out).string();
  o.image_size = 32;
  o.context_length = 8;
  o.threads = 1;
  o.progress = false;
  return o;
}

}  // namespace

TEST(PackDataset, KeepsACopyOfTheTokenizerWhoseTypeItInfers) {
  auto dir = fresh_dir("pack_tok");
  write_pack_input(dir, 3);
  PackOptions o = dataset_opts(dir, "shards");
  o.tokenizer_path = (dir / "words.txt").string();  // type left to auto
  pack_dataset(o);
  const std::string index = retclip::util::read_file(dir / "shards" / "index.json");
  EXPECT_HAS(index, "\"tokenizer\": \"wordpiece:vocab.txt\"");
  EXPECT_EQ(retclip::util::read_file(dir / "shards" / "vocab.txt"),
            retclip::util::read_file(dir / "words.txt"));
  auto reader = ShardReader::open(o.out);
  EXPECT_EQ(reader->info().tokenizer, "wordpiece:vocab.txt");
  EXPECT_EQ(reader->record(0).tokens(), (std::vector<int64_t>{2, 5, 6, 7, 8, 3, 0, 0}));
  // The set moves as a whole and is read from anywhere, without the original file.
  ASSERT_EQ(std::rename((dir / "shards").c_str(), (dir / "moved").c_str()), 0);
  ASSERT_EQ(std::remove((dir / "words.txt").c_str()), 0);
  auto t = resolve_shard_tokenizer((dir / "moved").string(), reader->info().tokenizer);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->path, abs_path(dir / "moved" / "vocab.txt"));
  // Resuming into the set with another tokenizer under the same name is refused.
  std::ofstream(dir / "other.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nother\n";
  PackOptions again = dataset_opts(dir, "moved");
  again.tokenizer_path = (dir / "other.txt").string();
  EXPECT_HAS(usage_error_of([&] { pack_dataset(again); }), "already exists and differs");
}

TEST(PackDataset, AFailedPackLeavesNoDirectoryBehind) {
  auto dir = fresh_dir("pack_fail");
  write_pack_input(dir, 2);
  // A tokenizer file that is neither kind.
  std::ofstream(dir / "junk.bin") << std::string("\x01\x02\x03\x00junk", 8);
  PackOptions o = dataset_opts(dir, "out1");
  o.tokenizer_path = (dir / "junk.bin").string();
  EXPECT_HAS(usage_error_of([&] { pack_dataset(o); }), "cannot tell the type of tokenizer file");
  EXPECT_FALSE(fs::exists(o.out));
  // A damaged image under fail, found after the directory was made.
  std::string jpg = retclip::util::read_file(dir / "eye.jpg");
  std::ofstream(dir / "cut.jpg", std::ios::binary) << jpg.substr(0, jpg.size() / 2);
  write_pack_input(dir, 2, "P9,cut.jpg,,r\n");
  o = dataset_opts(dir, "out2");
  o.on_bad_sample = BadSamplePolicy::kFail;
  EXPECT_HAS(usage_error_of([&] { pack_dataset(o); }), "is a truncated JPEG");
  EXPECT_FALSE(fs::exists(o.out));
  // A directory that existed before is left in place.
  fs::create_directories(dir / "mine");
  o = dataset_opts(dir, "mine");
  o.on_bad_sample = BadSamplePolicy::kFail;
  EXPECT_THROW(pack_dataset(o), retclip::UsageError);
  EXPECT_TRUE(fs::exists(dir / "mine"));
}

#endif  // RETCLIP_WITH_IMGCODECS
