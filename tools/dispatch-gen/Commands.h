//===- Commands.h - dispatch-gen subcommands --------------------*- C++ -*-===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_TOOLS_COMMANDS_H
#define DISPATCH_GEN_TOOLS_COMMANDS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/CommandLine.h"

namespace dispatchgen::tool {

extern llvm::cl::SubCommand EmitCommand;

/// The option categories the subcommands' --help shows.
llvm::ArrayRef<const llvm::cl::OptionCategory *> getCategories();

/// Runs `dispatch-gen emit`; returns the process exit code.
int runEmit(llvm::StringRef ToolName);

} // namespace dispatchgen::tool

#endif // DISPATCH_GEN_TOOLS_COMMANDS_H
