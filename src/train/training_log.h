// The CSV log of `seer train-gates`, one row per optimizer step, and what --resume keeps of it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seer {

inline constexpr const char* kTrainingLogHeader = "step,loss,lr,tokens_per_second,seconds";

struct TrainingLog {
  std::vector<std::string> rows;  // as written, without the header
  std::vector<double> losses;     // the rows' losses, for the curve
  double seconds = 0;             // the last kept row's elapsed time
};

// The rows of the log at `path` for the steps before `steps`, the step a checkpoint resumes at: a
// killed run may have logged steps after its last checkpoint, which the resumed run does again. Where
// steps go backwards (an earlier resume appended to the log), the later rows replace those they
// repeat. A last row without its newline (the run was killed while writing it) is dropped with a
// warning; blank lines and CRLF endings are read. A missing file is an empty log; any other row that
// is not five numbers is an error naming its line.
TrainingLog read_training_log(const std::string& path, int64_t steps);

}  // namespace seer
