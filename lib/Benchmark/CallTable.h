//===- CallTable.h - Call costs by pattern, N and variant -------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The call-cost results of a report, looked up by (pattern, N, variant),
// for the text report and the adaptive variant's table and goals. Private
// to the Benchmark component.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_BENCHMARK_CALLTABLE_H
#define DISPATCH_GEN_LIB_BENCHMARK_CALLTABLE_H

#include "dispatch-gen/Benchmark.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLExtras.h"

#include <map>
#include <optional>
#include <tuple>
#include <vector>

namespace dispatchgen::bench {

/// Cost by (pattern, N, variant), and the Ns and patterns measured, in the
/// order measured.
struct CallTable {
  std::map<std::tuple<Pattern, unsigned, CallVariant>, double> Cost;
  std::vector<Pattern> Patterns;
  std::vector<unsigned> Ns;

  explicit CallTable(llvm::ArrayRef<CallCost> Calls) {
    for (const CallCost &C : Calls) {
      Cost[{C.P, C.N, C.V}] = C.NsPerCall;
      if (!llvm::is_contained(Patterns, C.P))
        Patterns.push_back(C.P);
      if (!llvm::is_contained(Ns, C.N))
        Ns.push_back(C.N);
    }
  }
  std::optional<double> get(Pattern P, unsigned N, CallVariant V) const {
    auto It = Cost.find({P, N, V});
    if (It == Cost.end())
      return std::nullopt;
    return It->second;
  }
  /// A measured (positive) cost, or nothing.
  std::optional<double> positive(Pattern P, unsigned N, CallVariant V) const {
    auto X = get(P, N, V);
    if (!X || *X <= 0)
      return std::nullopt;
    return X;
  }
  std::optional<double> ratio(Pattern P, unsigned N, CallVariant V) const {
    auto X = get(P, N, V), D = get(P, N, CallVariant::Direct);
    if (!X || !D || *D <= 0)
      return std::nullopt;
    return *X / *D;
  }
};

} // namespace dispatchgen::bench

#endif // DISPATCH_GEN_LIB_BENCHMARK_CALLTABLE_H
