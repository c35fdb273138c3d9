// What this process runs on: library versions, CUDA devices, CPU threads and the
// parallel backend. Used by `retclip info`, run directories and benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace retclip::util {

struct CudaDevice {
  int index = 0;
  std::string name;
  double memory_gib = 0;
  int major = 0, minor = 0;  ///< compute capability
};

struct SystemInfo {
  std::string retclip_version, git_hash;
  std::string torch_version, opencv_version, sentencepiece_version;
  bool cuda_available = false;
  std::vector<CudaDevice> cuda_devices;
  int64_t intra_op_threads = 0, inter_op_threads = 0;
  int64_t hardware_threads = 0;
  std::string parallel_backend;  ///< first lines of at::get_parallel_info()
  std::string blas;              ///< MKL / OpenBLAS line from the parallel info
};

SystemInfo system_info();

/// The intra-op threads of train.threads 0: the cores available to this process
/// (affinity mask) divided among the ranks on this node (LOCAL_WORLD_SIZE, set by
/// `retclip launch` and torchrun), at least 1.
int64_t default_threads();

/// Sets LibTorch's intra-op threads: `n` > 0 as given, 0 = default_threads(). Returns
/// the number now in use.
int64_t configure_threads(int64_t n);

/// OpenMP wait policy when the environment sets none (docs/PERFORMANCE.md, "Throughput
/// under CPU contention"): an idle thread sleeps at once instead of spinning. libgomp's
/// own default spins 300000 rounds at every barrier: with other processes busy on the
/// cores, the spinning threads take the time their descheduled partners need and a
/// training step becomes many times slower.
constexpr const char* kDefaultOmpWaitPolicy = "PASSIVE";

/// The variables retclip puts into its environment when the user set neither
/// OMP_WAIT_POLICY nor GOMP_SPINCOUNT: {"OMP_WAIT_POLICY", kDefaultOmpWaitPolicy}, plus
/// RETCLIP_OPENMP_DEFAULTS=1 marking that retclip chose it. Empty when the user set one.
std::vector<std::pair<std::string, std::string>> openmp_env_defaults(const char* omp_wait_policy,
                                                                     const char* gomp_spincount);

/// Called first in main(). libgomp reads its settings once, when it is loaded (before
/// main), so the defaults of openmp_env_defaults take effect only in a new process
/// image: this sets them and re-executes /proc/self/exe with the same arguments (same
/// process id). Returns when nothing is missing, or when exec fails (the run then goes
/// on with libgomp's defaults).
void reexec_with_openmp_defaults(char** argv);

/// The OpenMP wait settings in effect, for `retclip info` and run.json:
/// "OMP_WAIT_POLICY=PASSIVE (retclip default)", "GOMP_SPINCOUNT=1000 (environment)".
std::string openmp_wait_description();

/// Cores this process may run on (sched_getaffinity), at least 1.
int64_t available_cores();

/// Tunes glibc malloc for a training loop (process-wide, once; no-op elsewhere):
/// blocks up to 32 MiB come from the heap instead of fresh mmap()s, and freed memory up
/// to 1 GiB stays in the heap instead of being returned to the OS. A training step frees
/// and re-allocates the same activation sizes every step; with glibc's defaults every
/// step page-faults its activations in again (~5000 minor faults per tiny-model step,
/// about 10% of its time). The cost: the process keeps up to 1 GiB of freed heap
/// memory mapped. The trainer and `retclip bench` call it before building the model; RETCLIP_MALLOC_DEFAULTS=1 skips it.
void tune_malloc_for_training();

/// Peak resident set size of this process in bytes (from /proc/self/status VmHWM).
int64_t peak_rss_bytes();

}  // namespace retclip::util
