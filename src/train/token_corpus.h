// Training text as fixed-length token sequences: every file of the given paths (folders are walked,
// files sorted by path) is a document, tokenized with BOS in front; the documents' tokens are
// concatenated and cut into sequences of `length` tokens (the tail that does not fill one is
// dropped). Steps draw sequences in a seeded random order, so a resumed run sees the same data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace seer {

class TokenCorpus {
 public:
  static TokenCorpus load(const std::vector<std::string>& paths, const Tokenizer& tokenizer, int64_t length);

  int64_t sequences() const { return int64_t(order_.size()); }
  int64_t length() const { return length_; }
  int64_t documents() const { return documents_; }
  int64_t tokens() const { return int64_t(tokens_.size()); }
  // The `count` sequences of training step `step`, concatenated ([count * length] tokens); the
  // sequence order is a permutation drawn from `seed`, cycled when steps outrun the corpus.
  std::vector<int32_t> batch(int64_t step, int64_t count, uint64_t seed) const;

 private:
  std::vector<int32_t> tokens_;
  std::vector<int64_t> order_;
  int64_t length_ = 0, documents_ = 0;
};

// Regular files under each path (a file itself, or a folder walked recursively), sorted.
std::vector<std::string> list_text_files(const std::vector<std::string>& paths);

// Evaluation windows: the first `per_file` whole windows of `context` tokens of each file (BOS at
// each file's start), in file order, at most `max_windows` in all (0: no limit).
std::vector<std::vector<int32_t>> text_windows(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                                               int64_t context, int64_t per_file, int64_t max_windows = 0);

}  // namespace seer
