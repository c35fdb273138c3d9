// System and build information.
#include "retclip/util/system.hpp"

#include <ATen/Parallel.h>
#include <opencv2/core/version.hpp>
#include <sched.h>
#include <unistd.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#ifdef RETCLIP_HAVE_CUDART
#include <cuda_runtime_api.h>
#endif

#include "retclip/version.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace retclip::util {

int64_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  auto hw = static_cast<int64_t>(std::thread::hardware_concurrency());
  return hw > 0 ? hw : 1;
}

std::vector<std::pair<std::string, std::string>> openmp_env_defaults(const char* wait_policy,
                                                                     const char* spincount) {
  if ((wait_policy && *wait_policy) || (spincount && *spincount)) return {};
  return {{"OMP_WAIT_POLICY", kDefaultOmpWaitPolicy}, {"RETCLIP_OPENMP_DEFAULTS", "1"}};
}

void reexec_with_openmp_defaults(char** argv) {
  if (std::getenv("RETCLIP_OPENMP_DEFAULTS")) return;  // set by an earlier exec (or a failed one)
  auto vars = openmp_env_defaults(std::getenv("OMP_WAIT_POLICY"), std::getenv("GOMP_SPINCOUNT"));
  if (vars.empty()) return;
  for (const auto& [k, v] : vars) ::setenv(k.c_str(), v.c_str(), 1);
  ::execv("/proc/self/exe", argv);
  // exec failed (no /proc): continue in this image, with libgomp's defaults.
}

std::string openmp_wait_description() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const bool ours = std::getenv("RETCLIP_OPENMP_DEFAULTS") != nullptr;
  std::string s;
  if (policy && *policy) s += std::string("OMP_WAIT_POLICY=") + policy;
  if (spin && *spin) s += std::string(s.empty() ? "" : ", ") + "GOMP_SPINCOUNT=" + spin;
  if (s.empty()) return "libgomp defaults (spin 300000 rounds at each barrier)";
  return s + (ours ? " (retclip default)" : " (environment)");
}

int64_t default_threads() {
  // `retclip launch` (and torchrun) say how many ranks share this node: each takes its
  // share of the cores rather than all of them.
  int64_t local_world = 1;
  if (const char* e = std::getenv("LOCAL_WORLD_SIZE")) local_world = std::max(1L, std::atol(e));
  return std::max<int64_t>(1, available_cores() / local_world);
}

int64_t configure_threads(int64_t n) {
  int64_t want = n > 0 ? n : default_threads();
  at::set_num_threads(static_cast<int>(want));
  return at::get_num_threads();
}

int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      int64_t kb = 0;
      ss >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

SystemInfo system_info() {
  SystemInfo s;
  s.retclip_version = kVersion;
  s.git_hash = kGitHash;
  s.torch_version = TORCH_VERSION;
  s.opencv_version = CV_VERSION;
  s.sentencepiece_version = kSentencePieceVersion;
  s.cuda_available = torch::cuda::is_available();
#ifdef RETCLIP_HAVE_CUDART
  if (s.cuda_available) {
    int n = 0;
    if (cudaGetDeviceCount(&n) == cudaSuccess) {
      for (int i = 0; i < n; ++i) {
        cudaDeviceProp p{};
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
        s.cuda_devices.push_back({i, p.name, static_cast<double>(p.totalGlobalMem) / (1 << 30),
                                  p.major, p.minor});
      }
    }
  }
#endif
  s.intra_op_threads = at::get_num_threads();
  s.inter_op_threads = at::get_num_interop_threads();
  s.hardware_threads = available_cores();
  std::istringstream info(at::get_parallel_info());
  std::string line;
  while (std::getline(info, line)) {
    if (line.rfind("ATen parallel backend:", 0) == 0) s.parallel_backend = line.substr(23);
    if (line.find("Math Kernel Library") != std::string::npos ||
        line.find("OpenBLAS") != std::string::npos)
      s.blas = line;
  }
  return s;
}

void tune_malloc_for_training() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    const char* off = std::getenv("RETCLIP_MALLOC_DEFAULTS");
    if (off && std::strcmp(off, "1") == 0) return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum; fixes the dynamic threshold
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  });
#endif
}


}  // namespace retclip::util
