//===- SignatureFuzzer.cpp - libFuzzer target for parseSignature ----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Any text must give a function type or a clean Error, never a crash. A
// parsed type must also be accepted or cleanly refused by
// getDispatcherType, with and without a selector.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/Support/Error.h"

#include <cstddef>
#include <cstdint>

using namespace llvm;
using namespace dispatchgen;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  LLVMContext Ctx;
  StringRef Text(reinterpret_cast<const char *>(Data), Size);
  auto FT = parseSignature(Text, Ctx);
  if (!FT) {
    consumeError(FT.takeError());
    return 0;
  }
  for (std::optional<unsigned> Selector :
       {std::optional<unsigned>(), std::optional<unsigned>(0),
        std::optional<unsigned>(Size % 8)}) {
    auto DT = DispatchIRBuilder::getDispatcherType(*FT, Selector);
    if (!DT)
      consumeError(DT.takeError());
  }
  return 0;
}
