//===- DispatcherInspection.cpp - Checking and printing images ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Dispatcher::verify() and dump(), and the checks of each image that
// DispatcherConfig::VerifyImages asks for: every image is decoded, its
// branches are matched against the programs, and the selector is followed
// through it for every program and for keys of none (CodeInspector).
//
//===----------------------------------------------------------------------===//

#include "DispatcherImpl.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

using namespace llvm;

namespace dispatchgen {

Expected<CodeInspector &> Dispatcher::Impl::inspector() const {
  if (!Inspector) {
    auto I = CodeInspector::create();
    if (!I)
      return I.takeError();
    Inspector = std::move(*I);
  }
  return *Inspector;
}

/// Keys of no program to route through an image of Programs (sorted):
/// each program's neighbours, the midpoints between programs, and the
/// extremes.
static std::vector<uint64_t> keysOfNoProgram(ArrayRef<uint64_t> Programs) {
  std::vector<uint64_t> Keys = {1, UINT64_MAX};
  for (size_t I = 0; I < Programs.size(); ++I) {
    Keys.push_back(Programs[I] - 1);
    Keys.push_back(Programs[I] + 1);
    if (I + 1 < Programs.size())
      Keys.push_back(Programs[I] + (Programs[I + 1] - Programs[I]) / 2);
  }
  llvm::sort(Keys);
  Keys.erase(llvm::unique(Keys), Keys.end());
  llvm::erase_if(Keys, [&](uint64_t K) {
    return K == 0 || std::binary_search(Programs.begin(), Programs.end(), K);
  });
  return Keys;
}

Error Dispatcher::Impl::verifyImage(const LinkedImage &Image,
                                    ArrayRef<uint64_t> Programs, bool Counting,
                                    bool InlineRetpoline) const {
  auto I = inspector();
  if (!I)
    return I.takeError();
  if (Image.Size == 0)
    return createStringError(
        formatv("the image at {0:x} has no size", Image.Address));
  std::vector<uint64_t> Allowed(Programs.begin(), Programs.end());
  Allowed.insert(Allowed.end(), Image.Helpers.begin(), Image.Helpers.end());
  uint64_t Thunk = 0;
  if (ThunkFallback && !InlineRetpoline) {
    auto T = Linker->fallbackThunk();
    if (!T)
      return T.takeError();
    Thunk = *T;
    Allowed.push_back(Thunk);
  }
  ArrayRef<uint8_t> Bytes(reinterpret_cast<const uint8_t *>(Image.Address),
                          Image.Size);
  ImageCheck C = I->check(Bytes, Image.Address, Allowed);
  // A plain fallback's `jmp *%sel`; none where it jumps to the thunk or is
  // a retpoline (whose `ret` the routes check).
  size_t Expected = ThunkFallback ? 0 : 1;
  std::string Problems;
  if (!C.DecodeErrors.empty())
    Problems += formatv(" undecodable bytes at {0:x};", C.DecodeErrors[0]);
  if (C.IndirectBranches.size() != Expected)
    Problems += formatv(" {0} indirect branches where {1} (the fallback) "
                        "belong;",
                        C.IndirectBranches.size(), Expected);
  for (uint64_t T : C.UnknownTargets)
    Problems += formatv(" a direct branch to {0:x}, which is no program;", T);
  // Every program of the image must be reached directly.
  for (uint64_t P : Programs)
    if (!llvm::is_contained(C.DirectTargets, P))
      Problems += formatv(" no direct branch to program {0:x};", P);
  if (Problems.empty() && RouteReg && !Counting)
    if (Error E = verifyRoutes(*I, Bytes, Image.Address, Programs, Thunk))
      Problems += " " + toString(std::move(E)) + ";";
  if (Problems.empty())
    return Error::success();
  Problems.pop_back();
  return createStringError(StringRef(Problems).ltrim());
}

Error Dispatcher::Impl::verifyRoutes(const CodeInspector &I,
                                     ArrayRef<uint8_t> Bytes, uint64_t Address,
                                     ArrayRef<uint64_t> Programs,
                                     uint64_t Thunk) const {
  static const char *const RegNames[] = {
      "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
      "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  std::vector<uint64_t> Sorted(Programs.begin(), Programs.end());
  llvm::sort(Sorted);
  std::vector<uint64_t> Keys = Sorted;
  size_t NumPrograms = Keys.size();
  llvm::append_range(Keys, keysOfNoProgram(Sorted));
  // Each route runs the image's delay loop too.
  unsigned MaxSteps = 4 * Config.ImageDelayForTesting + 4096;
  auto Routes =
      I.followSelector(Bytes, Address, RegNames[*RouteReg], Keys, MaxSteps);
  if (!Routes)
    return Routes.takeError();
  std::string Problems;
  unsigned Shown = 0;
  auto Describe = [&](const SelectorRoute &R) -> std::string {
    if (R.Kind == BranchKind::Direct)
      return formatv("a direct jump to {0:x} at {1:x}", *R.Target, R.From);
    if (R.Target)
      return formatv("an indirect jump to {0:x} at {1:x}", *R.Target, R.From);
    return formatv("an indirect jump at {0:x}", R.From).str();
  };
  auto Fallback = [&](const SelectorRoute &R) {
    if (Thunk)
      return R.Kind == BranchKind::Direct && R.Target == Thunk &&
             R.valueOf("r11") == R.Key;
    return R.Kind == BranchKind::Indirect && R.Target == R.Key;
  };
  for (size_t K = 0; K < Routes->size() && Shown < 4; ++K) {
    const SelectorRoute &R = (*Routes)[K];
    if (K < NumPrograms) {
      if (R.Kind == BranchKind::Direct && R.Target == R.Key)
        continue;
      Problems += formatv(" program {0:x} is routed to {1}{2};", R.Key,
                          Describe(R), Fallback(R) ? " (the fallback)" : "");
    } else {
      if (Fallback(R))
        continue;
      Problems += formatv(" {0:x}, which is no program, is routed to {1} "
                          "instead of the fallback;",
                          R.Key, Describe(R));
    }
    ++Shown;
  }
  if (Problems.empty())
    return Error::success();
  Problems.pop_back();
  return createStringError(StringRef(Problems).ltrim());
}

Error Dispatcher::Impl::verify() const {
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  if (!Supported)
    return Trampoline::checkSupported();
  const LinkedImage &Image = Live ? Live.Linked : Empty.Linked;
  if (!Image)
    return Error::success(); // A compiled-in entry's own indirect call.
  // Every program within reach, and every promoted target, must be
  // reached directly, unless the layout has no tree (an adaptive
  // dispatcher's choice where the fallback is cheapest).
  const BuiltImage &Current = Live ? Live : Empty;
  std::vector<uint64_t> Programs;
  if (Current.Layout != "fallback-only") {
    for (const ProgramEntry &P : Set.entries())
      if (Linker->reaches(P.Address))
        Programs.push_back(P.Address);
    for (uint64_t P : Promoted)
      if (!Set.contains(P))
        Programs.push_back(P);
  }
  bool Counting = Current.Counting;
  bool Inline = Current.InlineRetpoline;
  if (Error E = verifyImage(Image, Programs, Counting, Inline))
    return E;
  const ResidentImage *Copied = residentCopy();
  if (!Copied)
    return Error::success();
  // What callers run: the copy behind the entry.
  LinkedImage Copy;
  Copy.Address = Copied->address();
  Copy.Size = Copied->size();
  if (Error E = verifyImage(Copy, Programs, Counting, Inline))
    return createStringError("the resident copy: " + toString(std::move(E)));
  return Error::success();
}

Error Dispatcher::Impl::dump(raw_ostream &OS) const {
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  if (!Supported)
    return Trampoline::checkSupported();
  const LinkedImage &Image = Live ? Live.Linked : Empty.Linked;
  OS << formatv("dispatcher '{0}': generation {1}, {2} programs ({3} direct, "
                "{4} through the fallback)\n",
                Config.Name, Generation, Set.size(), DirectTargets,
                FallbackTargets);
  if (Config.Adaptive.Enabled) {
    const BuiltImage &Current = Live ? Live : Empty;
    OS << formatv("adaptive: {0}, {1} windows, layout {2} (predicted {3:f1} "
                  "units per call)\n",
                  Learning ? "learning (counting image)" : "steady",
                  LearningWindows, Current.Layout, Current.PredictedCost);
    if (Config.Adaptive.Background && Config.Adaptive.TriggerPoll.count() > 0)
      OS << formatv("  trigger: looks every {0} us, {1} windows triggered, "
                    "{2} fallback calls since the last window\n",
                    Config.Adaptive.TriggerPoll.count(),
                    TriggeredWindows.load(std::memory_order_relaxed),
                    steadyFallbackCalls());
    for (uint64_t P : Promoted)
      OS << formatv("  promoted {0:x} (no reference)\n", P);
    if (!LastCounts.empty() || LastFallback) {
      OS << "  last window:";
      for (const auto &[Address, Count] : LastCounts)
        OS << formatv(" {0:x}={1}", Address, Count);
      OS << formatv(" fallback={0}; order predictability {1:f2}\n",
                    LastFallback, LearnedPredictability);
    }
  }
  if (Config.Adaptive.Enabled || !Weights.empty() || Config.CostModel) {
    const LayoutCostModel &M = costModel();
    auto [Source, Note] = costModelSource();
    OS << formatv("cost model ({0}{1}{2}): compare {3:f2}, mispredict {4:f1}, "
                  "indirect mispredict {5:f1}, retpoline {6:f0} units\n",
                  Source, Note.empty() ? "" : ": ", Note, M.Compare,
                  M.Mispredict, M.IndirectMispredict, M.Retpoline);
  }
  OS << formatv("entry {0:x} -> ", Entry->address());
  if (!Image) {
    OS << "its own indirect call (no image)\n";
    return Error::success();
  }
  uint64_t Address = Image.Address, Size = Image.Size;
  if (const ResidentImage *Copied = residentCopy()) {
    // What callers run.
    Address = Copied->address();
    Size = Copied->size();
    OS << formatv("resident copy of image {0:x}: ", Image.Address);
  }
  OS << formatv("image {0:x}, {1} bytes\n", Address, Size);
  auto I = inspector();
  if (!I)
    return I.takeError();
  auto Insts = I->disassemble(
      ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(Address), Size),
      Address);
  if (!Insts)
    return Insts.takeError();
  DenseMap<uint64_t, std::string> Names;
  for (const ProgramEntry &P : Set.entries())
    Names[P.Address] =
        P.Name.empty() ? formatv("program {0:x}", P.Address).str() : P.Name;
  for (uint64_t P : Promoted)
    Names.try_emplace(P, formatv("promoted {0:x}", P).str());
  I->print(*Insts, OS, [&](uint64_t Address) {
    auto It = Names.find(Address);
    return It == Names.end() ? std::string() : It->second;
  });
  return Error::success();
}

} // namespace dispatchgen
