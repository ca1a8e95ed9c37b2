//===- DispatchLayout.h - The compare tree of a dispatcher ------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The layout of a dispatcher, independent of the instruction set: which
// selector values it compares with, in which order, and where each compare
// leads. It is chosen once, by one cost model, and both lowerings turn the
// same value into code: the x86-64 image emitter (X86ImageEmitter.h) into
// machine code directly, DispatchIRBuilder into LLVM IR branches for the
// code generator. LLVM's SwitchCG::SwitchLowering, shared by SelectionDAG
// and GlobalISel, is the model: the clustering and the tree are decided
// once, then each instruction selector emits them.
//
// Four shapes:
//
//   Chain         keys unknown (symbols resolved at link time): one
//                 equality test per case, hottest first.
//   Bisect        unweighted: a binary search, balanced by count, down to
//                 chains of at most three cases (where LLVM's switch
//                 lowering stops splitting too).
//   HotScan       weighted: the hottest cases tested one by one (a prefix
//                 as long as the cost model favours; every case makes it a
//                 linear scan), then a scan of the rest: up to 16 bounds
//                 tested in key order per level (`sel < bound`, one
//                 misprediction per level, 4 bits resolved), down to chains
//                 of up to 16 cases, hottest first. A weight-balanced binary
//                 tree is the branch predictor's worst case: with calls
//                 drawn at random, each of its branches is a coin toss.
//   FallbackOnly  no tree: the entry performs the fallback for every call,
//                 where the model finds the retpoline or the indirect call
//                 cheaper than any tree (only when the options allow it).
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_DISPATCHLAYOUT_H
#define DISPATCH_GEN_DISPATCHLAYOUT_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <string>

#include <cstdint>
#include <vector>

namespace llvm {
class raw_ostream;
} // namespace llvm

namespace dispatchgen {

/// One case to lay out: the selector value that picks it and how often it
/// was called. All weights 0 means unweighted.
struct LayoutCase {
  uint64_t Key = 0;
  uint64_t Weight = 0;
};

/// The cost model layouts are chosen and predicted by, in units of about
/// a twentieth of a retpoline. Calls are taken as drawn at random with the
/// observed frequencies, so a branch taken with probability q is
/// mispredicted min(q, 1 - q) of the time (with independent draws history
/// does not help the predictor).
///
/// The defaults fit what `dispatch-gen bench` measures on an Intel Xeon
/// (three runs, README "Adaptive dispatch"): a level of a bisection that
/// is always predicted, its compare and its taken `jb` included, adds
/// 0.09 ns (one hot program at N = 2 to 4096: 0.66 to 1.67 ns over 11
/// levels), so a taken branch costs no more than a compare there and the
/// model charges every test the same; a mispredicted compare in a chain
/// costs about 8.4 ns, as much as a retpoline (9 ns, 8.35 ns more than a
/// direct call); and a round-robin that history follows still misses
/// about a tenth of what independent draws would (N = 16 to 256, bisection
/// and scan alike).
///
/// These hold for that machine; another's differ (README, "Adaptive
/// dispatch", says how to measure them).
struct LayoutCostModel {
  /// A compare and a branch that is predicted, taken or not.
  double Compare = 0.25;
  /// A mispredicted branch.
  double Mispredict = 20;
  /// An indirect branch whose target the predictor has.
  double IndirectBranch = 2;
  /// A retpoline: never predicted; about a misprediction and the thunk.
  double Retpoline = 20;
  /// How many distinct targets a branch predictor's history follows in a
  /// predictable order: beyond it, LayoutOptions::Predictability counts in
  /// proportion. Measured with `dispatch-gen bench` on an Intel Xeon: a
  /// round-robin through a bisection costs about 6 ns per call up to 1024
  /// programs and 20 ns at 4096, where the retpoline is 11.
  double PredictorCapacity = 2048;
  /// The share of the mispredictions of independent draws that a
  /// predictor with history still makes on an order it follows
  /// (LayoutOptions::Predictability 1).
  double ResidualMispredict = 0.1;
  /// A mispredicted indirect branch: cheaper than a mispredicted compare
  /// in a chain on the Xeon (6.6 ns against 8.4 ns: an indirect call among
  /// eight equally likely targets costs 7.00 ns, one always to the same
  /// target 1.19 ns, for 7 misses in 8).
  double IndirectMispredict = 16;
};

/// What a layout is chosen for besides its cases' weights.
struct LayoutOptions {
  /// Calls that took the fallback (selectors of no case), counted over the
  /// same period as the weights. They pay every test on their way and then
  /// the fallback.
  uint64_t FallbackWeight = 0;
  /// The fallback is a retpoline rather than a predicted indirect branch.
  bool RetpolineFallback = false;
  /// Whether no tree at all may be chosen: the entry then performs the
  /// fallback for every call, registered programs included. An adaptive
  /// dispatcher allows it where that is cheapest; a plain one, which
  /// promises a direct call to each program, does not.
  bool AllowFallbackOnly = false;
  /// How much better than independent draws the order of calls is
  /// predicted, from 0 (independent: the default) to 1 (each call's target
  /// follows from the previous one's, as in a round-robin): the share of
  /// mispredictions a branch predictor with history avoids. It scales the
  /// mispredictions of every tree and of a plain indirect fallback; a
  /// retpoline is never predicted.
  double Predictability = 0;
};

/// A dispatcher's compare tree. Cases are named by their index in the
/// ArrayRef<LayoutCase> the layout was made for.
class DispatchLayout {
public:
  enum class Shape : uint8_t { Chain, Bisect, HotScan, FallbackOnly };

  enum class NodeKind : uint8_t {
    /// `sel == key` for each of Cases in turn, each leading to its case; a
    /// miss goes to the fallback. No cases: straight to the fallback.
    Chain,
    /// `sel < key(Cases[0])` leads to Children[0], else Children[1].
    Bisect,
    /// `sel < key(Cases[J])` tested for J = 0, 1, ... in order: the first
    /// that holds leads to Children[J]; none leads to the last child.
    /// Cases[J] is the lowest case of Children[J + 1].
    Scan,
  };

  struct Node {
    NodeKind Kind = NodeKind::Chain;
    llvm::SmallVector<uint32_t, 4> Cases;
    /// Indices of nodes, in key order (Bisect and Scan only).
    llvm::SmallVector<uint32_t, 4> Children;
  };

  /// The layout the cost model picks for Cases, whose keys must be distinct
  /// (callers check). Without weights: Bisect. With them, the cheapest the
  /// model predicts of HotScan (whose prefix may hold every case: a linear
  /// scan), Bisect and, where Options allow it, FallbackOnly.
  static DispatchLayout choose(llvm::ArrayRef<LayoutCase> Cases,
                               const LayoutOptions &Options = {},
                               const LayoutCostModel &Model = {});

  /// A Chain for cases whose keys are not known: hottest first when
  /// weighted, the order given otherwise (and among equal weights).
  static DispatchLayout chain(llvm::ArrayRef<LayoutCase> Cases,
                              const LayoutCostModel &Model = {});

  Shape shape() const { return TheShape; }
  /// "chain", "bisect", "hot-scan" or "fallback-only".
  llvm::StringRef shapeName() const;
  /// The model's cost of an average call of this layout (made for other
  /// weights, perhaps) under Cases' weights and Options: what keeping it
  /// would cost, next to a new layout's predictedCost().
  double costUnder(llvm::ArrayRef<LayoutCase> Cases,
                   const LayoutOptions &Options,
                   const LayoutCostModel &Model = {}) const {
    return predict(Cases, Options, Model);
  }
  /// The two terms costUnder() prices, uncosted: the tests (compares) and
  /// mispredicted branches of an average call. Fitting the model's
  /// constants to measured costs (CostCalibration.h, `dispatch-gen
  /// bench`) counts with these, so the fit uses the model's own
  /// accounting. The fallback's own cost is not in them.
  struct CallTerms {
    double Compares = 0;
    double Mispredicts = 0;
  };
  CallTerms termsUnder(llvm::ArrayRef<LayoutCase> Cases,
                       const LayoutOptions &Options) const;
  /// The cases tested one by one before the tree, in order.
  llvm::ArrayRef<uint32_t> prefix() const { return Prefix; }
  /// The tree's root; its nodes are made before their children.
  const Node &root() const { return Nodes.front(); }
  const Node &node(uint32_t Index) const { return Nodes[Index]; }
  size_t numNodes() const { return Nodes.size(); }
  /// The model's cost of an average call, in its cycles: calls to the
  /// cases as weighted (unweighted layouts count every case equally) and
  /// Options.FallbackWeight calls to the fallback, which are taken to
  /// spread over the tree as the cases do.
  double predictedCost() const { return Cost; }

  /// Writes the layout one node per line: the shape and predicted cost,
  /// the prefix, then each node, indented under its parent. Cases are
  /// shown as NameOf names them, or by their keys in hex.
  void print(llvm::raw_ostream &OS, llvm::ArrayRef<LayoutCase> Cases,
             llvm::function_ref<std::string(uint32_t)> NameOf = nullptr) const;

private:
  DispatchLayout() = default;
  uint32_t addChain(llvm::ArrayRef<uint32_t> Ordered);
  uint32_t addBisect(llvm::ArrayRef<LayoutCase> Cases,
                     llvm::ArrayRef<uint32_t> Sorted);
  uint32_t addScan(llvm::ArrayRef<LayoutCase> Cases,
                   llvm::ArrayRef<uint32_t> Sorted);
  double predict(llvm::ArrayRef<LayoutCase> Cases, const LayoutOptions &Options,
                 const LayoutCostModel &Model) const;

  Shape TheShape = Shape::Chain;
  std::vector<uint32_t> Prefix;
  std::vector<Node> Nodes;
  double Cost = 0;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_DISPATCHLAYOUT_H
