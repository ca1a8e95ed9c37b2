//===- ImageLinker.cpp - Compile and link dispatcher images ---------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The linker's lifetime and its arena half: laid-out images placed in the
// code arena without ORC, freeing images of either kind, the perf map and
// error reports. The ORC half (compiled images, the fallback thunk, entry
// symbols) is in ImageLinkerORC.cpp.
//
//===----------------------------------------------------------------------===//

#include "ImageLinker.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace llvm;
using namespace llvm::orc;

namespace dispatchgen {

/// Opens /tmp/perf-<pid>.map to append to. /tmp is shared: another user may
/// have planted a link there, so the file must be a regular file of ours,
/// reached without following a symbolic link, with no other name.
static Expected<int> openPerfMap() {
  std::string Path = formatv("/tmp/perf-{0}.map", ::getpid()).str();
  int FD = ::open(Path.c_str(),
                  O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (FD < 0)
    return createStringError(
        formatv("cannot open the perf map '{0}': {1}", Path,
                errno == ELOOP ? "it is a symbolic link"
                               : errnoAsErrorCode().message()));
  struct stat St;
  std::string Why;
  if (::fstat(FD, &St) != 0)
    Why = errnoAsErrorCode().message();
  else if (!S_ISREG(St.st_mode))
    Why = "it is not a regular file";
  else if (St.st_uid != ::geteuid())
    Why = formatv("it belongs to user {0}, not to this process's user {1}",
                  St.st_uid, ::geteuid());
  else if (St.st_nlink != 1)
    Why = "it has other names (hard links)";
  if (Why.empty())
    return FD;
  ::close(FD);
  return createStringError(
      formatv("refusing the perf map '{0}': {1}", Path, Why));
}

Expected<std::unique_ptr<ImageLinker>>
ImageLinker::create(ExecutionSession *ES, const ImageLinkerOptions &Options,
                    uint64_t Near) {
  std::unique_ptr<ImageLinker> L(new ImageLinker());
  L->Near = Near;
  L->Name = Options.Name;
  L->OptLevel = Options.OptLevel;
  L->RegisterWithDebugger = Options.RegisterWithDebugger;
  L->Faults = Options.Faults;
  L->Retpoline = Options.RetpolineFallback;
  L->FallbackHook = Options.FallbackHook;
  L->ES = ES;
  L->ThePlugin = makePlugin(L->Faults);
  if (Options.PerfMap) {
    auto FD = openPerfMap();
    if (!FD)
      return FD.takeError();
    L->PerfMapFD = *FD;
  }
  return std::move(L);
}

ImageLinker::~ImageLinker() {
  if (PerfMapFD >= 0)
    ::close(PerfMapFD);
  // Free our code before the layer that owns its allocations goes.
  for (JITDylib *JD : Dylibs)
    if (JD)
      consumeError(ES->removeJITDylib(*JD));
  if (ThunkJD)
    consumeError(ES->removeJITDylib(*ThunkJD));
  // The entries' JITDylib stays for the session: a host's link orders may
  // name it. Only this dispatcher's symbol goes, so a later lookup of it
  // fails cleanly instead of reaching freed memory.
  if (EntryJD)
    consumeError(EntryJD->remove({EntrySymbol}));
  if (OwnedES)
    consumeError(OwnedES->endSession());
  // The layer deregisters from the session; the session (if ours) and the
  // memory manager go after it, in member order.
  ObjLayer.reset();
  OwnedES.reset();
}

bool ImageLinker::reaches(uint64_t Address) const {
  // A margin for the rel32 field's own place within its instruction.
  constexpr uint64_t Margin = 1u << 16;
  uint64_t D = Address > Near ? Address - Near : Near - Address;
  return Near != 0 && D <= NearArena::Reach - Margin;
}

uint64_t ImageLinker::liveAllocations() const {
  return PlacedLive.load() + (MemMgr ? MemMgr->liveAllocations() : 0);
}

Expected<LinkedImage> ImageLinker::place(const X86Image &Code,
                                         ArrayRef<ImageCase> Cases) {
  if (Error E = startLink())
    return std::move(E);
  uint64_t Thunk = 0;
  if (Code.ThunkBranch) {
    auto T = fallbackThunk();
    if (!T)
      return T.takeError();
    Thunk = *T;
  }
  if (Error E = fault(FaultPoint::Allocate))
    return createStringError("cannot allocate image memory: " +
                             toString(std::move(E)));
  auto B = NearArena::get().allocate(Code.Code.size(), 16, Near);
  if (!B)
    return createStringError("cannot allocate image memory: " +
                             toString(B.takeError()));
  auto Bytes = relocateX86Image(Code, Cases, B->Address, Thunk);
  Error E = Bytes ? fault(FaultPoint::Link) : Bytes.takeError();
  if (E) {
    NearArena::get().release(*B);
    return createStringError("cannot link image: " + toString(std::move(E)));
  }
  // Written before anything jumps here: the entry's store that publishes
  // the image is a release, followed by a serialisation of every thread.
  std::memcpy(B->writable(), Bytes->data(), Bytes->size());
  LinkedImage Image;
  Image.Placed = *B;
  Image.Address = B->Address;
  Image.Size = Bytes->size();
  PlacedLive.fetch_add(1);
  return Image;
}

Error ImageLinker::fault(FaultPoint P) {
  if (Faults && *Faults)
    return (*Faults)(P);
  return Error::success();
}

Error ImageLinker::remove(LinkedImage &Image) {
  if (Image.Placed.Map) {
    NearArena::get().release(Image.Placed);
    PlacedLive.fetch_sub(1);
    Image = LinkedImage();
    return Error::success();
  }
  if (!Image.RT)
    return Error::success();
  Error E = Image.RT->remove();
  Image = LinkedImage();
  return E;
}

void ImageLinker::reportError(Error E) {
  if (ES) {
    ES->reportError(std::move(E));
    return;
  }
  errs() << "dispatch-gen: " << toString(std::move(E)) << "\n";
}

void ImageLinker::writePerfMap(uint64_t Address, uint64_t Size,
                               StringRef Name) {
  if (PerfMapFD < 0)
    return;
  std::string Line = formatv("{0:x-} {1:x-} {2}\n", Address, Size, Name);
  // One write per line: O_APPEND keeps lines of concurrent writers whole. A
  // profiler aid: the dispatcher works without it.
  (void)!::write(PerfMapFD, Line.data(), Line.size());
}

} // namespace dispatchgen
