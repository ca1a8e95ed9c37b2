//===- ProcessStats.h - The process's memory, mappings and files -*- C++
//-*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_BENCHMARK_PROCESSSTATS_H
#define DISPATCH_GEN_LIB_BENCHMARK_PROCESSSTATS_H

#include <cstdint>

namespace dispatchgen::bench {

/// Resident bytes of this process, from /proc/self/statm (0 if unknown).
int64_t residentBytes();
/// Lines of /proc/self/maps.
int64_t mappingCount();
/// Open file descriptors, from /proc/self/fd.
int64_t fileDescriptorCount();
/// CPU time of all the process's threads so far (user and system), in
/// seconds.
double processCPUSeconds();

} // namespace dispatchgen::bench

#endif // DISPATCH_GEN_LIB_BENCHMARK_PROCESSSTATS_H
