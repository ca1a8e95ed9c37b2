//===- Frontend.h - Compile C programs and find them with Clang -*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The frontend turns a C file of programs into what the rest of dispatch-gen
// works with: an optimised llvm::Module that defines the programs, the list
// of programs with their source locations, and the dispatcher's signature as
// Clang lowers it for the target.
//
// It runs Clang's libraries in this process (no clang subprocess). A program
// is a function *definition* in the compiled file itself (not in a header it
// includes), static or not, that is
//
//  * annotated with DISPATCHGEN_PROGRAM (dispatch-gen/program.h), or
//  * of the type of a named prototype: a typedef of a function type
//    (`typedef unsigned int xdp_prog_t(const void *, const void *);`) or of a
//    pointer to one (`typedef int (*lua_CFunction)(lua_State *L);`).
//
// All programs share one C function type, the prototype's when one is
// named. The dispatcher's signature is that type as Clang lowers it, which
// can differ from the C text: `struct { int a, b; }` by value is one i64 on
// x86-64, `_Bool` an `i1` with a zeroext attribute. A dispatcher forwards its
// arguments register by register, so types that the ABI passes or returns in
// memory (byval, sret, ...), variadic and non-C calling conventions are
// refused with an Error that names the parameter.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_FRONTEND_H
#define DISPATCH_GEN_FRONTEND_H

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/IR/Attributes.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llvm {
class FunctionType;
class LLVMContext;
class Module;
} // namespace llvm

namespace dispatchgen {

/// The annotation DISPATCHGEN_PROGRAM puts on a program.
inline constexpr llvm::StringLiteral ProgramAnnotation = "dispatch-gen.program";

struct FrontendOptions {
  /// Compiler flags as for the clang driver (`-I dir`, `-DNAME=1`,
  /// `-std=c11`, `--target=...`), without input or output files. They come
  /// after the defaults (`-O2`, the host triple), so `-O0` overrides.
  std::vector<std::string> ClangArgs;
  /// The prototype's name (a typedef); empty: none. With a prototype every
  /// definition of its type is a program, and an annotated program of
  /// another type is an error.
  std::string Prototype;
  /// Whether functions annotated with DISPATCHGEN_PROGRAM are programs.
  bool FindAnnotated = true;
  /// Give every program external linkage and default visibility, so that a
  /// JIT or linker resolves it by name. Static programs are renamed
  /// NAME.SUFFIX (FoundProgram::Symbol), because statics of different files
  /// may share a name. Otherwise static programs stay internal (only a
  /// dispatcher built into CompiledUnit::M itself reaches them) and are
  /// kept in `llvm.compiler.used` so the optimiser neither drops them nor
  /// changes their signature.
  bool ExposePrograms = true;
  /// Stop after Sema: find the programs and derive their signature from
  /// the AST and Clang's ABI lowering, and generate no code (what `scan`
  /// needs). CompiledUnit::M then declares the programs and defines
  /// nothing; ExposePrograms and StaticSuffix do not apply.
  bool FindOnly = false;
  /// SUFFIX for exposed static programs; empty: the file's stem and a hash
  /// of its path as given, e.g. `filters.1f3a5c7e`.
  std::string StaticSuffix;
  /// Where Clang's diagnostics go, formatted as clang prints them (with
  /// colours only on a terminal); null: llvm::errs().
  llvm::raw_ostream *Diagnostics = &llvm::errs();
};

/// The programs' function type as Clang lowers it for the target.
struct DerivedSignature {
  /// The LLVM function type a dispatcher must have (plus its selector), in
  /// the LLVMContext given to compileC().
  llvm::FunctionType *Type = nullptr;
  /// Type in LLVM syntax, e.g. "i32 (ptr, ptr)"; parseSignature() reads it.
  std::string Text;
  /// The C function type, e.g. "unsigned int (const void *, const void *)".
  std::string CType;
  /// Extensions the ABI requires of the return value and of each parameter
  /// of Type (`_Bool`: zeroext, `short`: signext on x86-64). A dispatcher
  /// and its calls must carry them as attributes (getAttributes()).
  ArgExtension ReturnExtension = ArgExtension::None;
  std::vector<ArgExtension> ParamExtensions;

  /// The extensions as an attribute list (zeroext / signext) for the
  /// dispatcher function and its calls; parameters past Type's (a trailing
  /// selector) get none.
  llvm::AttributeList getAttributes(llvm::LLVMContext &Ctx) const;
};

/// One program found in a file.
struct FoundProgram {
  /// The function's name in C.
  std::string Name;
  /// The function's symbol in CompiledUnit::M: Name, unless a static
  /// program was renamed by FrontendOptions::ExposePrograms.
  std::string Symbol;
  /// Where it is defined: the file as Clang names it (the path given) and
  /// the line of the name.
  std::string File;
  unsigned Line = 0;
  /// Its C type as written, e.g. "int (lua_State *)".
  std::string CType;
  /// Found by its annotation (otherwise by the prototype only).
  bool Annotated = false;
  /// Declared static in C.
  bool Static = false;
};

/// A compiled file.
struct CompiledUnit {
  /// The optimised module, defining every program under its Symbol.
  std::unique_ptr<llvm::Module> M;
  /// The programs, in source order.
  std::vector<FoundProgram> Programs;
  /// The dispatcher's signature: the prototype's, or the programs' common
  /// type; none without a prototype and programs.
  std::optional<DerivedSignature> Signature;
};

/// Compiles File (C; the extension selects the language, as with clang) to
/// LLVM IR in Ctx, finds its programs and derives their signature.
///
/// Fails, with diagnostics printed to Opts.Diagnostics, when File cannot be
/// read or compiled ("cannot compile 'x.c': 2 errors"), when the prototype
/// is not a function typedef of File, when a program has another type
/// ("x.c:12: program 'bad' has type 'int (int)', not the prototype
/// 'xdp_prog_t' (...)"), or when the signature cannot be forwarded by a
/// dispatcher.
///
/// Thread safety: calls may run concurrently when each uses its own Ctx
/// (an LLVMContext is single-threaded) and its own Diagnostics stream.
/// While it optimises, compileC replaces Ctx's diagnostic handler with its
/// own (restoring it after), so that LLVM's warnings reach Diagnostics too.
/// `-mllvm` flags are refused: they set process-wide options.
llvm::Expected<CompiledUnit> compileC(llvm::StringRef File,
                                      const FrontendOptions &Opts,
                                      llvm::LLVMContext &Ctx);

/// The signature all Units agree on (Files[I] names Units[I] in messages).
/// Fails when two units' programs have different types, naming a program
/// of each by file:line, or when no unit has a signature.
llvm::Expected<DerivedSignature>
commonSignature(llvm::ArrayRef<CompiledUnit> Units,
                llvm::ArrayRef<std::string> Files);

} // namespace dispatchgen

#endif // DISPATCH_GEN_FRONTEND_H
