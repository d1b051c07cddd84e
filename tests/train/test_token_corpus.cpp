#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "train/token_corpus.h"

namespace seer {
namespace {

namespace fs = std::filesystem;

TEST(TokenCorpus, PacksDocumentsWithBosAndDrawsDeterministicBatches) {
  const Tokenizer tok = Tokenizer::from_json_file(SEER_TEST_DATA_DIR "/tokenizer/smollm2/tokenizer.json");
  const fs::path dir = fs::temp_directory_path() / "seer_corpus_test";
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  std::string text;
  for (int i = 0; i < 300; ++i) text += "It was a truth universally acknowledged, number " + std::to_string(i) + ". ";
  std::ofstream(dir / "b.txt") << text;
  std::ofstream(dir / "sub" / "a.txt") << text;
  std::ofstream(dir / "MANIFEST.tsv") << "ignored\n";
  const TokenCorpus corpus = TokenCorpus::load({dir.string()}, tok, 128);
  EXPECT_EQ(corpus.documents(), 2);
  const int64_t per_doc = int64_t(tok.encode(text, true).size());
  EXPECT_EQ(corpus.tokens(), 2 * per_doc);
  EXPECT_EQ(corpus.sequences(), 2 * per_doc / 128);
  const std::vector<int32_t> a = corpus.batch(3, 2, 7), b = corpus.batch(3, 2, 7), c = corpus.batch(3, 2, 8);
  EXPECT_EQ(a.size(), 256u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Every sequence of one epoch appears once: the BOS of the second document is in exactly one.
  int bos_seen = 0;
  for (int64_t step = 0; step < corpus.sequences(); ++step)
    for (int32_t id : corpus.batch(step, 1, 7)) bos_seen += id == tok.bos();
  EXPECT_GE(bos_seen, 1);
  EXPECT_LE(bos_seen, 2);
  EXPECT_THROW(TokenCorpus::load({(dir / "missing").string()}, tok, 128), Error);
  EXPECT_THROW(TokenCorpus::load({dir.string()}, tok, 1 << 20), Error);  // not one full sequence
  fs::remove_all(dir);
}

}  // namespace
}  // namespace seer
