// `retclip info`: versions, devices, threads and the parallel backend.
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/system.hpp"

namespace {

struct InfoArgs {
  int64_t threads = 0;
};

retclip::cli::RunFn add_info(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  auto* sub = app.add_subcommand("info", "Print versions, CUDA devices and CPU threading");
  sub->add_option("--threads", args->threads, "intra-op threads to apply (0 = cores available)");
  return [args] {
    using namespace retclip;
    util::configure_threads(args->threads);
    auto s = util::system_info();
    fmt::print("retclip        {} (git {})\n", s.retclip_version, s.git_hash);
    fmt::print("LibTorch       {}\n", s.torch_version);
    fmt::print("OpenCV         {}\n", s.opencv_version);
    fmt::print("sentencepiece  {}\n", s.sentencepiece_version);
    fmt::print("CUDA usable    {}\n", s.cuda_available ? "yes" : "no");
    for (const auto& d : s.cuda_devices)
      fmt::print("  cuda:{}       {} ({:.1f} GiB, sm_{}{})\n", d.index, d.name, d.memory_gib,
                 d.major, d.minor);
    fmt::print("CPU cores      {} available\n", s.hardware_threads);
    fmt::print("threads        {} intra-op, {} inter-op\n", s.intra_op_threads,
               s.inter_op_threads);
    fmt::print("parallel       {}\n", s.parallel_backend);
    fmt::print("OpenMP wait    {}\n", util::openmp_wait_description());
    fmt::print("BLAS           {}\n", s.blas.empty() ? "unknown" : s.blas);
    fmt::print("distributed    gloo yes, nccl {}; this process: {}\n",
               dist::nccl_available() ? "yes" : "no (not built)",
               dist::Env::from_environment().describe());
    if (s.intra_op_threads == 1 && s.hardware_threads > 1)
      log::warn("only 1 intra-op thread on a machine with {} cores: set train.threads (or "
                "--threads) or unset OMP_NUM_THREADS",
                s.hardware_threads);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(info, add_info);
