//===- FrontendTest.cpp - Tests for the Clang frontend --------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Unit tests for compileC(): C files written to a scratch directory are
// compiled in process; the tests check which functions are programs, the
// errors for wrong programs, prototypes and C, that compiler flags and the
// builtin headers work, the signatures Clang's ABI lowering gives (checked
// against what `clang-22 -O2 -emit-llvm` prints for x86-64), and, by running
// the modules in an LLJIT, that programs (static ones included) can be
// called by their symbols.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Frontend.h"

#include "TestingSupport.h"
#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/GlobalVariable.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace llvm;
using namespace dispatchgen;
using namespace dispatchgen::unittest;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

bool isX86_64Host() {
  return Triple(sys::getDefaultTargetTriple()).getArch() == Triple::x86_64;
}

class FrontendTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(sys::fs::createUniqueDirectory("dispatchgen-frontend", Dir));
  }
  void TearDown() override { sys::fs::remove_directories(Dir); }

  /// Writes Text to Dir/Name (Name may hold subdirectories); returns the
  /// path.
  std::string writeFile(StringRef Name, StringRef Text) {
    SmallString<128> Path(Dir);
    sys::path::append(Path, Name);
    EXPECT_FALSE(sys::fs::create_directories(sys::path::parent_path(Path)));
    std::error_code EC;
    raw_fd_ostream OS(Path, EC);
    EXPECT_FALSE(EC) << EC.message();
    OS << Text;
    return std::string(Path);
  }

  /// compileC into Ctx, with the diagnostics captured in Diagnostics.
  Expected<CompiledUnit> compile(StringRef Path,
                                 FrontendOptions Opts = FrontendOptions()) {
    Opts.Diagnostics = &DiagOS;
    return compileC(Path, Opts, *Ctx);
  }

  /// Compiles Text written to Name; fails the test on an error.
  CompiledUnit compileOK(StringRef Name, StringRef Text,
                         FrontendOptions Opts = FrontendOptions()) {
    Expected<CompiledUnit> Unit = compile(writeFile(Name, Text), Opts);
    EXPECT_THAT(takeError(Unit), Succeeded()) << Diagnostics;
    if (!Unit)
      return CompiledUnit();
    EXPECT_FALSE(verifyModule(*Unit->M, &errs()));
    return std::move(*Unit);
  }

  /// The error message of compiling Text written to Name.
  ErrorResult compileError(StringRef Name, StringRef Text,
                           FrontendOptions Opts = FrontendOptions()) {
    return takeError(compile(writeFile(Name, Text), Opts));
  }

  static FrontendOptions withPrototype(StringRef Name) {
    FrontendOptions Opts;
    Opts.Prototype = Name.str();
    return Opts;
  }

  /// An LLJIT running Modules (all in Ctx, which it takes).
  Expected<std::unique_ptr<orc::LLJIT>>
  jit(std::vector<std::unique_ptr<Module>> Modules) {
    InitializeNativeTarget();
    InitializeNativeTargetAsmPrinter();
    auto J = orc::LLJITBuilder().create();
    if (!J)
      return J.takeError();
    orc::ThreadSafeContext TSCtx(std::move(Ctx));
    for (std::unique_ptr<Module> &M : Modules)
      if (Error E =
              (*J)->addIRModule(orc::ThreadSafeModule(std::move(M), TSCtx)))
        return std::move(E);
    return J;
  }

  template <typename FnT>
  Expected<FnT *> lookup(orc::LLJIT &J, StringRef Symbol) {
    auto Addr = J.lookup(Symbol);
    if (!Addr)
      return Addr.takeError();
    return Addr->toPtr<FnT *>();
  }

  SmallString<128> Dir;
  std::unique_ptr<LLVMContext> Ctx = std::make_unique<LLVMContext>();
  std::string Diagnostics;
  raw_string_ostream DiagOS{Diagnostics};
};

std::vector<std::string> namesOf(const CompiledUnit &Unit) {
  std::vector<std::string> Names;
  for (const FoundProgram &P : Unit.Programs)
    Names.push_back(P.Name);
  return Names;
}

const char *const XdpPrograms = R"(#include "dispatch-gen/program.h"
typedef unsigned int xdp_prog_t(const void *ctx, const void *insn);

DISPATCHGEN_PROGRAM unsigned int drop_tcp(const void *ctx, const void *insn) {
  return ctx != insn;
}

DISPATCHGEN_PROGRAM
static unsigned int pass_all(const void *ctx, const void *insn) { return 2; }

unsigned int helper(const void *ctx, const void *insn) { return 7; }
)";

FrontendOptions withProjectIncludes() {
  FrontendOptions Opts;
  Opts.ClangArgs = {"-I", DISPATCHGEN_TEST_INCLUDE_DIR};
  return Opts;
}

//===----------------------------------------------------------------------===//
// Finding programs
//===----------------------------------------------------------------------===//

TEST_F(FrontendTest, AnnotatedDefinitionsAreProgramsWithFileLineAndTypes) {
  CompiledUnit Unit =
      compileOK("filters.c", XdpPrograms, withProjectIncludes());
  ASSERT_EQ(Unit.Programs.size(), 2u);
  const FoundProgram &Drop = Unit.Programs[0];
  EXPECT_EQ(Drop.Name, "drop_tcp");
  EXPECT_EQ(Drop.Symbol, "drop_tcp");
  EXPECT_THAT(Drop.File, HasSubstr("filters.c"));
  EXPECT_EQ(Drop.Line, 4u);
  EXPECT_EQ(Drop.CType, "unsigned int (const void *, const void *)");
  EXPECT_TRUE(Drop.Annotated);
  EXPECT_FALSE(Drop.Static);
  const FoundProgram &Pass = Unit.Programs[1];
  EXPECT_EQ(Pass.Name, "pass_all");
  EXPECT_EQ(Pass.Line, 9u);
  EXPECT_TRUE(Pass.Static);
  ASSERT_TRUE(Unit.Signature);
  EXPECT_EQ(Unit.Signature->CType, "unsigned int (const void *, const void *)");
}

TEST_F(FrontendTest, FindOnlyFindsTheSameProgramsAndSignatureWithoutCode) {
  // What `scan` and `emit` need, from the AST and Clang's ABI lowering:
  // the same programs and signature as a full compile, and no code.
  CompiledUnit Full = compileOK("full.c", XdpPrograms, withProjectIncludes());
  FrontendOptions Opts = withProjectIncludes();
  Opts.FindOnly = true;
  CompiledUnit Found = compileOK("found.c", XdpPrograms, Opts);
  ASSERT_EQ(Found.Programs.size(), Full.Programs.size());
  for (size_t I = 0; I < Full.Programs.size(); ++I) {
    EXPECT_EQ(Found.Programs[I].Name, Full.Programs[I].Name);
    EXPECT_EQ(Found.Programs[I].Line, Full.Programs[I].Line);
    EXPECT_EQ(Found.Programs[I].CType, Full.Programs[I].CType);
    EXPECT_EQ(Found.Programs[I].Static, Full.Programs[I].Static);
  }
  ASSERT_TRUE(Found.Signature && Full.Signature);
  EXPECT_EQ(Found.Signature->Text, Full.Signature->Text);
  EXPECT_EQ(Found.Signature->ParamExtensions, Full.Signature->ParamExtensions);
  // Each program is declared with that type; nothing is defined.
  for (const FoundProgram &P : Found.Programs) {
    Function *F = Found.M->getFunction(P.Symbol);
    ASSERT_TRUE(F) << P.Symbol;
    EXPECT_EQ(F->getFunctionType(), Found.Signature->Type);
  }
  for (const Function &F : *Found.M)
    EXPECT_TRUE(F.isDeclaration()) << F.getName().str();
  // The inline-only check holds without code too.
  EXPECT_THAT(compileError("inl.c", R"(#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM inline int twice(int x) { return 2 * x; }
)",
                           Opts),
              Failed(HasSubstr("inl.c:2: program 'twice' is an inline "
                               "definition that Clang emits no code for")));
}

TEST_F(FrontendTest, FunctionsWithoutAnnotationAreNotPrograms) {
  CompiledUnit Unit =
      compileOK("filters.c", XdpPrograms, withProjectIncludes());
  EXPECT_THAT(namesOf(Unit), ElementsAre("drop_tcp", "pass_all"));
  // ...but they are compiled.
  EXPECT_TRUE(Unit.M->getFunction("helper"));
}

TEST_F(FrontendTest, AnnotatedDeclarationsWithoutDefinitionAreNotPrograms) {
  CompiledUnit Unit = compileOK("decls.c", R"(
#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM int elsewhere(int x);
DISPATCHGEN_PROGRAM int declared_first(int x);
int declared_first(int x) { return elsewhere(x) + 1; }
)",
                                withProjectIncludes());
  // The annotation of an earlier declaration carries over to the definition.
  EXPECT_THAT(namesOf(Unit), ElementsAre("declared_first"));
  EXPECT_EQ(Unit.Programs[0].Line, 5u);
}

TEST_F(FrontendTest, ProgramsAreDefinedInTheFileNotInItsHeaders) {
  writeFile("include/helpers.h", R"(
typedef int op_t(int);
static inline int twice(int x) { return 2 * x; }
)");
  FrontendOptions Opts = withPrototype("op_t");
  Opts.ClangArgs = {"-I", (Dir + "/include").str()};
  CompiledUnit Unit = compileOK("ops.c", R"(#include "helpers.h"
int thrice(int x) { return 3 * x; }
)",
                                Opts);
  EXPECT_THAT(namesOf(Unit), ElementsAre("thrice"));
}

TEST_F(FrontendTest, FunctionTypedefPrototypeFindsEveryDefinitionOfItsType) {
  CompiledUnit Unit = compileOK("xdp.c", R"(
typedef unsigned int xdp_prog_t(const void *, const void *);
unsigned int a(const void *ctx, const void *insn) { return 1; }
static unsigned int b(const void *c, const void *i) { return 2; }
unsigned int not_a_program(const void *ctx, void *insn) { return 3; }
int neither(const void *ctx, const void *insn) { return 4; }
unsigned int c(const void *, const void *);
)",
                                withPrototype("xdp_prog_t"));
  EXPECT_THAT(namesOf(Unit), ElementsAre("a", "b"));
  EXPECT_FALSE(Unit.Programs[0].Annotated);
  ASSERT_TRUE(Unit.Signature);
  EXPECT_EQ(Unit.Signature->Text, "i32 (ptr, ptr)");
}

TEST_F(FrontendTest, PointerTypedefPrototypeFindsDozensOfStaticPrograms) {
  // The shape of a Lua C library: many static lua_CFunctions.
  std::string Text = R"(
typedef struct lua_State lua_State;
typedef int (*lua_CFunction)(lua_State *L);
int lua_gettop(lua_State *L);
)";
  constexpr unsigned NumFunctions = 40;
  for (unsigned I = 0; I < NumFunctions; ++I)
    Text += formatv("static int l_f{0}(lua_State *L) {{ return lua_gettop(L) "
                    "+ {0}; }\n",
                    I)
                .str();
  Text += "static int not_lua(lua_State *L, int x) { return x; }\n";

  CompiledUnit Unit =
      compileOK("lualib.c", Text, withPrototype("lua_CFunction"));
  ASSERT_EQ(Unit.Programs.size(), NumFunctions);
  for (unsigned I = 0; I < NumFunctions; ++I) {
    const FoundProgram &P = Unit.Programs[I];
    EXPECT_EQ(P.Name, formatv("l_f{0}", I).str());
    EXPECT_EQ(P.Line, 5 + I);
    EXPECT_EQ(P.CType, "int (lua_State *)");
    EXPECT_TRUE(P.Static);
    // Clang emits no unused static function; each program is emitted, and
    // exposed under its own symbol.
    Function *F = Unit.M->getFunction(P.Symbol);
    ASSERT_TRUE(F) << P.Symbol;
    EXPECT_FALSE(F->isDeclaration());
    EXPECT_FALSE(F->hasLocalLinkage());
  }
  EXPECT_EQ(Unit.Signature->Text, "i32 (ptr)");
  EXPECT_EQ(Unit.Signature->CType, "int (lua_State *)");
}

TEST_F(FrontendTest, PrototypeWithoutProgramsStillGivesTheSignature) {
  CompiledUnit Unit = compileOK("proto.h.c", R"(
typedef long handler_t(void *, long);
)",
                                withPrototype("handler_t"));
  EXPECT_TRUE(Unit.Programs.empty());
  ASSERT_TRUE(Unit.Signature);
  EXPECT_EQ(Unit.Signature->Text, "i64 (ptr, i64)");
}

TEST_F(FrontendTest, NoProgramsAndNoPrototypeGiveNoSignature) {
  CompiledUnit Unit = compileOK("plain.c", "int f(int x) { return x; }\n");
  EXPECT_TRUE(Unit.Programs.empty());
  EXPECT_FALSE(Unit.Signature);
  EXPECT_TRUE(Unit.M->getFunction("f"));
}

//===----------------------------------------------------------------------===//
// Wrong programs and prototypes
//===----------------------------------------------------------------------===//

TEST_F(FrontendTest, AnnotatedProgramOfAnotherTypeIsAnErrorAtItsFileLine) {
  FrontendOptions Opts = withProjectIncludes();
  Opts.Prototype = "xdp_prog_t";
  ErrorResult Result =
      compileError("filters.c", R"(#include "dispatch-gen/program.h"
typedef unsigned int xdp_prog_t(const void *, const void *);
DISPATCHGEN_PROGRAM unsigned int good(const void *c, const void *i) {
  return 0;
}
DISPATCHGEN_PROGRAM int bad(int x) { return x; }
)",
                   Opts);
  EXPECT_THAT(Result,
              Failed(HasSubstr(
                  "filters.c:6: program 'bad' has type 'int (int)', not the "
                  "prototype 'xdp_prog_t' ('unsigned int (const void *, "
                  "const void *)')")));
}

TEST_F(FrontendTest, AnnotatedProgramsMustShareOneTypeAndAllMismatchesShow) {
  ErrorResult Result =
      compileError("mixed.c", R"(#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM int first(int x) { return x; }
DISPATCHGEN_PROGRAM long second(long x) { return x; }
DISPATCHGEN_PROGRAM int third(int y) { return y; }
DISPATCHGEN_PROGRAM short fourth(int x) { return x; }
)",
                   withProjectIncludes());
  EXPECT_THAT(Result, Failed(HasSubstr(
                          "mixed.c:3: program 'second' has type 'long (long)', "
                          "not 'int (int)' of program 'first' (")));
  EXPECT_THAT(Result, Failed(HasSubstr("mixed.c:5: program 'fourth'")));
  EXPECT_THAT(Result, Failed(Not(HasSubstr("'third'"))));
}

// Programs whose C type differs from the prototype only inside the
// parameter list: same return type, same number of parameters. The tests
// expect the C type check's message, because nothing after it would refuse
// all of them: a pointee or a signedness difference lowers to the same LLVM
// signature (every pointer is `ptr`; `long` and `unsigned long` are both
// i64), so such a program would be called with the wrong types, and a width
// difference would surface only as the emitted-signature check's internal
// error.

/// A file with the prototype `typedef int prog_t(PrototypeParams);`, the
/// annotated program `pass` of exactly that type (line 5) and the annotated
/// program `filter` taking ProgramParams (line 6).
std::string filterFile(StringRef PrototypeParams, StringRef ProgramParams) {
  return formatv(R"(#include "dispatch-gen/program.h"
struct pkt;
struct sock;
typedef int prog_t({0});
DISPATCHGEN_PROGRAM int pass({0}) {{ return 0; }
DISPATCHGEN_PROGRAM int filter({1}) {{ return 1; }
)",
                 PrototypeParams, ProgramParams)
      .str();
}

FrontendOptions withProgPrototype() {
  FrontendOptions Opts = withProjectIncludes();
  Opts.Prototype = "prog_t";
  return Opts;
}

TEST_F(FrontendTest, ProgramDifferingInPointeeAndSignednessOnlyIsRefused) {
  ErrorResult Result = compileError(
      "filters.c",
      filterFile("struct pkt *p, long n", "struct sock *s, unsigned long n"),
      withProgPrototype());
  EXPECT_THAT(Result, Failed(HasSubstr(
                          "filters.c:6: program 'filter' has type 'int "
                          "(struct sock *, unsigned long)', not the prototype "
                          "'prog_t' ('int (struct pkt *, long)')")));
  EXPECT_THAT(Result, Failed(Not(HasSubstr("'pass'"))));
}

TEST_F(FrontendTest, ProgramDifferingInParameterPointeeOnlyIsRefused) {
  EXPECT_THAT(
      compileError(
          "filters.c",
          filterFile("struct pkt *p, long n", "struct sock *s, long n"),
          withProgPrototype()),
      Failed(HasSubstr("filters.c:6: program 'filter' has type 'int (struct "
                       "sock *, long)', not the prototype 'prog_t' ('int "
                       "(struct pkt *, long)')")));
}

TEST_F(FrontendTest, ProgramDifferingInParameterSignednessOnlyIsRefused) {
  EXPECT_THAT(
      compileError(
          "filters.c",
          filterFile("struct pkt *p, long n", "struct pkt *p, unsigned long n"),
          withProgPrototype()),
      Failed(HasSubstr("filters.c:6: program 'filter' has type 'int (struct "
                       "pkt *, unsigned long)', not the prototype 'prog_t' "
                       "('int (struct pkt *, long)')")));
}

TEST_F(FrontendTest, ProgramWithIntForALongParameterIsRefused) {
  EXPECT_THAT(
      compileError("filters.c",
                   filterFile("struct pkt *p, long n", "struct pkt *p, int n"),
                   withProgPrototype()),
      Failed(HasSubstr("filters.c:6: program 'filter' has type 'int (struct "
                       "pkt *, int)', not the prototype 'prog_t' ('int "
                       "(struct pkt *, long)')")));
}

TEST_F(FrontendTest, ProgramWithShortForAnIntParameterIsRefused) {
  EXPECT_THAT(
      compileError("filters.c",
                   filterFile("struct pkt *p, int n", "struct pkt *p, short n"),
                   withProgPrototype()),
      Failed(HasSubstr("filters.c:6: program 'filter' has type 'int (struct "
                       "pkt *, short)', not the prototype 'prog_t' ('int "
                       "(struct pkt *, int)')")));
}

TEST_F(FrontendTest, AnnotatedProgramsDifferingOnlyInParameterTypesAreRefused) {
  // Without a prototype the first program's type is the reference.
  ErrorResult Result =
      compileError("mixed.c", R"(#include "dispatch-gen/program.h"
struct pkt;
struct sock;
DISPATCHGEN_PROGRAM int first(struct pkt *p, long n) { return 0; }
DISPATCHGEN_PROGRAM int pointee(struct sock *s, long n) { return 1; }
DISPATCHGEN_PROGRAM int sign(struct pkt *p, unsigned long n) { return 2; }
DISPATCHGEN_PROGRAM int narrower(struct pkt *p, int n) { return 3; }
DISPATCHGEN_PROGRAM int narrowest(struct pkt *p, short n) { return 4; }
DISPATCHGEN_PROGRAM int same(struct pkt *q, long m) { return 5; }
)",
                   withProjectIncludes());
  const char *Reference = "not 'int (struct pkt *, long)' of program 'first' "
                          "(";
  EXPECT_THAT(Result, Failed(HasSubstr(
                          "mixed.c:5: program 'pointee' has type 'int (struct "
                          "sock *, long)', " +
                          std::string(Reference))));
  EXPECT_THAT(Result, Failed(HasSubstr(
                          "mixed.c:6: program 'sign' has type 'int (struct "
                          "pkt *, unsigned long)', " +
                          std::string(Reference))));
  EXPECT_THAT(Result,
              Failed(HasSubstr("mixed.c:7: program 'narrower' has type 'int "
                               "(struct pkt *, int)', " +
                               std::string(Reference))));
  EXPECT_THAT(Result,
              Failed(HasSubstr("mixed.c:8: program 'narrowest' has type 'int "
                               "(struct pkt *, short)', " +
                               std::string(Reference))));
  // Parameter names are not part of the type.
  EXPECT_THAT(Result, Failed(Not(HasSubstr("'same'"))));
}

TEST_F(FrontendTest, AnnotatedProgramWithoutPrototypeIsRefused) {
  FrontendOptions Opts = withProjectIncludes();
  Opts.ClangArgs.push_back("-std=c17"); // C23 reads `()` as `(void)`
  EXPECT_THAT(compileError("knr.c", R"(#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM int knr() { return 1; }
)",
                           Opts),
              Failed(HasSubstr("knr.c:2: program 'knr' has no prototype "
                               "('int ()'); declare its parameters")));
}

TEST_F(FrontendTest, InlineOnlyProgramIsAnError) {
  // A C99 `inline` definition has no external definition: Clang emits no
  // code a dispatcher could call.
  EXPECT_THAT(compileError("inl.c", R"(#include "dispatch-gen/program.h"
DISPATCHGEN_PROGRAM inline int twice(int x) { return 2 * x; }
)",
                           withProjectIncludes()),
              Failed(HasSubstr("inl.c:2: program 'twice' is an inline "
                               "definition that Clang emits no code for")));
}

TEST_F(FrontendTest, UndeclaredPrototypeIsAnError) {
  EXPECT_THAT(compileError("x.c", "int f(int x) { return x; }\n",
                           withPrototype("xdp_prog_t")),
              Failed(HasSubstr("prototype 'xdp_prog_t' is not a typedef "
                               "declared in '")));
}

TEST_F(FrontendTest, PrototypeThatIsNotAFunctionTypeIsAnError) {
  EXPECT_THAT(compileError("x.c", "typedef int *handle_t;\n",
                           withPrototype("handle_t")),
              Failed(HasSubstr("prototype 'handle_t' is 'int *', not a "
                               "function type or a pointer to one")));
}

//===----------------------------------------------------------------------===//
// Compiling
//===----------------------------------------------------------------------===//

TEST_F(FrontendTest, MalformedCIsAnErrorAndClangsDiagnosticsGoToTheStream) {
  ErrorResult Result = compileError("broken.c", R"(int f(int x) {
  return x +;
}
int g(void) { return undeclared; }
)");
  EXPECT_THAT(Result, Failed(HasSubstr("cannot compile '")));
  EXPECT_THAT(Result, Failed(HasSubstr("broken.c': 2 errors")));
  EXPECT_THAT(Diagnostics, HasSubstr("broken.c:2:")); // file:line:col
  EXPECT_THAT(Diagnostics, HasSubstr("error: expected expression"));
  EXPECT_THAT(Diagnostics, HasSubstr("error: use of undeclared identifier "
                                     "'undeclared'"));
  EXPECT_THAT(Diagnostics, HasSubstr("2 errors generated."));
  // No terminal, no colours.
  EXPECT_THAT(Diagnostics, Not(HasSubstr("\x1b[")));
}

TEST_F(FrontendTest, WarningsArePrintedAndDoNotFail) {
  FrontendOptions Opts;
  Opts.ClangArgs = {"-Wall"};
  CompiledUnit Unit =
      compileOK("warn.c", "int f(void) { int unused; return 1; }\n", Opts);
  EXPECT_TRUE(Unit.M);
  EXPECT_THAT(Diagnostics, HasSubstr("warning: unused variable 'unused'"));
}

TEST_F(FrontendTest, MissingFileIsAnError) {
  EXPECT_THAT(takeError(compile((Dir + "/missing.c").str())),
              Failed(HasSubstr("cannot open '")));
  EXPECT_THAT(takeError(compile((Dir + "/missing.c").str())),
              Failed(HasSubstr("missing.c': No such file or directory")));
}

TEST_F(FrontendTest, UnknownCompilerFlagIsAnError) {
  FrontendOptions Opts;
  Opts.ClangArgs = {"-fno-such-flag"};
  EXPECT_THAT(compileError("x.c", "int f(void) { return 1; }\n", Opts),
              Failed(HasSubstr("x.c': 1 error")));
  EXPECT_THAT(Diagnostics, HasSubstr("error: unknown argument"));
}

TEST_F(FrontendTest, MllvmFlagsAreRefused) {
  FrontendOptions Opts;
  Opts.ClangArgs = {"-mllvm", "-inline-threshold=1000"};
  EXPECT_THAT(compileError("x.c", "int f(void) { return 1; }\n", Opts),
              Failed(HasSubstr("-mllvm options would change process-wide "
                               "LLVM settings")));
}

TEST_F(FrontendTest, OptimiserWarningsGoToTheStream) {
  // The loop carries a dependence, so the vectorizer cannot honour the
  // pragma and says so, as clang -O2 does.
  CompiledUnit Unit = compileOK("vec.c", R"(void f(int *a, int n) {
#pragma clang loop vectorize(enable) interleave(disable)
  for (int i = 1; i < n; ++i) a[i] = a[i - 1] * 3;
}
)");
  EXPECT_TRUE(Unit.M);
  EXPECT_THAT(Diagnostics, HasSubstr("vec.c: warning: loop not vectorized"));
}

TEST_F(FrontendTest, ConcurrentCompilationsWithOwnContextsSucceed) {
  std::string Path = writeFile("conc.c", R"(typedef int op_t(int);
static int inc(int x) { return x + 1; }
static int dec(int x) { return x - 1; }
)");
  constexpr unsigned NumThreads = 4;
  std::vector<std::string> Results(NumThreads);
  std::vector<std::thread> Threads;
  for (unsigned I = 0; I < NumThreads; ++I)
    Threads.emplace_back([&, I] {
      LLVMContext ThreadCtx;
      std::string ThreadDiags;
      raw_string_ostream OS(ThreadDiags);
      FrontendOptions Opts = withPrototype("op_t");
      Opts.Diagnostics = &OS;
      for (unsigned Round = 0; Round < 5; ++Round) {
        Expected<CompiledUnit> Unit = compileC(Path, Opts, ThreadCtx);
        if (!Unit) {
          Results[I] = toString(Unit.takeError());
          return;
        }
        Results[I] = formatv("{0} programs", Unit->Programs.size());
      }
    });
  for (std::thread &T : Threads)
    T.join();
  for (const std::string &R : Results)
    EXPECT_EQ(R, "2 programs");
}

TEST_F(FrontendTest, BuiltinHeadersAreFound) {
  // stddef.h, stdint.h, stdbool.h, stdarg.h come from Clang's resource
  // directory, not from /usr/include.
  CompiledUnit Unit = compileOK("builtins.c", R"(#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
struct s { int a, b; };
size_t f(uint32_t x, bool b, ...) {
  va_list ap;
  va_start(ap, b);
  va_end(ap);
  return offsetof(struct s, b) + x + b;
}
)");
  EXPECT_TRUE(Unit.M->getFunction("f"));
}

TEST_F(FrontendTest, DefineAndIncludeFlagsTakeEffect) {
  writeFile("include/answer.h", "#define ANSWER_BASE 40\n");
  FrontendOptions Opts = withPrototype("fn_t");
  Opts.ClangArgs = {"-I", (Dir + "/include").str(), "-DANSWER_DELTA=2",
                    "-std=c11"};
  CompiledUnit Unit = compileOK("answer.c", R"(#include "answer.h"
typedef int fn_t(void);
int answer(void) { return ANSWER_BASE + ANSWER_DELTA; }
#if __STDC_VERSION__ != 201112L
#error "-std=c11 did not take effect"
#endif
)",
                                Opts);
  std::vector<std::unique_ptr<Module>> Modules;
  Modules.push_back(std::move(Unit.M));
  auto J = jit(std::move(Modules));
  ASSERT_THAT(takeError(J), Succeeded());
  auto Answer = lookup<int()>(**J, "answer");
  ASSERT_THAT(takeError(Answer), Succeeded());
  EXPECT_EQ((*Answer)(), 42);
}

TEST_F(FrontendTest, OptimisesAtO2UnlessFlagsSayOtherwise) {
  const char *Text = R"(int sum(int n) {
  int s = 0;
  for (int i = 0; i < 10; ++i) s += i;
  return s + n;
}
)";
  CompiledUnit O2 = compileOK("sum.c", Text);
  Function *F = O2.M->getFunction("sum");
  ASSERT_TRUE(F);
  EXPECT_FALSE(F->hasFnAttribute(Attribute::OptimizeNone));
  // The loop is folded to 45.
  EXPECT_EQ(F->size(), 1u);

  FrontendOptions O0Opts;
  O0Opts.ClangArgs = {"-O0"};
  CompiledUnit O0 = compileOK("sum0.c", Text, O0Opts);
  EXPECT_TRUE(
      O0.M->getFunction("sum")->hasFnAttribute(Attribute::OptimizeNone));
}

//===----------------------------------------------------------------------===//
// Signatures: Clang's ABI lowering (x86-64 System V)
//===----------------------------------------------------------------------===//

class FrontendLoweringTest : public FrontendTest {
protected:
  void SetUp() override {
    if (!isX86_64Host())
      GTEST_SKIP() << "the expected lowerings are x86-64 System V's";
    FrontendTest::SetUp();
  }

  /// The signature of prototype `proto_t`, declared by Decls.
  std::optional<DerivedSignature> lower(StringRef Decls) {
    CompiledUnit Unit = compileOK("sig.c", Decls, withPrototype("proto_t"));
    return std::move(Unit.Signature);
  }
};

TEST_F(FrontendLoweringTest, XdpPrototypeIsI32OfTwoPointers) {
  auto Sig = lower("typedef unsigned int proto_t(const void *, const void *);");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i32 (ptr, ptr)");
  EXPECT_EQ(Sig->ReturnExtension, ArgExtension::None);
  EXPECT_THAT(Sig->ParamExtensions,
              ElementsAre(ArgExtension::None, ArgExtension::None));
  // The IR builder's parser reads the text back to the same type.
  auto Parsed = parseSignature(Sig->Text, *Ctx);
  ASSERT_THAT(takeError(Parsed), Succeeded());
  EXPECT_EQ(*Parsed, Sig->Type);
}

TEST_F(FrontendLoweringTest, BoolIsZeroExtendedI1) {
  auto Sig = lower("typedef _Bool proto_t(_Bool, void *);");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i1 (i1, ptr)");
  EXPECT_EQ(Sig->ReturnExtension, ArgExtension::ZeroExt);
  EXPECT_THAT(Sig->ParamExtensions,
              ElementsAre(ArgExtension::ZeroExt, ArgExtension::None));
  AttributeList Attrs = Sig->getAttributes(*Ctx);
  EXPECT_TRUE(Attrs.hasRetAttr(Attribute::ZExt));
  EXPECT_TRUE(Attrs.hasParamAttr(0, Attribute::ZExt));
  EXPECT_FALSE(Attrs.hasParamAttr(1, Attribute::ZExt));
}

TEST_F(FrontendLoweringTest, EnumIsPlainI32) {
  auto Sig = lower(R"(enum verdict { V_DROP, V_PASS };
enum sign { S_NEG = -1, S_POS = 1 };
typedef enum verdict proto_t(enum sign, void *);)");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i32 (i32, ptr)");
  EXPECT_EQ(Sig->ReturnExtension, ArgExtension::None);
  EXPECT_THAT(Sig->ParamExtensions,
              ElementsAre(ArgExtension::None, ArgExtension::None));
}

TEST_F(FrontendLoweringTest, ShortAndCharAreExtendedBySignedness) {
  auto Sig = lower("typedef short proto_t(short, char, unsigned char, "
                   "signed char, unsigned short);");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i16 (i16, i8, i8, i8, i16)");
  EXPECT_EQ(Sig->ReturnExtension, ArgExtension::SignExt);
  EXPECT_THAT(Sig->ParamExtensions,
              ElementsAre(ArgExtension::SignExt, ArgExtension::SignExt,
                          ArgExtension::ZeroExt, ArgExtension::SignExt,
                          ArgExtension::ZeroExt));
}

TEST_F(FrontendLoweringTest, SmallStructByValueIsOneI64) {
  auto Sig = lower(R"(struct pair { int a, b; };
typedef struct pair proto_t(struct pair, int);)");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i64 (i64, i32)");
}

TEST_F(FrontendLoweringTest, TwoEightbyteStructIsFlattenedIntoTwoRegisters) {
  auto Sig = lower(R"(struct mixed { double d; int i; };
struct wide { long a, b; };
typedef long proto_t(struct mixed, struct wide);)");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i64 (double, i32, i64, i64)");
  EXPECT_THAT(Sig->ParamExtensions,
              ElementsAre(ArgExtension::None, ArgExtension::None,
                          ArgExtension::None, ArgExtension::None));
}

TEST_F(FrontendLoweringTest, ExtensionsFollowFlattenedParameters) {
  auto Sig = lower(R"(struct wide { long a, b; };
typedef int proto_t(struct wide, _Bool);)");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i32 (i64, i64, i1)");
  EXPECT_THAT(Sig->ParamExtensions,
              ElementsAre(ArgExtension::None, ArgExtension::None,
                          ArgExtension::ZeroExt));
}

TEST_F(FrontendLoweringTest, EmptyStructParameterDisappears) {
  auto Sig = lower(R"(struct empty {};
typedef int proto_t(struct empty, int);)");
  ASSERT_TRUE(Sig);
  EXPECT_EQ(Sig->Text, "i32 (i32)");
}

TEST_F(FrontendLoweringTest, BigStructByValueIsRefused) {
  EXPECT_THAT(
      compileError("sig.c", R"(struct big { long a, b, c; };
typedef long proto_t(int, struct big);)",
                   withPrototype("proto_t")),
      Failed(HasSubstr("prototype 'proto_t' passes parameter 2 ('struct big') "
                       "in memory (byval); dispatchers forward registers "
                       "only: pass a pointer")));
}

TEST_F(FrontendLoweringTest, BigStructResultIsRefused) {
  EXPECT_THAT(
      compileError("sig.c", R"(struct big { long a, b, c; };
typedef struct big proto_t(int);)",
                   withPrototype("proto_t")),
      Failed(HasSubstr("prototype 'proto_t' returns 'struct big' in memory "
                       "(sret)")));
}

TEST_F(FrontendLoweringTest, VariadicPrototypeIsRefused) {
  EXPECT_THAT(compileError("sig.c", "typedef int proto_t(int, ...);",
                           withPrototype("proto_t")),
              Failed(HasSubstr("prototype 'proto_t' is variadic ('int (int, "
                               "...)'); dispatchers cannot forward variable "
                               "arguments")));
}

TEST_F(FrontendLoweringTest, OtherCallingConventionIsRefused) {
  EXPECT_THAT(compileError("sig.c",
                           "typedef int __attribute__((ms_abi)) proto_t(int);",
                           withPrototype("proto_t")),
              Failed(HasSubstr("prototype 'proto_t' uses the 'ms_abi' calling "
                               "convention")));
}

TEST_F(FrontendLoweringTest, AnnotatedProgramRefusalNamesTheProgram) {
  EXPECT_THAT(
      compileError("big.c", R"(#include "dispatch-gen/program.h"
struct big { long a, b, c; };
DISPATCHGEN_PROGRAM long f(int x, struct big b) { return b.a + x; }
)",
                   withProjectIncludes()),
      Failed(HasSubstr("big.c:3: program 'f' passes parameter 2 ('struct "
                       "big') in memory (byval)")));
}

TEST_F(FrontendLoweringTest, ProgramsAreEmittedWithTheDerivedSignature) {
  // compileC checks each emitted program against the signature; this is the
  // visible half: the attributes Clang put on the function.
  CompiledUnit Unit = compileOK("flags.c", R"(
typedef _Bool proto_t(short, void *);
_Bool f(short s, void *p) { return s > 0 && p; }
)",
                                withPrototype("proto_t"));
  Function *F = Unit.M->getFunction("f");
  ASSERT_TRUE(F);
  EXPECT_EQ(F->getFunctionType(), Unit.Signature->Type);
  EXPECT_TRUE(F->hasRetAttribute(Attribute::ZExt));
  EXPECT_TRUE(F->hasParamAttribute(0, Attribute::SExt));
}

//===----------------------------------------------------------------------===//
// Symbols
//===----------------------------------------------------------------------===//

TEST_F(FrontendTest, StaticProgramsBecomeExternalSymbolsCallableByName) {
  CompiledUnit Unit =
      compileOK("filters.c", XdpPrograms, withProjectIncludes());
  const FoundProgram &Pass = Unit.Programs[1];
  ASSERT_EQ(Pass.Name, "pass_all");
  EXPECT_THAT(Pass.Symbol, ::testing::StartsWith("pass_all.filters."));
  Function *F = Unit.M->getFunction(Pass.Symbol);
  ASSERT_TRUE(F);
  EXPECT_TRUE(F->hasExternalLinkage());
  EXPECT_TRUE(F->hasDefaultVisibility());

  std::string Symbol = Pass.Symbol;
  std::vector<std::unique_ptr<Module>> Modules;
  Modules.push_back(std::move(Unit.M));
  auto J = jit(std::move(Modules));
  ASSERT_THAT(takeError(J), Succeeded());
  using XdpFn = unsigned(const void *, const void *);
  auto PassAll = lookup<XdpFn>(**J, Symbol);
  ASSERT_THAT(takeError(PassAll), Succeeded());
  EXPECT_EQ((*PassAll)(nullptr, nullptr), 2u);
  auto Drop = lookup<XdpFn>(**J, "drop_tcp");
  ASSERT_THAT(takeError(Drop), Succeeded());
  int A, B;
  EXPECT_EQ((*Drop)(&A, &B), 1u);
}

TEST_F(FrontendTest, StaticsOfTwoFilesGetDistinctSymbols) {
  const char *Text = R"(typedef int op_t(int);
static int apply(int x) { return x + OFFSET; }
)";
  FrontendOptions Opts = withPrototype("op_t");
  Opts.ClangArgs = {"-DOFFSET=1"};
  CompiledUnit One = compileOK("a/ops.c", Text, Opts);
  Opts.ClangArgs = {"-DOFFSET=2"};
  CompiledUnit Two = compileOK("b/ops.c", Text, Opts);
  std::string SymOne = One.Programs.at(0).Symbol;
  std::string SymTwo = Two.Programs.at(0).Symbol;
  EXPECT_NE(SymOne, SymTwo);

  std::vector<std::unique_ptr<Module>> Modules;
  Modules.push_back(std::move(One.M));
  Modules.push_back(std::move(Two.M));
  auto J = jit(std::move(Modules));
  ASSERT_THAT(takeError(J), Succeeded());
  auto ApplyOne = lookup<int(int)>(**J, SymOne);
  auto ApplyTwo = lookup<int(int)>(**J, SymTwo);
  ASSERT_THAT(takeError(ApplyOne), Succeeded());
  ASSERT_THAT(takeError(ApplyTwo), Succeeded());
  EXPECT_EQ((*ApplyOne)(10), 11);
  EXPECT_EQ((*ApplyTwo)(10), 12);
}

TEST_F(FrontendTest, StaticSuffixOptionNamesExposedStatics) {
  FrontendOptions Opts = withPrototype("op_t");
  Opts.StaticSuffix = "unit7";
  CompiledUnit Unit = compileOK(
      "ops.c", "typedef int op_t(int);\nstatic int neg(int x) { return -x; }\n",
      Opts);
  EXPECT_EQ(Unit.Programs.at(0).Symbol, "neg.unit7");
  EXPECT_TRUE(Unit.M->getFunction("neg.unit7"));
}

TEST_F(FrontendTest, UnexposedStaticProgramsStayInternalAndIntact) {
  FrontendOptions Opts = withPrototype("op_t");
  Opts.ExposePrograms = false;
  CompiledUnit Unit = compileOK("ops.c", R"(typedef long op_t(long, long);
static long unused_sub(long a, long b) { return a - b; }
)",
                                Opts);
  const FoundProgram &P = Unit.Programs.at(0);
  EXPECT_EQ(P.Symbol, "unused_sub");
  Function *F = Unit.M->getFunction("unused_sub");
  // Unused and internal, yet neither deleted nor reshaped by -O2.
  ASSERT_TRUE(F);
  EXPECT_TRUE(F->hasInternalLinkage());
  EXPECT_EQ(F->getFunctionType(), Unit.Signature->Type);
  EXPECT_TRUE(Unit.M->getNamedGlobal("llvm.compiler.used"));

  // A dispatcher built into the same module reaches it directly.
  DispatcherSpec Spec;
  Spec.Name = "dispatch";
  Spec.Signature = Unit.Signature->Type;
  Spec.Targets = {{P.Symbol, std::nullopt, std::nullopt}};
  EXPECT_THAT(takeError(DispatchIRBuilder(*Unit.M).build(Spec)), Succeeded());
  EXPECT_FALSE(verifyModule(*Unit.M, &errs()));
}

} // namespace
