// Retrieval metrics over paired embeddings: row i of the image embeddings belongs
// with row i of the text embeddings. recall@k image->text is the share of rows whose
// own text ranks among the k most similar texts (and text->image likewise), as
// Chinese-CLIP's and OpenCLIP's retrieval evaluation computes it.
//
//   auto r = eval::retrieval_recall(img, txt, {1, 5, 10});
//   r.i2t.at(5), r.t2i.at(5), r.chance.at(5)   // fractions in [0,1]
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <vector>

namespace retclip::eval {

struct RecallResult {
  int64_t n = 0;                   ///< number of pairs
  std::map<int64_t, double> i2t;   ///< k -> recall image->text
  std::map<int64_t, double> t2i;   ///< k -> recall text->image
  std::map<int64_t, double> chance;  ///< k -> min(k, n) / n
  double mean_recall() const;      ///< mean over all k of (i2t + t2i) / 2
};

/// img, txt: [N, E] (normalised or not: cosine similarity is used). Ties are broken
/// pessimistically (a row counts only if fewer than k other columns score strictly
/// higher than its own pair), so identical texts of different patients do not help.
/// Shape: img [N,E], txt [N,E].
RecallResult retrieval_recall(const at::Tensor& img, const at::Tensor& txt,
                              const std::vector<int64_t>& ks, int64_t chunk = 1024);

}  // namespace retclip::eval
