//===- BenchTest.cpp - Tests of the benchmarks' pure parts ----------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//
//
// Call patterns and statistics only: the measurements themselves are
// benchmarks, and tests never assert timings.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Benchmark.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace dispatchgen::bench;

namespace {

TEST(PatternTest, OneHotSelectsOnlyTheFirstProgram) {
  std::vector<uint32_t> P = makePattern(Pattern::PT_OneHot, 48, 1024);
  ASSERT_EQ(P.size(), 1024u);
  EXPECT_TRUE(
      std::all_of(P.begin(), P.end(), [](uint32_t X) { return X == 0; }));
}

TEST(PatternTest, RoundRobinVisitsEveryProgramInTurn) {
  std::vector<uint32_t> P = makePattern(Pattern::PT_RoundRobin, 5, 12);
  EXPECT_EQ(P, (std::vector<uint32_t>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1}));
}

TEST(PatternTest, SameSeedGivesSamePattern) {
  for (Pattern Pt : {Pattern::PT_Uniform, Pattern::PT_Zipf}) {
    EXPECT_EQ(makePattern(Pt, 48, 4096, 7), makePattern(Pt, 48, 4096, 7));
    EXPECT_NE(makePattern(Pt, 48, 4096, 7), makePattern(Pt, 48, 4096, 8));
  }
}

TEST(PatternTest, UniformStaysInRangeAndCoversEveryProgram) {
  std::vector<uint32_t> P = makePattern(Pattern::PT_Uniform, 16, 1u << 14);
  std::vector<uint64_t> F = frequencies(P, 16);
  for (uint64_t Count : F) {
    // Expected 1024 each; a fair draw is far inside these bounds.
    EXPECT_GT(Count, 800u);
    EXPECT_LT(Count, 1250u);
  }
}

TEST(ZipfTest, ProbabilitiesSumToOneAndFallAsRankToTheMinusS) {
  std::vector<double> P = zipfProbabilities(100, ZipfExponent);
  EXPECT_NEAR(std::accumulate(P.begin(), P.end(), 0.0), 1.0, 1e-12);
  EXPECT_NEAR(P[0] / P[1], std::pow(2.0, ZipfExponent), 1e-9);
  EXPECT_NEAR(P[0] / P[9], std::pow(10.0, ZipfExponent), 1e-9);
  EXPECT_TRUE(std::is_sorted(P.rbegin(), P.rend()));
}

TEST(ZipfTest, PatternFrequenciesFollowTheDistribution) {
  constexpr unsigned N = 48;
  constexpr size_t Length = 1u << 18;
  std::vector<uint64_t> F =
      frequencies(makePattern(Pattern::PT_Zipf, N, Length), N);
  std::vector<uint64_t> Sorted = F;
  std::sort(Sorted.rbegin(), Sorted.rend());
  std::vector<double> P = zipfProbabilities(N, ZipfExponent);
  for (unsigned Rank : {0u, 1u, 4u, 20u})
    EXPECT_NEAR(static_cast<double>(Sorted[Rank]) / Length, P[Rank],
                0.1 * P[Rank])
        << "rank " << Rank + 1;
  // The hot programs are spread over the set, not the first ones.
  EXPECT_NE(std::max_element(F.begin(), F.end()) - F.begin(), 0);
}

TEST(FrequenciesTest, CountsEachIndexAndIgnoresOutOfRange) {
  EXPECT_EQ(frequencies({0, 2, 2, 7, 1, 2}, 3),
            (std::vector<uint64_t>{1, 1, 3}));
}

TEST(StatisticsTest, MedianOfOddAndEvenCounts) {
  EXPECT_EQ(median({}), 0);
  EXPECT_EQ(median({5}), 5);
  EXPECT_EQ(median({9, 1, 5}), 5);
  // The upper of the two middle samples.
  EXPECT_EQ(median({4, 1, 3, 2}), 3);
}

TEST(StatisticsTest, PercentileIsNearestRank) {
  std::vector<double> Samples(100);
  std::iota(Samples.begin(), Samples.end(), 1.0); // 1..100
  std::reverse(Samples.begin(), Samples.end());
  EXPECT_EQ(percentile(Samples, 0.99), 99);
  EXPECT_EQ(percentile(Samples, 0.50), 50);
  EXPECT_EQ(percentile(Samples, 1.0), 100);
  // With fewer than 100 samples p99 is the maximum.
  EXPECT_EQ(percentile({3, 1, 2}, 0.99), 3);
  EXPECT_EQ(percentile({}, 0.99), 0);
}

} // namespace
