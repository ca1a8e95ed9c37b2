//===- ProgramFinder.cpp - Find the programs of a C file ------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "ProgramFinder.h"

#include "SignatureLowering.h"

#include "clang/AST/ASTContext.h"
#include "clang/AST/Attr.h"
#include "clang/AST/Decl.h"
#include "clang/AST/DeclCXX.h"
#include "clang/AST/GlobalDecl.h"
#include "clang/Basic/SourceManager.h"
#include "clang/CodeGen/ModuleBuilder.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

using namespace clang;

namespace dispatchgen {

/// Whether some declaration of FD carries DISPATCHGEN_PROGRAM.
static bool isAnnotated(const FunctionDecl *FD) {
  return llvm::any_of(FD->redecls(), [](const FunctionDecl *D) {
    return llvm::any_of(D->specific_attrs<AnnotateAttr>(),
                        [](const AnnotateAttr *A) {
                          return A->getAnnotation() == ProgramAnnotation;
                        });
  });
}

/// Appends the function definitions of DC written in the main file (or
/// expanded there from a macro) to Defs, in source order.
static void
collectDefinitions(const DeclContext *DC, const SourceManager &SM,
                   llvm::SmallVectorImpl<const FunctionDecl *> &Defs) {
  for (const Decl *D : DC->decls()) {
    if (const auto *LS = dyn_cast<LinkageSpecDecl>(D)) {
      collectDefinitions(LS, SM, Defs);
      continue;
    }
    const auto *FD = dyn_cast<FunctionDecl>(D);
    if (!FD || FD->isInvalidDecl() || !FD->doesThisDeclarationHaveABody())
      continue;
    if (SM.getFileID(SM.getExpansionLoc(FD->getLocation())) ==
        SM.getMainFileID())
      Defs.push_back(FD);
  }
}

/// Appends DC's typedefs named Name to Found, in source order.
static void
collectTypedefs(const DeclContext *DC, llvm::StringRef Name,
                llvm::SmallVectorImpl<const TypedefNameDecl *> &Found) {
  for (const Decl *D : DC->decls()) {
    if (const auto *LS = dyn_cast<LinkageSpecDecl>(D))
      collectTypedefs(LS, Name, Found);
    else if (const auto *TD = dyn_cast<TypedefNameDecl>(D);
             TD && TD->getName() == Name)
      Found.push_back(TD);
  }
}

std::string ProgramFinder::locate(ASTContext &Ctx, const FunctionDecl *FD) {
  const SourceManager &SM = Ctx.getSourceManager();
  PresumedLoc PL = SM.getPresumedLoc(SM.getExpansionLoc(FD->getLocation()));
  if (PL.isInvalid())
    return File;
  return llvm::formatv("{0}:{1}", PL.getFilename(), PL.getLine()).str();
}

llvm::Expected<QualType> ProgramFinder::findPrototype(ASTContext &Ctx) {
  llvm::SmallVector<const TypedefNameDecl *, 1> Found;
  collectTypedefs(Ctx.getTranslationUnitDecl(), Opts.Prototype, Found);
  if (Found.empty())
    return llvm::createStringError("prototype '" + Opts.Prototype +
                                   "' is not a typedef declared in '" + File +
                                   "'");
  QualType Type = Found.back()->getUnderlyingType();
  // `typedef int (*lua_CFunction)(lua_State *L);` names the function type
  // through a pointer. getAs<> strips typedef sugar to reach the pointer;
  // the pointee keeps it, so messages say `lua_State *`.
  if (const auto *PT = Type->getAs<PointerType>();
      PT && PT->getPointeeType()->isFunctionType())
    Type = PT->getPointeeType();
  if (!Type->isFunctionType())
    return llvm::createStringError(
        "prototype '" + Opts.Prototype + "' is '" +
        Type.getAsString(Ctx.getPrintingPolicy()) +
        "', not a function type or a pointer to one");
  return Type.IgnoreParens();
}

llvm::Error ProgramFinder::checkTypes(ASTContext &Ctx,
                                      llvm::ArrayRef<Candidate> Candidates,
                                      QualType Reference) {
  PrintingPolicy Policy = Ctx.getPrintingPolicy();
  std::string Expected =
      Opts.Prototype.empty()
          ? llvm::formatv("'{0}' of program '{1}' ({2})",
                          Reference.getAsString(Policy),
                          Candidates.front().FD->getName(),
                          locate(Ctx, Candidates.front().FD))
                .str()
          : llvm::formatv("the prototype '{0}' ('{1}')", Opts.Prototype,
                          Reference.getAsString(Policy))
                .str();
  llvm::Error Mismatches = llvm::Error::success();
  for (const Candidate &C : Candidates)
    if (!Ctx.hasSameType(C.FD->getType(), Reference))
      Mismatches = llvm::joinErrors(
          std::move(Mismatches),
          llvm::createStringError(llvm::formatv(
              "{0}: program '{1}' has type '{2}', not {3}", locate(Ctx, C.FD),
              C.FD->getName(), C.FD->getType().getAsString(Policy), Expected)));
  return Mismatches;
}

llvm::Error ProgramFinder::find(ASTContext &Ctx) {
  std::optional<QualType> Prototype;
  if (!Opts.Prototype.empty()) {
    llvm::Expected<QualType> TypeOrErr = findPrototype(Ctx);
    if (!TypeOrErr)
      return TypeOrErr.takeError();
    Prototype = *TypeOrErr;
  }

  llvm::SmallVector<const FunctionDecl *, 32> Definitions;
  collectDefinitions(Ctx.getTranslationUnitDecl(), Ctx.getSourceManager(),
                     Definitions);
  llvm::SmallVector<Candidate, 32> Candidates;
  for (const FunctionDecl *FD : Definitions) {
    bool Annotated = Opts.FindAnnotated && isAnnotated(FD);
    if (Annotated || (Prototype && Ctx.hasSameType(FD->getType(), *Prototype)))
      Candidates.push_back({FD, Annotated});
  }

  if (!Prototype && Candidates.empty())
    return llvm::Error::success();
  QualType Reference =
      Prototype ? *Prototype : Candidates.front().FD->getType();
  if (llvm::Error E = checkTypes(Ctx, Candidates, Reference))
    return E;
  std::string Subject = Prototype
                            ? "prototype '" + Opts.Prototype + "'"
                            : llvm::formatv("{0}: program '{1}'",
                                            locate(Ctx, Candidates.front().FD),
                                            Candidates.front().FD->getName())
                                  .str();
  llvm::Expected<DerivedSignature> SigOrErr =
      lowerSignature(Gen.CGM(), Ctx, Reference, Subject);
  if (!SigOrErr)
    return SigOrErr.takeError();
  Signature = std::move(*SigOrErr);

  const SourceManager &SM = Ctx.getSourceManager();
  for (const Candidate &C : Candidates) {
    // A C99 inline definition (`inline` without `extern` or `static`) is
    // one Clang emits no code for: nothing would define the symbol.
    if (Ctx.GetGVALinkageForFunction(C.FD) == GVA_AvailableExternally)
      return llvm::createStringError(llvm::formatv(
          "{0}: program '{1}' is an inline definition that Clang emits no "
          "code for; declare it 'static' or 'extern'",
          locate(Ctx, C.FD), C.FD->getName()));
    GlobalDecl GD(C.FD);
    // Asking for the address schedules a deferred (unused static)
    // definition for emission.
    Gen.GetAddrOfGlobal(GD, /*isForDefinition=*/false);
    FoundProgram P;
    P.Name = C.FD->getNameAsString();
    P.Symbol = Gen.GetMangledName(GD).str();
    PresumedLoc PL = SM.getPresumedLoc(SM.getExpansionLoc(C.FD->getLocation()));
    P.File = PL.isValid() ? PL.getFilename() : File;
    P.Line = PL.isValid() ? PL.getLine() : 0;
    P.CType = C.FD->getType().getAsString(Ctx.getPrintingPolicy());
    P.Annotated = C.Annotated;
    P.Static = !C.FD->isExternallyVisible();
    Programs.push_back(std::move(P));
  }
  return llvm::Error::success();
}

void ProgramFinder::HandleTranslationUnit(ASTContext &Ctx) {
  // After an error the code generator makes no module; nothing to find.
  if (Ctx.getDiagnostics().hasErrorOccurred())
    return;
  Err = find(Ctx);
}

} // namespace dispatchgen
