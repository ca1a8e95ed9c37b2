//===- X86Assembler.h - Straight-line x86 with relaxed branches -*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The small assembler X86ImageEmitter writes images with: bytes, labels,
// local jumps relaxed to rel8 where they reach (rel32 where not), and
// rel32 jumps to the image's cases and to the fallback thunk, left for
// relocateX86Image to fill. Private to the Dispatcher component.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_X86ASSEMBLER_H
#define DISPATCH_GEN_LIB_DISPATCHER_X86ASSEMBLER_H

#include "dispatch-gen/X86ImageEmitter.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/MathExtras.h"

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

namespace dispatchgen {

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
    uint8_t Buf[4];
    llvm::support::endian::write32le(Buf, V);
    for (uint8_t B : Buf)
      bytes8(B);
  }
  void bytes64(uint64_t V) {
    uint8_t Buf[8];
    llvm::support::endian::write64le(Buf, V);
    for (uint8_t B : Buf)
      bytes8(B);
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
  /// `jmp rel32` to Cases[Case].Target, resolved by the linker.
  void jmpToCase(uint32_t Case) {
    Items.push_back({Item::IK_Case, NoCond, Case});
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
        if (I.Cond == NoCond)
          Out.Code.push_back(0xE9);
        else
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
      return I.Cond == NoCond ? 5 : 6;
    case Item::IK_Thunk:
      return 5;
    }
    return 0;
  }

  static void append32(std::vector<uint8_t> &Code, uint32_t V) {
    Code.resize(Code.size() + 4);
    llvm::support::endian::write32le(Code.data() + Code.size() - 4, V);
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
        if (!llvm::isInt<8>(Disp)) {
          I.Long = true;
          Changed = true;
        }
      }
    }
  }

  std::vector<Item> Items;
  std::vector<uint64_t> LabelOffsets;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_X86ASSEMBLER_H
