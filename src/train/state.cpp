// TrainState and the training checkpoint's files: trainer.json, weights, optimizer
// moments, per-rank RNG states and the resolved config (see state.hpp).
#include "retclip/train/state.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstring>

#include "retclip/dist/comm.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using json = nlohmann::json;
using io::CheckpointFile;
using io::CheckpointLayout;

// ---- the state -------------------------------------------------------------------

void TrainState::count(const StepResult& r, int64_t max_consecutive_skips) {
  ++step;
  if (!r.skipped) {
    consecutive_skips = 0;
    return;
  }
  ++skipped;
  ++consecutive_skips;
  log::warn("step {}: non-finite loss or gradient (norm {}), step skipped ({} in a row)", step,
            r.grad_norm, consecutive_skips);
  if (consecutive_skips >= max_consecutive_skips)
    throw Error(str_cat("training stopped: ", consecutive_skips,
                        " consecutive steps with a non-finite loss or gradient "
                        "(train.max_skipped_steps). HINT: lower optim.lr, enable "
                        "optim.clip_norm, or check the data"));
}

// Field names are those of the checkpoints written before TrainState existed.
json TrainState::to_json() const {
  return json{{"step", step},
              {"skipped", skipped},
              {"consecutive_skips", consecutive_skips},
              {"loss_scale", scaler.scale},
              {"good_since_growth", scaler.good_steps},
              {"world_size", world_size},
              {"config_hash", config_hash},
              {"data", data}};
}

TrainState TrainState::from_json(const json& j, const std::string& origin) {
  TrainState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.skipped = j.at("skipped").get<int64_t>();
    s.consecutive_skips = j.at("consecutive_skips").get<int64_t>();
    s.scaler.scale = j.at("loss_scale").get<double>();
    s.scaler.good_steps = j.at("good_since_growth").get<int64_t>();
    s.data = j.at("data");
    s.world_size = j.value("world_size", int64_t{1});
    s.config_hash = j.value("config_hash", std::string());
  } catch (const json::exception& e) {
    throw UsageError(str_cat(origin, ": not a retclip trainer state (", e.what(),
                             "). HINT: resume from a checkpoint written by `retclip train`"));
  }
  return s;
}

// ---- checkpoint files --------------------------------------------------------------

namespace {

std::string tensor_bytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous().cpu();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

at::Tensor bytes_tensor(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::memcpy(t.data_ptr(), s.data(), s.size());
  return t;
}

at::Generator default_generator(const at::Device& device) {
  if (device.is_cuda()) return at::detail::getCUDAHooks().getDefaultGenerator(device.index());
  return at::detail::getDefaultCPUGenerator();
}

// Every rank's state of one generator, in rank order (collected by all-gather).
std::vector<std::string> gather_rng(dist::Comm& comm, const at::Device& device,
                                    const at::Device& generator_device) {
  const std::string mine = tensor_bytes(default_generator(generator_device).get_state());
  at::Tensor all = comm.all_gather(bytes_tensor(mine).to(device)).cpu();
  std::vector<std::string> out;
  for (const auto& part : all.chunk(comm.world())) out.push_back(tensor_bytes(part));
  return out;
}

}  // namespace

fs::path save_checkpoint(io::CheckpointStore& store, const TrainState& state,
                         const CheckpointParts& parts, dist::Comm& comm, int64_t epoch) {
  const std::vector<std::string> rng_cpu = gather_rng(comm, parts.device, at::kCPU);
  std::vector<std::string> rng_cuda;
  if (parts.device.is_cuda()) rng_cuda = gather_rng(comm, parts.device, parts.device);
  const bool writer = comm.rank() == 0;
  if (!writer) {
    comm.barrier();
    return store.dir();
  }
  const int64_t step = state.step;
  std::vector<CheckpointFile> files;
  files.push_back(CheckpointFile::writer(CheckpointLayout::kWeights, [&](const fs::path& path) {
    io::save_weights(path, io::module_state_dict(parts.model), {{"format", "retclip"}});
    fault_point("RETCLIP_FAULT_KILL_IN_CHECKPOINT", step);
  }));
  files.push_back(CheckpointFile::writer(CheckpointLayout::kOptimizer, [&](const fs::path& path) {
    save_optimizer_state(parts.optimizer, path);
  }));
  files.push_back(CheckpointFile::bytes(CheckpointLayout::kTrainerState, state.to_json().dump(2)));
  for (size_t r = 0; r < rng_cpu.size(); ++r)
    files.push_back(
        CheckpointFile::bytes(CheckpointLayout::rng_file("cpu", static_cast<int>(r)), rng_cpu[r]));
  for (size_t r = 0; r < rng_cuda.size(); ++r)
    files.push_back(CheckpointFile::bytes(CheckpointLayout::rng_file("cuda", static_cast<int>(r)),
                                          rng_cuda[r]));
  files.push_back(CheckpointFile::bytes(CheckpointLayout::kConfig, parts.config_yaml));
  const fs::path p =
      store.save(step, files, json{{"step", step}, {"epoch", epoch}, {"world_size", comm.world()}});
  log::info("checkpoint {} written", p.string());
  comm.barrier();
  return p;
}

TrainState load_checkpoint(const io::CheckpointInfo& ck, const CheckpointParts& parts,
                           const dist::Comm& comm, uint64_t seed) {
  const fs::path& p = ck.path;
  io::apply_state_dict(parts.model, io::load_weights(p / CheckpointLayout::kWeights), true);
  load_optimizer_state_file(parts.optimizer, p / CheckpointLayout::kOptimizer);
  const fs::path state_file = p / CheckpointLayout::kTrainerState;
  TrainState s =
      TrainState::from_json(json::parse(util::read_file(state_file)), state_file.string());
  // Each rank's random state, when the checkpoint has one for this rank.
  const fs::path rng_cpu = p / CheckpointLayout::rng_file("cpu", comm.rank());
  const fs::path rng_cuda = p / CheckpointLayout::rng_file("cuda", comm.rank());
  if (fs::exists(rng_cpu)) {
    default_generator(at::kCPU).set_state(bytes_tensor(util::read_file(rng_cpu)));
  } else {
    torch::manual_seed(seed + 7919 * static_cast<uint64_t>(s.step) + comm.rank());
    log::warn("checkpoint has no random state for rank {}: dropout reseeded", comm.rank());
  }
  if (parts.device.is_cuda() && fs::exists(rng_cuda))
    default_generator(parts.device).set_state(bytes_tensor(util::read_file(rng_cuda)));
  if (s.world_size != comm.world())
    log::warn("checkpoint was written with world size {}, resuming with {} at global sample {}",
              s.world_size, comm.world(), s.data.dump());
  log::info("resumed from {} at step {}", p.string(), s.step);
  return s;
}

std::vector<std::string> resume_config_changes(const std::string& checkpoint_yaml,
                                               const config::Config& now) {
  auto ignored = [](const std::string& key) {
    return key.rfind("log.", 0) == 0 || key.rfind("checkpoint.", 0) == 0;
  };
  // The run's length sets the learning-rate schedule (warmup, then cosine to the last
  // step): a changed length is allowed, and said, since the schedule bends from here on.
  auto length = [](const std::string& key) {
    return key == "train.steps" || key == "train.epochs" || key == "finetune.steps" ||
           key == "finetune.epochs";
  };
  std::vector<std::string> out;
  const config::Config before = config::load_string(checkpoint_yaml, "checkpoint config.yaml");
  for (const auto& c : config::diff(before, now)) {
    if (ignored(c.key)) continue;
    out.push_back(fmt::format("{}: {} -> {}{}", c.key, c.before, c.after,
                              length(c.key) ? " (the learning-rate schedule follows the new "
                                              "length from here on)"
                                            : ""));
  }
  return out;
}

void fault_point(const char* var, int64_t step) {
  const char* env = std::getenv(var);
  if (!env || std::stoll(env) != step) return;
  const char* only = std::getenv("RETCLIP_FAULT_RANK");
  const char* rank = std::getenv("RANK");
  if (only && *only && std::string(only) != (rank ? rank : "0")) return;
  ::kill(::getpid(), SIGKILL);
}

}  // namespace retclip::train
