// ProcessGroupNCCL construction, when CMake found nccl.h (the nvidia-nccl wheel next to
// torch) and torch_cuda: RETCLIP_WITH_NCCL. A build without them has no NCCL backend:
// dist.backend=nccl is then refused with an error that says so (CPU builds use Gloo).
// (Torch's CMake target defines USE_C10D_NCCL for every user, so it cannot tell.)
#include "backends.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/util/error.hpp"

#ifdef RETCLIP_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace retclip::dist {

#ifdef RETCLIP_WITH_NCCL
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
