//===- ModelFit.cpp - LayoutCostModel constants from a bench run ---------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The cost model's constants as this machine's call costs give them, in
// the model's units (a retpoline is 20): the retpoline's cost over a
// direct call sets the unit; the plain dispatcher's one-hot calls, from
// the smallest N to the largest, the cost of a predicted test; the
// weighted dispatcher's scan of eight equally likely programs, the cost of
// a mispredicted compare; the indirect call among the same eight, the
// cost of a mispredicted indirect branch. Each test and misprediction is
// counted by the layout the dispatcher had (DispatchLayout), so the fit
// uses the model's own accounting.
//
//===----------------------------------------------------------------------===//

#include "CallTable.h"

#include "dispatch-gen/Benchmark.h"
#include "dispatch-gen/DispatchLayout.h"

#include <algorithm>

using namespace llvm;

namespace dispatchgen::bench {

namespace {

/// The model's tests and mispredictions of the layout a dispatcher of N
/// programs with Weights (none: plain) has, for calls drawn as Weights
/// says.
DispatchLayout::CallTerms termsOf(ArrayRef<uint64_t> Weights, bool Weighted) {
  std::vector<LayoutCase> Cases, Plain;
  for (size_t K = 0; K < Weights.size(); ++K) {
    Cases.push_back({0x100000 + 16 * K, Weights[K]});
    Plain.push_back({0x100000 + 16 * K, 0});
  }
  LayoutOptions Options;
  Options.RetpolineFallback = true;
  DispatchLayout L = DispatchLayout::choose(Weighted ? Cases : Plain, Options);
  return L.termsUnder(Cases, Options);
}

} // namespace

std::optional<LayoutCostModel> fitCostModel(ArrayRef<CallCost> Calls) {
  CallTable T(Calls);
  using CV = CallVariant;
  if (T.Ns.empty())
    return std::nullopt;
  unsigned Small = *std::min_element(T.Ns.begin(), T.Ns.end());
  unsigned Large = *std::max_element(T.Ns.begin(), T.Ns.end());
  auto Retpoline = T.get(Pattern::OneHot, Large, CV::Retpoline);
  auto Direct = T.get(Pattern::OneHot, Large, CV::Direct);
  auto HotSmall = T.get(Pattern::OneHot, Small, CV::Dispatcher);
  auto HotLarge = T.get(Pattern::OneHot, Large, CV::Dispatcher);
  auto Scan8 = T.get(Pattern::Uniform, 8, CV::Weighted);
  auto Direct8 = T.get(Pattern::Uniform, 8, CV::Direct);
  auto Indirect8 = T.get(Pattern::Uniform, 8, CV::Indirect);
  auto IndirectHot8 = T.get(Pattern::OneHot, 8, CV::Indirect);
  if (!Retpoline || !Direct || !HotSmall || !HotLarge || !Scan8 || !Direct8 ||
      !Indirect8 || !IndirectHot8 || Large <= Small || *Retpoline <= *Direct)
    return std::nullopt;
  double Unit = (*Retpoline - *Direct) / 20;
  auto OneHot = [](unsigned N) {
    std::vector<uint64_t> W(N, 0);
    W[0] = 1;
    return W;
  };
  DispatchLayout::CallTerms HotS = termsOf(OneHot(Small), false);
  DispatchLayout::CallTerms HotL = termsOf(OneHot(Large), false);
  if (HotL.Compares <= HotS.Compares)
    return std::nullopt;
  LayoutCostModel M;
  double CompareNs =
      std::max(0.0, (*HotLarge - *HotSmall) / (HotL.Compares - HotS.Compares));
  M.Compare = CompareNs / Unit;
  // The dispatcher's scan of eight: above a direct call, its tests and
  // mispredictions (the call into the entry costs what HotSmall has above
  // a direct call with one test).
  DispatchLayout::CallTerms Scan = termsOf(std::vector<uint64_t>(8, 1), true);
  double Entry = *HotSmall - *Direct - HotS.Compares * CompareNs;
  if (Scan.Mispredicts > 0)
    M.Mispredict =
        std::max(0.0, *Scan8 - *Direct8 - Entry - Scan.Compares * CompareNs) /
        Scan.Mispredicts / Unit;
  // An indirect call among eight misses 7 times in 8; one hot, never.
  M.IndirectMispredict =
      std::max(0.0, *Indirect8 - *IndirectHot8) / (7.0 / 8) / Unit;
  return M;
}

} // namespace dispatchgen::bench
