// `retclip tokenizer train|encode`: train a sentencepiece model on the reports of
// manifests, and show how a tokenizer splits a text (ids and pieces).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "command.hpp"
#include "retclip/data/sentencepiece_tokenizer.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace {

struct TokenizerArgs {
  // train
  std::vector<std::string> manifests;
  std::string column = "report";
  int64_t vocab_size = 4000;
  std::string out;
  std::string train_type = "sentencepiece";
  std::string model_type = "unigram";
  bool keep_case = false;
  // encode
  std::string tokenizer;
  std::string type = "auto";
  std::string text;
  int64_t context = 100;
};

int run_train(const TokenizerArgs& a) {
  using namespace retclip;
  RETCLIP_CHECK_USAGE(a.train_type == "sentencepiece", "retclip trains only sentencepiece "
                      "tokenizers but --type is '", a.train_type,
                      "'. HINT: for wordpiece use an existing BERT vocab.txt (e.g. the "
                      "RoBERTa-wwm-ext-chinese one) with --type wordpiece at encode time");
  std::vector<std::string> texts;
  for (const auto& m : a.manifests) {
    auto t = data::read_report_texts(m, a.column);
    log::info("{}: {} reports", m, t.size());
    texts.insert(texts.end(), std::make_move_iterator(t.begin()), std::make_move_iterator(t.end()));
  }
  data::SentencePieceTrainOptions opts;
  opts.model_type = a.model_type;
  opts.lowercase = !a.keep_case;
  int64_t got = data::train_sentencepiece(texts, a.vocab_size, a.out, opts);
  log::info("wrote {} ({} pieces, {} model, trained on {} reports)", a.out, got, a.model_type,
            texts.size());
  return 0;
}

int run_encode(const TokenizerArgs& a) {
  using namespace retclip;
  auto tok = data::load_tokenizer(a.type, a.tokenizer, !a.keep_case);
  std::vector<int64_t> body = tok->tokenize(a.text);
  std::vector<int64_t> ids = tok->encode(a.text, a.context);
  int64_t used = 0;
  for (int64_t id : ids) used += id != tok->pad_id();
  fmt::print("tokenizer  {} ({}, {} tokens)\n", tok->path(), tok->type(), tok->vocab_size());
  fmt::print("tokens     {} without [CLS]/[SEP]{}\n", body.size(),
             static_cast<int64_t>(body.size()) > a.context - 2
                 ? fmt::format(", truncated to {}", a.context - 2)
                 : std::string());
  fmt::print("ids        [{}]\n", fmt::join(ids, ", "));
  std::vector<std::string> pieces;
  for (int64_t i = 0; i < used; ++i) pieces.push_back(tok->id_to_piece(ids[static_cast<size_t>(i)]));
  fmt::print("pieces     {}\n", fmt::join(pieces, " "));
  fmt::print("padding    {} x {} to context {}\n", a.context - used,
             tok->id_to_piece(tok->pad_id()), a.context);
  return 0;
}

retclip::cli::RunFn add_tokenizer(CLI::App& app) {
  auto a = std::make_shared<TokenizerArgs>();
  auto* sub = app.add_subcommand("tokenizer", "Train a report tokenizer or inspect how one splits a text");
  sub->require_subcommand(1);

  auto* train = sub->add_subcommand("train", "Train a sentencepiece model on manifest reports");
  train->add_option("--manifest", a->manifests, "manifest (.csv or .jsonl) with a report column; repeatable")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("--column", a->column, "column holding the text")->capture_default_str();
  train->add_option("--vocab-size", a->vocab_size, "pieces in the model, special tokens included")
      ->capture_default_str();
  train->add_option("--out", a->out, "model file to write (e.g. reports.model)")->required();
  train->add_option("--type", a->train_type, "tokenizer type (sentencepiece)")->capture_default_str();
  train->add_option("--model-type", a->model_type, "sentencepiece algorithm")
      ->check(CLI::IsMember({"unigram", "bpe"}))
      ->capture_default_str();
  train->add_flag("--keep-case", a->keep_case, "do not lower-case the reports");

  auto* encode = sub->add_subcommand("encode", "Print the ids and pieces of a text");
  encode->add_option("--tokenizer", a->tokenizer, "vocab.txt (wordpiece) or .model (sentencepiece)")
      ->required();
  encode->add_option("--type", a->type,
                     "auto (inferred from the file: a sentencepiece model is binary, a "
                     "WordPiece vocab is text), wordpiece or sentencepiece")
      ->check(CLI::IsMember({"auto", "wordpiece", "sentencepiece"}))
      ->capture_default_str();
  encode->add_option("--text", a->text, "text to encode")->required();
  encode->add_option("--context", a->context, "context length")->capture_default_str();
  encode->add_flag("--keep-case", a->keep_case, "wordpiece: no lower-casing / accent stripping");

  return [a, train] { return train->parsed() ? run_train(*a) : run_encode(*a); };
}

}  // namespace

RETCLIP_COMMAND(tokenizer, add_tokenizer);
