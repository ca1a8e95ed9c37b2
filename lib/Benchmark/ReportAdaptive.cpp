//===- ReportAdaptive.cpp - The adaptive variant in the reports -----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// What the Adaptive variant's dispatcher learned (its layout and the cost
// model's prediction) next to what it was measured at, and the goals of
// adaptive dispatch against the retpoline it replaces and the plain
// dispatcher. utils/bench-tables.py checks the same goals over the kept
// runs.
//
//===----------------------------------------------------------------------===//

#include "ReportAdaptive.h"

#include "CallTable.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <functional>
#include <map>

using namespace llvm;

namespace dispatchgen::bench {

namespace {

/// One goal over the Ns of a pattern: the worst Num/Den (the largest with
/// AtMost, the smallest otherwise) over the Ns that Include admits.
void goal(const CallTable &C, raw_ostream &OS, Pattern P, StringRef Text,
          CallVariant Num, CallVariant Den, double Limit, bool AtMost,
          std::function<bool(unsigned)> Include = nullptr) {
  std::optional<double> Worst;
  unsigned WorstN = 0;
  for (unsigned N : C.Ns) {
    auto X = C.positive(P, N, Num), Y = C.positive(P, N, Den);
    if (!X || !Y || (Include && !Include(N)))
      continue;
    double R = *X / *Y;
    if (!Worst || (AtMost ? R > *Worst : R < *Worst)) {
      Worst = R;
      WorstN = N;
    }
  }
  if (!Worst)
    return;
  bool Met = AtMost ? *Worst <= Limit : *Worst >= Limit;
  OS << formatv("  {0}, {1}: {2:f2}x at worst (N={3}): {4}\n", patternName(P),
                Text, *Worst, WorstN, Met ? "met" : "NOT met");
}

} // namespace

void printAdaptive(const Report &R, raw_ostream &OS) {
  CallTable C(R.Calls);
  bool Any = any_of(R.Calls, [](const CallCost &X) { return X.Learned; });
  if (!Any)
    return;
  LayoutCostModel M = R.Calibration ? R.Calibration->Model : LayoutCostModel();
  OS << formatv("\nadaptive: the layout learned (after the timed loops) and "
                "the model's cost per call (a retpoline is {0:f0}, a "
                "predicted compare {1:f2}, a mispredicted one {2:f1}), next "
                "to ns per call measured\n",
                M.Retpoline, M.Compare, M.Mispredict);
  OS << formatv("{0,-12} {1,5} {2,-14} {3,9} {4,7} {5,8} {6,9} {7,10} "
                "{8,10} {9,10} {10,9}\n",
                "pattern", "N", "layout", "predicted", "windows", "promoted",
                "adaptive", "retpoline", "dispatcher", "x retpol.", "learning");
  for (const CallCost &X : R.Calls) {
    if (!X.Learned)
      continue;
    auto Retp = C.positive(X.P, X.N, CallVariant::Retpoline);
    auto Disp = C.positive(X.P, X.N, CallVariant::Dispatcher);
    auto Str = [](std::optional<double> V) {
      return V ? formatv("{0:f2}", *V).str() : std::string("-");
    };
    OS << formatv("{0,-12} {1,5} {2,-14} {3,9:f2} {4,7} {5,8} {6,9:f2} "
                  "{7,10} {8,10} {9,10} {10,9}\n",
                  patternName(X.P), X.N, X.Learned->Layout,
                  X.Learned->PredictedCost, X.Learned->Windows,
                  X.Learned->Promoted.size(), X.NsPerCall, Str(Retp), Str(Disp),
                  Retp && X.NsPerCall > 0
                      ? formatv("{0:f2}x", *Retp / X.NsPerCall).str()
                      : std::string("-"),
                  X.Learned->LearningNsPerCall > 0
                      ? formatv("{0:f2}", X.Learned->LearningNsPerCall).str()
                      : std::string("-"));
  }
}

void printAdaptiveGoals(const Report &R, raw_ostream &OS) {
  CallTable C(R.Calls);
  if (!any_of(C.Patterns, [&](Pattern P) {
        return any_of(C.Ns, [&](unsigned N) {
          return C.positive(P, N, CallVariant::Adaptive).has_value();
        });
      }))
    return;
  using CV = CallVariant;
  OS << "  goals of adaptive dispatch (ratios of ns per call, the worst N "
        "of each pattern):\n";
  for (Pattern P : C.Patterns) {
    goal(C, OS, P, "adaptive <= 1.05x the retpoline", CV::Adaptive,
         CV::Retpoline, 1.05, /*AtMost=*/true);
    goal(C, OS, P,
         "where the dispatcher beats the retpoline, adaptive <= "
         "1.05x the dispatcher",
         CV::Adaptive, CV::Dispatcher, 1.05, /*AtMost=*/true, [&](unsigned N) {
           auto D = C.positive(P, N, CV::Dispatcher),
                Rp = C.positive(P, N, CV::Retpoline);
           return D && Rp && *D < *Rp;
         });
    if (P == Pattern::Uniform || P == Pattern::Zipf)
      goal(C, OS, P, "N <= 8: adaptive >= 1.1x faster than the retpoline",
           CV::Retpoline, CV::Adaptive, 1.1, /*AtMost=*/false,
           [](unsigned N) { return N <= 8; });
    if (P == Pattern::Unregistered)
      goal(C, OS, P, "adaptive >= 3x faster than the retpoline", CV::Retpoline,
           CV::Adaptive, 3, /*AtMost=*/false);
    if (P == Pattern::Phase)
      goal(C, OS, P, "adaptive >= 2x faster than the retpoline", CV::Retpoline,
           CV::Adaptive, 2, /*AtMost=*/false);
  }
  // While a window is open the image counts: at most twice the plain
  // dispatcher's cost (patterns learned in one timed window only).
  std::optional<double> Worst;
  const CallCost *At = nullptr;
  for (const CallCost &X : R.Calls) {
    if (!X.Learned || X.Learned->LearningNsPerCall <= 0)
      continue;
    auto D = C.positive(X.P, X.N, CV::Dispatcher);
    if (!D)
      continue;
    double Ratio = X.Learned->LearningNsPerCall / *D;
    if (!Worst || Ratio > *Worst) {
      Worst = Ratio;
      At = &X;
    }
  }
  if (Worst)
    OS << formatv("  while a window is open, adaptive <= 2x the dispatcher: "
                  "{0:f2}x at worst ({1}, N={2}): {3}\n",
                  *Worst, patternName(At->P), At->N,
                  *Worst <= 2 ? "met" : "NOT met");
}

} // namespace dispatchgen::bench
