// Tests of the dataset readers: CSV/JSONL manifests, the RET-CLIP jsonl+tsv layout,
// and one test per kind of bad row under both bad-sample policies.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "retclip/data/base64.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

fs::path test_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("retclip_manifest_test_" + std::to_string(::getpid())) / name;
  util::remove_tree(d);
  fs::create_directories(d);
  return d;
}

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
  return p;
}

template <typename Fn>
std::string usage_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no UsageError>";
}

const std::string kHeader = "patient_id,left_image,right_image,report\n";

/// Reads `body` as a CSV manifest under kSkip and returns the one bad reason.
std::string one_bad_csv(const std::string& name, const std::string& body,
                        size_t expect_samples = 1) {
  fs::path p = write(test_dir(name) / "m.csv", kHeader + "ok,a.jpg,b.jpg,fine\n" + body);
  ReadReport rep;
  auto s = read_manifest(p.string(), BadSamplePolicy::kSkip, &rep);
  EXPECT_EQ(s.size(), expect_samples) << name;
  EXPECT_EQ(rep.bad.size(), 1u) << name;
  EXPECT_EQ(rep.samples, static_cast<int64_t>(s.size()));
  // Under kFail the same row throws, naming the file and row.
  std::string msg = usage_error_of([&] { read_manifest(p.string(), BadSamplePolicy::kFail); });
  EXPECT_NE(msg.find("m.csv row 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("HINT"), std::string::npos) << msg;
  if (rep.bad.empty()) return "";
  EXPECT_EQ(rep.bad[0].origin, "m.csv row 3");
  return rep.bad[0].reason;
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST(Csv, QuotingRfc4180) {
  const std::string text =
      "\xEF\xBB\xBF"
      "a,b,c\r\n"
      "1,\"x, y\",\"say \"\"hi\"\"\"\r\n"
      "\r\n"
      "2,\"line1\nline2\",\r\n"
      "3,,\"\"";
  auto recs = parse_csv(text);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].fields, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(recs[1].fields, (std::vector<std::string>{"1", "x, y", "say \"hi\""}));
  EXPECT_EQ(recs[2].fields, (std::vector<std::string>{"2", "line1\nline2", ""}));
  EXPECT_EQ(recs[2].line, 4);
  EXPECT_EQ(recs[3].fields, (std::vector<std::string>{"3", "", ""}));
  EXPECT_EQ(recs[3].line, 6);
  for (const auto& r : recs) EXPECT_TRUE(r.error.empty()) << r.error;

  auto bad = parse_csv("a,\"b\"x,c\nd,e,f\n");
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_TRUE(has(bad[0].error, "closing quote")) << bad[0].error;
  EXPECT_EQ(bad[1].fields, (std::vector<std::string>{"d", "e", "f"}));
  auto open = parse_csv("a,\"b\nc,d\n");
  ASSERT_EQ(open.size(), 1u);
  EXPECT_TRUE(has(open[0].error, "never closed")) << open[0].error;
}

TEST(Manifest, CsvColumnsPathsAndLabels) {
  fs::path dir = test_dir("csv");
  fs::create_directories(dir / "imgs");
  write(dir / "m.csv",
        "\xEF\xBB\xBFpatient_id,left_image,right_image,report,split,left_report,dr_grade\r\n"
        "p1,imgs/p1_l.jpg,imgs/p1_r.jpg,\"left: drusen, small.\nright: normal.\",train,drusen,1\r\n"
        "p2,,imgs/p2_r.jpg,\"He said \"\"normal\"\"\",val,,0\r\n"
        "p3,/abs/l.png,,\xe5\xb7\xa6\xe7\x9c\xbc\xe6\xad\xa3\xe5\xb8\xb8,train,,2\r\n");
  ReadReport rep;
  auto s = read_manifest((dir / "m.csv").string(), BadSamplePolicy::kFail, &rep);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(rep.rows, 3);
  EXPECT_EQ(rep.samples, 3);
  EXPECT_TRUE(rep.bad.empty());
  EXPECT_EQ(s[0].patient_id, "p1");
  EXPECT_EQ(s[0].left.path, (dir / "imgs/p1_l.jpg").string());
  EXPECT_EQ(s[0].report, "left: drusen, small.\nright: normal.");
  EXPECT_EQ(s[0].left_report, "drusen");
  EXPECT_EQ(s[0].split, "train");
  EXPECT_EQ(s[0].labels.at("dr_grade"), "1");
  EXPECT_EQ(s[0].origin, "m.csv row 2");
  EXPECT_FALSE(s[1].left.present());
  EXPECT_EQ(s[1].report, "He said \"normal\"");
  EXPECT_EQ(s[2].left.path, "/abs/l.png");
  EXPECT_EQ(s[1].origin, "m.csv row 4");  // row 2 held a newline inside quotes
  EXPECT_EQ(s[2].origin, "m.csv row 5");
  EXPECT_EQ(filter_split(s, "train").size(), 2u);
  EXPECT_EQ(filter_split(s, "val").size(), 1u);
  EXPECT_EQ(filter_split(s, "").size(), 3u);
}

TEST(Manifest, RelativeManifestPathGivesCwdRelativeImages) {
  fs::path dir = test_dir("rel");
  write(dir / "m.csv", kHeader + "p1,eyes/l.jpg,../r.jpg,ok\n");
  fs::path cwd = fs::current_path();
  fs::current_path(dir.parent_path());
  auto s = read_manifest("rel/m.csv", BadSamplePolicy::kFail);
  fs::current_path(cwd);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].left.path, "rel/eyes/l.jpg");
  EXPECT_EQ(s[0].right.path, "r.jpg");
}

TEST(Manifest, MissingRequiredColumnNamesFileAndColumn) {
  fs::path p =
      write(test_dir("nocol") / "m.csv", "patient_id,left_image,right_image,text\np,a,b,c\n");
  for (auto policy : {BadSamplePolicy::kSkip, BadSamplePolicy::kFail}) {
    std::string msg = usage_error_of([&] { read_manifest(p.string(), policy); });
    EXPECT_TRUE(has(msg, "no column 'report'")) << msg;
    EXPECT_TRUE(has(msg, p.string())) << msg;
    EXPECT_TRUE(has(msg, "text")) << msg;  // lists what the header has
  }
}

TEST(Manifest, MissingManifestFile) {
  std::string msg = usage_error_of([] { read_manifest("nowhere/m.csv", BadSamplePolicy::kSkip); });
  EXPECT_TRUE(has(msg, "not found")) << msg;
  EXPECT_TRUE(has(msg, "nowhere/m.csv")) << msg;
}

TEST(ManifestBadRows, MissingField) {
  EXPECT_TRUE(has(one_bad_csv("missing", "p2,a.jpg,fine\n"), "expected 4 fields"));
}

TEST(ManifestBadRows, ExtraField) {
  std::string why = one_bad_csv("extra", "p2,a.jpg,b.jpg,left: ok, right: ok\n");
  EXPECT_TRUE(has(why, "found 5")) << why;
  EXPECT_TRUE(has(why, "quoted")) << why;
}

TEST(ManifestBadRows, BothEyesMissing) {
  EXPECT_TRUE(has(one_bad_csv("noeyes", "p2,,,a report\n"), "both eyes are missing"));
}

TEST(ManifestBadRows, EmptyReport) {
  EXPECT_TRUE(has(one_bad_csv("empty", "p2,a.jpg,,\n"), "report is empty"));
}

TEST(ManifestBadRows, WhitespaceReport) {
  // Spaces, a tab and an ideographic space (U+3000).
  EXPECT_TRUE(has(one_bad_csv("blank", "p2,a.jpg,,\"  \t\xe3\x80\x80 \"\n"), "only whitespace"));
}

TEST(ManifestBadRows, InvalidUtf8Report) {
  std::string why = one_bad_csv("utf8", "p2,a.jpg,,caf\xe9 au lait\n");
  EXPECT_TRUE(has(why, "not valid UTF-8")) << why;
  EXPECT_TRUE(has(why, "offset 3")) << why;
}

TEST(ManifestBadRows, DuplicatePatientId) {
  std::string why = one_bad_csv("dup", "ok,c.jpg,d.jpg,again\n");
  EXPECT_TRUE(has(why, "duplicate patient_id 'ok' (first at row 2)")) << why;
}

TEST(ManifestBadRows, UnbalancedQuote) {
  EXPECT_TRUE(has(one_bad_csv("quote", "p2,a.jpg,b.jpg,\"never closed\n"), "never closed"));
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xe8\xa7\x86\xe7\xbd\x91\xe8\x86\x9c \xf0\x9f\x91\x81"));
  size_t off = 0;
  EXPECT_FALSE(is_valid_utf8("ab\xc0\xaf", &off));  // overlong '/'
  EXPECT_EQ(off, 2u);
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xe8\xa7"));          // cut short
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
}

TEST(Manifest, Jsonl) {
  fs::path dir = test_dir("jsonl");
  write(dir / "m.jsonl",
        "{\"patient_id\": \"a\", \"left_image\": \"l.jpg\", \"right_image\": null, "
        "\"report\": \"\xe5\xb7\xa6\xe7\x9c\xbc\", \"split\": \"train\", \"grade\": 2}\n"
        "\n"
        "{\"patient_id\": 17, \"right_image\": \"r.jpg\", \"report\": \"ok\"}\r\n"
        "{\"patient_id\": \"b\", \"left_image\": \"l.jpg\", \"report\": \"x\"\n"
        "[1, 2]\n"
        "{\"patient_id\": \"c\", \"left_image\": \"l.jpg\"}\n"
        "{\"patient_id\": \"d\", \"report\": \"x\"}\n"
        "{\"patient_id\": \"a\", \"left_image\": \"l.jpg\", \"report\": \"dup\"}\n"
        "{\"patient_id\": \"e\", \"left_image\": \"\", \"right_image\": \"\", \"report\": \"x\"}\n"
        "{\"patient_id\": \"f\", \"left_image\": 5, \"report\": \"x\"}\n");
  ReadReport rep;
  auto s = read_manifest((dir / "m.jsonl").string(), BadSamplePolicy::kSkip, &rep);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(rep.rows, 9);
  EXPECT_EQ(s[0].patient_id, "a");
  EXPECT_EQ(s[0].left.path, (dir / "l.jpg").string());
  EXPECT_FALSE(s[0].right.present());
  EXPECT_EQ(s[0].labels.at("grade"), "2");
  EXPECT_EQ(s[1].patient_id, "17");
  EXPECT_EQ(s[1].origin, "m.jsonl row 3");
  ASSERT_EQ(rep.bad.size(), 7u);
  EXPECT_EQ(rep.bad[0].origin, "m.jsonl row 4");
  EXPECT_TRUE(has(rep.bad[0].reason, "not a valid JSON line")) << rep.bad[0].reason;
  EXPECT_TRUE(has(rep.bad[1].reason, "JSON object")) << rep.bad[1].reason;
  EXPECT_TRUE(has(rep.bad[2].reason, "missing key 'report'")) << rep.bad[2].reason;
  EXPECT_TRUE(has(rep.bad[3].reason, "both eyes are missing")) << rep.bad[3].reason;
  EXPECT_TRUE(has(rep.bad[4].reason, "duplicate patient_id 'a' (first at row 1)"))
      << rep.bad[4].reason;
  EXPECT_TRUE(has(rep.bad[5].reason, "both eyes are missing")) << rep.bad[5].reason;
  EXPECT_TRUE(has(rep.bad[6].reason, "'left_image' to be a string")) << rep.bad[6].reason;
  std::string msg =
      usage_error_of([&] { read_manifest((dir / "m.jsonl").string(), BadSamplePolicy::kFail); });
  EXPECT_TRUE(has(msg, "m.jsonl row 4: not a valid JSON line")) << msg;
}

TEST(Manifest, JsonlInvalidUtf8AndBom) {
  fs::path dir = test_dir("jsonl8");
  write(dir / "m.jsonl",
        "\xEF\xBB\xBF{\"patient_id\": \"a\", \"left_image\": \"l.jpg\", \"report\": \"ok\"}\n"
        "{\"patient_id\": \"b\", \"left_image\": \"l.jpg\", \"report\": \"caf\xe9\"}\n"
        "{\"patient_id\": \"c\", \"left_image\": \"l.jpg\", \"report\": \" \\u3000 \"}\n");
  ReadReport rep;
  auto s = read_manifest((dir / "m.jsonl").string(), BadSamplePolicy::kSkip, &rep);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].patient_id, "a");
  ASSERT_EQ(rep.bad.size(), 2u);
  EXPECT_EQ(rep.bad[0].origin, "m.jsonl row 2");
  EXPECT_TRUE(has(rep.bad[0].reason, "UTF-8")) << rep.bad[0].reason;
  EXPECT_TRUE(has(rep.bad[1].reason, "report is empty or only whitespace")) << rep.bad[1].reason;
}

namespace {
/// A RET-CLIP folder: three patients, one text naming two of them.
fs::path make_retclip(const std::string& name, const std::string& extra_tsv = "",
                      const std::string& extra_texts = "") {
  fs::path dir = test_dir(name);
  const std::string l1 = "\xFF\xD8\xFF left-1", r1 = "\xFF\xD8\xFF right-1 ~~~>>>???";
  write(dir / "train_imgs.tsv",
        "p1\t" + base64_encode(l1, true) + "\t" + base64_encode(r1, true) + "\n" + "p2\t" +
            base64_encode("left-2", false) + "\t\r\n" +  // standard alphabet, no right
            "p3\t\t" + base64_encode("right-3", true, false) + "\n" + extra_tsv);
  write(dir / "train_texts.jsonl",
        "{\"text_id\": 1, \"text\": \"both eyes normal\", \"image_ids\": [\"p1\", \"p3\"]}\n"
        "{\"text_id\": 2, \"text\": \"left: drusen\", \"image_ids\": [\"p2\"]}\n" +
            extra_texts);
  return dir;
}
}  // namespace

TEST(RetClip, TextNamingTwoPatientsGivesTwoSamples) {
  fs::path dir = make_retclip("rc");
  ReadReport rep;
  auto s = read_retclip(dir.string(), "train", BadSamplePolicy::kFail, &rep);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(rep.rows, 2);
  EXPECT_EQ(rep.samples, 3);
  EXPECT_EQ(s[0].patient_id, "p1");
  EXPECT_EQ(s[1].patient_id, "p3");
  EXPECT_EQ(s[0].report, "both eyes normal");
  EXPECT_EQ(s[1].report, "both eyes normal");
  EXPECT_EQ(s[0].left.bytes, "\xFF\xD8\xFF left-1");
  EXPECT_EQ(s[0].right.bytes, "\xFF\xD8\xFF right-1 ~~~>>>???");
  EXPECT_EQ(s[0].left.describe(), "train_imgs.tsv row 1 (left)");
  EXPECT_FALSE(s[1].left.present());
  EXPECT_EQ(s[1].right.bytes, "right-3");
  EXPECT_EQ(s[2].patient_id, "p2");
  EXPECT_EQ(s[2].left.bytes, "left-2");
  EXPECT_FALSE(s[2].right.present());
  EXPECT_EQ(s[2].labels.at("text_id"), "2");
  EXPECT_EQ(s[2].origin, "train_texts.jsonl row 2");
  EXPECT_EQ(s[2].split, "train");
  // The same folder through the prefix form and through auto-detection.
  EXPECT_EQ(read_retclip((dir / "train").string(), "", BadSamplePolicy::kFail).size(), 3u);
  EXPECT_EQ(detect_format(dir.string(), "train"), "retclip");
  EXPECT_EQ(detect_format((dir / "train_texts.jsonl").string(), ""), "retclip");
  EXPECT_EQ(read_samples(dir.string(), "auto", "train", BadSamplePolicy::kFail).size(), 3u);
  std::string msg =
      usage_error_of([&] { read_retclip(dir.string(), "val", BadSamplePolicy::kFail); });
  EXPECT_TRUE(has(msg, "val_texts.jsonl")) << msg;
  EXPECT_TRUE(has(msg, "train_texts.jsonl")) << msg;  // lists what is there
}

TEST(RetClip, ValidAliasAndPerEyeTexts) {
  fs::path dir = test_dir("rcvalid");
  write(dir / "valid_imgs.tsv", "p1\t" + base64_encode("L", true) + "\t\n");
  write(dir / "valid_texts.jsonl",
        "{\"text_id\": 0, \"text\": \"t\", \"image_ids\": [\"p1\"], \"left_text\": \"lt\", "
        "\"right_text\": \"rt\"}\n");
  auto s = read_retclip(dir.string(), "val", BadSamplePolicy::kFail);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].left_report, "lt");
  EXPECT_EQ(s[0].right_report, "rt");
  EXPECT_EQ(s[0].split, "val");
  EXPECT_EQ(s[0].left.bytes, "L");
}

TEST(RetClip, BadBase64NamesTheTsvRow) {
  fs::path dir = make_retclip("rcb64", "p4\tbm90IGE*anBn\t\n",
                              "{\"text_id\": 3, \"text\": \"x\", \"image_ids\": [\"p4\"]}\n");
  ReadReport rep;
  auto s = read_retclip(dir.string(), "train", BadSamplePolicy::kSkip, &rep);
  EXPECT_EQ(s.size(), 3u);
  // One bad patient: the text naming p4 is not counted a second time.
  ASSERT_EQ(rep.bad.size(), 1u);
  EXPECT_EQ(rep.bad[0].origin, "train_imgs.tsv row 4");
  EXPECT_EQ(rep.bad[0].patient_id, "p4");
  EXPECT_TRUE(has(rep.bad[0].reason, "left image: invalid base64: invalid character '*'"))
      << rep.bad[0].reason;
  std::string msg =
      usage_error_of([&] { read_retclip(dir.string(), "train", BadSamplePolicy::kFail); });
  EXPECT_TRUE(has(msg, "train_imgs.tsv row 4: left image: invalid base64")) << msg;
}

TEST(RetClip, BrokenPatientsCountOnceWhateverTheTextsNamingThem) {
  // Before: "6 bad samples skipped" for 4 broken patients, one per text naming them.
  std::string texts;
  for (int t = 0; t < 3; ++t)
    texts += "{\"text_id\": " + std::to_string(10 + t) +
             ", \"text\": \"x\", \"image_ids\": [\"p4\", \"ghost\", \"p1\"]}\n";
  fs::path dir = make_retclip("rconce", "p4\tbm90IGE*anBn\t\np7\t\t\n", texts);
  ReadReport rep;
  auto s = read_retclip(dir.string(), "train", BadSamplePolicy::kSkip, &rep);
  std::vector<std::string> reasons;
  for (const auto& b : rep.bad) reasons.push_back(b.origin + " [" + b.patient_id + "]: " + b.reason);
  ASSERT_EQ(reasons.size(), 3u) << ::testing::PrintToString(reasons);  // p4, p7, ghost
  EXPECT_TRUE(has(reasons[0], "train_imgs.tsv row 4 [p4]: left image: invalid base64")) << reasons[0];
  EXPECT_TRUE(has(reasons[1], "train_imgs.tsv row 5 [p7]: both eyes are missing")) << reasons[1];
  EXPECT_TRUE(has(reasons[2], "train_texts.jsonl row 3 [ghost]: patient 'ghost' has no row"))
      << reasons[2];
  EXPECT_EQ(s.size(), 3u + 3u);  // the three of the shared texts file + p1 from each new text
}

TEST(RetClip, PatientWithoutImageRowAndOtherBadLines) {
  fs::path dir =
      make_retclip("rcmiss", "p5\t\t\np1\tAAAA\tAAAA\np6\tAAAA\n",
                   "{\"text_id\": 3, \"text\": \"x\", \"image_ids\": [\"p1\", \"ghost\"]}\n"
                   "{\"text_id\": 4, \"text\": \"   \", \"image_ids\": [\"p2\"]}\n"
                   "{\"text_id\": 5, \"text\": \"y\", \"image_ids\": []}\n"
                   "not json\n");
  ReadReport rep;
  auto s = read_retclip(dir.string(), "train", BadSamplePolicy::kSkip, &rep);
  EXPECT_EQ(s.size(), 4u);  // 3 + p1 from text 3
  std::vector<std::string> reasons;
  for (const auto& b : rep.bad) reasons.push_back(b.origin + ": " + b.reason);
  ASSERT_EQ(reasons.size(), 7u);
  EXPECT_TRUE(has(reasons[0], "row 4: both eyes are missing")) << reasons[0];
  EXPECT_TRUE(has(reasons[1], "row 5: duplicate patient_id 'p1' (first at row 1)")) << reasons[1];
  EXPECT_TRUE(has(reasons[2], "row 6: expected 3 tab-separated fields")) << reasons[2];
  EXPECT_TRUE(has(reasons[3], "row 3: patient 'ghost' has no row in train_imgs.tsv")) << reasons[3];
  EXPECT_TRUE(has(reasons[4], "row 4: text is empty or only whitespace")) << reasons[4];
  EXPECT_TRUE(has(reasons[5], "row 5: expected 'image_ids'")) << reasons[5];
  EXPECT_TRUE(has(reasons[6], "row 6: not a valid JSON line")) << reasons[6];
}

TEST(ReadSamples, DetectsLayoutAndFiltersSplit) {
  fs::path dir = test_dir("auto");
  write(dir / "m.csv",
        "patient_id,left_image,right_image,report,split\n"
        "a,l.jpg,,x,train\nb,l.jpg,,y,val\nc,,r.jpg,z,train\n");
  write(dir / "nosplit.csv", kHeader + "a,l.jpg,,x\nb,l.jpg,,y\n");
  write(dir / "m.txt", "x");
  ReadReport rep;
  auto tr = read_samples((dir / "m.csv").string(), "auto", "train", BadSamplePolicy::kFail, &rep);
  EXPECT_EQ(tr.size(), 2u);
  EXPECT_EQ(rep.rows, 3);
  EXPECT_EQ(rep.samples, 2);
  EXPECT_EQ(
      read_samples((dir / "m.csv").string(), "manifest", "val", BadSamplePolicy::kFail).size(), 1u);
  EXPECT_EQ(
      read_samples((dir / "nosplit.csv").string(), "auto", "train", BadSamplePolicy::kFail).size(),
      2u);
  EXPECT_TRUE(
      has(usage_error_of([&] { detect_format((dir / "m.txt").string(), ""); }), "extension"));
  EXPECT_TRUE(has(usage_error_of([&] { detect_format(dir.string(), "train"); }), "*_texts.jsonl"));
  EXPECT_TRUE(has(usage_error_of([&] {
                    read_samples((dir / "m.csv").string(), "parquet", "", BadSamplePolicy::kFail);
                  }),
                  "parquet"));
}

TEST(ImageRefDescribe, NamesWhatItHas) {
  ImageRef none;
  EXPECT_EQ(none.describe(), "<no image>");
  EXPECT_EQ((ImageRef{"x/a.jpg", "", ""}).describe(), "x/a.jpg");
}

TEST(ManifestBadRows, PatientIdIsListedForIntegerAndStringIds) {
  // bad_samples.tsv names the patient of a bad row; a JSONL id may be an integer.
  fs::path dir = test_dir("bad_ids");
  write(dir / "m.jsonl",
        "{\"patient_id\": 17, \"left_image\": \"l.jpg\", \"report\": \"ok\"}\n"
        "{\"patient_id\": 17, \"left_image\": \"l.jpg\", \"report\": \"again\"}\n"
        "{\"patient_id\": 42, \"left_image\": \"l.jpg\", \"report\": \" \"}\n"
        "{\"patient_id\": -3, \"left_image\": \"\", \"report\": \"x\"}\n"
        "{\"report\": \"x\", \"left_image\": 5, \"patient_id\": \"s9\"}\n"
        "{\"patient_id\": 1.5, \"left_image\": \"l.jpg\", \"report\": \"x\"}\n");
  ReadReport rep;
  auto s = read_manifest((dir / "m.jsonl").string(), BadSamplePolicy::kSkip, &rep);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].patient_id, "17");
  ASSERT_EQ(rep.bad.size(), 5u);
  EXPECT_EQ(rep.bad[0].patient_id, "17");  // duplicate
  EXPECT_EQ(rep.bad[1].patient_id, "42");  // blank report
  EXPECT_EQ(rep.bad[2].patient_id, "-3");  // no eye
  EXPECT_EQ(rep.bad[3].patient_id, "s9");  // bad key before patient_id
  EXPECT_EQ(rep.bad[4].patient_id, "");    // 1.5 is not an id
  EXPECT_TRUE(has(rep.bad[4].reason, "'patient_id' to be a string or an integer"))
      << rep.bad[4].reason;
  // The same in a CSV manifest.
  write(dir / "m.csv", kHeader + "P1,a.jpg,,fine\n P2 ,a.jpg,, \nP1,b.jpg,,dup\n");
  rep = ReadReport{};
  read_manifest((dir / "m.csv").string(), BadSamplePolicy::kSkip, &rep);
  ASSERT_EQ(rep.bad.size(), 2u);
  EXPECT_EQ(rep.bad[0].patient_id, "P2");
  EXPECT_EQ(rep.bad[1].patient_id, "P1");
}
