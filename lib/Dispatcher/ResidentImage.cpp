//===- ResidentImage.cpp - The live image's copy behind the entry ---------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "ResidentImage.h"

#include "ImageLinker.h"

#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Trampoline.h"

#include <algorithm>
#include <vector>

using namespace llvm;

namespace dispatchgen {

bool ResidentImage::allowed(const DispatcherConfig &Config) {
  // Rewriting the area waits for a grace period, which only a synchronous
  // update does.
  return Config.ResidentBytes && !Config.CompiledEntry &&
         Config.Reclaim == ReclaimMode::Synchronous;
}

size_t ResidentImage::areaSize(const DispatcherConfig &Config,
                               std::optional<unsigned> SelectorReg,
                               bool ThunkFallback) {
  // Only laid-out images run resident.
  if (!allowed(Config) || !SelectorReg)
    return 0;
  // An image of Capacity programs takes at least 13 bytes each.
  if (Config.Capacity > Config.ResidentBytes / 13)
    return Config.ResidentBytes;
  // The image of Capacity programs spread above 4 GiB (so that it starts
  // with the 64-bit base), and a quarter more for the weighted layouts,
  // which test their hottest programs before the tree.
  std::vector<ImageCase> Cases;
  for (unsigned I = 0; I < Config.Capacity; ++I)
    Cases.push_back({(1ull << 40) + 64 * (I + 1), 0, 0});
  auto Code = emitX86Image(Cases, *SelectorReg, ThunkFallback,
                           Config.ImageDelayForTesting);
  if (!Code) {
    consumeError(Code.takeError());
    return Config.ResidentBytes;
  }
  size_t Need = Code->Code.size() + Code->Code.size() / 4 + 32;
  return std::min(Config.ResidentBytes, Need);
}

void ResidentImage::settle(const std::optional<X86Image> &Code,
                           ArrayRef<ImageCase> Cases, Verifier Verify,
                           const Twine &PerfName) {
  Size = 0;
  // A compiled image keeps the jump: its relocations are JITLink's.
  if (!Code || Code->Code.size() > Entry.residentCapacity())
    return;
  uint64_t Thunk = 0;
  if (Code->ThunkBranch) {
    auto T = Linker.fallbackThunk();
    if (!T) {
      consumeError(T.takeError());
      return;
    }
    Thunk = *T;
  }
  auto Bytes = relocateX86Image(*Code, Cases, Entry.residentAddress(), Thunk);
  if (!Bytes) {
    consumeError(Bytes.takeError());
    return;
  }
  if (Error E = Entry.writeResident(*Bytes)) {
    consumeError(std::move(E));
    return;
  }
  if (Verify)
    if (Error E = Verify(Entry.residentAddress(), Bytes->size())) {
      consumeError(std::move(E));
      return;
    }
  // A failure leaves the entry jumping to the image: slower, still right.
  if (Error E = Entry.openGate()) {
    consumeError(std::move(E));
    return;
  }
  Size = Bytes->size();
  Linker.writePerfMap(Entry.residentAddress(), Size, PerfName.str());
}

bool ResidentImage::isOpen() const { return Entry.isResident(); }

uint64_t ResidentImage::address() const { return Entry.residentAddress(); }

} // namespace dispatchgen
