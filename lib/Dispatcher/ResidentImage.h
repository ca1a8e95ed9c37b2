//===- ResidentImage.h - The live image's copy behind the entry -*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A JIT entry may run a copy of the live image in its resident area (see
// Trampoline.h). ResidentImage sizes that area for a dispatcher and owns the
// copy: after an update has closed the gate and a grace period has passed,
// it relocates the laid-out image for the area, has Trampoline write it,
// lets the dispatcher verify it and opens the gate again.
//
// It is part of the Dispatcher component, not of Trampoline: the copy is made
// by relocateX86Image and may jump to the ImageLinker's fallback thunk, both in
// the Dispatcher component, which depends on Trampoline already. Trampoline
// keeps the mechanism it has always had (writeResident(), openGate(), taking
// bytes already relocated) and depends on nothing of the Dispatcher component,
// so the components stay acyclic.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_RESIDENTIMAGE_H
#define DISPATCH_GEN_LIB_DISPATCHER_RESIDENTIMAGE_H

#include "dispatch-gen/X86ImageEmitter.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>

namespace dispatchgen {

class ImageLinker;
class Trampoline;
struct DispatcherConfig;

class ResidentImage {
public:
  /// Whether a dispatcher of Config may run its image in place behind the
  /// entry.
  static bool allowed(const DispatcherConfig &Config);
  /// The resident area a JIT entry of Config gets: what an image of
  /// Config.Capacity programs needs, at most Config.ResidentBytes; 0 for
  /// none. SelectorReg is where images are laid out directly from (none:
  /// they are compiled, and never run resident).
  static size_t areaSize(const DispatcherConfig &Config,
                         std::optional<unsigned> SelectorReg,
                         bool ThunkFallback);

  /// The copy in Entry's resident area (which must have one) of images
  /// Linker placed. Both outlive it.
  ResidentImage(Trampoline &Entry, ImageLinker &Linker)
      : Entry(Entry), Linker(Linker) {}

  /// Checks the copy at Address, of Size bytes, before calls may run it.
  using Verifier =
      llvm::function_ref<llvm::Error(uint64_t Address, uint64_t Size)>;

  /// Copies the image laid out as Code from Cases into the area and opens
  /// the gate, if it is laid out (Code), fits and passes Verify (when
  /// given); PerfName names the copy in the perf map. Any failure leaves
  /// the entry jumping to the image: slower, still right. Only once no
  /// caller can be in the area: a grace period after the gate closed.
  void settle(const std::optional<X86Image> &Code,
              llvm::ArrayRef<ImageCase> Cases, Verifier Verify,
              const llvm::Twine &PerfName);

  /// Forgets the copy: the entry jumps elsewhere now (the gate closed).
  void closed() { Size = 0; }

  /// Whether calls run the copy (the gate is open).
  bool isOpen() const;
  /// Where the copy is and its size.
  uint64_t address() const;
  uint64_t size() const { return Size; }

private:
  Trampoline &Entry;
  ImageLinker &Linker;
  /// Size of the code in the area while the gate is open.
  uint64_t Size = 0;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_RESIDENTIMAGE_H
