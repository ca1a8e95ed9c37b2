//===- DispatcherSpecFuzzer.cpp - libFuzzer target for DispatchIRBuilder --===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Builds a dispatcher from fuzzed pieces, as `dispatch-gen emit` does: the
// input's lines are a signature, a selector (`-`: none, else the index of
// the selector parameter, as --selector-arg), then targets in the CLI's
// `SYMBOL[@ADDRESS][:WEIGHT]` form (parseTargetSpec), one a line. Any input
// must give a clean Error or a dispatcher that verifies, never a crash.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

using namespace llvm;
using namespace dispatchgen;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  StringRef Input(reinterpret_cast<const char *>(Data), Size);
  SmallVector<StringRef, 16> Lines;
  Input.split(Lines, '\n', /*MaxSplit=*/64);
  if (Lines.size() < 2)
    return 0;

  LLVMContext Ctx;
  auto FT = parseSignature(Lines[0], Ctx);
  if (!FT) {
    consumeError(FT.takeError());
    return 0;
  }
  DispatcherSpec Spec;
  Spec.Name = "fuzz_dispatch";
  Spec.Signature = *FT;
  StringRef Selector = Lines[1].trim();
  if (Selector != "-") {
    unsigned Index;
    if (Selector.getAsInteger(10, Index))
      return 0;
    Spec.SelectorArg = Index;
  }
  for (StringRef Line : ArrayRef<StringRef>(Lines).drop_front(2)) {
    if (Line == "retpoline") {
      Spec.RetpolineFallback = true;
      continue;
    }
    auto T = parseTargetSpec(Line);
    if (!T) {
      consumeError(T.takeError());
      continue;
    }
    Spec.Targets.push_back(std::move(*T));
  }

  Module M("fuzz", Ctx);
  auto F = DispatchIRBuilder(M).build(Spec);
  if (!F) {
    consumeError(F.takeError());
    // A refused spec leaves the module unchanged.
    if (!M.empty() || !M.global_empty())
      abort();
    return 0;
  }
  if (verifyModule(M, &errs()))
    abort();
  return 0;
}
