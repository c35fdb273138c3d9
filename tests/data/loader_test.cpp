// Loader: deterministic batches whatever the worker count, exact mid-epoch resume,
// bounded prefetch, missing eyes, bad-sample policies, shard source and rank splits.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "retclip/data/loader.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

using namespace retclip::data;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSize = 16, kCtx = 6;

cv::Mat noise_image(uint32_t seed) {
  cv::Mat m(kSize, kSize, CV_8UC3);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < m.total() * 3; ++i) m.data[i] = static_cast<uint8_t>(rng());
  return m;
}

std::vector<DecodedSample> memory_samples(int n) {
  std::vector<DecodedSample> v;
  for (int i = 0; i < n; ++i) {
    DecodedSample d;
    d.patient_id = "P" + std::to_string(i);
    d.report = "report " + std::to_string(i);
    if (i % 6 != 4) d.left = noise_image(2 * i);
    if (i % 5 != 3 || i % 6 == 4) d.right = noise_image(2 * i + 1);
    d.tokens.assign(kCtx, 0);
    d.tokens[0] = 101;
    d.tokens[1] = 1000 + i;
    d.tokens[2] = 102;
    v.push_back(d);
  }
  return v;
}

LoaderOptions loader_opts(int64_t workers, int64_t batch = 4) {
  LoaderOptions o;
  o.batch_size = batch;
  o.image_size = kSize;
  o.context_length = kCtx;
  o.workers = workers;
  o.prefetch = 3;
  o.augment.enabled = true;
  o.seed = 42;
  return o;
}

std::vector<Batch> take(Loader& l, int n) {
  std::vector<Batch> out;
  while (static_cast<int>(out.size()) < n) {
    auto b = l.next();
    if (b) out.push_back(std::move(*b));
  }
  return out;
}

void expect_same(const Batch& a, const Batch& b, const std::string& what) {
  EXPECT_TRUE(at::equal(a.left, b.left)) << what;
  EXPECT_TRUE(at::equal(a.right, b.right)) << what;
  EXPECT_TRUE(at::equal(a.tokens, b.tokens)) << what;
  EXPECT_TRUE(at::equal(a.has_left, b.has_left)) << what;
  EXPECT_TRUE(at::equal(a.has_right, b.has_right)) << what;
  EXPECT_EQ(a.patient_ids, b.patient_ids) << what;
  EXPECT_EQ(a.epoch, b.epoch) << what;
  EXPECT_EQ(a.step_in_epoch, b.step_in_epoch) << what;
}

}  // namespace

TEST(Loader, BatchShapesMissingEyesAndTokens) {
  auto samples = memory_samples(12);
  Loader l(make_memory_source(samples), nullptr, loader_opts(2));
  EXPECT_EQ(l.steps_per_epoch(), 3);
  auto b = l.next();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->left.sizes(), (std::vector<int64_t>{4, 3, kSize, kSize}));
  EXPECT_EQ(b->left.scalar_type(), at::kFloat);
  EXPECT_EQ(b->tokens.sizes(), (std::vector<int64_t>{4, kCtx}));
  EXPECT_EQ(b->tokens.scalar_type(), at::kLong);
  EXPECT_EQ(b->has_left.scalar_type(), at::kBool);
  for (int64_t j = 0; j < 4; ++j) {
    const auto& s = samples[b->indices[j]];
    EXPECT_EQ(b->patient_ids[j], s.patient_id);
    EXPECT_EQ(b->has_left[j].item<bool>(), !s.left.empty());
    EXPECT_EQ(b->has_right[j].item<bool>(), !s.right.empty());
    if (s.left.empty()) {
      EXPECT_EQ(b->left[j].abs().sum().item<float>(), 0.f);
    }
    if (s.right.empty()) {
      EXPECT_EQ(b->right[j].abs().sum().item<float>(), 0.f);
    }
    EXPECT_EQ(b->tokens[j][1].item<int64_t>(), 1000 + b->indices[j]);
  }
}

TEST(Loader, SameBatchesWhateverTheWorkerCount) {
  auto samples = memory_samples(30);
  std::vector<std::vector<Batch>> runs;
  for (int64_t w : {0, 1, 3}) {
    Loader l(make_memory_source(samples), nullptr, loader_opts(w));
    runs.push_back(take(l, 14));  // two epochs of 7
  }
  Loader again(make_memory_source(samples), nullptr, loader_opts(3));
  runs.push_back(take(again, 14));
  for (size_t r = 1; r < runs.size(); ++r)
    for (size_t k = 0; k < runs[0].size(); ++k)
      expect_same(runs[0][k], runs[r][k],
                  "run " + std::to_string(r) + " batch " + std::to_string(k));
  EXPECT_EQ(runs[0][7].epoch, 1);
  EXPECT_FALSE(at::equal(runs[0][0].left, runs[0][7].left));  // new epoch, new order
}

TEST(Loader, RestoreMidEpochGivesTheSameFollowingBatches) {
  auto samples = memory_samples(30);
  Loader full(make_memory_source(samples), nullptr, loader_opts(2));
  auto ref = take(full, 16);

  Loader first(make_memory_source(samples), nullptr, loader_opts(3));
  take(first, 5);
  const LoaderState st = first.state();
  EXPECT_EQ(st.epoch, 0);
  EXPECT_EQ(st.consumed, 20);

  Loader resumed(make_memory_source(samples), nullptr, loader_opts(1));
  resumed.restore(st);
  auto rest = take(resumed, 11);
  for (size_t k = 0; k < rest.size(); ++k)
    expect_same(ref[k + 5], rest[k], "batch " + std::to_string(k + 5));

  // Restoring the live loader (with batches prefetched) rewinds it too.
  first.restore({0, 8});
  auto again = take(first, 3);
  for (size_t k = 0; k < again.size(); ++k) expect_same(ref[k + 2], again[k], "rewind");
}

TEST(Loader, TwoRanksTogetherEqualOneRankWithTwiceTheBatch) {
  auto samples = memory_samples(24);
  Loader one(make_memory_source(samples), nullptr, loader_opts(2, 6));
  auto o = take(one, 4);
  auto r0o = loader_opts(2, 3), r1o = loader_opts(1, 3);
  r0o.world = r1o.world = 2;
  r1o.rank = 1;
  Loader r0(make_memory_source(samples), nullptr, r0o),
      r1(make_memory_source(samples), nullptr, r1o);
  auto a = take(r0, 4), b = take(r1, 4);
  for (size_t k = 0; k < o.size(); ++k) {
    EXPECT_TRUE(at::equal(at::cat({a[k].left, b[k].left}), o[k].left)) << k;
    EXPECT_TRUE(at::equal(at::cat({a[k].tokens, b[k].tokens}), o[k].tokens)) << k;
  }
}

TEST(Loader, PrefetchIsBounded) {
  auto samples = memory_samples(40);
  auto opts = loader_opts(4, 2);
  opts.prefetch = 2;
  Loader l(make_memory_source(samples), nullptr, opts);
  for (int k = 0; k < 10; ++k) {
    ASSERT_TRUE(l.next());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // slow consumer
  }
  EXPECT_LE(l.peak_buffered(), 2);
  EXPECT_GE(l.peak_buffered(), 1);
}

TEST(Loader, BadSamplesAreReplacedDeterministicallyOrFail) {
  auto samples = memory_samples(20);
  samples[7].left = cv::Mat();
  samples[7].right = cv::Mat();  // both eyes missing: load() throws
  std::vector<std::vector<int64_t>> used;
  for (int64_t w : {0, 3}) {
    Loader l(make_memory_source(samples), nullptr, loader_opts(w));
    std::vector<int64_t> all;
    while (auto b = l.next()) all.insert(all.end(), b->indices.begin(), b->indices.end());
    EXPECT_EQ(l.bad_samples(), 1);
    EXPECT_EQ(std::count(all.begin(), all.end(), 7), 0);
    EXPECT_EQ(all.size(), 20u);
    used.push_back(all);
  }
  EXPECT_EQ(used[0], used[1]);

  auto opts = loader_opts(2);
  opts.policy = BadSamplePolicy::kFail;
  Loader f(make_memory_source(samples), nullptr, opts);
  try {
    while (f.next()) {
    }
    FAIL() << "bad sample not reported";
  } catch (const retclip::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("in-memory sample 7"), std::string::npos) << e.what();
  }
}

TEST(Loader, ABadPatientCountsOnceAndEveryBadSampleIsListed) {
  // As in the RET-CLIP layout: several samples (one per text) share a patient. Patient X
  // (samples 4 and 5) and six other patients cannot be loaded: 7 bad patients, more
  // than the 5 the log names.
  struct Shared final : SampleSource {
    std::vector<DecodedSample> s;
    std::set<int64_t> broken{4, 5, 9, 11, 13, 15, 17, 19};
    int64_t size() const override { return static_cast<int64_t>(s.size()); }
    std::string describe(int64_t i) const override {
      return "texts.jsonl row " + std::to_string(i + 1);
    }
    std::string patient_id(int64_t i) const override { return s.at(i).patient_id; }
    DecodedSample load(int64_t i) const override {
      if (broken.count(i)) throw retclip::UsageError("image is not an image");
      return s.at(i);
    }
  };
  auto src = std::make_shared<Shared>();
  src->s = memory_samples(24);
  src->s[4].patient_id = src->s[5].patient_id = "X";
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "loader_bad_list";
  fs::create_directories(dir);
  auto opts = loader_opts(2);
  opts.bad_log = std::make_shared<BadSampleLog>((dir / kBadSamplesFile).string());
  Loader l(src, nullptr, opts);
  while (l.next()) {
  }
  EXPECT_EQ(l.bad_samples(), 7);  // before: 8 (patient X twice) and only 5 ever named
  auto listed = read_bad_sample_log(opts.bad_log->path());
  ASSERT_EQ(listed.size(), 7u);
  std::set<std::string> patients;
  for (const auto& b : listed) {
    patients.insert(b.patient_id);
    EXPECT_EQ(b.reason, "image is not an image");
    EXPECT_EQ(b.origin.rfind("texts.jsonl row ", 0), 0u) << b.origin;
  }
  EXPECT_EQ(patients.size(), 7u);
  EXPECT_EQ(patients.count("X"), 1u);
}

namespace {
// Samples `broken` throw on load; the rest come from memory_samples.
struct Broken final : SampleSource {
  std::vector<DecodedSample> s;
  std::set<int64_t> broken;
  int64_t size() const override { return static_cast<int64_t>(s.size()); }
  std::string describe(int64_t i) const override { return "row " + std::to_string(i); }
  DecodedSample load(int64_t i) const override {
    if (broken.count(i)) throw retclip::UsageError("unreadable");
    return s.at(i);
  }
};

// Indices of every global batch (both ranks) of one epoch.
std::vector<std::vector<int64_t>> global_batches(std::shared_ptr<Broken> src, bool shuffle,
                                                 int64_t workers, uint64_t seed = 42) {
  std::vector<std::vector<int64_t>> out;
  auto o0 = loader_opts(workers, 4), o1 = loader_opts(workers, 4);
  o0.seed = o1.seed = seed;
  o0.world = o1.world = 2;
  o1.rank = 1;
  o0.shuffle = o1.shuffle = shuffle;
  Loader r0(src, nullptr, o0), r1(src, nullptr, o1);
  while (auto a = r0.next()) {
    auto b = r1.next();
    EXPECT_TRUE(b.has_value());
    if (!b) break;
    std::vector<int64_t> g = a->indices;
    g.insert(g.end(), b->indices.begin(), b->indices.end());
    out.push_back(g);
  }
  return out;
}
}  // namespace

TEST(Loader, BadSampleIsReplacedFromOutsideTheGlobalBatch) {
  auto src = std::make_shared<Broken>();
  src->s = memory_samples(32);
  src->broken = {5, 9, 10};
  // In order (no shuffle), global batch 0 is samples 0..7: bad sample 5 takes the sample
  // of its slot in the next global batch, 13, not 6 of its own batch (a false negative).
  auto ordered = global_batches(src, false, 0);
  ASSERT_EQ(ordered.size(), 4u);
  EXPECT_EQ(ordered[0], (std::vector<int64_t>{0, 1, 2, 3, 4, 13, 6, 7}));
  // Batch 1 (8..15): 9 and 10 take 17 and 18.
  EXPECT_EQ(ordered[1], (std::vector<int64_t>{8, 17, 18, 11, 12, 13, 14, 15}));
  // Shuffled, for several seeds: never a patient twice in a global batch, the same on
  // every run and whatever the worker count.
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto a = global_batches(src, true, 0, seed), b = global_batches(src, true, 3, seed);
    EXPECT_EQ(a, b);
    for (const auto& g : a) {
      EXPECT_EQ(std::set<int64_t>(g.begin(), g.end()).size(), g.size());
      for (int64_t i : g) EXPECT_EQ(src->broken.count(i), 0u) << i;
    }
  }
}

TEST(Loader, PerEyeReportIdsFollowTheText) {
  auto samples = memory_samples(8);
  for (int i = 0; i < 8; ++i) {
    samples[i].left_report = i % 2 ? "drusen" : "normal fundus";
    samples[i].right_report = i < 4 ? "" : "normal fundus";
  }
  auto o = loader_opts(0, 8);
  o.shuffle = false;
  Loader l(make_memory_source(samples), nullptr, o);
  auto b = l.next();
  ASSERT_TRUE(b.has_value());
  ASSERT_EQ(b->eye_report_id.sizes(), (at::IntArrayRef{8, 2}));
  auto id = [&](int row, int eye) { return b->eye_report_id[row][eye].item<int64_t>(); };
  EXPECT_EQ(id(0, 0), id(2, 0));
  EXPECT_NE(id(0, 0), id(1, 0));
  EXPECT_EQ(id(0, 0), id(5, 1));  // the same text on either eye is the same report
  EXPECT_EQ(id(0, 1), -1);        // no per-eye report
  EXPECT_GE(id(1, 0), 0);
  EXPECT_EQ(id(0, 0), eye_report_id("normal fundus"));
}

#ifdef RETCLIP_WITH_IMGCODECS
TEST(Pack, JpegDamagedMidScanFailsThePackByName) {
  // Before: `pack --on-bad-sample fail` packed it; libjpeg's warning named no file.
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "pack_scan_damage";
  ASSERT_EQ(std::system(("rm -rf '" + dir.string() + "'").c_str()), 0);
  fs::create_directories(dir);
  cv::Mat img(120, 160, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat noise(img.size(), CV_8UC3);
  cv::randu(noise, cv::Scalar(0, 0, 0), cv::Scalar(255, 255, 255));
  cv::circle(img, {80, 60}, 55, cv::Scalar(40, 90, 200), cv::FILLED);
  img += noise / 4;
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, 95});
  std::string good(buf.begin(), buf.end()), bad = good;
  const size_t sos = bad.rfind("\xFF\xDA"), mid = sos + (bad.size() - sos) / 2;
  std::mt19937 rng(3);
  for (size_t i = mid; i < mid + 48; ++i) bad[i] = static_cast<char>(rng() % 0xFF);
  retclip::util::write_file_atomic(dir / "good.jpg", good);
  retclip::util::write_file_atomic(dir / "bad.jpg", bad);
  retclip::util::write_file_atomic(dir / "m.csv",
                                   "patient_id,left_image,right_image,report\n"
                                   "A,good.jpg,good.jpg,normal\nB,good.jpg,bad.jpg,normal\n");
  PackOptions po;
  po.manifest = (dir / "m.csv").string();
  po.out = (dir / "shards").string();
  po.image_size = 32;
  po.progress = false;
  po.on_bad_sample = BadSamplePolicy::kFail;
  try {
    pack_dataset(po);
    FAIL() << "packed a JPEG damaged mid-scan under on_bad_sample fail";
  } catch (const retclip::UsageError& e) {
    const std::string msg = e.what();
    // Found by the pre-check, before any shard is written.
    EXPECT_NE(
        msg.find("bad sample at m.csv row 3 (right): image " + (dir / "bad.jpg").string() +
                 " is a damaged JPEG: libjpeg reports 'Corrupt JPEG data"),
        std::string::npos)
        << msg;
    EXPECT_NE(msg.find("(pre-check before the first step: 1 patient has a bad image"),
              std::string::npos)
        << msg;
  }
  EXPECT_FALSE(fs::exists(po.out)) << "the failed pack left its directory";
  po.on_bad_sample = BadSamplePolicy::kSkip;
  PackReport rep = pack_dataset(po);
  EXPECT_EQ(rep.records, 1);
  ASSERT_EQ(read_bad_sample_log(rep.bad_list).size(), 1u);
  EXPECT_EQ(read_bad_sample_log(rep.bad_list)[0].patient_id, "B");
}
#endif

TEST(Loader, NeedsATokenizerWhenTheDataCarriesNoIds) {
  auto samples = memory_samples(8);
  for (auto& s : samples) s.tokens.clear();
  Loader l(make_memory_source(samples), nullptr, loader_opts(1));
  EXPECT_THROW(l.next(), retclip::UsageError);
}

TEST(Loader, ReadsShardsWithoutAugmentationExactly) {
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "loader_shards";
  ASSERT_EQ(std::system(("rm -rf '" + dir.string() + "'").c_str()), 0);
  std::vector<Sample> rows;
  for (int i = 0; i < 9; ++i) {
    Sample s;
    s.patient_id = "S" + std::to_string(i);
    s.left.path = std::to_string(2 * i);
    if (i != 4) s.right.path = std::to_string(2 * i + 1);
    s.report = "r" + std::to_string(i);
    rows.push_back(s);
  }
  PackOptions po;
  po.out = dir.string();
  po.image_size = kSize;
  po.context_length = kCtx;
  po.shard_size = 4;
  po.threads = 2;
  po.progress = false;
  PackHooks hooks;
  hooks.prepare_image = [](const ImageRef& r, const std::string&) {
    return noise_image(static_cast<uint32_t>(std::stoi(r.path)));
  };
  hooks.encode_text = [](const std::string& t) {
    return std::vector<int64_t>{101, static_cast<int64_t>(t.size()), 102, 0, 0, 0};
  };
  pack_samples(rows, po, hooks);
  auto opts = loader_opts(2, 3);
  opts.augment.enabled = false;
  opts.shuffle = false;
  Loader l(make_shard_source(ShardReader::open(dir.string())), nullptr, opts);
  int64_t seen = 0;
  while (auto b = l.next()) {
    for (int64_t j = 0; j < 3; ++j) {
      const int64_t i = b->indices[j];
      EXPECT_EQ(b->patient_ids[j], "S" + std::to_string(i));
      at::Tensor px = at::from_blob(noise_image(2 * i).data, {kSize, kSize, 3}, at::kByte)
                          .permute({2, 0, 1})
                          .to(at::kFloat)
                          .div(255.0);
      at::Tensor mean = at::tensor({0.48145466, 0.4578275, 0.40821073}).view({3, 1, 1});
      at::Tensor sd = at::tensor({0.26862954, 0.26130258, 0.27577711}).view({3, 1, 1});
      at::Tensor want = (px - mean.to(at::kFloat)) / sd.to(at::kFloat);
      EXPECT_LT((b->left[j] - want).abs().max().item<float>(), 1e-5f);
      EXPECT_EQ(b->has_right[j].item<bool>(), i != 4);
      EXPECT_EQ(b->tokens[j][1].item<int64_t>(), 2);
      ++seen;
    }
  }
  EXPECT_EQ(seen, 9);
  opts.image_size = 32;
  EXPECT_THROW(Loader(make_shard_source(ShardReader::open(dir.string())), nullptr, opts),
               retclip::UsageError);
}

// Real photos (../shared/data/odir-sample): pack_dataset (manifest + decode + fundus crop)
// then the shard loader must give bitwise the same batches as the JPEG loader.
TEST(Loader, ShardsAndJpegFilesGiveTheSameBatchesOnRealPhotos) {
  const fs::path src = fs::path(RETCLIP_SOURCE_DIR) / ".." / "shared" / "data" / "odir-sample";
  if (!fs::exists(src / "labels.csv")) GTEST_SKIP() << "no ../shared/data/odir-sample";
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "loader_odir";
  ASSERT_EQ(std::system(("rm -rf '" + dir.string() + "'").c_str()), 0);
  fs::create_directories(dir);
  auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  std::string csv = "patient_id,left_image,right_image,report\n";
  int64_t rows = 0;
  for (const auto& r : parse_csv(retclip::util::read_file(src / "labels.csv"))) {
    if (r.fields.size() < 5 || r.fields[0] == "patient_id") continue;
    csv += quote("odir-" + r.fields[0]) + "," + quote((src / r.fields[1]).string()) + "," +
           quote((src / r.fields[2]).string()) + "," +
           quote("left eye: " + r.fields[3] + ". right eye: " + r.fields[4] + ".") + "\n";
    ++rows;
  }
  ASSERT_GE(rows, 16);
  csv += "broken," + (src / "missing.jpg").string() + ",,unreadable image\n";
  retclip::util::write_file_atomic(dir / "manifest.csv", csv);

  PackOptions po;
  po.manifest = (dir / "manifest.csv").string();
  po.out = (dir / "shards").string();
  po.image_size = 64;
  po.threads = 2;
  po.shard_size = 16;
  po.progress = false;
  PackReport rep = pack_dataset(po);
  EXPECT_EQ(rep.records, rows);
  EXPECT_EQ(rep.bad_samples, 1);
  ASSERT_EQ(rep.bad.size(), 1u);
  EXPECT_NE(rep.bad[0].origin.find("row"), std::string::npos);
  // Listed beside the shards.
  EXPECT_EQ(rep.bad_list, (fs::path(po.out) / kBadSamplesFile).string());
  ASSERT_EQ(read_bad_sample_log(rep.bad_list).size(), 1u);
  EXPECT_EQ(read_bad_sample_log(rep.bad_list)[0].patient_id, "broken");
  EXPECT_EQ(verify_shard_set(po.out).records, rows);

  auto samples = read_samples(po.manifest, "auto", "", BadSamplePolicy::kSkip);
  samples.erase(std::remove_if(samples.begin(), samples.end(),
                               [](const Sample& s) { return s.patient_id == "broken"; }),
                samples.end());
  LoaderOptions o = loader_opts(2, 8);
  o.image_size = 64;
  for (auto& s : samples) s.report.clear();  // tokens: both sides carry none, use fixed ids
  struct Ids final : SampleSource {
    std::shared_ptr<SampleSource> s;
    int64_t size() const override { return s->size(); }
    int64_t image_size() const override { return s->image_size(); }
    std::string describe(int64_t i) const override { return s->describe(i); }
    DecodedSample load(int64_t i) const override {
      auto d = s->load(i);
      d.tokens.assign(kCtx, 7);
      return d;
    }
  };
  auto jpeg = std::make_shared<Ids>();
  jpeg->s = make_manifest_source(samples, 64);
  auto packed = std::make_shared<Ids>();
  packed->s = make_shard_source(ShardReader::open(po.out));
  Loader a(jpeg, nullptr, o), b(packed, nullptr, o);
  int64_t batches = 0;
  while (auto x = a.next()) {
    auto y = b.next();
    ASSERT_TRUE(y);
    expect_same(*x, *y, "batch " + std::to_string(batches));
    ++batches;
  }
  EXPECT_EQ(batches, rows / 8);
  EXPECT_FALSE(b.next());
}
