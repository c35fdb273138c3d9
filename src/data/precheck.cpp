// precheck_samples: distinct images checked in parallel threads (stat + open + a few
// header reads each, or the whole compressed data under kData), findings gathered per
// patient in input order.
#include "retclip/data/precheck.hpp"

#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <unordered_map>

#include "retclip/data/image.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/system.hpp"

namespace retclip::data {

namespace {

/// Checks one image; returns the reason it is bad, or "".
std::string check_one(const ImageRef& ref, int64_t max_pixels, bool data) {
  try {
    const std::string where = ref.describe();
    if (ref.bytes.empty()) check_image_file(ref.path);
    if (!data) {
      const ImageInfo info =
          ref.bytes.empty() ? probe_image_file(ref.path, where) : probe_image(ref.bytes, where);
      check_pixel_limit(info, max_pixels, where);
      check_min_size(info, where);
      return "";
    }
    const std::string file_bytes = ref.bytes.empty() ? util::read_file(ref.path) : std::string();
    const std::string& bytes = ref.bytes.empty() ? file_bytes : ref.bytes;
    const ImageInfo info = check_encoded_image(bytes, max_pixels, where);
    check_min_size(info, where);
#ifdef RETCLIP_WITH_IMGCODECS
    // JPEG and PNG data were read through completely above; the other formats have no
    // integrity check of their own, so OpenCV decodes them (at 1/8 size where it can).
    if (info.format != "JPEG" && info.format != "PNG") {
      cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
      cv::Mat img;
      try {
        img = cv::imdecode(raw, cv::IMREAD_REDUCED_COLOR_8);
      } catch (const cv::Exception& e) {
        throw UsageError(str_cat("image ", where, " could not be decoded: ", e.what(),
                                 ". HINT: the file is corrupt; re-export it"));
      }
      RETCLIP_CHECK_USAGE(!img.empty(), "image ", where, " is not a decodable ", info.format,
                          " (", bytes.size(),
                          " bytes). HINT: the file is corrupt; re-export it, or fix or remove "
                          "its row");
    }
#endif
    return "";
  } catch (const UsageError& e) {
    return e.what();
  }
}

const char* depth_name(PrecheckDepth d) {
  return d == PrecheckDepth::kData ? "headers and compressed data" : "headers";
}

}  // namespace

std::vector<Sample> precheck_samples(std::vector<Sample> samples, const PrecheckOptions& o,
                                     PrecheckReport* report) {
  const auto t0 = std::chrono::steady_clock::now();
  // Distinct images, keyed by what names them (a path, or "<tsv> row N (eye)").
  std::vector<const ImageRef*> images;
  std::unordered_map<std::string, size_t> index;
  std::vector<std::array<int64_t, 2>> sample_images(samples.size(), std::array<int64_t, 2>{-1, -1});
  for (size_t i = 0; i < samples.size(); ++i) {
    const ImageRef* eyes[2] = {&samples[i].left, &samples[i].right};
    for (int e = 0; e < 2; ++e) {
      if (!eyes[e]->present()) continue;
      auto [it, added] = index.emplace(eyes[e]->describe(), images.size());
      if (added) images.push_back(eyes[e]);
      sample_images[i][e] = static_cast<int64_t>(it->second);
    }
  }

  PrecheckDepth depth = o.depth;
  if (depth == PrecheckDepth::kAuto)
    depth = o.policy == BadSamplePolicy::kFail ? PrecheckDepth::kData : PrecheckDepth::kHeader;
  const bool data = depth == PrecheckDepth::kData;
  std::vector<std::string> reason(images.size());
  const int64_t cores = util::available_cores();
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(o.threads > 0 ? o.threads : (data ? 2 * cores : 4 * cores),
                           static_cast<int64_t>(images.size())));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k = next++; k < images.size(); k = next++)
      reason[k] = check_one(*images[k], o.max_pixels, data);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();

  // One finding per patient: its first bad row and eye.
  std::vector<BadSample> bad;
  std::set<std::string> bad_patients;
  std::vector<Sample> kept;
  kept.reserve(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    Sample& s = samples[i];
    std::string why, eye;
    for (int e = 0; e < 2 && why.empty(); ++e) {
      const int64_t k = sample_images[i][e];
      if (k >= 0 && !reason[static_cast<size_t>(k)].empty()) {
        why = reason[static_cast<size_t>(k)];
        eye = e == 0 ? "left" : "right";
      }
    }
    if (why.empty() && !bad_patients.count(s.patient_id)) {
      kept.push_back(std::move(s));
      continue;
    }
    if (!why.empty() && bad_patients.insert(s.patient_id).second)
      bad.push_back(
          {str_cat(s.origin.empty() ? "patient " + s.patient_id : s.origin, " (", eye, ")"), why,
           s.patient_id});
  }
  // A patient found bad at a later row also loses the samples kept before that row.
  if (!bad_patients.empty()) {
    std::vector<Sample> pass;
    pass.reserve(kept.size());
    for (Sample& s : kept)
      if (!bad_patients.count(s.patient_id)) pass.push_back(std::move(s));
    kept = std::move(pass);
  }

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("pre-check ({}): {} images of {} samples checked in {:.2f} s ({} threads), {} bad",
            depth_name(depth), images.size(), samples.size(), seconds, threads, bad.size());
  if (o.log) o.log->add(bad);
  if (report) {
    report->images = static_cast<int64_t>(images.size());
    report->depth = depth;
    report->threads = threads;
    report->bad = bad;
    report->seconds = seconds;
  }
  if (o.policy == BadSamplePolicy::kFail && !bad.empty())
    throw UsageError(
        str_cat("bad sample at ", bad.front().origin, ": ", bad.front().reason,
                " (pre-check before the first step: ", bad.size(),
                bad.size() == 1 ? " patient has a bad image" : " patients have bad images",
                o.log ? str_cat(", all listed in ", o.log->path()) : std::string(),
                "). HINT: fix or remove those rows, or set data.on_bad_sample: skip to drop them"));
  return kept;
}

}  // namespace retclip::data
