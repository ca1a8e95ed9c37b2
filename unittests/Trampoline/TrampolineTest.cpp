//===- TrampolineTest.cpp - Tests of the patchable entry ------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Trampoline.h"

#include "gtest/gtest.h"

#include "llvm/ADT/STLFunctionalExtras.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using namespace dispatchgen;

namespace {

using Prog = int (*)(int);

extern "C" __attribute__((noinline)) int progA(int X) { return X + 1000; }
extern "C" __attribute__((noinline)) int progB(int X) { return X + 2000; }
extern "C" __attribute__((noinline)) int answer(int, Prog) { return 42; }

} // namespace

// A compiled-in entry: dispatch(x, prog) calls prog(x) until adopted.
DISPATCHGEN_DEFINE_DISPATCHER(dispatchgen_test_entry, int, (int X, Prog P),
                              P(X));

namespace {

std::string messageOf(llvm::Error E) { return llvm::toString(std::move(E)); }

#if defined(__x86_64__) && defined(__linux__)

int callEntry(const Trampoline &T, int X) {
  return reinterpret_cast<int (*)(int)>(T.address())(X);
}

/// What two threads calling an entry saw while its state was flipped.
struct FlipOutcome {
  /// Calls that returned StateResults[0] and [1]: ran each state whole.
  uint64_t Seen[2] = {0, 0};
  /// Calls that returned anything else: a torn entry.
  uint64_t Wrong = 0;
  /// The flips made, and why they stopped early: a flip failed, or no
  /// caller ran the state a flip made live.
  unsigned Flips = 0;
  std::string FlipError;
  bool Unobserved = false;
};

/// Calls T(1) from two threads while Flip(State) makes state 1, 0, 1, ...
/// live NumFlips times (state 0 is live before); a call to state S returns
/// StateResults[S]. After each flip the flipper waits until a caller has
/// run the new state, so that both states are seen on any machine however
/// the threads are scheduled; the callers never pause, so every flip races
/// with calls. Failures are recorded, never asserted, so that the threads
/// are always joined.
FlipOutcome flipUnderCallers(const Trampoline &T, const int (&StateResults)[2],
                             unsigned NumFlips,
                             llvm::function_ref<llvm::Error(unsigned)> Flip) {
  std::atomic<bool> Stop{false};
  std::atomic<uint64_t> Seen[2] = {{0}, {0}};
  std::atomic<uint64_t> Wrong{0};
  std::vector<std::thread> Callers;
  for (int I = 0; I < 2; ++I)
    Callers.emplace_back([&] {
      while (!Stop.load(std::memory_order_relaxed)) {
        int R = callEntry(T, 1);
        (R == StateResults[0]   ? Seen[0]
         : R == StateResults[1] ? Seen[1]
                                : Wrong)
            .fetch_add(1, std::memory_order_relaxed);
      }
    });

  FlipOutcome Outcome;
  for (unsigned I = 0; I < NumFlips; ++I) {
    unsigned State = (I + 1) % 2;
    uint64_t Before = Seen[State].load(std::memory_order_relaxed);
    if (llvm::Error E = Flip(State)) {
      Outcome.FlipError = llvm::toString(std::move(E));
      break;
    }
    ++Outcome.Flips;
    // Bounded, so that an entry stuck in one state fails the test instead
    // of hanging it.
    auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (Seen[State].load(std::memory_order_relaxed) == Before &&
           !Outcome.Unobserved) {
      if (std::chrono::steady_clock::now() > Deadline)
        Outcome.Unobserved = true;
      std::this_thread::yield();
    }
    if (Outcome.Unobserved)
      break;
  }
  Stop = true;
  for (std::thread &C : Callers)
    C.join();
  for (unsigned S = 0; S < 2; ++S)
    Outcome.Seen[S] = Seen[S].load();
  Outcome.Wrong = Wrong.load();
  return Outcome;
}

TEST(TrampolineTest, JitEntryJumpsToItsTarget) {
  auto TOrErr = Trampoline::create(reinterpret_cast<uint64_t>(&progA));
  ASSERT_TRUE(!!TOrErr) << messageOf(TOrErr.takeError());
  Trampoline &T = **TOrErr;
  EXPECT_EQ(T.address() % 8, 0u);
  EXPECT_EQ(T.target(), 0u);
  ASSERT_FALSE(!!T.retarget(reinterpret_cast<uint64_t>(&progA)));
  EXPECT_EQ(T.target(), reinterpret_cast<uint64_t>(&progA));
  EXPECT_EQ(callEntry(T, 1), 1001);
  ASSERT_FALSE(!!T.retarget(reinterpret_cast<uint64_t>(&progB)));
  EXPECT_EQ(callEntry(T, 1), 2001);
}

TEST(TrampolineTest, JitEntryIsOneAlignedRel32Jump) {
  auto T = cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA)));
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progB)));
  uint8_t Bytes[5];
  std::memcpy(Bytes, reinterpret_cast<const void *>(T->address()), 5);
  EXPECT_EQ(Bytes[0], 0xe9);
  int32_t Rel;
  std::memcpy(&Rel, Bytes + 1, 4);
  EXPECT_EQ(T->address() + 5 + Rel, reinterpret_cast<uint64_t>(&progB));
}

TEST(TrampolineTest, JitEntryIsPlacedWithinReachOfNear) {
  uint64_t Near = reinterpret_cast<uint64_t>(&progA);
  auto T = cantFail(Trampoline::create(Near));
  EXPECT_TRUE(T->canReach(Near));
  int64_t Distance = static_cast<int64_t>(T->address() - Near);
  EXPECT_LE(std::abs(Distance), int64_t(1) << 30);
}

TEST(TrampolineTest, OutOfReachTargetIsRefusedAndChangesNothing) {
  auto T = cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA)));
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
  uint64_t Far = T->address() + (uint64_t(1) << 33);
  EXPECT_FALSE(T->canReach(Far));
  std::string Msg = messageOf(T->retarget(Far));
  EXPECT_NE(Msg.find("cannot reach"), std::string::npos) << Msg;
  EXPECT_EQ(T->target(), reinterpret_cast<uint64_t>(&progA));
  EXPECT_EQ(callEntry(*T, 5), 1005);
}

TEST(TrampolineTest, ConcurrentCallersSeeBothTargetsOfAFlipNeverATornOne) {
  auto T = cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA)));
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
  constexpr unsigned NumFlips = 20000;
  FlipOutcome Outcome =
      flipUnderCallers(*T, {1001, 2001}, NumFlips, [&](unsigned State) {
        return T->retarget(reinterpret_cast<uint64_t>(State ? &progB : &progA));
      });
  EXPECT_EQ(Outcome.FlipError, "");
  EXPECT_FALSE(Outcome.Unobserved)
      << "no caller ran the target made live by flip " << Outcome.Flips;
  EXPECT_EQ(Outcome.Flips, NumFlips);
  EXPECT_EQ(Outcome.Wrong, 0u);
  EXPECT_GT(Outcome.Seen[0], 0u) << "no call reached progA";
  EXPECT_GT(Outcome.Seen[1], 0u) << "no call reached progB";
}

TEST(TrampolineTest, ResidentAreaRunsInPlaceBehindAnOpenGate) {
  auto T =
      cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA), 4096));
  ASSERT_GE(T->residentCapacity(), 4096u);
  EXPECT_EQ(T->residentAddress(), T->address() + 8);
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
  // mov $77, %eax; ret
  const uint8_t Code[] = {0xb8, 77, 0, 0, 0, 0xc3};
  cantFail(T->writeResident(Code));
  EXPECT_EQ(callEntry(*T, 1), 1001) << "the gate is still closed";
  cantFail(T->openGate());
  EXPECT_TRUE(T->isResident());
  EXPECT_EQ(T->target(), T->residentAddress());
  EXPECT_EQ(callEntry(*T, 1), 77);

  // Rewriting what callers may run is refused, and so is too much code.
  std::string Msg = messageOf(T->writeResident(Code));
  EXPECT_NE(Msg.find("close the gate first"), std::string::npos) << Msg;
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progB)));
  std::vector<uint8_t> Big(T->residentCapacity() + 1, 0xcc);
  Msg = messageOf(T->writeResident(Big));
  EXPECT_NE(Msg.find("do not fit"), std::string::npos) << Msg;
  EXPECT_EQ(callEntry(*T, 1), 2001);

  auto Plain = cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA)));
  EXPECT_EQ(Plain->residentCapacity(), 0u);
  Msg = messageOf(Plain->openGate());
  EXPECT_NE(Msg.find("no resident area"), std::string::npos) << Msg;
}

TEST(TrampolineTest, ConcurrentCallersSeeTheGateOpenAndClosedNeverTorn) {
  // The gate word flips between an 8-byte nop and `jmp rel32` under two
  // callers: each call runs the resident code (77) or the target (1001),
  // whole, and both happen.
  auto T =
      cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA), 4096));
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
  const uint8_t Code[] = {0xb8, 77, 0, 0, 0, 0xc3};
  cantFail(T->writeResident(Code));
  constexpr unsigned NumFlips = 20000;
  FlipOutcome Outcome =
      flipUnderCallers(*T, {1001, 77}, NumFlips, [&](unsigned State) {
        return State ? T->openGate()
                     : T->retarget(reinterpret_cast<uint64_t>(&progA));
      });
  EXPECT_EQ(Outcome.FlipError, "");
  EXPECT_FALSE(Outcome.Unobserved)
      << "no caller ran the state made live by flip " << Outcome.Flips;
  EXPECT_EQ(Outcome.Flips, NumFlips);
  EXPECT_EQ(Outcome.Wrong, 0u);
  EXPECT_GT(Outcome.Seen[0], 0u) << "no call took the jump to the target";
  EXPECT_GT(Outcome.Seen[1], 0u) << "no call ran the resident area";
}

TEST(TrampolineTest, CompiledInEntryDoesIndirectCallUntilAdopted) {
  EXPECT_EQ(dispatchgen_test_entry(1, progA), 1001);
  EXPECT_EQ(dispatchgen_test_entry(1, progB), 2001);
  {
    auto TOrErr =
        Trampoline::adopt(reinterpret_cast<void *>(&dispatchgen_test_entry));
    ASSERT_TRUE(!!TOrErr) << messageOf(TOrErr.takeError());
    Trampoline &T = **TOrErr;
    EXPECT_EQ(T.address(), reinterpret_cast<uint64_t>(&dispatchgen_test_entry));
    // Adopted but not targeted: still the indirect call.
    EXPECT_EQ(dispatchgen_test_entry(1, progA), 1001);
    ASSERT_FALSE(!!T.retarget(reinterpret_cast<uint64_t>(&answer)));
    EXPECT_EQ(dispatchgen_test_entry(1, progA), 42);
    ASSERT_FALSE(!!T.reset());
    EXPECT_EQ(dispatchgen_test_entry(1, progA), 1001);
    ASSERT_FALSE(!!T.retarget(reinterpret_cast<uint64_t>(&answer)));
    EXPECT_EQ(dispatchgen_test_entry(1, progB), 42);
  }
  // Destroying the trampoline gives the entry back its indirect call.
  EXPECT_EQ(dispatchgen_test_entry(1, progB), 2001);
}

TEST(TrampolineTest, CompiledInEntryCannotBeAdoptedTwice) {
  auto First = cantFail(
      Trampoline::adopt(reinterpret_cast<void *>(&dispatchgen_test_entry)));
  std::string Msg = messageOf(
      Trampoline::adopt(reinterpret_cast<void *>(&dispatchgen_test_entry))
          .takeError());
  EXPECT_NE(Msg.find("already adopted"), std::string::npos) << Msg;
}

TEST(TrampolineTest, OrdinaryFunctionIsNotAnEntry) {
  std::string Msg = messageOf(
      Trampoline::adopt(reinterpret_cast<void *>(&progA)).takeError());
  EXPECT_NE(Msg.find("is not"), std::string::npos) << Msg;
  Msg = messageOf(Trampoline::adopt(nullptr).takeError());
  EXPECT_NE(Msg.find("is not a dispatch-gen entry"), std::string::npos) << Msg;
}

/// One line of /proc/self/maps.
struct Mapping {
  uint64_t Begin = 0, End = 0;
  std::string Perms, Path, Line;
  bool writable() const { return Perms.size() > 1 && Perms[1] == 'w'; }
  bool executable() const { return Perms.size() > 2 && Perms[2] == 'x'; }
  bool contains(uint64_t A) const { return A >= Begin && A < End; }
};

std::vector<Mapping> readMaps() {
  std::vector<Mapping> Maps;
  std::ifstream In("/proc/self/maps");
  for (std::string Line; std::getline(In, Line);) {
    Mapping M;
    M.Line = Line;
    std::istringstream LS(Line);
    std::string Range, Offset, Dev, Inode;
    LS >> Range >> M.Perms >> Offset >> Dev >> Inode;
    std::getline(LS >> std::ws, M.Path);
    size_t Dash = Range.find('-');
    M.Begin = std::stoull(Range.substr(0, Dash), nullptr, 16);
    M.End = std::stoull(Range.substr(Dash + 1), nullptr, 16);
    Maps.push_back(std::move(M));
  }
  return Maps;
}

uint64_t pageOf(uint64_t A) {
  return A & ~(static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) - 1);
}

TEST(TrampolineTest, NoMappingIsEverWritableAndExecutable) {
  // A thread samples the process's mappings while both kinds of entry are
  // patched 1,000 times each: never a mapping both writable and executable,
  // never the compiled-in entry's page writable.
  uint64_t TextPage =
      pageOf(reinterpret_cast<uint64_t>(&dispatchgen_test_entry));
  std::atomic<bool> Done{false};
  std::atomic<unsigned> Samples{0};
  std::vector<std::string> Violations; // the sampler's until joined
  std::thread Sampler([&] {
    while (!Done.load()) {
      for (const Mapping &M : readMaps())
        if ((M.writable() && M.executable()) ||
            (M.writable() && M.contains(TextPage)))
          Violations.push_back(M.Line);
      Samples.fetch_add(1);
    }
  });
  std::string Failure;
  unsigned Wrong = 0;
  {
    auto JIT = Trampoline::create(reinterpret_cast<uint64_t>(&progA), 4096);
    auto AOT =
        Trampoline::adopt(reinterpret_cast<void *>(&dispatchgen_test_entry));
    if (!JIT || !AOT) {
      Failure = !JIT ? messageOf(JIT.takeError()) : messageOf(AOT.takeError());
      if (JIT)
        JIT->reset();
      else
        llvm::consumeError(AOT.takeError());
    } else {
      for (unsigned I = 0; I < 1000 && Failure.empty(); ++I) {
        Prog Target = I % 2 ? progA : progB;
        uint64_t To = reinterpret_cast<uint64_t>(Target);
        if (llvm::Error E =
                llvm::joinErrors((*JIT)->retarget(To), (*AOT)->retarget(To))) {
          Failure = messageOf(std::move(E));
          break;
        }
        Wrong += callEntry(**JIT, 1) != Target(1);
        Wrong += dispatchgen_test_entry(1, nullptr) != Target(1);
        // Keep patching until the sampler has seen the patched state.
        if (I == 999)
          for (unsigned Wait = 0; Samples.load() < 5 && Wait < 5000; ++Wait)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }
  Done = true;
  Sampler.join();
  ASSERT_TRUE(Failure.empty()) << Failure;
  EXPECT_EQ(Wrong, 0u);
  EXPECT_GE(Samples.load(), 5u);
  EXPECT_TRUE(Violations.empty())
      << Violations.size() << " mappings, e.g. " << Violations[0];
  // The compiled-in entry's page was swapped for shared memory (never the
  // host's file written), and is read+execute.
  for (const Mapping &M : readMaps())
    if (M.contains(TextPage))
      EXPECT_EQ(M.Perms, "r-xs") << M.Line;
}

TEST(TrampolineTest, AForkedChildPatchesOnlyItsOwnEntries) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  // ThreadSanitizer stops a child that starts threads after a fork of a
  // threaded process (a new call_rcu thread does); the normal and ASan
  // builds run it.
  GTEST_SKIP() << "fork() with threads is not supported under TSan";
#endif
#endif
  auto JIT = Trampoline::create(reinterpret_cast<uint64_t>(&progA), 4096);
  ASSERT_TRUE(!!JIT) << messageOf(JIT.takeError());
  auto AOT =
      Trampoline::adopt(reinterpret_cast<void *>(&dispatchgen_test_entry));
  ASSERT_TRUE(!!AOT) << messageOf(AOT.takeError());
  ASSERT_FALSE(!!(*JIT)->retarget(reinterpret_cast<uint64_t>(&progA)));
  ASSERT_FALSE(!!(*AOT)->retarget(reinterpret_cast<uint64_t>(&progA)));
  int ToChild[2], ToParent[2];
  ASSERT_EQ(pipe(ToChild), 0);
  ASSERT_EQ(pipe(ToParent), 0);
  pid_t Child = fork();
  ASSERT_GE(Child, 0);
  if (Child == 0) {
    alarm(30);
    close(ToParent[0]);
    close(ToChild[1]);
    // The child retargets both entries to progB, lets the parent check its
    // own, then checks that the parent's patches did not reach it.
    bool Ok = !(*JIT)->retarget(reinterpret_cast<uint64_t>(&progB)) &&
              !(*AOT)->retarget(reinterpret_cast<uint64_t>(&progB)) &&
              callEntry(**JIT, 1) == 2001 &&
              dispatchgen_test_entry(1, nullptr) == 2001;
    char C = Ok ? 'y' : 'n';
    (void)!write(ToParent[1], &C, 1);
    (void)!read(ToChild[0], &C, 1);
    Ok = Ok && callEntry(**JIT, 1) == 2001 &&
         dispatchgen_test_entry(1, nullptr) == 2001;
    _exit(Ok ? 0 : 1);
  }
  // Only the child holds these ends now: if it dies, reads see the end.
  close(ToParent[1]);
  close(ToChild[0]);
  char C = 0;
  ASSERT_EQ(read(ToParent[0], &C, 1), 1) << "the child died";
  EXPECT_EQ(C, 'y') << "the child's entries did not follow its patches";
  // The child's patches did not reach the parent; the parent's own do not
  // reach the child (checked there).
  EXPECT_EQ(callEntry(**JIT, 1), 1001);
  EXPECT_EQ(dispatchgen_test_entry(1, nullptr), 1001);
  ASSERT_FALSE(!!(*JIT)->retarget(reinterpret_cast<uint64_t>(&answer)));
  ASSERT_FALSE(!!(*AOT)->retarget(reinterpret_cast<uint64_t>(&answer)));
  EXPECT_EQ(callEntry(**JIT, 1), 42);
  ASSERT_EQ(write(ToChild[1], "x", 1), 1);
  int Status = 0;
  ASSERT_EQ(waitpid(Child, &Status, 0), Child);
  EXPECT_TRUE(WIFEXITED(Status) && WEXITSTATUS(Status) == 0)
      << "child status " << Status;
  close(ToChild[1]);
  close(ToParent[0]);
}

TEST(TrampolineTest, WithoutMemfdEntriesUseOtherSharedMemory) {
  const char *Shim = std::getenv("DISPATCHGEN_SHIM_FAIL");
  if (!Shim || std::string(Shim) != "memfd")
    GTEST_SKIP() << "run by ctest (trampoline-without-memfd) under a shim "
                    "that makes memfd_create fail";
  auto T = Trampoline::create(reinterpret_cast<uint64_t>(&progA));
  ASSERT_TRUE(!!T) << messageOf(T.takeError());
  ASSERT_FALSE(!!(*T)->retarget(reinterpret_cast<uint64_t>(&progB)));
  EXPECT_EQ(callEntry(**T, 1), 2001);
  bool Found = false;
  for (const Mapping &M : readMaps())
    if (M.contains((*T)->address())) {
      Found = true;
      EXPECT_EQ(M.Perms, "r-xs") << M.Line;
      EXPECT_EQ(M.Path.find("memfd:"), std::string::npos) << M.Line;
    }
  EXPECT_TRUE(Found);
}

TEST(TrampolineTest, WithoutExecutableSharedMemoryEntriesAreRefused) {
  const char *Shim = std::getenv("DISPATCHGEN_SHIM_FAIL");
  if (!Shim || std::string(Shim) != "all")
    GTEST_SKIP() << "run by ctest (trampoline-without-executable-shared-"
                    "memory) under a shim that leaves no shared memory";
  std::string Msg = messageOf(
      Trampoline::create(reinterpret_cast<uint64_t>(&progA)).takeError());
  EXPECT_NE(Msg.find("no shared memory can be mapped executable here"),
            std::string::npos)
      << Msg;
  EXPECT_NE(Msg.find("memfd_create"), std::string::npos) << Msg;
  Msg = messageOf(
      Trampoline::adopt(reinterpret_cast<void *>(&dispatchgen_test_entry))
          .takeError());
  EXPECT_NE(Msg.find("never used"), std::string::npos) << Msg;
  // Not adopted: still the plain indirect call.
  EXPECT_EQ(dispatchgen_test_entry(1, progA), 1001);
}

#else

TEST(TrampolineTest, OtherArchitecturesReportNotSupported) {
  std::string Msg = messageOf(Trampoline::checkSupported());
  EXPECT_NE(Msg.find("not supported"), std::string::npos);
  EXPECT_EQ(dispatchgen_test_entry(1, progA), 1001);
}

#endif

} // namespace
