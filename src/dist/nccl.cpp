// ProcessGroupNCCL construction; compiled with USE_C10D_NCCL when nccl.h was found
// (the nvidia-nccl wheel next to torch), otherwise a stub that reports its absence.
#include "retclip/dist/comm.hpp"
#include "retclip/util/error.hpp"

#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace retclip::dist {

#ifdef USE_C10D_NCCL
bool nccl_available() { return true; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int world,
                                                    std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
}
#else
bool nccl_available() { return false; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int,
                                                    int, std::chrono::milliseconds) {
  throw Error("this retclip build has no NCCL backend (nccl.h was not found at configure time)");
}
#endif

}  // namespace retclip::dist
