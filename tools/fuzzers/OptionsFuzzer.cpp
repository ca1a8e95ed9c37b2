//===- OptionsFuzzer.cpp - libFuzzer target for emit's target options -----===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// What `emit --target-triple/--mcpu/--mattr/--signature` does with its
// arguments before any code is made: the input holds the triple, the CPU,
// the features and a signature, one per line. createTargetMachine must
// give a TargetMachine or a clean Error (an unknown CPU or feature is one);
// a signature it accepts must be accepted or cleanly refused by
// checkLowerable (a return value in memory), never crash.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CodeEmitter.h"
#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Support/Error.h"
#include "llvm/Target/TargetMachine.h"

#include <cstddef>
#include <cstdint>

using namespace llvm;
using namespace dispatchgen;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  StringRef Text(reinterpret_cast<const char *>(Data), Size);
  SmallVector<StringRef, 4> Lines;
  Text.split(Lines, '\n', /*MaxSplit=*/3);
  Lines.resize(4);
  EmitOptions Opts;
  Opts.Triple = Lines[0].str();
  Opts.CPU = Lines[1].str();
  Opts.Features = Lines[2].str();
  auto TM = createTargetMachine(Opts);
  if (!TM) {
    consumeError(TM.takeError());
    return 0;
  }
  LLVMContext Ctx;
  auto FT = parseSignature(Lines[3], Ctx);
  if (!FT) {
    consumeError(FT.takeError());
    return 0;
  }
  consumeError(DispatchIRBuilder::checkLowerable(**TM, *FT));
  return 0;
}
