//===- NearMemoryManager.cpp - JIT memory within rel32 reach --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "NearMemoryManager.h"

#include "NearArena.h"

#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/Shared/AllocationActions.h"
#include "llvm/ExecutionEngine/Orc/Shared/MemoryFlags.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstring>

using namespace llvm;
using namespace llvm::jitlink;

namespace dispatchgen {

struct NearMemoryManager::AllocInfo {
  NearArena::Block Block;
  std::vector<orc::shared::WrapperFunctionCall> DeallocActions;
};

class NearMemoryManager::InFlight : public InFlightAlloc {
public:
  InFlight(NearMemoryManager &MM, LinkGraph &G, NearArena::Block B)
      : MM(MM), G(G), B(B) {}

  void finalize(OnFinalizedFunction OnFinalized) override {
    // The memory is executable already: nothing to protect, and x86 needs
    // no instruction cache flush.
    auto DeallocActions = orc::shared::runFinalizeActions(G.allocActions());
    if (!DeallocActions) {
      NearArena::get().release(B);
      return OnFinalized(DeallocActions.takeError());
    }
    MM.Live.fetch_add(1);
    OnFinalized(FinalizedAlloc(orc::ExecutorAddr::fromPtr(
        new AllocInfo{B, std::move(*DeallocActions)})));
  }

  void abandon(OnAbandonedFunction OnAbandoned) override {
    NearArena::get().release(B);
    OnAbandoned(Error::success());
  }

private:
  NearMemoryManager &MM;
  LinkGraph &G;
  NearArena::Block B;
};

void NearMemoryManager::allocate(const JITLinkDylib *, LinkGraph &G,
                                 OnAllocatedFunction OnAllocated) {
  {
    std::lock_guard<std::mutex> Lock(M);
    if (AllocHook)
      if (Error E = AllocHook())
        return OnAllocated(std::move(E));
  }
  BasicLayout BL(G);
  // Segments packed one after another, each at its own alignment.
  uint64_t Total = 0, MaxAlign = 16;
  for (auto &KV : BL.segments()) {
    auto &Seg = KV.second;
    if (Seg.ContentSize + Seg.ZeroFillSize == 0)
      continue;
    if ((KV.first.getMemProt() & orc::MemProt::Write) != orc::MemProt::None)
      return OnAllocated(createStringError(
          formatv("graph '{0}' has writable data, which dispatcher images "
                  "never have",
                  G.getName())));
    uint64_t Align = Seg.Alignment.value();
    MaxAlign = std::max(MaxAlign, Align);
    Total = alignTo(Total, Align) + Seg.ContentSize + Seg.ZeroFillSize;
  }
  auto B = NearArena::get().allocate(Total, MaxAlign, Near);
  if (!B)
    return OnAllocated(B.takeError());
  uint64_t Offset = 0;
  for (auto &KV : BL.segments()) {
    auto &Seg = KV.second;
    if (Seg.ContentSize + Seg.ZeroFillSize == 0)
      continue;
    Offset = alignTo(Offset, Seg.Alignment.value());
    Seg.Addr = orc::ExecutorAddr(B->Address + Offset);
    Seg.WorkingMem = B->writable() + Offset;
    // Reused memory holds `hlt`s.
    std::memset(Seg.WorkingMem + Seg.ContentSize, 0, Seg.ZeroFillSize);
    Offset += Seg.ContentSize + Seg.ZeroFillSize;
  }
  if (Error E = BL.apply()) {
    NearArena::get().release(*B);
    return OnAllocated(std::move(E));
  }
  OnAllocated(std::make_unique<InFlight>(*this, G, *B));
}

void NearMemoryManager::deallocate(std::vector<FinalizedAlloc> Allocs,
                                   OnDeallocatedFunction OnDeallocated) {
  Error Err = Error::success();
  for (auto &FA : llvm::reverse(Allocs)) {
    auto *Info = FA.release().toPtr<AllocInfo *>();
    Err = joinErrors(std::move(Err),
                     orc::shared::runDeallocActions(Info->DeallocActions));
    NearArena::get().release(Info->Block);
    delete Info;
    Live.fetch_sub(1);
  }
  OnDeallocated(std::move(Err));
}

} // namespace dispatchgen
