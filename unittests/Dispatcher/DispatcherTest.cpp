//===- DispatcherTest.cpp - Tests of the live dispatcher ------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Programs are functions of this executable (progN below), of a shared
// library (DispatcherTestPrograms), or JIT-compiled by an embedding LLJIT.
// Every program returns a value that names it, so a misrouted call shows.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Trampoline.h"

#include "SharedPrograms.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <atomic>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace dispatchgen;
using namespace llvm;

// GDB's JIT interface, as libLLVM exports it.
extern "C" struct {
  uint32_t Version;
  uint32_t ActionFlag;
  void *RelevantEntry;
  void *FirstEntry;
} __jit_debug_descriptor;

namespace {

using Prog = int (*)(int);
using EntryFn = int(int, Prog);

constexpr int NumProgs = 8;
/// Registrations of each program not yet released: raised before an add,
/// lowered by the release callback. A release may arrive after the same
/// program was added again (asynchronous reclamation), so this counts
/// rather than flags. A program that runs while it is 0 runs after its
/// release.
std::atomic<int> Outstanding[NumProgs];
std::atomic<uint64_t> RunAfterRelease{0};
std::atomic<bool> CheckReleases{false};

template <int N> __attribute__((noinline)) int prog(int X) {
  if (CheckReleases && Outstanding[N].load(std::memory_order_relaxed) <= 0)
    RunAfterRelease.fetch_add(1, std::memory_order_relaxed);
  return N * 1000 + X;
}

const Prog Progs[NumProgs] = {prog<0>, prog<1>, prog<2>, prog<3>,
                              prog<4>, prog<5>, prog<6>, prog<7>};

uint64_t addr(Prog P) { return reinterpret_cast<uint64_t>(P); }

int indexOf(uint64_t Address) {
  for (int I = 0; I < NumProgs; ++I)
    if (addr(Progs[I]) == Address)
      return I;
  return -1;
}

/// The lowering the running test uses (the parameter of DispatcherTest).
ImageLowering CurrentLowering = ImageLowering::Auto;

DispatcherConfig hostConfig() {
  DispatcherConfig C;
  C.Lowering = CurrentLowering;
  C.Name = "test_dispatch";
  C.Signature = "i32 (i32)";
  C.Near = addr(Progs[0]); // the programs live in this executable
  C.VerifyImages = true;
  return C;
}

std::unique_ptr<Dispatcher> makeDispatcher(DispatcherConfig C) {
  auto D = Dispatcher::create(std::move(C));
  if (!D) {
    ADD_FAILURE() << toString(D.takeError());
    return nullptr;
  }
  return std::move(*D);
}

void expectOk(Error E) { EXPECT_FALSE(!!E) << toString(std::move(E)); }

std::string errorText(Error E) { return toString(std::move(E)); }

/// Every thread that calls through a dispatcher is an RCU reader. Each
/// test runs with images laid out directly and with images compiled.
class DispatcherTest : public ::testing::TestWithParam<ImageLowering> {
protected:
  void SetUp() override {
    CurrentLowering = GetParam();
    for (auto &R : Outstanding)
      R = 0;
    RunAfterRelease = 0;
    CheckReleases = false;
  }
  RCUReaderThread Reader{RCUFlavor::Memb};
};

int callThrough(const Dispatcher &D, int X, Prog P) {
  RCUReadGuard Guard;
  return D.entryAs<EntryFn>()(X, P);
}

TEST_P(DispatcherTest, EmptyDispatcherIsThePlainIndirectCall) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  DispatcherStatus S = D->status();
  EXPECT_TRUE(S.Supported);
  EXPECT_EQ(S.Programs, 0u);
  EXPECT_NE(S.ImageAddress, 0u) << "a JIT entry starts on the empty image";
  EXPECT_EQ(callThrough(*D, 7, Progs[3]), 3007);
  expectOk(D->verify());
}

TEST_P(DispatcherTest, RegisteredProgramsAreReachedDirectly) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1]), "prog1"));
  expectOk(D->add(addr(Progs[2]), "prog2"));
  EXPECT_EQ(callThrough(*D, 5, Progs[1]), 1005);
  EXPECT_EQ(callThrough(*D, 5, Progs[2]), 2005);
  // An unregistered program takes the fallback and still runs.
  EXPECT_EQ(callThrough(*D, 5, Progs[6]), 6005);
  DispatcherStatus S = D->status();
  EXPECT_EQ(S.Programs, 2u);
  EXPECT_EQ(S.DirectTargets, 2u);
  EXPECT_EQ(S.FallbackTargets, 0u);
  EXPECT_EQ(S.Generation, 2u);
  EXPECT_EQ(S.LaidOutDirectly, GetParam() == ImageLowering::Auto);
  expectOk(D->verify());

  std::string Dump;
  raw_string_ostream OS(Dump);
  expectOk(D->dump(OS));
  EXPECT_NE(Dump.find("2 programs (2 direct"), std::string::npos) << Dump;
  EXPECT_NE(Dump.find("# -> prog1"), std::string::npos) << Dump;
  EXPECT_NE(Dump.find("# -> prog2"), std::string::npos) << Dump;
}

TEST_P(DispatcherTest, TheConfiguredCostModelChoosesTheWeightedLayout) {
  // Eight equally weighted programs: with the default model (compares
  // cheap) the layout scans them; with compares 160 times dearer the
  // model's choice is another, and either way the image is the layout
  // its model chose, in both lowerings, and routes every program.
  for (double Compare : {LayoutCostModel().Compare, 40.0}) {
    SCOPED_TRACE(Compare);
    DispatcherConfig C = hostConfig();
    C.CostModel = LayoutCostModel();
    C.CostModel->Compare = Compare;
    auto D = makeDispatcher(std::move(C));
    ASSERT_TRUE(D);
    std::vector<std::pair<uint64_t, uint64_t>> Weights;
    std::vector<LayoutCase> Cases;
    ProgramSet::Batch B;
    for (int I = 0; I < NumProgs; ++I) {
      B.add(addr(Progs[I]));
      Weights.push_back({addr(Progs[I]), 100});
      Cases.push_back({addr(Progs[I]), 100});
    }
    expectOk(D->apply(B));
    D->setWeights(Weights);
    expectOk(D->regenerate());
    LayoutCostModel Model;
    Model.Compare = Compare;
    DispatchLayout Expected = DispatchLayout::choose(Cases, {}, Model);
    DispatcherStatus S = D->status();
    EXPECT_EQ(S.Layout, Expected.shapeName());
    EXPECT_NEAR(S.PredictedCost, Expected.predictedCost(), 1e-9);
    if (Compare != LayoutCostModel().Compare)
      EXPECT_NE(Expected.shapeName(),
                DispatchLayout::choose(Cases).shapeName());
    for (int I = 0; I < NumProgs; ++I)
      EXPECT_EQ(callThrough(*D, 3, Progs[I]), I * 1000 + 3);
    expectOk(D->verify());
  }
}

TEST_P(DispatcherTest, RefcountOnlyChangesDoNotRegenerate) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  uint64_t Gen = D->status().Generation;
  expectOk(D->add(addr(Progs[1])));
  EXPECT_EQ(D->status().Generation, Gen);
  expectOk(D->remove(addr(Progs[1])));
  EXPECT_EQ(D->status().Generation, Gen);
  expectOk(D->remove(addr(Progs[1])));
  EXPECT_EQ(D->status().Generation, Gen + 1);
  EXPECT_EQ(D->status().Programs, 0u);
}

TEST_P(DispatcherTest, ReleaseComesOnceAfterTheLastReference) {
  std::vector<uint64_t> ReleasedNow;
  DispatcherConfig C = hostConfig();
  C.OnRelease = [&](const ProgramEntry &P) {
    ReleasedNow.push_back(P.Address);
  };
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  expectOk(D->add(addr(Progs[1])));
  expectOk(D->remove(addr(Progs[1])));
  EXPECT_TRUE(ReleasedNow.empty());
  expectOk(D->change(addr(Progs[1]), addr(Progs[2])));
  EXPECT_EQ(ReleasedNow, std::vector<uint64_t>{addr(Progs[1])});
  EXPECT_EQ(callThrough(*D, 1, Progs[2]), 2001);
  D.reset();
  // Destruction releases what is still registered.
  EXPECT_EQ(ReleasedNow,
            (std::vector<uint64_t>{addr(Progs[1]), addr(Progs[2])}));
}

TEST_P(DispatcherTest, ErrorsLeaveEverythingAsItWas) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  DispatcherStatus Before = D->status();
  EXPECT_NE(errorText(D->remove(addr(Progs[5]))).find("is not registered"),
            std::string::npos);
  EXPECT_NE(errorText(D->add(0)).find("null program"), std::string::npos);
  DispatcherStatus After = D->status();
  EXPECT_EQ(After.Generation, Before.Generation);
  EXPECT_EQ(After.ImageAddress, Before.ImageAddress);
  EXPECT_EQ(D->programs().size(), 1u);
}

TEST_P(DispatcherTest, FailedSingleOperationSaysWhatFailed) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  // One operation is no batch: its own error, not wrapped in batch wording.
  EXPECT_EQ(errorText(D->remove(addr(Progs[5]))),
            formatv("program {0:x} is not registered", addr(Progs[5])).str());
  // A batch of more still names the operation that failed.
  std::string Msg = errorText(
      D->apply(ProgramSet::Batch().add(addr(Progs[2])).remove(addr(Progs[5]))));
  EXPECT_NE(Msg.find("operation 2 of 2 in the batch failed"), std::string::npos)
      << Msg;
  EXPECT_EQ(D->programs().size(), 1u);
}

TEST_P(DispatcherTest, BatchRegeneratesOnce) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  ProgramSet::Batch B;
  for (int I = 0; I < NumProgs; ++I)
    B.add(addr(Progs[I]));
  expectOk(D->apply(B));
  EXPECT_EQ(D->status().Generation, 1u);
  EXPECT_EQ(D->status().DirectTargets, size_t(NumProgs));
  for (int I = 0; I < NumProgs; ++I)
    EXPECT_EQ(callThrough(*D, 1, Progs[I]), I * 1000 + 1);
  expectOk(D->verify());
}

/// Mappings of the code arena (memfds named "dispatch-gen"; a sanitizer's
/// allocator maps memory of its own), and open file descriptors.
size_t mappingCount() {
  std::ifstream Maps("/proc/self/maps");
  size_t N = 0;
  for (std::string L; std::getline(Maps, L);)
    N += L.find("dispatch-gen") != std::string::npos;
  return N;
}
size_t descriptorCount() {
  std::error_code EC;
  size_t N = 0;
  for (sys::fs::directory_iterator It("/proc/self/fd", EC), End;
       It != End && !EC; It.increment(EC))
    ++N;
  return N;
}

DispatcherConfig smallConfig(unsigned I) {
  DispatcherConfig C = hostConfig();
  C.Lowering = ImageLowering::Auto;
  C.Name = formatv("many{0}", I).str();
  C.Capacity = 4;
  C.VerifyImages = false;
  return C;
}

TEST(ManyDispatchersTest, ThousandsFitInOneProcessAndEachReachesItsPrograms) {
  // Each dispatcher used to reserve 64 MiB near the programs: about 28 fit
  // within reach, and how many depended on the run's address-space layout.
  constexpr unsigned Count = 3000;
  size_t MapsBefore = mappingCount();
  std::vector<std::unique_ptr<Dispatcher>> All;
  for (unsigned I = 0; I < Count; ++I) {
    auto D = Dispatcher::create(smallConfig(I));
    ASSERT_TRUE(!!D) << "dispatcher " << I << ": " << toString(D.takeError());
    ProgramSet::Batch B;
    for (unsigned P = 0; P < 4; ++P)
      B.add(addr(Progs[(I + P) % NumProgs]));
    ASSERT_FALSE(!!(*D)->apply(B));
    All.push_back(std::move(*D));
  }
  // Their code shares a few chunks of the arena.
  EXPECT_GT(mappingCount(), 0u);
  EXPECT_LE(mappingCount(), MapsBefore + 16);
  unsigned Wrong = 0, Indirect = 0, NotResident = 0;
  for (unsigned I = 0; I < Count; ++I) {
    DispatcherStatus S = All[I]->status();
    Indirect += S.DirectTargets != 4 || S.FallbackTargets != 0;
    NotResident += !S.Resident;
    for (unsigned P = 0; P < 5; ++P) {
      // P == 4: a program outside the set takes the fallback.
      unsigned K = (I + P) % NumProgs;
      Wrong += callThrough(*All[I], 5, Progs[K]) != int(K * 1000 + 5);
    }
  }
  EXPECT_EQ(Wrong, 0u);
  EXPECT_EQ(Indirect, 0u);
  // The resident area is sized for four programs: every image fits.
  EXPECT_EQ(NotResident, 0u);
  for (unsigned I = 0; I < Count; I += 97)
    expectOk(All[I]->verify());
}

TEST(ManyDispatchersTest, CreateDestroyCyclesKeepMappingsAndDescriptorsFlat) {
  auto Cycle = [](unsigned I) {
    auto D = Dispatcher::create(smallConfig(I));
    ASSERT_TRUE(!!D) << toString(D.takeError());
    ProgramSet::Batch B;
    for (unsigned P = 0; P < 4; ++P)
      B.add(addr(Progs[(I + P) % NumProgs]));
    ASSERT_FALSE(!!(*D)->apply(B));
    EXPECT_EQ(callThrough(**D, 1, Progs[I % NumProgs]),
              int(I % NumProgs * 1000 + 1));
  };
  for (unsigned I = 0; I < 100; ++I)
    Cycle(I);
  size_t Maps = mappingCount(), FDs = descriptorCount();
  for (unsigned I = 0; I < 5000; ++I)
    Cycle(I);
  EXPECT_GT(Maps, 0u);
  EXPECT_EQ(mappingCount(), Maps);
  EXPECT_EQ(descriptorCount(), FDs);
}

TEST(ManyDispatchersTest, ALateCallIntoADestroyedDispatcherFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto D = Dispatcher::create(smallConfig(0));
        if (!D || (*D)->add(addr(Progs[1])))
          std::_Exit(3);
        auto *Entry = (*D)->entryAs<int(int, Prog)>();
        D->reset();
        // The entry's memory now holds `hlt`: a privileged instruction.
        Entry(1, Progs[1]);
        std::_Exit(0);
      },
      [](int Status) {
        // Killed by SIGSEGV; under a sanitizer, its SEGV report's exit.
        return (WIFSIGNALED(Status) && WTERMSIG(Status) == SIGSEGV) ||
               (WIFEXITED(Status) && WEXITSTATUS(Status) != 0 &&
                WEXITSTATUS(Status) != 3);
      },
      "");
}

TEST_P(DispatcherTest, TenThousandUpdatesKeepMemoryFlat) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[0])));
  expectOk(D->add(addr(Progs[1])));
  uint64_t MaxLive = 0;
  std::set<uint64_t> ImagesSeen;
  for (int I = 0; I < 10000; ++I) {
    int From = 1 + I % 7, To = 1 + (I + 1) % 7;
    ASSERT_FALSE(!!D->change(addr(Progs[From]), addr(Progs[To])));
    DispatcherStatus S = D->status();
    MaxLive = std::max(MaxLive, S.LiveAllocations);
    ImagesSeen.insert(S.ImageAddress);
  }
  DispatcherStatus S = D->status();
  EXPECT_EQ(S.Generation, 2u + 10000u);
  // The empty image, the live one (reclaimed images are gone at once in
  // synchronous mode).
  EXPECT_LE(MaxLive, 2u);
  // Freed memory is reused: far fewer distinct addresses than updates.
  EXPECT_LT(ImagesSeen.size(), 16u);
  EXPECT_EQ(callThrough(*D, 3, Progs[0]), 3);
  int Last = 1 + 10000 % 7;
  EXPECT_EQ(callThrough(*D, 3, Progs[Last]), Last * 1000 + 3);
  expectOk(D->verify());
}

TEST_P(DispatcherTest, InjectedFailuresChangeNothingAndTheNextUpdateWorks) {
  for (FaultPoint Point : {FaultPoint::Compile, FaultPoint::Allocate,
                           FaultPoint::Link, FaultPoint::Patch}) {
    SCOPED_TRACE(static_cast<int>(Point));
    bool Armed = false;
    DispatcherConfig C = hostConfig();
    C.InjectFault = [&](FaultPoint P) -> Error {
      if (Armed && P == Point)
        return createStringError(inconvertibleErrorCode(), "injected fault");
      return Error::success();
    };
    auto D = makeDispatcher(std::move(C));
    ASSERT_TRUE(D);
    expectOk(D->add(addr(Progs[1])));
    DispatcherStatus Before = D->status();
    Armed = true;
    std::string Msg = errorText(D->add(addr(Progs[2])));
    EXPECT_NE(Msg.find("injected fault"), std::string::npos) << Msg;
    Armed = false;
    DispatcherStatus After = D->status();
    EXPECT_EQ(After.Generation, Before.Generation);
    EXPECT_EQ(After.ImageAddress, Before.ImageAddress);
    EXPECT_EQ(After.LiveAllocations, Before.LiveAllocations);
    ASSERT_EQ(D->programs().size(), 1u);
    EXPECT_EQ(D->programs()[0].Address, addr(Progs[1]));
    EXPECT_EQ(callThrough(*D, 1, Progs[1]), 1001);
    expectOk(D->verify());
    // The same update succeeds once the fault is gone.
    expectOk(D->add(addr(Progs[2])));
    EXPECT_EQ(callThrough(*D, 1, Progs[2]), 2001);
    EXPECT_EQ(D->status().DirectTargets, 2u);
  }
}

TEST_P(DispatcherTest, FarProgramsTakeTheFallbackAndAreCounted) {
  // Images near a shared library; this executable's functions are far away
  // in a PIE (and, if not, the test still checks the counts add up).
  DispatcherConfig C = hostConfig();
  C.Near = reinterpret_cast<uint64_t>(&dispatchgen_test_shared_prog);
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  expectOk(D->add(reinterpret_cast<uint64_t>(&dispatchgen_test_shared_prog)));
  DispatcherStatus S = D->status();
  EXPECT_EQ(S.DirectTargets + S.FallbackTargets, 2u);
  EXPECT_GE(S.DirectTargets, 1u) << "the shared library is near";
  EXPECT_EQ(callThrough(*D, 2, Progs[1]), 1002);
  EXPECT_EQ(callThrough(*D, 2, &dispatchgen_test_shared_prog), 9002);
  expectOk(D->verify());
}

TEST_P(DispatcherTest, SharedLibraryProgramsAreReachedDirectly) {
  DispatcherConfig C = hostConfig();
  C.Near = reinterpret_cast<uint64_t>(&dispatchgen_test_shared_prog);
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(reinterpret_cast<uint64_t>(&dispatchgen_test_shared_prog),
                  "shared"));
  expectOk(D->add(reinterpret_cast<uint64_t>(&dispatchgen_test_shared_prog2),
                  "shared2"));
  EXPECT_EQ(D->status().DirectTargets, 2u);
  EXPECT_EQ(callThrough(*D, 1, &dispatchgen_test_shared_prog2), 9101);
  expectOk(D->verify());
}

TEST_P(DispatcherTest, RetpolineFallbackLeavesNoIndirectBranch) {
  DispatcherConfig C = hostConfig();
  C.RetpolineFallback = true;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  EXPECT_EQ(callThrough(*D, 1, Progs[1]), 1001);
  EXPECT_EQ(callThrough(*D, 1, Progs[2]), 2001);
  expectOk(D->verify()); // zero indirect branches expected
  // Laid out directly, the image is its own retpoline on the selector's
  // register (one step less than the jump to the thunk); compiled, it
  // calls LLVM's thunk through %r11.
  std::string Dump;
  raw_string_ostream OS(Dump);
  expectOk(D->dump(OS));
  bool Direct = GetParam() == ImageLowering::Auto;
  EXPECT_EQ(Dump.find("lfence") != std::string::npos, Direct) << Dump;
  EXPECT_EQ(Dump.find("movq %rsi, (%rsp)") != std::string::npos, Direct)
      << Dump;
}

TEST_P(DispatcherTest, PerfMapNamesEveryImage) {
  DispatcherConfig C = hostConfig();
  C.Name = "perfmap_dispatch";
  C.PerfMap = true;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  DispatcherStatus S = D->status();
  std::string Path = formatv("/tmp/perf-{0}.map", ::getpid()).str();
  auto Map = MemoryBuffer::getFile(Path);
  ASSERT_TRUE(!!Map) << Map.getError().message();
  std::string Line = formatv("{0:x-} {1:x-} perfmap_dispatch.image.g{2}",
                             S.ImageAddress, S.ImageSize, S.Generation);
  EXPECT_NE((*Map)->getBuffer().find(Line), StringRef::npos) << Line;
  sys::fs::remove(Path);
}

TEST_P(DispatcherTest, ImagesCanBeRegisteredWithTheDebugger) {
  DispatcherConfig C = hostConfig();
  C.RegisterWithDebugger = true;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  // GDB's JIT interface: the descriptor's list holds our objects.
  EXPECT_NE(__jit_debug_descriptor.FirstEntry, nullptr);
  EXPECT_EQ(callThrough(*D, 1, Progs[1]), 1001);
}

TEST_P(DispatcherTest, RetpolineThunkOutlivesEveryImage) {
  // With reclamation asynchronous, images of both JITDylibs live side by
  // side; each must call the dispatcher's own thunk, never a copy inside
  // an older image that is about to be freed.
  DispatcherConfig C = hostConfig();
  C.RetpolineFallback = true;
  C.Reclaim = ReclaimMode::Asynchronous;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 8; ++I) {
    expectOk(D->change(I ? addr(Progs[I % 4]) : 0, addr(Progs[(I + 1) % 4])));
    expectOk(D->verify());
    EXPECT_EQ(callThrough(*D, 1, Progs[7]), 7001) << "the fallback";
  }
}

TEST_P(DispatcherTest, LaidOutImagesRunResidentBehindTheEntry) {
  // Synchronous reclamation (hostConfig's): a laid-out image is copied
  // behind the entry, whose first word becomes an 8-byte nop.
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  bool Direct = GetParam() == ImageLowering::Auto;
  for (int Round = 0; Round < 3; ++Round) {
    expectOk(D->add(addr(Progs[1 + Round])));
    DispatcherStatus S = D->status();
    EXPECT_EQ(S.Resident, Direct);
    const uint8_t *Gate = reinterpret_cast<const uint8_t *>(S.EntryAddress);
    const uint8_t Nop8[] = {0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0};
    EXPECT_EQ(std::memcmp(Gate, Nop8, 8) == 0, Direct);
    if (Direct)
      EXPECT_EQ(S.ImageAddress, S.EntryAddress + 8);
    for (int P = 0; P < NumProgs; ++P)
      EXPECT_EQ(callThrough(*D, 3, Progs[P]), P * 1000 + 3);
    expectOk(D->verify());
  }
  std::string Dump;
  raw_string_ostream OS(Dump);
  expectOk(D->dump(OS));
  EXPECT_EQ(Dump.find("resident copy of image") != std::string::npos, Direct)
      << Dump;
  // Back to the empty set: the resident copy is the bare fallback.
  for (int Round = 0; Round < 3; ++Round)
    expectOk(D->remove(addr(Progs[1 + Round])));
  EXPECT_EQ(D->status().Resident, Direct);
  EXPECT_EQ(callThrough(*D, 4, Progs[5]), 5004);

  // Asynchronous reclamation, or no resident area: the entry jumps.
  for (bool Async : {true, false}) {
    DispatcherConfig C = hostConfig();
    if (Async)
      C.Reclaim = ReclaimMode::Asynchronous;
    else
      C.ResidentBytes = 0;
    auto J = makeDispatcher(std::move(C));
    ASSERT_TRUE(J);
    expectOk(J->add(addr(Progs[1])));
    EXPECT_FALSE(J->status().Resident);
    EXPECT_EQ(*reinterpret_cast<const uint8_t *>(J->status().EntryAddress),
              0xe9)
        << "jmp rel32";
    EXPECT_EQ(callThrough(*J, 3, Progs[1]), 1003);
  }
}

TEST_P(DispatcherTest, SelectorsOffTheRegistersAreCompiled) {
  // The seventh integer argument, and a selector behind an aggregate
  // return (which may take %rdi as a hidden pointer), are where only the
  // full ABI lowering knows: those images are compiled, and still direct.
  for (const char *Sig :
       {"i32 (i64, i64, i64, i64, i64, i64)", "{ i64, i64, i64 } (ptr)"}) {
    SCOPED_TRACE(Sig);
    DispatcherConfig C = hostConfig();
    C.Signature = Sig;
    auto D = makeDispatcher(std::move(C));
    ASSERT_TRUE(D);
    expectOk(D->add(addr(Progs[1])));
    expectOk(D->add(addr(Progs[2])));
    DispatcherStatus S = D->status();
    EXPECT_FALSE(S.LaidOutDirectly);
    EXPECT_EQ(S.DirectTargets, 2u);
    expectOk(D->verify());
  }
  // A selector in a register with a double before it is laid out.
  DispatcherConfig C = hostConfig();
  C.Signature = "i32 (double, ptr, i32)";
  C.SelectorArg = 1;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  EXPECT_EQ(D->status().LaidOutDirectly, GetParam() == ImageLowering::Auto);
}

TEST_P(DispatcherTest, AReturnValueInMemoryIsRefusedNotAnAbort) {
  // The backend cannot make the musttail call for a value returned in
  // memory: compiling the image aborted the host. create() now asks the
  // backend first and says why.
  DispatcherConfig C = hostConfig();
  C.Signature = "[4 x i64] (ptr)";
  C.SelectorArg = 0;
  std::string Msg = errorText(Dispatcher::create(std::move(C)).takeError());
  EXPECT_NE(Msg.find("'[4 x i64]' is returned in memory"), std::string::npos)
      << Msg;
  // Three integer registers' worth is returned in registers: still works.
  C = hostConfig();
  C.Signature = "{ i64, i64, i64 } (ptr)";
  C.SelectorArg = 0;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
}

TEST_P(DispatcherTest, BadConfigurationsAreClearErrors) {
  DispatcherConfig C = hostConfig();
  C.Signature = "i32 (i32";
  EXPECT_NE(errorText(Dispatcher::create(std::move(C)).takeError())
                .find("invalid signature"),
            std::string::npos);
  C = hostConfig();
  C.Capacity = 0;
  EXPECT_NE(errorText(Dispatcher::create(std::move(C)).takeError())
                .find("capacity must be at least 1"),
            std::string::npos);
  C = hostConfig();
  C.ParamExtensions = {ArgExtension::ZeroExt, ArgExtension::ZeroExt};
  EXPECT_NE(errorText(Dispatcher::create(std::move(C)).takeError())
                .find("2 parameter extensions for a signature of 1 "
                      "parameter(s)"),
            std::string::npos);
  C = hostConfig();
  C.SelectorArg = 0; // i32 is not a pointer
  EXPECT_NE(errorText(Dispatcher::create(std::move(C)).takeError())
                .find("must be a pointer"),
            std::string::npos);
}

TEST_P(DispatcherTest, FullDispatcherRefusesAndKeepsItsImage) {
  DispatcherConfig C = hostConfig();
  C.Capacity = 2;
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  expectOk(D->add(addr(Progs[2])));
  uint64_t Image = D->status().ImageAddress;
  EXPECT_NE(errorText(D->add(addr(Progs[3]))).find("is full"),
            std::string::npos);
  EXPECT_EQ(D->status().ImageAddress, Image);
}

} // namespace

// A compiled-in entry, as an AOT caller defines it.
DISPATCHGEN_DEFINE_DISPATCHER(dispatchgen_test_aot_entry, int, (int X, Prog P),
                              P(X));

namespace {

TEST_P(DispatcherTest, CompiledInEntryFollowsTheSet) {
  DispatcherConfig C = hostConfig();
  C.CompiledEntry = reinterpret_cast<void *>(&dispatchgen_test_aot_entry);
  {
    auto D = makeDispatcher(std::move(C));
    ASSERT_TRUE(D);
    EXPECT_EQ(D->entry(),
              reinterpret_cast<uint64_t>(&dispatchgen_test_aot_entry));
    EXPECT_EQ(D->status().ImageAddress, 0u) << "its own indirect call";
    EXPECT_EQ(dispatchgen_test_aot_entry(4, Progs[2]), 2004);
    expectOk(D->add(addr(Progs[2])));
    EXPECT_NE(D->status().ImageAddress, 0u);
    {
      RCUReadGuard Guard;
      EXPECT_EQ(dispatchgen_test_aot_entry(4, Progs[2]), 2004);
      EXPECT_EQ(dispatchgen_test_aot_entry(4, Progs[3]), 3004);
    }
    expectOk(D->verify());
    expectOk(D->remove(addr(Progs[2])));
    EXPECT_EQ(D->status().ImageAddress, 0u);
    EXPECT_EQ(dispatchgen_test_aot_entry(4, Progs[2]), 2004);
    expectOk(D->add(addr(Progs[5])));
  }
  EXPECT_EQ(dispatchgen_test_aot_entry(4, Progs[5]), 5004);
}

/// Set by the fallback hook on the thread whose call took the fallback.
thread_local bool TookFallback = false;
void noteFallback(uint64_t) { TookFallback = true; }

/// Callers on every core but one call registered programs while the main
/// thread churns the set. A program is taken out of the published set
/// before it is removed from the dispatcher, and its registration is
/// counted out only by the release callback, after the grace period: a
/// reader that picked it inside its read-side section must never see its
/// count at 0. A published program that no removal overlapped is in every
/// image the call could enter, so it must not take the fallback (the hook
/// counts those that do); every image's routing is proven before it goes
/// live (VerifyImages).
void churnUnderLoad(ReclaimMode Mode) {
  DispatcherConfig C = hostConfig();
  C.Reclaim = Mode;
  C.FallbackHookForTesting = noteFallback;
  C.ImageDelayForTesting = 16;
  C.PoisonForTesting = true;
  C.OnRelease = [](const ProgramEntry &P) {
    Outstanding[indexOf(P.Address)].fetch_sub(1);
  };
  auto D = makeDispatcher(std::move(C));
  ASSERT_TRUE(D);

  std::atomic<uint32_t> Published{0};
  /// Removals begun: bumped after a program is unpublished and before it
  /// is removed (seq_cst, as are the readers' loads of it and of
  /// Published). A reader that saw P published after reading S0, and reads
  /// S1 == S0 after its call, called P while no removal of P had begun.
  std::atomic<uint64_t> Removals{0};
  std::atomic<bool> Stop{false};
  std::atomic<uint64_t> Calls{0}, Misrouted{0}, ToFallback{0};
  auto *Entry = D->entryAs<EntryFn>();
  CheckReleases = true;
  std::vector<std::thread> Readers;
  unsigned NumReaders = std::max(2u, std::thread::hardware_concurrency()) - 1;
  for (unsigned R = 0; R < NumReaders; ++R)
    Readers.emplace_back([&, R] {
      RCUReaderThread Registration(RCUFlavor::Memb);
      unsigned Pick = R;
      while (!Stop.load(std::memory_order_relaxed)) {
        RCUReadGuard Guard;
        uint64_t S0 = Removals.load();
        uint32_t Mask = Published.load();
        if (!Mask)
          continue;
        do
          Pick = (Pick + 1) % NumProgs;
        while (!(Mask & (1u << Pick)));
        TookFallback = false;
        if (Entry(int(Calls % 100), Progs[Pick]) / 1000 != int(Pick))
          Misrouted.fetch_add(1, std::memory_order_relaxed);
        if (TookFallback && Removals.load() == S0)
          ToFallback.fetch_add(1, std::memory_order_relaxed);
        Calls.fetch_add(1, std::memory_order_relaxed);
      }
    });

  uint32_t Mask = 0;
  unsigned Updates = 0;
  // The readers are stopped and joined before anything is asserted: a
  // fatal assertion here would leave them running.
  Error UpdateError = Error::success();
  for (int Round = 0; Round < 3000 && !UpdateError; ++Round) {
    int P = Round % NumProgs;
    if (Mask & (1u << P)) {
      Mask &= ~(1u << P);
      Published.store(Mask);
      Removals.fetch_add(1);
      UpdateError = D->remove(addr(Progs[P]));
    } else {
      Outstanding[P].fetch_add(1);
      UpdateError = D->add(addr(Progs[P]));
      Mask |= 1u << P;
      Published.store(Mask);
    }
    ++Updates;
  }
  Stop = true;
  for (std::thread &T : Readers)
    T.join();
  CheckReleases = false;
  EXPECT_FALSE(!!UpdateError) << toString(std::move(UpdateError));
  EXPECT_EQ(Misrouted.load(), 0u);
  EXPECT_EQ(RunAfterRelease.load(), 0u);
  EXPECT_EQ(ToFallback.load(), 0u) << "registered programs took the fallback";
  EXPECT_GT(Calls.load(), Updates) << "readers made progress";
}

TEST_P(DispatcherTest, CallsStayCorrectWhileTheSetChurnsSynchronously) {
  churnUnderLoad(ReclaimMode::Synchronous);
}

TEST_P(DispatcherTest, CallsStayCorrectWhileTheSetChurnsAsynchronously) {
  churnUnderLoad(ReclaimMode::Asynchronous);
}

/// The embedding case: the caller's LLJIT compiles two programs and a
/// caller function that calls the dispatcher's entry symbol directly.
TEST_P(DispatcherTest, EmbeddedInACallersLLJIT) {
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  // Another dispatcher of the process lives near the executable's code
  // (a PIE's text is far from the shared libraries and from JIT memory);
  // one made with Near = 0 must still land where the LLJIT's code does,
  // not in the space that one left free.
  auto NearTheExecutable = makeDispatcher(hostConfig());
  ASSERT_TRUE(NearTheExecutable);
  auto J = orc::LLJITBuilder().create();
  ASSERT_TRUE(!!J) << toString(J.takeError());
  auto Ctx = std::make_unique<LLVMContext>();
  SMDiagnostic Diag;
  auto M = parseIR(MemoryBufferRef(R"(
    define i32 @jit_prog_a(i32 %x) { %r = add i32 %x, 100 ret i32 %r }
    define i32 @jit_prog_b(i32 %x) { %r = add i32 %x, 200 ret i32 %r }
    declare i32 @embed_dispatch(i32, ptr)
    define i32 @call_a(i32 %x) {
      %r = call i32 @embed_dispatch(i32 %x, ptr @jit_prog_a)
      ret i32 %r
    }
  )",
                                   "programs"),
                   Diag, *Ctx);
  ASSERT_TRUE(M) << Diag.getMessage().str();

  DispatcherConfig C;
  C.Name = "embed_dispatch";
  C.Signature = "i32 (i32)";
  C.VerifyImages = true;
  auto D = Dispatcher::create(std::move(C), **J);
  ASSERT_TRUE(!!D) << toString(D.takeError());
  orc::JITDylib &Main = (*J)->getMainJITDylib();
  Main.addToLinkOrder(*(*D)->entryDylib());
  ASSERT_FALSE(
      !!(*J)->addIRModule(orc::ThreadSafeModule(std::move(M), std::move(Ctx))));

  expectOk((*D)->add("jit_prog_a", Main));
  expectOk((*D)->add("jit_prog_b", Main));
  EXPECT_EQ((*D)->status().DirectTargets, 2u);
  expectOk((*D)->verify());

  auto CallA = (*J)->lookup("call_a");
  ASSERT_TRUE(!!CallA) << toString(CallA.takeError());
  {
    RCUReadGuard Guard;
    EXPECT_EQ(CallA->toPtr<int (*)(int)>()(1), 101);
  }
  auto ProgB = cantFail((*J)->lookup("jit_prog_b")).toPtr<Prog>();
  EXPECT_EQ(callThrough(**D, 1, ProgB), 201);
  EXPECT_NE(errorText((*D)->add("no_such_program", Main))
                .find("cannot add program 'no_such_program'"),
            std::string::npos);
  EXPECT_EQ(errorText((*D)->add("", Main)),
            "cannot add a program with an empty symbol name");
  D->reset(); // before the LLJIT whose session it uses
}

/// A host keeps the entry's JITDylib in its link order and goes on using its
/// session after the dispatcher is gone: every walk of that link order, a
/// lookup and a new module naming the entry must work or fail cleanly.
TEST_P(DispatcherTest, TeardownLeavesTheHostsSessionWhole) {
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  auto J = orc::LLJITBuilder().create();
  ASSERT_TRUE(!!J) << toString(J.takeError());
  orc::JITDylib &Main = (*J)->getMainJITDylib();
  auto Parse = [](StringRef IR, LLVMContext &Ctx) {
    SMDiagnostic Diag;
    auto M = parseIR(MemoryBufferRef(IR, "m"), Diag, Ctx);
    EXPECT_TRUE(M) << Diag.getMessage().str();
    return M;
  };
  auto AddCaller = [&](StringRef Name) {
    auto Ctx = std::make_unique<LLVMContext>();
    std::string IR = formatv(R"(
      declare i32 @teardown_dispatch(i32, ptr)
      define i32 @ident_{0}(i32 %x) {{ ret i32 %x }
      define i32 @{0}(i32 %x) {{
        %r = call i32 @teardown_dispatch(i32 %x, ptr @ident_{0})
        ret i32 %r
      })",
                             Name)
                         .str();
    auto M = Parse(IR, *Ctx);
    return (*J)->addIRModule(
        orc::ThreadSafeModule(std::move(M), std::move(Ctx)));
  };

  for (int Round = 0; Round < 2; ++Round) {
    SCOPED_TRACE(Round);
    DispatcherConfig C = hostConfig();
    C.Near = 0;
    C.Name = "teardown_dispatch";
    auto D = Dispatcher::create(std::move(C), **J);
    ASSERT_TRUE(!!D) << toString(D.takeError());
    // The documented embedding: link against the entry, call, tear down.
    Main.addToLinkOrder(*(*D)->entryDylib());
    std::string Caller = formatv("caller_{0}", Round).str();
    ASSERT_FALSE(!!AddCaller(Caller));
    auto Fn = (*J)->lookup(Caller);
    ASSERT_TRUE(!!Fn) << toString(Fn.takeError());
    {
      RCUReadGuard Guard;
      EXPECT_EQ(Fn->toPtr<int (*)(int)>()(7), 7);
    }
    D->reset();

    // What the host does next: walk Main's link order, look the entry up,
    // link new code that names it.
    EXPECT_FALSE(!!(*J)->deinitialize(Main));
    auto Gone = (*J)->lookup("teardown_dispatch");
    ASSERT_FALSE(!!Gone);
    EXPECT_NE(toString(Gone.takeError()).find("Symbols not found"),
              std::string::npos);
    std::string Late = formatv("late_{0}", Round).str();
    ASSERT_FALSE(!!AddCaller(Late));
    auto LateFn = (*J)->lookup(Late);
    ASSERT_FALSE(!!LateFn) << "a module naming a destroyed entry must not link";
    EXPECT_NE(toString(LateFn.takeError()).find(Late), std::string::npos);
  }
  // The second round made a dispatcher of the same name in the same session
  // again; now the session ends with the entries' JITDylib in Main's order.
  J->reset();
}

TEST_P(DispatcherTest, TwoDispatchersOfOneNameInOneSessionAreRefused) {
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  auto J = orc::LLJITBuilder().create();
  ASSERT_TRUE(!!J) << toString(J.takeError());
  DispatcherConfig C = hostConfig();
  C.Name = "twin_dispatch";
  auto A = Dispatcher::create(std::move(C), **J);
  ASSERT_TRUE(!!A) << toString(A.takeError());
  C = hostConfig();
  C.Name = "twin_dispatch";
  auto B = Dispatcher::create(std::move(C), **J);
  ASSERT_FALSE(!!B);
  EXPECT_NE(toString(B.takeError())
                .find("another dispatcher of this session is named "
                      "'twin_dispatch'"),
            std::string::npos);
  C = hostConfig();
  C.Name = "other_dispatch";
  auto Other = Dispatcher::create(std::move(C), **J);
  ASSERT_TRUE(!!Other) << toString(Other.takeError());
  EXPECT_EQ((*A)->entryDylib(), (*Other)->entryDylib()) << "one per session";
  A->reset();
  Other->reset();
}

TEST_P(DispatcherTest, UpdatesInsideAReadSideSectionAreErrors) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  {
    RCUReadGuard Guard;
    std::string Msg = errorText(D->add(addr(Progs[2])));
    EXPECT_NE(Msg.find("update called inside a read-side section on this "
                       "thread"),
              std::string::npos)
        << Msg;
    EXPECT_NE(errorText(D->regenerate()).find("inside a read-side section"),
              std::string::npos);
    EXPECT_EQ(D->entryAs<EntryFn>()(1, Progs[1]), 1001);
  }
  EXPECT_EQ(D->programs().size(), 1u) << "the refused update changed nothing";
  expectOk(D->add(addr(Progs[2])));
  // Asynchronous reclamation does not wait: an update inside is fine.
  DispatcherConfig C = hostConfig();
  C.Reclaim = ReclaimMode::Asynchronous;
  auto Async = makeDispatcher(std::move(C));
  ASSERT_TRUE(Async);
  RCUReadGuard Guard;
  expectOk(Async->add(addr(Progs[3])));
}

TEST_P(DispatcherTest, ACreateThatFailsInsideAReadSideSectionReturnsItsError) {
  // Nothing was published, so nothing is waited for: the error comes back.
  RCUReadGuard Guard;
  for (bool Late : {false, true}) {
    DispatcherConfig C = hostConfig();
    if (Late) // fails after the entry exists, building the first image
      C.InjectFault = [](FaultPoint) -> Error {
        return createStringError(inconvertibleErrorCode(), "injected fault");
      };
    else
      C.Capacity = 0;
    auto D = Dispatcher::create(std::move(C));
    ASSERT_FALSE(!!D);
    EXPECT_NE(toString(D.takeError()).find("cannot create dispatcher"),
              std::string::npos);
  }
}

TEST_P(DispatcherTest, DestroyingInsideAReadSideSectionAbortsWithAMessage) {
  // The child runs this test alone, from a fresh start.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        // This thread is a registered reader (the fixture's).
        auto D = Dispatcher::create(hostConfig());
        if (!D)
          std::abort();
        RCUReadGuard Guard;
        D->reset();
      },
      "destroyed inside a read-side section on this thread");
}

TEST_P(DispatcherTest, TheEntryItselfIsRefusedAsAProgram) {
  auto D = makeDispatcher(hostConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(Progs[1])));
  uint64_t Gen = D->status().Generation;
  std::string Msg = errorText(D->add(D->entry()));
  EXPECT_NE(Msg.find("own entry: a call would loop forever"), std::string::npos)
      << Msg;
  EXPECT_NE(
      errorText(D->change(addr(Progs[1]), D->entry() + 8)).find("own entry"),
      std::string::npos);
  EXPECT_EQ(D->status().Generation, Gen);
  ASSERT_EQ(D->programs().size(), 1u);
  EXPECT_EQ(D->programs()[0].Address, addr(Progs[1]));
  EXPECT_EQ(callThrough(*D, 2, Progs[1]), 1002);
}

TEST_P(DispatcherTest, PerfMapRefusesLinksAndOtherUsersFiles) {
  std::string Path = formatv("/tmp/perf-{0}.map", ::getpid()).str();
  std::string Target = Path + ".target";
  sys::fs::remove(Path);
  {
    std::error_code EC;
    raw_fd_ostream(Target, EC) << "precious\n";
    ASSERT_FALSE(EC);
  }
  auto Create = [] {
    DispatcherConfig C = hostConfig();
    C.PerfMap = true;
    return Dispatcher::create(std::move(C));
  };
  auto Contents = [&] {
    auto B = MemoryBuffer::getFile(Target);
    return B ? (*B)->getBuffer().str() : std::string();
  };
  // A symbolic link planted where the map goes.
  ASSERT_FALSE(sys::fs::create_link(Target, Path));
  auto D = Create();
  ASSERT_FALSE(!!D);
  EXPECT_NE(toString(D.takeError()).find("it is a symbolic link"),
            std::string::npos);
  EXPECT_EQ(Contents(), "precious\n");
  sys::fs::remove(Path);
  // A hard link to a file of ours.
  ASSERT_FALSE(sys::fs::create_hard_link(Target, Path));
  D = Create();
  ASSERT_FALSE(!!D);
  EXPECT_NE(toString(D.takeError()).find("hard links"), std::string::npos);
  EXPECT_EQ(Contents(), "precious\n");
  sys::fs::remove(Path);
  // A file of another user (only root can make one here).
  if (::geteuid() == 0) {
    {
      std::error_code EC;
      raw_fd_ostream(Path, EC) << "";
    }
    ASSERT_EQ(::chown(Path.c_str(), 65534, 65534), 0);
    D = Create();
    ASSERT_FALSE(!!D);
    EXPECT_NE(toString(D.takeError()).find("belongs to user 65534"),
              std::string::npos);
    sys::fs::remove(Path);
  }
  // The file it creates is the process user's own, mode 0600.
  D = Create();
  ASSERT_TRUE(!!D) << toString(D.takeError());
  sys::fs::file_status St;
  ASSERT_FALSE(sys::fs::status(Path, St));
  EXPECT_EQ(St.permissions(), sys::fs::owner_read | sys::fs::owner_write);
  D->reset();
  sys::fs::remove(Path);
  sys::fs::remove(Target);
}

/// After fork() parent and child each own their dispatcher: each updates
/// and calls a million times, all correct, and the child's (asynchronous)
/// dispatcher is destroyed there without hanging.
TEST_P(DispatcherTest, ParentAndChildEachOwnTheirDispatcherAfterFork) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  // ThreadSanitizer stops a child that starts threads after a fork of a
  // threaded process (a new call_rcu thread does); the normal and ASan
  // builds run it.
  GTEST_SKIP() << "fork() with threads is not supported under TSan";
#endif
#endif
  for (ReclaimMode Mode :
       {ReclaimMode::Synchronous, ReclaimMode::Asynchronous}) {
    SCOPED_TRACE(Mode == ReclaimMode::Synchronous ? "sync" : "async");
    DispatcherConfig C = hostConfig();
    C.Reclaim = Mode;
    auto D = makeDispatcher(std::move(C));
    ASSERT_TRUE(D);
    expectOk(D->add(addr(Progs[1])));
    expectOk(D->add(addr(Progs[2])));
    auto Work = [&](int Keep, int From, int To) {
      // Swap From for To, then call the kept program and To a million times.
      if (D->change(addr(Progs[From]), addr(Progs[To])))
        return false;
      auto *Entry = D->entryAs<EntryFn>();
      RCUReadGuard Guard;
      for (int I = 0; I < 500000; ++I)
        if (Entry(I, Progs[Keep]) != Keep * 1000 + I ||
            Entry(I, Progs[To]) != To * 1000 + I)
          return false;
      return D->status().DirectTargets == 2;
    };
    pid_t Child = fork();
    ASSERT_GE(Child, 0);
    if (Child == 0) {
      alarm(60); // a hang fails the test instead of stalling it
      bool Ok = Work(1, 2, 3) && Work(1, 3, 4);
      D.reset();
      _exit(Ok ? 0 : 1);
    }
    bool Ok = Work(1, 2, 5) && Work(1, 5, 6);
    int Status = 0;
    ASSERT_EQ(waitpid(Child, &Status, 0), Child);
    EXPECT_TRUE(WIFEXITED(Status) && WEXITSTATUS(Status) == 0)
        << "child status " << Status;
    EXPECT_TRUE(Ok);
    EXPECT_EQ(callThrough(*D, 1, Progs[6]), 6001);
    EXPECT_EQ(D->programs().size(), 2u);
    expectOk(D->verify());
  }
}

TEST(ForkTest, AForkWhileAnotherThreadIsInsideAGuardLeavesTheChildWorking) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "fork() with threads is not supported under TSan";
#endif
#endif
  // A parent thread sits inside a read-side section (Memb), or online
  // without a quiescent state (QSBR), when another thread forks. The
  // child has no such thread: its grace periods must not wait for it.
  for (RCUFlavor Flavor : {RCUFlavor::Memb, RCUFlavor::QSBR}) {
    SCOPED_TRACE(Flavor == RCUFlavor::Memb ? "memb" : "qsbr");
    std::atomic<bool> Inside{false}, Leave{false};
    std::thread Reader([&] {
      RCUReaderThread Registration(Flavor);
      std::optional<RCUReadGuard> Guard;
      if (Flavor == RCUFlavor::Memb)
        Guard.emplace();
      Inside = true;
      while (!Leave)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    while (!Inside)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    pid_t Child = fork();
    ASSERT_GE(Child, 0);
    if (Child == 0) {
      alarm(10); // a hang fails the test instead of stalling it
      bool Ok = true;
      for (ReclaimMode Mode :
           {ReclaimMode::Synchronous, ReclaimMode::Asynchronous}) {
        DispatcherConfig C = smallConfig(0);
        C.Flavor = Flavor;
        C.Reclaim = Mode;
        auto D = Dispatcher::create(std::move(C));
        if (!D) {
          consumeError(D.takeError());
          _exit(2);
        }
        // Each update waits for a grace period (synchronously, or through
        // call_rcu, which destruction then waits for).
        Ok = Ok && !(*D)->add(addr(Progs[1])) &&
             !(*D)->change(addr(Progs[1]), addr(Progs[2])) &&
             callThrough(**D, 1, Progs[2]) == 2001;
        D->reset();
      }
      _exit(Ok ? 0 : 1);
    }
    int Status = 0;
    ASSERT_EQ(waitpid(Child, &Status, 0), Child);
    Leave = true;
    Reader.join();
    EXPECT_TRUE(WIFEXITED(Status) && WEXITSTATUS(Status) == 0)
        << "child status " << Status
        << (WIFSIGNALED(Status) && WTERMSIG(Status) == SIGALRM
                ? " (it hung: killed by its alarm)"
                : "");
  }
}

TEST(ForkTest, ForkThenExecRunsTheNewProgramAndTheParentKeepsItsDispatchers) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "fork() with threads is not supported under TSan";
#endif
#endif
  std::vector<std::unique_ptr<Dispatcher>> All;
  for (unsigned I = 0; I < 3; ++I) {
    DispatcherConfig C = smallConfig(I);
    if (I == 2)
      C.Reclaim = ReclaimMode::Asynchronous;
    All.push_back(makeDispatcher(std::move(C)));
    ASSERT_TRUE(All.back());
    expectOk(All.back()->add(addr(Progs[1 + I])));
  }
  // The new program inherits none of the code memory's descriptors
  // (close-on-exec): it looks for them among its own, then exits with 7.
  const char *Script = "for f in /proc/self/fd/*; do "
                       "readlink \"$f\"; done | grep -q dispatch-gen "
                       "&& exit 1; exit 7";
  pid_t Child = fork();
  ASSERT_GE(Child, 0);
  if (Child == 0) {
    execl("/bin/sh", "sh", "-c", Script, static_cast<char *>(nullptr));
    _exit(127);
  }
  int Status = 0;
  ASSERT_EQ(waitpid(Child, &Status, 0), Child);
  EXPECT_TRUE(WIFEXITED(Status) && WEXITSTATUS(Status) == 7)
      << "child status " << Status;
  for (unsigned I = 0; I < 3; ++I) {
    expectOk(All[I]->change(addr(Progs[1 + I]), addr(Progs[5])));
    EXPECT_EQ(callThrough(*All[I], 2, Progs[5]), 5002);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Lowerings, DispatcherTest,
    ::testing::Values(ImageLowering::Auto, ImageLowering::Codegen),
    [](const ::testing::TestParamInfo<ImageLowering> &Info) {
      return Info.param == ImageLowering::Auto ? "Direct" : "Codegen";
    });

} // namespace
