#include "train/checkpoints.h"

#include <filesystem>

#include "core/error.h"
#include "formats/safetensors.h"

namespace seer {

void save_rotating_checkpoint(const GateTrainer& trainer, const std::string& path,
                              const std::map<std::string, std::string>& metadata) {
  // A trainer whose weights live on the device would refuse to save: refuse before the rename.
  SEER_CHECK(trainer.host_state_current(), path, ": the gate trainer's weights live elsewhere (the device)");
  if (std::filesystem::exists(path)) std::filesystem::rename(path, path + ".prev");  // atomic, replaces .prev
  trainer.save(path, metadata, true);
}

CommonCheckpoint common_checkpoint(const std::vector<std::string>& paths) {
  SEER_CHECK(!paths.empty(), "no checkpoints to resume");
  std::vector<std::map<int64_t, std::string>> found;  // per path: its files by step
  for (const std::string& path : paths) {
    std::map<int64_t, std::string>& files = found.emplace_back();
    for (const std::string& file : {path + ".prev", path})
      if (std::filesystem::exists(file)) files[GateTrainer::checkpoint_step(SafetensorsFile::open(file), file)] = file;
    SEER_CHECK(!files.empty(), "no checkpoint ", path, " (nor ", path, ".prev) to resume from");
  }
  CommonCheckpoint common{-1, {}};
  for (const auto& [step, file] : found.front()) {
    bool everywhere = true;
    for (const auto& files : found) everywhere = everywhere && files.count(step);
    if (everywhere) common.step = step;
  }
  SEER_CHECK(common.step >= 0, "the checkpoints of ", paths.front(), " and the gates trained with it share no step");
  for (const auto& files : found) common.files.push_back(files.at(common.step));
  return common;
}

}  // namespace seer
