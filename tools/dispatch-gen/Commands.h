//===- Commands.h - dispatch-gen subcommands --------------------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_TOOLS_COMMANDS_H
#define DISPATCH_GEN_TOOLS_COMMANDS_H

#include "dispatch-gen/Frontend.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace llvm {
class LLVMContext;
} // namespace llvm

namespace dispatchgen::tool {

/// The subcommands, made on first use: options of several files name them
/// while static objects are being constructed, in no set order.
llvm::cl::SubCommand &emitCommand();
llvm::cl::SubCommand &scanCommand();
llvm::cl::SubCommand &runCommand();
llvm::cl::SubCommand &benchCommand();

/// The option categories --help shows.
llvm::ArrayRef<const llvm::cl::OptionCategory *> getCategories();
/// Options of the C frontend, shared by scan, emit and run.
llvm::cl::OptionCategory &getFrontendCategory();

/// What every subcommand gets from main().
struct Invocation {
  llvm::StringRef ToolName;
  /// Compiler flags given after `--`.
  std::vector<std::string> ClangArgs;
};

/// Prints `ToolName: error: Msg` and returns the exit code 1.
int fail(llvm::StringRef ToolName, const llvm::Twine &Msg);
int fail(llvm::StringRef ToolName, llvm::Error E);
void warn(llvm::StringRef ToolName, const llvm::Twine &Msg);

/// The frontend options of the command line (--prototype, --no-annotated,
/// the Clang arguments after `--`, and the directory of
/// dispatch-gen/program.h); fails on a contradiction or C++ input.
llvm::Expected<FrontendOptions> getFrontendOptions(const Invocation &Inv,
                                                   bool ExposePrograms,
                                                   bool FindOnly = false);

/// Compiles C files with the frontend options of the command line; fails
/// on the first file that does not compile or has no program.
llvm::Expected<std::vector<CompiledUnit>>
compileFiles(llvm::ArrayRef<std::string> Files, const Invocation &Inv,
             bool ExposePrograms, llvm::LLVMContext &Ctx,
             bool FindOnly = false);

/// Whether a positional argument names a C file rather than a target.
bool isCFile(llvm::StringRef Arg);

int runEmit(const Invocation &Inv);
int runScan(const Invocation &Inv);
int runRun(const Invocation &Inv);
int runBench(const Invocation &Inv);

} // namespace dispatchgen::tool

#endif // DISPATCH_GEN_TOOLS_COMMANDS_H
