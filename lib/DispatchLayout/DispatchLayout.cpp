//===- DispatchLayout.cpp - The compare tree of a dispatcher --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchLayout.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <numeric>

using namespace llvm;

namespace dispatchgen {

namespace {

// A bisection stops at chains of this many cases; LLVM's switch lowering
// stops splitting at the same size.
constexpr size_t MaxBisectChain = 3;
// The scan: up to this many children per level, and chains of up to this
// many cases.
constexpr size_t ScanFanout = 16, ScanChain = 16;
// The longest hot prefix considered.
constexpr size_t MaxPrefix = 64;

/// The model's cost of a scan over N equally likely cases. A level tests
/// up to ScanFanout bounds in key order: the one taken is mispredicted, the
/// others are cheap, so a level resolves 4 bits for one misprediction where
/// a binary tree resolves 1 bit for half of one. A chain costs (N + 1) / 2
/// compares and misses the prediction 1 - 1/N of the time.
double scanCost(size_t N, const LayoutCostModel &M) {
  if (N == 0)
    return 0;
  if (N <= ScanChain)
    return M.Compare * static_cast<double>(N + 1) / 2 +
           M.Mispredict * (1 - 1 / static_cast<double>(N));
  size_t Groups = std::min(ScanFanout, divideCeil(N, ScanChain));
  return M.Compare * static_cast<double>(Groups) / 2 +
         M.Mispredict * (1 - 1 / static_cast<double>(Groups)) +
         scanCost(divideCeil(N, Groups), M);
}

/// How many of the hottest cases (ByWeight, hottest first) to test one by
/// one before the scan of the rest. Under a skewed distribution the prefix
/// wins: each of its compares is mispredicted only as often as its case is
/// called.
size_t choosePrefix(ArrayRef<LayoutCase> Cases, ArrayRef<uint32_t> ByWeight,
                    const LayoutCostModel &M) {
  double Total = 0;
  for (uint32_t C : ByWeight)
    Total += static_cast<double>(Cases[C].Weight);
  if (Total == 0)
    return 0;
  size_t Best = 0;
  double BestCost = scanCost(ByWeight.size(), M);
  double Remaining = 1, PrefixCost = 0;
  for (size_t K = 1; K <= std::min(MaxPrefix, ByWeight.size()); ++K) {
    double P = static_cast<double>(Cases[ByWeight[K - 1]].Weight) / Total;
    PrefixCost += M.Compare * Remaining +
                  M.Mispredict * std::min(P, std::max(Remaining - P, 0.0));
    Remaining = std::max(Remaining - P, 0.0);
    double Cost = PrefixCost + Remaining * scanCost(ByWeight.size() - K, M);
    if (Cost < BestCost) {
      BestCost = Cost;
      Best = K;
    }
  }
  return Best;
}

/// The share of mispredictions a predictor with history avoids: the
/// measured predictability, in proportion where more targets are called
/// than the predictor can follow.
double effectivePredictability(ArrayRef<LayoutCase> Cases,
                               const LayoutOptions &Options,
                               const LayoutCostModel &Model) {
  double P = std::clamp(Options.Predictability, 0.0, 1.0);
  if (P == 0)
    return 0;
  size_t Called = count_if(Cases, [](const LayoutCase &C) { return C.Weight; });
  if (Called == 0)
    Called = Cases.size();
  return P * (1 - std::clamp(Model.ResidualMispredict, 0.0, 1.0)) *
         std::min(1.0, Model.PredictorCapacity /
                           double(std::max<size_t>(Called, 1)));
}

/// Indices of Cases, hottest first; equal weights keep the order of Order.
std::vector<uint32_t> byWeight(ArrayRef<LayoutCase> Cases,
                               std::vector<uint32_t> Order) {
  llvm::stable_sort(Order, [&](uint32_t L, uint32_t R) {
    return Cases[L].Weight > Cases[R].Weight;
  });
  return Order;
}

} // namespace

uint32_t DispatchLayout::addChain(ArrayRef<uint32_t> Ordered) {
  Nodes.push_back({NodeKind::Chain, {Ordered.begin(), Ordered.end()}, {}});
  return Nodes.size() - 1;
}

uint32_t DispatchLayout::addBisect(ArrayRef<LayoutCase> Cases,
                                   ArrayRef<uint32_t> Sorted) {
  // Hottest first when weighted (byWeight keeps key order otherwise).
  if (Sorted.size() <= MaxBisectChain)
    return addChain(byWeight(Cases, {Sorted.begin(), Sorted.end()}));
  uint32_t Index = Nodes.size();
  size_t Split = Sorted.size() / 2;
  Nodes.push_back({NodeKind::Bisect, {Sorted[Split]}, {}});
  uint32_t Left = addBisect(Cases, Sorted.take_front(Split));
  uint32_t Right = addBisect(Cases, Sorted.drop_front(Split));
  Nodes[Index].Children = {Left, Right};
  return Index;
}

uint32_t DispatchLayout::addScan(ArrayRef<LayoutCase> Cases,
                                 ArrayRef<uint32_t> Sorted) {
  if (Sorted.size() <= ScanChain)
    return addChain(byWeight(Cases, {Sorted.begin(), Sorted.end()}));
  size_t N = Sorted.size();
  size_t Groups = std::min(ScanFanout, divideCeil(N, ScanChain));
  auto Group = [&](size_t J) {
    size_t Begin = J * N / Groups, End = (J + 1) * N / Groups;
    return Sorted.slice(Begin, End - Begin);
  };
  uint32_t Index = Nodes.size();
  Nodes.push_back({NodeKind::Scan, {}, {}});
  for (size_t J = 0; J + 1 < Groups; ++J)
    Nodes[Index].Cases.push_back(Group(J + 1).front());
  SmallVector<uint32_t, ScanFanout> Children;
  for (size_t J = 0; J < Groups; ++J)
    Children.push_back(addScan(Cases, Group(J)));
  Nodes[Index].Children = std::move(Children);
  return Index;
}

DispatchLayout DispatchLayout::choose(ArrayRef<LayoutCase> Cases,
                                      const LayoutOptions &Options,
                                      const LayoutCostModel &Model) {
  std::vector<uint32_t> Sorted(Cases.size());
  std::iota(Sorted.begin(), Sorted.end(), 0);
  llvm::sort(Sorted, [&](uint32_t A, uint32_t B) {
    return Cases[A].Key < Cases[B].Key;
  });
  auto Finish = [&](DispatchLayout L) {
    L.Cost = L.predict(Cases, Options, Model);
    return L;
  };
  DispatchLayout Bisect;
  Bisect.TheShape = Shape::Bisect;
  Bisect.addBisect(Cases, Sorted);
  bool Weighted =
      any_of(Cases, [](const LayoutCase &C) { return C.Weight != 0; });
  if (!Weighted)
    return Finish(std::move(Bisect));

  DispatchLayout Scan;
  Scan.TheShape = Shape::HotScan;
  std::vector<uint32_t> Hot = byWeight(Cases, Sorted);
  // The prefix's length under the mispredictions history leaves.
  LayoutCostModel Seen = Model;
  Seen.Mispredict *= 1 - effectivePredictability(Cases, Options, Model);
  Hot.resize(choosePrefix(Cases, Hot, Seen));
  Scan.Prefix = Hot;
  // The rest, still in key order.
  std::vector<bool> InPrefix(Cases.size());
  for (uint32_t C : Hot)
    InPrefix[C] = true;
  llvm::erase_if(Sorted, [&](uint32_t C) { return InPrefix[C]; });
  Scan.addScan(Cases, Sorted);

  // The cheapest; on a tie the first: the scan, then the bisection.
  SmallVector<DispatchLayout, 3> Candidates;
  Candidates.push_back(Finish(std::move(Scan)));
  Candidates.push_back(Finish(std::move(Bisect)));
  if (Options.AllowFallbackOnly) {
    DispatchLayout None;
    None.TheShape = Shape::FallbackOnly;
    None.addChain({});
    Candidates.push_back(Finish(std::move(None)));
  }
  size_t Best = 0;
  for (size_t I = 1; I < Candidates.size(); ++I)
    if (Candidates[I].Cost < Candidates[Best].Cost)
      Best = I;
  return std::move(Candidates[Best]);
}

DispatchLayout DispatchLayout::chain(ArrayRef<LayoutCase> Cases,
                                     const LayoutCostModel &Model) {
  DispatchLayout L;
  std::vector<uint32_t> Order(Cases.size());
  std::iota(Order.begin(), Order.end(), 0);
  L.addChain(byWeight(Cases, std::move(Order)));
  L.Cost = L.predict(Cases, LayoutOptions(), Model);
  return L;
}

DispatchLayout::CallTerms
DispatchLayout::termsUnder(ArrayRef<LayoutCase> Cases,
                           const LayoutOptions &Options) const {
  // The model is linear in Compare and Mispredict once the fallback's own
  // cost is out of it.
  LayoutCostModel Count;
  Count.IndirectBranch = Count.Retpoline = Count.IndirectMispredict = 0;
  Count.Compare = 1;
  Count.Mispredict = 0;
  CallTerms T;
  T.Compares = predict(Cases, Options, Count);
  Count.Compare = 0;
  Count.Mispredict = 1;
  T.Mispredicts = predict(Cases, Options, Count);
  return T;
}

double DispatchLayout::predict(ArrayRef<LayoutCase> Cases,
                               const LayoutOptions &Options,
                               const LayoutCostModel &Model) const {
  bool Weighted =
      any_of(Cases, [](const LayoutCase &C) { return C.Weight != 0; });
  double Total = static_cast<double>(Options.FallbackWeight);
  for (const LayoutCase &C : Cases)
    Total += Weighted ? static_cast<double>(C.Weight) : 1.0;
  if (Total == 0)
    return 0;
  // Shares of all calls: each case's, and the fallback's.
  auto Share = [&](uint32_t C) {
    return (Weighted ? static_cast<double>(Cases[C].Weight) : 1.0) / Total;
  };
  double FallbackShare = static_cast<double>(Options.FallbackWeight) / Total;
  double FallbackCost =
      Options.RetpolineFallback ? Model.Retpoline : Model.IndirectBranch;
  // What history saves of every misprediction.
  double Mispredict =
      Model.Mispredict * (1 - effectivePredictability(Cases, Options, Model));

  if (TheShape == Shape::FallbackOnly) {
    if (Options.RetpolineFallback)
      return Model.Retpoline;
    // The predictor guesses one target; with random draws it is right
    // sum(p^2) of the time (the fallback's calls counted as one target).
    double Hits = FallbackShare * FallbackShare;
    for (uint32_t C = 0; C < Cases.size(); ++C)
      Hits += Share(C) * Share(C);
    return Model.IndirectBranch +
           Model.IndirectMispredict *
               (1 - effectivePredictability(Cases, Options, Model)) *
               (1 - Hits);
  }

  // Each test reached with mass Reach (the share of calls that get there)
  // whose taken side holds Taken of it costs a compare for each and a
  // misprediction for the smaller side.
  auto Test = [&](double Reach, double Taken) {
    return Model.Compare * Reach +
           Mispredict * std::min(Taken, std::max(Reach - Taken, 0.0));
  };
  // Per node: the cases' share below it, how many cases, and the share of
  // fallback calls that reach it (spread as the cases are).
  std::vector<double> Mass(Nodes.size()), Fallback(Nodes.size());
  std::vector<size_t> Count(Nodes.size());
  for (size_t I = Nodes.size(); I-- > 0;) {
    const Node &N = Nodes[I];
    if (N.Kind == NodeKind::Chain) {
      Count[I] = N.Cases.size();
      for (uint32_t C : N.Cases)
        Mass[I] += Share(C);
      continue;
    }
    for (uint32_t Child : N.Children) {
      Mass[I] += Mass[Child];
      Count[I] += Count[Child];
    }
  }
  Fallback[0] = FallbackShare;
  for (size_t I = 0; I < Nodes.size(); ++I)
    for (uint32_t Child : Nodes[I].Children)
      Fallback[Child] = Count[I]
                            ? Fallback[I] * static_cast<double>(Count[Child]) /
                                  static_cast<double>(Count[I])
                            : 0;
  auto Chain = [&](ArrayRef<uint32_t> Order, double Reach) {
    double Cost = 0;
    for (uint32_t C : Order) {
      Cost += Test(Reach, Share(C));
      Reach -= Share(C);
    }
    return Cost;
  };
  double Cost = Chain(Prefix, 1) + FallbackShare * FallbackCost;
  for (size_t I = 0; I < Nodes.size(); ++I) {
    const Node &N = Nodes[I];
    double Reach = Mass[I] + Fallback[I];
    if (N.Kind == NodeKind::Chain) {
      Cost += Chain(N.Cases, Reach);
      continue;
    }
    for (size_t J = 0; J + 1 < N.Children.size(); ++J) {
      double Taken = Mass[N.Children[J]] + Fallback[N.Children[J]];
      Cost += Test(Reach, Taken);
      Reach -= Taken;
    }
  }
  return Cost;
}

StringRef DispatchLayout::shapeName() const {
  switch (TheShape) {
  case Shape::Chain:
    return "chain";
  case Shape::Bisect:
    return "bisect";
  case Shape::HotScan:
    return "hot-scan";
  case Shape::FallbackOnly:
    return "fallback-only";
  }
  return "?";
}

void DispatchLayout::print(raw_ostream &OS, ArrayRef<LayoutCase> Cases,
                           function_ref<std::string(uint32_t)> NameOf) const {
  OS << "layout " << shapeName() << ", predicted " << format("%.1f", Cost)
     << " units per call\n";
  auto Key = [&](uint32_t C) {
    return NameOf ? NameOf(C) : formatv("{0:x}", Cases[C].Key).str();
  };
  if (!Prefix.empty()) {
    OS << "  prefix:";
    for (uint32_t C : Prefix)
      OS << ' ' << Key(C);
    OS << '\n';
  }
  auto Print = [&](auto &Self, uint32_t I, unsigned Depth) -> void {
    const Node &N = Nodes[I];
    OS.indent(2 + 2 * Depth);
    switch (N.Kind) {
    case NodeKind::Chain:
      OS << "chain:";
      for (uint32_t C : N.Cases)
        OS << ' ' << Key(C);
      if (N.Cases.empty())
        OS << " (fallback)";
      OS << '\n';
      return;
    case NodeKind::Bisect:
      OS << "bisect below " << Key(N.Cases.front()) << '\n';
      break;
    case NodeKind::Scan:
      OS << "scan below";
      for (uint32_t C : N.Cases)
        OS << ' ' << Key(C);
      OS << '\n';
      break;
    }
    for (uint32_t Child : N.Children)
      Self(Self, Child, Depth + 1);
  };
  Print(Print, 0, 0);
}

} // namespace dispatchgen
