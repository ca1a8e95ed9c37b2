//===- NearMemoryManager.h - JIT memory within rel32 reach ------*- C++ -*-===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//
//
// A JITLinkMemoryManager that carves every allocation out of one region it
// reserves near a given address, so that `je/jmp rel32` from an image reaches
// the trampoline and the programs near that address. Stock ORC memory
// managers place memory wherever mmap puts it, and JITLink then routes an
// out-of-range branch through a stub (`jmp *GOT`): an indirect jump.
//
// Freed pages are made inaccessible at once, so a call into a freed image
// faults instead of running stale bytes.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_LOWERING_NEARMEMORYMANAGER_H
#define DISPATCH_GEN_LIB_LOWERING_NEARMEMORYMANAGER_H

#include "llvm/ADT/FunctionExtras.h"
#include "llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h"

#include <atomic>
#include <deque>
#include <map>
#include <mutex>

namespace dispatchgen {

class NearMemoryManager : public llvm::jitlink::JITLinkMemoryManager {
public:
  /// Reserves RegionSize bytes (no memory committed) as close to Near as
  /// possible, within +-1 GiB of it; anywhere when Near is 0.
  static llvm::Expected<std::unique_ptr<NearMemoryManager>>
  create(uint64_t Near, size_t RegionSize);

  ~NearMemoryManager() override;

  uint64_t regionBase() const { return reinterpret_cast<uint64_t>(Base); }
  uint64_t regionEnd() const { return regionBase() + Size; }
  /// Whether a rel32 branch anywhere in the region reaches Address.
  bool reachesFromEverywhere(uint64_t Address) const;

  /// Allocations finalized and not yet deallocated.
  uint64_t liveAllocations() const { return Live.load(); }

  /// Testing only: freed ranges stay inaccessible in a FIFO of the last
  /// Count frees before they can be reused, so a caller left behind in a
  /// freed image faults instead of running the next image placed there.
  void setQuarantineForTesting(size_t Count) {
    std::lock_guard<std::mutex> Lock(M);
    QuarantineLimit = Count;
  }

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

  NearMemoryManager(char *Base, size_t Size, size_t PageSize);
  char *carve(size_t Bytes);
  void release(char *P, size_t Bytes);
  /// Returns a range to Free, coalescing it; M must be held.
  void addFree(char *P, size_t Bytes);

  char *Base;
  size_t Size;
  size_t PageSize;
  /// Guards Free and AllocHook. allocate() runs on the updating thread,
  /// deallocate() on whichever thread reclaims an image.
  std::mutex M;
  /// Free ranges of the region, by start address (first fit, coalesced).
  std::map<char *, size_t> Free;
  /// Freed ranges not yet in Free (testing only), oldest first.
  std::deque<std::pair<char *, size_t>> Quarantine;
  size_t QuarantineLimit = 0;
  llvm::unique_function<llvm::Error()> AllocHook;
  std::atomic<uint64_t> Live{0};
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_LOWERING_NEARMEMORYMANAGER_H
