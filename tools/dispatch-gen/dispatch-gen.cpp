//===- dispatch-gen.cpp - The dispatch-gen command-line driver ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A thin driver: each subcommand parses its options and calls the library.
// Everything after a `--` is handed to the C frontend as compiler flags.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/StringSaver.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <cstring>
#include <unistd.h>

using namespace llvm;
using namespace dispatchgen::tool;

static void printVersion(raw_ostream &OS) {
  OS << "dispatch-gen " << DISPATCHGEN_VERSION << " (LLVM "
     << LLVM_VERSION_STRING << ")\n";
}

/// What LLVM cannot go on from (a backend that cannot lower a dispatcher,
/// for instance a musttail call a target cannot make) ends the tool with one
/// error line and exit status 1, instead of an abort and a stack dump. No
/// output file has been written then: `emit` writes only after success.
static void onFatalError(void *, const char *Reason, bool) {
  std::string Line =
      std::string("dispatch-gen: error: code generation failed: ") + Reason +
      "\n";
  // Only async-signal-safe calls: LLVM may be in any state.
  (void)!::write(2, Line.data(), Line.size());
  ::_exit(1);
}

/// Response files (`@FILE`) hold at most this many bytes.
static constexpr uint64_t MaxResponseFileBytes = 1 << 20;

/// Appends Arg to Out, expanded if it names a response file: the file's
/// arguments (GNU quoting), themselves expanded. A response file must be a
/// regular file of at most MaxResponseFileBytes (`@/dev/zero` would be read
/// until memory runs out) and may not include itself, directly or not.
static Error expandArgument(const char *Arg, StringSaver &Saver,
                            StringSet<> &Open,
                            SmallVectorImpl<const char *> &Out) {
  StringRef A(Arg);
  if (!A.starts_with("@") || A.size() == 1) {
    Out.push_back(Arg);
    return Error::success();
  }
  StringRef Path = A.drop_front();
  auto Fail = [&](const Twine &Why) {
    return createStringError(inconvertibleErrorCode(),
                             "response file '" + Path + "': " + Why);
  };
  sys::fs::file_status Status;
  if (std::error_code EC = sys::fs::status(Path, Status))
    return Fail(EC.message());
  if (!sys::fs::is_regular_file(Status))
    return Fail("not a regular file");
  if (Status.getSize() > MaxResponseFileBytes)
    return Fail(formatv("{0} bytes, more than the {1} allowed",
                        Status.getSize(), MaxResponseFileBytes));
  SmallString<256> Real;
  if (std::error_code EC = sys::fs::real_path(Path, Real))
    return Fail(EC.message());
  if (!Open.insert(Real).second)
    return Fail("it includes itself");
  auto Buffer = MemoryBuffer::getFile(Path, /*IsText=*/true);
  if (!Buffer)
    return Fail(Buffer.getError().message());
  if ((*Buffer)->getBufferSize() > MaxResponseFileBytes)
    return Fail("it grew while being read");
  SmallVector<const char *, 16> Args;
  cl::TokenizeGNUCommandLine((*Buffer)->getBuffer(), Saver, Args);
  for (const char *Inner : Args)
    if (Error E = expandArgument(Inner, Saver, Open, Out))
      return E;
  Open.erase(Real);
  return Error::success();
}

int main(int Argc, char **Argv) {
  InitLLVM X(Argc, Argv);
  install_fatal_error_handler(onFatalError);
  Invocation Inv;
  Inv.ToolName = "dispatch-gen";
  // Response files are expanded here, with limits, not by llvm::cl (which
  // reads any file whole and, on a loop, says so and goes on).
  BumpPtrAllocator Alloc;
  StringSaver Saver(Alloc);
  // The tool's arguments, response files expanded, end at the first `--`
  // (given, or in a response file); Clang's follow it, as given.
  auto IsDashDash = [](const char *A) { return std::strcmp(A, "--") == 0; };
  char **End = Argv + Argc;
  char **Given = std::find_if(Argv + 1, End, IsDashDash);
  SmallVector<const char *, 32> Args = {Argv[0]};
  StringSet<> Open;
  for (const char *A : make_range(Argv + 1, Given))
    if (Error E = expandArgument(A, Saver, Open, Args))
      return fail(Inv.ToolName, std::move(E));
  auto Split = std::find_if(Args.begin(), Args.end(), IsDashDash);
  if (Split != Args.end())
    Inv.ClangArgs.assign(Split + 1, Args.end());
  if (Given != End)
    Inv.ClangArgs.insert(Inv.ClangArgs.end(), Given + 1, End);
  // llvm::cl would take what follows `--` as positional arguments.
  int OwnArgc = Split - Args.begin();

  cl::SetVersionPrinter(printVersion);
  cl::HideUnrelatedOptions(getCategories());
  cl::ParseCommandLineOptions(
      OwnArgc, Args.data(),
      "dispatch-gen: generate dispatchers that turn indirect calls into "
      "direct calls\n\n"
      "  dispatch-gen scan FILE.c... [-- CLANG-ARGS]\n"
      "      list the programs in C files\n"
      "  dispatch-gen emit --signature='i32 (ptr, ptr)' prog_a prog_b ...\n"
      "  dispatch-gen emit FILE.c... [-- CLANG-ARGS]\n"
      "      build an ahead-of-time dispatcher as IR, assembly or object\n"
      "  dispatch-gen run FILE.c... [--threads=N] [-- CLANG-ARGS]\n"
      "      JIT the programs, call them through a live dispatcher from\n"
      "      several threads while swapping programs, and report\n"
      "  dispatch-gen bench [--quick] [--json=FILE] [--plot=FILE.svg]\n"
      "      measure dispatch cost and update latency against the peers\n\n"
      "Run 'dispatch-gen <subcommand> --help' for a subcommand's options.\n");

  if (emitCommand())
    return runEmit(Inv);
  if (scanCommand())
    return runScan(Inv);
  if (runCommand())
    return runRun(Inv);
  if (benchCommand())
    return runBench(Inv);
  return fail(Inv.ToolName, "no subcommand given; run 'dispatch-gen --help'");
}
