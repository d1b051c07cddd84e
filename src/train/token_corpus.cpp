#include "train/token_corpus.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>

#include "core/error.h"
#include "formats/mapped_file.h"

namespace seer {

std::vector<std::string> list_text_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    SEER_CHECK(fs::exists(p), "training data path '", p, "' does not exist");
    if (fs::is_regular_file(p)) {
      files.push_back(p);
      continue;
    }
    for (const auto& entry : fs::recursive_directory_iterator(p))
      if (entry.is_regular_file() && entry.path().filename() != "MANIFEST.tsv") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  SEER_CHECK(!files.empty(), "no text files under the training data paths");
  return files;
}

namespace {
// A text file's tokens, BOS first (one document); a corpus file may be as large as it is.
std::vector<int32_t> encode_file(const std::string& file, const Tokenizer& tokenizer) {
  return tokenizer.encode(read_text_file(file, std::numeric_limits<size_t>::max()), /*add_bos=*/true);
}
}  // namespace

std::vector<std::vector<int32_t>> text_windows(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                                               int64_t context, int64_t per_file, int64_t max_windows) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& file : list_text_files(paths)) {
    if (max_windows > 0 && int64_t(out.size()) >= max_windows) break;
    const std::vector<int32_t> ids = encode_file(file, tokenizer);
    for (int64_t w = 0; w < per_file && (w + 1) * context <= int64_t(ids.size()); ++w) {
      if (max_windows > 0 && int64_t(out.size()) >= max_windows) break;
      out.emplace_back(ids.begin() + w * context, ids.begin() + (w + 1) * context);
    }
  }
  SEER_CHECK(!out.empty(), "no text window of ", context, " tokens in the given files");
  return out;
}

TokenCorpus TokenCorpus::load(const std::vector<std::string>& paths, const Tokenizer& tokenizer, int64_t length) {
  SEER_CHECK(length >= 64, "training sequence length must be at least 64, got ", length);
  TokenCorpus corpus;
  corpus.length_ = length;
  for (const std::string& file : list_text_files(paths)) {
    const std::vector<int32_t> ids = encode_file(file, tokenizer);
    corpus.tokens_.insert(corpus.tokens_.end(), ids.begin(), ids.end());
    ++corpus.documents_;
  }
  const int64_t count = int64_t(corpus.tokens_.size()) / length;
  SEER_CHECK(count > 0, "the training data has ", corpus.tokens_.size(), " tokens, fewer than one sequence of ",
             length);
  corpus.order_.resize(size_t(count));
  std::iota(corpus.order_.begin(), corpus.order_.end(), 0);
  return corpus;
}

std::vector<int32_t> TokenCorpus::batch(int64_t step, int64_t count, uint64_t seed) const {
  std::vector<int64_t> order = order_;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  std::vector<int32_t> out;
  out.reserve(size_t(count * length_));
  for (int64_t b = 0; b < count; ++b) {
    const int64_t index = order[size_t((step * count + b) % int64_t(order.size()))];
    out.insert(out.end(), tokens_.begin() + index * length_, tokens_.begin() + (index + 1) * length_);
  }
  return out;
}

}  // namespace seer
