// Synthetic colour fundus photographs (CFPs) with per-eye findings and a report that
// states them per eye: the embedded default data on which the demo must visibly learn.
// Everything a report states is drawn in that eye's pixels; same (seed, index) -> same bytes.
//
//   data::SynthOptions o;  o.seed = 7;  o.size = 128;
//   data::SynthPatient p = data::synth_patient(o, 3);     // p.left / p.right: RGB uint8
//   data::synth_dataset(o, "out/");  // out/images/*.png, train.csv, val.csv, all.jsonl
//
// Geometry follows clinical photographs: the optic disc sits on the nasal side (right
// eye -> image right, left eye -> image left), the macula temporal to it, vessel
// arcades arch around the macula. See docs/SYNTH.md for the findings and the layout.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "retclip/data/sample.hpp"  // Eye

namespace retclip::data {

/// Anatomical quadrants (temporal = towards the macula, away from the disc).
enum class Quadrant { kSuperiorTemporal, kInferiorTemporal, kSuperiorNasal, kInferiorNasal };
/// Number class of lesions: few (3-5), several (7-12), many (18+).
enum class Amount { kFew, kSeveral, kMany };

/// What one eye shows. Everything here is drawn by synth_eye and stated by eye_report.
struct EyeFindings {
  Eye eye = Eye::kRight;
  bool present = true;  ///< false: the eye was not photographed (missing eye)
  /// 0 none, 1 mild / 2 moderate / 3 severe non-proliferative, 4 proliferative DR.
  int dr_grade = 0;
  Quadrant dr_quadrant = Quadrant::kSuperiorTemporal;  ///< where the main lesions are
  Amount dr_amount = Amount::kFew;  ///< microaneurysms (grade 1) or haemorrhages (2-4)
  bool hard_exudates = false;       ///< grades 2-4
  bool cotton_wool = false;         ///< grades 2-4 (always for grade 3)
  bool glaucoma = false;
  double cup_disc_ratio = 0.3;      ///< drawn value; reports round it to 0.1
  int amd = 0;                      ///< 0 none, 1 drusen, 2 geographic atrophy
  Amount drusen_amount = Amount::kFew;
  int cataract = 0;                 ///< 0 none, 1 mild haze, 2 dense haze
  bool myopia = false;              ///< tessellation + temporal peripapillary atrophy
  bool hypertensive = false;        ///< narrowed, straightened arteries + AV nicking
  int pigment = 1;                  ///< fundus pigmentation: 0 light, 1 medium, 2 dark
  bool naevus = false;              ///< benign choroidal naevus (slate-grey patch)
  Quadrant naevus_quadrant = Quadrant::kInferiorTemporal;
  uint64_t render_seed = 0;         ///< nuisance variation: vessel tree, texture, lesion sites
};

struct PatientFindings {
  EyeFindings left, right;
};

struct SynthOptions {
  uint64_t seed = 42;
  int64_t patients = 1000;
  int size = 224;                  ///< output images are size x size pixels
  std::string language = "en";     ///< report language: "en" or "zh"
  int64_t val = -1;                ///< last N patients form val; -1 = min(200, ceil(10%))
  std::string format = "manifest"; ///< "manifest" (PNG files + CSV/JSONL) or "retclip"
  std::string image_format = "png";///< "png" (lossless) or "jpg" (quality 95)
  bool preview = false;            ///< also write preview.png (4x4 pairs with labels)
  int threads = 0;                 ///< worker threads; 0 = the cores available
  double missing_eye_rate = 0.03;  ///< fraction of patients with one eye not imaged
};

struct SynthPatient {
  std::string patient_id;      ///< "P000123" (index, zero-padded)
  PatientFindings findings;
  cv::Mat left, right;         ///< RGB uint8 size x size; empty for a missing eye
  std::string report;          ///< "Left eye: ... Right eye: ..."
  std::string left_report, right_report;  ///< per eye; empty for a missing eye
  std::vector<std::string> left_labels, right_labels, patient_labels;  ///< finding codes
};

/// Findings of patient `index` (cheap: no drawing). Eyes are correlated the way they are
/// in clinics: DR bilateral within +-1 grade, myopia and hypertension bilateral.
PatientFindings synth_findings(const SynthOptions& opts, int64_t index);

/// Draws one eye. Returns RGB uint8, size x size, black outside the circular field of
/// view. Works without OpenCV imgcodecs (the trainer may call it in memory).
cv::Mat synth_eye(const EyeFindings& eye, int size);

/// The report of one eye, without the "Left eye:" prefix ("Mild non-proliferative ...;
/// cup-to-disc ratio 0.3."). `language` is "en" or "zh".
std::string eye_report(const EyeFindings& eye, const std::string& language);

/// "Left eye: ... Right eye: ..." (or "左眼：…右眼：…"); a missing eye is "not imaged".
std::string patient_report(const PatientFindings& f, const std::string& language);

/// Finding codes of one eye: dr1..dr4, glaucoma, drusen, ga, cataract, myopia,
/// hypertensive, naevus; {"normal"} when it has none; {} for a missing eye.
std::vector<std::string> eye_labels(const EyeFindings& eye);

/// Patient id of `index`: "P" + 6 digits.
std::string synth_patient_id(int64_t index);

/// Findings, both images and all reports of patient `index`.
SynthPatient synth_patient(const SynthOptions& opts, int64_t index);

/// Number of validation patients (the last ones): opts.val, or min(200, ceil(N/10)).
int64_t synth_val_count(const SynthOptions& opts);

/// Contact sheet of up to 16 patients (4x4 pairs, left | right, pid and labels above).
cv::Mat synth_preview(const std::vector<SynthPatient>& patients);

struct SynthSummary {
  int64_t train = 0, val = 0, missing_eyes = 0;
  double seconds = 0;
};

/// Writes the data set under `out_dir` with a progress bar; multithreaded, and the bytes
/// do not depend on the thread count.
///  manifest: images/<pid>_L.png, <pid>_R.png, train.csv, val.csv, all.jsonl
///  retclip:  train_texts.jsonl, train_imgs.tsv, valid_texts.jsonl, valid_imgs.tsv
/// plus preview.png with opts.preview. Throws UsageError for bad options and Error when
/// this build has no image encoding (RETCLIP_WITH_IMGCODECS off).
SynthSummary synth_dataset(const SynthOptions& opts, const std::string& out_dir);

}  // namespace retclip::data
