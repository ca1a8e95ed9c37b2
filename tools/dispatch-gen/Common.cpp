//===- Common.cpp - What dispatch-gen's subcommands share -----------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include <cstring>

#include "llvm/ADT/SmallString.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;

namespace dispatchgen::tool {

cl::SubCommand &emitCommand() {
  static cl::SubCommand S(
      "emit", "Build an ahead-of-time dispatcher as IR, assembly or object");
  return S;
}

cl::SubCommand &scanCommand() {
  static cl::SubCommand S("scan", "List the programs in C files");
  return S;
}

cl::SubCommand &runCommand() {
  static cl::SubCommand S("run", "JIT C programs and call them through a "
                                 "live dispatcher while swapping them");
  return S;
}

cl::SubCommand &benchCommand() {
  static cl::SubCommand S("bench", "Measure dispatch cost and update latency "
                                   "side by side with the peers");
  return S;
}

static cl::OptionCategory FrontendCategory("C frontend options");

cl::OptionCategory &getFrontendCategory() { return FrontendCategory; }

static cl::opt<std::string> Prototype(
    "prototype", cl::sub(emitCommand()), cl::sub(scanCommand()),
    cl::sub(runCommand()), cl::cat(FrontendCategory), cl::value_desc("typedef"),
    cl::desc("Every function definition of this C type (a typedef of a "
             "function or function-pointer type) is a program"));

static cl::opt<bool> NoAnnotated(
    "no-annotated", cl::sub(emitCommand()), cl::sub(scanCommand()),
    cl::sub(runCommand()), cl::cat(FrontendCategory),
    cl::desc("Do not take functions marked DISPATCHGEN_PROGRAM (the "
             "annotation \"dispatch-gen.program\") as programs"));

int fail(StringRef ToolName, const Twine &Msg) {
  WithColor::error(errs(), ToolName) << Msg << "\n";
  return 1;
}

int fail(StringRef ToolName, Error E) {
  return fail(ToolName, toString(std::move(E)));
}

void warn(StringRef ToolName, const Twine &Msg) {
  WithColor::warning(errs(), ToolName) << Msg << "\n";
}

/// Where dispatch-gen/program.h is: beside an installed tool
/// (<prefix>/bin/../include), else the source tree it was built from.
static std::optional<std::string> programHeaderDir() {
  static int Anchor;
  std::string Exe = sys::fs::getMainExecutable("dispatch-gen", &Anchor);
  SmallString<256> Installed(
      sys::path::parent_path(sys::path::parent_path(Exe)));
  sys::path::append(Installed, "include");
  for (StringRef Dir :
       {StringRef(Installed), StringRef(DISPATCHGEN_SOURCE_INCLUDE_DIR)}) {
    SmallString<256> Header(Dir);
    sys::path::append(Header, "dispatch-gen", "program.h");
    if (sys::fs::exists(Header))
      return Dir.str();
  }
  return std::nullopt;
}

bool isCFile(StringRef Arg) {
  return Arg.ends_with(".c") || Arg.ends_with(".h") || Arg.ends_with(".i");
}

Expected<FrontendOptions>
getFrontendOptions(const Invocation &Inv, bool ExposePrograms, bool FindOnly) {
  if (NoAnnotated && Prototype.empty())
    return createStringError(inconvertibleErrorCode(),
                             "--no-annotated needs --prototype: there would "
                             "be no way to find programs");
  // Programs are found by their C names: as C++, those in namespaces or
  // classes would be skipped without a word.
  for (size_t I = 0; I < Inv.ClangArgs.size(); ++I) {
    StringRef A = Inv.ClangArgs[I], Lang;
    if (A == "-x" && I + 1 < Inv.ClangArgs.size())
      Lang = Inv.ClangArgs[I + 1];
    else if (A.starts_with("-x"))
      Lang = A.drop_front(2);
    else if (A.starts_with("--language="))
      Lang = A.drop_front(strlen("--language="));
    else if (A == "--driver-mode=g++")
      Lang = "c++";
    if (Lang.contains("++"))
      return createStringError(
          inconvertibleErrorCode(),
          formatv("C++ input ('{0}') is not supported: programs are found by "
                  "their C names, and C++ ones in namespaces or classes would "
                  "be missed; compile the programs as C",
                  Lang == "c++" && A.starts_with("--driver") ? A : Lang));
  }
  FrontendOptions Opts;
  // `#include "dispatch-gen/program.h"` works without flags; the user's
  // own -I come after and win.
  if (auto Dir = programHeaderDir())
    Opts.ClangArgs.push_back("-I" + *Dir);
  llvm::append_range(Opts.ClangArgs, Inv.ClangArgs);
  Opts.Prototype = Prototype;
  Opts.FindAnnotated = !NoAnnotated;
  Opts.ExposePrograms = ExposePrograms;
  Opts.FindOnly = FindOnly;
  return std::move(Opts);
}

Expected<std::vector<CompiledUnit>>
compileFiles(ArrayRef<std::string> Files, const Invocation &Inv,
             bool ExposePrograms, LLVMContext &Ctx, bool FindOnly) {
  if (Files.empty())
    return createStringError(inconvertibleErrorCode(), "no C file given");
  auto Opts = getFrontendOptions(Inv, ExposePrograms, FindOnly);
  if (!Opts)
    return Opts.takeError();
  std::vector<CompiledUnit> Units;
  for (const std::string &File : Files) {
    auto Unit = compileC(File, *Opts, Ctx);
    if (!Unit)
      return Unit.takeError();
    Units.push_back(std::move(*Unit));
  }
  return std::move(Units);
}

} // namespace dispatchgen::tool
