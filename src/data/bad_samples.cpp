// The bad_samples.tsv writer and reader.
#include "retclip/data/bad_samples.hpp"

#include <cerrno>
#include <cstring>

#include "retclip/util/error.hpp"

namespace retclip::data {

namespace {

std::string field(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return out;
}

}  // namespace

BadSampleLog::BadSampleLog(std::string path) : path_(std::move(path)) {
  out_.open(path_, std::ios::binary | std::ios::trunc);
  RETCLIP_CHECK_USAGE(out_.good(), "cannot write the list of bad samples ", path_, ": ",
                      std::strerror(errno), ". HINT: check that the folder is writable");
  out_ << "source\tpatient_id\treason\n";
  out_.flush();
}

void BadSampleLog::add(const BadSample& b) {
  std::lock_guard<std::mutex> lk(mu_);
  out_ << field(b.origin) << '\t' << field(b.patient_id) << '\t' << field(b.reason) << '\n';
  out_.flush();
  ++count_;
}

void BadSampleLog::add(const std::vector<BadSample>& v) {
  for (const BadSample& b : v) add(b);
}

int64_t BadSampleLog::count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return count_;
}

std::vector<BadSample> read_bad_sample_log(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RETCLIP_CHECK_USAGE(in.good(), "cannot open ", path, " for reading");
  std::vector<BadSample> out;
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    const size_t a = line.find('\t'), b = a == std::string::npos ? a : line.find('\t', a + 1);
    RETCLIP_CHECK_USAGE(b != std::string::npos, path, ": expected 3 tab-separated fields in '",
                        line, "'");
    out.push_back({line.substr(0, a), line.substr(b + 1), line.substr(a + 1, b - a - 1)});
  }
  return out;
}

}  // namespace retclip::data
