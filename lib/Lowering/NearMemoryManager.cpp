//===- NearMemoryManager.cpp - JIT memory within rel32 reach --------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//

#include "NearMemoryManager.h"

#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/Shared/AllocationActions.h"
#include "llvm/ExecutionEngine/Orc/Shared/MemoryFlags.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Memory.h"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

using namespace llvm;
using namespace llvm::jitlink;

namespace dispatchgen {

static Error makeError(const Twine &Msg) {
  return make_error<StringError>(Msg, inconvertibleErrorCode());
}

struct NearMemoryManager::AllocInfo {
  char *Base;
  size_t Size;
  std::vector<orc::shared::WrapperFunctionCall> DeallocActions;
};

class NearMemoryManager::InFlight : public InFlightAlloc {
public:
  InFlight(NearMemoryManager &MM, LinkGraph &G, BasicLayout BL, char *Base,
           size_t Size)
      : MM(MM), G(G), BL(std::move(BL)), Base(Base), Size(Size) {}

  void finalize(OnFinalizedFunction OnFinalized) override {
    for (auto &KV : BL.segments()) {
      auto &Seg = KV.second;
      size_t SegSize = alignTo(Seg.ContentSize + Seg.ZeroFillSize, MM.PageSize);
      if (SegSize == 0)
        continue;
      sys::MemoryBlock MB(Seg.WorkingMem, SegSize);
      auto Prot = orc::toSysMemoryProtectionFlags(KV.first.getMemProt());
      if (auto EC = sys::Memory::protectMappedMemory(MB, Prot))
        return OnFinalized(errorCodeToError(EC));
      if (Prot & sys::Memory::MF_EXEC)
        sys::Memory::InvalidateInstructionCache(MB.base(), MB.allocatedSize());
    }
    auto DeallocActions = orc::shared::runFinalizeActions(G.allocActions());
    if (!DeallocActions)
      return OnFinalized(DeallocActions.takeError());
    MM.Live.fetch_add(1);
    OnFinalized(FinalizedAlloc(orc::ExecutorAddr::fromPtr(
        new AllocInfo{Base, Size, std::move(*DeallocActions)})));
  }

  void abandon(OnAbandonedFunction OnAbandoned) override {
    MM.release(Base, Size);
    OnAbandoned(Error::success());
  }

private:
  NearMemoryManager &MM;
  LinkGraph &G;
  BasicLayout BL;
  char *Base;
  size_t Size;
};

Expected<std::unique_ptr<NearMemoryManager>>
NearMemoryManager::create(uint64_t Near, size_t RegionSize) {
  size_t PS = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  RegionSize = alignTo(RegionSize, PS);
  int Flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  auto Accept = [&](void *P) {
    return std::unique_ptr<NearMemoryManager>(
        new NearMemoryManager(static_cast<char *>(P), RegionSize, PS));
  };
  if (Near == 0) {
    void *P = mmap(nullptr, RegionSize, PROT_NONE, Flags, -1, 0);
    if (P == MAP_FAILED)
      return makeError(formatv("cannot reserve {0} bytes for images: {1}",
                               RegionSize, std::strerror(errno)));
    return Accept(P);
  }
  // Closest first, alternating below and above Near, in 2 MiB steps.
  constexpr uint64_t Step = 2ull << 20, Reach = 1ull << 30;
  uint64_t Anchor = Near & ~(Step - 1);
  for (uint64_t Off = Step; Off < Reach; Off += Step) {
    for (int Dir : {-1, +1}) {
      if (Dir < 0 && Anchor < Off + RegionSize)
        continue;
      uint64_t Hint = Dir < 0 ? Anchor - Off - RegionSize : Anchor + Off;
      void *P = mmap(reinterpret_cast<void *>(Hint), RegionSize, PROT_NONE,
                     Flags | MAP_FIXED_NOREPLACE, -1, 0);
      if (P == MAP_FAILED)
        continue;
      if (reinterpret_cast<uint64_t>(P) == Hint)
        return Accept(P);
      munmap(P, RegionSize); // a pre-4.17 kernel took the flag as a hint
    }
  }
  return makeError(formatv("no free address range of {0} bytes within 1 GiB "
                           "of {1:x} for images",
                           RegionSize, Near));
}

NearMemoryManager::NearMemoryManager(char *Base, size_t Size, size_t PageSize)
    : Base(Base), Size(Size), PageSize(PageSize) {
  Free[Base] = Size;
}

NearMemoryManager::~NearMemoryManager() { munmap(Base, Size); }

bool NearMemoryManager::reachesFromEverywhere(uint64_t Address) const {
  // The farthest rel32 field is at one end of the region; keep a page of
  // slack for the field's own offset within the instruction.
  auto Fits = [](uint64_t From, uint64_t To) {
    int64_t D = static_cast<int64_t>(To - From);
    return D > INT32_MIN + 4096 && D < INT32_MAX - 4096;
  };
  return Fits(regionBase(), Address) && Fits(regionEnd(), Address);
}

char *NearMemoryManager::carve(size_t Bytes) {
  std::lock_guard<std::mutex> Lock(M);
  for (auto It = Free.begin(); It != Free.end(); ++It) {
    if (It->second < Bytes)
      continue;
    char *P = It->first;
    size_t Rest = It->second - Bytes;
    Free.erase(It);
    if (Rest)
      Free[P + Bytes] = Rest;
    return P;
  }
  return nullptr;
}

void NearMemoryManager::release(char *P, size_t Bytes) {
  // Inaccessible at once: a call into freed code faults.
  mprotect(P, Bytes, PROT_NONE);
  madvise(P, Bytes, MADV_DONTNEED);
  std::lock_guard<std::mutex> Lock(M);
  if (!QuarantineLimit) {
    addFree(P, Bytes);
    return;
  }
  Quarantine.push_back({P, Bytes});
  while (Quarantine.size() > QuarantineLimit) {
    addFree(Quarantine.front().first, Quarantine.front().second);
    Quarantine.pop_front();
  }
}

void NearMemoryManager::addFree(char *P, size_t Bytes) {
  auto It = Free.emplace(P, Bytes).first;
  if (auto Next = std::next(It);
      Next != Free.end() && It->first + It->second == Next->first) {
    It->second += Next->second;
    Free.erase(Next);
  }
  if (It != Free.begin()) {
    auto Prev = std::prev(It);
    if (Prev->first + Prev->second == It->first) {
      Prev->second += It->second;
      Free.erase(It);
    }
  }
}

void NearMemoryManager::allocate(const JITLinkDylib *, LinkGraph &G,
                                 OnAllocatedFunction OnAllocated) {
  {
    std::lock_guard<std::mutex> Lock(M);
    if (AllocHook)
      if (Error E = AllocHook())
        return OnAllocated(std::move(E));
  }
  BasicLayout BL(G);
  auto Sizes = BL.getContiguousPageBasedLayoutSizes(PageSize);
  if (!Sizes)
    return OnAllocated(Sizes.takeError());
  size_t Total = Sizes->total();
  char *Mem = carve(Total);
  if (!Mem)
    return OnAllocated(makeError(
        formatv("the image region ({0} bytes) has no room for {1} more bytes",
                Size, Total)));
  if (mprotect(Mem, Total, PROT_READ | PROT_WRITE)) {
    Error E = makeError(
        formatv("cannot map image memory: {0}", std::strerror(errno)));
    release(Mem, Total);
    return OnAllocated(std::move(E));
  }
  // In process, the working memory is the final memory.
  char *Next = Mem;
  for (auto &KV : BL.segments()) {
    auto &Seg = KV.second;
    Seg.Addr = orc::ExecutorAddr::fromPtr(Next);
    Seg.WorkingMem = Next;
    Next += alignTo(Seg.ContentSize + Seg.ZeroFillSize, PageSize);
  }
  if (Error E = BL.apply()) {
    release(Mem, Total);
    return OnAllocated(std::move(E));
  }
  OnAllocated(std::make_unique<InFlight>(*this, G, std::move(BL), Mem, Total));
}

void NearMemoryManager::deallocate(std::vector<FinalizedAlloc> Allocs,
                                   OnDeallocatedFunction OnDeallocated) {
  Error Err = Error::success();
  for (auto &FA : llvm::reverse(Allocs)) {
    auto *Info = FA.release().toPtr<AllocInfo *>();
    Err = joinErrors(std::move(Err),
                     orc::shared::runDeallocActions(Info->DeallocActions));
    release(Info->Base, Info->Size);
    delete Info;
    Live.fetch_sub(1);
  }
  OnDeallocated(std::move(Err));
}

} // namespace dispatchgen
