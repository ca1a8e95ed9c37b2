//===- Hooks.cpp - The entry and the hooks the C files define -------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "Hooks.h"

#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <vector>

using namespace llvm;

namespace dispatchgen::run {

Expected<std::string> findEntry(ArrayRef<CompiledUnit> Units,
                                const DerivedSignature &Sig, StringRef Wanted) {
  FunctionType *Own = Sig.Type;
  SmallVector<Type *, 8> Params(Own->params());
  Params.push_back(PointerType::getUnqual(Own->getContext()));
  std::string Type =
      typeText(FunctionType::get(Own->getReturnType(), Params, false));
  std::vector<std::string> Found;
  for (const CompiledUnit &U : Units)
    for (Function &F : *U.M)
      if (F.isDeclaration() && !F.isIntrinsic() &&
          typeText(F.getFunctionType()) == Type &&
          !is_contained(Found, F.getName().str()))
        Found.push_back(F.getName().str());
  if (!Wanted.empty()) {
    if (!is_contained(Found, Wanted))
      return createStringError(
          inconvertibleErrorCode(),
          formatv("no file declares the entry '{0}' with the dispatcher's "
                  "type {1}",
                  Wanted, Type));
    return Wanted.str();
  }
  if (Found.size() == 1)
    return Found.front();
  if (Found.empty())
    return createStringError(
        inconvertibleErrorCode(),
        formatv("no file declares a dispatcher entry of type {0} (the "
                "programs' parameters, then the program); declare one and "
                "call it from dispatchgen_drive, see examples/xdp/README.md",
                Type));
  return createStringError(inconvertibleErrorCode(),
                           formatv("several entries could be the dispatcher "
                                   "({0}); choose one with --entry",
                                   join(Found, ", ")));
}

Error checkHooks(ArrayRef<CompiledUnit> Units, ArrayRef<std::string> Files) {
  struct Hook {
    const char *Name, *C;
    unsigned Params; // 0: none; 1: (i64); 2: (i64, ptr); 3: (ptr)
    bool ReturnsPtr, Returns32;
  };
  static const Hook Hooks[] = {
      {"dispatchgen_drive",
       "unsigned long dispatchgen_drive(unsigned long iteration, PROG prog)", 2,
       false, false},
      {"dispatchgen_expect",
       "unsigned long dispatchgen_expect(unsigned long iteration, PROG prog)",
       2, false, false},
      {"dispatchgen_setup", "int dispatchgen_setup(void)", 0, false, true},
      {"dispatchgen_describe",
       "const char *dispatchgen_describe(unsigned long iteration)", 1, true,
       false},
      {"dispatchgen_stateful", "int dispatchgen_stateful(PROG prog)", 3, false,
       true},
  };
  for (size_t U = 0; U < Units.size(); ++U) {
    Module &M = *Units[U].M;
    LLVMContext &Ctx = M.getContext();
    Type *I64 = Type::getInt64Ty(Ctx), *Ptr = PointerType::getUnqual(Ctx);
    for (const Hook &H : Hooks) {
      GlobalValue *GV = M.getNamedValue(H.Name);
      if (!GV || GV->isDeclaration())
        continue;
      auto *F = dyn_cast<Function>(GV);
      SmallVector<Type *, 2> Params;
      if (H.Params == 1 || H.Params == 2)
        Params.push_back(I64);
      if (H.Params == 2 || H.Params == 3)
        Params.push_back(Ptr);
      Type *Ret = H.ReturnsPtr  ? Ptr
                  : H.Returns32 ? Type::getInt32Ty(Ctx)
                                : I64;
      if (!F || F->getFunctionType() != FunctionType::get(Ret, Params, false))
        return createStringError(
            inconvertibleErrorCode(),
            formatv("{0} defines '{1}' as {2}; the harness calls it as '{3}'",
                    Files[U], H.Name,
                    F ? "a function of another type"
                      : "something that is not a function",
                    H.C));
    }
  }
  return Error::success();
}

} // namespace dispatchgen::run
