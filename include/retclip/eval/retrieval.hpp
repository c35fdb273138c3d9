// Retrieval metrics over paired embeddings: row i of the image embeddings belongs
// with row i of the text embeddings. Tie-aware: identical report texts form one target
// (real keyword reports repeat, e.g. "left eye: normal fundus. right eye: normal fundus."),
// so a model that ranks one common report first for every image does not score the
// share of patients who have it.
//
//   auto r = eval::retrieval_recall(img, txt, {1, 5, 10});          // groups from txt rows
//   auto r = eval::retrieval_recall(img, txt, {1, 5}, eval::group_texts(reports));
//   r.i2t.at(5), r.t2i.at(5), r.chance.at(5), r.distinct_texts
//
// Definitions, with G distinct reports (targets) over N pairs:
//   image->text: for each image, a hit when its own report is among the k highest-scoring
//     distinct reports; averaged over the images of a report, then over the G reports.
//   text->image: each distinct report is one query; a hit when any image of a patient
//     with that report is among the k highest-scoring images; averaged over the G reports.
//   Ties are broken at random in expectation: candidates level with the target share
//   its place, and recall is the probability of a hit (so a collapsed model that scores
//   every candidate alike gets chance, not 1).
// Without repeated reports (G = N) both are Chinese-CLIP's and OpenCLIP's recall@k.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace retclip::eval {

struct RecallResult {
  int64_t n = 0;                     ///< number of pairs
  int64_t distinct_texts = 0;        ///< G: distinct reports among the pairs
  std::map<int64_t, double> i2t;     ///< k -> recall image->text
  std::map<int64_t, double> t2i;     ///< k -> recall text->image
  std::map<int64_t, double> chance;  ///< k -> image->text chance, min(k, G) / G
  std::map<int64_t, double>
      chance_t2i;              ///< k -> mean over reports of P(any own image in a random top k)
  double mean_recall() const;  ///< mean over all k of (i2t + t2i) / 2
};

/// Group ids 0..G-1 (in order of first appearance) for texts: equal strings, one id.
std::vector<int64_t> group_texts(const std::vector<std::string>& texts);

/// Group ids for text embeddings: rows whose cosine similarity is at least 1 - tol are
/// the same report (identical texts embed identically up to float rounding). Each row
/// joins the group of the first row it matches. Shape: txt [N,E].
std::vector<int64_t> group_embeddings(const at::Tensor& txt, double tol = 1e-5,
                                      int64_t chunk = 1024);

/// img, txt: [N,E] (normalised or not: cosine similarity is used). `text_groups`: one id
/// per row (empty: group_embeddings(txt)).
RecallResult retrieval_recall(const at::Tensor& img, const at::Tensor& txt,
                              const std::vector<int64_t>& ks,
                              const std::vector<int64_t>& text_groups = {}, int64_t chunk = 1024);

}  // namespace retclip::eval
