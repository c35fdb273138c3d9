// sentencepiece models for reports (see sentencepiece_tokenizer.hpp): loading with
// checks of the fixed special-token ids, and deterministic training from memory.
#include "retclip/data/sentencepiece_tokenizer.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <unordered_map>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::data {

namespace {

constexpr const char* kHint =
    "HINT: train a model with the retclip special tokens using `retclip tokenizer train "
    "--type sentencepiece` (or spm_train --pad_id=0 --unk_id=1 --bos_id=-1 --eos_id=-1 "
    "--pad_piece=[PAD] --unk_piece=[UNK] --control_symbols=[CLS],[SEP],[MASK])";

// Feeds the texts to the trainer without a temporary file.
class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& texts) : texts_(texts) { skip(); }
  bool done() const override { return i_ >= texts_.size(); }
  void Next() override {
    ++i_;
    skip();
  }
  const std::string& value() const override { return texts_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void skip() {
    while (i_ < texts_.size() && texts_[i_].empty()) ++i_;
  }
  const std::vector<std::string>& texts_;
  size_t i_ = 0;
};

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  RETCLIP_CHECK_USAGE(std::filesystem::is_regular_file(model_path),
                      "cannot read the sentencepiece model ", model_path,
                      ": no such file. ", kHint);
  auto st = sp_->Load(model_path);
  RETCLIP_CHECK_USAGE(st.ok(), "cannot load the sentencepiece model ", model_path, ": ",
                      st.ToString(), ". HINT: is it a .model file written by spm_train or "
                      "`retclip tokenizer train`?");
  const std::pair<const char*, int64_t> specials[] = {
      {"[PAD]", kSpPadId}, {"[UNK]", kSpUnkId}, {"[CLS]", kSpClsId},
      {"[SEP]", kSpSepId}, {"[MASK]", kSpMaskId}};
  for (const auto& [piece, want] : specials) {
    RETCLIP_CHECK_USAGE(want < sp_->GetPieceSize(), "the sentencepiece model ", model_path,
                        " has only ", sp_->GetPieceSize(), " pieces; expected ", piece,
                        " at id ", want, ". ", kHint);
    std::string have = sp_->IdToPiece(static_cast<int>(want));
    int found = sp_->PieceToId(piece);
    bool ok = have == piece && (want == kSpUnkId || !sp_->IsUnknown(found));
    RETCLIP_CHECK_USAGE(ok, "the sentencepiece model ", model_path, " lacks the special token ",
                        piece, " at id ", want, " (id ", want, " is '", have, "'",
                        sp_->IsUnknown(found) && want != kSpUnkId ? std::string(", and ") +
                                                                        piece + " is absent"
                                                                  : std::string(),
                        "). ", kHint);
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int64_t> SentencePieceTokenizer::tokenize(const std::string& text) const {
  std::vector<int> ids;
  auto st = sp_->Encode(text, &ids);
  RETCLIP_CHECK(st.ok(), "sentencepiece (", path_, ") failed to encode a text of ",
                text.size(), " bytes: ", st.ToString());
  return {ids.begin(), ids.end()};
}

std::vector<std::string> SentencePieceTokenizer::pieces(const std::string& text) const {
  std::vector<std::string> out;
  auto st = sp_->Encode(text, &out);
  RETCLIP_CHECK(st.ok(), "sentencepiece (", path_, ") failed to encode a text of ",
                text.size(), " bytes: ", st.ToString());
  return out;
}

int64_t SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::string SentencePieceTokenizer::id_to_piece(int64_t id) const {
  RETCLIP_CHECK(id >= 0 && id < vocab_size(), "token id ", id,
                " is outside the sentencepiece model ", path_, " of ", vocab_size(),
                " pieces");
  return sp_->IdToPiece(static_cast<int>(id));
}

int64_t train_sentencepiece(const std::vector<std::string>& texts, int64_t vocab_size,
                            const std::string& out_path,
                            const SentencePieceTrainOptions& options) {
  size_t nonempty = 0;
  for (const auto& t : texts) nonempty += !t.empty();
  RETCLIP_CHECK_USAGE(nonempty > 0, "cannot train a sentencepiece model for ", out_path,
                      ": no non-empty texts were given. HINT: check that the manifest has a "
                      "`report` column with text in it");
  RETCLIP_CHECK_USAGE(vocab_size > 5, "expected a sentencepiece vocabulary size above 5 (the "
                      "special tokens take ids 0-4) but got ", vocab_size,
                      " (--vocab-size). HINT: a few thousand suits reports");
  RETCLIP_CHECK_USAGE(options.model_type == "unigram" || options.model_type == "bpe",
                      "expected sentencepiece model type unigram or bpe but got '",
                      options.model_type, "'");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", options.hard_vocab_limit ? "true" : "false"},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"normalization_rule_name", options.lowercase ? "nmt_nfkc_cf" : "nmt_nfkc"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"pad_piece", "[PAD]"},
      {"unk_piece", "[UNK]"},
      {"control_symbols", "[CLS],[SEP],[MASK]"},
      // Determinism: one thread, every sentence used (no sampling), no shuffling.
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      {"minloglevel", "1"},
  };
  sentencepiece::SetRandomGeneratorSeed(options.seed);
  VectorIterator it(texts);
  std::string model;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  RETCLIP_CHECK_USAGE(st.ok(), "sentencepiece training for ", out_path, " failed on ", nonempty,
                      " texts with vocab size ", vocab_size, ": ", st.ToString(),
                      ". HINT: lower --vocab-size or give more text");
  util::write_file_atomic(out_path, model);
  sentencepiece::SentencePieceProcessor sp;
  auto lst = sp.LoadFromSerializedProto(model);
  RETCLIP_CHECK(lst.ok(), "sentencepiece wrote a model for ", out_path,
                " that does not load: ", lst.ToString());
  int64_t got = sp.GetPieceSize();
  if (got != vocab_size)
    log::warn("sentencepiece model {} has {} pieces, not the {} asked for: the {} texts "
              "do not support more",
              out_path, got, vocab_size, nonempty);
  return got;
}

}  // namespace retclip::data
