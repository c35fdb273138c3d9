// Unit tests of the report tokenizers: the [CLS]/[SEP]/[PAD] layout, BERT
// BasicTokenizer behaviour (CJK, accents, punctuation, invalid UTF-8), WordPiece
// matching, sentencepiece training/loading and the error messages.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <ftw.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "retclip/data/sentencepiece_tokenizer.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/data/wordpiece.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

// 0..4 are the special tokens, as in the Chinese BERT vocabularies ([PAD] = 0).
std::vector<std::string> small_vocab() {
  return {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "left", "eye", "dr", "##usen",
          "##s",   ":",     ".",     ",",     "cafe",  "视",    "盘",   "0",  "##.",
          "3",     "，",    "。",    "a",     "##b",   "resume", "naive", "##ive", "e"};
}

// A fresh directory per test. std::filesystem::remove_all is avoided: the
// copy that libtorch.so exports crashes on non-empty directories (null call), so the
// tree is removed with nftw.
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() /
               ("retclip_tok_test_" + name);
  ::nftw(
      d.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
  fs::create_directories(d);
  return d;
}

std::vector<std::string> reports(size_t n) {
  const char* findings[] = {"drusen",          "haemorrhage",    "hard exudates",
                            "optic disc cupping", "microaneurysms", "vitreous haze",
                            "no abnormality",  "cotton wool spots", "macular oedema",
                            "tortuous vessels", "pigment changes", "laser scars"};
  const char* zh[] = {"视盘边界清", "黄斑区见玻璃膜疣", "视网膜出血", "杯盘比约0.3"};
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back("Patient aged " + std::to_string(35 + i % 50) + ". Left eye: " +
                  findings[i % 12] + ", acuity 0." + std::to_string(i % 10) + ". Right eye: " +
                  findings[(i * 5 + 1) % 12] + ". " + zh[i % 4] + "。");
  return out;
}

}  // namespace

TEST(Utf8, RoundTripAndInvalidBytes) {
  const std::string s = "a\xC3\xA9\xE8\xA7\x86\xF0\x9F\x98\x80";  // a é 视 😀
  auto u = unicode::utf8_decode(s);
  ASSERT_EQ(u.size(), 4u);
  EXPECT_EQ(u[1], U'\u00E9');
  EXPECT_EQ(u[3], U'\U0001F600');
  EXPECT_EQ(unicode::utf8_encode(u), s);
  // stray continuation, overlong "/", surrogate, truncated 3-byte sequence at the end
  auto bad = unicode::utf8_decode("x\x80y\xC0\xAFz\xED\xA0\x80w\xE8\xA7");
  std::u32string want = {U'x', 0xFFFD, U'y', 0xFFFD, 0xFFFD, U'z', 0xFFFD,
                         0xFFFD, 0xFFFD, U'w', 0xFFFD};
  EXPECT_EQ(bad, want);
}

TEST(Unicode, Properties) {
  EXPECT_TRUE(unicode::is_punctuation(U'$'));  // ASCII symbols count as punctuation
  EXPECT_TRUE(unicode::is_punctuation(U'\uFF0C'));  // ，
  EXPECT_TRUE(unicode::is_punctuation(U'\u3002'));  // 。
  EXPECT_TRUE(unicode::is_punctuation(U'\u2014'));  // —
  EXPECT_FALSE(unicode::is_punctuation(U'\u00B0'));  // ° is a symbol (So)
  EXPECT_TRUE(unicode::is_chinese_char(U'\u89C6'));
  EXPECT_FALSE(unicode::is_chinese_char(U'\u3042'));  // hiragana
  EXPECT_TRUE(unicode::is_whitespace(U'\u3000'));
  EXPECT_TRUE(unicode::is_control(U'\u200B'));
  EXPECT_FALSE(unicode::is_control(U'\n'));
  EXPECT_EQ(unicode::to_lower(U'\u00C9'), U'\u00E9');
  EXPECT_EQ(unicode::to_lower(U'\u0394'), U'\u03B4');
  EXPECT_EQ(unicode::to_lower(U'\u0100'), U'\u0101');  // stride-2 run
  EXPECT_EQ(unicode::to_lower(U'\u0101'), U'\u0101');
  EXPECT_EQ(unicode::to_lower(U'\uFF21'), U'\uFF41');  // full-width A
  std::u32string s;
  unicode::append_stripped(U'\u00E9', s);
  unicode::append_stripped(U'\u0301', s);  // combining acute: dropped
  unicode::append_stripped(U'\u1EC7', s);  // ệ
  EXPECT_EQ(s, U"ee");
}

TEST(BasicTokenizer, SplitsPunctuationCjkAndStripsAccents) {
  BasicTokenizer b(true);
  auto t = b.tokenize("  Café,C/D 0.3\t视盘：正常 na\xC3\xAFve  ");
  std::vector<std::string> want = {"cafe", ",", "c", "/", "d", "0", ".", "3", "视", "盘",
                                   "：", "正", "常", "naive"};
  EXPECT_EQ(t, want);
  BasicTokenizer keep(false);
  auto k = keep.tokenize("Café");
  EXPECT_EQ(k, std::vector<std::string>{"Café"});
}

TEST(WordPiece, SpecialIdsAndGreedyMatching) {
  WordPieceTokenizer tok(small_vocab(), true);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 1);
  EXPECT_EQ(tok.cls_id(), 2);
  EXPECT_EQ(tok.sep_id(), 3);
  EXPECT_EQ(tok.mask_id(), 4);
  EXPECT_EQ(tok.vocab_size(), 27);
  EXPECT_EQ(tok.pieces("Left EYE: Drusens."),
            (std::vector<std::string>{"left", "eye", ":", "dr", "##usen", "##s", "."}));
  // "naive" is whole in the vocab: longest match first, not "na" + "##ive"
  EXPECT_EQ(tok.pieces("NAÏVE"), std::vector<std::string>{"naive"});
  // one unmatched piece turns the whole word into [UNK]
  EXPECT_EQ(tok.tokenize("drx eye"), (std::vector<int64_t>{1, 6}));
  EXPECT_EQ(tok.tokenize("zebra 🙂"), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(tok.pieces("视盘，0.3。"),
            (std::vector<std::string>{"视", "盘", "，", "0", ".", "3", "。"}));
}

TEST(WordPiece, ThroughputOn2000Reports) {
  WordPieceTokenizer tok(small_vocab(), true);
  auto texts = reports(2000);
  size_t bytes = 0, tokens = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& t : texts) {
    bytes += t.size();
    tokens += tok.encode(t, 100).size();
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wordpiece: encoded %zu reports (%.1f KiB) in %.1f ms, %.0f reports/s\n",
              texts.size(), bytes / 1024.0, s * 1e3, texts.size() / s);
  EXPECT_EQ(tokens, 2000u * 100u);
}

TEST(WordPiece, LongWordIsUnknown) {
  WordPieceTokenizer tok(small_vocab(), true);
  std::string w100 = "a", w101 = "a";
  for (int i = 1; i < 100; ++i) w100 += "b";
  w101 = w100 + "b";
  auto ids = tok.tokenize(w100);
  EXPECT_EQ(ids.size(), 100u);  // "a" + 99 x "##b"
  EXPECT_EQ(tok.tokenize(w101), std::vector<int64_t>{tok.unk_id()});
}

TEST(WordPiece, InvalidUtf8AndControlsSurvive) {
  WordPieceTokenizer tok(small_vocab(), true);
  // invalid bytes are dropped like U+FFFD; a zero-width space and NUL too
  std::string text = std::string("le\xFF") + "ft\xE2\x80\x8B eye" + std::string(1, '\0') + ":\xC3";
  EXPECT_EQ(tok.pieces(text), (std::vector<std::string>{"left", "eye", ":"}));
  for (int b = 0; b < 256; ++b) tok.tokenize(std::string(3, static_cast<char>(b)));
}

TEST(Encode, LayoutTruncationAndPadding) {
  WordPieceTokenizer tok(small_vocab(), true);
  auto ids = tok.encode("left eye.", 8);
  EXPECT_EQ(ids, (std::vector<int64_t>{2, 5, 6, 11, 3, 0, 0, 0}));
  // 6 tokens into context 6: [CLS] + 4 tokens + [SEP], no padding
  auto cut = tok.encode("left eye left eye left eye", 6);
  EXPECT_EQ(cut, (std::vector<int64_t>{2, 5, 6, 5, 6, 3}));
  EXPECT_EQ(tok.encode("", 4), (std::vector<int64_t>{2, 3, 0, 0}));
  EXPECT_EQ(tok.encode("left", 2), (std::vector<int64_t>{2, 3}));
  EXPECT_THROW(tok.encode("left", 1), UsageError);
}

TEST(WordPiece, MissingSpecialTokenAndFileErrors) {
  auto v = small_vocab();
  v.erase(v.begin() + 4);  // [MASK]
  try {
    WordPieceTokenizer tok(v, true, "my_vocab.txt");
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("[MASK]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("my_vocab.txt"), std::string::npos) << e.what();
  }
  try {
    load_tokenizer("wordpiece", "/nonexistent/vocab.txt");
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/vocab.txt"), std::string::npos);
  }
  try {
    load_tokenizer("bpe", "x");
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("wordpiece, sentencepiece"), std::string::npos)
        << e.what();
  }
}

TEST(WordPiece, LoadsVocabFile) {
  auto dir = temp_dir("vocab");
  std::string text;
  for (const auto& t : small_vocab()) text += t + "\r\n";  // CRLF endings are accepted
  util::write_file_atomic(dir / "vocab.txt", text);
  auto tok = load_tokenizer("wordpiece", (dir / "vocab.txt").string());
  EXPECT_EQ(tok->type(), "wordpiece");
  EXPECT_EQ(tok->vocab_size(), 27);
  EXPECT_EQ(tok->id_to_piece(8), "##usen");
  EXPECT_EQ(tok->tokenize("drusen"), (std::vector<int64_t>{7, 8}));
  EXPECT_THROW(tok->id_to_piece(27), Error);
}

TEST(WordPiece, CurlyQuotesMapToAsciiWhenAsked) {
  auto dir = temp_dir("quotes");
  std::string text;
  for (const auto& t : small_vocab()) text += t + "\n";
  text += "\"\n";  // id 27
  util::write_file_atomic(dir / "vocab.txt", text);
  const std::string quoted =
      "\xE2\x80\x9C"
      "eye"
      "\xE2\x80\x9D";
  EXPECT_EQ(map_curly_quotes(quoted), "\"eye\"");
  auto mapped = load_tokenizer("wordpiece", (dir / "vocab.txt").string(), true, true);
  EXPECT_EQ(mapped->tokenize(quoted), (std::vector<int64_t>{27, 6, 27}));
  EXPECT_EQ(mapped->vocab_size(), 28);
  EXPECT_EQ(mapped->type(), "wordpiece");
  auto plain = load_tokenizer("wordpiece", (dir / "vocab.txt").string(), true, false);
  EXPECT_EQ(plain->tokenize(quoted), (std::vector<int64_t>{1, 6, 1}));  // [UNK] eye [UNK]
}

TEST(SentencePiece, TrainLoadEncodeRoundTrip) {
  auto dir = temp_dir("spm");
  auto texts = reports(400);
  auto t0 = std::chrono::steady_clock::now();
  int64_t n = train_sentencepiece(texts, 100, (dir / "a.model").string());
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("sentencepiece: trained %lld pieces on %zu reports in %.0f ms\n",
              static_cast<long long>(n), texts.size(), ms);
  auto tok = load_tokenizer("sentencepiece", (dir / "a.model").string());
  EXPECT_EQ(tok->vocab_size(), n);
  EXPECT_EQ(tok->id_to_piece(0), "[PAD]");
  EXPECT_EQ(tok->id_to_piece(1), "[UNK]");
  EXPECT_EQ(tok->id_to_piece(2), "[CLS]");
  EXPECT_EQ(tok->id_to_piece(3), "[SEP]");
  EXPECT_EQ(tok->id_to_piece(4), "[MASK]");
  auto* sp = dynamic_cast<SentencePieceTokenizer*>(tok.get());
  ASSERT_NE(sp, nullptr);
  // Lower-cased by the model's normaliser; pieces concatenate back to the text.
  std::string joined;
  for (const auto& p : sp->pieces("Left eye: Drusen.")) joined += p;
  EXPECT_EQ(joined, "\xE2\x96\x81" "left" "\xE2\x96\x81" "eye:" "\xE2\x96\x81" "drusen.");
  auto ids = tok->encode(texts[0], 16);
  ASSERT_EQ(ids.size(), 16u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[15], 3);  // truncated: [SEP] last
  for (size_t i = 1; i < 15; ++i) EXPECT_GE(ids[i], 5) << i;  // no specials in the body
  auto short_ids = tok->encode("left eye", 16);
  EXPECT_EQ(short_ids.back(), 0);
  // a character never seen in training maps to [UNK]
  auto unk = tok->tokenize("\xE2\x98\x83");
  EXPECT_NE(std::find(unk.begin(), unk.end(), 1), unk.end());
}

TEST(SentencePiece, TrainingIsDeterministic) {
  auto dir = temp_dir("spm_det");
  auto texts = reports(300);
  train_sentencepiece(texts, 100, (dir / "a.model").string());
  train_sentencepiece(texts, 100, (dir / "b.model").string());
  EXPECT_EQ(util::read_file(dir / "a.model"), util::read_file(dir / "b.model"));
}

TEST(SentencePiece, ModelWithoutSpecialTokensIsRejected) {
  auto dir = temp_dir("spm_plain");
  auto texts = reports(200);
  std::ofstream(dir / "corpus.txt") << [&] {
    std::string s;
    for (const auto& t : texts) s += t + "\n";
    return s;
  }();
  // spm_train defaults: <unk>=0, <s>=1, </s>=2, no [PAD]
  auto st = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir / "corpus.txt").string() + " --model_prefix=" + (dir / "plain").string() +
      " --vocab_size=80 --hard_vocab_limit=false --num_threads=1 --minloglevel=1");
  ASSERT_TRUE(st.ok()) << st.ToString();
  try {
    SentencePieceTokenizer tok((dir / "plain.model").string());
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[PAD]"), std::string::npos) << m;
    EXPECT_NE(m.find("retclip tokenizer train"), std::string::npos) << m;
  }
  EXPECT_THROW(SentencePieceTokenizer((dir / "missing.model").string()), UsageError);
  util::write_file_atomic(dir / "junk.model", "not a model");
  EXPECT_THROW(SentencePieceTokenizer((dir / "junk.model").string()), UsageError);
  EXPECT_THROW(train_sentencepiece({"", ""}, 100, (dir / "x.model").string()), UsageError);
}

TEST(ReportTexts, CsvAndJsonl) {
  auto dir = temp_dir("manifest");
  util::write_file_atomic(dir / "m.csv",
                          "\xEF\xBB\xBFpatient_id,left_image,right_image,report\r\n"
                          "p1,a.jpg,b.jpg,\"Left eye: drusen, \"\"mild\"\".\nRight: normal\"\r\n"
                          "p2,c.jpg,,\r\n"
                          "p3,,d.jpg,视盘边界清\r\n");
  auto csv = read_report_texts((dir / "m.csv").string());
  ASSERT_EQ(csv.size(), 2u);
  EXPECT_EQ(csv[0], "Left eye: drusen, \"mild\".\nRight: normal");
  EXPECT_EQ(csv[1], "视盘边界清");
  util::write_file_atomic(dir / "t.jsonl",
                          "{\"text_id\": 1, \"text\": \"双眼未见异常\", \"image_ids\": [\"p1\"]}\n"
                          "\n{\"text_id\": 2, \"text\": \"left eye drusen\", \"image_ids\": []}\n");
  auto jl = read_report_texts((dir / "t.jsonl").string());
  EXPECT_EQ(jl, (std::vector<std::string>{"双眼未见异常", "left eye drusen"}));
  util::write_file_atomic(dir / "bad.csv", "patient_id,report\np1,a,b\n");
  try {
    read_report_texts((dir / "bad.csv").string());
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
  util::write_file_atomic(dir / "nocol.csv", "patient_id,findings\np1,a\n");
  EXPECT_THROW(read_report_texts((dir / "nocol.csv").string()), UsageError);
  util::write_file_atomic(dir / "bad.jsonl", "{\"report\": \"ok\"}\n{not json}\n");
  EXPECT_THROW(read_report_texts((dir / "bad.jsonl").string()), UsageError);
}

namespace {

std::string load_error_of(const std::string& type, const std::string& path) {
  try {
    load_tokenizer(type, path);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no UsageError>";
}

}  // namespace

TEST(TokenizerType, InferredFromTheFileWithTheTypeAsAnOverride) {
  auto dir = temp_dir("detect");
  std::string vocab_text;
  for (const auto& t : small_vocab()) vocab_text += t + "\n";  // holds CJK and full-width pieces
  const std::string vocab = (dir / "vocab.txt").string(), model = (dir / "a.model").string();
  util::write_file_atomic(vocab, vocab_text);
  train_sentencepiece(reports(200), 100, model);
  EXPECT_EQ(detect_tokenizer_type(vocab), "wordpiece");
  EXPECT_EQ(detect_tokenizer_type(model), "sentencepiece");
  // A sentencepiece model under a text-like name is still found by its content.
  util::write_file_atomic(dir / "spm.txt", util::read_file(model));
  EXPECT_EQ(detect_tokenizer_type((dir / "spm.txt").string()), "sentencepiece");

  auto sp = load_tokenizer("auto", model);
  EXPECT_EQ(sp->type(), "sentencepiece");
  const std::string text = reports(3)[2];
  EXPECT_EQ(sp->encode(text, 40), load_tokenizer("sentencepiece", model)->encode(text, 40));
  auto wp = load_tokenizer("auto", vocab);
  EXPECT_EQ(wp->type(), "wordpiece");
  EXPECT_EQ(wp->tokenize("drusen"), (std::vector<int64_t>{7, 8}));
  EXPECT_EQ(load_tokenizer("auto", model, true, /*map_quotes=*/true)->type(), "sentencepiece");

  // An explicit type that does not fit the file says what the file is instead of asking
  // for a [PAD] line.
  std::string msg = load_error_of("wordpiece", model);
  EXPECT_NE(msg.find("the tokenizer type is given as wordpiece but " + model +
                     " is a sentencepiece model"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("HINT: leave the type out (auto"), std::string::npos) << msg;
  msg = load_error_of("sentencepiece", vocab);
  EXPECT_NE(msg.find("is a wordpiece vocab"), std::string::npos) << msg;

  // Neither kind, empty, missing.
  util::write_file_atomic(dir / "junk.bin", std::string("\x01\x02\x03\x00\xFFjunk", 9));
  msg = load_error_of("auto", (dir / "junk.bin").string());
  EXPECT_NE(msg.find("cannot tell the type of tokenizer file " + (dir / "junk.bin").string()),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("--tokenizer-type"), std::string::npos) << msg;
  util::write_file_atomic(dir / "empty.txt", "");
  msg = load_error_of("auto", (dir / "empty.txt").string());
  EXPECT_NE(msg.find("is empty"), std::string::npos) << msg;
  msg = load_error_of("auto", (dir / "absent.model").string());
  EXPECT_NE(msg.find("tokenizer file not found: " + (dir / "absent.model").string()),
            std::string::npos)
      << msg;
}
