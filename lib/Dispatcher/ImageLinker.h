//===- ImageLinker.h - Compile and link dispatcher images -------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Where a Dispatcher's images are made to run. An image laid out directly
// (X86ImageEmitter) is relocated for its final address and copied into the
// process's code arena (NearArena): no ORC at all, so a dispatcher that
// only ever has such images costs no ExecutionSession, TargetMachine or
// JITDylib of its own. A compiled image goes through ORC: one reused
// TargetMachine, an ObjectLinkingLayer over a NearMemoryManager (the same
// arena) and two JITDylibs used in turn; each such image gets its own
// ResourceTracker, holding the image and the absolute symbols of the
// programs it calls, so one remove() frees both. That ORC half is made on
// first use (ImageLinkerORC.cpp; the arena half is in ImageLinker.cpp).
//
// A JITLink pass refuses any branch that JITLink could not make direct (a
// stub `jmp *GOT` left in place), another records each image's code range.
// Every failure is returned as an Error naming its cause, even though ORC
// itself reports link failures only to the session's error reporter.
//
// Not thread-safe: the Dispatcher serialises link(); remove() may run on
// another thread (ORC's session lock and the arena's own cover it).
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_IMAGELINKER_H
#define DISPATCH_GEN_LIB_DISPATCHER_IMAGELINKER_H

#include "NearArena.h"
#include "NearMemoryManager.h"
#include "dispatch-gen/X86ImageEmitter.h"

#include "dispatch-gen/FaultPoint.h"

#include "llvm/ADT/FunctionExtras.h"
#include "llvm/Support/CodeGen.h"

#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/IR/DataLayout.h"
#include "llvm/Target/TargetMachine.h"

#include <atomic>
#include <map>
#include <mutex>

namespace dispatchgen {

/// A linked image: compiled (RT) or laid out (Placed); none when Address
/// is 0.
struct LinkedImage {
  llvm::orc::ResourceTrackerSP RT;
  NearArena::Block Placed;
  uint64_t Address = 0;
  uint64_t Size = 0;
  /// Other functions linked with the image, such as a retpoline thunk.
  std::vector<uint64_t> Helpers;
  explicit operator bool() const { return Address != 0; }
};

/// One program an image calls, defined as an absolute symbol.
struct ImageTarget {
  std::string Symbol;
  uint64_t Address;
};

using FaultHook = llvm::unique_function<llvm::Error(FaultPoint)>;

/// What an ImageLinker needs of its dispatcher's settings.
struct ImageLinkerOptions {
  /// Base name of the JITDylibs.
  std::string Name;
  llvm::CodeGenOptLevel OptLevel = llvm::CodeGenOptLevel::Less;
  bool RegisterWithDebugger = false;
  /// The fallback thunk is a retpoline.
  bool RetpolineFallback = false;
  /// Open /tmp/perf-<pid>.map.
  bool PerfMap = false;
  /// Testing only: called by the fallback thunk with the selector.
  void (*FallbackHook)(uint64_t) = nullptr;
  /// Testing only: called at each FaultPoint; must outlive the linker.
  FaultHook *Faults = nullptr;
};

class ImageLinker {
public:
  /// Places images near Near, as Options say. ES null: the linker creates
  /// and owns a session when it first needs one.
  static llvm::Expected<std::unique_ptr<ImageLinker>>
  create(llvm::orc::ExecutionSession *ES, const ImageLinkerOptions &Options,
         uint64_t Near);

  ~ImageLinker();

  /// The host's data layout, computed once per process.
  static llvm::Expected<llvm::DataLayout> hostDataLayout();
  /// A TargetMachine for the host, made once per process, for questions
  /// about the target (never for compiling: it is shared).
  static llvm::Expected<const llvm::TargetMachine &> hostTargetMachine();

  /// The TargetMachine compiled images are made with (made on first use).
  llvm::Expected<const llvm::TargetMachine &> targetMachine();

  /// Whether every image reaches Address with a rel32 branch: images lie
  /// within NearArena::Reach of Near, so anything within that distance of
  /// Near on the other side is within 2 GiB of every image byte.
  bool reaches(uint64_t Address) const;

  /// Images alive (those waiting for reclamation included).
  uint64_t liveAllocations() const;

  /// Compiles M and links it into JITDylib Slot (0 or 1) together with
  /// Targets; returns the code range of ImageSymbol. On failure nothing of
  /// it stays in the JITDylib.
  llvm::Expected<LinkedImage> link(llvm::Module &M,
                                   llvm::ArrayRef<ImageTarget> Targets,
                                   unsigned Slot, llvm::StringRef ImageSymbol);

  /// Places an image laid out by emitX86Image, relocated for its address,
  /// in the code arena. Cases are the ones it was laid out from.
  llvm::Expected<LinkedImage> place(const X86Image &Code,
                                    llvm::ArrayRef<ImageCase> Cases);

  /// Frees an image (after its grace period).
  llvm::Error remove(LinkedImage &Image);

  /// Reports an error no caller is waiting for: to the session's error
  /// reporter if there is a session, else on stderr.
  void reportError(llvm::Error E);

  /// Defines Symbol at Address, for JIT callers, in the session's
  /// "dispatch-gen.entries" JITDylib (created by the first dispatcher of
  /// the session, never removed before the session ends); the destructor
  /// removes the symbol again. Fails if another dispatcher of the session
  /// has the name. Only for a linker made in a host's session.
  llvm::Expected<llvm::orc::JITDylib *> defineEntry(llvm::StringRef Symbol,
                                                    uint64_t Address);
  llvm::orc::JITDylib *entryDylib() const { return EntryJD; }

  /// Links, once, the fallback thunk `__x86_indirect_thunk_r11` into a
  /// JITDylib of its own that both image JITDylibs search, and returns its
  /// address. Images jump to it with the selector in %r11 instead of each
  /// carrying a weak copy that a later image could bind to and outlive. It
  /// is a retpoline (Options.RetpolineFallback) or `jmp *%r11`, after
  /// calling Options.FallbackHook if that is set.
  llvm::Expected<uint64_t> fallbackThunk();

  /// Appends an image to /tmp/perf-<pid>.map (opened by create() when
  /// Options.PerfMap is set; a no-op otherwise).
  void writePerfMap(uint64_t Address, uint64_t Size, llvm::StringRef Name);

  class Plugin;

private:
  ImageLinker() = default;
  static std::shared_ptr<Plugin> makePlugin(FaultHook *Faults);
  /// Makes the ORC half: TargetMachine, session (if none), layer, JITDylibs.
  llvm::Error ensureORC();
  llvm::Error fail(llvm::Error E);
  /// Forgets the last link's failure and ranges; the compile fault point.
  llvm::Error startLink();
  llvm::Error fault(FaultPoint P);
  /// Materialises what was just added to Image.RT's JITDylib and fills in
  /// Image from the link.
  llvm::Error lookupImage(LinkedImage &Image, llvm::orc::JITDylib &JD,
                          llvm::orc::SymbolStringPtr ImageSymbol);

  uint64_t Near = 0;
  std::string Name;
  llvm::CodeGenOptLevel OptLevel = llvm::CodeGenOptLevel::Less;
  bool RegisterWithDebugger = false;
  std::unique_ptr<llvm::orc::ExecutionSession> OwnedES;
  llvm::orc::ExecutionSession *ES = nullptr;
  std::unique_ptr<NearMemoryManager> MemMgr;
  std::unique_ptr<llvm::orc::ObjectLinkingLayer> ObjLayer;
  std::shared_ptr<Plugin> ThePlugin;
  std::unique_ptr<llvm::TargetMachine> TM;
  llvm::orc::JITDylib *Dylibs[2] = {nullptr, nullptr};
  llvm::orc::JITDylib *EntryJD = nullptr;
  llvm::orc::SymbolStringPtr EntrySymbol;
  llvm::orc::JITDylib *ThunkJD = nullptr;
  uint64_t ThunkAddress = 0;
  FaultHook *Faults = nullptr;
  /// Laid-out images alive.
  std::atomic<uint64_t> PlacedLive{0};
  /// The perf map, open for appending; -1 without one.
  int PerfMapFD = -1;
  bool Retpoline = false;
  void (*FallbackHook)(uint64_t) = nullptr;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_IMAGELINKER_H
