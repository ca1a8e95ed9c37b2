//===- CodeEmitter.h - Lower a dispatcher module to a file ---*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Ahead-of-time output of a dispatcher module: textual IR, assembly or an
// object file, for any target LLVM was built with. The library initialises
// LLVM's targets itself on first use, so embedders need not.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_CODEEMITTER_H
#define DISPATCH_GEN_CODEEMITTER_H

#include "llvm/Support/CodeGen.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace llvm {
class Module;
class TargetMachine;
class raw_pwrite_stream;
} // namespace llvm

namespace dispatchgen {

enum class EmitKind { LLVMIR, Assembly, Object };

struct EmitOptions {
  /// Target triple; empty means the host's.
  std::string Triple;
  /// CPU name; empty means generic for a foreign triple and the host CPU
  /// for the host's triple.
  std::string CPU;
  /// Subtarget features, e.g. "+avx2".
  std::string Features;
  llvm::CodeGenOptLevel OptLevel = llvm::CodeGenOptLevel::Default;
  /// Position-independent code, as compilers default to on Linux.
  llvm::Reloc::Model RelocModel = llvm::Reloc::PIC_;
  EmitKind Kind = EmitKind::Object;
};

/// Initialises every target LLVM was built with (target info, target, MC
/// layer, assembly printer and parser, disassembler), once per process and
/// safe from any thread. Every component that needs a target calls this one
/// function: a foreign triple (a cross-compiled image, `--target=`) works
/// wherever the native one does.
void initializeTargets();

/// Creates a target machine for Opts (initialising LLVM's targets once).
/// Fails with a message naming the triple when LLVM has no such target.
llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createTargetMachine(const EmitOptions &Opts);

/// Sets M's triple and data layout for Opts. Do this before building
/// dispatchers into M so they see the target's pointer size.
llvm::Error prepareModule(llvm::Module &M, const EmitOptions &Opts);

/// Writes M to OS as Opts.Kind says. M must have been prepared for the same
/// options.
llvm::Error emitModule(llvm::Module &M, const EmitOptions &Opts,
                       llvm::raw_pwrite_stream &OS);

} // namespace dispatchgen

#endif // DISPATCH_GEN_CODEEMITTER_H
