//===- SelectorRoute.cpp - Follow a selector through x86-64 code ----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A small evaluator of the x86-64 instructions dispatcher images are made
// of, on concrete values: enough to run an image's compare tree for one key
// and see which branch leaves it. It knows the instructions by their LLVM
// opcode names (MCInstrInfo::getName), which are stable across LLVM
// releases, rather than by the X86 target's private opcode numbers.
//
// Everything not written by an evaluated instruction is unknown; a compare
// or branch that depends on an unknown value ends the route with an error,
// so a proof never rests on a guess.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CodeInspector.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/MC/MCDisassembler/MCDisassembler.h"
#include "llvm/MC/MCInst.h"
#include "llvm/MC/MCInstrAnalysis.h"
#include "llvm/MC/MCInstrInfo.h"
#include "llvm/MC/MCRegisterInfo.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <bitset>

using namespace llvm;

namespace dispatchgen {

std::optional<uint64_t> SelectorRoute::valueOf(StringRef Register) const {
  for (const auto &[Name, Value] : Known)
    if (StringRef(Name).equals_insensitive(Register))
      return Value;
  return std::nullopt;
}

namespace {

/// The 16 general-purpose registers, by encoding number.
constexpr const char *Names64[] = {"RAX", "RCX", "RDX", "RBX", "RSP", "RBP",
                                   "RSI", "RDI", "R8",  "R9",  "R10", "R11",
                                   "R12", "R13", "R14", "R15"};
constexpr const char *Names32[] = {
    "EAX", "ECX", "EDX",  "EBX",  "ESP",  "EBP",  "ESI",  "EDI",
    "R8D", "R9D", "R10D", "R11D", "R12D", "R13D", "R14D", "R15D"};
constexpr unsigned NumGPRs = 16;

/// X86::CondCode, the last operand of JCC_*.
enum Cond : unsigned {
  CC_O,
  CC_NO,
  CC_B,
  CC_AE,
  CC_E,
  CC_NE,
  CC_BE,
  CC_A,
  CC_S,
  CC_NS,
  CC_P,
  CC_NP,
  CC_L,
  CC_GE,
  CC_LE,
  CC_G
};

/// The arithmetic flags as the last flag-setting instruction left them,
/// kept as its operands and computed when a branch asks.
struct Flags {
  enum Kind { FK_Unknown, FK_Sub, FK_Add, FK_Logic } K = FK_Unknown;
  uint64_t A = 0, B = 0;
  unsigned Width = 64;
  /// inc/dec leave the carry flag alone.
  bool CarryKnown = true;

  uint64_t mask() const { return Width == 64 ? ~0ull : (1ull << Width) - 1; }
  uint64_t result() const {
    switch (K) {
    case FK_Sub:
      return (A - B) & mask();
    case FK_Add:
      return (A + B) & mask();
    default:
      return (A & B) & mask();
    }
  }
  bool sign(uint64_t V) const { return (V >> (Width - 1)) & 1; }
  bool zf() const { return result() == 0; }
  bool sf() const { return sign(result()); }
  bool cf() const {
    uint64_t M = mask();
    if (K == FK_Sub)
      return (A & M) < (B & M);
    if (K == FK_Add)
      return result() < (A & M);
    return false;
  }
  bool of() const {
    uint64_t R = result();
    if (K == FK_Sub)
      return sign((A ^ B) & (A ^ R));
    if (K == FK_Add)
      return sign(~(A ^ B) & (A ^ R));
    return false;
  }
  bool pf() const { return std::bitset<8>(result() & 0xff).count() % 2 == 0; }

  /// Whether condition C holds; nothing when it reads a flag not known.
  std::optional<bool> holds(unsigned C) const {
    if (K == FK_Unknown)
      return std::nullopt;
    bool NeedsCarry = C == CC_B || C == CC_AE || C == CC_BE || C == CC_A;
    if (NeedsCarry && !CarryKnown)
      return std::nullopt;
    bool R;
    switch (C & ~1u) {
    case CC_O:
      R = of();
      break;
    case CC_B:
      R = cf();
      break;
    case CC_E:
      R = zf();
      break;
    case CC_BE:
      R = cf() || zf();
      break;
    case CC_S:
      R = sf();
      break;
    case CC_P:
      R = pf();
      break;
    case CC_L:
      R = sf() != of();
      break;
    default: // CC_LE
      R = zf() || sf() != of();
      break;
    }
    // Odd codes are the negations of the even ones before them.
    return (C & 1) ? !R : R;
  }
};

struct Decoded {
  MCInst Inst;
  uint64_t Size = 0;
};

/// Evaluates one route at a time over code decoded once.
class Evaluator {
public:
  Evaluator(const MCDisassembler &DisAsm, const MCInstrInfo &MII,
            const MCRegisterInfo &MRI, const MCInstrAnalysis &MIA,
            ArrayRef<uint8_t> Bytes, uint64_t Address)
      : DisAsm(DisAsm), MII(MII), MRI(MRI), MIA(MIA), Bytes(Bytes),
        Address(Address) {
    for (unsigned R = 1, E = MRI.getNumRegs(); R < E; ++R) {
      StringRef Name = MRI.getName(R);
      for (unsigned G = 0; G < NumGPRs; ++G) {
        if (Name == Names64[G])
          GPR[R] = {G, 64};
        else if (Name == Names32[G])
          GPR[R] = {G, 32};
      }
      if (Name == "RIP")
        RIP = R;
    }
  }

  Expected<SelectorRoute> run(unsigned SelectorGPR, uint64_t Key,
                              unsigned MaxSteps);

private:
  Expected<const Decoded &> decodeAt(uint64_t PC);
  /// A register operand's value (zero-extended from 32 bits), or an
  /// immediate's.
  std::optional<uint64_t> value(const MCOperand &Op) const;
  /// Writes a 64- or 32-bit register (a 32-bit write clears the top half).
  bool write(const MCOperand &Op, std::optional<uint64_t> V);
  Error cannot(uint64_t PC, const Decoded &D, StringRef Why) const;

  const MCDisassembler &DisAsm;
  const MCInstrInfo &MII;
  const MCRegisterInfo &MRI;
  const MCInstrAnalysis &MIA;
  ArrayRef<uint8_t> Bytes;
  uint64_t Address;
  DenseMap<uint64_t, Decoded> Cache;
  /// MC register number -> (GPR encoding number, width).
  DenseMap<unsigned, std::pair<unsigned, unsigned>> GPR;
  unsigned RIP = 0;

  std::array<std::optional<uint64_t>, NumGPRs> Regs;
  Flags F;
};

Expected<const Decoded &> Evaluator::decodeAt(uint64_t PC) {
  auto It = Cache.find(PC);
  if (It != Cache.end())
    return It->second;
  Decoded D;
  uint64_t Offset = PC - Address;
  if (DisAsm.getInstruction(D.Inst, D.Size, Bytes.drop_front(Offset), PC,
                            nulls()) == MCDisassembler::Fail ||
      D.Size == 0 || Offset + D.Size > Bytes.size())
    return createStringError(
        formatv("cannot decode an instruction at {0:x}", PC));
  return Cache.try_emplace(PC, std::move(D)).first->second;
}

std::optional<uint64_t> Evaluator::value(const MCOperand &Op) const {
  if (Op.isImm())
    return static_cast<uint64_t>(Op.getImm());
  if (!Op.isReg())
    return std::nullopt;
  auto It = GPR.find(Op.getReg().id());
  if (It == GPR.end() || !Regs[It->second.first])
    return std::nullopt;
  uint64_t V = *Regs[It->second.first];
  return It->second.second == 32 ? V & 0xffffffffu : V;
}

bool Evaluator::write(const MCOperand &Op, std::optional<uint64_t> V) {
  if (!Op.isReg())
    return false;
  auto It = GPR.find(Op.getReg().id());
  if (It == GPR.end())
    return false;
  if (V && It->second.second == 32)
    *V &= 0xffffffffu;
  Regs[It->second.first] = V;
  return true;
}

Error Evaluator::cannot(uint64_t PC, const Decoded &D, StringRef Why) const {
  return createStringError(
      formatv("cannot follow the selector through {0} at {1:x}: "
              "{2}",
              MII.getName(D.Inst.getOpcode()), PC, Why));
}

Expected<SelectorRoute> Evaluator::run(unsigned SelectorGPR, uint64_t Key,
                                       unsigned MaxSteps) {
  Regs.fill(std::nullopt);
  Regs[SelectorGPR] = Key;
  F = Flags();
  SelectorRoute Route;
  Route.Key = Key;
  auto Leave = [&](uint64_t From, BranchKind Kind,
                   std::optional<uint64_t> Target) {
    Route.From = From;
    Route.Kind = Kind;
    Route.Target = Target;
    for (unsigned G = 0; G < NumGPRs; ++G)
      if (Regs[G])
        Route.Known.push_back({Names64[G], *Regs[G]});
    return Route;
  };
  uint64_t End = Address + Bytes.size();
  for (uint64_t PC = Address;; ++Route.Steps) {
    if (PC < Address || PC >= End)
      return createStringError(
          formatv("the code runs off its end at {0:x}", PC));
    if (Route.Steps >= MaxSteps)
      return createStringError(formatv("no branch leaves the code after {0} "
                                       "instructions",
                                       MaxSteps));
    auto DOrErr = decodeAt(PC);
    if (!DOrErr)
      return DOrErr.takeError();
    const Decoded &D = *DOrErr;
    const MCInst &I = D.Inst;
    StringRef Op = MII.getName(I.getOpcode());
    uint64_t Next = PC + D.Size;
    auto Operand = [&](unsigned N) -> const MCOperand & {
      return I.getOperand(N);
    };
    auto Need = [&](unsigned N) { return I.getNumOperands() >= N; };

    if (Op == "PAUSE" || Op == "LFENCE" || Op == "ENDBR64" ||
        Op.starts_with("NOOP")) {
      PC = Next;
      continue;
    }
    if (Op == "JMP_1" || Op == "JMP_2" || Op == "JMP_4" ||
        Op.starts_with("JCC_")) {
      uint64_t Target = 0;
      if (!MIA.evaluateBranch(I, PC, D.Size, Target))
        return cannot(PC, D, "no target");
      bool Taken = true;
      if (Op.starts_with("JCC_")) {
        std::optional<bool> H = F.holds(
            static_cast<unsigned>(Operand(I.getNumOperands() - 1).getImm()));
        if (!H)
          return cannot(PC, D, "the flags it tests are not known");
        Taken = *H;
      }
      if (!Taken) {
        PC = Next;
        continue;
      }
      if (Target < Address || Target >= End)
        return Leave(PC, BranchKind::Direct, Target);
      PC = Target;
      continue;
    }
    // A retpoline on a register (`call 1f; 2: pause; lfence; jmp 2b;
    // 1: mov %reg, (%rsp); ret`): an indirect jump through the register,
    // never predicted.
    if (Op == "CALL64pcrel32") {
      static const uint8_t Head[] = {0xE8, 0x07, 0x00, 0x00, 0x00, 0xF3,
                                     0x90, 0x0F, 0xAE, 0xE8, 0xEB, 0xF9};
      ArrayRef<uint8_t> At = Bytes.drop_front(PC - Address);
      if (At.size() >= sizeof(Head) + 5 &&
          At.take_front(sizeof(Head)).equals(Head) && (At[12] & 0xFB) == 0x48 &&
          At[13] == 0x89 && (At[14] & 0xC7) == 0x04 && At[15] == 0x24 &&
          At[16] == 0xC3) {
        unsigned Reg = ((At[12] & 0x04) ? 8 : 0) | ((At[14] >> 3) & 7);
        return Leave(PC, BranchKind::Indirect, Regs[Reg]);
      }
    }
    if (MIA.isIndirectBranch(I) && !MIA.isCall(I))
      return Leave(PC, BranchKind::Indirect,
                   Op == "JMP64r" ? value(Operand(0)) : std::nullopt);
    if (MIA.isBranch(I) || MIA.isCall(I) || MIA.isReturn(I))
      return cannot(PC, D, "a control transfer the route does not model");

    // Moves.
    if ((Op == "MOV64rr" || Op == "MOV32rr" || Op == "MOV64ri" ||
         Op == "MOV64ri32" || Op == "MOV32ri") &&
        Need(2)) {
      std::optional<uint64_t> V = value(Operand(1));
      if (Op == "MOV32ri" && V)
        *V &= 0xffffffffu;
      if (!write(Operand(0), V))
        return cannot(PC, D, "it writes a register the route does not model");
      PC = Next;
      continue;
    }
    if (Op == "LEA64r" && Need(5)) {
      // dst, base, scale, index, displacement (, segment).
      std::optional<uint64_t> Base = 0, Index = 0;
      if (Operand(1).getReg()) {
        Base = Operand(1).getReg().id() == RIP ? std::optional<uint64_t>(Next)
                                               : value(Operand(1));
      }
      if (Operand(3).getReg())
        Index = value(Operand(3));
      std::optional<uint64_t> V;
      if (Base && Index && Operand(4).isImm())
        V = *Base + *Index * static_cast<uint64_t>(Operand(2).getImm()) +
            static_cast<uint64_t>(Operand(4).getImm());
      if (!write(Operand(0), V))
        return cannot(PC, D, "it writes a register the route does not model");
      PC = Next;
      continue;
    }

    // Arithmetic and compares: the width is in the name.
    bool Is64 = Op.contains("64");
    unsigned Width = Is64 ? 64 : 32;
    bool RegOrImm = Op.ends_with("rr") || Op.ends_with("ri") ||
                    Op.ends_with("ri8") || Op.ends_with("ri32");
    if ((Op.starts_with("ADD") || Op.starts_with("SUB")) && RegOrImm &&
        (Is64 || Op.contains("32")) && Need(3)) {
      // dst, src1 (tied), src2.
      std::optional<uint64_t> A = value(Operand(1)), B = value(Operand(2));
      std::optional<uint64_t> Result;
      F = Flags();
      if (A && B) {
        F = Flags{Op.starts_with("ADD") ? Flags::FK_Add : Flags::FK_Sub, *A, *B,
                  Width, true};
        Result = F.result();
      }
      if (!write(Operand(0), Result))
        return cannot(PC, D, "it writes a register the route does not model");
      PC = Next;
      continue;
    }
    // The short forms on %rax/%eax: `cmp $imm32, %rax` and its kin.
    if ((Op == "CMP64i32" || Op == "CMP32i32" || Op == "TEST64i32" ||
         Op == "TEST32i32" || Op == "ADD64i32" || Op == "ADD32i32" ||
         Op == "SUB64i32" || Op == "SUB32i32") &&
        Need(1) && Operand(I.getNumOperands() - 1).isImm()) {
      std::optional<uint64_t> A = Regs[0];
      uint64_t B =
          static_cast<uint64_t>(Operand(I.getNumOperands() - 1).getImm());
      Flags::Kind K = Op.starts_with("CMP") || Op.starts_with("SUB")
                          ? Flags::FK_Sub
                      : Op.starts_with("ADD") ? Flags::FK_Add
                                              : Flags::FK_Logic;
      F = A ? Flags{K, *A & (Width == 64 ? ~0ull : 0xffffffffull), B, Width,
                    true}
            : Flags();
      if (Op.starts_with("ADD") || Op.starts_with("SUB"))
        Regs[0] = A ? std::optional<uint64_t>(F.result()) : std::nullopt;
      PC = Next;
      continue;
    }
    if ((Op.starts_with("CMP") || Op.starts_with("TEST")) && RegOrImm &&
        (Is64 || Op.contains("32")) && Need(2)) {
      std::optional<uint64_t> A = value(Operand(0)), B = value(Operand(1));
      F = A && B
              ? Flags{Op.starts_with("CMP") ? Flags::FK_Sub : Flags::FK_Logic,
                      *A, *B, Width, true}
              : Flags();
      PC = Next;
      continue;
    }
    if ((Op == "DEC64r" || Op == "DEC32r" || Op == "INC64r" ||
         Op == "INC32r") &&
        Need(2)) {
      std::optional<uint64_t> A = value(Operand(1));
      Width = Op.contains("64") ? 64 : 32;
      if (A) {
        F = Flags{Op.starts_with("DEC") ? Flags::FK_Sub : Flags::FK_Add, *A, 1,
                  Width, /*CarryKnown=*/false};
        write(Operand(0), F.result());
      } else {
        F = Flags();
        write(Operand(0), std::nullopt);
      }
      PC = Next;
      continue;
    }
    // What a steady image's fallback counter does besides the route: read
    // the CPU number, compute its block, count in memory. The registers
    // they write become unknown; memory is not modelled (a compare with it
    // is refused above).
    if ((Op == "MOV32rm" || Op == "MOV64rm" || Op == "RDPID64" ||
         Op == "LSL32rr" || Op == "IMUL32rri" || Op == "IMUL64rri32") &&
        Need(1)) {
      if (!write(Operand(0), std::nullopt))
        return cannot(PC, D, "it writes a register the route does not model");
      if (Op != "MOV32rm" && Op != "MOV64rm" && Op != "RDPID64")
        F = Flags();
      PC = Next;
      continue;
    }
    if ((Op == "AND32i32" || Op == "AND64i32") && Need(1)) {
      std::optional<uint64_t> A = Regs[0];
      uint64_t B =
          static_cast<uint64_t>(Operand(I.getNumOperands() - 1).getImm());
      if (Op == "AND32i32")
        B &= 0xffffffffu; // and the result is zero-extended
      Regs[0] = A ? std::optional<uint64_t>(*A & B) : std::nullopt;
      F = Flags();
      PC = Next;
      continue;
    }
    // The counter's `incq 32(%r11)` (X86CountingPlan::
    // steadyFallbackCounter()) and nothing else: an increment of the stack
    // or of any other memory is refused.
    if (Op == "INC64m" && Need(5) && Operand(0).isReg() && Operand(2).isReg() &&
        !Operand(2).getReg() && Operand(3).isImm() &&
        Operand(3).getImm() == 32) {
      auto Base = GPR.find(Operand(0).getReg().id());
      if (Base != GPR.end() && Base->second.first == 11 &&
          Base->second.second == 64) {
        F = Flags();
        PC = Next;
        continue;
      }
    }
    return cannot(PC, D, "an instruction the route does not model");
  }
}

} // namespace

Expected<std::vector<SelectorRoute>>
CodeInspector::followSelector(ArrayRef<uint8_t> Bytes, uint64_t Address,
                              StringRef Register, ArrayRef<uint64_t> Keys,
                              unsigned MaxSteps) const {
  if (!IsX86_64)
    return createStringError(
        "following a selector is implemented for x86-64 only");
  std::optional<unsigned> Selector;
  for (unsigned G = 0; G < NumGPRs; ++G)
    if (Register.equals_insensitive(Names64[G]))
      Selector = G;
  if (!Selector)
    return createStringError(
        formatv("'{0}' is not a 64-bit general-purpose register", Register));
  Evaluator E(*DisAsm, *MII, *MRI, *MIA, Bytes, Address);
  std::vector<SelectorRoute> Routes;
  Routes.reserve(Keys.size());
  for (uint64_t Key : Keys) {
    auto R = E.run(*Selector, Key, MaxSteps);
    if (!R)
      return createStringError(
          formatv("selector {0:x}: {1}", Key, toString(R.takeError())));
    Routes.push_back(std::move(*R));
  }
  return std::move(Routes);
}

} // namespace dispatchgen
