//===- SignatureLowering.cpp - A C function type as Clang lowers it -------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "SignatureLowering.h"

#include "dispatch-gen/DispatchIRBuilder.h"

#include "clang/AST/ASTContext.h"
#include "clang/AST/Decl.h"
#include "clang/Basic/Specifiers.h"
#include "clang/CodeGen/CGFunctionInfo.h"
#include "clang/CodeGen/CodeGenABITypes.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/IR/Attributes.h"
#include "llvm/IR/CallingConv.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>

using namespace clang;

namespace dispatchgen {

namespace {
/// Why an argument or result cannot be forwarded by its IR type alone:
/// the attribute (or lowering) Clang gives it.
struct Refusal {
  llvm::StringRef What;
  /// The ABI passes it in memory: the IR value is a pointer to a copy.
  bool InMemory;
};
} // namespace

/// How AI, an argument's (IsReturn: the result's) lowering, keeps it from
/// being forwarded register by register; none when it does not.
static std::optional<Refusal> refusalOf(const CodeGen::ABIArgInfo &AI,
                                        bool IsReturn) {
  using CodeGen::ABIArgInfo;
  switch (AI.getKind()) {
  case ABIArgInfo::Direct:
  case ABIArgInfo::Extend:
    if (AI.getInReg())
      return Refusal{"inreg", false};
    if (AI.getDirectAlign())
      return Refusal{"alignstack", false};
    break;
  case ABIArgInfo::Ignore:
  case ABIArgInfo::CoerceAndExpand:
    break;
  case ABIArgInfo::Indirect:
    if (IsReturn)
      return Refusal{"sret", true};
    return Refusal{AI.getIndirectByVal() ? "byval" : "indirect", true};
  case ABIArgInfo::IndirectAliased:
    return Refusal{"byref", true};
  case ABIArgInfo::InAlloca:
    return Refusal{"inalloca", true};
  case ABIArgInfo::Expand:
    return Refusal{"expanded into its fields", false};
  case ABIArgInfo::TargetSpecific:
    return Refusal{"a target-specific lowering", false};
  }
  if (AI.getPaddingType() && AI.getPaddingInReg())
    return Refusal{"inreg padding", false};
  return std::nullopt;
}

/// The extension an argument lowered as AI carries.
static ArgExtension extensionOf(const CodeGen::ABIArgInfo &AI) {
  if (!AI.isExtend())
    return ArgExtension::None;
  if (AI.isSignExt())
    return ArgExtension::SignExt;
  return AI.isZeroExt() ? ArgExtension::ZeroExt : ArgExtension::None;
}

/// How many IR parameters one C parameter lowered as AI becomes; mirrors
/// ClangToLLVMArgMapping in Clang's CGCall.cpp for the forwardable kinds.
static unsigned irParamCount(const CodeGen::ABIArgInfo &AI) {
  unsigned Padding = AI.getPaddingType() ? 1 : 0;
  if (AI.isIgnore())
    return Padding;
  if (AI.isCoerceAndExpand())
    return Padding + AI.getCoerceAndExpandTypeSequence().size();
  auto *STy = llvm::dyn_cast<llvm::StructType>(AI.getCoerceToType());
  if (AI.isDirect() && AI.getCanBeFlattened() && STy)
    return Padding + STy->getNumElements();
  return Padding + 1;
}

/// The LLVM function type Clang gives a function of type FnType.
static llvm::FunctionType *convertType(CodeGen::CodeGenModule &CGM,
                                       ASTContext &Ctx, QualType FnType) {
  // convertFreeFunctionType() wants a declaration; a nameless one that is
  // never added to the translation unit is invisible to everything else.
  FunctionDecl *FD = FunctionDecl::Create(
      Ctx, Ctx.getTranslationUnitDecl(), SourceLocation(), SourceLocation(),
      DeclarationName(), FnType, /*TInfo=*/nullptr, SC_None);
  return CodeGen::convertFreeFunctionType(CGM, FD);
}

llvm::Expected<DerivedSignature> lowerSignature(CodeGen::CodeGenModule &CGM,
                                                ASTContext &Ctx,
                                                QualType FnType,
                                                const llvm::Twine &Subject) {
  PrintingPolicy Policy = Ctx.getPrintingPolicy();
  DerivedSignature Sig;
  Sig.CType = FnType.getAsString(Policy);
  const auto *Proto = FnType->getAs<FunctionProtoType>();
  if (!Proto)
    return llvm::createStringError(Subject + " has no prototype ('" +
                                   Sig.CType + "'); declare its parameters");
  if (Proto->isVariadic())
    return llvm::createStringError(
        Subject + " is variadic ('" + Sig.CType +
        "'); dispatchers cannot forward variable arguments");
  // Clang's ABI classification needs complete types.
  QualType RetTy = Proto->getReturnType();
  if (!RetTy->isVoidType() && RetTy->isIncompleteType())
    return llvm::createStringError(Subject + " returns incomplete type '" +
                                   RetTy.getAsString(Policy) + "'");
  for (auto [I, ParamTy] : llvm::enumerate(Proto->getParamTypes()))
    if (ParamTy->isIncompleteType())
      return llvm::createStringError(
          Subject + " has parameter " + llvm::Twine(I + 1) +
          " of incomplete type '" + ParamTy.getAsString(Policy) + "'");

  const CodeGen::CGFunctionInfo &FI = CodeGen::arrangeFreeFunctionType(
      CGM, FnType->getCanonicalTypeUnqualified().castAs<FunctionProtoType>());
  if (FI.getEffectiveCallingConvention() != llvm::CallingConv::C)
    return llvm::createStringError(
        Subject + " uses the '" +
        FunctionType::getNameForCallConv(Proto->getCallConv()) +
        "' calling convention; dispatchers use C's");
  if (FI.usesInAlloca())
    return llvm::createStringError(
        Subject + " passes its arguments in memory (inalloca); "
                  "dispatchers forward registers only: pass a "
                  "pointer");

  const CodeGen::ABIArgInfo &RetAI = FI.getReturnInfo();
  if (std::optional<Refusal> R = refusalOf(RetAI, /*IsReturn=*/true)) {
    std::string Head =
        (Subject + " returns '" + RetTy.getAsString(Policy) + "' ").str();
    if (R->InMemory)
      return llvm::createStringError(
          Head + "in memory (" + R->What +
          "); dispatchers forward registers only: return it "
          "through a pointer parameter");
    return llvm::createStringError(Head + "with " + R->What +
                                   "; dispatchers cannot forward it");
  }
  Sig.ReturnExtension = extensionOf(RetAI);

  for (auto [I, Arg] : llvm::enumerate(FI.arguments())) {
    std::string Head =
        (Subject + " passes parameter " + llvm::Twine(I + 1) + " ('" +
         Proto->getParamType(I).getAsString(Policy) + "') ")
            .str();
    ParameterABI ABI = FI.getExtParameterInfo(I).getABI();
    if (ABI != ParameterABI::Ordinary)
      return llvm::createStringError(Head + "as " +
                                     getParameterABISpelling(ABI) +
                                     "; dispatchers cannot forward it");
    if (std::optional<Refusal> R = refusalOf(Arg.info, /*IsReturn=*/false)) {
      if (R->InMemory)
        return llvm::createStringError(
            Head + "in memory (" + R->What +
            "); dispatchers forward registers only: pass a "
            "pointer");
      return llvm::createStringError(Head + "with " + R->What +
                                     "; dispatchers cannot forward it");
    }
    unsigned Count = irParamCount(Arg.info);
    if (Arg.info.getPaddingType()) {
      Sig.ParamExtensions.push_back(ArgExtension::None);
      --Count;
    }
    Sig.ParamExtensions.insert(Sig.ParamExtensions.end(), Count,
                               extensionOf(Arg.info));
  }

  Sig.Type = convertType(CGM, Ctx, FnType);
  if (!Sig.Type)
    return llvm::createStringError(
        Subject + " has a type Clang cannot lower ('" + Sig.CType + "')");
  // The parameter mapping above mirrors Clang's; the type is Clang's own.
  if (Sig.Type->getNumParams() != Sig.ParamExtensions.size())
    return llvm::createStringError(
        Subject + " is lowered to '" + typeText(Sig.Type) +
        "', whose parameters do not map to its C parameters");
  Sig.Text = typeText(Sig.Type);
  return Sig;
}

llvm::AttributeList
DerivedSignature::getAttributes(llvm::LLVMContext &Ctx) const {
  auto AttrsOf = [&Ctx](ArgExtension Ext) {
    llvm::AttrBuilder B(Ctx);
    if (Ext == ArgExtension::ZeroExt)
      B.addAttribute(llvm::Attribute::ZExt);
    else if (Ext == ArgExtension::SignExt)
      B.addAttribute(llvm::Attribute::SExt);
    return llvm::AttributeSet::get(Ctx, B);
  };
  llvm::SmallVector<llvm::AttributeSet, 8> Params;
  for (ArgExtension Ext : ParamExtensions)
    Params.push_back(AttrsOf(Ext));
  return llvm::AttributeList::get(Ctx, llvm::AttributeSet(),
                                  AttrsOf(ReturnExtension), Params);
}

} // namespace dispatchgen
