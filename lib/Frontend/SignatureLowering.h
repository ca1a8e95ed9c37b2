//===- SignatureLowering.h - A C function type as Clang lowers it -*- C++
//-*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Derives a dispatcher's LLVM signature from a C function type with Clang's
// own ABI lowering (the CGFunctionInfo that CodeGen arranges for a free
// function of that type), and refuses what a dispatcher cannot forward
// register by register: arguments or results in memory (byval, sret,
// inalloca, byref), inreg, alignstack, Swift parameter ABIs, variadic and
// non-C calling conventions.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_FRONTEND_SIGNATURELOWERING_H
#define DISPATCH_GEN_LIB_FRONTEND_SIGNATURELOWERING_H

#include "dispatch-gen/Frontend.h"

#include "clang/AST/Type.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

namespace clang {
class ASTContext;
namespace CodeGen {
class CodeGenModule;
} // namespace CodeGen
} // namespace clang

namespace dispatchgen {

/// Lowers the function type FnType of Ctx as CGM lowers a free function of
/// that type. Subject names FnType's owner at the start of error messages,
/// e.g. "prototype 'xdp_prog_t'" or "x.c:3: program 'f'".
llvm::Expected<DerivedSignature>
lowerSignature(clang::CodeGen::CodeGenModule &CGM, clang::ASTContext &Ctx,
               clang::QualType FnType, const llvm::Twine &Subject);

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_FRONTEND_SIGNATURELOWERING_H
