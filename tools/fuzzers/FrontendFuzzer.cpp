//===- FrontendFuzzer.cpp - libFuzzer target for the C frontend -----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// compileC on arbitrary text, written to a temporary .c file: a clean
// Error or a unit, never a crash. The first byte chooses whether to look
// for the prototype `prog_t` (odd) or for annotated programs only (even).
// Clang's diagnostics go to a null stream.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Frontend.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include <cstddef>
#include <cstdint>
#include <string>

using namespace llvm;
using namespace dispatchgen;

static std::string tempFile() {
  SmallString<128> Path;
  int FD;
  if (sys::fs::createTemporaryFile("dispatch-gen-fuzz", "c", FD, Path))
    abort();
  sys::fs::closeFile(FD);
  return std::string(Path);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *Data, size_t Size) {
  static const std::string Path = tempFile();
  if (Size == 0)
    return 0;
  {
    std::error_code EC;
    raw_fd_ostream OS(Path, EC);
    if (EC)
      abort();
    OS.write(reinterpret_cast<const char *>(Data) + 1, Size - 1);
  }
  FrontendOptions Opts;
  if (Data[0] & 1)
    Opts.Prototype = "prog_t";
  Opts.Diagnostics = &nulls();
  LLVMContext Ctx;
  auto Unit = compileC(Path, Opts, Ctx);
  if (!Unit)
    consumeError(Unit.takeError());
  return 0;
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  // Warm up: the first compile allocates libLLVM's and Clang's lazily
  // created process-wide state, which LeakSanitizer would otherwise blame
  // on the first input.
  static const uint8_t Warm[] =
      "\001typedef int prog_t(int);\nint f(int x) { return x; }\n";
  LLVMFuzzerTestOneInput(Warm, sizeof(Warm) - 1);
  return 0;
}
