//===- DispatchLayoutTest.cpp - Tests for DispatchLayout ------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchLayout.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <cmath>
#include <random>

using namespace dispatchgen;
using namespace llvm;

namespace {

using NodeKind = DispatchLayout::NodeKind;

/// N cases with keys 0x1000 apart, in shuffled order, weighted by Weight(I)
/// for the case of the I-th lowest key.
template <typename WeightFn>
std::vector<LayoutCase> makeCases(size_t N, WeightFn Weight,
                                  unsigned Seed = 1) {
  std::vector<LayoutCase> Cases;
  for (size_t I = 0; I < N; ++I)
    Cases.push_back({0x1000 * (I + 1), static_cast<uint64_t>(Weight(I))});
  std::mt19937_64 Rng(Seed);
  std::shuffle(Cases.begin(), Cases.end(), Rng);
  return Cases;
}

/// Where a selector goes under L: the case it reaches, or nothing for the
/// fallback. Follows the layout's semantics, not any lowering.
std::optional<uint32_t> route(const DispatchLayout &L,
                              ArrayRef<LayoutCase> Cases, uint64_t Sel) {
  for (uint32_t C : L.prefix())
    if (Cases[C].Key == Sel)
      return C;
  uint32_t Index = 0;
  while (true) {
    const DispatchLayout::Node &N = L.node(Index);
    if (N.Kind == NodeKind::Chain) {
      for (uint32_t C : N.Cases)
        if (Cases[C].Key == Sel)
          return C;
      return std::nullopt;
    }
    size_t J = 0;
    while (J < N.Cases.size() && !(Sel < Cases[N.Cases[J]].Key))
      ++J;
    Index = N.Children[J];
  }
}

/// Every case is tested exactly once and every key reaches its case; keys
/// next to the cases reach the fallback.
void expectRoutesEverything(const DispatchLayout &L,
                            ArrayRef<LayoutCase> Cases) {
  std::vector<unsigned> Tested(Cases.size());
  for (uint32_t C : L.prefix())
    ++Tested[C];
  for (size_t I = 0; I < L.numNodes(); ++I)
    if (L.node(I).Kind == NodeKind::Chain)
      for (uint32_t C : L.node(I).Cases)
        ++Tested[C];
  for (size_t C = 0; C < Cases.size(); ++C) {
    EXPECT_EQ(Tested[C], 1u) << "case " << C;
    EXPECT_EQ(route(L, Cases, Cases[C].Key), std::optional<uint32_t>(C));
    EXPECT_EQ(route(L, Cases, Cases[C].Key + 1), std::nullopt);
    EXPECT_EQ(route(L, Cases, Cases[C].Key - 1), std::nullopt);
  }
}

/// The cases of L's chains below the root, in test order.
std::vector<uint32_t> chainCases(const DispatchLayout &L) {
  std::vector<uint32_t> Out;
  for (size_t I = 0; I < L.numNodes(); ++I)
    if (L.node(I).Kind == NodeKind::Chain)
      append_range(Out, L.node(I).Cases);
  return Out;
}

TEST(DispatchLayoutTest, UnweightedCasesAreBisectedDownToChainsOfThree) {
  for (size_t N : {0u, 1u, 3u, 4u, 6u, 48u, 1000u}) {
    SCOPED_TRACE(N);
    auto Cases = makeCases(N, [](size_t) { return 0; });
    DispatchLayout L = DispatchLayout::choose(Cases);
    EXPECT_EQ(L.shape(), DispatchLayout::Shape::Bisect);
    EXPECT_TRUE(L.prefix().empty());
    for (size_t I = 0; I < L.numNodes(); ++I) {
      const DispatchLayout::Node &Node = L.node(I);
      if (Node.Kind == NodeKind::Chain) {
        EXPECT_LE(Node.Cases.size(), 3u);
        // Key order: the chain after a bisection starts with its bound.
        EXPECT_TRUE(is_sorted(Node.Cases, [&](uint32_t A, uint32_t B) {
          return Cases[A].Key < Cases[B].Key;
        }));
      } else {
        EXPECT_EQ(Node.Kind, NodeKind::Bisect);
        EXPECT_EQ(Node.Children.size(), 2u);
      }
    }
    expectRoutesEverything(L, Cases);
  }
}

TEST(DispatchLayoutTest, OneHotCaseIsTheFirstCompare) {
  // One case takes nearly all calls: it is tested first, with one compare,
  // however many others there are.
  for (size_t N : {2u, 48u, 1024u}) {
    SCOPED_TRACE(N);
    auto Cases =
        makeCases(N, [&](size_t I) { return I == N / 2 ? 1000000 : 1; });
    DispatchLayout L = DispatchLayout::choose(Cases);
    EXPECT_EQ(L.shape(), DispatchLayout::Shape::HotScan);
    ASSERT_FALSE(L.prefix().empty());
    EXPECT_EQ(Cases[L.prefix().front()].Key, 0x1000 * (N / 2 + 1));
    // A call costs about one predicted compare.
    EXPECT_LT(L.predictedCost(), 1.2);
    expectRoutesEverything(L, Cases);
  }
}

TEST(DispatchLayoutTest, SkewedWeightsMakeAHotPrefixHottestFirst) {
  // Zipf 1.1 over 48: a prefix of the hottest, in falling weight; the rest
  // is scanned.
  auto Cases = makeCases(48, [](size_t I) {
    return static_cast<uint64_t>(1e6 / std::pow(I + 1, 1.1));
  });
  DispatchLayout L = DispatchLayout::choose(Cases);
  ASSERT_GE(L.prefix().size(), 2u);
  EXPECT_LT(L.prefix().size(), 48u);
  for (size_t I = 0; I < L.prefix().size(); ++I)
    EXPECT_EQ(Cases[L.prefix()[I]].Key, 0x1000 * (I + 1)) << "prefix " << I;
  expectRoutesEverything(L, Cases);
  // Cheaper than the same cases unweighted, under the same model and the
  // same (skewed) calls: the bisection's branches are coin tosses.
  DispatchLayout Plain =
      DispatchLayout::choose(makeCases(48, [](size_t) { return 0; }));
  EXPECT_LT(L.predictedCost(), Plain.predictedCost());
}

TEST(DispatchLayoutTest, UniformWeightsMakeAScanWithoutPrefix) {
  // Equal weights: no case is worth testing first. Small N is one chain
  // (a linear scan); 256 is a first level of 16 bounds' worth of children.
  auto Small = makeCases(8, [](size_t) { return 100; });
  DispatchLayout L = DispatchLayout::choose(Small);
  EXPECT_TRUE(L.prefix().empty());
  EXPECT_EQ(L.root().Kind, NodeKind::Chain);
  EXPECT_EQ(L.root().Cases.size(), 8u);
  expectRoutesEverything(L, Small);

  auto Large = makeCases(256, [](size_t) { return 100; });
  DispatchLayout Scan = DispatchLayout::choose(Large);
  EXPECT_TRUE(Scan.prefix().empty());
  ASSERT_EQ(Scan.root().Kind, NodeKind::Scan);
  EXPECT_EQ(Scan.root().Children.size(), 16u);
  EXPECT_EQ(Scan.root().Cases.size(), 15u);
  for (uint32_t Child : Scan.root().Children) {
    EXPECT_EQ(Scan.node(Child).Kind, NodeKind::Chain);
    EXPECT_EQ(Scan.node(Child).Cases.size(), 16u);
  }
  expectRoutesEverything(Scan, Large);
}

TEST(DispatchLayoutTest, UniformLargeWithARetpolineFallbackHasNoTree) {
  // 1024 equally likely cases: any tree costs several mispredictions, more
  // than the retpoline it would replace; where allowed, the model drops
  // the tree and the entry performs the fallback.
  auto Cases = makeCases(1024, [](size_t) { return 10; });
  LayoutOptions Options;
  Options.RetpolineFallback = true;
  DispatchLayout Tree = DispatchLayout::choose(Cases, Options);
  EXPECT_EQ(Tree.shape(), DispatchLayout::Shape::HotScan);
  LayoutCostModel Model;
  EXPECT_GT(Tree.predictedCost(), Model.Retpoline);
  Options.AllowFallbackOnly = true;
  DispatchLayout None = DispatchLayout::choose(Cases, Options);
  EXPECT_EQ(None.shape(), DispatchLayout::Shape::FallbackOnly);
  EXPECT_EQ(None.predictedCost(), Model.Retpoline);
  EXPECT_TRUE(None.prefix().empty());
  EXPECT_EQ(None.root().Kind, NodeKind::Chain);
  EXPECT_TRUE(None.root().Cases.empty());
  for (const LayoutCase &C : Cases)
    EXPECT_EQ(route(None, Cases, C.Key), std::nullopt);

  // A few cases, or one hot one, still get their tree: it is cheaper.
  for (auto Small :
       {makeCases(4, [](size_t) { return 10; }),
        makeCases(1024, [](size_t I) { return I ? 1 : 100000; })}) {
    DispatchLayout L = DispatchLayout::choose(Small, Options);
    EXPECT_NE(L.shape(), DispatchLayout::Shape::FallbackOnly);
    EXPECT_LT(L.predictedCost(), Model.Retpoline);
  }
  // A plain indirect fallback among 8 equally likely targets (hit 1/8 of
  // the time) costs less than a scan of 8 under the model: an indirect
  // misprediction is the cheaper one (as measured).
  LayoutOptions Plain;
  Plain.AllowFallbackOnly = true;
  DispatchLayout Indirect =
      DispatchLayout::choose(makeCases(8, [](size_t) { return 10; }), Plain);
  EXPECT_EQ(Indirect.shape(), DispatchLayout::Shape::FallbackOnly);
  EXPECT_NEAR(Indirect.predictedCost(),
              Model.IndirectBranch + Model.IndirectMispredict * 7 / 8, 1e-9);
}

TEST(DispatchLayoutTest, APredictableOrderKeepsTheTree) {
  // 48 equally frequent cases behind a retpoline: drawn at random, no
  // tree beats the retpoline; called in an order history predicts (a
  // round-robin), the tree's branches are predicted and it wins.
  auto Cases = makeCases(48, [](size_t) { return 10; });
  LayoutOptions Options;
  Options.RetpolineFallback = true;
  Options.AllowFallbackOnly = true;
  EXPECT_EQ(DispatchLayout::choose(Cases, Options).shape(),
            DispatchLayout::Shape::FallbackOnly);
  Options.Predictability = 0.95;
  DispatchLayout L = DispatchLayout::choose(Cases, Options);
  EXPECT_NE(L.shape(), DispatchLayout::Shape::FallbackOnly);
  EXPECT_LT(L.predictedCost(), LayoutCostModel().Retpoline);
  expectRoutesEverything(L, Cases);
  // A predictor follows only so many targets: a round-robin over 4096
  // keeps no tree, over 1024 it does.
  Options.Predictability = 1;
  EXPECT_EQ(DispatchLayout::choose(makeCases(4096, [](size_t) { return 10; }),
                                   Options)
                .shape(),
            DispatchLayout::Shape::FallbackOnly);
  EXPECT_NE(DispatchLayout::choose(makeCases(1024, [](size_t) { return 10; }),
                                   Options)
                .shape(),
            DispatchLayout::Shape::FallbackOnly);
  // And a plain indirect call, which history predicts as well, stays the
  // cheapest for the same order when allowed.
  LayoutOptions Plain;
  Plain.AllowFallbackOnly = true;
  Plain.Predictability = 1;
  EXPECT_EQ(DispatchLayout::choose(Cases, Plain).shape(),
            DispatchLayout::Shape::FallbackOnly);
}

TEST(DispatchLayoutTest, FallbackCallsAddTheirTestsAndTheFallback) {
  // Two equally likely cases and as many calls to neither: those pay the
  // chain's two tests and the fallback.
  auto Cases = makeCases(2, [](size_t) { return 10; });
  LayoutOptions Options;
  Options.FallbackWeight = 20;
  LayoutCostModel Model;
  DispatchLayout L = DispatchLayout::choose(Cases, Options, Model);
  ASSERT_EQ(L.shape(), DispatchLayout::Shape::HotScan);
  // Shares 1/4, 1/4, and 1/2 to the fallback. First test: reached by all,
  // taken 1/4; second: reached by 3/4, taken 1/4.
  double C = Model.Compare, M = Model.Mispredict;
  double Expected =
      (C + M * 0.25) + (0.75 * C + M * 0.25) + 0.5 * Model.IndirectBranch;
  EXPECT_NEAR(L.predictedCost(), Expected, 1e-9);
}

TEST(DispatchLayoutTest, TermsCountTestsAndMispredictionsWithoutTheFallback) {
  // The same layout and calls as above, behind a retpoline: 1.75 tests and
  // 0.5 mispredictions per call, by the accounting of predictedCost(); the
  // retpoline the fallback's half of the calls pays is not a term (the
  // calibration and the bench's fit price it separately).
  auto Cases = makeCases(2, [](size_t) { return 10; });
  LayoutOptions Options;
  Options.FallbackWeight = 20;
  Options.RetpolineFallback = true;
  LayoutCostModel Model;
  DispatchLayout L = DispatchLayout::choose(Cases, Options, Model);
  DispatchLayout::CallTerms T = L.termsUnder(Cases, Options);
  EXPECT_NEAR(T.Compares, 1.75, 1e-9);
  EXPECT_NEAR(T.Mispredicts, 0.5, 1e-9);
  EXPECT_NEAR(L.costUnder(Cases, Options, Model),
              Model.Compare * T.Compares + Model.Mispredict * T.Mispredicts +
                  0.5 * Model.Retpoline,
              1e-9);
}

TEST(DispatchLayoutTest, ChainsTestTheHottestFirstAndKeepTheGivenOrderOnTies) {
  std::vector<LayoutCase> Cases = {{0, 5}, {0, 900}, {0, 5}, {0, 50}};
  DispatchLayout L = DispatchLayout::chain(Cases);
  EXPECT_EQ(L.shape(), DispatchLayout::Shape::Chain);
  EXPECT_EQ(chainCases(L), (std::vector<uint32_t>{1, 3, 0, 2}));
  std::vector<LayoutCase> Unweighted(4);
  EXPECT_EQ(chainCases(DispatchLayout::chain(Unweighted)),
            (std::vector<uint32_t>{0, 1, 2, 3}));
}

TEST(DispatchLayoutTest, PredictedCostFollowsTheModel) {
  // Six unweighted cases: a bisection (a compare, a coin toss) and two
  // chains of three; each chain costs (3 + 2 + 1) / 6 compares and, of its
  // first two tests, the smaller side (1/6 each) mispredicted.
  auto Cases = makeCases(6, [](size_t) { return 0; });
  LayoutCostModel Model;
  DispatchLayout L = DispatchLayout::choose(Cases, {}, Model);
  double C = Model.Compare, M = Model.Mispredict;
  double Expected = (C + M * 0.5) + 2 * (C + M * (1.0 / 6 + 1.0 / 6));
  EXPECT_NEAR(L.predictedCost(), Expected, 1e-9);
  // A dearer misprediction raises it, and one that costs nothing leaves
  // only the compares.
  LayoutCostModel Free{1, 0};
  EXPECT_NEAR(DispatchLayout::choose(Cases, {}, Free).predictedCost(), 3, 1e-9);
}

TEST(DispatchLayoutTest, PrintShowsTheTreeByName) {
  std::vector<LayoutCase> Cases = makeCases(6, [](size_t) { return 0; });
  std::string Text;
  raw_string_ostream OS(Text);
  DispatchLayout::choose(Cases).print(OS, Cases, [&](uint32_t C) {
    return "p" + std::to_string(Cases[C].Key / 0x1000);
  });
  EXPECT_EQ(Text, "layout bisect, predicted 24.1 units per call\n"
                  "  bisect below p4\n"
                  "    chain: p1 p2 p3\n"
                  "    chain: p4 p5 p6\n");
}

TEST(DispatchLayoutTest, WeightedChainsTestTheHottestFirst) {
  // Whichever shape the model picks, every chain (and the prefix) runs
  // from the hottest case down.
  for (size_t N : {4u, 9u, 40u, 300u})
    for (double Skew : {0.0, 0.5, 1.1, 2.0}) {
      SCOPED_TRACE(formatv("N = {0}, skew {1}", N, Skew).str());
      auto Cases = makeCases(N, [&](size_t I) {
        return 1 + static_cast<uint64_t>(1e6 / std::pow(I + 1, Skew));
      });
      DispatchLayout L = DispatchLayout::choose(Cases);
      auto Hottest = [&](uint32_t A, uint32_t B) {
        return Cases[A].Weight > Cases[B].Weight;
      };
      EXPECT_TRUE(is_sorted(L.prefix(), Hottest));
      for (size_t I = 0; I < L.numNodes(); ++I)
        if (L.node(I).Kind == NodeKind::Chain)
          EXPECT_TRUE(is_sorted(L.node(I).Cases, Hottest)) << "chain " << I;
      expectRoutesEverything(L, Cases);
    }
}

TEST(DispatchLayoutTest, RandomLayoutsRouteEveryKey) {
  std::mt19937_64 Rng(7);
  for (unsigned Round = 0; Round < 40; ++Round) {
    size_t N = 1 + Rng() % 600;
    bool Weighted = Round % 2;
    double Skew = (Rng() % 20) / 10.0;
    auto Cases = makeCases(
        N,
        [&](size_t I) {
          return Weighted
                     ? 1 + static_cast<uint64_t>(1e6 / std::pow(I + 1, Skew))
                     : 0;
        },
        Round);
    SCOPED_TRACE(
        formatv("N = {0}, weighted {1}, skew {2}", N, Weighted, Skew).str());
    DispatchLayout L = DispatchLayout::choose(Cases);
    expectRoutesEverything(L, Cases);
    EXPECT_GT(L.predictedCost(), 0);
  }
}

} // namespace
