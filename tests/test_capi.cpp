// The C interface's refusals that need no GPU (CI runs these): bad sequence lengths and head counts
// give NULL and a message, calls without a layout fail, and messages are truncated to the
// caller's buffer. tests/cuda/test_capi_cuda.cpp checks the calls themselves on a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "capi/seer_attention.h"

namespace {

TEST(Capi, LayoutRefusesBadShapes) {
  char error[256];
  const int64_t good[] = {100, 7}, zero[] = {100, 0};
  error[0] = '\0';
  EXPECT_EQ(seer_layout_create(good, 0, 4, error, sizeof error), nullptr);
  EXPECT_NE(std::string(error).find("at least one sequence"), std::string::npos) << error;
  EXPECT_EQ(seer_layout_create(nullptr, 2, 4, error, sizeof error), nullptr);
  error[0] = '\0';
  EXPECT_EQ(seer_layout_create(good, 2, 0, error, sizeof error), nullptr);
  EXPECT_NE(std::string(error).find("q_heads"), std::string::npos) << error;
  error[0] = '\0';
  EXPECT_EQ(seer_layout_create(zero, 2, 4, error, sizeof error), nullptr);
  EXPECT_GT(std::strlen(error), 0u);
  EXPECT_EQ(seer_layout_create(zero, 2, 4, nullptr, 0), nullptr);  // no buffer: still refused
  seer_layout_destroy(nullptr);
}

TEST(Capi, DenseForwardRefusesNoLayoutAndTruncatesItsMessage) {
  char error[8];
  std::memset(error, 'x', sizeof error);
  EXPECT_EQ(seer_dense_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, SEER_BF16, 8, 2, 128, nullptr,
                               error, sizeof error),
            -1);
  EXPECT_EQ(std::string(error), std::string("seer_de"));  // 7 characters and the terminator
}

TEST(Capi, MaskAndBlockSparseRefuseNoLayout) {
  char error[256];
  const int64_t indptr[] = {0, 1};
  const int32_t indices[] = {0};
  EXPECT_EQ(seer_mask_create(nullptr, indptr, 1, indices, error, sizeof error), nullptr);
  EXPECT_NE(std::string(error).find("no layout"), std::string::npos) << error;
  EXPECT_EQ(seer_block_sparse_forward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, SEER_BF16, 8, 2,
                                      128, nullptr, error, sizeof error),
            -1);
  EXPECT_NE(std::string(error).find("no layout"), std::string::npos) << error;
  seer_mask_destroy(nullptr);
}

}  // namespace
