//===- ProgramFinder.h - Find the programs of a C file ----------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// An ASTConsumer that, once the translation unit is parsed, finds its
// programs (annotated definitions and definitions of the prototype's type),
// checks that they share one type, lowers that type to the dispatcher's
// signature, and makes Clang's code generator emit every program: it emits
// a static function only when something in the file uses it.
//
// It must precede the CodeGenerator in a MultiplexConsumer, so that its
// HandleTranslationUnit runs before the generator finishes the module.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_FRONTEND_PROGRAMFINDER_H
#define DISPATCH_GEN_LIB_FRONTEND_PROGRAMFINDER_H

#include "dispatch-gen/Frontend.h"

#include "clang/AST/ASTConsumer.h"
#include "clang/AST/Type.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace clang {
class CodeGenerator;
class FunctionDecl;
} // namespace clang

namespace dispatchgen {

class ProgramFinder : public clang::ASTConsumer {
public:
  /// File is the compiled file as named to Clang, for messages.
  ProgramFinder(llvm::StringRef File, const FrontendOptions &Opts,
                clang::CodeGenerator &Gen)
      : File(File), Opts(Opts), Gen(Gen) {}
  ~ProgramFinder() override { llvm::consumeError(std::move(Err)); }

  void HandleTranslationUnit(clang::ASTContext &Ctx) override;

  /// Why the programs or their signature are unusable; success also when
  /// parsing failed and nothing was looked for.
  llvm::Error takeError() { return std::move(Err); }
  /// The programs, their Symbol the name Clang emits them under.
  std::vector<FoundProgram> takePrograms() { return std::move(Programs); }
  std::optional<DerivedSignature> takeSignature() {
    return std::move(Signature);
  }

private:
  /// A program's declaration and how it was found.
  struct Candidate {
    const clang::FunctionDecl *FD;
    bool Annotated;
  };

  llvm::Error find(clang::ASTContext &Ctx);
  llvm::Expected<clang::QualType> findPrototype(clang::ASTContext &Ctx);
  llvm::Error checkTypes(clang::ASTContext &Ctx,
                         llvm::ArrayRef<Candidate> Candidates,
                         clang::QualType Reference);
  std::string locate(clang::ASTContext &Ctx, const clang::FunctionDecl *FD);

  std::string File;
  const FrontendOptions &Opts;
  clang::CodeGenerator &Gen;

  llvm::Error Err = llvm::Error::success();
  std::vector<FoundProgram> Programs;
  std::optional<DerivedSignature> Signature;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_FRONTEND_PROGRAMFINDER_H
