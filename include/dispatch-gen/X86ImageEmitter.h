//===- X86ImageEmitter.h - Dispatcher images without codegen ----*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The direct lowering: turns a dispatcher's DispatchLayout into x86-64
// machine code itself, without the code generator. Regenerating an image
// through the codegen pipeline costs about 1.5 ms plus 55 us per program
// (SelectionDAG builds and selects each tail-call block on its own); with
// this emitter a whole update (layout, relocation and copy into the code
// arena, patch) costs about 7 us at 48 programs and 0.55 ms at 4096
// (`dispatch-gen bench`). `dispatch-gen emit --lowering=direct` writes the
// image, disassembled or as raw bytes.
//
// The image only compares and jumps, so it needs nothing of the signature
// but where the selector arrives: which general-purpose register the SysV
// x86-64 convention puts it in. Signatures where that takes more than
// counting (aggregates, i128, selectors passed on the stack) keep the
// codegen path (DispatchIRBuilder, the same layout in IR).
//
//   movabs $Base, %rax         ; only when the programs lie above 2 GiB
//   mov    %sel, %r11
//   sub    %rax, %r11          ; r11 = selector - lowest program
//   cmp    $key, %r11          ; the layout's tests: `cmp; je program`
//   je     program_k           ; (a direct rel32 jump), `cmp; jae` for a
//   ...                        ; bisection, `cmp; jb` for a scan
//   jmp    *%sel               ; the fallback, or mov %sel,%r11 and a jump
//                              ; to the retpoline thunk
//
// %rax and %r11 carry no argument in a non-variadic SysV call, so clobbering
// them before the tail jump is invisible to the program.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_X86IMAGEEMITTER_H
#define DISPATCH_GEN_X86IMAGEEMITTER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace llvm {
class FunctionType;
} // namespace llvm

namespace dispatchgen {

class DispatchLayout;

/// One program of an image: the selector value that picks it and where its
/// direct jump goes. The two are the same program address in a dispatcher;
/// tests give them apart to see which path a call took.
struct ImageCase {
  uint64_t Key;
  uint64_t Target;
  /// Observed calls; 0 with the rest 0 means unweighted.
  uint64_t Weight = 0;
};

/// A laid-out image before linking.
struct X86Image {
  std::vector<uint8_t> Code;
  /// A rel32 field at Offset that must hold Cases[Case].Target - (Offset +
  /// 4) (JITLink's BranchPCRel32).
  struct CaseBranch {
    uint32_t Offset;
    uint32_t Case;
  };
  std::vector<CaseBranch> Branches;
  /// With a retpoline fallback: the rel32 field of the jump to the thunk.
  std::optional<uint32_t> ThunkBranch;
};

/// The encoding number of the register (0 = %rax ... 15 = %r15) that the
/// SysV x86-64 convention passes the selector in, for a dispatcher of
/// Signature (with the selector as DispatchIRBuilder places it); nothing when
/// it is on the stack or finding it needs the full ABI lowering.
std::optional<unsigned>
getX86SelectorRegister(llvm::FunctionType *Signature,
                       std::optional<unsigned> SelectorArg);

/// Where a counting image (a learning window's, see X86ImageOptions)
/// counts. Per CPU: block J (J = the CPU's number modulo NumBlocks, a power
/// of two) is at Base + J * BlockBytes. Its layout depends on MaxCases and
/// RingSlots only, never on the image, so that images of different case
/// counts (a set that changes during a window) can share the blocks safely:
/// the case the CPU's last call reached (its index + 1; 0 after the
/// fallback), the calls whose case the successor table predicted, the
/// fallback's calls, the sampling countdown, the steady images' fallback
/// calls, MaxCases case counters (in Cases'
/// order), a ring of RingSlots (a power of two) selectors that took the
/// fallback (the newest at slot (fallback count - 1) mod RingSlots), and the
/// successor table (MaxCases + 1 entries: the index + 1 of the case that
/// followed each case, by the previous case's index + 1), a first-order guess
/// of the next target as a branch predictor's history makes one. Each thread
/// writes the block of the CPU it runs on, without a lock prefix: no cache
/// line is written by every calling thread, and a thread preempted between
/// reading its CPU number and the increment may lose a count or add it to
/// another CPU's block, which a sample tolerates.
struct X86CountingPlan {
  uint64_t Base = 0;
  uint32_t BlockBytes = 0;
  uint32_t NumBlocks = 1;
  uint32_t RingSlots = 1;
  /// The most cases an image counting into these blocks may have.
  uint32_t MaxCases = 0;
  /// Where the image reads the CPU number.
  enum class CPUSource {
    /// `lsl` of the per-CPU segment Linux sets up for vgetcpu: always
    /// there on x86-64, the slowest (about 8 ns on a Xeon).
    LSL,
    /// `rdpid` (TSC_AUX, which Linux sets to the CPU number): about 2 ns.
    RDPID,
    /// One load of `cpu_id_start` from the restartable-sequences area
    /// glibc (2.35 and later) registers for every thread it starts, at
    /// RSeqOffset from %fs: as cheap as any load. A thread glibc did not
    /// start reads whatever its %fs holds there (NumBlocks' mask keeps the
    /// write in the blocks), or faults where its %fs maps nothing there:
    /// only for hosts whose calling threads glibc started.
    RSeq,
  };
  CPUSource CPU = CPUSource::LSL;
  /// With CPUSource::RSeq: glibc's __rseq_offset.
  int32_t RSeqOffset = 0;
  /// Sampling. 0: every call is counted. Else the image is sampled: a
  /// countdown in the CPU's block (signed) sends SampleBurst calls in a
  /// row through the counting compares, then about SampleSkip calls
  /// through plain ones that only decrement it, and so on: a call between
  /// bursts costs a load, a decrement and a not-taken branch more than a
  /// steady image's. Counts, ring and successor table then describe the
  /// bursts' calls (one in (SampleSkip + SampleBurst) / SampleBurst); a
  /// burst's first call is scored as if it followed the fallback.
  uint32_t SampleSkip = 0;
  uint32_t SampleBurst = 0;
  /// The calls skipped after each burst vary (SampleSkip - J/2 plus a
  /// pseudo-random 0 to J - 1, J the largest power of two up to
  /// SampleSkip, from a per-block LCG), so that a call pattern whose
  /// period divides the sampling's is not seen through the same window
  /// each time (a round-robin over 64 targets would otherwise show only
  /// 32 of them). false: exactly SampleSkip (tests).
  bool JitterSkip = true;
  /// The address of a byte that gates the counting: while it is 0 a call
  /// reads it and takes the plain compares, counting nothing and writing
  /// nothing; while it is not, the call is counted (or sampled) as above.
  /// The learner opens and closes it during a window. 0: no gate.
  uint64_t Gate = 0;

  /// The bytes of one block, rounded up to a multiple of 64 so blocks
  /// share no cache line.
  static uint32_t blockBytesFor(uint32_t MaxCases, uint32_t RingSlots);
  /// Offsets in a block.
  static constexpr uint32_t previousSlot() { return 0; }
  static constexpr uint32_t predictedCounter() { return 8; }
  static constexpr uint32_t fallbackCounter() { return 16; }
  static constexpr uint32_t countdownSlot() { return 24; }
  /// The fallback calls of steady images (X86ImageOptions::
  /// FallbackCounting), which windows do not count.
  static constexpr uint32_t steadyFallbackCounter() { return 32; }
  /// The state of the sampling's jitter (a 32-bit LCG).
  static constexpr uint32_t jitterSlot() { return 40; }
  static constexpr uint32_t caseCounter(uint32_t Case) { return 48 + 8 * Case; }
  uint32_t ringSlot(uint32_t Slot) const {
    return caseCounter(MaxCases) + 8 * Slot;
  }
  uint32_t successorSlot(uint32_t Previous) const {
    return ringSlot(RingSlots) + 8 * Previous;
  }
  /// Whether this CPU has `rdpid`.
  static bool hostHasRDPID();
  /// Where this process has its threads' rseq areas (glibc registered one
  /// for the calling thread), or none.
  static std::optional<int32_t> hostRSeqOffset();
  /// The cheapest source this process and CPU offer, with its offset set.
  void useCheapestCPUSource();
};

/// How emitX86Image lays an image out.
struct X86ImageOptions {
  /// The fallback moves the selector to %r11 and jumps to a thunk (a
  /// retpoline, or a counting one in tests) instead of `jmp *%sel`.
  bool ThunkFallback = false;
  /// The fallback is a retpoline on the selector's own register, in the
  /// image (`call 1f; 2: pause; lfence; jmp 2b; 1: mov %sel, (%rsp);
  /// ret`): no move, no jump to a thunk. Its `ret` is the image's one
  /// indirect branch. Not with ThunkFallback.
  bool InlineRetpoline = false;
  /// Testing only: > 0 starts the image with a loop of that many `pause`s
  /// over %eax.
  unsigned DelayPauses = 0;
  /// The layout to lower, made for Cases; null: DispatchLayout::choose of
  /// the cases' weights.
  const DispatchLayout *Layout = nullptr;
  /// Set: a counting image. Each case's `je` goes to a stub that counts
  /// the call in this CPU's block and jumps on to the program (still a
  /// direct rel32 jump); the fallback records the selector first.
  std::optional<X86CountingPlan> Counting;
  /// Set (with Counting unset): a steady image whose fallback path counts
  /// its calls in the CPU's steadyFallbackCounter() before it leaves; the
  /// compares and the programs' jumps are untouched.
  std::optional<X86CountingPlan> FallbackCounting;
};

/// Lays out the image for Cases (any order; keys distinct and non-zero) as
/// Options say. Fails when the keys span more than 2 GiB, which a 32-bit
/// compare cannot cover: the codegen path handles that.
llvm::Expected<X86Image> emitX86Image(llvm::ArrayRef<ImageCase> Cases,
                                      unsigned SelectorReg,
                                      const X86ImageOptions &Options);

/// Lays out the image for Cases (any order; keys distinct and non-zero) as
/// DispatchLayout::choose lays them out.
/// ThunkFallback: the fallback moves the selector to %r11 and jumps to a
/// thunk (a retpoline, or a counting one in tests) instead of `jmp *%sel`.
/// DelayPauses > 0 (testing only) starts the image with a loop of that
/// many `pause`s over %eax. Fails when the keys span more than 2 GiB,
/// which a 32-bit compare cannot cover: the codegen path handles that.
llvm::Expected<X86Image> emitX86Image(llvm::ArrayRef<ImageCase> Cases,
                                      unsigned SelectorReg, bool ThunkFallback,
                                      unsigned DelayPauses = 0);

/// Code's bytes relocated to run at Base: each case branch to its
/// program, the thunk branch (if any) to Thunk. Fails, naming the target,
/// when one is out of rel32 reach of its field. Both the image and its
/// resident copy are made by this one function.
llvm::Expected<std::vector<uint8_t>>
relocateX86Image(const X86Image &Code, llvm::ArrayRef<ImageCase> Cases,
                 uint64_t Base, uint64_t Thunk);

} // namespace dispatchgen

#endif // DISPATCH_GEN_X86IMAGEEMITTER_H
