//===- dispatch-gen.cpp - The dispatch-gen command-line driver ------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//
//
// A thin driver: each subcommand parses its options and calls the library.
// Everything after a `--` is handed to the C frontend as compiler flags.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/InitLLVM.h"
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

int main(int Argc, char **Argv) {
  InitLLVM X(Argc, Argv);
  install_fatal_error_handler(onFatalError);
  Invocation Inv;
  Inv.ToolName = "dispatch-gen";
  // llvm::cl would take what follows `--` as positional arguments.
  int OwnArgc = Argc;
  for (int I = 1; I < Argc; ++I)
    if (std::strcmp(Argv[I], "--") == 0) {
      OwnArgc = I;
      Inv.ClangArgs.assign(Argv + I + 1, Argv + Argc);
      break;
    }

  cl::SetVersionPrinter(printVersion);
  cl::HideUnrelatedOptions(getCategories());
  cl::ParseCommandLineOptions(
      OwnArgc, Argv,
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
