//===- CodeInspectorTest.cpp - Tests for CodeInspector --------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Unit tests for the branch classification of hand-written x86-64 encodings,
// for decode failures, for check()'s target sets and for print(). The last
// suite emits real dispatchers as ELF objects and checks that the fallback
// is their only indirect branch. Every inspector is created for an explicit
// x86-64 triple, so the tests run on any host LLVM was built for.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CodeInspector.h"

#include "TestingSupport.h"
#include "dispatch-gen/CodeEmitter.h"
#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

using namespace llvm;
using namespace dispatchgen;
using namespace dispatchgen::unittest;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

namespace {

constexpr char X86Triple[] = "x86_64-pc-linux-gnu";

class CodeInspectorTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto InspectorOrErr = CodeInspector::create(X86Triple);
    ASSERT_THAT(takeError(InspectorOrErr), Succeeded());
    Inspector = std::move(*InspectorOrErr);
  }

  /// Decodes Bytes at Address, expecting exactly one instruction that spans
  /// all of them.
  DecodedInstruction decodeSingle(ArrayRef<uint8_t> Bytes,
                                  uint64_t Address = 0x1000) {
    auto InstsOrErr = Inspector->disassemble(Bytes, Address);
    EXPECT_THAT(takeError(InstsOrErr), Succeeded());
    if (!InstsOrErr || InstsOrErr->size() != 1) {
      ADD_FAILURE() << "expected one instruction";
      return DecodedInstruction();
    }
    DecodedInstruction D = std::move(InstsOrErr->front());
    EXPECT_EQ(D.Address, Address);
    EXPECT_EQ(D.Bytes.size(), Bytes.size());
    return D;
  }

  std::unique_ptr<CodeInspector> Inspector;
};

// Classification --------------------------------------------------------------

TEST_F(CodeInspectorTest, JeRel32IsDirectConditionalWithAbsoluteTarget) {
  // je 0x2000 at 0x1000: rel32 = 0x2000 - (0x1000 + 6).
  DecodedInstruction D = decodeSingle({0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00});
  EXPECT_EQ(D.Kind, BranchKind::Direct);
  EXPECT_TRUE(D.IsConditional);
  EXPECT_FALSE(D.IsCall);
  EXPECT_EQ(D.Target, 0x2000u);
  EXPECT_EQ(D.Text, "je 0x2000");
}

TEST_F(CodeInspectorTest, JmpRel32IsDirectUnconditional) {
  // jmp 0x3000 at 0x1000: rel32 = 0x3000 - (0x1000 + 5).
  DecodedInstruction D = decodeSingle({0xe9, 0xfb, 0x1f, 0x00, 0x00});
  EXPECT_EQ(D.Kind, BranchKind::Direct);
  EXPECT_FALSE(D.IsConditional);
  EXPECT_FALSE(D.IsCall);
  EXPECT_EQ(D.Target, 0x3000u);
}

TEST_F(CodeInspectorTest, CallRel32IsDirectCallAndMayPointBackwards) {
  // call 0x800 at 0x1000: rel32 = 0x800 - (0x1000 + 5) = -0x805.
  DecodedInstruction D = decodeSingle({0xe8, 0xfb, 0xf7, 0xff, 0xff});
  EXPECT_EQ(D.Kind, BranchKind::Direct);
  EXPECT_TRUE(D.IsCall);
  EXPECT_FALSE(D.IsConditional);
  EXPECT_EQ(D.Target, 0x800u);
}

TEST_F(CodeInspectorTest, JeRel8IsDirectConditional) {
  // je 0x1010 at 0x1000: rel8 = 0x1010 - (0x1000 + 2).
  DecodedInstruction D = decodeSingle({0x74, 0x0e});
  EXPECT_EQ(D.Kind, BranchKind::Direct);
  EXPECT_TRUE(D.IsConditional);
  EXPECT_EQ(D.Target, 0x1010u);
}

TEST_F(CodeInspectorTest, JmpThroughRegisterIsIndirect) {
  DecodedInstruction D = decodeSingle({0xff, 0xe2}); // jmp *%rdx
  EXPECT_EQ(D.Kind, BranchKind::Indirect);
  EXPECT_FALSE(D.IsCall);
  EXPECT_FALSE(D.Target);
  EXPECT_THAT(D.Text, HasSubstr("*%rdx"));
}

TEST_F(CodeInspectorTest, CallThroughRegisterIsIndirectCall) {
  DecodedInstruction D = decodeSingle({0xff, 0xd0}); // call *%rax
  EXPECT_EQ(D.Kind, BranchKind::Indirect);
  EXPECT_TRUE(D.IsCall);
  EXPECT_FALSE(D.Target);
}

TEST_F(CodeInspectorTest, JmpThroughRipRelativeSlotIsIndirect) {
  // jmp *0x10(%rip): the shape of a PLT stub's `jmp *GOT`.
  DecodedInstruction D = decodeSingle({0xff, 0x25, 0x10, 0x00, 0x00, 0x00});
  EXPECT_EQ(D.Kind, BranchKind::Indirect);
  EXPECT_FALSE(D.IsCall);
  EXPECT_FALSE(D.Target);
}

TEST_F(CodeInspectorTest, CallThroughMemoryIsIndirectCall) {
  DecodedInstruction D = decodeSingle({0xff, 0x10}); // call *(%rax)
  EXPECT_EQ(D.Kind, BranchKind::Indirect);
  EXPECT_TRUE(D.IsCall);
}

TEST_F(CodeInspectorTest, RetIsReturn) {
  DecodedInstruction D = decodeSingle({0xc3});
  EXPECT_EQ(D.Kind, BranchKind::Return);
  EXPECT_FALSE(D.IsCall);
  EXPECT_FALSE(D.Target);
}

TEST_F(CodeInspectorTest, MovabsIsNotABranch) {
  // movabs $0x7f0012340000, %rax
  DecodedInstruction D =
      decodeSingle({0x48, 0xb8, 0x00, 0x00, 0x34, 0x12, 0x00, 0x7f, 0, 0});
  EXPECT_EQ(D.Kind, BranchKind::None);
  EXPECT_FALSE(D.IsCall);
  EXPECT_FALSE(D.IsConditional);
  EXPECT_FALSE(D.Target);
  EXPECT_THAT(D.Text, HasSubstr("0x7f0012340000"));
}

TEST_F(CodeInspectorTest, IntelSyntaxIsAnOption) {
  auto IntelOrErr = CodeInspector::create(X86Triple, AsmSyntax::Intel);
  ASSERT_THAT(takeError(IntelOrErr), Succeeded());
  const uint8_t JmpRdx[] = {0xff, 0xe2};
  auto InstsOrErr = (*IntelOrErr)->disassemble(JmpRdx, 0x1000);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());
  ASSERT_EQ(InstsOrErr->size(), 1u);
  EXPECT_EQ(InstsOrErr->front().Text, "jmp rdx");
  EXPECT_EQ(decodeSingle(JmpRdx).Text, "jmpq *%rdx");
}

TEST(CodeInspectorOtherTargetTest, AArch64TargetsAreRelativeToTheInstruction) {
  // x86 printers want the next instruction's address and AArch64's the
  // instruction's own; the text must agree with the evaluated target on both.
  auto InspectorOrErr = CodeInspector::create("aarch64-unknown-linux-gnu");
  ASSERT_THAT(takeError(InspectorOrErr), Succeeded());
  const uint8_t Code[] = {
      0x40, 0x00, 0x00, 0x14, // 0x1000 b 0x1100
      0x40, 0x00, 0x00, 0x54, // 0x1004 b.eq 0x100c
      0x00, 0x02, 0x3f, 0xd6, // 0x1008 blr x16
      0xc0, 0x03, 0x5f, 0xd6, // 0x100c ret
  };
  auto InstsOrErr = (*InspectorOrErr)->disassemble(Code, 0x1000);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());
  ASSERT_EQ(InstsOrErr->size(), 4u);
  const std::vector<DecodedInstruction> &Insts = *InstsOrErr;
  EXPECT_EQ(Insts[0].Kind, BranchKind::Direct);
  EXPECT_EQ(Insts[0].Target, 0x1100u);
  EXPECT_EQ(Insts[0].Text, "b 0x1100");
  EXPECT_TRUE(Insts[1].IsConditional);
  EXPECT_EQ(Insts[1].Target, 0x100cu);
  EXPECT_EQ(Insts[1].Text, "b.eq 0x100c");
  EXPECT_EQ(Insts[2].Kind, BranchKind::Indirect);
  EXPECT_TRUE(Insts[2].IsCall);
  EXPECT_EQ(Insts[3].Kind, BranchKind::Return);
}

// Sequences and decode failures ----------------------------------------------

TEST_F(CodeInspectorTest, DisassembleDecodesInstructionsBackToBack) {
  const uint8_t Code[] = {
      0x48, 0x39, 0xf7,                   // cmp %rsi, %rdi
      0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00, // je 0x2003
      0xc3,                               // ret
  };
  auto InstsOrErr = Inspector->disassemble(Code, 0x1000);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());
  ASSERT_EQ(InstsOrErr->size(), 3u);
  const std::vector<DecodedInstruction> &Insts = *InstsOrErr;
  EXPECT_EQ(Insts[0].Address, 0x1000u);
  EXPECT_EQ(Insts[0].Kind, BranchKind::None);
  EXPECT_EQ(Insts[1].Address, 0x1003u);
  EXPECT_EQ(Insts[1].Target, 0x2003u);
  EXPECT_EQ(Insts[2].Address, 0x1009u);
  EXPECT_EQ(Insts[2].Kind, BranchKind::Return);
}

TEST_F(CodeInspectorTest, UndecodableBytesFailNamingTheirAddress) {
  // ff /7 is no instruction.
  const uint8_t Code[] = {0x90, 0xff, 0xff, 0xc3};
  EXPECT_THAT(takeError(Inspector->disassemble(Code, 0x4000)),
              Failed(AllOf(HasSubstr("cannot decode"), HasSubstr("0x4001"),
                           HasSubstr("ff ff c3"))));
}

TEST_F(CodeInspectorTest, InstructionCutOffByTheEndFailsNamingItsAddress) {
  // A jmp rel32 with only two of its four displacement bytes.
  const uint8_t Code[] = {0xc3, 0xe9, 0x00, 0x00};
  EXPECT_THAT(takeError(Inspector->disassemble(Code, 0x4000)),
              Failed(HasSubstr("0x4001")));
}

TEST_F(CodeInspectorTest, CheckReportsDecodeErrorsAndGoesOn) {
  const uint8_t Code[] = {0x90, 0xff, 0xff, 0xff, 0xe2};
  ImageCheck Result = Inspector->check(Code, 0x1000, {});
  EXPECT_THAT(Result.DecodeErrors, Not(IsEmpty()));
  EXPECT_EQ(Result.DecodeErrors.front(), 0x1001u);
  // Resynchronised on the last instruction: jmp *%rdx.
  EXPECT_THAT(Result.IndirectBranches, ElementsAre(0x1003u));
}

TEST_F(CodeInspectorTest, CheckOfValidCodeHasNoDecodeErrors) {
  const uint8_t Code[] = {0x90, 0xc3};
  ImageCheck Result = Inspector->check(Code, 0x1000, {});
  EXPECT_THAT(Result.DecodeErrors, IsEmpty());
  EXPECT_EQ(Result.Instructions, 2u);
}

// check() ---------------------------------------------------------------------

TEST_F(CodeInspectorTest, CheckCountsEveryIndirectForm) {
  const uint8_t Code[] = {
      0xff, 0xe2,                         // 0x1000 jmp *%rdx
      0xff, 0xd0,                         // 0x1002 call *%rax
      0xff, 0x25, 0x10, 0x00, 0x00, 0x00, // 0x1004 jmp *0x10(%rip)
      0xff, 0x10,                         // 0x100a call *(%rax)
      0xc3,                               // 0x100c ret
  };
  ImageCheck Result = Inspector->check(Code, 0x1000, {});
  EXPECT_EQ(Result.Instructions, 5u);
  EXPECT_THAT(Result.IndirectBranches,
              ElementsAre(0x1000u, 0x1002u, 0x1004u, 0x100au));
  EXPECT_THAT(Result.DirectTargets, IsEmpty());
}

TEST_F(CodeInspectorTest, CheckListsTargetsLeavingTheRangeAndUnknownOnes) {
  const uint8_t Code[] = {
      0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00, // 0x1000 je 0x2000 (allowed)
      0x74, 0x08,                         // 0x1006 je 0x1010 (inside)
      0xe9, 0xf3, 0x1f, 0x00, 0x00,       // 0x1008 jmp 0x3000 (unknown)
      0xe8, 0xee, 0x1f, 0x00, 0x00,       // 0x100d call 0x3000 (again)
      0xe9, 0x00, 0x00, 0x00, 0x00,       // 0x1012 jmp 0x1017 (the end)
  };
  const uint64_t Allowed[] = {0x5000, 0x2000};
  ImageCheck Result = Inspector->check(Code, 0x1000, Allowed);
  EXPECT_THAT(Result.DecodeErrors, IsEmpty());
  EXPECT_EQ(Result.Instructions, 5u);
  EXPECT_THAT(Result.IndirectBranches, IsEmpty());
  // The end of the range is outside it: a jump there falls off the image.
  EXPECT_THAT(Result.DirectTargets, ElementsAre(0x1017u, 0x2000u, 0x3000u));
  EXPECT_THAT(Result.UnknownTargets, ElementsAre(0x1017u, 0x3000u));
}

TEST_F(CodeInspectorTest, CheckWithEveryTargetAllowedHasNoUnknownTargets) {
  const uint8_t Code[] = {
      0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00, // 0x1000 je 0x2000
      0xe9, 0xf5, 0x1f, 0x00, 0x00,       // 0x1006 jmp 0x3000
  };
  const uint64_t Allowed[] = {0x3000, 0x2000};
  ImageCheck Result = Inspector->check(Code, 0x1000, Allowed);
  EXPECT_THAT(Result.DirectTargets, ElementsAre(0x2000u, 0x3000u));
  EXPECT_THAT(Result.UnknownTargets, IsEmpty());
}

// followSelector()
// -------------------------------------------------------------

/// A compare tree over programs at 0x5000, 0x5100 and 0x5200, loaded at
/// 0x1000, with the selector in %rdi. FirstKey is the immediate of the
/// first leaf's compare (0x5000 when right).
std::vector<uint8_t> smallTree(uint32_t FirstKey = 0x5000) {
  auto Rel32 = [](uint64_t Target, uint64_t End) {
    uint32_t R = static_cast<uint32_t>(Target - (0x1000 + End));
    return std::vector<uint8_t>{uint8_t(R), uint8_t(R >> 8), uint8_t(R >> 16),
                                uint8_t(R >> 24)};
  };
  std::vector<uint8_t> Code = {0x48,
                               0x81,
                               0xff,
                               0x00,
                               0x51,
                               0x00,
                               0x00, // cmp $0x5100, %rdi
                               0x73,
                               0x0f, // jae .Lright (24)
                               0x48,
                               0x81,
                               0xff,
                               uint8_t(FirstKey),
                               uint8_t(FirstKey >> 8),
                               uint8_t(FirstKey >> 16),
                               uint8_t(FirstKey >> 24), // cmp $FirstKey
                               0x0f,
                               0x84}; // je 0x5000
  llvm::append_range(Code, Rel32(0x5000, 22));
  llvm::append_range(Code, std::vector<uint8_t>{0xeb, 0x13,   // jmp .Lfb (43)
                                                0x0f, 0x84}); // je 0x5100
  llvm::append_range(Code, Rel32(0x5100, 30));
  llvm::append_range(
      Code, std::vector<uint8_t>{0x48, 0x81, 0xff, 0x00, 0x52, 0x00, 0x00, 0x0f,
                                 0x84}); // cmp $0x5200; je 0x5200
  llvm::append_range(Code, Rel32(0x5200, 43));
  llvm::append_range(Code, std::vector<uint8_t>{0xff, 0xe7}); // jmp *%rdi
  return Code;
}

TEST_F(CodeInspectorTest, FollowSelectorEndsAtEachProgramsOwnJump) {
  std::vector<uint8_t> Code = smallTree();
  auto Routes =
      Inspector->followSelector(Code, 0x1000, "rdi", {0x5000, 0x5100, 0x5200});
  ASSERT_THAT(takeError(Routes), Succeeded());
  ASSERT_EQ(Routes->size(), 3u);
  for (const SelectorRoute &R : *Routes) {
    EXPECT_EQ(R.Kind, BranchKind::Direct);
    EXPECT_EQ(R.Target, R.Key);
  }
  EXPECT_EQ((*Routes)[0].From, 0x1010u) << "the first leaf's je";
}

TEST_F(CodeInspectorTest, FollowSelectorSendsOtherKeysToTheFallback) {
  std::vector<uint8_t> Code = smallTree();
  auto Routes = Inspector->followSelector(
      Code, 0x1000, "RDI", {0x4fff, 0x5001, 0x50ff, 0x5101, 0x5201, 1});
  ASSERT_THAT(takeError(Routes), Succeeded());
  for (const SelectorRoute &R : *Routes) {
    EXPECT_EQ(R.Kind, BranchKind::Indirect) << R.Key;
    EXPECT_EQ(R.Target, R.Key) << "the selector, intact";
    EXPECT_EQ(R.From, 0x1000u + 43);
    EXPECT_EQ(R.valueOf("rdi"), R.Key);
  }
}

TEST_F(CodeInspectorTest, FollowSelectorCatchesAWrongCompareThatCheckMisses) {
  // The first leaf compares with 0x5001: every branch target is still a
  // program, so check() is content, but program 0x5000 takes the fallback.
  std::vector<uint8_t> Code = smallTree(0x5001);
  ImageCheck C = Inspector->check(Code, 0x1000, {0x5000, 0x5100, 0x5200});
  EXPECT_THAT(C.UnknownTargets, IsEmpty());
  EXPECT_THAT(C.DirectTargets, ElementsAre(0x5000u, 0x5100u, 0x5200u));
  auto Routes = Inspector->followSelector(Code, 0x1000, "rdi", {0x5000});
  ASSERT_THAT(takeError(Routes), Succeeded());
  EXPECT_EQ((*Routes)[0].Kind, BranchKind::Indirect);
}

TEST_F(CodeInspectorTest, FollowSelectorRunsLoopsAndTracksOtherRegisters) {
  // mov $3, %eax; 1: pause; dec %eax; jne 1b; mov %rdi, %r11; jmp 0x9000
  std::vector<uint8_t> Code = {0xb8, 0x03, 0x00, 0x00, 0x00, 0xf3, 0x90, 0xff,
                               0xc8, 0x75, 0xfa, 0x49, 0x89, 0xfb, 0xe9};
  uint32_t Rel = 0x9000 - (0x1000 + 19);
  for (unsigned I = 0; I < 4; ++I)
    Code.push_back(uint8_t(Rel >> (8 * I)));
  auto Routes = Inspector->followSelector(Code, 0x1000, "rdi", {0x1234});
  ASSERT_THAT(takeError(Routes), Succeeded());
  const SelectorRoute &R = (*Routes)[0];
  EXPECT_EQ(R.Kind, BranchKind::Direct);
  EXPECT_EQ(R.Target, 0x9000u);
  EXPECT_EQ(R.valueOf("r11"), 0x1234u);
  EXPECT_EQ(R.valueOf("rax"), 0u);
  EXPECT_EQ(R.Steps, 1u + 3 * 3 + 1);
}

TEST_F(CodeInspectorTest, FollowSelectorModelsTheFallbackCounterOnly) {
  // A steady image's fallback counter: the CPU number (rdpid), its block
  // (and, imul, movabs, add) and `incq 32(%r11)`, then the fallback.
  const std::vector<uint8_t> Counter = {
      0xf3, 0x0f, 0xc7, 0xf8,             // rdpid %rax
      0x25, 0x01, 0x00, 0x00, 0x00,       // and $1, %eax
      0x69, 0xc0, 0x00, 0x02, 0x00, 0x00, // imul $512, %eax, %eax
      0x49, 0xbb, 0,    0,    0,    0,
      0x10, 0,    0,    0,    // movabs $0x1000000000, %r11
      0x49, 0x01, 0xc3,       // add %rax, %r11
      0x49, 0xff, 0x43, 0x20, // incq 0x20(%r11)
      0xff, 0xe7};            // jmp *%rdi
  auto Routes = Inspector->followSelector(Counter, 0x1000, "rdi", {5});
  ASSERT_THAT(takeError(Routes), Succeeded());
  EXPECT_EQ((*Routes)[0].Kind, BranchKind::Indirect);
  EXPECT_EQ((*Routes)[0].Target, std::optional<uint64_t>(5));
  // Any other increment of memory is refused: of the stack, or of another
  // slot.
  for (std::vector<uint8_t> Inc :
       {std::vector<uint8_t>{0x48, 0xff, 0x04, 0x24},
        std::vector<uint8_t>{0x49, 0xff, 0x43, 0x28}}) {
    Inc.insert(Inc.end(), {0xff, 0xe7});
    EXPECT_THAT(takeError(Inspector->followSelector(Inc, 0x1000, "rdi", {5})),
                Failed(HasSubstr("INC64m")));
  }
  // `and $imm32` on %rax sign-extends its immediate; on %eax it clears the
  // upper half.
  auto AndValue = [&](std::vector<uint8_t> And) {
    std::vector<uint8_t> Code = {0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff};
    Code.insert(Code.end(), And.begin(), And.end());
    Code.insert(Code.end(), {0xff, 0xe7});
    auto R = Inspector->followSelector(Code, 0x1000, "rdi", {5});
    EXPECT_THAT(takeError(R), Succeeded());
    return R ? (*R)[0].valueOf("rax") : std::nullopt;
  };
  EXPECT_EQ(AndValue({0x48, 0x25, 0xf0, 0xff, 0xff, 0xff}),
            std::optional<uint64_t>(0xfffffffffffffff0ull));
  EXPECT_EQ(AndValue({0x25, 0xf0, 0xff, 0xff, 0xff}),
            std::optional<uint64_t>(0xfffffff0ull));
}

TEST_F(CodeInspectorTest, FollowSelectorRefusesWhatItCannotKnow) {
  // je with no compare before it: the flags are unknown.
  EXPECT_THAT(
      takeError(Inspector->followSelector(
          std::vector<uint8_t>{0x74, 0x00, 0xff, 0xe7}, 0x1000, "rdi", {1})),
      Failed(HasSubstr("the flags it tests are not known")));
  // cmpq $5, 8(%rsp): memory is not modelled.
  EXPECT_THAT(takeError(Inspector->followSelector(
                  std::vector<uint8_t>{0x48, 0x83, 0x7c, 0x24, 0x08, 0x05},
                  0x1000, "rdi", {1})),
              Failed(HasSubstr("CMP64mi8")));
  // A compare of a register nobody set.
  EXPECT_THAT(
      takeError(Inspector->followSelector(
          std::vector<uint8_t>{0x48, 0x39, 0xc7, 0x74, 0x00, 0xff, 0xe7},
          0x1000, "rdi", {1})),
      Failed(HasSubstr("not known")));
  // jmp to itself never leaves.
  EXPECT_THAT(takeError(Inspector->followSelector(
                  std::vector<uint8_t>{0xeb, 0xfe}, 0x1000, "rdi", {1}, 100)),
              Failed(HasSubstr("no branch leaves the code after 100")));
  // Falling off the end.
  EXPECT_THAT(takeError(Inspector->followSelector(std::vector<uint8_t>{0x90},
                                                  0x1000, "rdi", {1})),
              Failed(HasSubstr("runs off its end")));
  EXPECT_THAT(takeError(Inspector->followSelector(std::vector<uint8_t>{0x90},
                                                  0x1000, "xmm0", {1})),
              Failed(HasSubstr("not a 64-bit general-purpose register")));
  auto AArch64 = CodeInspector::create("aarch64-linux-gnu");
  ASSERT_THAT(takeError(AArch64), Succeeded());
  EXPECT_THAT(
      takeError((*AArch64)->followSelector(
          std::vector<uint8_t>{0xc0, 0x03, 0x5f, 0xd6}, 0x1000, "x0", {1})),
      Failed(HasSubstr("x86-64 only")));
}

// print() ---------------------------------------------------------------------

TEST_F(CodeInspectorTest, PrintShowsAddressBytesTextAndTargetNames) {
  const uint8_t Code[] = {
      0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00, // 0x1000 je 0x2000
      0xe9, 0xf5, 0x1f, 0x00, 0x00,       // 0x1006 jmp 0x3000
      0xff, 0xe2,                         // 0x100b jmp *%rdx
  };
  auto InstsOrErr = Inspector->disassemble(Code, 0x1000);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());
  std::string Out;
  raw_string_ostream OS(Out);
  Inspector->print(*InstsOrErr, OS, [](uint64_t Address) -> std::string {
    return Address == 0x2000 ? "drop_tcp" : "";
  });

  SmallVector<StringRef, 4> Lines;
  StringRef(Out).split(Lines, '\n', /*MaxSplit=*/-1, /*KeepEmpty=*/false);
  ASSERT_EQ(Lines.size(), 3u) << Out;
  EXPECT_THAT(Lines[0].str(),
              AllOf(HasSubstr("1000"), HasSubstr("0f 84 fa 0f 00 00"),
                    HasSubstr("je 0x2000"), HasSubstr("# -> drop_tcp")));
  // NameOf has no name for 0x3000, and an indirect jump has no target.
  EXPECT_THAT(Lines[1].str(), AllOf(HasSubstr("1006"), HasSubstr("jmp 0x3000"),
                                    Not(HasSubstr("->"))));
  EXPECT_THAT(Lines[2].str(),
              AllOf(HasSubstr("jmpq *%rdx"), Not(HasSubstr("->"))));
}

TEST_F(CodeInspectorTest, PrintWithoutNameOfNamesNothing) {
  const uint8_t Code[] = {0x0f, 0x84, 0xfa, 0x0f, 0x00, 0x00};
  auto InstsOrErr = Inspector->disassemble(Code, 0x1000);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());
  std::string Out;
  raw_string_ostream OS(Out);
  Inspector->print(*InstsOrErr, OS);
  EXPECT_THAT(Out, AllOf(HasSubstr("je 0x2000"), Not(HasSubstr("->"))));
}

// create() --------------------------------------------------------------------

TEST(CodeInspectorCreateTest, UnknownTripleFailsNamingIt) {
  EXPECT_THAT(takeError(CodeInspector::create("nosucharch-unknown-none")),
              Failed(HasSubstr("nosucharch")));
}

TEST(CodeInspectorCreateTest, IntelSyntaxOffX86FailsNamingTheTriple) {
  EXPECT_THAT(takeError(CodeInspector::create("aarch64-unknown-linux-gnu",
                                              AsmSyntax::Intel)),
              Failed(AllOf(HasSubstr("Intel"),
                           HasSubstr("aarch64-unknown-linux-gnu"))));
}

TEST(CodeInspectorCreateTest, EmptyTripleInspectsTheHost) {
  if (!Triple(sys::getProcessTriple()).isX86())
    GTEST_SKIP() << "host is not x86";
  auto InspectorOrErr = CodeInspector::create();
  ASSERT_THAT(takeError(InspectorOrErr), Succeeded());
  const uint8_t Ret[] = {0xc3};
  auto InstsOrErr = (*InspectorOrErr)->disassemble(Ret, 0x1000);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());
  ASSERT_EQ(InstsOrErr->size(), 1u);
  EXPECT_EQ(InstsOrErr->front().Kind, BranchKind::Return);
}

// Emitted dispatchers ---------------------------------------------------------

/// Builds a dispatcher over address targets, emits it as an x86-64 ELF
/// object and hands out the dispatcher's bytes.
class EmittedDispatcherTest : public CodeInspectorTest {
protected:
  static constexpr char DispatcherName[] = "dispatch";

  /// Emits the dispatcher and points Code at its bytes in Object.
  void emitDispatcher(bool RetpolineFallback) {
    EmitOptions Opts;
    Opts.Triple = X86Triple;
    Opts.Kind = EmitKind::Object;
    Module M("dispatcher", Ctx);
    ASSERT_THAT(takeError(prepareModule(M, Opts)), Succeeded());

    auto SigOrErr = parseSignature("i32 (ptr, ptr)", Ctx);
    ASSERT_THAT(takeError(SigOrErr), Succeeded());
    DispatcherSpec Spec;
    Spec.Name = DispatcherName;
    Spec.Signature = *SigOrErr;
    Spec.Targets = {{"a", 0x1000, std::nullopt},
                    {"b", 0x2000, std::nullopt},
                    {"c", 0x3000, std::nullopt},
                    {"d", 0x4000, std::nullopt}};
    Spec.RetpolineFallback = RetpolineFallback;
    ASSERT_THAT(takeError(DispatchIRBuilder(M).build(Spec)), Succeeded());

    raw_svector_ostream OS(Object);
    ASSERT_THAT(takeError(emitModule(M, Opts, OS)), Succeeded());
    findDispatcher();
  }

  void findDispatcher() {
    auto ObjOrErr = object::ObjectFile::createObjectFile(MemoryBufferRef(
        StringRef(Object.data(), Object.size()), "dispatcher.o"));
    ASSERT_THAT(takeError(ObjOrErr), Succeeded());
    Obj = std::move(*ObjOrErr);
    for (object::ELFSymbolRef Sym :
         cast<object::ELFObjectFileBase>(*Obj).symbols()) {
      Expected<StringRef> NameOrErr = Sym.getName();
      ASSERT_THAT(takeError(NameOrErr), Succeeded());
      if (*NameOrErr != DispatcherName)
        continue;
      auto SecOrErr = Sym.getSection();
      ASSERT_THAT(takeError(SecOrErr), Succeeded());
      ASSERT_NE(*SecOrErr, Obj->section_end());
      auto ContentsOrErr = (*SecOrErr)->getContents();
      ASSERT_THAT(takeError(ContentsOrErr), Succeeded());
      auto ValueOrErr = Sym.getValue();
      ASSERT_THAT(takeError(ValueOrErr), Succeeded());
      uint64_t Offset = *ValueOrErr - (*SecOrErr)->getAddress();
      uint64_t Size = Sym.getSize();
      ASSERT_GT(Size, 0u);
      ASSERT_LE(Offset + Size, ContentsOrErr->size());
      Code = arrayRefFromStringRef(ContentsOrErr->substr(Offset, Size));
      Address = *ValueOrErr;
      return;
    }
    FAIL() << "no symbol '" << DispatcherName << "' in the object";
  }

  LLVMContext Ctx;
  SmallVector<char, 0> Object;
  std::unique_ptr<object::ObjectFile> Obj;
  ArrayRef<uint8_t> Code;
  uint64_t Address = 0;
};

TEST_F(EmittedDispatcherTest, FallbackIsTheOnlyIndirectBranch) {
  ASSERT_NO_FATAL_FAILURE(emitDispatcher(/*RetpolineFallback=*/false));
  auto InstsOrErr = Inspector->disassemble(Code, Address);
  ASSERT_THAT(takeError(InstsOrErr), Succeeded());

  ImageCheck Result = Inspector->check(Code, Address, {});
  EXPECT_THAT(Result.DecodeErrors, IsEmpty());
  EXPECT_EQ(Result.Instructions, InstsOrErr->size());
  ASSERT_EQ(Result.IndirectBranches.size(), 1u);
  // The fallback is a tail call: a jump through the selector, not a call.
  auto Fallback = find_if(*InstsOrErr, [&](const DecodedInstruction &D) {
    return D.Address == Result.IndirectBranches.front();
  });
  ASSERT_NE(Fallback, InstsOrErr->end());
  EXPECT_FALSE(Fallback->IsCall) << Fallback->Text;
  // Every case is a direct branch of its own (its target is a relocation
  // in this unlinked object, so only the count says anything).
  EXPECT_GE(count_if(*InstsOrErr,
                     [](const DecodedInstruction &D) {
                       return D.Kind == BranchKind::Direct && !D.IsCall;
                     }),
            4);
}

TEST_F(EmittedDispatcherTest, RetpolineFallbackLeavesNoIndirectBranch) {
  ASSERT_NO_FATAL_FAILURE(emitDispatcher(/*RetpolineFallback=*/true));
  ImageCheck Result = Inspector->check(Code, Address, {});
  EXPECT_THAT(Result.DecodeErrors, IsEmpty());
  EXPECT_GT(Result.Instructions, 0u);
  EXPECT_THAT(Result.IndirectBranches, IsEmpty());
}

} // namespace
