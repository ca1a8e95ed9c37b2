//===- X86ImageEmitter.cpp - Dispatcher images without codegen ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "X86ImageEmitter.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

using namespace llvm;

namespace dispatchgen {

static Error makeError(const Twine &Msg) {
  return make_error<StringError>(Msg, inconvertibleErrorCode());
}

namespace {

// Encoding numbers of the registers the image uses.
constexpr unsigned RegRAX = 0, RegR11 = 11;
// SysV x86-64 integer argument registers, in order.
constexpr unsigned ArgRegs[] = {7 /*rdi*/, 6 /*rsi*/, 2 /*rdx*/,
                                1 /*rcx*/, 8 /*r8*/,  9 /*r9*/};
// Condition codes (the low nibble of Jcc's opcode).
constexpr uint8_t CondB = 0x2, CondAE = 0x3, CondE = 0x4, CondNE = 0x5;
// A leaf of the binary tree compares its cases one after another; LLVM's
// switch lowering stops splitting at the same size.
constexpr size_t MaxLeafCases = 3;
// The scan (weighted images): up to this many groups per level, and leaves
// of up to this many cases (see scanCost).
constexpr size_t ScanFanout = 16, ScanLeafCases = 16;
// The cost model of weighted layouts, in cycles of about a Zen or Skylake
// core: a compare and branch that is predicted, and a misprediction.
constexpr double CompareCost = 1, MispredictCost = 16;

/// The model's cost of a scan over N equally likely cases. A level tests
/// up to ScanFanout pivots in key order (`cmp; jb`): the one taken is
/// mispredicted, the others are cheap, so a level resolves 4 bits for one
/// misprediction where a binary tree resolves 1 bit for half of one. A
/// leaf is a chain of `cmp; je`, hottest first.
double scanCost(size_t N) {
  if (N == 0)
    return 0;
  if (N <= ScanLeafCases)
    return CompareCost * static_cast<double>(N + 1) / 2 +
           MispredictCost * (1 - 1 / static_cast<double>(N));
  size_t Groups = std::min(ScanFanout, divideCeil(N, ScanLeafCases));
  return CompareCost * static_cast<double>(Groups) / 2 +
         MispredictCost * (1 - 1 / static_cast<double>(Groups)) +
         scanCost(divideCeil(N, Groups));
}

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

/// A straight-line list of instructions whose local branches are relaxed
/// (rel8 where they reach, rel32 where not) before encoding.
class Assembler {
public:
  unsigned newLabel() {
    LabelOffsets.push_back(0);
    return LabelOffsets.size() - 1;
  }
  void bind(unsigned Label) { Items.push_back({Item::IK_Label, 0, Label}); }

  void bytes(std::initializer_list<uint8_t> Bs) {
    for (uint8_t B : Bs)
      bytes8(B);
  }
  void bytes8(uint8_t B) {
    if (Items.empty() || Items.back().K != Item::IK_Bytes ||
        Items.back().Len == sizeof(Item::Bytes))
      Items.push_back({Item::IK_Bytes, 0, 0});
    Item &I = Items.back();
    I.Bytes[I.Len++] = B;
  }
  void bytes32(uint32_t V) {
    for (unsigned I = 0; I < 4; ++I)
      bytes8(static_cast<uint8_t>(V >> (8 * I)));
  }
  void bytes64(uint64_t V) {
    for (unsigned I = 0; I < 8; ++I)
      bytes8(static_cast<uint8_t>(V >> (8 * I)));
  }

  /// `jCC .Label` (Cond set) or `jmp .Label`.
  void jump(std::optional<uint8_t> Cond, unsigned Label) {
    Item I{Item::IK_Local, Cond.value_or(NoCond), Label};
    Items.push_back(I);
  }
  /// `jCC rel32` to Cases[Case].Target, resolved by the linker.
  void jumpToCase(uint8_t Cond, uint32_t Case) {
    Items.push_back({Item::IK_Case, Cond, Case});
  }
  /// `jmp rel32` to the retpoline thunk, resolved by the linker.
  void jumpToThunk() { Items.push_back({Item::IK_Thunk, NoCond, 0}); }

  X86Image finish() {
    relax();
    X86Image Out;
    for (const Item &I : Items) {
      uint32_t Here = Out.Code.size();
      switch (I.K) {
      case Item::IK_Label:
        break;
      case Item::IK_Bytes:
        Out.Code.insert(Out.Code.end(), I.Bytes, I.Bytes + I.Len);
        break;
      case Item::IK_Local: {
        int64_t Disp = static_cast<int64_t>(LabelOffsets[I.Index]) -
                       (Here + static_cast<int64_t>(size(I)));
        if (!I.Long) {
          Out.Code.push_back(I.Cond == NoCond ? 0xEB : 0x70 | I.Cond);
          Out.Code.push_back(static_cast<uint8_t>(static_cast<int8_t>(Disp)));
          break;
        }
        if (I.Cond == NoCond)
          Out.Code.push_back(0xE9);
        else
          Out.Code.insert(Out.Code.end(), {0x0F, uint8_t(0x80 | I.Cond)});
        append32(Out.Code, static_cast<uint32_t>(static_cast<int32_t>(Disp)));
        break;
      }
      case Item::IK_Case:
        Out.Code.insert(Out.Code.end(), {0x0F, uint8_t(0x80 | I.Cond)});
        Out.Branches.push_back({uint32_t(Out.Code.size()), I.Index});
        append32(Out.Code, 0);
        break;
      case Item::IK_Thunk:
        Out.Code.push_back(0xE9);
        Out.ThunkBranch = Out.Code.size();
        append32(Out.Code, 0);
        break;
      }
    }
    return Out;
  }

private:
  static constexpr uint8_t NoCond = 0xFF;
  struct Item {
    enum Kind : uint8_t { IK_Bytes, IK_Label, IK_Local, IK_Case, IK_Thunk };
    Kind K;
    uint8_t Cond;
    /// The label (IK_Label, IK_Local) or the case (IK_Case).
    uint32_t Index;
    bool Long = false;
    uint8_t Len = 0;
    uint8_t Bytes[14] = {};
  };

  static size_t size(const Item &I) {
    switch (I.K) {
    case Item::IK_Label:
      return 0;
    case Item::IK_Bytes:
      return I.Len;
    case Item::IK_Local:
      return !I.Long ? 2 : I.Cond == NoCond ? 5 : 6;
    case Item::IK_Case:
      return 6;
    case Item::IK_Thunk:
      return 5;
    }
    return 0;
  }

  static void append32(std::vector<uint8_t> &Code, uint32_t V) {
    for (unsigned I = 0; I < 4; ++I)
      Code.push_back(static_cast<uint8_t>(V >> (8 * I)));
  }

  /// Starts with every local branch short and lengthens those that do not
  /// reach until none changes; lengths only grow, so this terminates.
  void relax() {
    for (bool Changed = true; Changed;) {
      Changed = false;
      uint64_t Offset = 0;
      for (const Item &I : Items) {
        if (I.K == Item::IK_Label)
          LabelOffsets[I.Index] = Offset;
        Offset += size(I);
      }
      Offset = 0;
      for (Item &I : Items) {
        Offset += size(I);
        if (I.K != Item::IK_Local || I.Long)
          continue;
        int64_t Disp = static_cast<int64_t>(LabelOffsets[I.Index]) -
                       static_cast<int64_t>(Offset);
        if (Disp < INT8_MIN || Disp > INT8_MAX) {
          I.Long = true;
          Changed = true;
        }
      }
    }
  }

  std::vector<Item> Items;
  std::vector<uint64_t> LabelOffsets;
};

/// How many of the hottest cases (ByWeight, hottest first) to test one by
/// one before the scan of the rest, under a cost model of calls drawn at
/// random with the observed frequencies: a branch taken with probability q
/// is mispredicted min(q, 1-q) of the time (with independent draws,
/// history does not help the predictor), and the rest costs scanCost.
/// Under a skewed distribution the prefix wins: each of its compares is
/// mispredicted only as often as its case is called.
size_t choosePrefix(ArrayRef<ImageCase> Cases, ArrayRef<uint32_t> ByWeight) {
  constexpr size_t MaxPrefix = 64;
  double Total = 0;
  for (uint32_t C : ByWeight)
    Total += static_cast<double>(Cases[C].Weight);
  if (Total == 0)
    return 0;
  size_t Best = 0;
  double BestCost = scanCost(ByWeight.size());
  double Remaining = 1, PrefixCost = 0;
  for (size_t K = 1; K <= std::min(MaxPrefix, ByWeight.size()); ++K) {
    double P = static_cast<double>(Cases[ByWeight[K - 1]].Weight) / Total;
    PrefixCost += CompareCost * Remaining +
                  MispredictCost * std::min(P, std::max(Remaining - P, 0.0));
    Remaining = std::max(Remaining - P, 0.0);
    double Cost = PrefixCost + Remaining * scanCost(ByWeight.size() - K);
    if (Cost < BestCost) {
      BestCost = Cost;
      Best = K;
    }
  }
  return Best;
}

/// Emits the compare tree over the cases, each an index into Cases.
class TreeEmitter {
public:
  TreeEmitter(ArrayRef<ImageCase> Cases, uint64_t Base, unsigned CmpReg,
              bool Weighted, Assembler &A, unsigned FallbackLabel)
      : Cases(Cases), Base(Base), CmpReg(CmpReg), Weighted(Weighted), A(A),
        FallbackLabel(FallbackLabel) {}

  /// `cmp; je` for each of Hot, in order, before the tree.
  void emitPrefix(ArrayRef<uint32_t> Hot) {
    for (uint32_t C : Hot) {
      compare(C);
      A.jumpToCase(CondE, C);
    }
  }

  /// Sorted holds case indices by ascending key. Last: the fallback
  /// follows, so a leaf that misses may fall through to it. Flags: the
  /// case whose compare set the flags on every way in, if any.
  void emit(ArrayRef<uint32_t> Sorted, bool Last,
            std::optional<uint32_t> Flags = std::nullopt) {
    if (Sorted.empty()) {
      if (!Last)
        A.jump(std::nullopt, FallbackLabel);
      return;
    }
    if (Sorted.size() <= MaxLeafCases) {
      emitLeaf(Sorted, Last, Flags);
      return;
    }
    size_t Split = splitPoint(Sorted);
    unsigned Right = A.newLabel();
    compare(Sorted[Split]);
    A.jump(CondAE, Right);
    emit(Sorted.take_front(Split), /*Last=*/false);
    // The right half is entered only by that `jae`, which leaves the flags
    // of comparing with its lowest case.
    A.bind(Right);
    emit(Sorted.drop_front(Split), Last, Sorted[Split]);
  }

  /// The weighted layout of Sorted (ascending keys): up to ScanFanout
  /// groups of about equal count, found by comparing with each group's
  /// lowest key in turn (`cmp; jb` to the group before it; the last group
  /// follows), down to leaves of ScanLeafCases, hottest first.
  void emitScan(ArrayRef<uint32_t> Sorted, bool Last) {
    if (Sorted.size() <= ScanLeafCases) {
      if (Sorted.empty()) {
        if (!Last)
          A.jump(std::nullopt, FallbackLabel);
        return;
      }
      emitLeaf(Sorted, Last, std::nullopt);
      return;
    }
    size_t N = Sorted.size();
    size_t Groups = std::min(ScanFanout, divideCeil(N, ScanLeafCases));
    auto Group = [&](size_t J) {
      size_t Begin = J * N / Groups, End = (J + 1) * N / Groups;
      return Sorted.slice(Begin, End - Begin);
    };
    SmallVector<unsigned, ScanFanout> Labels;
    for (size_t J = 0; J + 1 < Groups; ++J) {
      Labels.push_back(A.newLabel());
      compare(Group(J + 1).front());
      A.jump(CondB, Labels.back());
    }
    emitScan(Group(Groups - 1), /*Last=*/false);
    for (size_t J = 0; J + 1 < Groups; ++J) {
      A.bind(Labels[J]);
      emitScan(Group(J), Last && J + 2 == Groups);
    }
  }

private:
  void emitLeaf(ArrayRef<uint32_t> Sorted, bool Last,
                std::optional<uint32_t> Flags) {
    SmallVector<uint32_t, ScanLeafCases> Order(Sorted.begin(), Sorted.end());
    // Hottest first: the common case then takes the first `je`. Equal
    // weights keep address order (an insertion sort of a few).
    if (Weighted)
      for (size_t I = 1; I < Order.size(); ++I)
        for (size_t J = I;
             J > 0 && Cases[Order[J]].Weight > Cases[Order[J - 1]].Weight; --J)
          std::swap(Order[J], Order[J - 1]);
    for (uint32_t C : Order) {
      if (C != Flags)
        compare(C);
      Flags.reset();
      A.jumpToCase(CondE, C);
    }
    if (!Last)
      A.jump(std::nullopt, FallbackLabel);
  }

  /// Where to split Sorted (the first index of the right half): the
  /// middle. Splitting by weight instead makes every branch a coin toss,
  /// the worst case for the branch predictor; weighted images use the hot
  /// prefix and the scan instead.
  static size_t splitPoint(ArrayRef<uint32_t> Sorted) {
    return Sorted.size() / 2;
  }

  /// `cmp $(key - Base), %CmpReg`, with an 8-bit immediate when it fits.
  void compare(uint32_t C) {
    uint64_t Imm = Cases[C].Key - Base;
    assert(Imm <= INT32_MAX && "checked by emitX86Image");
    uint8_t Rex = 0x48 | (CmpReg >= 8 ? 0x01 : 0x00);
    uint8_t ModRM = 0xF8 | (CmpReg & 7); // /7 = cmp
    if (Imm <= INT8_MAX) {
      A.bytes({Rex, 0x83, ModRM, static_cast<uint8_t>(Imm)});
      return;
    }
    A.bytes({Rex, 0x81, ModRM});
    A.bytes32(static_cast<uint32_t>(Imm));
  }

  ArrayRef<ImageCase> Cases;
  uint64_t Base;
  unsigned CmpReg;
  bool Weighted;
  Assembler &A;
  unsigned FallbackLabel;
};

/// `mov %From, %To` (64-bit).
void emitMove(Assembler &A, unsigned From, unsigned To) {
  uint8_t Rex = 0x48 | (From >= 8 ? 0x04 : 0x00) | (To >= 8 ? 0x01 : 0x00);
  A.bytes({Rex, 0x89, uint8_t(0xC0 | ((From & 7) << 3) | (To & 7))});
}

} // namespace

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
  if (SelectorReg > 15 || SelectorReg == RegRAX || SelectorReg == RegR11 ||
      SelectorReg == 4 /*rsp*/)
    return makeError(
        formatv("register {0} cannot hold the selector", SelectorReg));
  std::vector<uint32_t> Sorted(Cases.size());
  for (uint32_t I = 0; I < Sorted.size(); ++I)
    Sorted[I] = I;
  llvm::sort(Sorted, [&](uint32_t L, uint32_t R) {
    return Cases[L].Key < Cases[R].Key;
  });
  for (size_t I = 0; I < Sorted.size(); ++I) {
    if (Cases[Sorted[I]].Key == 0)
      return makeError("a program has address 0");
    if (I > 0 && Cases[Sorted[I]].Key == Cases[Sorted[I - 1]].Key)
      return makeError(
          formatv("two programs have the address {0:x}", Cases[Sorted[I]].Key));
  }

  Assembler A;
  if (DelayPauses) {
    // mov $N, %eax; 1: pause; dec %eax; jnz 1b
    A.bytes({0xB8});
    A.bytes32(DelayPauses);
    unsigned Loop = A.newLabel();
    A.bind(Loop);
    A.bytes({0xF3, 0x90, 0xFF, 0xC8});
    A.jump(CondNE, Loop);
  }
  unsigned CmpReg = SelectorReg;
  uint64_t Base = 0;
  if (!Sorted.empty() && Cases[Sorted.back()].Key > uint64_t(INT32_MAX)) {
    // Offsets from the lowest program make every key a 32-bit immediate.
    Base = Cases[Sorted.front()].Key;
    if (Cases[Sorted.back()].Key - Base > uint64_t(INT32_MAX))
      return makeError(formatv("the programs span {0:x} bytes, more than a "
                               "32-bit compare covers",
                               Cases[Sorted.back()].Key - Base));
    A.bytes({0x48, 0xB8}); // movabs $Base, %rax
    A.bytes64(Base);
    emitMove(A, SelectorReg, RegR11);
    A.bytes({0x49, 0x29, 0xC3}); // sub %rax, %r11
    CmpReg = RegR11;
  }

  bool Weighted =
      any_of(Cases, [](const ImageCase &C) { return C.Weight != 0; });
  unsigned Fallback = A.newLabel();
  TreeEmitter Tree(Cases, Base, CmpReg, Weighted, A, Fallback);
  if (Weighted) {
    std::vector<uint32_t> ByWeight = Sorted;
    llvm::sort(ByWeight, [&](uint32_t L, uint32_t R) {
      if (Cases[L].Weight != Cases[R].Weight)
        return Cases[L].Weight > Cases[R].Weight;
      return Cases[L].Key < Cases[R].Key;
    });
    size_t Prefix = choosePrefix(Cases, ByWeight);
    Tree.emitPrefix(ArrayRef(ByWeight).take_front(Prefix));
    // The rest, still in key order.
    std::vector<bool> InPrefix(Cases.size());
    for (uint32_t C : ArrayRef(ByWeight).take_front(Prefix))
      InPrefix[C] = true;
    llvm::erase_if(Sorted, [&](uint32_t C) { return InPrefix[C]; });
  }
  if (Weighted)
    Tree.emitScan(Sorted, /*Last=*/true);
  else
    Tree.emit(Sorted, /*Last=*/true);

  A.bind(Fallback);
  if (ThunkFallback) {
    emitMove(A, SelectorReg, RegR11);
    A.jumpToThunk();
  } else if (SelectorReg >= 8) {
    A.bytes({0x41, 0xFF, uint8_t(0xE0 | (SelectorReg & 7))}); // jmp *%reg
  } else {
    A.bytes({0xFF, uint8_t(0xE0 | SelectorReg)});
  }
  return A.finish();
}

Expected<std::vector<uint8_t>> relocateX86Image(const X86Image &Code,
                                                ArrayRef<ImageCase> Cases,
                                                uint64_t Base, uint64_t Thunk) {
  std::vector<uint8_t> Bytes = Code.Code;
  auto Patch = [&](uint32_t Offset, uint64_t Target) -> Error {
    int64_t Disp = static_cast<int64_t>(Target - (Base + Offset + 4));
    if (Disp < INT32_MIN || Disp > INT32_MAX)
      return createStringError(inconvertibleErrorCode(),
                               "%#llx is out of rel32 reach of the image at "
                               "%#llx",
                               static_cast<unsigned long long>(Target),
                               static_cast<unsigned long long>(Base));
    uint32_t D = static_cast<uint32_t>(static_cast<int32_t>(Disp));
    for (unsigned I = 0; I < 4; ++I)
      Bytes[Offset + I] = static_cast<uint8_t>(D >> (8 * I));
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
