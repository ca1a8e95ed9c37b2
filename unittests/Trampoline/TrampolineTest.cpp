//===- TrampolineTest.cpp - Tests of the patchable entry ------------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Trampoline.h"

#include "gtest/gtest.h"

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

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

TEST(TrampolineTest, ConcurrentCallersSeeOldOrNewTargetNeverATornOne) {
  auto T = cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA)));
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
  std::atomic<bool> Stop{false};
  std::atomic<uint64_t> Calls{0}, Wrong{0};
  std::vector<std::thread> Callers;
  for (int I = 0; I < 2; ++I)
    Callers.emplace_back([&] {
      while (!Stop.load(std::memory_order_relaxed)) {
        int R = callEntry(*T, 1);
        if (R != 1001 && R != 2001)
          Wrong.fetch_add(1, std::memory_order_relaxed);
        Calls.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (int I = 0; I < 20000; ++I)
    cantFail(T->retarget(reinterpret_cast<uint64_t>(I % 2 ? &progA : &progB)));
  Stop = true;
  for (std::thread &C : Callers)
    C.join();
  EXPECT_EQ(Wrong.load(), 0u);
  EXPECT_GT(Calls.load(), 0u);
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

TEST(TrampolineTest, ConcurrentCallersSeeTheGateOpenOrClosedNeverTorn) {
  // The gate word flips between an 8-byte nop and `jmp rel32` under two
  // callers: each call runs the resident code or the target, whole.
  auto T =
      cantFail(Trampoline::create(reinterpret_cast<uint64_t>(&progA), 4096));
  cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
  const uint8_t Code[] = {0xb8, 77, 0, 0, 0, 0xc3};
  cantFail(T->writeResident(Code));
  std::atomic<bool> Stop{false};
  std::atomic<uint64_t> Resident{0}, Jumped{0}, Wrong{0};
  std::vector<std::thread> Callers;
  for (int I = 0; I < 2; ++I)
    Callers.emplace_back([&] {
      while (!Stop.load(std::memory_order_relaxed)) {
        int R = callEntry(*T, 1);
        (R == 77     ? Resident
         : R == 1001 ? Jumped
                     : Wrong)
            .fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (int I = 0; I < 20000; ++I) {
    if (I % 2)
      cantFail(T->retarget(reinterpret_cast<uint64_t>(&progA)));
    else
      cantFail(T->openGate());
  }
  Stop = true;
  for (std::thread &C : Callers)
    C.join();
  EXPECT_EQ(Wrong.load(), 0u);
  EXPECT_GT(Resident.load() + Jumped.load(), 0u);
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

#else

TEST(TrampolineTest, OtherArchitecturesReportNotSupported) {
  std::string Msg = messageOf(Trampoline::checkSupported());
  EXPECT_NE(Msg.find("not supported"), std::string::npos);
  EXPECT_EQ(dispatchgen_test_entry(1, progA), 1001);
}

#endif

} // namespace
