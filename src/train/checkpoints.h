// Checkpoints of gates trained together (`seer train-gates --variant`). Every gates file's
// checkpoint is written at the same steps, one file after another, so a run killed between two of
// the writes leaves them a checkpoint apart. Each write therefore first moves the file's last
// checkpoint to <path>.prev, and a resume continues from the latest step that every gates file has
// in one of the two.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "train/gate_trainer.h"

namespace seer {

// trainer.save(path, metadata, with the optimizer), the checkpoint at `path` moved to path + ".prev"
// first.
void save_rotating_checkpoint(const GateTrainer& trainer, const std::string& path,
                              const std::map<std::string, std::string>& metadata);

struct CommonCheckpoint {
  int64_t step = 0;
  std::vector<std::string> files;  // per path: the path itself or its .prev
};

// The latest step at which every one of `paths` has a checkpoint (the file or its .prev), and
// those files. Throws if a path has neither or they share no step.
CommonCheckpoint common_checkpoint(const std::vector<std::string>& paths);

}  // namespace seer
