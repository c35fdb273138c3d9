// Private to the io module: reads `torch.save` zip archives with a small pickle
// interpreter of our own. LibTorch's unpickler turns collections.OrderedDict (the type
// of every nn.Module.state_dict()) into None, so it cannot read ordinary checkpoints.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "retclip/io/state_dict.hpp"

namespace retclip::io::detail {

/// Tensors of a torch.save zip archive (data.pkl + data/<key> records). Nested
/// {"state_dict"|"model"|"module"|"model_state_dict": ...} entries are unwrapped,
/// non-tensor values skipped, unknown Python classes tolerated (kept as opaque
/// objects) unless they hold the tensors. Throws UsageError naming the file.
StateDict load_torch_zip(const std::filesystem::path& path);

/// Reads the record named `name` ("data/<key>") of the archive; throws when absent.
using RecordLoader = std::function<std::string(const std::string& name)>;

/// The part of load_torch_zip after the zip: interprets `pickle` (data.pkl) and collects
/// the state dict. Exposed so that tests can feed it damaged pickles.
StateDict unpickle_state_dict(std::string_view pickle, const RecordLoader& load_record,
                              const std::string& where);

}  // namespace retclip::io::detail
