//===- DispatchIRBuilder.h - Build a dispatcher function in LLVM IR -*- C++
//-*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A dispatcher turns an indirect call through a function pointer into a
// direct call: it compares the pointer with every registered target and
// tail-calls the matching one directly. Only a pointer that matches no target
// takes the fallback, the original indirect call.
//
// Two shapes of target set are supported:
//
//  * Absolute addresses (a JIT knows them before codegen): the dispatcher is
//    the DispatchLayout of the addresses (a bisection, or with weights a hot
//    prefix and a scan), as branches on the pointer's integer value, so
//    that code generation makes the same compares in the same order as the
//    direct x86-64 lowering (X86ImageEmitter.h) does. Not a `switch`: LLVM's
//    switch lowering balances a weighted tree by weight, the branch
//    predictor's worst case.
//  * Symbols (ahead-of-time output): addresses are only known at link time,
//    so the dispatcher is a chain of `icmp eq ptr %sel, @target` compares,
//    hottest target first when weights are given.
//
// Branches carry `!prof` weights when the targets do. The layout holds
// through code generation (which is all `emit` and a live dispatcher run);
// a host that runs an optimisation pipeline over the dispatcher lets
// SimplifyCFG fold the tests back into a `switch`: the calls stay direct,
// the layout does not.
//
// Every dispatcher carries `"no-jump-tables"="true"`: a jump table is an
// indirect jump again.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_DISPATCHIRBUILDER_H
#define DISPATCH_GEN_DISPATCHIRBUILDER_H

#include "dispatch-gen/DispatchLayout.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llvm {
class Function;
class FunctionType;
class LLVMContext;
class Module;
class TargetMachine;
class Type;
} // namespace llvm

namespace dispatchgen {

/// How the ABI widens a small integer argument or return value (`_Bool`,
/// `char`, `short` in C): the dispatcher, its calls and the targets'
/// declarations must all say so, or a callee may read garbage high bits.
enum class ArgExtension { None, ZeroExt, SignExt };

/// One function the dispatcher can reach directly.
struct DispatchTarget {
  /// The symbol the direct call names. For ahead-of-time output the linker
  /// resolves it; a JIT defines it as an absolute symbol at Address.
  std::string Symbol;
  /// The target's address when it is known before codegen. Either every
  /// target of a dispatcher has one or none has.
  std::optional<uint64_t> Address;
  /// Observed call count (profile weight). Targets without one count as 1
  /// when any target of the dispatcher has a weight.
  std::optional<uint64_t> Weight;
};

/// What to build.
struct DispatcherSpec {
  /// Name of the dispatcher function.
  std::string Name;
  /// The programs' function type. Must not be varargs.
  llvm::FunctionType *Signature = nullptr;
  /// Which parameter of Signature holds the target pointer. Unset: the
  /// dispatcher takes the pointer as an extra trailing parameter and does not
  /// forward it. Set: the parameter (of pointer type) is part of the programs'
  /// own signature and is forwarded with the others.
  std::optional<unsigned> SelectorArg;
  /// The targets, in any order; symbols and addresses must be unique.
  std::vector<DispatchTarget> Targets;
  /// Lower the fallback indirect call through a retpoline thunk.
  bool RetpolineFallback = false;
  /// With RetpolineFallback: call the thunk `__x86_indirect_thunk_r11` that
  /// the user provides (as the kernel does) instead of the linkonce one LLVM
  /// emits into every object; a JIT needs one thunk that outlives images.
  bool ExternalRetpolineThunk = false;
  /// Weight of the fallback when targets carry weights.
  uint64_t FallbackWeight = 1;
  /// ABI extensions of the return value and of Signature's parameters (a
  /// shorter list: none for the rest).
  ArgExtension ReturnExtension = ArgExtension::None;
  std::vector<ArgExtension> ParamExtensions;
  /// The cost model the layout of address targets is chosen by.
  LayoutCostModel CostModel;
};

/// Parses a function type written in LLVM's syntax, e.g. "i32 (ptr, ptr)",
/// with LLVM's own parser.
llvm::Expected<llvm::FunctionType *> parseSignature(llvm::StringRef Text,
                                                    llvm::LLVMContext &Ctx);

/// Ty in LLVM's syntax ("i32 (ptr, ptr)"), as parseSignature reads it and
/// as messages show it.
std::string typeText(llvm::Type *Ty);

/// Parses a target written as `SYMBOL[@ADDRESS][:WEIGHT]` (the CLI's form):
/// `drop_tcp`, `drop_tcp:900`, `drop_tcp@0x7f0012340000:900`. ADDRESS and
/// WEIGHT take C's prefixes (0x, 0) or decimal.
llvm::Expected<DispatchTarget> parseTargetSpec(llvm::StringRef Text);

/// Builds dispatcher functions into a module.
class DispatchIRBuilder {
public:
  explicit DispatchIRBuilder(llvm::Module &M) : M(M) {}

  /// The dispatcher's own function type for a spec: Signature, plus a
  /// trailing `ptr` parameter unless SelectorArg is set.
  static llvm::Expected<llvm::FunctionType *>
  getDispatcherType(llvm::FunctionType *Signature,
                    std::optional<unsigned> SelectorArg);

  /// Whether TM's backend can make the dispatcher's tail call for
  /// Signature: it fails when the return value does not fit the target's
  /// return registers (an aggregate returned in memory, such as `[4 x i64]`
  /// on x86-64), which no musttail call can forward; the backend would
  /// abort the process instead of reporting it. Check before compiling.
  static llvm::Error checkLowerable(const llvm::TargetMachine &TM,
                                    llvm::FunctionType *Signature);

  /// Spec's targets as DispatchLayout takes them, in Spec's order: the key
  /// is the address (0 for a symbol), the weight the target's (1 for one
  /// without when any has one; all 0 when none has).
  static std::vector<LayoutCase> getLayoutCases(const DispatcherSpec &Spec);

  /// The layout build() lowers for Spec: DispatchLayout::choose for
  /// address targets, DispatchLayout::chain for symbols.
  static DispatchLayout getLayout(const DispatcherSpec &Spec);

  /// Builds the dispatcher described by Spec, declaring every target symbol
  /// that the module does not define yet, and verifies the result. Fails,
  /// leaving the module unchanged, on a malformed spec.
  llvm::Expected<llvm::Function *> build(const DispatcherSpec &Spec);

private:
  llvm::Error check(const DispatcherSpec &Spec);

  llvm::Module &M;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_DISPATCHIRBUILDER_H
