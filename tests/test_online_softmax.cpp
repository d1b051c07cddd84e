// The online softmax's running-max step that the CUDA kernels use (attention/online_softmax.h), on
// the CPU: its corners (nothing visible yet, a masked tile, the edge of the slack) and, over
// magnitudes up to 2^60, that no tile is left more than the slack above the exponents' base, where
// P = 2^(s - base) of 2^16 or more would overflow fp16.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attention/online_softmax.h"

namespace seer {
namespace {

TEST(OnlineSoftmax, TheFirstVisibleTileMovesTheMaxFromMinusInfinity) {
  for (const bool wide : {true, false}) {
    const auto step = [&](float tile, float& row_max, float& base) {
      return wide ? step_row_max<128>(tile, row_max, base) : step_row_max<64>(tile, row_max, base);
    };
    float row_max = -INFINITY, base = 123.f;
    // O and the sum hold nothing yet: any factor will do (1 with the slack, 2^-inf = 0 without) but NaN.
    EXPECT_FALSE(std::isnan(step(-INFINITY, row_max, base))) << "a fully masked first tile";
    EXPECT_EQ(row_max, -INFINITY);
    EXPECT_EQ(base, 0.f) << "2^(-inf - base) must be 0, not NaN";
    EXPECT_EQ(step(5.f, row_max, base), 0.f) << "O and the sum held nothing: rescaled by 2^-inf";
    EXPECT_EQ(row_max, 5.f);
    EXPECT_EQ(base, 5.f);
  }
}

TEST(OnlineSoftmax, AtHeadDim128TheMaxMovesOnlyPastTheSlack) {
  float row_max = 3.f, base = 0.f;
  EXPECT_EQ(step_row_max<128>(3.f + kRescaleSlack<128>, row_max, base), 1.f) << "exactly the slack: stays";
  EXPECT_EQ(row_max, 3.f);
  EXPECT_EQ(base, 3.f);
  EXPECT_EQ(step_row_max<128>(-INFINITY, row_max, base), 1.f) << "a masked tile";
  EXPECT_EQ(row_max, 3.f);
  EXPECT_FLOAT_EQ(step_row_max<128>(11.5f, row_max, base), std::exp2(3.f - 11.5f));
  EXPECT_EQ(row_max, 11.5f);
  EXPECT_EQ(base, 11.5f);
}

TEST(OnlineSoftmax, AtHeadDim64TheMaxIsTheTrueMax) {
  float row_max = 3.f, base = 0.f;
  EXPECT_FLOAT_EQ(step_row_max<64>(3.5f, row_max, base), std::exp2(-0.5f));
  EXPECT_EQ(row_max, 3.5f);
  EXPECT_EQ(step_row_max<64>(1.f, row_max, base), 1.f);
  EXPECT_EQ(row_max, 3.5f);
  EXPECT_EQ(base, 3.5f);
}

// After each step, tile_max - base <= slack, exactly (in double). The test as `tile_max > row_max +
// slack` failed it from 2^27 up: there the sum, rounded to nearest (half to even), can land 16 above
// row_max, and a tile 16 above was left with P = 2^16.
TEST(OnlineSoftmax, NoTileIsLeftMoreThanTheSlackAboveTheBase) {
  const auto check = [](float row_max, float tile) {
    float moved = row_max, base = 0.f;
    step_row_max<128>(tile, moved, base);
    EXPECT_LE(double(tile) - double(base), double(kRescaleSlack<128>))
        << "row max " << row_max << ", tile " << tile << ": P = 2^" << double(tile) - double(base);
    EXPECT_GE(moved, row_max) << "the running max never goes down";
  };
  check(134217744.f, 134217760.f);  // 2^27 + 16 (an odd mantissa at an ulp of 16), a tile 16 higher
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> exponent(-10, 60), ulps(0, 40);
  std::uniform_real_distribution<float> mantissa(1.f, 2.f), gap(0.f, 24.f);
  for (int trial = 0; trial < 100000; ++trial) {
    const float row_max = std::ldexp(mantissa(rng), exponent(rng)) * (rng() & 1 ? 1.f : -1.f);
    float tile = row_max;  // a few ulps above: where rounding decides
    for (int u = ulps(rng); u > 0; --u) tile = std::nextafter(tile, INFINITY);
    check(row_max, tile);
    check(row_max, row_max + gap(rng));  // within and past the slack at small magnitudes
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
}  // namespace seer
