//===- X86ImageEmitter.cpp - Dispatcher images without codegen ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/X86ImageEmitter.h"

#include "X86Assembler.h"

#include "dispatch-gen/DispatchLayout.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cpuid.h>
#include <cstring>
#include <limits>

#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#include <sys/rseq.h>
#define DISPATCHGEN_HAVE_RSEQ 1
#else
#define DISPATCHGEN_HAVE_RSEQ 0
#endif

using namespace llvm;

namespace dispatchgen {

namespace {

// Encoding numbers of the registers the image uses.
constexpr unsigned RegRAX = 0, RegR11 = 11;
// SysV x86-64 integer argument registers, in order.
constexpr unsigned ArgRegs[] = {7 /*rdi*/, 6 /*rsi*/, 2 /*rdx*/,
                                1 /*rcx*/, 8 /*r8*/,  9 /*r9*/};
// Condition codes (the low nibble of Jcc's opcode).
constexpr uint8_t CondB = 0x2, CondAE = 0x3, CondE = 0x4, CondNE = 0x5,
                  CondS = 0x8, CondNS = 0x9, CondG = 0xF;
/// Whether the SysV convention passes Ty in one general-purpose register
/// (true), in vector registers or on the stack without touching the GPRs
/// (false), or in some way only the full ABI lowering knows (nothing).
std::optional<bool> takesOneGPR(Type *Ty) {
  if (Ty->isPointerTy())
    return true;
  if (auto *IT = dyn_cast<IntegerType>(Ty))
    return IT->getBitWidth() <= 64 ? std::optional<bool>(true) : std::nullopt;
  if (Ty->isHalfTy() || Ty->isBFloatTy() || Ty->isFloatTy() || Ty->isDoubleTy())
    return false;
  if (auto *VT = dyn_cast<FixedVectorType>(Ty))
    if (VT->getPrimitiveSizeInBits().getFixedValue() <= 128 &&
        !VT->getElementType()->isIntegerTy(1))
      return false;
  return std::nullopt;
}

/// Turns a DispatchLayout into instructions: the layout decides the
/// compares and where they lead, this only picks encodings and the order
/// of the blocks (a node's first child falls through from its tests).
class LayoutLowering {
public:
  /// CaseLabels: where each case's `je` goes (a counting stub); empty:
  /// straight to the program.
  LayoutLowering(const DispatchLayout &L, ArrayRef<ImageCase> Cases,
                 uint64_t Base, unsigned CmpReg, Assembler &A,
                 unsigned FallbackLabel, ArrayRef<unsigned> CaseLabels)
      : L(L), Cases(Cases), Base(Base), CmpReg(CmpReg), A(A),
        FallbackLabel(FallbackLabel), CaseLabels(CaseLabels) {}

  void lower() {
    for (uint32_t C : L.prefix()) {
      compare(C);
      toCase(C);
    }
    lowerNode(0, /*Last=*/true, std::nullopt);
  }

private:
  /// Last: the fallback follows, so a chain that misses may fall through
  /// to it. Flags: the case whose compare set the flags on every way in.
  void lowerNode(uint32_t Index, bool Last, std::optional<uint32_t> Flags) {
    const DispatchLayout::Node &N = L.node(Index);
    switch (N.Kind) {
    case DispatchLayout::NodeKind::Chain:
      for (uint32_t C : N.Cases) {
        if (C != Flags)
          compare(C);
        Flags.reset();
        toCase(C);
      }
      if (!Last)
        A.jump(std::nullopt, FallbackLabel);
      return;
    case DispatchLayout::NodeKind::Bisect: {
      unsigned Right = A.newLabel();
      compare(N.Cases.front());
      A.jump(CondAE, Right);
      lowerNode(N.Children[0], /*Last=*/false, std::nullopt);
      // The upper half is entered only by that `jae`, which leaves the
      // flags of comparing with its lowest case.
      A.bind(Right);
      lowerNode(N.Children[1], Last, N.Cases.front());
      return;
    }
    case DispatchLayout::NodeKind::Scan: {
      // `cmp; jb` to each child but the last, which follows.
      SmallVector<unsigned, 16> Labels;
      for (uint32_t C : N.Cases) {
        Labels.push_back(A.newLabel());
        compare(C);
        A.jump(CondB, Labels.back());
      }
      lowerNode(N.Children.back(), /*Last=*/false, std::nullopt);
      for (size_t J = 0; J < Labels.size(); ++J) {
        A.bind(Labels[J]);
        lowerNode(N.Children[J], Last && J + 1 == Labels.size(), std::nullopt);
      }
      return;
    }
    }
  }

  /// `je` to case C (or its counting stub).
  void toCase(uint32_t C) {
    if (CaseLabels.empty())
      A.jumpToCase(CondE, C);
    else
      A.jump(CondE, CaseLabels[C]);
  }

  /// `cmp $(key - Base), %CmpReg`, with an 8-bit immediate when it fits.
  void compare(uint32_t C) {
    uint64_t Imm = Cases[C].Key - Base;
    assert(isUInt<31>(Imm) && "checked by emitX86Image");
    uint8_t Rex = 0x48 | (CmpReg >= 8 ? 0x01 : 0x00);
    uint8_t ModRM = 0xF8 | (CmpReg & 7); // /7 = cmp
    if (isUInt<7>(Imm)) {                // a sign-extended imm8
      A.bytes({Rex, 0x83, ModRM, static_cast<uint8_t>(Imm)});
      return;
    }
    A.bytes({Rex, 0x81, ModRM});
    A.bytes32(static_cast<uint32_t>(Imm));
  }

  const DispatchLayout &L;
  ArrayRef<ImageCase> Cases;
  uint64_t Base;
  unsigned CmpReg;
  Assembler &A;
  unsigned FallbackLabel;
  ArrayRef<unsigned> CaseLabels;
};

/// `mov %From, %To` (64-bit).
void emitMove(Assembler &A, unsigned From, unsigned To) {
  uint8_t Rex = 0x48 | (From >= 8 ? 0x04 : 0x00) | (To >= 8 ? 0x01 : 0x00);
  A.bytes({Rex, 0x89, uint8_t(0xC0 | ((From & 7) << 3) | (To & 7))});
}

/// %rax = the byte offset of this CPU's block: the CPU number (rseq's
/// cpu_id_start, or the low 12 bits of what `rdpid` reads, TSC_AUX, or of
/// the limit of Linux's per-CPU segment 0x7b, as vgetcpu reads it) modulo
/// NumBlocks, times BlockBytes.
void emitBlockOffset(Assembler &A, const X86CountingPlan &P) {
  switch (P.CPU) {
  case X86CountingPlan::CPUSource::RSeq:
    A.bytes({0x64, 0x8B, 0x04, 0x25}); // mov %fs:RSeqOffset, %eax
    A.bytes32(static_cast<uint32_t>(P.RSeqOffset));
    break;
  case X86CountingPlan::CPUSource::RDPID:
    A.bytes({0xF3, 0x0F, 0xC7, 0xF8}); // rdpid %rax
    A.bytes({0x25});                   // and $0xfff, %eax
    A.bytes32(0xFFF);
    break;
  case X86CountingPlan::CPUSource::LSL:
    A.bytes({0xB8, 0x7B, 0x00, 0x00, 0x00, // mov $0x7b, %eax
             0x0F, 0x03, 0xC0});           // lsl %eax, %eax
    A.bytes({0x25});                       // and $0xfff, %eax
    A.bytes32(0xFFF);
    break;
  }
  A.bytes({0x25}); // and $(NumBlocks - 1), %eax
  A.bytes32(P.NumBlocks - 1);
  A.bytes({0x69, 0xC0}); // imul $BlockBytes, %eax, %eax
  A.bytes32(P.BlockBytes);
}

/// %rax = the offset of this CPU's block, %r11 = its address.
void emitBlockAddress(Assembler &A, const X86CountingPlan &P) {
  emitBlockOffset(A, P);
  A.bytes({0x49, 0xBB}); // movabs $Base, %r11
  A.bytes64(P.Base);
  A.bytes({0x49, 0x01, 0xC3}); // add %rax, %r11
}

/// At the fallback of a counting image (%rax = the block's offset): count
/// the call and put the selector in the ring.
void emitFallbackRecord(Assembler &A, const X86CountingPlan &P, size_t NumCases,
                        unsigned SelectorReg) {
  A.bytes({0x49, 0xBB}); // movabs $Base, %r11
  A.bytes64(P.Base);
  A.bytes({0x49, 0x01, 0xC3}); // add %rax, %r11
  uint32_t Count = X86CountingPlan::fallbackCounter();
  A.bytes({0x49, 0x8B, 0x83}); // mov Count(%r11), %rax
  A.bytes32(Count);
  A.bytes({0x49, 0xFF, 0x83}); // incq Count(%r11)
  A.bytes32(Count);
  A.bytes({0x25}); // and $(RingSlots - 1), %eax
  A.bytes32(P.RingSlots - 1);
  // mov %sel, Ring(%r11,%rax,8)
  A.bytes({uint8_t(0x49 | (SelectorReg >= 8 ? 0x04 : 0x00)), 0x89,
           uint8_t(0x84 | ((SelectorReg & 7) << 3)), 0xC3});
  A.bytes32(P.ringSlot(0));
  A.bytes({0x49, 0xC7, 0x83}); // movq $0, Previous(%r11)
  A.bytes32(X86CountingPlan::previousSlot());
  A.bytes32(0);
}

/// A counting image's stub for case C (%rax = the block's offset): count
/// the call, score the successor table's guess, update it, then jump to
/// the program.
void emitCaseCount(Assembler &A, const X86CountingPlan &P, size_t NumCases,
                   uint32_t C) {
  A.bytes({0x49, 0xBB}); // movabs $Base, %r11
  A.bytes64(P.Base);
  A.bytes({0x49, 0x01, 0xC3}); // add %rax, %r11: this CPU's block
  A.bytes({0x49, 0xFF, 0x83}); // incq Counter(%r11)
  A.bytes32(X86CountingPlan::caseCounter(C));
  A.bytes({0x49, 0x8B, 0x83}); // mov Previous(%r11), %rax
  A.bytes32(X86CountingPlan::previousSlot());
  uint32_t Successors = P.successorSlot(0);
  A.bytes({0x49, 0x81, 0xBC, 0xC3}); // cmpq $(C + 1), Successors(%r11,%rax,8)
  A.bytes32(Successors);
  A.bytes32(C + 1);
  unsigned Missed = A.newLabel();
  A.jump(CondNE, Missed);
  A.bytes({0x49, 0xFF, 0x83}); // incq Predicted(%r11)
  A.bytes32(X86CountingPlan::predictedCounter());
  A.bind(Missed);
  A.bytes({0x49, 0xC7, 0x84, 0xC3}); // movq $(C + 1), Successors(%r11,%rax,8)
  A.bytes32(Successors);
  A.bytes32(C + 1);
  A.bytes({0x49, 0xC7, 0x83}); // movq $(C + 1), Previous(%r11)
  A.bytes32(X86CountingPlan::previousSlot());
  A.bytes32(C + 1);
  A.jmpToCase(C);
}

} // namespace

uint32_t X86CountingPlan::blockBytesFor(uint32_t MaxCases, uint32_t RingSlots) {
  X86CountingPlan P;
  P.MaxCases = MaxCases;
  P.RingSlots = RingSlots;
  // The successor table ends the block.
  return static_cast<uint32_t>(alignTo(P.successorSlot(MaxCases + 1), 64));
}

bool X86CountingPlan::hostHasRDPID() {
  unsigned EAX, EBX, ECX, EDX;
  return __get_cpuid_count(7, 0, &EAX, &EBX, &ECX, &EDX) && (ECX >> 22) & 1;
}

std::optional<int32_t> X86CountingPlan::hostRSeqOffset() {
#if DISPATCHGEN_HAVE_RSEQ
  // __rseq_size is 0 where glibc did not register (an old kernel, or
  // GLIBC_TUNABLES=glibc.pthread.rseq=0); cpu_id_start is the area's
  // first field.
  if (__rseq_size >= 4 && isInt<32>(__rseq_offset))
    return static_cast<int32_t>(__rseq_offset);
#endif
  return std::nullopt;
}

void X86CountingPlan::useCheapestCPUSource() {
  if (std::optional<int32_t> Offset = hostRSeqOffset()) {
    CPU = CPUSource::RSeq;
    RSeqOffset = *Offset;
  } else {
    CPU = hostHasRDPID() ? CPUSource::RDPID : CPUSource::LSL;
  }
}

std::optional<unsigned>
getX86SelectorRegister(FunctionType *Signature,
                       std::optional<unsigned> SelectorArg) {
  // An aggregate return may be demoted to a hidden pointer in %rdi.
  Type *Ret = Signature->getReturnType();
  if (Ret->isStructTy() || Ret->isArrayTy() || Signature->isVarArg())
    return std::nullopt;
  unsigned Index = SelectorArg.value_or(Signature->getNumParams());
  if (SelectorArg && (*SelectorArg >= Signature->getNumParams() ||
                      !Signature->getParamType(*SelectorArg)->isPointerTy()))
    return std::nullopt;
  unsigned GPRs = 0;
  for (unsigned I = 0; I < Index; ++I) {
    std::optional<bool> One = takesOneGPR(Signature->getParamType(I));
    if (!One)
      return std::nullopt;
    GPRs += *One;
  }
  if (GPRs >= std::size(ArgRegs))
    return std::nullopt;
  return ArgRegs[GPRs];
}

Expected<X86Image> emitX86Image(ArrayRef<ImageCase> Cases, unsigned SelectorReg,
                                bool ThunkFallback, unsigned DelayPauses) {
  X86ImageOptions Options;
  Options.ThunkFallback = ThunkFallback;
  Options.DelayPauses = DelayPauses;
  return emitX86Image(Cases, SelectorReg, Options);
}

Expected<X86Image> emitX86Image(ArrayRef<ImageCase> Cases, unsigned SelectorReg,
                                const X86ImageOptions &Options) {
  if (SelectorReg > 15 || SelectorReg == RegRAX || SelectorReg == RegR11 ||
      SelectorReg == 4 /*rsp*/)
    return createStringError(
        formatv("register {0} cannot hold the selector", SelectorReg));
  std::vector<uint32_t> Sorted(Cases.size());
  for (uint32_t I = 0; I < Sorted.size(); ++I)
    Sorted[I] = I;
  llvm::sort(Sorted, [&](uint32_t L, uint32_t R) {
    return Cases[L].Key < Cases[R].Key;
  });
  for (size_t I = 0; I < Sorted.size(); ++I) {
    if (Cases[Sorted[I]].Key == 0)
      return createStringError("a program has address 0");
    if (I > 0 && Cases[Sorted[I]].Key == Cases[Sorted[I - 1]].Key)
      return createStringError(
          formatv("two programs have the address {0:x}", Cases[Sorted[I]].Key));
  }

  const std::optional<X86CountingPlan> &Counting = Options.Counting;
  if (Counting &&
      (!isPowerOf2_32(Counting->NumBlocks) ||
       !isPowerOf2_32(Counting->RingSlots) ||
       Cases.size() > Counting->MaxCases ||
       Counting->BlockBytes < X86CountingPlan::blockBytesFor(
                                  Counting->MaxCases, Counting->RingSlots)))
    return createStringError("a counting plan needs power-of-two blocks and "
                             "ring slots, room for every case and blocks "
                             "that hold every counter");
  if (Options.InlineRetpoline && Options.ThunkFallback)
    return createStringError("a fallback is a thunk or an inline retpoline, "
                             "not both");
  if (Counting && Options.FallbackCounting)
    return createStringError("a counting image counts its fallback already");
  if (Options.FallbackCounting &&
      (!isPowerOf2_32(Options.FallbackCounting->NumBlocks) ||
       Options.FallbackCounting->BlockBytes <
           X86CountingPlan::blockBytesFor(Options.FallbackCounting->MaxCases,
                                          Options.FallbackCounting->RingSlots)))
    return createStringError("a fallback-counting plan needs power-of-two "
                             "blocks that hold every counter");
  if (Counting && Counting->SampleSkip &&
      (Counting->SampleBurst == 0 || Counting->SampleBurst > (1u << 30) ||
       Counting->SampleSkip > (1u << 30)))
    return createStringError("a sampled counting plan needs 1 to 2^30 calls "
                             "per burst and at most 2^30 between bursts");

  Assembler A;
  if (unsigned DelayPauses = Options.DelayPauses) {
    // mov $N, %eax; 1: pause; dec %eax; jnz 1b
    A.bytes({0xB8});
    A.bytes32(DelayPauses);
    unsigned Loop = A.newLabel();
    A.bind(Loop);
    A.bytes({0xF3, 0x90, 0xFF, 0xC8});
    A.jump(CondNE, Loop);
  }
  uint64_t Base = 0;
  if (!Sorted.empty() && Cases[Sorted.back()].Key > uint64_t(INT32_MAX)) {
    // Offsets from the lowest program make every key a 32-bit immediate.
    Base = Cases[Sorted.front()].Key;
    if (Cases[Sorted.back()].Key - Base > uint64_t(INT32_MAX))
      return createStringError(
          formatv("the programs span {0:x} bytes, more than a "
                  "32-bit compare covers",
                  Cases[Sorted.back()].Key - Base));
  }
  std::optional<DispatchLayout> Chosen;
  if (!Options.Layout) {
    std::vector<LayoutCase> ForLayout;
    for (const ImageCase &C : Cases)
      ForLayout.push_back({C.Key, C.Weight});
    Chosen = DispatchLayout::choose(ForLayout);
  }
  const DispatchLayout &Layout = Options.Layout ? *Options.Layout : *Chosen;

  // One body: the rebase, the layout's compares and, when counting, the
  // block's offset in %rax (which nothing else uses from there on) and the
  // stubs' labels.
  SmallVector<unsigned, 0> CaseLabels;
  // A layout without a tree compares nothing: no rebase either, the entry
  // goes straight to the fallback.
  bool NoTree = Layout.shape() == DispatchLayout::Shape::FallbackOnly;
  auto EmitBody = [&](bool Count, unsigned Fallback) {
    unsigned CmpReg = SelectorReg;
    if (Base && !NoTree) {
      A.bytes({0x48, 0xB8}); // movabs $Base, %rax
      A.bytes64(Base);
      emitMove(A, SelectorReg, RegR11);
      A.bytes({0x49, 0x29, 0xC3}); // sub %rax, %r11
      CmpReg = RegR11;
    }
    SmallVector<unsigned, 0> Labels;
    if (Count) {
      emitBlockOffset(A, *Counting);
      for (size_t C = 0; C < Cases.size(); ++C)
        Labels.push_back(A.newLabel());
    }
    LayoutLowering(Layout, Cases, Base, CmpReg, A, Fallback, Labels).lower();
    if (Count)
      CaseLabels = std::move(Labels);
  };

  unsigned Fallback = A.newLabel();
  if (Counting) {
    unsigned CountFallback = A.newLabel();
    // The calls a window does not count take the plain body (no stubs).
    unsigned Plain = A.newLabel();
    if (Counting->Gate) {
      // Gated: while the gate's byte is 0 (the learner's off phases) a
      // call reads it and takes the plain body; no store, so no call
      // waits for the previous one's.
      unsigned Open = A.newLabel();
      A.bytes({0x49, 0xBB}); // movabs $Gate, %r11
      A.bytes64(Counting->Gate);
      A.bytes({0x41, 0x80, 0x3B, 0x00}); // cmpb $0, (%r11)
      A.jump(CondNE, Open);
      A.bind(Plain);
      EmitBody(false, Fallback);
      A.jump(std::nullopt, Fallback); // the body ends in its last compare
      A.bind(Open);
    }
    if (Counting->SampleSkip) {
      // Sampled: a countdown in this CPU's block sends SampleBurst calls
      // in a row down the counting body, then lets SampleSkip calls take
      // the plain one, and so on.
      unsigned Count = A.newLabel();
      emitBlockAddress(A, *Counting);
      // The decrement bounds a window's call from below: a caller that
      // calls in a loop waits for the last call's store each time (about
      // 1.3 ns here), which the gate's off phases avoid. An indexed decq
      // Countdown(%r11,%rax) measured 40% slower, a shift for the
      // multiply no faster.
      A.bytes({0x49, 0xFF, 0x8B}); // decq Countdown(%r11)
      A.bytes32(X86CountingPlan::countdownSlot());
      if (Counting->Gate) {
        A.jump(CondNS, Plain);
      } else {
        unsigned Sampled = A.newLabel();
        A.jump(CondS, Sampled);
        A.bind(Plain);
        EmitBody(false, Fallback);
        A.jump(std::nullopt, Fallback);
        A.bind(Sampled);
      }
      // A burst's first call follows no counted call.
      A.bytes({0x49, 0x83, 0xBB}); // cmpq $-1, Countdown(%r11)
      A.bytes32(X86CountingPlan::countdownSlot());
      A.bytes({0xFF});
      unsigned NotFirst = A.newLabel();
      A.jump(CondNE, NotFirst);
      A.bytes({0x49, 0xC7, 0x83}); // movq $0, Previous(%r11)
      A.bytes32(X86CountingPlan::previousSlot());
      A.bytes32(0);
      A.bind(NotFirst);
      // Its last call (or any below, which a count lost between CPUs can
      // leave) restarts the countdown.
      A.bytes({0x49, 0x81, 0xBB}); // cmpq $-SampleBurst, Countdown(%r11)
      A.bytes32(X86CountingPlan::countdownSlot());
      A.bytes32(static_cast<uint32_t>(-int32_t(Counting->SampleBurst)));
      A.jump(CondG, Count);
      if (Counting->JitterSkip && Counting->SampleSkip > 1) {
        // %eax = the next LCG state; the skip = its top bits + the base.
        uint32_t J = uint32_t(1) << Log2_32(Counting->SampleSkip);
        A.bytes({0x41, 0x69, 0x83}); // imul $1103515245, Jitter(%r11), %eax
        A.bytes32(X86CountingPlan::jitterSlot());
        A.bytes32(1103515245u);
        A.bytes({0x05}); // add $12345, %eax
        A.bytes32(12345u);
        A.bytes({0x41, 0x89, 0x83}); // mov %eax, Jitter(%r11)
        A.bytes32(X86CountingPlan::jitterSlot());
        A.bytes(
            {0xC1, 0xE8, uint8_t(32 - Log2_32(J))}); // shr $(32-log2 J), %eax
        A.bytes({0x05}); // add $(SampleSkip - J/2), %eax
        A.bytes32(Counting->SampleSkip - J / 2);
        A.bytes({0x49, 0x89, 0x83}); // mov %rax, Countdown(%r11)
        A.bytes32(X86CountingPlan::countdownSlot());
      } else {
        A.bytes({0x49, 0xC7, 0x83}); // movq $SampleSkip, Countdown(%r11)
        A.bytes32(X86CountingPlan::countdownSlot());
        A.bytes32(Counting->SampleSkip);
      }
      A.bind(Count);
    }
    EmitBody(true, CountFallback);
    A.bind(CountFallback);
    emitFallbackRecord(A, *Counting, Cases.size(), SelectorReg);
  } else {
    EmitBody(false, Fallback);
  }
  // The one indirect branch.
  A.bind(Fallback);
  if (const std::optional<X86CountingPlan> &P = Options.FallbackCounting) {
    emitBlockAddress(A, *P);
    A.bytes({0x49, 0xFF, 0x83}); // incq SteadyFallback(%r11)
    A.bytes32(X86CountingPlan::steadyFallbackCounter());
  }
  if (Options.InlineRetpoline) {
    // call 1f; 2: pause; lfence; jmp 2b; 1: mov %sel, (%rsp); ret
    A.bytes({0xE8, 0x07, 0x00, 0x00, 0x00, 0xF3, 0x90, 0x0F, 0xAE, 0xE8, 0xEB,
             0xF9});
    A.bytes({uint8_t(0x48 | (SelectorReg >= 8 ? 0x04 : 0x00)), 0x89,
             uint8_t(0x04 | ((SelectorReg & 7) << 3)), 0x24, 0xC3});
  } else if (Options.ThunkFallback) {
    emitMove(A, SelectorReg, RegR11);
    A.jumpToThunk();
  } else if (SelectorReg >= 8) {
    A.bytes({0x41, 0xFF, uint8_t(0xE0 | (SelectorReg & 7))}); // jmp *%reg
  } else {
    A.bytes({0xFF, uint8_t(0xE0 | SelectorReg)});
  }
  for (size_t C = 0; C < CaseLabels.size(); ++C) {
    A.bind(CaseLabels[C]);
    emitCaseCount(A, *Counting, Cases.size(), C);
  }
  return A.finish();
}

Expected<std::vector<uint8_t>> relocateX86Image(const X86Image &Code,
                                                ArrayRef<ImageCase> Cases,
                                                uint64_t Base, uint64_t Thunk) {
  std::vector<uint8_t> Bytes = Code.Code;
  auto Patch = [&](uint32_t Offset, uint64_t Target) -> Error {
    int64_t Disp = static_cast<int64_t>(Target - (Base + Offset + 4));
    if (!isInt<32>(Disp))
      return createStringError(inconvertibleErrorCode(),
                               "%#llx is out of rel32 reach of the image at "
                               "%#llx",
                               static_cast<unsigned long long>(Target),
                               static_cast<unsigned long long>(Base));
    support::endian::write32le(&Bytes[Offset], static_cast<int32_t>(Disp));
    return Error::success();
  };
  for (const X86Image::CaseBranch &B : Code.Branches)
    if (Error E = Patch(B.Offset, Cases[B.Case].Target))
      return std::move(E);
  if (Code.ThunkBranch)
    if (Error E = Patch(*Code.ThunkBranch, Thunk))
      return std::move(E);
  return Bytes;
}

} // namespace dispatchgen
