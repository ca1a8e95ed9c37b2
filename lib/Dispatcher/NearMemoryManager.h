//===- NearMemoryManager.h - JIT memory within rel32 reach ------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A JITLinkMemoryManager that places every allocation in the process's code
// arena (NearArena), within reach of a given address, so that `je/jmp
// rel32` from an image reaches the entry and the programs near that
// address. Stock ORC memory managers place memory wherever mmap puts it, and
// JITLink then routes an out-of-range branch through a stub (`jmp *GOT`):
// an indirect jump.
//
// The arena is executable memory written through a second, writable view:
// JITLink writes the working memory (the view) and the code runs at the
// final address. Segments are packed, not page-aligned; an image has no
// writable data, and a graph that asks for any is refused. Freed memory is
// filled with `hlt` at once, so a call into a freed image faults instead of
// running stale bytes.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_NEARMEMORYMANAGER_H
#define DISPATCH_GEN_LIB_DISPATCHER_NEARMEMORYMANAGER_H

#include "llvm/ADT/FunctionExtras.h"
#include "llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h"

#include <atomic>
#include <mutex>

namespace dispatchgen {

class NearMemoryManager : public llvm::jitlink::JITLinkMemoryManager {
public:
  /// Places allocations within NearArena::Reach of Near (anywhere when
  /// Near is 0).
  explicit NearMemoryManager(uint64_t Near) : Near(Near) {}

  /// Allocations finalized and not yet deallocated.
  uint64_t liveAllocations() const { return Live.load(); }

  /// Testing hook, run on every allocate(): an error fails the allocation.
  void setAllocationHook(llvm::unique_function<llvm::Error()> Hook) {
    std::lock_guard<std::mutex> Lock(M);
    AllocHook = std::move(Hook);
  }

  void allocate(const llvm::jitlink::JITLinkDylib *JD,
                llvm::jitlink::LinkGraph &G,
                OnAllocatedFunction OnAllocated) override;
  using JITLinkMemoryManager::allocate;

  void deallocate(std::vector<FinalizedAlloc> Allocs,
                  OnDeallocatedFunction OnDeallocated) override;
  using JITLinkMemoryManager::deallocate;

private:
  class InFlight;
  struct AllocInfo;

  uint64_t Near;
  /// Guards AllocHook.
  std::mutex M;
  llvm::unique_function<llvm::Error()> AllocHook;
  std::atomic<uint64_t> Live{0};
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_NEARMEMORYMANAGER_H
