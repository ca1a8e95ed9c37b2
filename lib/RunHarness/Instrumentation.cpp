//===- Instrumentation.cpp - Programs that count their calls --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "Instrumentation.h"

#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Transforms/Utils/BasicBlockUtils.h"

using namespace llvm;

namespace dispatchgen::run {

void instrument(Function &F, Instrumentation &Inst, size_t Index) {
  LLVMContext &Ctx = F.getContext();
  // After the entry block's allocas, which must stay in the entry block.
  BasicBlock::iterator At = F.getEntryBlock().getFirstInsertionPt();
  while (isa<AllocaInst>(*At))
    ++At;
  IRBuilder<> B(&*At);
  auto Ptr = [&](const void *P) {
    return B.CreateIntToPtr(B.getInt64(reinterpret_cast<uint64_t>(P)),
                            PointerType::getUnqual(Ctx));
  };
  auto *Enabled = B.CreateLoad(B.getInt8Ty(), Ptr(&Inst.Enabled), "dg.on");
  Enabled->setAtomic(AtomicOrdering::Monotonic);
  Value *On = B.CreateICmpNE(Enabled, B.getInt8(0));
  Instruction *Then = SplitBlockAndInsertIfThen(On, B.GetInsertPoint(), false);
  B.SetInsertPoint(Then);
  ProgramCounters &C = Inst.Counters[Index];
  B.CreateAtomicRMW(AtomicRMWInst::Add, Ptr(&C.Calls), B.getInt64(1),
                    MaybeAlign(8), AtomicOrdering::Monotonic);
  auto *Outstanding =
      B.CreateLoad(B.getInt32Ty(), Ptr(&C.Outstanding), "dg.outstanding");
  Outstanding->setAtomic(AtomicOrdering::Monotonic);
  Instruction *Late = SplitBlockAndInsertIfThen(
      B.CreateICmpSLE(Outstanding, B.getInt32(0)), Then, false);
  B.SetInsertPoint(Late);
  B.CreateAtomicRMW(AtomicRMWInst::Add, Ptr(&Inst.RunAfterRelease),
                    B.getInt64(1), MaybeAlign(8), AtomicOrdering::Monotonic);
}

} // namespace dispatchgen::run
