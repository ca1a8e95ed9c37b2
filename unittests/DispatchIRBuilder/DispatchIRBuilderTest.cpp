//===- DispatchIRBuilderTest.cpp - Tests for DispatchIRBuilder ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Unit tests for the signature and target parsers and for the IR shape of the
// dispatchers DispatchIRBuilder builds: a switch over absolute addresses, a
// compare chain over symbols, tail calls forwarding the arguments, the
// fallback indirect call, profile weights, and a module left untouched by
// every failure. The last suite runs LLVM's O2 pipeline over a dispatcher to
// check that the optimiser keeps the direct calls direct.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchIRBuilder.h"

#include "TestingSupport.h"
#include "dispatch-gen/CodeEmitter.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/ProfDataUtils.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Passes/OptimizationLevel.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Triple.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace llvm;
using namespace dispatchgen;
using namespace dispatchgen::unittest;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

DispatchTarget symbolTarget(StringRef Symbol,
                            std::optional<uint64_t> Weight = std::nullopt) {
  return DispatchTarget{Symbol.str(), std::nullopt, Weight};
}

DispatchTarget addressTarget(StringRef Symbol, uint64_t Address,
                             std::optional<uint64_t> Weight = std::nullopt) {
  return DispatchTarget{Symbol.str(), Address, Weight};
}

std::string printValue(const Value &V) {
  std::string Text;
  raw_string_ostream(Text) << V;
  return Text;
}

std::string printModule(const Module &M) {
  std::string Text;
  raw_string_ostream OS(Text);
  M.print(OS, nullptr);
  return Text;
}

template <typename InstT> SmallVector<InstT *, 8> collectInsts(Function &F) {
  SmallVector<InstT *, 8> Found;
  for (Instruction &I : instructions(F))
    if (auto *Match = dyn_cast<InstT>(&I))
      Found.push_back(Match);
  return Found;
}

SmallVector<CallInst *, 8> collectIndirectCalls(Function &F) {
  SmallVector<CallInst *, 8> Indirect;
  for (CallInst *CI : collectInsts<CallInst>(F))
    if (!CI->getCalledFunction())
      Indirect.push_back(CI);
  return Indirect;
}

SmallVector<Value *, 8> callArgs(const CallInst &CI) {
  SmallVector<Value *, 8> Args;
  for (const Use &A : CI.args())
    Args.push_back(A.get());
  return Args;
}

/// The first N arguments of F: what a dispatcher forwards when it takes the
/// target as an extra trailing parameter.
SmallVector<Value *, 8> leadingArgs(Function &F, unsigned N) {
  SmallVector<Value *, 8> Args;
  for (unsigned I = 0; I < N; ++I)
    Args.push_back(F.getArg(I));
  return Args;
}

/// The call a case (or fallback) block makes, checking the shape that lets
/// the backend turn it into a jump: the call, then a `ret` of its value.
CallInst *getTailCallOf(BasicBlock &BB) {
  Instruction *Term = BB.getTerminator();
  auto *Ret = dyn_cast_or_null<ReturnInst>(Term);
  EXPECT_TRUE(Ret) << "block '" << BB.getName().str()
                   << "' does not end in a ret";
  if (!Ret)
    return nullptr;
  auto *CI = dyn_cast_or_null<CallInst>(Ret->getPrevNode());
  EXPECT_TRUE(CI) << "block '" << BB.getName().str()
                  << "' does not return right after a call";
  if (!CI)
    return nullptr;
  if (!CI->getType()->isVoidTy())
    EXPECT_EQ(Ret->getReturnValue(), CI)
        << "block '" << BB.getName().str() << "' does not return the result";
  return CI;
}

/// Expects BB to tail-call the function Symbol (of type Sig) directly, with
/// exactly Args, marked Kind.
void expectDirectTailCall(BasicBlock &BB, StringRef Symbol, FunctionType *Sig,
                          ArrayRef<Value *> Args, CallInst::TailCallKind Kind) {
  SCOPED_TRACE("case '" + Symbol.str() + "'");
  CallInst *CI = getTailCallOf(BB);
  ASSERT_TRUE(CI);
  Function *Callee = CI->getCalledFunction();
  ASSERT_TRUE(Callee) << "indirect call: " << printValue(*CI);
  EXPECT_EQ(Callee->getName(), Symbol);
  EXPECT_TRUE(Callee->isDeclaration());
  EXPECT_EQ(Callee->getFunctionType(), Sig);
  EXPECT_EQ(CI->getTailCallKind(), Kind) << printValue(*CI);
  EXPECT_THAT(callArgs(*CI), ElementsAreArray(Args));
}

/// One compare of a symbol dispatcher's chain:
///   br (icmp eq ptr %target, @Symbol), label %call.Symbol, label %next
struct ChainLink {
  std::string Symbol;
  BranchInst *Br = nullptr;
};

/// Follows the compare chain from F's entry block along its not-equal edges.
/// Records a failure for a compare that is not `icmp eq Selector, @function`;
/// End is the block the chain finally falls through to.
std::vector<ChainLink> walkCompareChain(Function &F, Value *Selector,
                                        BasicBlock *&End) {
  std::vector<ChainLink> Links;
  BasicBlock *BB = &F.getEntryBlock();
  // A chain visits each block at most once; the bound only guards the test
  // against a malformed cycle.
  for (size_t Step = 0; Step <= F.size(); ++Step) {
    auto *Br = dyn_cast<BranchInst>(BB->getTerminator());
    if (!Br || !Br->isConditional())
      break;
    auto *Cmp = dyn_cast<ICmpInst>(Br->getCondition());
    if (!Cmp) {
      ADD_FAILURE() << "branch on a non-compare: " << printValue(*Br);
      break;
    }
    EXPECT_EQ(Cmp->getPredicate(), ICmpInst::ICMP_EQ) << printValue(*Cmp);
    EXPECT_EQ(Cmp->getOperand(0), Selector) << printValue(*Cmp);
    auto *Compared = dyn_cast<Function>(Cmp->getOperand(1));
    if (!Compared) {
      ADD_FAILURE() << "compare with a non-function: " << printValue(*Cmp);
      break;
    }
    Links.push_back({Compared->getName().str(), Br});
    BB = Br->getSuccessor(1);
  }
  End = BB;
  return Links;
}

std::vector<std::string> symbolsOf(ArrayRef<ChainLink> Links) {
  std::vector<std::string> Symbols;
  for (const ChainLink &L : Links)
    Symbols.push_back(L.Symbol);
  return Symbols;
}

/// Expects Scaled to be Original divided by one common factor: the order of
/// any two weights is kept and every weight's ratio to the largest one is
/// kept to within 1e-6.
void expectSameRatios(ArrayRef<uint64_t> Original, ArrayRef<uint32_t> Scaled) {
  ASSERT_EQ(Original.size(), Scaled.size());
  double MaxOriginal = static_cast<double>(*max_element(Original));
  double MaxScaled = static_cast<double>(*max_element(Scaled));
  ASSERT_GT(MaxScaled, 0.0);
  for (size_t I = 0; I < Original.size(); ++I) {
    EXPECT_NEAR(Scaled[I] / MaxScaled, Original[I] / MaxOriginal, 1e-6)
        << "weight " << I << ": " << Original[I] << " became " << Scaled[I];
    for (size_t J = 0; J < Original.size(); ++J)
      if (Original[I] < Original[J])
        EXPECT_LE(Scaled[I], Scaled[J])
            << "weights " << I << " and " << J << " swapped order";
  }
}

/// The probability a `br` with branch weights (True, False) gives its true
/// edge.
double takenProbability(uint64_t True, uint64_t False) {
  return static_cast<double>(True) /
         (static_cast<double>(True) + static_cast<double>(False));
}

/// Where an address dispatcher sends the selector value Key: the block
/// reached (whose tail call runs) and the tests made on the way, each
/// `icmp eq` or `icmp ult` with the value compared against. Evaluates the
/// ptrtoint, sub and icmp of the selector that the builder emits; records a
/// failure on anything else.
struct AddressRoute {
  BasicBlock *Block = nullptr;
  std::vector<std::pair<ICmpInst::Predicate, uint64_t>> Tests;
};

AddressRoute routeOf(Function &F, Value *Selector, uint64_t Key) {
  AddressRoute R;
  DenseMap<Value *, uint64_t> Known;
  BasicBlock *BB = &F.getEntryBlock();
  for (size_t Step = 0; Step <= F.size(); ++Step) {
    for (Instruction &I : *BB) {
      if (auto *P = dyn_cast<PtrToIntInst>(&I)) {
        EXPECT_EQ(P->getPointerOperand(), Selector) << printValue(I);
        Known[P] = Key;
      } else if (auto *Sub = dyn_cast<BinaryOperator>(&I);
                 Sub && Sub->getOpcode() == Instruction::Sub) {
        auto *C = dyn_cast<ConstantInt>(Sub->getOperand(1));
        EXPECT_TRUE(C && Known.count(Sub->getOperand(0))) << printValue(I);
        if (C)
          Known[Sub] = Known.lookup(Sub->getOperand(0)) - C->getZExtValue();
      } else if (auto *Cmp = dyn_cast<ICmpInst>(&I)) {
        auto *C = dyn_cast<ConstantInt>(Cmp->getOperand(1));
        EXPECT_TRUE(C && Known.count(Cmp->getOperand(0))) << printValue(I);
        if (!C)
          return R;
        uint64_t V = Known.lookup(Cmp->getOperand(0)), K = C->getZExtValue();
        EXPECT_TRUE(Cmp->getPredicate() == ICmpInst::ICMP_EQ ||
                    Cmp->getPredicate() == ICmpInst::ICMP_ULT)
            << printValue(I);
        Known[Cmp] = Cmp->getPredicate() == ICmpInst::ICMP_EQ ? V == K : V < K;
        R.Tests.push_back({Cmp->getPredicate(), K});
      }
    }
    auto *Br = dyn_cast<BranchInst>(BB->getTerminator());
    if (!Br) {
      R.Block = BB;
      return R;
    }
    if (!Br->isConditional()) {
      BB = Br->getSuccessor(0);
      continue;
    }
    EXPECT_TRUE(Known.count(Br->getCondition())) << printValue(*Br);
    BB = Br->getSuccessor(Known.lookup(Br->getCondition()) ? 0 : 1);
  }
  ADD_FAILURE() << "the route of " << Key << " does not end";
  return R;
}

//===----------------------------------------------------------------------===//
// parseSignature
//===----------------------------------------------------------------------===//

TEST(ParseSignatureTest, AcceptsPointerParams) {
  LLVMContext Ctx;
  auto SigOrErr = parseSignature("i32 (ptr, ptr)", Ctx);
  ASSERT_THAT(takeError(SigOrErr), Succeeded());
  FunctionType *Sig = *SigOrErr;
  EXPECT_TRUE(Sig->getReturnType()->isIntegerTy(32));
  ASSERT_EQ(Sig->getNumParams(), 2u);
  EXPECT_TRUE(Sig->getParamType(0)->isPointerTy());
  EXPECT_TRUE(Sig->getParamType(1)->isPointerTy());
  EXPECT_FALSE(Sig->isVarArg());
}

TEST(ParseSignatureTest, AcceptsVoidWithoutParams) {
  LLVMContext Ctx;
  auto SigOrErr = parseSignature("void ()", Ctx);
  ASSERT_THAT(takeError(SigOrErr), Succeeded());
  EXPECT_EQ(*SigOrErr, FunctionType::get(Type::getVoidTy(Ctx), false));
}

TEST(ParseSignatureTest, AcceptsStructReturn) {
  LLVMContext Ctx;
  auto SigOrErr = parseSignature("{ i64, i64 } (ptr, i32)", Ctx);
  ASSERT_THAT(takeError(SigOrErr), Succeeded());
  Type *I64 = Type::getInt64Ty(Ctx);
  FunctionType *Expected = FunctionType::get(
      StructType::get(Ctx, {I64, I64}),
      {PointerType::getUnqual(Ctx), Type::getInt32Ty(Ctx)}, false);
  EXPECT_EQ(*SigOrErr, Expected);
}

TEST(ParseSignatureTest, EmptyTextIsAnError) {
  LLVMContext Ctx;
  EXPECT_THAT(takeError(parseSignature("", Ctx)),
              Failed(HasSubstr("empty signature")));
  EXPECT_THAT(takeError(parseSignature("  \t", Ctx)),
              Failed(HasSubstr("empty signature")));
}

TEST(ParseSignatureTest, GarbageIsAnErrorNamingTheText) {
  LLVMContext Ctx;
  EXPECT_THAT(takeError(parseSignature("garbage", Ctx)),
              Failed(HasSubstr("invalid signature 'garbage'")));
}

TEST(ParseSignatureTest, NonFunctionTypeIsAnError) {
  LLVMContext Ctx;
  EXPECT_THAT(takeError(parseSignature("i32", Ctx)),
              Failed(HasSubstr("'i32' is not a function type")));
}

TEST(ParseSignatureTest, VarargsIsAnError) {
  LLVMContext Ctx;
  EXPECT_THAT(
      takeError(parseSignature("i32 (ptr, ...)", Ctx)),
      Failed(AllOf(HasSubstr("'i32 (ptr, ...)'"), HasSubstr("variadic"))));
}

TEST(ParseSignatureTest, TrailingJunkIsAnError) {
  LLVMContext Ctx;
  EXPECT_THAT(takeError(parseSignature("i32 (ptr) junk", Ctx)),
              Failed(AllOf(HasSubstr("invalid signature 'i32 (ptr) junk'"),
                           HasSubstr("end of string"))));
}

TEST(ParseSignatureTest, TypesNoDispatcherCanPassAreErrors) {
  // A target extension type crashed the backend, i1000000 kept it busy for
  // minutes, token and x86_amx failed verification with several lines.
  LLVMContext Ctx;
  EXPECT_THAT(takeError(parseSignature("target(\"spirv.Image\") (ptr)", Ctx)),
              Failed(HasSubstr("target extension types")));
  EXPECT_THAT(
      takeError(parseSignature("i32 ({ i32, target(\"a\") }, ptr)", Ctx)),
      Failed(HasSubstr("target extension types")));
  EXPECT_THAT(takeError(parseSignature("token (ptr)", Ctx)),
              Failed(HasSubstr("exist only for intrinsics")));
  EXPECT_THAT(takeError(parseSignature("i32 (i32, x86_amx, ptr)", Ctx)),
              Failed(HasSubstr("exist only for intrinsics")));
  EXPECT_THAT(takeError(parseSignature("i1000000 (ptr)", Ctx)),
              Failed(HasSubstr("i1000000 is wider than the 128 bits")));
  // The widest allowed still parses.
  EXPECT_THAT(takeError(parseSignature("i128 (i128, ptr)", Ctx)), Succeeded());
  // Aggregates of more than 64 values, however deep, are refused before
  // anything sizes them (an array of 10^12 exhausted memory).
  EXPECT_THAT(takeError(parseSignature("[4555555555555 x i6] ()", Ctx)),
              Failed(HasSubstr("aggregates of more than 64 values")));
  EXPECT_THAT(takeError(parseSignature("i32 ({ [8 x [9 x i8]] }, ptr)", Ctx)),
              Failed(HasSubstr("aggregates of more than 64 values")));
  EXPECT_THAT(
      takeError(parseSignature("{ [4 x i64], <16 x float> } (ptr)", Ctx)),
      Succeeded());
}

TEST(ParseSignatureTest, ASelectorOutsideAddressSpaceZeroIsAnError) {
  LLVMContext Ctx;
  auto FT = parseSignature("i32 (ptr addrspace(1))", Ctx);
  ASSERT_THAT(takeError(FT), Succeeded());
  EXPECT_THAT(takeError(DispatchIRBuilder::getDispatcherType(*FT, 0u)),
              Failed(HasSubstr("must be a pointer in address space 0, not 1")));
}

TEST(ParseSignatureTest, SurroundingWhitespaceIsIgnored) {
  LLVMContext Ctx;
  auto FT = parseSignature("  i32 (ptr)  ", Ctx);
  ASSERT_THAT(takeError(FT), Succeeded());
  EXPECT_EQ((*FT)->getNumParams(), 1u);
}

TEST(ParseSignatureTest, NamedTypesAreAnError) {
  LLVMContext Ctx;
  EXPECT_THAT(takeError(parseSignature("%T (ptr)", Ctx)),
              Failed(HasSubstr("named types are not supported")));
  EXPECT_THAT(takeError(parseSignature("i32 ({ i32, %U })", Ctx)),
              Failed(HasSubstr("named types are not supported")));
}

//===----------------------------------------------------------------------===//
// parseTargetSpec
//===----------------------------------------------------------------------===//

TEST(ParseTargetSpecTest, SymbolAloneHasNoAddressOrWeight) {
  auto TOrErr = parseTargetSpec("a");
  ASSERT_THAT(takeError(TOrErr), Succeeded());
  EXPECT_EQ(TOrErr->Symbol, "a");
  EXPECT_EQ(TOrErr->Address, std::nullopt);
  EXPECT_EQ(TOrErr->Weight, std::nullopt);
}

TEST(ParseTargetSpecTest, ColonIntroducesWeight) {
  auto TOrErr = parseTargetSpec("a:10");
  ASSERT_THAT(takeError(TOrErr), Succeeded());
  EXPECT_EQ(TOrErr->Symbol, "a");
  EXPECT_EQ(TOrErr->Address, std::nullopt);
  EXPECT_EQ(TOrErr->Weight, 10u);
}

TEST(ParseTargetSpecTest, AtIntroducesHexAddress) {
  auto TOrErr = parseTargetSpec("a@0x1000");
  ASSERT_THAT(takeError(TOrErr), Succeeded());
  EXPECT_EQ(TOrErr->Symbol, "a");
  EXPECT_EQ(TOrErr->Address, 0x1000u);
  EXPECT_EQ(TOrErr->Weight, std::nullopt);
}

TEST(ParseTargetSpecTest, DecimalAddressAndWeightTogether) {
  auto TOrErr = parseTargetSpec("a@4096:7");
  ASSERT_THAT(takeError(TOrErr), Succeeded());
  EXPECT_EQ(TOrErr->Symbol, "a");
  EXPECT_EQ(TOrErr->Address, 4096u);
  EXPECT_EQ(TOrErr->Weight, 7u);
}

TEST(ParseTargetSpecTest, MissingSymbolIsAnError) {
  for (StringRef Text : {"", ":5", "@0x10"}) {
    SCOPED_TRACE("'" + Text.str() + "'");
    EXPECT_THAT(takeError(parseTargetSpec(Text)),
                Failed(HasSubstr("empty symbol name")));
  }
}

TEST(ParseTargetSpecTest, MissingOrNonNumericWeightIsAnError) {
  EXPECT_THAT(takeError(parseTargetSpec("a:")),
              Failed(HasSubstr("invalid weight '' in target 'a:'")));
  EXPECT_THAT(takeError(parseTargetSpec("a:x")),
              Failed(HasSubstr("invalid weight 'x' in target 'a:x'")));
}

TEST(ParseTargetSpecTest, MissingOrNonNumericAddressIsAnError) {
  EXPECT_THAT(takeError(parseTargetSpec("a@")),
              Failed(HasSubstr("invalid address '' in target 'a@'")));
  EXPECT_THAT(takeError(parseTargetSpec("a@zz")),
              Failed(HasSubstr("invalid address 'zz' in target 'a@zz'")));
}

//===----------------------------------------------------------------------===//
// DispatchIRBuilder::getDispatcherType
//===----------------------------------------------------------------------===//

class DispatcherTypeTest : public testing::Test {
protected:
  LLVMContext Ctx;
  Type *Ptr = PointerType::getUnqual(Ctx);
  Type *I32 = Type::getInt32Ty(Ctx);
};

TEST_F(DispatcherTypeTest, TrailingPointerIsAppendedByDefault) {
  FunctionType *Sig = FunctionType::get(I32, {Ptr, I32}, false);
  auto TyOrErr = DispatchIRBuilder::getDispatcherType(Sig, std::nullopt);
  ASSERT_THAT(takeError(TyOrErr), Succeeded());
  EXPECT_EQ(*TyOrErr, FunctionType::get(I32, {Ptr, I32, Ptr}, false));
}

TEST_F(DispatcherTypeTest, PointerSelectorArgKeepsTheSignature) {
  FunctionType *Sig = FunctionType::get(I32, {I32, Ptr}, false);
  auto TyOrErr = DispatchIRBuilder::getDispatcherType(Sig, 1u);
  ASSERT_THAT(takeError(TyOrErr), Succeeded());
  EXPECT_EQ(*TyOrErr, Sig);
}

TEST_F(DispatcherTypeTest, SelectorArgOutOfRangeIsAnError) {
  FunctionType *Sig = FunctionType::get(I32, {Ptr, Ptr}, false);
  EXPECT_THAT(takeError(DispatchIRBuilder::getDispatcherType(Sig, 2u)),
              Failed(HasSubstr("selector argument 2 is out of range")));
}

TEST_F(DispatcherTypeTest, NonPointerSelectorArgIsAnError) {
  FunctionType *Sig = FunctionType::get(I32, {I32, Ptr}, false);
  EXPECT_THAT(takeError(DispatchIRBuilder::getDispatcherType(Sig, 0u)),
              Failed(HasSubstr("selector argument 0 must be a pointer")));
}

//===----------------------------------------------------------------------===//
// DispatchIRBuilder::build
//===----------------------------------------------------------------------===//

class DispatchIRBuilderTest : public testing::Test {
protected:
  /// Replaces the module with one parsed from IR, to start from existing
  /// declarations.
  void parseModule(StringRef IR) {
    SMDiagnostic Diag;
    M = parseAssemblyString(IR, Diag, Ctx);
    ASSERT_TRUE(M) << Diag.getMessage().str();
  }

  FunctionType *getSignature(StringRef Text) {
    auto SigOrErr = parseSignature(Text, Ctx);
    EXPECT_THAT(takeError(SigOrErr), Succeeded()) << Text.str();
    return SigOrErr ? *SigOrErr : nullptr;
  }

  DispatcherSpec makeSpec(StringRef Signature,
                          std::vector<DispatchTarget> Targets) {
    DispatcherSpec Spec;
    Spec.Name = "dispatch";
    Spec.Signature = getSignature(Signature);
    Spec.Targets = std::move(Targets);
    return Spec;
  }

  /// Builds Spec and verifies the whole module; null (and a recorded
  /// failure) if either fails.
  Function *buildAndVerify(const DispatcherSpec &Spec) {
    auto FOrErr = DispatchIRBuilder(*M).build(Spec);
    EXPECT_THAT(takeError(FOrErr), Succeeded());
    if (!FOrErr)
      return nullptr;
    std::string Errors;
    raw_string_ostream OS(Errors);
    EXPECT_FALSE(verifyModule(*M, &OS)) << Errors << printModule(*M);
    return *FOrErr;
  }

  /// Expects build(Spec) to fail with a message that matches Message and to
  /// leave the module exactly as it was: same text, same functions, and no
  /// dispatcher of Spec's name unless one was there before.
  void expectBuildFailsLeavingModuleUnchanged(
      const DispatcherSpec &Spec,
      testing::Matcher<const std::string &> Message) {
    std::string Before = printModule(*M);
    size_t FunctionsBefore = M->size();
    GlobalValue *NamedBefore =
        Spec.Name.empty() ? nullptr : M->getNamedValue(Spec.Name);

    auto FOrErr = DispatchIRBuilder(*M).build(Spec);
    EXPECT_THAT(takeError(FOrErr), Failed(Message));

    EXPECT_EQ(M->size(), FunctionsBefore);
    if (!Spec.Name.empty())
      EXPECT_EQ(M->getNamedValue(Spec.Name), NamedBefore);
    EXPECT_EQ(printModule(*M), Before);
  }

  LLVMContext Ctx;
  std::unique_ptr<Module> M = std::make_unique<Module>("test", Ctx);
};

// Address form ---------------------------------------------------------------

TEST_F(DispatchIRBuilderTest, AddressTargetsAreTestedAsTheLayoutOrdersThem) {
  // Three targets, given out of order: one chain, in address order, on the
  // selector's address; no switch, whose lowering would pick its own tree.
  DispatcherSpec Spec = makeSpec(
      "i32 (ptr, ptr)", {addressTarget("b", 0x2000), addressTarget("c", 0x3000),
                         addressTarget("a", 0x1000)});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  EXPECT_TRUE(collectInsts<SwitchInst>(*F).empty());
  AddressRoute Miss = routeOf(*F, F->getArg(2), 0x4000);
  using P = ICmpInst::Predicate;
  EXPECT_THAT(Miss.Tests, ElementsAre(std::pair(P::ICMP_EQ, uint64_t(0x1000)),
                                      std::pair(P::ICMP_EQ, uint64_t(0x2000)),
                                      std::pair(P::ICMP_EQ, uint64_t(0x3000))));

  // Six: a bisection below the fourth, then a chain of three.
  parseModule("");
  std::vector<DispatchTarget> Six;
  for (uint64_t I = 6; I >= 1; --I)
    Six.push_back(addressTarget("p" + std::to_string(I), 0x1000 * I));
  Spec = makeSpec("i32 (ptr, ptr)", Six);
  F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  EXPECT_THAT(routeOf(*F, F->getArg(2), 0x6001).Tests,
              ElementsAre(std::pair(P::ICMP_ULT, uint64_t(0x4000)),
                          std::pair(P::ICMP_EQ, uint64_t(0x4000)),
                          std::pair(P::ICMP_EQ, uint64_t(0x5000)),
                          std::pair(P::ICMP_EQ, uint64_t(0x6000))));
}

TEST_F(DispatchIRBuilderTest, TheSpecsCostModelChoosesTheLayout) {
  // Eight equally weighted targets: the default model scans them (equality
  // tests first); one whose compares are 160 times dearer bisects them
  // (an unsigned-less-than test first), as DispatchLayout does for it.
  using P = ICmpInst::Predicate;
  for (double Compare : {LayoutCostModel().Compare, 40.0}) {
    SCOPED_TRACE(Compare);
    parseModule("");
    std::vector<DispatchTarget> Eight;
    for (uint64_t I = 1; I <= 8; ++I)
      Eight.push_back(addressTarget("p" + std::to_string(I), 0x1000 * I, 10));
    DispatcherSpec Spec = makeSpec("i32 (ptr, ptr)", Eight);
    Spec.CostModel.Compare = Compare;
    Function *F = buildAndVerify(Spec);
    ASSERT_TRUE(F);
    std::vector<std::pair<P, uint64_t>> Tests =
        routeOf(*F, F->getArg(2), 0x9000).Tests;
    ASSERT_FALSE(Tests.empty());
    bool Dear = Compare != LayoutCostModel().Compare;
    EXPECT_EQ(Tests.front().first, Dear ? P::ICMP_ULT : P::ICMP_EQ);
    EXPECT_EQ(DispatchIRBuilder::getLayout(Spec).shape(),
              Dear ? DispatchLayout::Shape::Bisect
                   : DispatchLayout::Shape::HotScan);
  }
}

TEST_F(DispatchIRBuilderTest, AddressCasesTailCallTheirTargetWithoutSelector) {
  DispatcherSpec Spec = makeSpec(
      "i32 (ptr, ptr)", {addressTarget("b", 0x2000), addressTarget("c", 0x3000),
                         addressTarget("a", 0x1000)});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  for (const DispatchTarget &T : Spec.Targets) {
    AddressRoute R = routeOf(*F, F->getArg(2), *T.Address);
    ASSERT_TRUE(R.Block);
    expectDirectTailCall(*R.Block, T.Symbol, Spec.Signature, leadingArgs(*F, 2),
                         CallInst::TCK_Tail);
  }
}

TEST_F(DispatchIRBuilderTest, AddressDefaultCallsThroughTheSelector) {
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)",
               {addressTarget("a", 0x1000), addressTarget("b", 0x2000)});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  for (uint64_t Other : {uint64_t(0), uint64_t(0x1001), uint64_t(0x1fff),
                         uint64_t(0x3000), UINT64_MAX}) {
    AddressRoute R = routeOf(*F, F->getArg(2), Other);
    ASSERT_TRUE(R.Block);
    CallInst *CI = getTailCallOf(*R.Block);
    ASSERT_TRUE(CI);
    EXPECT_EQ(CI->getCalledFunction(), nullptr);
    EXPECT_EQ(CI->getCalledOperand(), F->getArg(2));
    EXPECT_EQ(CI->getFunctionType(), Spec.Signature);
    EXPECT_EQ(CI->getTailCallKind(), CallInst::TCK_Tail);
    EXPECT_THAT(callArgs(*CI), ElementsAreArray(leadingArgs(*F, 2)));
  }
}

TEST_F(DispatchIRBuilderTest, FallbackIsTheOnlyIndirectCall) {
  for (bool WithAddresses : {true, false}) {
    SCOPED_TRACE(WithAddresses ? "address form" : "symbol form");
    parseModule("");
    DispatcherSpec Spec =
        WithAddresses
            ? makeSpec("void (ptr)",
                       {addressTarget("a", 0x1000), addressTarget("b", 0x2000)})
            : makeSpec("void (ptr)", {symbolTarget("a"), symbolTarget("b")});
    Function *F = buildAndVerify(Spec);
    ASSERT_TRUE(F);
    auto Indirect = collectIndirectCalls(*F);
    ASSERT_EQ(Indirect.size(), 1u) << printModule(*M);
    EXPECT_EQ(Indirect.front()->getCalledOperand(), F->getArg(1));
  }
}

TEST_F(DispatchIRBuilderTest, DispatcherDisablesJumpTables) {
  for (bool WithAddresses : {true, false}) {
    SCOPED_TRACE(WithAddresses ? "address form" : "symbol form");
    parseModule("");
    DispatcherSpec Spec =
        WithAddresses
            ? makeSpec("void ()",
                       {addressTarget("a", 0x1000), addressTarget("b", 0x2000)})
            : makeSpec("void ()", {symbolTarget("a"), symbolTarget("b")});
    Function *F = buildAndVerify(Spec);
    ASSERT_TRUE(F);
    EXPECT_EQ(F->getFnAttribute("no-jump-tables").getValueAsString(), "true");
  }
}

TEST_F(DispatchIRBuilderTest, AddressWeightsTestTheHottestFirst) {
  // b is hot: the layout tests it first, weighed against everything else,
  // the fallback included; c has no weight of its own and counts as 1.
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)",
               {addressTarget("b", 0x2000, 900), addressTarget("c", 0x3000),
                addressTarget("a", 0x1000, 10)});
  Spec.FallbackWeight = 5;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  auto *Br = dyn_cast<BranchInst>(F->getEntryBlock().getTerminator());
  ASSERT_TRUE(Br && Br->isConditional());
  auto *Cmp = dyn_cast<ICmpInst>(Br->getCondition());
  ASSERT_TRUE(Cmp);
  EXPECT_EQ(Cmp->getPredicate(), ICmpInst::ICMP_EQ);
  EXPECT_EQ(cast<ConstantInt>(Cmp->getOperand(1))->getZExtValue(), 0x2000u);
  SmallVector<uint32_t, 2> Weights;
  ASSERT_TRUE(extractBranchWeights(*Br, Weights)) << printModule(*M);
  EXPECT_THAT(Weights, ElementsAre(900u, 10u + 1u + 5u));
  // Every branch has weights.
  for (BranchInst *B : collectInsts<BranchInst>(*F))
    if (B->isConditional())
      EXPECT_TRUE(extractBranchWeights(*B, Weights)) << printValue(*B);
}

TEST_F(DispatchIRBuilderTest, AddressWeightsAbove32BitsAreScaledKeepingRatios) {
  const uint64_t Heavy = UINT64_MAX / 2;
  const uint64_t Medium = uint64_t(3) << 60;
  const uint64_t Light = uint64_t(1) << 40;
  const uint64_t Fallback = uint64_t(1) << 33;
  DispatcherSpec Spec =
      makeSpec("void ()", {addressTarget("light", 0x3000, Light),
                           addressTarget("heavy", 0x1000, Heavy),
                           addressTarget("medium", 0x2000, Medium)});
  Spec.FallbackWeight = Fallback;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  auto *Br = dyn_cast<BranchInst>(F->getEntryBlock().getTerminator());
  ASSERT_TRUE(Br && Br->isConditional());
  SmallVector<uint32_t, 2> Weights;
  ASSERT_TRUE(extractBranchWeights(*Br, Weights));
  expectSameRatios({Heavy, Medium + Light + Fallback}, Weights);
  // Below 2^31, so they print as positive numbers.
  for (uint32_t W : Weights)
    EXPECT_LE(W, uint32_t(INT32_MAX));
}

TEST_F(DispatchIRBuilderTest, AddressBranchesHaveNoProfileWithoutWeights) {
  DispatcherSpec Spec = makeSpec(
      "void ()", {addressTarget("a", 0x1000), addressTarget("b", 0x2000)});
  Spec.FallbackWeight = 7;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  for (Instruction &I : instructions(*F))
    EXPECT_FALSE(I.getMetadata(LLVMContext::MD_prof)) << printValue(I);
}

// Symbol form ----------------------------------------------------------------

TEST_F(DispatchIRBuilderTest, SymbolTargetsBecomeCompareChainInGivenOrder) {
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)",
               {symbolTarget("c"), symbolTarget("a"), symbolTarget("b")});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  EXPECT_TRUE(collectInsts<SwitchInst>(*F).empty());

  BasicBlock *End = nullptr;
  std::vector<ChainLink> Chain = walkCompareChain(*F, F->getArg(2), End);
  EXPECT_THAT(symbolsOf(Chain), ElementsAre("c", "a", "b"));
  for (const ChainLink &Link : Chain)
    expectDirectTailCall(*Link.Br->getSuccessor(0), Link.Symbol, Spec.Signature,
                         leadingArgs(*F, 2), CallInst::TCK_Tail);

  // Past the last compare: the indirect call through the selector.
  CallInst *Fallback = getTailCallOf(*End);
  ASSERT_TRUE(Fallback);
  EXPECT_EQ(Fallback->getCalledOperand(), F->getArg(2));
  EXPECT_THAT(callArgs(*Fallback), ElementsAreArray(leadingArgs(*F, 2)));
  EXPECT_FALSE(Fallback->getMetadata(LLVMContext::MD_prof));
}

TEST_F(DispatchIRBuilderTest, CompareChainPutsHeaviestTargetFirst) {
  // Equal weights (c, e) keep the given order; d has no weight, so 1.
  DispatcherSpec Spec =
      makeSpec("void (ptr)", {symbolTarget("a", 5), symbolTarget("b", 50),
                              symbolTarget("c", 10), symbolTarget("d"),
                              symbolTarget("e", 10)});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  BasicBlock *End = nullptr;
  EXPECT_THAT(symbolsOf(walkCompareChain(*F, F->getArg(1), End)),
              ElementsAre("b", "c", "e", "a", "d"));
}

TEST_F(DispatchIRBuilderTest, CompareChainWeighsEachTargetAgainstTheRest) {
  DispatcherSpec Spec =
      makeSpec("void (ptr)", {symbolTarget("a", 5), symbolTarget("b", 50),
                              symbolTarget("c", 10), symbolTarget("d")});
  Spec.FallbackWeight = 2;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  BasicBlock *End = nullptr;
  std::vector<ChainLink> Chain = walkCompareChain(*F, F->getArg(1), End);
  ASSERT_THAT(symbolsOf(Chain), ElementsAre("b", "c", "a", "d"));
  // Each compare: its target's weight against everything after it.
  const std::pair<uint64_t, uint64_t> Expected[] = {
      {50, 10 + 5 + 1 + 2}, {10, 5 + 1 + 2}, {5, 1 + 2}, {1, 2}};
  for (size_t I = 0; I < Chain.size(); ++I) {
    SCOPED_TRACE("compare with '" + Chain[I].Symbol + "'");
    uint64_t True = 0, False = 0;
    ASSERT_TRUE(extractBranchWeights(*Chain[I].Br, True, False))
        << printValue(*Chain[I].Br);
    EXPECT_EQ(True, Expected[I].first);
    EXPECT_EQ(False, Expected[I].second);
  }
}

TEST_F(DispatchIRBuilderTest, CompareChainWeightsAbove32BitsKeepRatios) {
  const uint64_t Weights[] = {uint64_t(1) << 40, uint64_t(1) << 36,
                              uint64_t(3) << 33};
  DispatcherSpec Spec = makeSpec("void (ptr)", {symbolTarget("a", Weights[0]),
                                                symbolTarget("b", Weights[1]),
                                                symbolTarget("c", Weights[2])});
  Spec.FallbackWeight = uint64_t(1) << 32;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  BasicBlock *End = nullptr;
  std::vector<ChainLink> Chain = walkCompareChain(*F, F->getArg(1), End);
  ASSERT_THAT(symbolsOf(Chain), ElementsAre("a", "b", "c"));
  for (size_t I = 0; I < Chain.size(); ++I) {
    SCOPED_TRACE("compare with '" + Chain[I].Symbol + "'");
    uint64_t Rest = Spec.FallbackWeight;
    for (size_t J = I + 1; J < Chain.size(); ++J)
      Rest += Weights[J];
    uint64_t True = 0, False = 0;
    ASSERT_TRUE(extractBranchWeights(*Chain[I].Br, True, False));
    EXPECT_NEAR(takenProbability(True, False),
                takenProbability(Weights[I], Rest), 1e-6)
        << "weights " << True << ":" << False;
  }
}

TEST_F(DispatchIRBuilderTest,
       CompareChainWeightsWhoseSumExceeds64BitsKeepRatios) {
  // Each weight fits in 64 bits, but the chain's running totals (target
  // against everything after it) do not.
  DispatcherSpec Spec = makeSpec("void (ptr)", {symbolTarget("a", UINT64_MAX),
                                                symbolTarget("b", UINT64_MAX)});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  BasicBlock *End = nullptr;
  std::vector<ChainLink> Chain = walkCompareChain(*F, F->getArg(1), End);
  ASSERT_THAT(symbolsOf(Chain), ElementsAre("a", "b"));
  uint64_t True = 0, False = 0;
  // a against b + fallback: about even.
  ASSERT_TRUE(extractBranchWeights(*Chain[0].Br, True, False));
  EXPECT_NEAR(takenProbability(True, False), 0.5, 1e-6)
      << "weights " << True << ":" << False << "\n"
      << printModule(*M);
  // b against the fallback (weight 1): almost always b.
  ASSERT_TRUE(extractBranchWeights(*Chain[1].Br, True, False));
  EXPECT_NEAR(takenProbability(True, False), 1.0, 1e-6)
      << "weights " << True << ":" << False;
}

TEST_F(DispatchIRBuilderTest, CompareChainHasNoProfileWithoutWeights) {
  DispatcherSpec Spec =
      makeSpec("void ()", {symbolTarget("a"), symbolTarget("b")});
  Spec.FallbackWeight = 7;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  for (Instruction &I : instructions(*F))
    EXPECT_FALSE(I.getMetadata(LLVMContext::MD_prof)) << printValue(I);
}

TEST_F(DispatchIRBuilderTest, ZeroTargetsOnlyCallIndirectly) {
  DispatcherSpec Spec = makeSpec("i32 (ptr, ptr)", {});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  EXPECT_TRUE(collectInsts<SwitchInst>(*F).empty());
  EXPECT_TRUE(collectInsts<ICmpInst>(*F).empty());
  auto Calls = collectInsts<CallInst>(*F);
  ASSERT_EQ(Calls.size(), 1u) << printModule(*M);
  EXPECT_EQ(Calls.front()->getCalledOperand(), F->getArg(2));
  EXPECT_THAT(callArgs(*Calls.front()), ElementsAreArray(leadingArgs(*F, 2)));
  // Nothing to declare: the module holds only the dispatcher.
  EXPECT_EQ(M->size(), 1u);
}

TEST_F(DispatchIRBuilderTest, ExistingDeclarationOfTargetIsReused) {
  parseModule("declare i32 @a(ptr, ptr)\n");
  Function *Existing = M->getFunction("a");
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)", {symbolTarget("a"), symbolTarget("b")});
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  EXPECT_EQ(M->getFunction("a"), Existing);
  EXPECT_EQ(M->size(), 3u) << printModule(*M); // a, b and the dispatcher.
  // Compared with and called: the existing declaration, not a renamed copy.
  EXPECT_EQ(Existing->getNumUses(), 2u) << printModule(*M);
}

// Selector-argument form -----------------------------------------------------

TEST_F(DispatchIRBuilderTest, SelectorArgCallsAreMustTailForwardingAllParams) {
  for (bool WithAddresses : {true, false}) {
    SCOPED_TRACE(WithAddresses ? "address form" : "symbol form");
    parseModule("");
    DispatcherSpec Spec =
        WithAddresses ? makeSpec("i32 (ptr, ptr)", {addressTarget("a", 0x1000),
                                                    addressTarget("b", 0x2000)})
                      : makeSpec("i32 (ptr, ptr)",
                                 {symbolTarget("a"), symbolTarget("b")});
    // The target pointer is the programs' own first parameter.
    Spec.SelectorArg = 0;
    Function *F = buildAndVerify(Spec);
    ASSERT_TRUE(F);
    EXPECT_EQ(F->getFunctionType(), Spec.Signature);

    auto Calls = collectInsts<CallInst>(*F);
    ASSERT_EQ(Calls.size(), 3u) << printModule(*M);
    for (CallInst *CI : Calls) {
      EXPECT_EQ(CI->getTailCallKind(), CallInst::TCK_MustTail)
          << printValue(*CI);
      EXPECT_THAT(callArgs(*CI), ElementsAre(F->getArg(0), F->getArg(1)))
          << printValue(*CI);
    }
    auto Indirect = collectIndirectCalls(*F);
    ASSERT_EQ(Indirect.size(), 1u);
    EXPECT_EQ(Indirect.front()->getCalledOperand(), F->getArg(0));
  }
}

TEST_F(DispatchIRBuilderTest,
       ArgumentExtensionsAreOnDispatcherCallsAndTargets) {
  for (bool WithAddresses : {true, false}) {
    SCOPED_TRACE(WithAddresses ? "address form" : "symbol form");
    parseModule("");
    DispatcherSpec Spec =
        WithAddresses
            ? makeSpec("i1 (i1, i16, ptr)", {addressTarget("a", 0x1000)})
            : makeSpec("i1 (i1, i16, ptr)", {symbolTarget("a")});
    // _Bool f(_Bool, short, void *) on x86-64.
    Spec.ReturnExtension = ArgExtension::ZeroExt;
    Spec.ParamExtensions = {ArgExtension::ZeroExt, ArgExtension::SignExt};
    Function *F = buildAndVerify(Spec);
    ASSERT_TRUE(F);
    Function *Target = M->getFunction("a");
    ASSERT_TRUE(Target);
    for (const AttributeList &AL :
         {F->getAttributes(), Target->getAttributes()}) {
      EXPECT_TRUE(AL.hasRetAttr(Attribute::ZExt));
      EXPECT_TRUE(AL.hasParamAttr(0, Attribute::ZExt));
      EXPECT_TRUE(AL.hasParamAttr(1, Attribute::SExt));
      EXPECT_FALSE(AL.hasParamAttr(2, Attribute::ZExt));
    }
    // The trailing selector is not the programs' and gets nothing.
    EXPECT_FALSE(F->getAttributes().hasParamAttr(3, Attribute::ZExt));
    for (CallInst *CI : collectInsts<CallInst>(*F)) {
      EXPECT_TRUE(CI->getAttributes().hasRetAttr(Attribute::ZExt));
      EXPECT_TRUE(CI->getAttributes().hasParamAttr(0, Attribute::ZExt));
      EXPECT_TRUE(CI->getAttributes().hasParamAttr(1, Attribute::SExt));
    }
  }
}

// Retpoline ------------------------------------------------------------------

TEST_F(DispatchIRBuilderTest, RetpolineFallbackSetsRetpolineTargetFeature) {
  M->setTargetTriple(Triple("x86_64-pc-linux-gnu"));
  DispatcherSpec Spec = makeSpec("void ()", {symbolTarget("a")});
  Spec.RetpolineFallback = true;
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);
  EXPECT_THAT(F->getFnAttribute("target-features").getValueAsString().str(),
              HasSubstr("+retpoline-indirect-calls"));
}

TEST_F(DispatchIRBuilderTest, RetpolineFallbackOnNonX86TripleIsAnError) {
  M->setTargetTriple(Triple("aarch64-unknown-linux-gnu"));
  DispatcherSpec Spec = makeSpec("void ()", {symbolTarget("a")});
  Spec.RetpolineFallback = true;
  expectBuildFailsLeavingModuleUnchanged(
      Spec,
      AllOf(HasSubstr("retpoline"), HasSubstr("aarch64-unknown-linux-gnu")));
}

// Errors leave the module unchanged ------------------------------------------
//
// Each spec lists fresh targets before the bad part, so a build that failed
// half-way would have declared them.

TEST_F(DispatchIRBuilderTest, EmptyNameIsAnError) {
  DispatcherSpec Spec = makeSpec("void ()", {symbolTarget("fresh")});
  Spec.Name.clear();
  expectBuildFailsLeavingModuleUnchanged(Spec, HasSubstr("needs a name"));
}

TEST_F(DispatchIRBuilderTest, NameAlreadyInModuleIsAnError) {
  parseModule("define void @dispatch(ptr %p) {\n"
              "  ret void\n"
              "}\n");
  DispatcherSpec Spec = makeSpec("void ()", {symbolTarget("fresh")});
  expectBuildFailsLeavingModuleUnchanged(
      Spec, HasSubstr("'dispatch' is already defined"));
}

TEST_F(DispatchIRBuilderTest, DuplicateSymbolIsAnError) {
  DispatcherSpec Spec = makeSpec(
      "void ()", {symbolTarget("fresh"), symbolTarget("a"), symbolTarget("a")});
  expectBuildFailsLeavingModuleUnchanged(Spec,
                                         HasSubstr("'a' is listed twice"));
}

TEST_F(DispatchIRBuilderTest, DuplicateAddressIsAnError) {
  DispatcherSpec Spec = makeSpec("void ()", {addressTarget("fresh", 0x1000),
                                             addressTarget("a", 0x2000),
                                             addressTarget("b", 0x2000)});
  expectBuildFailsLeavingModuleUnchanged(Spec, HasSubstr("same address"));
}

TEST_F(DispatchIRBuilderTest, AddressZeroIsAnError) {
  DispatcherSpec Spec = makeSpec(
      "void ()", {addressTarget("fresh", 0x1000), addressTarget("a", 0)});
  expectBuildFailsLeavingModuleUnchanged(Spec, HasSubstr("'a' has address 0"));
}

TEST_F(DispatchIRBuilderTest, AddressWiderThanPointerIsAnError) {
  M->setDataLayout("e-p:32:32");
  DispatcherSpec Spec =
      makeSpec("void ()", {addressTarget("fresh", 0x1000),
                           addressTarget("a", uint64_t(1) << 32)});
  expectBuildFailsLeavingModuleUnchanged(Spec, HasSubstr("32-bit pointer"));
}

TEST_F(DispatchIRBuilderTest, MixingAddressAndSymbolTargetsIsAnError) {
  DispatcherSpec Spec =
      makeSpec("void ()", {addressTarget("fresh", 0x1000), symbolTarget("a")});
  expectBuildFailsLeavingModuleUnchanged(
      Spec, HasSubstr("every target has an address"));
  DispatcherSpec Reversed =
      makeSpec("void ()", {symbolTarget("fresh"), addressTarget("a", 0x1000)});
  expectBuildFailsLeavingModuleUnchanged(
      Reversed, HasSubstr("every target has an address"));
}

TEST_F(DispatchIRBuilderTest, TargetDeclaredWithAnotherTypeIsAnError) {
  parseModule("declare void @a()\n");
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)", {symbolTarget("fresh"), symbolTarget("a")});
  expectBuildFailsLeavingModuleUnchanged(Spec,
                                         HasSubstr("'a' is already declared"));
}

TEST_F(DispatchIRBuilderTest, TargetWithAnotherCallingConventionIsAnError) {
  parseModule("declare fastcc i32 @a(ptr, ptr)\n");
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)", {symbolTarget("fresh"), symbolTarget("a")});
  Spec.SelectorArg = 1;
  expectBuildFailsLeavingModuleUnchanged(
      Spec, HasSubstr("target 'a' uses calling convention 8"));
}

TEST_F(DispatchIRBuilderTest, TargetNamingAGlobalVariableIsAnError) {
  parseModule("@a = global i32 0\n");
  DispatcherSpec Spec =
      makeSpec("void ()", {symbolTarget("fresh"), symbolTarget("a")});
  expectBuildFailsLeavingModuleUnchanged(Spec, HasSubstr("not a function"));
}

TEST_F(DispatchIRBuilderTest, TargetNamedLikeTheDispatcherIsAnError) {
  DispatcherSpec Spec =
      makeSpec("void ()", {symbolTarget("fresh"), symbolTarget("dispatch")});
  expectBuildFailsLeavingModuleUnchanged(Spec,
                                         HasSubstr("is the dispatcher itself"));
}

TEST_F(DispatchIRBuilderTest, BadSelectorArgIsAnError) {
  DispatcherSpec OutOfRange =
      makeSpec("i32 (ptr, ptr)", {symbolTarget("fresh")});
  OutOfRange.SelectorArg = 2;
  expectBuildFailsLeavingModuleUnchanged(OutOfRange, HasSubstr("out of range"));

  DispatcherSpec NotAPointer =
      makeSpec("i32 (i32, ptr)", {symbolTarget("fresh")});
  NotAPointer.SelectorArg = 0;
  expectBuildFailsLeavingModuleUnchanged(NotAPointer,
                                         HasSubstr("must be a pointer"));
}

TEST_F(DispatchIRBuilderTest, MissingSignatureIsAnError) {
  DispatcherSpec Spec;
  Spec.Name = "dispatch";
  Spec.Targets = {symbolTarget("fresh")};
  expectBuildFailsLeavingModuleUnchanged(Spec, HasSubstr("no signature"));
}

TEST_F(DispatchIRBuilderTest, FailureAfterEmittingRollsBackEverything) {
  // A fastcc program has the right type but cannot be musttail-called from
  // the C-convention dispatcher. The spec passes check() and fails only when
  // the finished dispatcher is verified, so this exercises build()'s undo of
  // the dispatcher and of the declarations it added. Should check() learn to
  // reject it, the rule still holds.
  parseModule("declare fastcc i32 @a(ptr, ptr)\n");
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)", {symbolTarget("fresh"), symbolTarget("a")});
  Spec.SelectorArg = 1;
  expectBuildFailsLeavingModuleUnchanged(Spec, testing::_);
}

//===----------------------------------------------------------------------===//
// Large target sets
//===----------------------------------------------------------------------===//

class DispatchIRBuilderScaleTest
    : public DispatchIRBuilderTest,
      public testing::WithParamInterface<unsigned> {
protected:
  static std::string programName(unsigned I) {
    return "prog" + std::to_string(I);
  }
  static uint64_t programAddress(unsigned I) { return 0x10000000 + I * 0x40; }
};

TEST_P(DispatchIRBuilderScaleTest, EveryAddressTargetGetsItsDirectCall) {
  const unsigned N = GetParam();
  std::vector<DispatchTarget> Targets;
  // Given in descending address order, so the builder has to sort.
  for (unsigned I = N; I-- > 0;)
    Targets.push_back(addressTarget(programName(I), programAddress(I)));
  DispatcherSpec Spec = makeSpec("i32 (ptr, ptr)", std::move(Targets));
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  size_t Deepest = 0;
  for (unsigned I = 0; I < N; ++I) {
    AddressRoute R = routeOf(*F, F->getArg(2), programAddress(I));
    ASSERT_TRUE(R.Block);
    CallInst *CI = getTailCallOf(*R.Block);
    ASSERT_TRUE(CI && CI->getCalledFunction());
    EXPECT_EQ(CI->getCalledFunction()->getName(), programName(I));
    Deepest = std::max(Deepest, R.Tests.size());
    // Between two programs: the fallback.
    AddressRoute Miss = routeOf(*F, F->getArg(2), programAddress(I) + 8);
    ASSERT_TRUE(Miss.Block);
    CallInst *FB = getTailCallOf(*Miss.Block);
    ASSERT_TRUE(FB);
    EXPECT_EQ(FB->getCalledOperand(), F->getArg(2));
  }
  // A balanced search: about log2(N) bisections and a chain of three.
  EXPECT_LE(Deepest, Log2_32_Ceil(N) + 3);
  EXPECT_EQ(collectIndirectCalls(*F).size(), 1u);
}

TEST_P(DispatchIRBuilderScaleTest, EverySymbolTargetGetsACompare) {
  const unsigned N = GetParam();
  std::vector<DispatchTarget> Targets;
  std::vector<std::string> Names;
  for (unsigned I = 0; I < N; ++I) {
    Targets.push_back(symbolTarget(programName(I)));
    Names.push_back(programName(I));
  }
  DispatcherSpec Spec = makeSpec("i32 (ptr, ptr)", std::move(Targets));
  Function *F = buildAndVerify(Spec);
  ASSERT_TRUE(F);

  BasicBlock *End = nullptr;
  EXPECT_THAT(symbolsOf(walkCompareChain(*F, F->getArg(2), End)),
              ElementsAreArray(Names));
  EXPECT_EQ(collectInsts<ICmpInst>(*F).size(), N);
  EXPECT_EQ(collectIndirectCalls(*F).size(), 1u);
}

// 48 is the kernel's BPF_DISPATCHER_MAX; thousands must work too.
INSTANTIATE_TEST_SUITE_P(TargetCounts, DispatchIRBuilderScaleTest,
                         testing::Values(48u, 4096u));

//===----------------------------------------------------------------------===//
// The O2 pipeline keeps the direct calls
//===----------------------------------------------------------------------===//

// SimplifyCFG can sink instructions common to several blocks into their
// successor, turning differing operands into a phi. Sinking the cases' calls
// would make the callee a phi: an indirect call again, in every case. These
// tests run the pipeline a JIT or `clang -O2` would and count the indirect
// calls left.
class DispatchIRBuilderO2Test : public DispatchIRBuilderTest {
protected:
  void SetUp() override {
    EmitOptions Opts;
    Opts.Triple = "x86_64-pc-linux-gnu";
    auto TMOrErr = createTargetMachine(Opts);
    ASSERT_THAT(takeError(TMOrErr), Succeeded());
    TM = std::move(*TMOrErr);
    M->setTargetTriple(TM->getTargetTriple());
    M->setDataLayout(TM->createDataLayout());
  }

  void runO2Pipeline() {
    LoopAnalysisManager LAM;
    FunctionAnalysisManager FAM;
    CGSCCAnalysisManager CGAM;
    ModuleAnalysisManager MAM;
    PassBuilder PB(TM.get());
    PB.registerModuleAnalyses(MAM);
    PB.registerCGSCCAnalyses(CGAM);
    PB.registerFunctionAnalyses(FAM);
    PB.registerLoopAnalyses(LAM);
    PB.crossRegisterProxies(LAM, FAM, CGAM, MAM);
    PB.buildPerModuleDefaultPipeline(OptimizationLevel::O2).run(*M, MAM);
  }

  /// Builds Spec, runs O2, and expects the dispatcher to still call every
  /// target directly and to hold exactly one indirect call, the fallback.
  void expectCasesStayDirectAfterO2(const DispatcherSpec &Spec) {
    ASSERT_TRUE(buildAndVerify(Spec));
    runO2Pipeline();
    Function *F = M->getFunction(Spec.Name);
    ASSERT_TRUE(F && !F->isDeclaration()) << printModule(*M);

    StringMap<unsigned> DirectCalls;
    for (CallInst *CI : collectInsts<CallInst>(*F))
      if (Function *Callee = CI->getCalledFunction())
        ++DirectCalls[Callee->getName()];
    EXPECT_EQ(collectIndirectCalls(*F).size(), 1u) << "after O2:\n"
                                                   << printModule(*M);
    for (const DispatchTarget &T : Spec.Targets)
      EXPECT_GE(DirectCalls.lookup(T.Symbol), 1u)
          << "no direct call of '" << T.Symbol << "' after O2:\n"
          << printModule(*M);
  }

  std::unique_ptr<TargetMachine> TM;
};

TEST_F(DispatchIRBuilderO2Test, AddressCasesStayDirectCalls) {
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)",
               {addressTarget("a", 0x1000, 30), addressTarget("b", 0x2000, 20),
                addressTarget("c", 0x3000, 10), addressTarget("d", 0x4000)});
  expectCasesStayDirectAfterO2(Spec);
}

TEST_F(DispatchIRBuilderO2Test, SymbolCasesStayDirectCalls) {
  DispatcherSpec Spec =
      makeSpec("i32 (ptr, ptr)", {symbolTarget("a"), symbolTarget("b"),
                                  symbolTarget("c"), symbolTarget("d")});
  expectCasesStayDirectAfterO2(Spec);
}

TEST_F(DispatchIRBuilderO2Test, VoidCasesStayDirectCalls) {
  // With nothing returned, the case blocks differ only in their callee.
  DispatcherSpec Spec = makeSpec(
      "void (ptr)", {symbolTarget("a"), symbolTarget("b"), symbolTarget("c")});
  expectCasesStayDirectAfterO2(Spec);
}

TEST_F(DispatchIRBuilderO2Test, SelectorArgCasesStayDirectCalls) {
  DispatcherSpec Spec = makeSpec(
      "i32 (ptr, ptr)", {addressTarget("a", 0x1000), addressTarget("b", 0x2000),
                         addressTarget("c", 0x3000)});
  Spec.SelectorArg = 1;
  expectCasesStayDirectAfterO2(Spec);
}

} // namespace
