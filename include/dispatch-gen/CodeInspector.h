//===- CodeInspector.h - Disassemble and classify machine code -*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A dispatcher is only worth having while its cases stay direct branches: a
// PLT stub or a jump table turns them back into indirect jumps, and a case
// that jumps anywhere but to a registered program misroutes calls. This
// component decodes a range of machine code with LLVM's MC disassembler and
// classifies every branch, so that a live image can be checked (exactly one
// indirect branch, the fallback; every direct branch lands inside the image
// or on a registered program) and printed.
//
// The classification follows MCInstrAnalysis:
//
//  * return:   isReturn.
//  * direct:   a branch or call whose target evaluateBranch computes, i.e. a
//              PC-relative one (`je/jmp/call rel8/rel32` on x86).
//  * indirect: isIndirectBranch, or any other branch or call without an
//              evaluable target (`jmp *%rdx`, `call *%rax`, `jmp *x(%rip)`,
//              `call *(%rax)`).
//
// Branch targets alone do not prove that an image routes each program to
// its own `je`: a compare with a wrong immediate still has a direct branch
// to every program. followSelector() runs the code instead, on x86-64: from
// the image's first instruction, with the selector register holding a key
// and nothing else known, it evaluates moves, arithmetic, compares and
// branches until a branch leaves the image, and says where.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_CODEINSPECTOR_H
#define DISPATCH_GEN_CODEINSPECTOR_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llvm {
class MCAsmInfo;
class MCContext;
class MCDisassembler;
class MCInstPrinter;
class MCInstrAnalysis;
class MCInstrInfo;
class MCRegisterInfo;
class MCSubtargetInfo;
class raw_ostream;
} // namespace llvm

namespace dispatchgen {

/// How an instruction transfers control.
enum class BranchKind {
  /// Not a control transfer (or one MCInstrAnalysis does not model, such as
  /// a trap).
  None,
  /// A branch or call to a target encoded in the instruction.
  Direct,
  /// A branch or call through a register or memory.
  Indirect,
  Return,
};

/// Which syntax the instruction text uses.
enum class AsmSyntax {
  /// AT&T on x86; the target's default dialect elsewhere.
  Default,
  /// Intel syntax; x86 only.
  Intel,
};

/// One instruction as disassemble() decoded and classified it.
struct DecodedInstruction {
  uint64_t Address = 0;
  /// The instruction's encoding; its size is the instruction's length.
  llvm::SmallVector<uint8_t, 16> Bytes;
  /// The instruction as MCInstPrinter prints it, with tabs turned into
  /// spaces, immediates in hex and branch targets as absolute addresses.
  std::string Text;
  BranchKind Kind = BranchKind::None;
  bool IsCall = false;
  bool IsConditional = false;
  /// The absolute target of a direct branch or call.
  std::optional<uint64_t> Target;
};

/// What CodeInspector::check found in a range [Address, Address + Size).
struct ImageCheck {
  /// Instructions decoded.
  unsigned Instructions = 0;
  /// Addresses of the indirect branches and calls, in address order.
  std::vector<uint64_t> IndirectBranches;
  /// The distinct targets of direct branches and calls that leave the range,
  /// sorted.
  std::vector<uint64_t> DirectTargets;
  /// The DirectTargets not among the allowed targets, sorted.
  std::vector<uint64_t> UnknownTargets;
  /// Addresses where no instruction could be decoded, in address order.
  /// Decoding resumes one byte further, so the rest of the check is
  /// best-effort once this is non-empty.
  std::vector<uint64_t> DecodeErrors;
};

/// Where followSelector() left the code.
struct SelectorRoute {
  /// The key the selector register held on entry.
  uint64_t Key = 0;
  /// The branch that left the range.
  uint64_t From = 0;
  /// Direct: a jump to Target. Indirect: a jump through a register
  /// or memory; Target is the register's value when it is known.
  BranchKind Kind = BranchKind::None;
  std::optional<uint64_t> Target;
  /// Instructions evaluated on the way.
  unsigned Steps = 0;
  /// The 64-bit general-purpose registers whose value was known at the
  /// exit, by LLVM's name ("R11").
  llvm::SmallVector<std::pair<std::string, uint64_t>, 4> Known;

  /// The value of Register (LLVM's name, any case) at the exit, if known.
  std::optional<uint64_t> valueOf(llvm::StringRef Register) const;
};

/// Disassembles and classifies machine code for one target triple.
///
/// Not thread-safe: the MC objects it holds (notably MCInstPrinter and
/// MCContext) carry state that every call, even a const one, uses. Create
/// one inspector per thread.
class CodeInspector {
public:
  /// Creates an inspector for Triple, or for the running process's triple
  /// (and host CPU) when Triple is empty. Fails, naming the triple, when
  /// LLVM has no disassembler, instruction printer or instruction analysis
  /// for it, or when Syntax is not available on it.
  static llvm::Expected<std::unique_ptr<CodeInspector>>
  create(llvm::StringRef Triple = "", AsmSyntax Syntax = AsmSyntax::Default);

  ~CodeInspector();

  /// Decodes all of Bytes, which is loaded at Address. Fails on the first
  /// byte sequence that is no instruction (including one cut off by the end
  /// of Bytes), naming its address.
  llvm::Expected<std::vector<DecodedInstruction>>
  disassemble(llvm::ArrayRef<uint8_t> Bytes, uint64_t Address) const;

  /// Decodes all of Bytes, loaded at Address, and reports its branches.
  /// A direct target counts as leaving the range when it is outside
  /// [Address, Address + Bytes.size()); AllowedTargets need not be sorted.
  ImageCheck check(llvm::ArrayRef<uint8_t> Bytes, uint64_t Address,
                   llvm::ArrayRef<uint64_t> AllowedTargets) const;

  /// For each of Keys, runs the x86-64 code in Bytes (loaded at Address)
  /// from its first byte with the 64-bit register Register ("rdi", "r11";
  /// LLVM's names, any case) holding the key and every other register and
  /// the flags unknown, until a branch leaves the range. Evaluates moves,
  /// add, sub, lea, inc/dec, cmp, test and jumps; `nop` and `pause` do
  /// nothing. Fails, naming the instruction, where the route depends on
  /// something not known, on an instruction it does not model, or on
  /// falling off the end, or after MaxSteps instructions for one key.
  llvm::Expected<std::vector<SelectorRoute>>
  followSelector(llvm::ArrayRef<uint8_t> Bytes, uint64_t Address,
                 llvm::StringRef Register, llvm::ArrayRef<uint64_t> Keys,
                 unsigned MaxSteps = 1u << 16) const;

  /// Prints one line per instruction: address, encoding, text, and
  /// `  # -> NAME` for a direct target that NameOf names (a non-empty
  /// result).
  void print(llvm::ArrayRef<DecodedInstruction> Instructions,
             llvm::raw_ostream &OS,
             llvm::function_ref<std::string(uint64_t)> NameOf = nullptr) const;

private:
  CodeInspector();

  /// Decodes the instruction at the start of Bytes, loaded at Address;
  /// std::nullopt when there is none.
  std::optional<DecodedInstruction> decodeOne(llvm::ArrayRef<uint8_t> Bytes,
                                              uint64_t Address) const;

  // Created once by create() and never reassigned; declared in dependency
  // order so that each is destroyed before what it points to.
  std::unique_ptr<llvm::MCRegisterInfo> MRI;
  std::unique_ptr<llvm::MCAsmInfo> MAI;
  std::unique_ptr<llvm::MCSubtargetInfo> STI;
  std::unique_ptr<llvm::MCInstrInfo> MII;
  std::unique_ptr<llvm::MCContext> Ctx;
  std::unique_ptr<llvm::MCDisassembler> DisAsm;
  std::unique_ptr<llvm::MCInstrAnalysis> MIA;
  std::unique_ptr<llvm::MCInstPrinter> Printer;
  /// Whether the printer wants the next instruction's address (x86) rather
  /// than the instruction's own to print PC-relative targets.
  bool PCRelToNextInstruction = false;
  /// Whether followSelector() can evaluate the code.
  bool IsX86_64 = false;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_CODEINSPECTOR_H
