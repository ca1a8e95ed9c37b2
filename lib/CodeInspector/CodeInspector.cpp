//===- CodeInspector.cpp - Disassemble and classify machine code ----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CodeInspector.h"
#include "dispatch-gen/CodeEmitter.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/MC/MCAsmInfo.h"
#include "llvm/MC/MCContext.h"
#include "llvm/MC/MCDisassembler/MCDisassembler.h"
#include "llvm/MC/MCInst.h"
#include "llvm/MC/MCInstPrinter.h"
#include "llvm/MC/MCInstrAnalysis.h"
#include "llvm/MC/MCInstrInfo.h"
#include "llvm/MC/MCRegisterInfo.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/MCTargetOptions.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <algorithm>
#include <cstdint>
#include <mutex>

using namespace llvm;

namespace dispatchgen {

CodeInspector::CodeInspector() = default;
CodeInspector::~CodeInspector() = default;

Expected<std::unique_ptr<CodeInspector>>
CodeInspector::create(StringRef TripleName, AsmSyntax Syntax) {
  initializeTargets();
  bool IsHost = TripleName.empty();
  Triple TT(IsHost ? sys::getProcessTriple() : Triple::normalize(TripleName));
  std::string LookupErr;
  const Target *T = TargetRegistry::lookupTarget(TT, LookupErr);
  if (!T)
    return createStringError(
        formatv("cannot inspect code for '{0}': {1}", TT.str(), LookupErr));
  auto Missing = [&](StringRef What) {
    // This library registered every disassembler LLVM has. A host that
    // links LLVM statically and exports its symbols takes those
    // registrations (the calls bind to its copy), and this copy's registry
    // stays without them: say so rather than blame the target.
    if (What == "disassembler")
      return createStringError(formatv(
          "cannot inspect code for '{0}': dispatch-gen's copy of LLVM has no "
          "disassembler for it although it registered one, so the process "
          "seems to hold two copies of LLVM (a host linking LLVM statically, "
          "and libLLVM.so): build dispatch-gen with "
          "-DDISPATCHGEN_LINK_LLVM_DYLIB=OFF so that the host links one",
          TT.str()));
    return createStringError(
        formatv("cannot inspect code for '{0}': LLVM has no {1} "
                "for it",
                TT.str(), What));
  };

  // The constructor is private, so std::make_unique cannot call it.
  std::unique_ptr<CodeInspector> CI(new CodeInspector());
  CI->MRI.reset(T->createMCRegInfo(TT));
  if (!CI->MRI)
    return Missing("register info");
  // MCAsmInfo copies what it needs from the options, so a temporary will do.
  MCTargetOptions MCOptions;
  CI->MAI.reset(T->createMCAsmInfo(*CI->MRI, TT, MCOptions));
  if (!CI->MAI)
    return Missing("assembler info");
  // The host CPU lets the disassembler accept every instruction the process
  // may run; a foreign triple gets the generic CPU.
  CI->STI.reset(T->createMCSubtargetInfo(
      TT, IsHost ? sys::getHostCPUName() : StringRef(), ""));
  if (!CI->STI)
    return Missing("subtarget info");
  CI->MII.reset(T->createMCInstrInfo());
  if (!CI->MII)
    return Missing("instruction info");
  CI->Ctx = std::make_unique<MCContext>(TT, CI->MAI.get(), CI->MRI.get(),
                                        CI->STI.get());
  CI->DisAsm.reset(T->createMCDisassembler(*CI->STI, *CI->Ctx));
  if (!CI->DisAsm)
    return Missing("disassembler");
  CI->MIA.reset(T->createMCInstrAnalysis(CI->MII.get()));
  if (!CI->MIA)
    return Missing("instruction analysis");

  // X86's printer numbers its variants 0 for AT&T and 1 for Intel. Its
  // MCAsmInfo's dialect follows the -x86-asm-syntax option, which an embedder
  // may have set, so x86 asks for AT&T explicitly.
  unsigned Variant = TT.isX86() ? 0 : CI->MAI->getAssemblerDialect();
  if (Syntax == AsmSyntax::Intel) {
    if (!TT.isX86())
      return createStringError(
          formatv("cannot print Intel syntax for '{0}': it is "
                  "only available on x86",
                  TT.str()));
    Variant = 1;
  }
  CI->Printer.reset(
      T->createMCInstPrinter(TT, Variant, *CI->MAI, *CI->MII, *CI->MRI));
  if (!CI->Printer)
    return Missing("instruction printer");
  CI->PCRelToNextInstruction = TT.isX86();
  CI->IsX86_64 = TT.getArch() == Triple::x86_64;
  CI->Printer->setPrintImmHex(true);
  // Print `je 0x2000` rather than the encoded displacement, so that a dump
  // shows where each case goes.
  CI->Printer->setPrintBranchImmAsAddress(true);
  return std::move(CI);
}

std::optional<DecodedInstruction>
CodeInspector::decodeOne(ArrayRef<uint8_t> Bytes, uint64_t Address) const {
  MCInst Inst;
  uint64_t Size = 0;
  // SoftFail is an encoding the target runs with unpredictable results (ARM);
  // it is still an instruction, as llvm-objdump treats it.
  if (DisAsm->getInstruction(Inst, Size, Bytes, Address, nulls()) ==
          MCDisassembler::Fail ||
      Size == 0 || Size > Bytes.size())
    return std::nullopt;

  DecodedInstruction D;
  D.Address = Address;
  D.Bytes.assign(Bytes.begin(), Bytes.begin() + Size);
  D.IsCall = MIA->isCall(Inst);
  D.IsConditional = MIA->isConditionalBranch(Inst);
  if (MIA->isReturn(Inst)) {
    D.Kind = BranchKind::Return;
  } else if (MIA->isBranch(Inst) || D.IsCall || MIA->isIndirectBranch(Inst)) {
    // An indirect call is isCall but not isIndirectBranch, so "no evaluable
    // target" is what makes a call indirect.
    uint64_t Target = 0;
    if (!MIA->isIndirectBranch(Inst) &&
        MIA->evaluateBranch(Inst, Address, Size, Target)) {
      D.Kind = BranchKind::Direct;
      D.Target = Target;
    } else {
      D.Kind = BranchKind::Indirect;
    }
  }

  raw_string_ostream TextOS(D.Text);
  // MCInstPrinter::printInst resolves a PC-relative operand against the
  // address it is given, which on x86 must be the next instruction's.
  uint64_t PrintAddress = PCRelToNextInstruction ? Address + Size : Address;
  Printer->printInst(&Inst, PrintAddress, /*Annot=*/"", *STI, TextOS);
  // The printer indents with a tab and separates operands with one; a single
  // line of text reads better in messages and in print().
  D.Text = StringRef(D.Text).trim().str();
  std::replace(D.Text.begin(), D.Text.end(), '\t', ' ');
  return D;
}

/// Bytes as spaced hex pairs, the first MaxShown of them.
static std::string describeBytes(ArrayRef<uint8_t> Bytes,
                                 size_t MaxShown = SIZE_MAX) {
  std::string Hex = toHex(Bytes.take_front(MaxShown), /*LowerCase=*/true);
  std::string Spaced;
  for (size_t I = 0; I < Hex.size(); I += 2) {
    if (I)
      Spaced += ' ';
    Spaced += Hex.substr(I, 2);
  }
  if (Bytes.size() > MaxShown)
    Spaced += " ...";
  return Spaced;
}

Expected<std::vector<DecodedInstruction>>
CodeInspector::disassemble(ArrayRef<uint8_t> Bytes, uint64_t Address) const {
  std::vector<DecodedInstruction> Instructions;
  for (uint64_t Offset = 0; Offset < Bytes.size();) {
    std::optional<DecodedInstruction> D =
        decodeOne(Bytes.drop_front(Offset), Address + Offset);
    if (!D)
      return createStringError(formatv(
          "cannot decode an instruction at {0:x} (offset {1} of {2} bytes: "
          "{3})",
          Address + Offset, Offset, Bytes.size(),
          describeBytes(Bytes.drop_front(Offset), /*MaxShown=*/8)));
    Offset += D->Bytes.size();
    Instructions.push_back(std::move(*D));
  }
  return std::move(Instructions);
}

ImageCheck CodeInspector::check(ArrayRef<uint8_t> Bytes, uint64_t Address,
                                ArrayRef<uint64_t> AllowedTargets) const {
  ImageCheck Result;
  uint64_t End = Address + Bytes.size();
  for (uint64_t Offset = 0; Offset < Bytes.size();) {
    std::optional<DecodedInstruction> D =
        decodeOne(Bytes.drop_front(Offset), Address + Offset);
    if (!D) {
      Result.DecodeErrors.push_back(Address + Offset);
      ++Offset;
      continue;
    }
    ++Result.Instructions;
    if (D->Kind == BranchKind::Indirect)
      Result.IndirectBranches.push_back(D->Address);
    else if (D->Kind == BranchKind::Direct &&
             (*D->Target < Address || *D->Target >= End))
      Result.DirectTargets.push_back(*D->Target);
    Offset += D->Bytes.size();
  }

  llvm::sort(Result.DirectTargets);
  Result.DirectTargets.erase(llvm::unique(Result.DirectTargets),
                             Result.DirectTargets.end());
  SmallVector<uint64_t, 64> Allowed(AllowedTargets);
  llvm::sort(Allowed);
  llvm::copy_if(Result.DirectTargets, std::back_inserter(Result.UnknownTargets),
                [&](uint64_t Target) {
                  return !std::binary_search(Allowed.begin(), Allowed.end(),
                                             Target);
                });
  return Result;
}

void CodeInspector::print(ArrayRef<DecodedInstruction> Instructions,
                          raw_ostream &OS,
                          function_ref<std::string(uint64_t)> NameOf) const {
  // Wide enough for x86's longest common encodings (movabs is 10 bytes);
  // longer ones push the text right rather than being cut.
  constexpr int BytesColumn = 10 * 3;
  for (const DecodedInstruction &D : Instructions) {
    OS << format_hex_no_prefix(D.Address, 16) << ":  "
       << left_justify(describeBytes(D.Bytes), BytesColumn) << "  " << D.Text;
    if (D.Target && NameOf) {
      std::string Name = NameOf(*D.Target);
      if (!Name.empty())
        OS << "  # -> " << Name;
    }
    OS << '\n';
  }
}

} // namespace dispatchgen
