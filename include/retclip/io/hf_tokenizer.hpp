// Hugging Face tokenizer files for an exported text tower: a `tokenizer.json` (the
// `tokenizers` library's format) that gives retclip's token ids exactly, built from a
// sentencepiece .model (read here from its protobuf bytes) or a WordPiece vocab.txt,
// plus tokenizer_config.json. A tokenizer these files cannot reproduce is refused with
// the reason, never replaced by an approximation.
//
//   auto spec = io::read_sentencepiece_model("reports.model");
//   nlohmann::json tj = io::sentencepiece_tokenizer_json(spec, {}, "reports.model");
//   io::write_hf_tokenizer("export/hf", {"sentencepiece", "reports.model", true, false, 100});
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace retclip::io {

/// What a sentencepiece ModelProto says about encoding (field numbers of
/// sentencepiece_model.proto: ModelProto 1 pieces, 2 trainer_spec, 3 normalizer_spec).
/// Defaults are the proto's defaults for fields the file leaves out.
struct SentencePieceModelSpec {
  enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  enum ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };
  struct Piece {
    std::string piece;
    float score = 0.0f;
    int type = kNormal;
  };
  std::vector<Piece> pieces;
  // TrainerSpec
  int model_type = kUnigram;
  int64_t unk_id = 0;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  // NormalizerSpec
  std::string normalizer_name;
  std::string precompiled_charsmap;  ///< raw bytes; empty for the identity normaliser
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

/// Parses a .model file. Throws UsageError naming the path (and byte offset) when the
/// bytes are not a well-formed ModelProto or hold no pieces.
SentencePieceModelSpec read_sentencepiece_model(const std::filesystem::path& path);

/// retclip's layout around the tokens: [CLS] tokens [SEP] [PAD]... (data/tokenizer.hpp).
struct HfSpecialIds {
  int64_t pad = 0, unk = 1, cls = 2, sep = 3, mask = 4;
};

/// tokenizer.json for a sentencepiece unigram model: the pieces and scores as a Unigram
/// model, the model's normaliser (its precompiled charsmap, then the whitespace rules
/// its NormalizerSpec turns on), a Metaspace pre-tokenizer that adds the dummy prefix
/// without splitting (the whole text is segmented at once, as sentencepiece does),
/// [CLS] $A [SEP] post-processing and the special tokens at `ids`. `map_quotes` puts
/// curly double quotes -> '"' in front (data.tokenizer.map_quotes). Throws UsageError
/// naming `where` for what tokenizer.json cannot reproduce: a BPE/word/char model, byte
/// fallback, user-defined pieces, whitespace as suffix, no whitespace escaping, or
/// special tokens not at `ids`.
nlohmann::json sentencepiece_tokenizer_json(const SentencePieceModelSpec& spec,
                                            const HfSpecialIds& ids, const std::string& where,
                                            bool map_quotes = false);

/// tokenizer.json for a BERT WordPiece vocabulary (one token per line, id = line
/// number): BertNormalizer (lower-casing and accent stripping when `lowercase`, as
/// BertTokenizer's do_lower_case), BertPreTokenizer, WordPiece ("##", 100 characters per
/// word), [CLS] $A [SEP]; `map_quotes` as above. Throws UsageError naming `where` when a
/// special token is missing.
nlohmann::json wordpiece_tokenizer_json(const std::vector<std::string>& vocab, bool lowercase,
                                        const std::string& where, bool map_quotes = false);

struct HfTokenizerSource {
  std::string type;              ///< "wordpiece" or "sentencepiece"
  std::filesystem::path file;    ///< vocab.txt or .model
  bool lowercase = true;         ///< WordPiece only (a sentencepiece model normalises itself)
  bool map_quotes = false;       ///< data.tokenizer.map_quotes
  int64_t context_length = 100;  ///< model_max_length
};

/// Throws the UsageError write_hf_tokenizer would throw, writing nothing: a missing file,
/// an unknown type, or a tokenizer tokenizer.json cannot reproduce.
void check_hf_tokenizer(const HfTokenizerSource& src);

/// Writes the tokenizer files AutoTokenizer.from_pretrained(dir) loads and returns
/// them: sentencepiece -> tokenizer.json + tokenizer_config.json (+ the .model itself);
/// WordPiece -> vocab.txt + tokenizer_config.json (BertTokenizer) + special_tokens_map.json,
/// and tokenizer.json as well when map_quotes is on (BertTokenizer has no quote mapping).
/// Throws UsageError (from the functions above) for a tokenizer that cannot be expressed;
/// nothing is written then.
std::vector<std::filesystem::path> write_hf_tokenizer(const std::filesystem::path& dir,
                                                      const HfTokenizerSource& src);

}  // namespace retclip::io
