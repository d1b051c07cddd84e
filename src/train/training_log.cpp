#include "train/training_log.h"

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "formats/mapped_file.h"

namespace seer {

TrainingLog read_training_log(const std::string& path, int64_t steps) {
  TrainingLog log;
  if (!std::filesystem::exists(path)) return log;
  std::string text = read_text_file(path, std::numeric_limits<size_t>::max());
  // A run killed while writing leaves its last row without the newline: that step is done again.
  if (const size_t end = text.rfind('\n'); end + 1 != text.size()) {
    std::fprintf(stderr, "train-gates: %s: dropping an unfinished last row\n", path.c_str());
    text.resize(end == std::string::npos ? 0 : end + 1);
  }
  struct Row {
    int64_t step;
    double loss, seconds;
    std::string text;
  };
  std::vector<Row> kept;
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
    while (!kept.empty() && kept.back().step >= step) kept.pop_back();
    if (step < steps) kept.push_back(Row{step, fields[1], fields[4], line});
  }
  for (Row& row : kept) {
    log.rows.push_back(std::move(row.text));
    log.losses.push_back(row.loss);
  }
  log.seconds = kept.empty() ? 0.0 : kept.back().seconds;
  return log;
}

}  // namespace seer
