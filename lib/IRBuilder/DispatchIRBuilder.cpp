//===- DispatchIRBuilder.cpp - Build a dispatcher function in LLVM IR -----===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/CodeGen/MachineFunction.h"
#include "llvm/CodeGen/MachineModuleInfo.h"
#include "llvm/CodeGen/TargetLowering.h"
#include "llvm/CodeGen/TargetSubtargetInfo.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/MDBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <algorithm>
#include <numeric>
#include <optional>

using namespace llvm;

namespace dispatchgen {

static Error makeError(const Twine &Msg) {
  return make_error<StringError>(Msg, inconvertibleErrorCode());
}

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
    return makeError("empty signature: expected an LLVM function type such "
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
    return makeError(
        formatv("invalid signature '{0}': {1}", Text, Diag.getMessage()));
  auto *FT = dyn_cast<FunctionType>(Ty);
  if (!FT) {
    std::string Printed;
    raw_string_ostream(Printed) << *Ty;
    return makeError(formatv("invalid signature '{0}': '{1}' is not a "
                             "function type",
                             Text, Printed));
  }
  if (FT->isVarArg())
    return makeError(formatv("invalid signature '{0}': a dispatcher cannot "
                             "forward variadic arguments",
                             Text));
  if (holdsNamedStruct(FT))
    return makeError(formatv("invalid signature '{0}': named types are not "
                             "supported; write structs out, e.g. '{{ i64, "
                             "i64 } (ptr)'",
                             Text));
  if (auto Why = unsupportedType(FT))
    return makeError(formatv("invalid signature '{0}': {1}", Text, *Why));
  return FT;
}

Expected<DispatchTarget> parseTargetSpec(StringRef Text) {
  DispatchTarget T;
  StringRef Rest = Text;
  // A symbol never holds ':' or '@' here; the last of each starts a field.
  if (size_t Colon = Rest.rfind(':'); Colon != StringRef::npos) {
    StringRef W = Rest.substr(Colon + 1);
    uint64_t Weight;
    if (W.empty() || W.getAsInteger(0, Weight))
      return makeError(formatv("invalid weight '{0}' in target '{1}': "
                               "expected an unsigned integer",
                               W, Text));
    T.Weight = Weight;
    Rest = Rest.take_front(Colon);
  }
  if (size_t At = Rest.rfind('@'); At != StringRef::npos) {
    StringRef A = Rest.substr(At + 1);
    uint64_t Address;
    if (A.empty() || A.getAsInteger(0, Address))
      return makeError(formatv("invalid address '{0}' in target '{1}': "
                               "expected an unsigned integer",
                               A, Text));
    T.Address = Address;
    Rest = Rest.take_front(At);
  }
  if (Rest.empty())
    return makeError(formatv("target '{0}' has an empty symbol name", Text));
  // A second '@' or ':' would silently become part of the symbol.
  if (Rest.find_first_of("@:") != StringRef::npos)
    return makeError(formatv("invalid symbol '{0}' in target '{1}': expected "
                             "SYMBOL[@ADDRESS][:WEIGHT]",
                             Rest, Text));
  T.Symbol = Rest.str();
  return T;
}

Error DispatchIRBuilder::checkLowerable(const TargetMachine &TM,
                                        FunctionType *Signature) {
  Type *Ret = Signature->getReturnType();
  if (Ret->isVoidTy())
    return Error::success();
  // Ask the backend what SelectionDAG asks before lowering a return: do
  // the return value's parts fit the calling convention's registers?
  LLVMContext &Ctx = Signature->getContext();
  Module Probe("dispatch-gen.probe", Ctx);
  Probe.setDataLayout(TM.createDataLayout());
  Probe.setTargetTriple(TM.getTargetTriple());
  Function *F =
      Function::Create(Signature, GlobalValue::ExternalLinkage, "probe", Probe);
  const TargetSubtargetInfo *STI = TM.getSubtargetImpl(*F);
  const TargetLowering *TLI = STI ? STI->getTargetLowering() : nullptr;
  if (!TLI)
    return Error::success(); // not a code generator: nothing to ask
  SmallVector<ISD::OutputArg, 4> Outs;
  GetReturnInfo(F->getCallingConv(), Ret, F->getAttributes(), Outs, *TLI,
                Probe.getDataLayout());
  MachineModuleInfo MMI(&TM);
  MachineFunction MF(*F, TM, *STI, MMI.getContext(), 0);
  if (TLI->CanLowerReturn(F->getCallingConv(), MF, /*isVarArg=*/false, Outs,
                          Ctx, Ret))
    return Error::success();
  std::string Printed;
  raw_string_ostream(Printed) << *Ret;
  return makeError(formatv("'{0}' is returned in memory on {1}: a "
                           "dispatcher's tail call cannot forward it",
                           Printed, TM.getTargetTriple().str()));
}

Expected<FunctionType *>
DispatchIRBuilder::getDispatcherType(FunctionType *Signature,
                                     std::optional<unsigned> SelectorArg) {
  if (!Signature)
    return makeError("no signature given");
  if (Signature->isVarArg())
    return makeError("a dispatcher cannot forward variadic arguments");
  if (SelectorArg) {
    if (*SelectorArg >= Signature->getNumParams())
      return makeError(formatv("selector argument {0} is out of range: the "
                               "signature has {1} parameter(s)",
                               *SelectorArg, Signature->getNumParams()));
    Type *Selector = Signature->getParamType(*SelectorArg);
    if (!Selector->isPointerTy())
      return makeError(
          formatv("selector argument {0} must be a pointer", *SelectorArg));
    // Programs are functions, in the default address space.
    if (Selector->getPointerAddressSpace() != 0)
      return makeError(formatv("selector argument {0} must be a pointer in "
                               "address space 0, not {1}",
                               *SelectorArg,
                               Selector->getPointerAddressSpace()));
    return Signature;
  }
  SmallVector<Type *, 8> Params(Signature->params());
  Params.push_back(PointerType::getUnqual(Signature->getContext()));
  return FunctionType::get(Signature->getReturnType(), Params,
                           /*isVarArg=*/false);
}

Error DispatchIRBuilder::check(const DispatcherSpec &Spec) {
  if (Spec.Name.empty())
    return makeError("the dispatcher needs a name");
  if (M.getNamedValue(Spec.Name))
    return makeError(
        formatv("symbol '{0}' is already defined in the module", Spec.Name));
  if (auto TyOrErr = getDispatcherType(Spec.Signature, Spec.SelectorArg);
      !TyOrErr)
    return TyOrErr.takeError();
  if (Spec.RetpolineFallback && !M.getTargetTriple().empty() &&
      !M.getTargetTriple().isX86())
    return makeError(formatv("a retpoline fallback is only available on x86, "
                             "not on '{0}'",
                             M.getTargetTriple().str()));

  StringSet<> Symbols;
  DenseMap<uint64_t, StringRef> Addresses;
  unsigned IntPtrBits = M.getDataLayout().getPointerSizeInBits();
  unsigned WithAddress = 0;
  for (const DispatchTarget &T : Spec.Targets) {
    if (T.Symbol.empty())
      return makeError("a target has an empty symbol name");
    if (T.Symbol == Spec.Name)
      return makeError(
          formatv("target '{0}' is the dispatcher itself", T.Symbol));
    if (!Symbols.insert(T.Symbol).second)
      return makeError(formatv("target '{0}' is listed twice", T.Symbol));
    if (GlobalValue *GV = M.getNamedValue(T.Symbol)) {
      auto *F = dyn_cast<Function>(GV);
      if (!F)
        return makeError(formatv("target '{0}' names a global that is not a "
                                 "function",
                                 T.Symbol));
      if (F->getFunctionType() != Spec.Signature)
        return makeError(formatv("target '{0}' is already declared with "
                                 "another type",
                                 T.Symbol));
      // The dispatcher forwards its arguments with the C convention.
      if (F->getCallingConv() != CallingConv::C)
        return makeError(formatv("target '{0}' uses calling convention {1}; "
                                 "dispatchers forward arguments with the C "
                                 "convention",
                                 T.Symbol, F->getCallingConv()));
    }
    if (!T.Address)
      continue;
    ++WithAddress;
    if (*T.Address == 0)
      return makeError(formatv("target '{0}' has address 0", T.Symbol));
    if (IntPtrBits < 64 && (*T.Address >> IntPtrBits) != 0)
      return makeError(formatv("target '{0}' address {1:x} does not fit in a "
                               "{2}-bit pointer",
                               T.Symbol, *T.Address, IntPtrBits));
    auto [It, Inserted] = Addresses.try_emplace(*T.Address, T.Symbol);
    if (!Inserted)
      return makeError(formatv("targets '{0}' and '{1}' have the same "
                               "address {2:x}",
                               It->second, T.Symbol, *T.Address));
  }
  if (WithAddress != 0 && WithAddress != Spec.Targets.size())
    return makeError("either every target has an address or none has");
  return Error::success();
}

namespace {

/// Scales 64-bit counts into the 32-bit branch weights `!prof` holds,
/// keeping their ratios. The limit is INT32_MAX rather than UINT32_MAX only
/// so that the weights print as positive numbers in textual IR.
/// Sums of weights can pass 64 bits, so it works in 128.
class WeightScaler {
public:
  using Wide = unsigned __int128;
  explicit WeightScaler(Wide Max)
      : Divisor(Max > INT32_MAX ? Max / INT32_MAX + 1 : 1) {}
  uint32_t operator()(Wide W) const {
    return static_cast<uint32_t>(W / Divisor);
  }

private:
  Wide Divisor;
};

/// Emits the blocks of one dispatcher.
class DispatcherEmitter {
public:
  DispatcherEmitter(Module &M, const DispatcherSpec &Spec, Function &F)
      : M(M), Spec(Spec), F(F), Ctx(M.getContext()), B(Ctx) {
    for (Argument &A : F.args()) {
      unsigned No = A.getArgNo();
      if (Spec.SelectorArg ? No == *Spec.SelectorArg
                           : No == Spec.Signature->getNumParams())
        Selector = &A;
      if (Spec.SelectorArg || No < Spec.Signature->getNumParams())
        Forwarded.push_back(&A);
    }
    for (Value *A : Forwarded)
      if (A != Selector)
        A->setName("arg" + Twine(cast<Argument>(A)->getArgNo()));
    Selector->setName("target");
    HasWeights = any_of(Spec.Targets, [](const DispatchTarget &T) {
      return T.Weight.has_value();
    });
  }

  void emit() {
    // The dispatcher's own parameters carry the programs' extensions; a
    // trailing selector has none.
    AttributeList AL = attributesFor(Spec.Signature->getNumParams());
    for (Attribute A : AL.getRetAttrs())
      F.addRetAttr(A);
    for (unsigned I = 0; I < Spec.Signature->getNumParams(); ++I)
      for (Attribute A : AL.getParamAttrs(I))
        F.addParamAttr(I, A);

    BasicBlock *Entry = BasicBlock::Create(Ctx, "entry", &F);
    BasicBlock *Fallback = BasicBlock::Create(Ctx, "fallback", &F);
    B.SetInsertPoint(Fallback);
    emitTailCall(Spec.Signature, Selector);

    if (!Spec.Targets.empty() && Spec.Targets.front().Address)
      emitSwitch(Entry, Fallback);
    else
      emitCompareChain(Entry, Fallback);
  }

private:
  uint64_t weightOf(const DispatchTarget &T) const {
    return T.Weight.value_or(1);
  }

  /// Absolute addresses: one switch; LLVM's switch lowering builds the
  /// compare tree (weight-balanced when `!prof` is present).
  void emitSwitch(BasicBlock *Entry, BasicBlock *Fallback) {
    std::vector<const DispatchTarget *> Sorted;
    for (const DispatchTarget &T : Spec.Targets)
      Sorted.push_back(&T);
    llvm::sort(Sorted, [](const DispatchTarget *L, const DispatchTarget *R) {
      return *L->Address < *R->Address;
    });

    B.SetInsertPoint(Entry);
    IntegerType *IntPtrTy = M.getDataLayout().getIntPtrType(Ctx);
    Value *Addr = B.CreatePtrToInt(Selector, IntPtrTy, "target.addr");
    // Addresses of one JIT region are 64-bit but close together: switching
    // on the offset from the lowest makes every case a 32-bit immediate
    // (`cmp $imm32` instead of `movabs` + `cmp` per case on x86-64). Any
    // pointer outside the window still matches no case.
    uint64_t Base = *Sorted.front()->Address;
    bool Rebase = IntPtrTy->getBitWidth() == 64 && Base > INT32_MAX &&
                  *Sorted.back()->Address - Base <= INT32_MAX;
    if (Rebase)
      Addr =
          B.CreateSub(Addr, ConstantInt::get(IntPtrTy, Base), "target.offset");
    else
      Base = 0;
    SwitchInst *SI = B.CreateSwitch(Addr, Fallback, Sorted.size());
    SmallVector<uint64_t, 64> Weights{Spec.FallbackWeight};
    for (const DispatchTarget *T : Sorted) {
      SI->addCase(ConstantInt::get(IntPtrTy, *T->Address - Base),
                  emitCaseBlock(*T, Fallback));
      Weights.push_back(weightOf(*T));
    }
    if (HasWeights) {
      WeightScaler Scale(*llvm::max_element(Weights));
      SmallVector<uint32_t, 64> Scaled;
      for (uint64_t W : Weights)
        Scaled.push_back(Scale(W));
      SI->setMetadata(LLVMContext::MD_prof,
                      MDBuilder(Ctx).createBranchWeights(Scaled));
    }
  }

  /// Symbols: their addresses are link-time constants that a switch cannot
  /// take, and their order is unknown, so compare one after another, hottest
  /// first.
  void emitCompareChain(BasicBlock *Entry, BasicBlock *Fallback) {
    std::vector<const DispatchTarget *> Ordered;
    for (const DispatchTarget &T : Spec.Targets)
      Ordered.push_back(&T);
    // Heaviest first; equal weights keep the order given (Ordered points
    // into Spec.Targets, so pointer order is that order).
    if (HasWeights)
      llvm::sort(Ordered,
                 [&](const DispatchTarget *L, const DispatchTarget *R) {
                   if (weightOf(*L) != weightOf(*R))
                     return weightOf(*L) > weightOf(*R);
                   return L < R;
                 });

    // Remaining[I] = weight of everything after compare I, fallback included.
    SmallVector<WeightScaler::Wide, 64> Remaining(Ordered.size() + 1,
                                                  Spec.FallbackWeight);
    for (size_t I = Ordered.size(); I-- > 0;)
      Remaining[I] = Remaining[I + 1] + weightOf(*Ordered[I]);
    WeightScaler Scale(Remaining.front());

    BasicBlock *Check = Entry;
    for (size_t I = 0; I < Ordered.size(); ++I) {
      const DispatchTarget &T = *Ordered[I];
      BasicBlock *Next =
          I + 1 < Ordered.size()
              ? BasicBlock::Create(Ctx, "check." + Ordered[I + 1]->Symbol, &F,
                                   Fallback)
              : Fallback;
      BasicBlock *Case = emitCaseBlock(T, Next);
      B.SetInsertPoint(Check);
      Value *Is = B.CreateICmpEQ(Selector, getTarget(T), "is." + T.Symbol);
      BranchInst *Br = B.CreateCondBr(Is, Case, Next);
      if (HasWeights)
        Br->setMetadata(LLVMContext::MD_prof,
                        MDBuilder(Ctx).createBranchWeights(
                            Scale(weightOf(T)), Scale(Remaining[I + 1])));
      Check = Next;
    }
    if (Ordered.empty()) {
      B.SetInsertPoint(Entry);
      B.CreateBr(Fallback);
    }
  }

  BasicBlock *emitCaseBlock(const DispatchTarget &T, BasicBlock *Before) {
    BasicBlock *BB = BasicBlock::Create(Ctx, "call." + T.Symbol, &F, Before);
    B.SetInsertPoint(BB);
    emitTailCall(Spec.Signature, getTarget(T));
    return BB;
  }

  Function *getTarget(const DispatchTarget &T) {
    if (Function *Existing = M.getFunction(T.Symbol))
      return Existing;
    Function *Decl = Function::Create(
        Spec.Signature, GlobalValue::ExternalLinkage, T.Symbol, M);
    Decl->setAttributes(attributesFor(Spec.Signature->getNumParams()));
    return Decl;
  }

  /// The ABI extensions as attributes, for NumParams parameters of which
  /// the first come from Spec.Signature.
  AttributeList attributesFor(unsigned NumParams) const {
    auto Kind = [](ArgExtension E) {
      return E == ArgExtension::AE_ZeroExt ? Attribute::ZExt : Attribute::SExt;
    };
    AttributeList AL;
    if (Spec.ReturnExtension != ArgExtension::AE_None)
      AL = AL.addRetAttribute(Ctx, Kind(Spec.ReturnExtension));
    for (unsigned I = 0; I < NumParams && I < Spec.ParamExtensions.size(); ++I)
      if (Spec.ParamExtensions[I] != ArgExtension::AE_None)
        AL = AL.addParamAttribute(Ctx, I, Kind(Spec.ParamExtensions[I]));
    return AL;
  }

  void emitTailCall(FunctionType *FT, Value *Callee) {
    CallInst *CI = B.CreateCall(FT, Callee, Forwarded);
    CI->setAttributes(attributesFor(FT->getNumParams()));
    // musttail needs identical prototypes: only when the selector is one of
    // the programs' own parameters. Otherwise the backend still turns the
    // `tail` call into a jump whenever the ABI allows.
    CI->setTailCallKind(F.getFunctionType() == FT ? CallInst::TCK_MustTail
                                                  : CallInst::TCK_Tail);
    if (auto *Target = dyn_cast<Function>(Callee))
      CI->setCallingConv(Target->getCallingConv());
    if (FT->getReturnType()->isVoidTy())
      B.CreateRetVoid();
    else
      B.CreateRet(CI);
  }

  Module &M;
  const DispatcherSpec &Spec;
  Function &F;
  LLVMContext &Ctx;
  IRBuilder<> B;
  Argument *Selector = nullptr;
  SmallVector<Value *, 8> Forwarded;
  bool HasWeights = false;
};

} // namespace

Expected<Function *> DispatchIRBuilder::build(const DispatcherSpec &Spec) {
  if (Error E = check(Spec))
    return std::move(E);
  // check() validated the signature, so this cannot fail.
  FunctionType *FT =
      cantFail(getDispatcherType(Spec.Signature, Spec.SelectorArg));

  // Remember what the module already declares so a failure can undo
  // exactly what this call added.
  SmallVector<std::string, 0> NewDecls;
  for (const DispatchTarget &T : Spec.Targets)
    if (!M.getFunction(T.Symbol))
      NewDecls.push_back(T.Symbol);

  Function *F =
      Function::Create(FT, GlobalValue::ExternalLinkage, Spec.Name, M);
  F->addFnAttr("no-jump-tables", "true");
  if (Spec.RetpolineFallback)
    F->addFnAttr("target-features",
                 Spec.ExternalRetpolineThunk
                     ? "+retpoline-indirect-calls,+retpoline-indirect-"
                       "branches,+retpoline-external-thunk"
                     : "+retpoline-indirect-calls,+retpoline-indirect-"
                       "branches");
  DispatcherEmitter(M, Spec, *F).emit();

  std::string VerifyMsg;
  raw_string_ostream VerifyOS(VerifyMsg);
  if (verifyFunction(*F, &VerifyOS)) {
    F->eraseFromParent();
    for (const std::string &Sym : NewDecls)
      if (Function *Decl = M.getFunction(Sym))
        Decl->eraseFromParent();
    // One line: the verifier writes an instruction per line after each
    // message.
    StringRef First = StringRef(VerifyMsg).split('\n').first.trim();
    return makeError(formatv("internal error: dispatcher '{0}' does not "
                             "verify: {1}",
                             Spec.Name, First));
  }
  return F;
}

} // namespace dispatchgen
