//===- dispatch-gen.cpp - The dispatch-gen command-line driver ------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//
//
// A thin driver: each subcommand parses its options and calls the library.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

static void printVersion(raw_ostream &OS) {
  OS << "dispatch-gen " << DISPATCHGEN_VERSION << " (LLVM "
     << LLVM_VERSION_STRING << ")\n";
}

int main(int Argc, char **Argv) {
  InitLLVM X(Argc, Argv);
  cl::SetVersionPrinter(printVersion);
  cl::HideUnrelatedOptions(dispatchgen::tool::getCategories());
  cl::ParseCommandLineOptions(
      Argc, Argv,
      "dispatch-gen: generate dispatchers that turn indirect calls into "
      "direct calls\n\n"
      "  dispatch-gen emit --signature='i32 (ptr, ptr)' prog_a prog_b ...\n"
      "      build an ahead-of-time dispatcher as IR, assembly or object\n\n"
      "Run 'dispatch-gen <subcommand> --help' for a subcommand's options.\n");

  if (dispatchgen::tool::EmitCommand)
    return dispatchgen::tool::runEmit(Argv[0]);

  WithColor::error(errs(), "dispatch-gen")
      << "no subcommand given; run 'dispatch-gen --help'\n";
  return 1;
}
