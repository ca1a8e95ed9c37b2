//===- ScanCommand.cpp - dispatch-gen scan --------------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// `dispatch-gen scan` lists the programs in C files: name, file:line, C type
// and LLVM type, and the dispatcher signature they share.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace dispatchgen::tool {

static cl::OptionCategory ScanCategory("scan options");

static cl::list<std::string> Files(cl::Positional, cl::sub(scanCommand()),
                                   cl::cat(ScanCategory),
                                   cl::desc("<file.c>... [-- clang-args]"));

enum class Format { Text, JSON };
static cl::opt<Format> OutputFormat(
    "format", cl::sub(scanCommand()), cl::cat(ScanCategory),
    cl::init(Format::Text), cl::desc("Output format"),
    cl::values(clEnumValN(Format::Text, "text", "One line per program"),
               clEnumValN(Format::JSON, "json", "A JSON object")));

static std::string llvmTypeOf(const CompiledUnit &U, const FoundProgram &P) {
  if (Function *F = U.M->getFunction(P.Symbol))
    return typeText(F->getFunctionType());
  return "?";
}

static StringRef extensionName(ArgExtension E) {
  switch (E) {
  case ArgExtension::ZeroExt:
    return "zeroext";
  case ArgExtension::SignExt:
    return "signext";
  case ArgExtension::None:
    break;
  }
  return "";
}

static void printJSON(ArrayRef<CompiledUnit> Units,
                      const std::optional<DerivedSignature> &Sig) {
  json::OStream J(outs(), 2);
  J.object([&] {
    J.attributeArray("programs", [&] {
      for (const CompiledUnit &U : Units)
        for (const FoundProgram &P : U.Programs)
          J.object([&] {
            J.attribute("name", P.Name);
            J.attribute("symbol", P.Symbol);
            J.attribute("file", P.File);
            J.attribute("line", P.Line);
            J.attribute("c_type", P.CType);
            J.attribute("llvm_type", llvmTypeOf(U, P));
            J.attribute("annotated", P.Annotated);
            J.attribute("static", P.Static);
          });
    });
    if (!Sig)
      return;
    J.attributeObject("signature", [&] {
      J.attribute("llvm_type", Sig->Text);
      J.attribute("c_type", Sig->CType);
      J.attribute("return_extension", extensionName(Sig->ReturnExtension));
      J.attributeArray("param_extensions", [&] {
        for (ArgExtension E : Sig->ParamExtensions)
          J.value(extensionName(E));
      });
    });
  });
  outs() << "\n";
}

int runScan(const Invocation &Inv) {
  LLVMContext Ctx;
  // Only the AST and Clang's ABI lowering: no code, no optimiser.
  auto Units = compileFiles(Files, Inv, /*ExposePrograms=*/false, Ctx,
                            /*FindOnly=*/true);
  if (!Units)
    return fail(Inv.ToolName, Units.takeError());
  std::optional<DerivedSignature> Sig;
  bool AnyTyped = llvm::any_of(
      *Units, [](const CompiledUnit &U) { return U.Signature.has_value(); });
  if (auto S = commonSignature(*Units, Files))
    Sig = std::move(*S);
  else if (AnyTyped)
    // Programs of different types cannot share a dispatcher: say so rather
    // than list them without a signature.
    return fail(Inv.ToolName, S.takeError());
  else
    consumeError(S.takeError()); // scan lists what it found, even nothing

  if (OutputFormat == Format::JSON) {
    printJSON(*Units, Sig);
    return 0;
  }
  size_t Count = 0;
  for (const CompiledUnit &U : *Units)
    for (const FoundProgram &P : U.Programs) {
      outs() << formatv("{0}:{1}: {2}: {3} -> {4}{5}\n", P.File, P.Line, P.Name,
                        P.CType, llvmTypeOf(U, P), P.Static ? " (static)" : "");
      ++Count;
    }
  outs() << formatv("{0} program{1}", Count, Count == 1 ? "" : "s");
  if (Sig)
    outs() << formatv("; dispatcher signature {0} (C: {1})", Sig->Text,
                      Sig->CType);
  outs() << "\n";
  return 0;
}

} // namespace dispatchgen::tool
