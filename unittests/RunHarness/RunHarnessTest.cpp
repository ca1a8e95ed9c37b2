//===- RunHarnessTest.cpp - Tests for the run harness ---------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Unit tests for RunHarness: whole runs over the C programs the lit tests of
// `dispatch-gen run` use (test/run/Inputs, examples/xdp), whose counts per
// program and verdict are checked exactly where the schedule is fixed, and
// the errors (never an exit) for bad options, a missing or mistyped hook,
// a missing entry, a failing setup, and phases called out of order.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/RunHarness.h"

#include "TestingSupport.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <string>

using namespace llvm;
using namespace dispatchgen;
using namespace dispatchgen::unittest;
using ::testing::HasSubstr;

namespace {

/// The live phase's verdict: every call counted once by its caller and by
/// the program it asked for, none misrouted, none after a release.
void expectEveryCallRouted(const RunReport &Report) {
  const LiveResult &Live = Report.Live;
  uint64_t Asked = 0;
  for (size_t I = 0; I < Live.Counts.size(); ++I) {
    EXPECT_EQ(Live.Counts[I].Asked, Live.Counts[I].Ran)
        << Report.Programs[I].Name;
    Asked += Live.Counts[I].Asked;
  }
  EXPECT_EQ(Asked, Live.Calls.Calls);
  EXPECT_EQ(Live.Misrouted, 0u);
  EXPECT_EQ(Live.RanAfterRelease, 0u);
  EXPECT_TRUE(Live.ok()) << Live.ImageError;
}

bool isX86_64Host() {
  return Triple(sys::getDefaultTargetTriple()).getArch() == Triple::x86_64;
}

std::string sourcePath(StringRef Rel) {
  SmallString<256> Path(DISPATCHGEN_TEST_SOURCE_DIR);
  sys::path::append(Path, Rel);
  return std::string(Path);
}

std::string input(StringRef Name) {
  return sourcePath(("test/run/Inputs/" + Name).str());
}

class RunHarnessTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (!isX86_64Host())
      GTEST_SKIP() << "the harness's programs run on x86-64 only";
    ASSERT_FALSE(sys::fs::createUniqueDirectory("dispatchgen-run", Dir));
  }
  void TearDown() override {
    if (!Dir.empty())
      sys::fs::remove_directories(Dir);
  }

  /// Small, quick options for Files; diagnostics are kept in Diagnostics.
  RunOptions options(std::vector<std::string> Files) {
    RunOptions Opts;
    Opts.Files = std::move(Files);
    Opts.Frontend.ClangArgs = {"-I" DISPATCHGEN_TEST_INCLUDE_DIR};
    Opts.Frontend.Diagnostics = &DiagOS;
    Opts.Threads = 2;
    Opts.CallsPerThread = 1000;
    Opts.SwapInterval = std::chrono::milliseconds(1);
    Opts.MinSwaps = 3;
    return Opts;
  }

  std::string writeFile(StringRef Name, StringRef Text) {
    SmallString<128> Path(Dir);
    sys::path::append(Path, Name);
    std::error_code EC;
    raw_fd_ostream OS(Path, EC);
    EXPECT_FALSE(EC) << EC.message();
    OS << Text;
    return std::string(Path);
  }

  SmallString<128> Dir;
  std::string Diagnostics;
  raw_string_ostream DiagOS{Diagnostics};
};

TEST_F(RunHarnessTest, RoundRobinCountsAreExactWithoutSwaps) {
  // No swap happens (the first is an hour away and none is required): each
  // thread calls the two programs in turn, 500 calls each.
  RunOptions Opts = options({input("two.c")});
  Opts.SwapInterval = std::chrono::hours(1);
  Opts.MinSwaps = 0;
  auto Report = runHarness(Opts);
  ASSERT_THAT(takeError(Report), Succeeded()) << Diagnostics;

  EXPECT_EQ(Report->Entry, "two_dispatch");
  EXPECT_EQ(Report->CType, "int (int)");
  EXPECT_EQ(Report->Signature, "i32 (i32)");
  ASSERT_EQ(Report->Programs.size(), 2u);
  EXPECT_EQ(Report->Programs[0].Name, "add_one");
  EXPECT_EQ(Report->Programs[1].Name, "add_two");
  EXPECT_THAT(Report->Programs[0].Where, HasSubstr("two.c:4"));
  EXPECT_NE(Report->Programs[0].Address, 0u);

  // two.c has no dispatchgen_expect: no plain baseline.
  EXPECT_FALSE(Report->Plain);
  EXPECT_EQ(Report->Fallback.Calls, 2000u);
  EXPECT_EQ(Report->Fallback.Threads, 2u);
  EXPECT_GT(Report->Fallback.Seconds, 0);
  EXPECT_EQ(Report->Direct.Calls, 2000u);
  EXPECT_EQ(Report->Registered.Programs, 2u);
  EXPECT_EQ(Report->Registered.DirectTargets, 2u);

  const LiveResult &Live = Report->Live;
  EXPECT_EQ(Live.swaps(), 0u);
  EXPECT_EQ(Live.Calls.Calls, 2000u);
  ASSERT_EQ(Live.Counts.size(), 2u);
  for (const ProgramCount &C : Live.Counts) {
    EXPECT_EQ(C.Asked, 1000u);
    EXPECT_EQ(C.Ran, 1000u);
  }
  EXPECT_EQ(Live.Misrouted, 0u);
  EXPECT_EQ(Live.RanAfterRelease, 0u);
  EXPECT_EQ(Live.ImageError, "");
  EXPECT_TRUE(Live.ok());
}

TEST_F(RunHarnessTest, XdpFiltersAreRoutedWhileSwapped) {
  RunOptions Opts = options({sourcePath("examples/xdp/filters.c")});
  Opts.CallsPerThread = 5000;
  auto Report = runHarness(Opts);
  ASSERT_THAT(takeError(Report), Succeeded()) << Diagnostics;

  EXPECT_EQ(Report->Entry, "xdp_dispatch");
  EXPECT_EQ(Report->Signature, "i32 (ptr, ptr)");
  ASSERT_EQ(Report->Programs.size(), 14u);
  EXPECT_EQ(Report->Programs.front().Name, "pass_all");
  EXPECT_EQ(Report->Programs.back().Name, "vlan_filter");
  // filters.c defines dispatchgen_expect: the plain baseline runs.
  ASSERT_TRUE(Report->Plain);
  EXPECT_EQ(Report->Plain->Calls, 10000u);
  EXPECT_EQ(Report->Registered.DirectTargets, 14u);
  EXPECT_EQ(Report->Registered.FallbackTargets, 0u);

  const LiveResult &Live = Report->Live;
  EXPECT_GE(Live.swaps(), 3u);
  EXPECT_EQ(Live.GraceUs.size(), Live.swaps());
  EXPECT_GE(Live.Calls.Calls, 10000u);
  // One registration and one change per swap.
  EXPECT_EQ(Live.Status.Generation, 1 + Live.swaps());
  // One program is out after each swap.
  EXPECT_EQ(Live.Status.Programs, 13u);
  // Every call is counted once, by its caller and by the program it asked
  // for (a program may get none, if it was out while the callers ran).
  ASSERT_EQ(Live.Counts.size(), 14u);
  expectEveryCallRouted(*Report);
  EXPECT_GE(Live.maxUpdateMs(), Live.medianUpdateMs());
}

TEST_F(RunHarnessTest, AsyncReclaimWithoutRetpoline) {
  RunOptions Opts = options({sourcePath("examples/xdp/filters.c")});
  Opts.AsyncReclaim = true;
  Opts.RetpolineFallback = false;
  auto Report = runHarness(Opts);
  ASSERT_THAT(takeError(Report), Succeeded()) << Diagnostics;
  EXPECT_GE(Report->Live.swaps(), 3u);
  EXPECT_TRUE(Report->Live.ok());
}

TEST_F(RunHarnessTest, AdaptiveRunIsRoutedAndLearns) {
  // The background learner opens windows from link() on; the live phase
  // goes on until one closed in it. Every call still reaches its program,
  // promoted or registered, and none runs after its release.
  RunOptions Opts = options({sourcePath("examples/xdp/filters.c")});
  Opts.Adaptive = true;
  Opts.CallsPerThread = 5000;
  auto Report = runHarness(Opts);
  ASSERT_THAT(takeError(Report), Succeeded()) << Diagnostics;
  const LiveResult &Live = Report->Live;
  EXPECT_GE(Live.swaps(), 3u);
  EXPECT_GE(Live.LearningWindows, 1u);
  EXPECT_GE(Live.Status.LearningWindows, Live.LearningWindows);
  EXPECT_EQ(Live.Status.LearningError, "");
  EXPECT_FALSE(Live.Status.Layout.empty());
  expectEveryCallRouted(*Report);
}

TEST_F(RunHarnessTest, MissingDriveIsAnError) {
  auto H = RunHarness::compile(options({input("nodrive.c")}));
  ASSERT_THAT(takeError(H), Succeeded()) << Diagnostics;
  EXPECT_EQ((*H)->entry(), "dispatch");
  EXPECT_THAT(takeError((*H)->link()),
              Failed(HasSubstr("no file defines 'unsigned long "
                               "dispatchgen_drive(unsigned long iteration, "
                               "PROG prog)'")));
  // The whole run fails the same way, and returns.
  EXPECT_THAT(takeError(runHarness(options({input("nodrive.c")}))),
              Failed(HasSubstr("dispatchgen_drive")));
}

TEST_F(RunHarnessTest, BadOptionsAreErrors) {
  auto Expect = [&](RunOptions Opts, StringRef Message) {
    EXPECT_THAT(takeError(RunHarness::compile(std::move(Opts))),
                Failed(HasSubstr(Message.str())));
  };
  RunOptions Opts = options({input("two.c")});
  Opts.Threads = 0;
  Expect(Opts, "a run needs at least 1 thread, 1 call per thread and a swap "
               "interval of 1 ms; got 0 threads, 1000 calls per thread, 1 ms");
  Opts = options({input("two.c")});
  Opts.CallsPerThread = 0;
  Expect(Opts, "got 2 threads, 0 calls per thread");
  Opts = options({input("two.c")});
  Opts.SwapInterval = std::chrono::milliseconds(0);
  Expect(Opts, "0 ms");
  Expect(options({}), "no C file given");
  Expect(options({sourcePath("test/run/Inputs/missing.c")}),
         "cannot open '" + sourcePath("test/run/Inputs/missing.c") + "'");
}

TEST_F(RunHarnessTest, EntryErrors) {
  EXPECT_THAT(
      takeError(RunHarness::compile(options({input("noentry.c")}))),
      Failed(HasSubstr("no file declares a dispatcher entry of type i32 (i32, "
                       "ptr)")));
  RunOptions Opts = options({input("nodrive.c")});
  Opts.Entry = "other";
  EXPECT_THAT(takeError(RunHarness::compile(Opts)),
              Failed(HasSubstr("no file declares the entry 'other' with the "
                               "dispatcher's type i32 (i32, ptr)")));
  std::string Two = writeFile("two-entries.c", R"(
#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int first(int x, prog_t p);
int second(int x, prog_t p);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  return first((int)i, p) + second((int)i, p);
}
)");
  EXPECT_THAT(takeError(RunHarness::compile(options({Two}))),
              Failed(HasSubstr("several entries could be the dispatcher "
                               "(first, second)")));
  Opts = options({Two});
  Opts.Entry = "second";
  auto H = RunHarness::compile(Opts);
  ASSERT_THAT(takeError(H), Succeeded()) << Diagnostics;
  EXPECT_EQ((*H)->entry(), "second");
}

TEST_F(RunHarnessTest, HooksOfAnotherTypeAreErrors) {
  EXPECT_THAT(takeError(RunHarness::compile(options({input("datadrive.c")}))),
              Failed(HasSubstr("datadrive.c defines 'dispatchgen_drive' as "
                               "something that is not a function")));
  EXPECT_THAT(takeError(RunHarness::compile(options({input("wrongdrive.c")}))),
              Failed(HasSubstr("wrongdrive.c defines 'dispatchgen_drive' as a "
                               "function of another type")));
}

TEST_F(RunHarnessTest, FailingSetupIsAnError) {
  std::string File = writeFile("setup.c", R"(
#include "dispatch-gen/program.h"
typedef int (*prog_t)(int);
int setup_dispatch(int x, prog_t p);
DISPATCHGEN_PROGRAM int inc(int x) { return x + 1; }
int dispatchgen_setup(void) { return 3; }
unsigned long dispatchgen_drive(unsigned long i, prog_t p) {
  return (unsigned long)setup_dispatch((int)i, p);
}
)");
  auto H = RunHarness::compile(options({File}));
  ASSERT_THAT(takeError(H), Succeeded()) << Diagnostics;
  EXPECT_THAT(takeError((*H)->link()),
              Failed(HasSubstr("dispatchgen_setup() returned 3")));
  EXPECT_STREQ(getRunPhase(), "running dispatchgen_setup");
}

TEST_F(RunHarnessTest, PhasesRunInOrder) {
  auto HOrErr = RunHarness::compile(options({input("two.c")}));
  ASSERT_THAT(takeError(HOrErr), Succeeded()) << Diagnostics;
  RunHarness &H = **HOrErr;
  EXPECT_STREQ(getRunPhase(), "compiling");
  // The main thread calls no program.
  EXPECT_EQ(getCallingProgram(), nullptr);
  EXPECT_THAT(takeError(H.callFallback()),
              Failed(HasSubstr("RunHarness::callFallback() runs after link(), "
                               "but the run is at compile()")));
  EXPECT_THAT(takeError(H.registerAll()), Failed(HasSubstr("after link()")));

  ASSERT_THAT(takeError(H.link()), Succeeded());
  EXPECT_STREQ(getRunPhase(), "linking the programs");
  EXPECT_THAT(takeError(H.link()), Failed(HasSubstr("after compile()")));
  EXPECT_THAT(takeError(H.callDirect()),
              Failed(HasSubstr("after registerAll(), but the run is at "
                               "link()")));
  EXPECT_THAT(takeError(H.swapLive()), Failed(HasSubstr("registerAll()")));
  std::string Dump;
  raw_string_ostream DumpOS(Dump);
  EXPECT_THAT(takeError(H.dumpImage(DumpOS)),
              Failed(HasSubstr("after registerAll()")));

  auto Fallback = H.callFallback();
  ASSERT_THAT(takeError(Fallback), Succeeded());
  EXPECT_EQ(Fallback->Calls, 2000u);
  EXPECT_STREQ(getRunPhase(),
               "calling through the entry with no program registered");

  auto Status = H.registerAll();
  ASSERT_THAT(takeError(Status), Succeeded());
  EXPECT_EQ(Status->Programs, 2u);
  ASSERT_THAT(takeError(H.dumpImage(DumpOS)), Succeeded());
  EXPECT_THAT(Dump, HasSubstr("add_one"));
  EXPECT_THAT(takeError(H.registerAll()), Failed(HasSubstr("after link()")));

  // The direct calls may be left out.
  auto Live = H.swapLive();
  ASSERT_THAT(takeError(Live), Succeeded());
  EXPECT_TRUE(Live->ok());
  EXPECT_STREQ(getRunPhase(), "calling during the live swap");
  EXPECT_THAT(takeError(H.swapLive()),
              Failed(HasSubstr("but the run is at swapLive()")));
}

} // namespace
