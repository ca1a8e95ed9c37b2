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

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <functional>
#include <map>

using namespace llvm;

namespace dispatchgen::bench {

namespace {

using Key = std::tuple<Pattern, unsigned, CallVariant>;

struct Costs {
  std::map<Key, double> Ns;
  std::vector<Pattern> Patterns;
  std::vector<unsigned> Ns_;

  explicit Costs(ArrayRef<CallCost> Calls) {
    for (const CallCost &C : Calls) {
      Ns[{C.P, C.N, C.V}] = C.NsPerCall;
      if (!is_contained(Patterns, C.P))
        Patterns.push_back(C.P);
      if (!is_contained(Ns_, C.N))
        Ns_.push_back(C.N);
    }
  }
  std::optional<double> get(Pattern P, unsigned N, CallVariant V) const {
    auto It = Ns.find({P, N, V});
    if (It == Ns.end() || It->second <= 0)
      return std::nullopt;
    return It->second;
  }
};

/// One goal over the Ns of a pattern: the worst Num/Den (the largest with
/// AtMost, the smallest otherwise) over the Ns that Include admits.
void goal(const Costs &C, raw_ostream &OS, Pattern P, StringRef Text,
          CallVariant Num, CallVariant Den, double Limit, bool AtMost,
          std::function<bool(unsigned)> Include = nullptr) {
  std::optional<double> Worst;
  unsigned WorstN = 0;
  for (unsigned N : C.Ns_) {
    auto X = C.get(P, N, Num), Y = C.get(P, N, Den);
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
  Costs C(R.Calls);
  bool Any = any_of(R.Calls, [](const CallCost &X) { return X.Learned; });
  if (!Any)
    return;
  OS << "\nadaptive: the layout learned (after the timed loops) and the "
        "model's cost per call (a predicted compare is 1, a retpoline 20), "
        "next to ns per call measured\n";
  OS << formatv("{0,-12} {1,5} {2,-14} {3,9} {4,7} {5,8} {6,9} {7,10} "
                "{8,10} {9,10}\n",
                "pattern", "N", "layout", "predicted", "windows", "promoted",
                "adaptive", "retpoline", "dispatcher", "x retpol.");
  for (const CallCost &X : R.Calls) {
    if (!X.Learned)
      continue;
    auto Retp = C.get(X.P, X.N, CallVariant::Retpoline);
    auto Disp = C.get(X.P, X.N, CallVariant::Dispatcher);
    auto Str = [](std::optional<double> V) {
      return V ? formatv("{0:f2}", *V).str() : std::string("-");
    };
    OS << formatv("{0,-12} {1,5} {2,-14} {3,9:f2} {4,7} {5,8} {6,9:f2} "
                  "{7,10} {8,10} {9,10}\n",
                  patternName(X.P), X.N, X.Learned->Layout,
                  X.Learned->PredictedCost, X.Learned->Windows,
                  X.Learned->Promoted.size(), X.NsPerCall, Str(Retp), Str(Disp),
                  Retp && X.NsPerCall > 0
                      ? formatv("{0:f2}x", *Retp / X.NsPerCall).str()
                      : std::string("-"));
  }
}

void printAdaptiveGoals(const Report &R, raw_ostream &OS) {
  Costs C(R.Calls);
  if (!any_of(C.Patterns, [&](Pattern P) {
        return any_of(C.Ns_, [&](unsigned N) {
          return C.get(P, N, CallVariant::Adaptive).has_value();
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
           auto D = C.get(P, N, CV::Dispatcher),
                Rp = C.get(P, N, CV::Retpoline);
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
}

} // namespace dispatchgen::bench
