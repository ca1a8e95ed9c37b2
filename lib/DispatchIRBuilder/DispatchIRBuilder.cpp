//===- DispatchIRBuilder.cpp - Build a dispatcher function in LLVM IR -----===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchIRBuilder.h"
#include "dispatch-gen/DispatchLayout.h"

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
#include "llvm/IR/ProfDataUtils.h"
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
  return createStringError(formatv("'{0}' is returned in memory on {1}: a "
                                   "dispatcher's tail call cannot forward it",
                                   Printed, TM.getTargetTriple().str()));
}

Expected<FunctionType *>
DispatchIRBuilder::getDispatcherType(FunctionType *Signature,
                                     std::optional<unsigned> SelectorArg) {
  if (!Signature)
    return createStringError("no signature given");
  if (Signature->isVarArg())
    return createStringError("a dispatcher cannot forward variadic arguments");
  if (SelectorArg) {
    if (*SelectorArg >= Signature->getNumParams())
      return createStringError(
          formatv("selector argument {0} is out of range: the "
                  "signature has {1} parameter(s)",
                  *SelectorArg, Signature->getNumParams()));
    Type *Selector = Signature->getParamType(*SelectorArg);
    if (!Selector->isPointerTy())
      return createStringError(
          formatv("selector argument {0} must be a pointer", *SelectorArg));
    // Programs are functions, in the default address space.
    if (Selector->getPointerAddressSpace() != 0)
      return createStringError(
          formatv("selector argument {0} must be a pointer in "
                  "address space 0, not {1}",
                  *SelectorArg, Selector->getPointerAddressSpace()));
    return Signature;
  }
  SmallVector<Type *, 8> Params(Signature->params());
  Params.push_back(PointerType::getUnqual(Signature->getContext()));
  return FunctionType::get(Signature->getReturnType(), Params,
                           /*isVarArg=*/false);
}

Error DispatchIRBuilder::check(const DispatcherSpec &Spec) {
  if (Spec.Name.empty())
    return createStringError("the dispatcher needs a name");
  if (M.getNamedValue(Spec.Name))
    return createStringError(
        formatv("symbol '{0}' is already defined in the module", Spec.Name));
  if (auto TyOrErr = getDispatcherType(Spec.Signature, Spec.SelectorArg);
      !TyOrErr)
    return TyOrErr.takeError();
  if (Spec.RetpolineFallback && !M.getTargetTriple().empty() &&
      !M.getTargetTriple().isX86())
    return createStringError(
        formatv("a retpoline fallback is only available on x86, "
                "not on '{0}'",
                M.getTargetTriple().str()));

  StringSet<> Symbols;
  DenseMap<uint64_t, StringRef> Addresses;
  unsigned IntPtrBits = M.getDataLayout().getPointerSizeInBits();
  unsigned WithAddress = 0;
  for (const DispatchTarget &T : Spec.Targets) {
    if (T.Symbol.empty())
      return createStringError("a target has an empty symbol name");
    if (T.Symbol == Spec.Name)
      return createStringError(
          formatv("target '{0}' is the dispatcher itself", T.Symbol));
    if (!Symbols.insert(T.Symbol).second)
      return createStringError(
          formatv("target '{0}' is listed twice", T.Symbol));
    if (GlobalValue *GV = M.getNamedValue(T.Symbol)) {
      auto *F = dyn_cast<Function>(GV);
      if (!F)
        return createStringError(
            formatv("target '{0}' names a global that is not a "
                    "function",
                    T.Symbol));
      if (F->getFunctionType() != Spec.Signature)
        return createStringError(
            formatv("target '{0}' is already declared with "
                    "another type",
                    T.Symbol));
      // The dispatcher forwards its arguments with the C convention.
      if (F->getCallingConv() != CallingConv::C)
        return createStringError(
            formatv("target '{0}' uses calling convention {1}; "
                    "dispatchers forward arguments with the C "
                    "convention",
                    T.Symbol, F->getCallingConv()));
    }
    if (!T.Address)
      continue;
    ++WithAddress;
    if (*T.Address == 0)
      return createStringError(formatv("target '{0}' has address 0", T.Symbol));
    if (IntPtrBits < 64 && (*T.Address >> IntPtrBits) != 0)
      return createStringError(
          formatv("target '{0}' address {1:x} does not fit in a "
                  "{2}-bit pointer",
                  T.Symbol, *T.Address, IntPtrBits));
    auto [It, Inserted] = Addresses.try_emplace(*T.Address, T.Symbol);
    if (!Inserted)
      return createStringError(formatv("targets '{0}' and '{1}' have the same "
                                       "address {2:x}",
                                       It->second, T.Symbol, *T.Address));
  }
  if (WithAddress != 0 && WithAddress != Spec.Targets.size())
    return createStringError("either every target has an address or none has");
  return Error::success();
}

namespace {

/// Emits the blocks of one dispatcher: its DispatchLayout, lowered to IR
/// branches that the code generator keeps in the layout's order.
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
    Cases = DispatchIRBuilder::getLayoutCases(Spec);
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
    Fallback = BasicBlock::Create(Ctx, "fallback", &F);
    B.SetInsertPoint(Fallback);
    emitTailCall(Spec.Signature, Selector);

    B.SetInsertPoint(Entry);
    bool Addresses = !Spec.Targets.empty() && Spec.Targets.front().Address;
    if (Addresses)
      prepareAddress();
    DispatchLayout L = DispatchIRBuilder::getLayout(Spec);
    if (L.prefix().empty()) {
      emitNode(L, 0, Entry);
      return;
    }
    // Placed after the prefix's blocks.
    BasicBlock *Tree = BasicBlock::Create(Ctx, "tree");
    emitTests(L.prefix(), Entry, Tree, massAfterPrefix(L));
    Tree->insertInto(&F, Fallback);
    emitNode(L, 0, Tree);
  }

private:
  /// Absolute addresses are compared as integers. Addresses of one JIT
  /// region are 64-bit but close together: comparing the offset from the
  /// lowest makes every case a 32-bit immediate (`cmp $imm32` instead of
  /// `movabs` + `cmp` per case on x86-64). Any pointer outside the window
  /// still matches no case.
  void prepareAddress() {
    IntegerType *IntPtrTy = M.getDataLayout().getIntPtrType(Ctx);
    Addr = B.CreatePtrToInt(Selector, IntPtrTy, "target.addr");
    uint64_t Lo = UINT64_MAX, Hi = 0;
    for (const LayoutCase &C : Cases) {
      Lo = std::min(Lo, C.Key);
      Hi = std::max(Hi, C.Key);
    }
    if (IntPtrTy->getBitWidth() == 64 && Lo > INT32_MAX &&
        Hi - Lo <= INT32_MAX) {
      Base = Lo;
      Addr =
          B.CreateSub(Addr, ConstantInt::get(IntPtrTy, Base), "target.offset");
    }
  }

  /// The fallback's weight and that of every case the prefix does not
  /// test: what goes on to the tree.
  uint64_t massAfterPrefix(const DispatchLayout &L) const {
    std::vector<bool> InPrefix(Cases.size());
    for (uint32_t C : L.prefix())
      InPrefix[C] = true;
    uint64_t Mass = Spec.FallbackWeight;
    for (size_t C = 0; C < Cases.size(); ++C)
      if (!InPrefix[C])
        Mass = SaturatingAdd(Mass, Cases[C].Weight);
    return Mass;
  }

  /// `sel == key` for each of Order in turn, the first in At; a miss of the
  /// last goes to Miss. Rest: the weight of what follows the last test.
  void emitTests(ArrayRef<uint32_t> Order, BasicBlock *At, BasicBlock *Miss,
                 uint64_t Rest) {
    SmallVector<uint64_t, 16> After(Order.size() + 1, Rest);
    for (size_t I = Order.size(); I-- > 0;)
      After[I] = SaturatingAdd(After[I + 1], Cases[Order[I]].Weight);
    BasicBlock *Check = At;
    for (size_t I = 0; I < Order.size(); ++I) {
      const DispatchTarget &T = Spec.Targets[Order[I]];
      BasicBlock *Next =
          I + 1 < Order.size()
              ? BasicBlock::Create(Ctx,
                                   "check." + Spec.Targets[Order[I + 1]].Symbol,
                                   &F, Fallback)
              : Miss;
      // Each case's block just before the next test, as the code
      // generator then lays them out: the last `je` falls through to the
      // fallback.
      BasicBlock *Case = emitCaseBlock(T, Next->getParent() ? Next : Fallback);
      B.SetInsertPoint(Check);
      Value *Is =
          Addr ? B.CreateICmpEQ(Addr, key(Order[I]), "is." + T.Symbol)
               : B.CreateICmpEQ(Selector, getTarget(T), "is." + T.Symbol);
      branch(Is, Case, Next, Cases[Order[I]].Weight, After[I + 1]);
      Check = Next;
    }
    if (Order.empty() && At != Miss) {
      B.SetInsertPoint(At);
      B.CreateBr(Miss);
    }
  }

  /// The weight of the cases below node Index, for branch weights.
  uint64_t nodeMass(const DispatchLayout &L, uint32_t Index) const {
    const DispatchLayout::Node &N = L.node(Index);
    uint64_t Mass = 0;
    if (N.Kind == DispatchLayout::NodeKind::Chain)
      for (uint32_t C : N.Cases)
        Mass = SaturatingAdd(Mass, Cases[C].Weight);
    else
      for (uint32_t Child : N.Children)
        Mass = SaturatingAdd(Mass, nodeMass(L, Child));
    return Mass;
  }

  void emitNode(const DispatchLayout &L, uint32_t Index, BasicBlock *At) {
    const DispatchLayout::Node &N = L.node(Index);
    if (N.Kind == DispatchLayout::NodeKind::Chain) {
      emitTests(N.Cases, At, Fallback, Spec.FallbackWeight);
      return;
    }
    // Bisect and Scan alike: `sel < key(Cases[J])` leads to Children[J],
    // tested in order; the last child takes what passes every test.
    SmallVector<uint64_t, 16> Mass;
    uint64_t Rest = 0;
    for (uint32_t Child : N.Children) {
      Mass.push_back(nodeMass(L, Child));
      Rest = SaturatingAdd(Rest, Mass.back());
    }
    BasicBlock *Check = At;
    for (size_t J = 0; J < N.Cases.size(); ++J) {
      const std::string &Sym = Spec.Targets[N.Cases[J]].Symbol;
      BasicBlock *Below = BasicBlock::Create(Ctx, "below." + Sym, &F, Fallback);
      BasicBlock *From = BasicBlock::Create(Ctx, "from." + Sym, &F, Fallback);
      Rest -= std::min(Rest, Mass[J]);
      B.SetInsertPoint(Check);
      branch(B.CreateICmpULT(Addr, key(N.Cases[J]), "lt." + Sym), Below, From,
             Mass[J], Rest);
      emitNode(L, N.Children[J], Below);
      // The blocks read in the layout's order: the upper side after the
      // lower one's.
      From->moveBefore(Fallback);
      Check = From;
    }
    emitNode(L, N.Children.back(), Check);
  }

  Constant *key(uint32_t C) const {
    return ConstantInt::get(Addr->getType(), Cases[C].Key - Base);
  }

  /// `br Cond, True, False`, with branch weights when the targets have any.
  void branch(Value *Cond, BasicBlock *True, BasicBlock *False,
              uint64_t TrueWeight, uint64_t FalseWeight) {
    BranchInst *Br = B.CreateCondBr(Cond, True, False);
    if (!HasWeights)
      return;
    // Scaled for twice the larger count, so that they stay below 2^31 and
    // read as positive numbers in textual IR.
    uint64_t Max = std::max(TrueWeight, FalseWeight);
    Br->setMetadata(
        LLVMContext::MD_prof,
        MDBuilder(Ctx).createBranchWeights(downscaleWeights(
            {TrueWeight, FalseWeight}, SaturatingMultiply(Max, uint64_t(2)))));
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
      return E == ArgExtension::ZeroExt ? Attribute::ZExt : Attribute::SExt;
    };
    AttributeList AL;
    if (Spec.ReturnExtension != ArgExtension::None)
      AL = AL.addRetAttribute(Ctx, Kind(Spec.ReturnExtension));
    for (unsigned I = 0; I < NumParams && I < Spec.ParamExtensions.size(); ++I)
      if (Spec.ParamExtensions[I] != ArgExtension::None)
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
  /// The targets in Spec's order, with their weights as the layout takes
  /// them (keys are 0 for symbols).
  std::vector<LayoutCase> Cases;
  BasicBlock *Fallback = nullptr;
  /// The selector as an integer (rebased by Base), for address targets.
  Value *Addr = nullptr;
  uint64_t Base = 0;
};

} // namespace

std::vector<LayoutCase>
DispatchIRBuilder::getLayoutCases(const DispatcherSpec &Spec) {
  bool HasWeights = any_of(Spec.Targets, [](const DispatchTarget &T) {
    return T.Weight.has_value();
  });
  std::vector<LayoutCase> Cases;
  for (const DispatchTarget &T : Spec.Targets)
    Cases.push_back(
        {T.Address.value_or(0), HasWeights ? T.Weight.value_or(1) : 0});
  return Cases;
}

DispatchLayout DispatchIRBuilder::getLayout(const DispatcherSpec &Spec) {
  std::vector<LayoutCase> Cases = getLayoutCases(Spec);
  // Symbols are link-time constants in no known order: a chain.
  if (Spec.Targets.empty() || !Spec.Targets.front().Address)
    return DispatchLayout::chain(Cases, Spec.CostModel);
  return DispatchLayout::choose(Cases, LayoutOptions(), Spec.CostModel);
}

Expected<Function *> DispatchIRBuilder::build(const DispatcherSpec &Spec) {
  if (Error E = check(Spec))
    return std::move(E);
  // A dispatcher compares and calls its selector, a pointer of address
  // space 0, as a function: not where functions live elsewhere (AVR's
  // program memory is address space 1).
  if (unsigned AS = M.getDataLayout().getProgramAddressSpace())
    return createStringError(
        formatv("{0} keeps functions in address space {1}: a dispatcher's "
                "selector is a pointer of address space 0",
                M.getTargetTriple().str(), AS));
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
    return createStringError(
        formatv("internal error: dispatcher '{0}' does not "
                "verify: {1}",
                Spec.Name, First));
  }
  return F;
}

} // namespace dispatchgen
