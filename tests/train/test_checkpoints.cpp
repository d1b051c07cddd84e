// Checkpoints of gates trained together: a run killed between two gates files' checkpoint writes
// resumes both at the step they share.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "train/checkpoints.h"

namespace seer {
namespace {

std::vector<GateWeights<float>> gates(uint64_t seed) {
  return {GateWeights<float>::random({{4, 2, 32}, 32, 64}, seed)};
}

// A step with a made-up gradient (the trainer's update is what matters here, not the loss).
void step(GateTrainer& t) {
  t.add_layer_gradient(0, 0.5, std::vector<float>(t.weights()[0].wk.size(), 1e-3f), {}, {});
  t.finish_step();
}

TEST(Checkpoints, ResumeAtTheStepEveryFileHas) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "seer_checkpoints_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string a = (dir / "a.checkpoint").string(), b = (dir / "b.checkpoint").string();
  const TrainOptions options{.steps = 10, .warmup = 1};
  GateTrainer ta(gates(1), options), tb(gates(2), options);
  EXPECT_THROW(common_checkpoint({a, b}), Error);  // nothing saved yet

  for (int s = 0; s < 2; ++s) {
    step(ta);
    step(tb);
  }
  save_rotating_checkpoint(ta, a, {});
  save_rotating_checkpoint(tb, b, {});
  {  // a trainer whose weights live on the device is refused before its checkpoint is moved aside
    GateTrainer elsewhere(gates(1), options);
    elsewhere.add_layer_kl(0, 0.5);
    elsewhere.finish_step_updated_elsewhere();
    EXPECT_THROW(save_rotating_checkpoint(elsewhere, a, {}), Error);
    EXPECT_TRUE(std::filesystem::exists(a));
    EXPECT_FALSE(std::filesystem::exists(a + ".prev"));
  }
  const std::vector<float> a_at_2 = ta.weights()[0].wk, b_at_2 = tb.weights()[0].wk;
  CommonCheckpoint common = common_checkpoint({a, b});
  EXPECT_EQ(common.step, 2);
  EXPECT_EQ(common.files, (std::vector<std::string>{a, b}));

  // Killed after a's checkpoint at step 4 and before b's: both resume at 2, a from its .prev.
  for (int s = 0; s < 2; ++s) {
    step(ta);
    step(tb);
  }
  save_rotating_checkpoint(ta, a, {});
  common = common_checkpoint({a, b});
  EXPECT_EQ(common.step, 2);
  EXPECT_EQ(common.files, (std::vector<std::string>{a + ".prev", b}));
  GateTrainer ra(gates(3), options), rb(gates(4), options);
  ra.resume(common.files[0]);
  rb.resume(common.files[1]);
  EXPECT_EQ(ra.step(), 2);
  EXPECT_EQ(rb.step(), 2);
  EXPECT_EQ(ra.weights()[0].wk, a_at_2);
  EXPECT_EQ(rb.weights()[0].wk, b_at_2);

  // Once b has saved step 4 too, both are at 4.
  save_rotating_checkpoint(tb, b, {});
  common = common_checkpoint({a, b});
  EXPECT_EQ(common.step, 4);
  EXPECT_EQ(common.files, (std::vector<std::string>{a, b}));

  // Files two checkpoints apart share no step (a at 8 and 6, b at 4 and 2).
  for (int s = 0; s < 2; ++s) step(ta);
  save_rotating_checkpoint(ta, a, {});
  for (int s = 0; s < 2; ++s) step(ta);
  save_rotating_checkpoint(ta, a, {});
  EXPECT_THROW(common_checkpoint({a, b}), Error);
  EXPECT_EQ(common_checkpoint({a}).step, 8);  // alone, a file resumes at its latest
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace seer
