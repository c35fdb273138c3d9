// ProcessGroupGloo construction. Its header includes Gloo's, which the torch wheel does
// not ship: scripts/fetch_gloo.sh puts Debian's libgloo-dev headers under .deps/gloo
// (headers only; the Gloo code used is the one inside libtorch_cpu).
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "backends.hpp"

namespace retclip::dist {

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int world,
                                                    std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  // The device for the interface the hostname resolves to (loopback on one machine);
  // GLOO_SOCKET_IFNAME picks an interface explicitly, as in PyTorch.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
}

}  // namespace retclip::dist
