//===- SpecParser.cpp - Signatures and targets written as text ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// parseSignature and parseTargetSpec: the CLI's forms of a dispatcher's
// type and targets, and the types no dispatcher can pass through.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>

using namespace llvm;

namespace dispatchgen {

/// Whether Ty is or holds a named struct, which exists only in the scratch
/// module of parseSignature (an opaque one cannot even be passed).
static bool holdsNamedStruct(Type *Ty) {
  if (auto *ST = dyn_cast<StructType>(Ty); ST && !ST->isLiteral())
    return true;
  return any_of(Ty->subtypes(), holdsNamedStruct);
}

/// Why a dispatcher cannot pass Ty through (as a parameter or the return
/// value), or nothing when it can: types that only intrinsics take, types
/// that only a GPU target lowers, and integers wider than two registers
/// (the backend splits a huge one into millions of pieces).
/// How many scalars Ty holds, saturating at Limit + 1.
static uint64_t scalarCount(Type *Ty, uint64_t Limit) {
  uint64_t N = 0;
  if (auto *AT = dyn_cast<ArrayType>(Ty)) {
    uint64_t Each = scalarCount(AT->getElementType(), Limit);
    if (Each == 0)
      return 0;
    return AT->getNumElements() > Limit / Each + 1
               ? Limit + 1
               : std::min<uint64_t>(AT->getNumElements() * Each, Limit + 1);
  }
  if (auto *VT = dyn_cast<VectorType>(Ty))
    return std::min<uint64_t>(VT->getElementCount().getKnownMinValue(),
                              Limit + 1);
  if (auto *ST = dyn_cast<StructType>(Ty)) {
    for (Type *E : ST->elements()) {
      N += scalarCount(E, Limit);
      if (N > Limit)
        return Limit + 1;
    }
    return N;
  }
  return 1;
}

static std::optional<std::string> unsupportedType(Type *Ty) {
  if (isa<TargetExtType>(Ty))
    return std::string("target extension types cannot be passed through a "
                       "dispatcher");
  if (Ty->isTokenTy() || Ty->isX86_AMXTy())
    return std::string("token and x86_amx values exist only for intrinsics");
  if (auto *IT = dyn_cast<IntegerType>(Ty); IT && IT->getBitWidth() > 128)
    return formatv("i{0} is wider than the 128 bits a dispatcher passes",
                   IT->getBitWidth())
        .str();
  // A dispatcher forwards values in registers; a huge aggregate by value
  // only makes the backend split it into as many pieces (an array of 10^12
  // elements exhausts memory before anything is refused).
  constexpr uint64_t MaxScalars = 64;
  if ((Ty->isAggregateType() || Ty->isVectorTy()) &&
      scalarCount(Ty, MaxScalars) > MaxScalars)
    return formatv("aggregates of more than {0} values cannot be passed "
                   "through a dispatcher; pass them by pointer",
                   MaxScalars)
        .str();
  for (Type *Sub : Ty->subtypes())
    if (auto Why = unsupportedType(Sub))
      return Why;
  return std::nullopt;
}

Expected<FunctionType *> parseSignature(StringRef Text, LLVMContext &Ctx) {
  StringRef Trimmed = Text.trim();
  if (Trimmed.empty())
    return createStringError(
        "empty signature: expected an LLVM function type such "
        "as 'i32 (ptr, ptr)'");
  // parseType wants a module for named types; a scratch one keeps the
  // caller's module free of anything the parse might add.
  Module Scratch("signature", Ctx);
  SMDiagnostic Diag;
  // LLVM's lexer reads up to a NUL: give it a terminated copy, not a slice
  // of the caller's buffer.
  std::string Terminated = Trimmed.str();
  Type *Ty = parseType(Terminated, Diag, Scratch);
  if (!Ty)
    return createStringError(
        formatv("invalid signature '{0}': {1}", Text, Diag.getMessage()));
  auto *FT = dyn_cast<FunctionType>(Ty);
  if (!FT) {
    std::string Printed;
    raw_string_ostream(Printed) << *Ty;
    return createStringError(formatv("invalid signature '{0}': '{1}' is not a "
                                     "function type",
                                     Text, Printed));
  }
  if (FT->isVarArg())
    return createStringError(
        formatv("invalid signature '{0}': a dispatcher cannot "
                "forward variadic arguments",
                Text));
  if (holdsNamedStruct(FT))
    return createStringError(
        formatv("invalid signature '{0}': named types are not "
                "supported; write structs out, e.g. '{{ i64, "
                "i64 } (ptr)'",
                Text));
  if (auto Why = unsupportedType(FT))
    return createStringError(
        formatv("invalid signature '{0}': {1}", Text, *Why));
  return FT;
}

std::string typeText(Type *Ty) {
  std::string S;
  raw_string_ostream(S) << *Ty;
  return S;
}

Expected<DispatchTarget> parseTargetSpec(StringRef Text) {
  DispatchTarget T;
  StringRef Rest = Text;
  // A symbol never holds ':' or '@' here; the last of each starts a field.
  auto Field = [&](char Sep,
                   StringRef What) -> Expected<std::optional<uint64_t>> {
    size_t Pos = Rest.rfind(Sep);
    if (Pos == StringRef::npos)
      return std::nullopt;
    StringRef F = Rest.substr(Pos + 1);
    uint64_t V;
    if (F.empty() || F.getAsInteger(0, V))
      return createStringError(formatv("invalid {0} '{1}' in target '{2}': "
                                       "expected an unsigned integer",
                                       What, F, Text));
    Rest = Rest.take_front(Pos);
    return V;
  };
  auto Weight = Field(':', "weight");
  if (!Weight)
    return Weight.takeError();
  T.Weight = *Weight;
  auto Address = Field('@', "address");
  if (!Address)
    return Address.takeError();
  T.Address = *Address;
  if (Rest.empty())
    return createStringError(
        formatv("target '{0}' has an empty symbol name", Text));
  // A second '@' or ':' would silently become part of the symbol.
  if (Rest.find_first_of("@:") != StringRef::npos)
    return createStringError(
        formatv("invalid symbol '{0}' in target '{1}': expected "
                "SYMBOL[@ADDRESS][:WEIGHT]",
                Rest, Text));
  T.Symbol = Rest.str();
  return T;
}

} // namespace dispatchgen
