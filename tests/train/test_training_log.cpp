// What --resume keeps of train-gates' CSV log: the rows before the checkpoint's step, the last
// written row of each step, their losses for the curve.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "test_support.h"
#include "train/training_log.h"

namespace seer {
namespace {

std::string row(int64_t step, double seconds) {
  return std::to_string(step) + "," + std::to_string(1.0 / double(step + 1)) + ",0.001,350000," +
         std::to_string(seconds);
}

TEST(TrainingLog, KeepsTheStepsBeforeTheCheckpoint) {
  test::TempDir dir;
  const std::string path = (dir.path() / "log.csv").string();
  EXPECT_TRUE(read_training_log(path, 10).rows.empty());  // no log yet
  {
    std::ofstream out(path);
    out << kTrainingLogHeader << '\n';
    for (int64_t s = 0; s < 7; ++s) out << row(s, double(s)) << '\n';  // killed after step 6
    for (int64_t s = 4; s < 9; ++s) out << row(s, 100.0 + double(s)) << '\n';  // an earlier resume at 4
  }
  const TrainingLog log = read_training_log(path, 6);  // resuming at step 6
  ASSERT_EQ(log.rows.size(), 6u);
  EXPECT_EQ(log.rows[3], row(3, 3.0));
  EXPECT_EQ(log.rows[4], row(4, 104.0));  // the later row of a repeated step
  EXPECT_EQ(log.rows[5], row(5, 105.0));
  ASSERT_EQ(log.losses.size(), 6u);
  EXPECT_DOUBLE_EQ(log.losses[5], std::stod(std::to_string(1.0 / 6.0)));
  EXPECT_DOUBLE_EQ(log.seconds, 105.0);
  EXPECT_EQ(read_training_log(path, 100).rows.size(), 9u);
  EXPECT_TRUE(read_training_log(path, 0).rows.empty());
}

TEST(TrainingLog, ReadsWhatKilledRunsAndOtherEditorsLeave) {
  test::TempDir dir;
  const std::string path = (dir.path() / "log.csv").string();
  const auto write = [&](const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
  };
  write(std::string(kTrainingLogHeader) + "\n");
  EXPECT_TRUE(read_training_log(path, 10).rows.empty());  // header only
  write(std::string(kTrainingLogHeader) + "\n" + row(0, 1) + "\n" + row(1, 2) + "\n2,0.4");  // killed mid-row
  EXPECT_EQ(read_training_log(path, 10).rows, (std::vector<std::string>{row(0, 1), row(1, 2)}));
  write(std::string(kTrainingLogHeader) + "\r\n" + row(0, 1) + "\r\n\r\n" + row(1, 2) + "\r\n\n");  // CRLF, blanks
  const TrainingLog crlf = read_training_log(path, 10);
  EXPECT_EQ(crlf.rows, (std::vector<std::string>{row(0, 1), row(1, 2)}));
  EXPECT_DOUBLE_EQ(crlf.seconds, 2.0);
  write("0,0.5,0.001,350000,1");  // one unfinished row, no header
  EXPECT_TRUE(read_training_log(path, 10).rows.empty());
}

TEST(TrainingLog, RejectsMalformedRows) {
  test::TempDir dir;
  const std::string path = (dir.path() / "log.csv").string();
  for (const char* bad : {"0,0.5,0.001,350000", "0,0.5,0.001,350000,1,2", "x,0.5,0.001,350000,1",
                          "-1,0.5,0.001,350000,1", "0,0.5,,350000,1", "0,0.5,0.001,350000,1 ",
                          "0;0.5;0.001;350000;1"}) {
    {
      std::ofstream out(path);
      out << kTrainingLogHeader << '\n' << bad << '\n';
    }
    EXPECT_THROW(read_training_log(path, 10), Error) << bad;
  }
}

}  // namespace
}  // namespace seer
