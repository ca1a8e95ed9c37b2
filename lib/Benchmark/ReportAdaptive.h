//===- ReportAdaptive.h - The adaptive variant in the reports ---*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Private to the Benchmark component: Report.cpp's sections about the
// Adaptive variant.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_BENCHMARK_REPORTADAPTIVE_H
#define DISPATCH_GEN_LIB_BENCHMARK_REPORTADAPTIVE_H

#include "dispatch-gen/Benchmark.h"

namespace dispatchgen::bench {

/// The learned layouts, one row per pattern and N (nothing when the report
/// has none).
void printAdaptive(const Report &R, llvm::raw_ostream &OS);
/// The summary's lines about the goals of adaptive dispatch, each with the
/// worst ratio measured and whether it is met.
void printAdaptiveGoals(const Report &R, llvm::raw_ostream &OS);

} // namespace dispatchgen::bench

#endif // DISPATCH_GEN_LIB_BENCHMARK_REPORTADAPTIVE_H
