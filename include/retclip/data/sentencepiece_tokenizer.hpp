// sentencepiece tokenizer for reports: loads a .model whose first five ids are the
// retclip special tokens ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4) and trains
// such models deterministically from report texts (`retclip tokenizer train`).
//
//   data::train_sentencepiece(reports, 4000, "reports.model");
//   data::SentencePieceTokenizer tok("reports.model");
//   auto ids = tok.encode("Left eye: drusen.", 100);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "retclip/data/tokenizer.hpp"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace retclip::data {

/// The fixed special-token ids of retclip sentencepiece models.
inline constexpr int64_t kSpPadId = 0, kSpUnkId = 1, kSpClsId = 2, kSpSepId = 3, kSpMaskId = 4;

class SentencePieceTokenizer : public Tokenizer {
 public:
  /// Loads `model_path`. Throws UsageError naming the path when the file is missing
  /// or not a sentencepiece model, and naming the special token that is not at its
  /// fixed id (with a HINT to train the model with `retclip tokenizer train`).
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> tokenize(const std::string& text) const override;
  /// The pieces of `text` ("▁left", "▁eye", ":").
  std::vector<std::string> pieces(const std::string& text) const;

  int64_t vocab_size() const override;
  int64_t pad_id() const override { return kSpPadId; }
  int64_t cls_id() const override { return kSpClsId; }
  int64_t sep_id() const override { return kSpSepId; }
  int64_t unk_id() const override { return kSpUnkId; }
  int64_t mask_id() const override { return kSpMaskId; }
  std::string id_to_piece(int64_t id) const override;
  std::string type() const override { return "sentencepiece"; }
  std::string path() const override { return path_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

struct SentencePieceTrainOptions {
  std::string model_type = "unigram";  ///< "unigram" or "bpe"
  /// Lower-case (Unicode case folding, rule nmt_nfkc_cf) inside the model's
  /// normaliser, so that encoding lower-cases too; otherwise nmt_nfkc.
  bool lowercase = true;
  double character_coverage = 0.9995;  ///< < 1 keeps rare characters out (-> [UNK])
  /// true: vocab_size is exact and training fails when the texts cannot fill it;
  /// false: the model may come out smaller (a warning gives the size reached).
  bool hard_vocab_limit = false;
  int64_t max_sentence_length = 16384;  ///< bytes; longer texts are skipped by the trainer
  uint32_t seed = 1234;                 ///< sentencepiece's random generator
};

/// Trains a sentencepiece model on `texts` (one report each) with the special tokens
/// at their fixed ids ([PAD]=0, [UNK]=1, control symbols [CLS], [SEP], [MASK] = 2, 3,
/// 4; no BOS/EOS) and writes it atomically to `out_path`. Single-threaded and seeded:
/// the same texts and options give byte-identical model files. Returns the vocabulary
/// size of the model written. Throws UsageError for no texts or a vocab_size the
/// trainer rejects (its message included).
int64_t train_sentencepiece(const std::vector<std::string>& texts, int64_t vocab_size,
                            const std::string& out_path,
                            const SentencePieceTrainOptions& options = {});

}  // namespace retclip::data
