//===- Hooks.h - The entry and the hooks the C files define -----*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The harness calls into the C files through the functions of its contract
// (examples/xdp/README.md): the entry they declare, and the hooks they
// define (dispatchgen_drive, _setup, _expect, _describe, _stateful), which
// are called through function pointers of fixed types.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_RUNHARNESS_HOOKS_H
#define DISPATCH_GEN_LIB_RUNHARNESS_HOOKS_H

#include "dispatch-gen/Frontend.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace dispatchgen::run {

/// The entry: a declaration, in some unit, of the dispatcher's type (Sig's
/// parameters, then the program). Wanted, if not empty, names it; otherwise
/// there must be exactly one.
llvm::Expected<std::string> findEntry(llvm::ArrayRef<CompiledUnit> Units,
                                      const DerivedSignature &Sig,
                                      llvm::StringRef Wanted);

/// Checks that each hook the harness calls, where a unit defines it, is a
/// function of the type the harness calls it with (Files[I] names
/// Units[I]): anything else under its name would be called as if it were.
llvm::Error checkHooks(llvm::ArrayRef<CompiledUnit> Units,
                       llvm::ArrayRef<std::string> Files);

} // namespace dispatchgen::run

#endif // DISPATCH_GEN_LIB_RUNHARNESS_HOOKS_H
