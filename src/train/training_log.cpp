#include "train/training_log.h"

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace seer {

TrainingLog read_training_log(const std::string& path, int64_t steps) {
  TrainingLog log;
  if (!std::filesystem::exists(path)) return log;
  std::ifstream in(path, std::ios::binary);
  SEER_CHECK(in.good(), "cannot read '", path, "'");
  std::ostringstream whole;
  whole << in.rdbuf();
  std::string text = whole.str();
  // A run killed while writing leaves its last row without the newline: that step is done again.
  if (const size_t end = text.rfind('\n'); end + 1 != text.size()) {
    std::fprintf(stderr, "train-gates: %s: dropping an unfinished last row\n", path.c_str());
    text.resize(end == std::string::npos ? 0 : end + 1);
  }
  std::vector<int64_t> row_steps;
  std::vector<double> row_seconds;
  std::istringstream lines(text);
  std::string line;
  for (int64_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line == kTrainingLogHeader)) continue;
    // step, loss, lr, tokens/s, seconds: an integer and four reals, comma-separated.
    int64_t step = -1;
    double fields[5] = {};
    const char* p = line.data();
    const char* const end = line.data() + line.size();
    bool ok = true;
    for (int f = 0; f < 5 && ok; ++f) {
      const std::from_chars_result r = f == 0 ? std::from_chars(p, end, step) : std::from_chars(p, end, fields[f]);
      ok = r.ec == std::errc() && (f < 4 ? r.ptr < end && *r.ptr == ',' : r.ptr == end);
      p = r.ptr + 1;
    }
    SEER_CHECK(ok && step >= 0, path, ":", line_no, ": not a training log row (", kTrainingLogHeader, "): '", line,
               "'");
    // A step at or before the last one starts the rows of an earlier resume: they replace what they repeat.
    while (!row_steps.empty() && row_steps.back() >= step) {
      row_steps.pop_back();
      row_seconds.pop_back();
      log.rows.pop_back();
      log.losses.pop_back();
    }
    if (step >= steps) continue;
    row_steps.push_back(step);
    row_seconds.push_back(fields[4]);
    log.rows.push_back(line);
    log.losses.push_back(fields[1]);
  }
  log.seconds = row_seconds.empty() ? 0.0 : row_seconds.back();
  return log;
}

}  // namespace seer
