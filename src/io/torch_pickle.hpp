// Private to the io module: reads `torch.save` zip archives with a small pickle
// interpreter of our own. LibTorch's unpickler turns collections.OrderedDict (the type
// of every nn.Module.state_dict()) into None, so it cannot read ordinary checkpoints.
#pragma once

#include <filesystem>

#include "retclip/io/state_dict.hpp"

namespace retclip::io::detail {

/// Tensors of a torch.save zip archive (data.pkl + data/<key> records). Nested
/// {"state_dict"|"model"|"module"|"model_state_dict": ...} entries are unwrapped,
/// non-tensor values skipped, unknown Python classes tolerated (kept as opaque
/// objects) unless they hold the tensors. Throws UsageError naming the file.
StateDict load_torch_zip(const std::filesystem::path& path);

}  // namespace retclip::io::detail
