//===- CallCost.cpp - The cost of one call, per variant -------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// One LLJIT per CallLoopSet holds the programs (registered and not), two
// live dispatchers (one unweighted, one weighted by the current pattern),
// the kernel-style address-sorted compare tree, one caller loop per variant
// and one more direct loop per unregistered program; the Adaptive variant's
// dispatcher and loop are AdaptiveVariant.cpp's. Nothing runs
// IR optimisations: the loops are written in the shape they should have and
// only codegen (at -O2) touches them, so the code around the call is the
// same in every variant.
//
//===----------------------------------------------------------------------===//

#include "CallLoopSetImpl.h"

#include "dispatch-gen/CodeEmitter.h"
#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"

#include <chrono>

using namespace llvm;

namespace dispatchgen::bench {

StringRef variantName(CallVariant V) {
  switch (V) {
  case CallVariant::Direct:
    return "direct";
  case CallVariant::Indirect:
    return "indirect";
  case CallVariant::Retpoline:
    return "retpoline";
  case CallVariant::Dispatcher:
    return "dispatcher";
  case CallVariant::Weighted:
    return "dispatcher+weights";
  case CallVariant::SortedTree:
    return "sorted-tree";
  case CallVariant::Adaptive:
    return "adaptive";
  }
  llvm_unreachable("unknown variant");
}

std::string programName(unsigned K) { return formatv("prog_{0}", K).str(); }

namespace {

constexpr const char *PlainEntry = "dg_bench_plain";
constexpr const char *WeightedEntry = "dg_bench_weighted";
constexpr const char *TreeName = "dg_bench_sorted_tree";

std::string loopName(CallVariant V) {
  return formatv("loop_{0}", static_cast<unsigned>(V)).str();
}
std::string directLoopName(unsigned K) {
  return formatv("loop_direct_{0}", K).str();
}

/// `i32 prog_K(i32 x) { return x + K; }` for K < Count: the registered
/// programs, then the unregistered ones.
std::unique_ptr<Module> buildPrograms(LLVMContext &Ctx, unsigned Count) {
  auto M = std::make_unique<Module>("bench-programs", Ctx);
  IRBuilder<> B(Ctx);
  auto *Ty = FunctionType::get(B.getInt32Ty(), {B.getInt32Ty()}, false);
  for (unsigned K = 0; K < Count; ++K) {
    auto *F =
        Function::Create(Ty, GlobalValue::ExternalLinkage, programName(K), *M);
    F->addFnAttr(Attribute::NoInline);
    B.SetInsertPoint(BasicBlock::Create(Ctx, "", F));
    B.CreateRet(B.CreateAdd(F->getArg(0), B.getInt32(K)));
  }
  return M;
}

} // namespace

Function *
buildLoop(Module &M, StringRef Name, StringRef CPU, StringRef Features,
          function_ref<Value *(IRBuilder<> &, Value *X, Value *Sel)> MakeCall) {
  LLVMContext &Ctx = M.getContext();
  IRBuilder<> B(Ctx);
  Type *I64 = B.getInt64Ty(), *Ptr = B.getPtrTy();
  auto *Ty = FunctionType::get(I64, {Ptr, Ptr, I64, I64, I64}, false);
  auto *F = Function::Create(Ty, GlobalValue::ExternalLinkage, Name, M);
  F->addFnAttr(Attribute::NoInline);
  F->addFnAttr("target-cpu", CPU);
  F->addFnAttr("target-features", Features);
  // Every loop at the same offset in a cache line, so that the variants
  // whose loops have the same shape (a call of an entry) fetch and predict
  // them alike, whichever module they were compiled in.
  F->setAlignment(Align(64));
  Value *Targets = F->getArg(0), *Pattern = F->getArg(1), *Mask = F->getArg(2),
        *Start = F->getArg(3), *End = F->getArg(4);
  auto *Entry = BasicBlock::Create(Ctx, "entry", F);
  auto *Loop = BasicBlock::Create(Ctx, "loop", F);
  auto *Exit = BasicBlock::Create(Ctx, "exit", F);
  B.SetInsertPoint(Entry);
  B.CreateCondBr(B.CreateICmpEQ(Start, End), Exit, Loop);

  B.SetInsertPoint(Loop);
  PHINode *I = B.CreatePHI(I64, 2, "i");
  PHINode *Acc = B.CreatePHI(I64, 2, "acc");
  Value *J = B.CreateAnd(I, Mask, "j");
  Value *Index = B.CreateZExt(
      B.CreateLoad(B.getInt32Ty(), B.CreateGEP(B.getInt32Ty(), Pattern, J)),
      I64);
  Value *Sel = B.CreateLoad(Ptr, B.CreateGEP(Ptr, Targets, Index), "sel");
  // x depends on the selector in every variant, so the direct call's loop
  // loads it too.
  Value *X = B.CreateTrunc(B.CreateXor(I, B.CreatePtrToInt(Sel, I64)),
                           B.getInt32Ty(), "x");
  Value *R = MakeCall(B, X, Sel);
  Value *AccNext = B.CreateAdd(Acc, B.CreateZExt(R, I64), "acc.next");
  Value *INext = B.CreateAdd(I, B.getInt64(1), "i.next");
  B.CreateCondBr(B.CreateICmpEQ(INext, End), Exit, Loop);
  I->addIncoming(Start, Entry);
  I->addIncoming(INext, Loop);
  Acc->addIncoming(B.getInt64(0), Entry);
  Acc->addIncoming(AccNext, Loop);

  B.SetInsertPoint(Exit);
  PHINode *Result = B.CreatePHI(I64, 2, "result");
  Result->addIncoming(B.getInt64(0), Entry);
  Result->addIncoming(AccNext, Loop);
  B.CreateRet(Result);
  return F;
}

Error CallLoopSet::Impl::init(unsigned Count) {
  N = Count;
  auto JOrErr = orc::LLJITBuilder().create();
  if (!JOrErr)
    return JOrErr.takeError();
  J = std::move(*JOrErr);
  auto Ctx = std::make_unique<LLVMContext>();
  auto M = buildPrograms(*Ctx, N + UnregisteredPrograms);
  if (Error E =
          J->addIRModule(orc::ThreadSafeModule(std::move(M), std::move(Ctx))))
    return E;
  for (unsigned K = 0; K < N + UnregisteredPrograms; ++K) {
    auto Addr = J->lookup(programName(K));
    if (!Addr)
      return Addr.takeError();
    Targets.push_back(Addr->getValue());
  }
  auto P = makeDispatcher(PlainEntry);
  if (!P)
    return P.takeError();
  Plain = std::move(*P);
  // Every dispatcher of the session defines its entry in the same JITDylib.
  J->getMainJITDylib().addToLinkOrder(*Plain->entryDylib());
  auto W = makeDispatcher(WeightedEntry);
  if (!W)
    return W.takeError();
  Weighted = std::move(*W);
  if (Error E = buildLoops())
    return E;
  PhaseDirect = {Loops[static_cast<size_t>(CallVariant::Direct)]};
  PhaseDirectExact = {true};
  return makeAdaptive(/*Background=*/false);
}

Expected<std::unique_ptr<Dispatcher>>
CallLoopSet::Impl::makeDispatcher(const std::string &Name,
                                  const AdaptiveConfig *Adaptive) {
  DispatcherConfig C;
  C.Name = Name;
  C.Signature = "i32 (i32)";
  C.Capacity = std::max<unsigned>(N, ProgramSet::DefaultCapacity);
  // Next to the programs, so every case is a `je rel32`.
  C.Near = Targets.front();
  // Every dispatcher stands in for a retpolined call, as the kernel's does
  // in a retpoline build: what it leaves to its fallback pays the
  // retpoline (the adaptive one's cost model weighs that). The indirect
  // column is the plain indirect call.
  C.RetpolineFallback = true;
  if (Adaptive)
    C.Adaptive = *Adaptive;
  auto D = Dispatcher::create(std::move(C), *J);
  if (!D)
    return D.takeError();
  ProgramSet::Batch All;
  for (unsigned K = 0; K < N; ++K)
    All.add(Targets[K], programName(K));
  if (Error E = (*D)->apply(All))
    return std::move(E);
  DispatcherStatus S = (*D)->status();
  if (S.DirectTargets != N)
    return createStringError(formatv("dispatcher '{0}' reaches only {1} of {2} "
                                     "programs directly",
                                     Name, S.DirectTargets, N));
  return D;
}

Error CallLoopSet::Impl::buildLoops() {
  auto JTMB = orc::JITTargetMachineBuilder::detectHost();
  if (!JTMB)
    return JTMB.takeError();
  CPU = JTMB->getCPU();
  Features = JTMB->getFeatures().getString();
  std::string RetpolineFeatures =
      Features + (Features.empty() ? "" : ",") + "+retpoline-indirect-calls";

  auto Ctx = std::make_unique<LLVMContext>();
  auto M = std::make_unique<Module>("bench-loops", *Ctx);
  M->setDataLayout(J->getDataLayout());
  M->setTargetTriple(J->getTargetTriple());
  IRBuilder<> B(*Ctx);
  auto *ProgTy = FunctionType::get(B.getInt32Ty(), {B.getInt32Ty()}, false);
  auto *EntryTy =
      FunctionType::get(B.getInt32Ty(), {B.getInt32Ty(), B.getPtrTy()}, false);
  auto Direct = [&](unsigned K) {
    return M->getOrInsertFunction(programName(K), ProgTy);
  };
  FunctionCallee PlainFn = M->getOrInsertFunction(PlainEntry, EntryTy);
  FunctionCallee WeightedFn = M->getOrInsertFunction(WeightedEntry, EntryTy);

  // The kernel's dispatcher: a compare tree balanced over the sorted
  // addresses. LLVM lowers an unweighted switch to exactly that.
  DispatcherSpec Spec;
  Spec.Name = TreeName;
  Spec.Signature = ProgTy;
  for (unsigned K = 0; K < N; ++K)
    Spec.Targets.push_back({programName(K), Targets[K], std::nullopt});
  auto Tree = DispatchIRBuilder(*M).build(Spec);
  if (!Tree)
    return Tree.takeError();
  (*Tree)->addFnAttr("target-cpu", CPU);
  (*Tree)->addFnAttr("target-features", RetpolineFeatures);
  // Called, as the kernel's dispatcher is: inlined into the loop, a small
  // tree would beat the direct call it stands in for.
  (*Tree)->addFnAttr(Attribute::NoInline);

  // The Adaptive variant's loop is compiled with its dispatcher
  // (makeAdaptive()).
  for (CallVariant V : AllVariants)
    if (V != CallVariant::Adaptive)
      buildLoop(*M, loopName(V), CPU,
                V == CallVariant::Retpoline ? RetpolineFeatures : Features,
                [&](IRBuilder<> &B, Value *X, Value *Sel) -> Value * {
                  switch (V) {
                  case CallVariant::Direct:
                    return B.CreateCall(Direct(0), {X});
                  case CallVariant::Indirect:
                  case CallVariant::Retpoline:
                    return B.CreateCall(ProgTy, Sel, {X});
                  case CallVariant::Dispatcher:
                    return B.CreateCall(PlainFn, {X, Sel});
                  case CallVariant::Weighted:
                    return B.CreateCall(WeightedFn, {X, Sel});
                  case CallVariant::SortedTree:
                    return B.CreateCall(EntryTy, *Tree, {X, Sel});
                  case CallVariant::Adaptive:
                    break;
                  }
                  llvm_unreachable("unknown variant");
                });
  for (unsigned K = N; K < N + UnregisteredPrograms; ++K)
    buildLoop(*M, directLoopName(K), CPU, Features,
              [&](IRBuilder<> &B, Value *X, Value *) -> Value * {
                return B.CreateCall(Direct(K), {X});
              });
  std::string VerifyErrors;
  raw_string_ostream VOS(VerifyErrors);
  if (verifyModule(*M, &VOS))
    return createStringError("the benchmark loops do not verify: " +
                             VerifyErrors);
  if (Error E =
          J->addIRModule(orc::ThreadSafeModule(std::move(M), std::move(Ctx))))
    return E;
  for (CallVariant V : AllVariants) {
    if (V == CallVariant::Adaptive)
      continue;
    auto Addr = J->lookup(loopName(V));
    if (!Addr)
      return Addr.takeError();
    Loops[static_cast<size_t>(V)] = Addr->toPtr<LoopFn>();
  }
  for (unsigned K = N; K < N + UnregisteredPrograms; ++K) {
    auto Addr = J->lookup(directLoopName(K));
    if (!Addr)
      return Addr.takeError();
    UnregisteredDirect.push_back(Addr->toPtr<LoopFn>());
  }
  return Error::success();
}

CallLoopSet::CallLoopSet(std::unique_ptr<Impl> I) : I(std::move(I)) {}
CallLoopSet::~CallLoopSet() = default;

Expected<std::unique_ptr<CallLoopSet>> CallLoopSet::create(unsigned N) {
  if (N == 0)
    return createStringError("a benchmark needs at least one program");
  initializeTargets();
  auto I = std::make_unique<Impl>();
  if (Error E = I->init(N))
    return createStringError(inconvertibleErrorCode(),
                             formatv("cannot set up the call benchmark for "
                                     "N={0}: {1}",
                                     N, toString(std::move(E))));
  return std::unique_ptr<CallLoopSet>(new CallLoopSet(std::move(I)));
}

unsigned CallLoopSet::size() const { return I->N; }

Error CallLoopSet::setSequence(const CallSequence &S) {
  unsigned Count = I->N + UnregisteredPrograms;
  if (S.Phases.empty())
    return createStringError("a call sequence needs at least one phase");
  size_t Length = S.Phases.front().size();
  if (Length == 0 || (Length & (Length - 1)))
    return createStringError(
        formatv("a pattern's length must be a power of two, not {0}", Length));
  std::vector<uint64_t> Counts(I->N, 0);
  std::vector<LoopFn> PhaseDirect;
  std::vector<bool> PhaseDirectExact;
  for (const std::vector<uint32_t> &Phase : S.Phases) {
    if (Phase.size() != Length)
      return createStringError(formatv("the phases of a call sequence differ "
                                       "in length: {0} and {1}",
                                       Length, Phase.size()));
    for (uint32_t X : Phase)
      if (X >= Count)
        return createStringError(
            formatv("pattern index {0} out of range (N={1}, {2} more "
                    "unregistered)",
                    X, I->N, UnregisteredPrograms));
    std::vector<uint64_t> F = frequencies(Phase, I->N);
    for (unsigned K = 0; K < I->N; ++K)
      Counts[K] += F[K];
    // The direct loop calls program 0, or the unregistered program that
    // takes every call of the phase.
    bool OneProgram = all_equal(Phase);
    if (OneProgram && Phase.front() >= I->N) {
      PhaseDirect.push_back(I->UnregisteredDirect[Phase.front() - I->N]);
      PhaseDirectExact.push_back(true);
    } else {
      PhaseDirect.push_back(I->Loops[static_cast<size_t>(CallVariant::Direct)]);
      PhaseDirectExact.push_back(OneProgram && Phase.front() == 0);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> Weights;
  for (unsigned K = 0; K < I->N; ++K)
    Weights.push_back({I->Targets[K], Counts[K]});
  I->Weighted->setWeights(Weights);
  if (Error E = I->Weighted->regenerate())
    return E;
  // A dispatcher that learns this sequence from nothing: in the background
  // where the hot target moves while it is timed.
  if (Error E = I->makeAdaptive(/*Background=*/S.CallsPerPhase &&
                                S.Phases.size() > 1))
    return E;
  I->Sequence = S;
  I->PhaseDirect = std::move(PhaseDirect);
  I->PhaseDirectExact = std::move(PhaseDirectExact);
  std::fill(std::begin(I->Position), std::end(I->Position), 0);
  return Error::success();
}

Error CallLoopSet::setPattern(ArrayRef<uint32_t> Indices) {
  CallSequence S;
  S.Phases.emplace_back(Indices.begin(), Indices.end());
  return setSequence(S);
}

uint64_t CallLoopSet::run(CallVariant V, uint64_t Iterations) {
  const CallSequence &S = I->Sequence;
  uint64_t &Pos = I->Position[static_cast<size_t>(V)];
  uint64_t End = Pos + Iterations, Mask = S.Phases.front().size() - 1;
  uint64_t Sum = 0;
  // One loop per phase: a loop calls what the phase selects.
  while (Pos != End) {
    size_t K = 0;
    uint64_t Stop = End;
    if (S.CallsPerPhase) {
      uint64_t Phase = Pos / S.CallsPerPhase;
      K = Phase % S.Phases.size();
      Stop = std::min(End, (Phase + 1) * S.CallsPerPhase);
    }
    // One read-side section per batch: a grace period waits for one batch,
    // not for the whole loop.
    LoopFn Loop = I->loop(V, K);
    for (uint64_t From = Pos; From != Stop;) {
      uint64_t To = std::min(Stop, From + CallsPerGuard);
      RCUReadGuard Guard;
      Sum += Loop(I->Targets.data(), S.Phases[K].data(), Mask, From, To);
      From = To;
    }
    Pos = Stop;
  }
  return Sum;
}

uint64_t CallLoopSet::position(CallVariant V) const {
  return I->Position[static_cast<size_t>(V)];
}

Error CallLoopSet::check(uint64_t Iterations) {
  uint64_t Start = position(CallVariant::Indirect);
  uint64_t Expected = run(CallVariant::Indirect, Iterations);
  bool DirectExact = !is_contained(I->PhaseDirectExact, false);
  for (CallVariant V : AllVariants) {
    if (V == CallVariant::Indirect)
      continue;
    I->Position[static_cast<size_t>(V)] = Start;
    uint64_t Got = run(V, Iterations);
    if (Got != Expected && (V != CallVariant::Direct || DirectExact))
      return createStringError(formatv("N={0}: the {1} loop returned {2}, the "
                                       "indirect call {3}",
                                       I->N, variantName(V), Got, Expected));
  }
  return Error::success();
}

Expected<std::vector<CallCost>> measureCallCost(const CallCostOptions &Opts,
                                                ProgressFn Progress) {
  using Clock = std::chrono::steady_clock;
  if (Opts.Iterations == 0 || Opts.PhaseIterations == 0 ||
      Opts.Repetitions == 0)
    return createStringError("iterations and repetitions must be at least 1");
  RCUReaderThread Reader(RCUFlavor::Memb);
  std::vector<CallCost> Out;
  for (unsigned N : Opts.Ns) {
    if (Progress)
      Progress(formatv("call cost: N={0}: compiling {0} programs, the "
                       "dispatchers and the loops",
                       N));
    auto Set = CallLoopSet::create(N);
    if (!Set)
      return Set.takeError();
    for (Pattern P : Opts.Patterns) {
      if (Progress)
        Progress(formatv("call cost: N={0} {1}", N, patternName(P)));
      if (Error E = (*Set)->setSequence(makeSequence(P, N, Opts.PatternLength)))
        return std::move(E);
      // The adaptive dispatcher learns from one untimed loop (or, for a
      // moving target, in the background while it is timed).
      if (Error E = (*Set)->learn(Opts.Iterations, Opts.Repetitions))
        return std::move(E);
      // Also the warm-up: code, pattern and targets into the caches.
      if (Error E = (*Set)->check(Opts.PatternLength))
        return std::move(E);
      uint64_t Calls =
          P == Pattern::Phase ? Opts.PhaseIterations : Opts.Iterations;
      std::vector<std::vector<double>> Samples(NumVariants);
      for (unsigned R = 0; R < Opts.Repetitions; ++R)
        for (CallVariant V : AllVariants) {
          auto Start = Clock::now();
          (*Set)->run(V, Calls);
          std::chrono::duration<double, std::nano> T = Clock::now() - Start;
          Samples[static_cast<size_t>(V)].push_back(T.count() / Calls);
        }
      for (CallVariant V : AllVariants)
        Out.push_back({N, P, V, median(Samples[static_cast<size_t>(V)])});
      LearnedLayout L = (*Set)->learned();
      if (!L.Error.empty())
        return createStringError(formatv("N={0} {1}: the adaptive "
                                         "dispatcher failed to learn: {2}",
                                         N, patternName(P), L.Error));
      Out.back().Learned = std::move(L);
    }
  }
  return Out;
}

} // namespace dispatchgen::bench
