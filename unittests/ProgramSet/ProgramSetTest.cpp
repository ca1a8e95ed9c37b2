//===- ProgramSetTest.cpp - Tests of the refcounted program registry ------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/ProgramSet.h"

#include "gtest/gtest.h"

using namespace dispatchgen;

namespace {

/// The value of V, failing the test (with the message) when V is an error.
template <typename T> T expectValue(llvm::Expected<T> V) {
  if (!V) {
    ADD_FAILURE() << "unexpected error: " << llvm::toString(V.takeError());
    return T();
  }
  return std::move(*V);
}

/// Fails the test unless V is an error whose message contains Substr.
template <typename T>
void expectError(llvm::Expected<T> V, llvm::StringRef Substr) {
  if (V) {
    ADD_FAILURE() << "expected an error containing '" << Substr.str() << "'";
    return;
  }
  std::string Msg = llvm::toString(V.takeError());
  EXPECT_NE(Msg.find(Substr.str()), std::string::npos) << Msg;
}

constexpr uint64_t A = 0x1000, B = 0x2000, C = 0x3000;

std::vector<uint64_t> addresses(const std::vector<ProgramEntry> &Entries) {
  std::vector<uint64_t> Result;
  for (const ProgramEntry &E : Entries)
    Result.push_back(E.Address);
  return Result;
}

/// Everything observable about a set, to prove an operation changed nothing.
std::vector<std::tuple<uint64_t, std::string, unsigned>>
state(const ProgramSet &S) {
  std::vector<std::tuple<uint64_t, std::string, unsigned>> Result;
  for (const ProgramEntry &E : S.entries())
    Result.emplace_back(E.Address, E.Name, E.Users);
  return Result;
}

TEST(ProgramSetTest, DefaultCapacityIsTheKernels) {
  EXPECT_EQ(ProgramSet().capacity(), 48u);
  EXPECT_EQ(ProgramSet(4096).capacity(), 4096u);
}

TEST(ProgramSetTest, FirstAddEntersTheSet) {
  ProgramSet S;
  ProgramSetDelta D = expectValue(S.add(A, "drop_tcp"));
  EXPECT_TRUE(D.changed());
  EXPECT_EQ(addresses(D.Added), std::vector<uint64_t>{A});
  EXPECT_EQ(D.Added[0].Name, "drop_tcp");
  EXPECT_TRUE(D.Removed.empty());
  EXPECT_TRUE(S.contains(A));
  EXPECT_EQ(S.users(A), 1u);
}

TEST(ProgramSetTest, SecondAddOnlyRaisesRefcount) {
  ProgramSet S;
  expectValue(S.add(A));
  ProgramSetDelta D = expectValue(S.add(A));
  EXPECT_FALSE(D.changed());
  EXPECT_EQ(S.size(), 1u);
  EXPECT_EQ(S.users(A), 2u);
}

TEST(ProgramSetTest, OnlyLastRemoveTakesProgramOut) {
  ProgramSet S;
  expectValue(S.add(A, "a"));
  expectValue(S.add(A));
  ProgramSetDelta First = expectValue(S.remove(A));
  EXPECT_FALSE(First.changed());
  EXPECT_EQ(S.users(A), 1u);
  ProgramSetDelta Last = expectValue(S.remove(A));
  EXPECT_TRUE(Last.changed());
  EXPECT_EQ(addresses(Last.Removed), std::vector<uint64_t>{A});
  EXPECT_EQ(Last.Removed[0].Name, "a");
  EXPECT_FALSE(S.contains(A));
  EXPECT_EQ(S.users(A), 0u);
}

TEST(ProgramSetTest, EntriesAreSortedByAddress) {
  ProgramSet S;
  expectValue(S.add(C));
  expectValue(S.add(A));
  expectValue(S.add(B));
  EXPECT_EQ(addresses(S.entries()), (std::vector<uint64_t>{A, B, C}));
}

TEST(ProgramSetTest, NullProgramIsAnErrorAndChangesNothing) {
  ProgramSet S;
  expectValue(S.add(A));
  auto Before = state(S);
  expectError(S.add(0), "cannot add a null program");
  expectError(S.remove(0), "cannot remove a null program");
  EXPECT_EQ(state(S), Before);
}

TEST(ProgramSetTest, RemovingUnknownProgramIsAnErrorAndChangesNothing) {
  ProgramSet S;
  expectValue(S.add(A));
  auto Before = state(S);
  expectError(S.remove(B), "program 0x2000 is not registered");
  EXPECT_EQ(state(S), Before);
}

TEST(ProgramSetTest, FullSetRefusesNewProgramButNotNewReference) {
  ProgramSet S(2);
  expectValue(S.add(A));
  expectValue(S.add(B));
  auto Before = state(S);
  expectError(S.add(C, "c"),
              "cannot add program 'c' (0x3000): the dispatcher is full (2 "
              "programs)");
  EXPECT_EQ(state(S), Before);
  // Another reference to a registered program needs no room.
  expectValue(S.add(A));
  EXPECT_EQ(S.users(A), 2u);
}

TEST(ProgramSetTest, ChangeFromNullIsAdd) {
  ProgramSet S;
  ProgramSetDelta D = expectValue(S.change(0, A, "a"));
  EXPECT_EQ(addresses(D.Added), std::vector<uint64_t>{A});
  EXPECT_EQ(S.users(A), 1u);
}

TEST(ProgramSetTest, ChangeToNullIsRemove) {
  ProgramSet S;
  expectValue(S.add(A));
  ProgramSetDelta D = expectValue(S.change(A, 0));
  EXPECT_EQ(addresses(D.Removed), std::vector<uint64_t>{A});
  EXPECT_TRUE(S.empty());
}

TEST(ProgramSetTest, ChangeToSameProgramIsANoOp) {
  ProgramSet S;
  expectValue(S.add(A));
  auto Before = state(S);
  ProgramSetDelta D = expectValue(S.change(A, A));
  EXPECT_FALSE(D.changed());
  EXPECT_EQ(state(S), Before);
  // Even for a program that is not registered: from == to does nothing.
  D = expectValue(S.change(B, B));
  EXPECT_FALSE(D.changed());
  EXPECT_EQ(state(S), Before);
  D = expectValue(S.change(0, 0));
  EXPECT_FALSE(D.changed());
}

TEST(ProgramSetTest, ChangeSwapsOneProgramForAnother) {
  ProgramSet S;
  expectValue(S.add(A));
  ProgramSetDelta D = expectValue(S.change(A, B));
  EXPECT_EQ(addresses(D.Removed), std::vector<uint64_t>{A});
  EXPECT_EQ(addresses(D.Added), std::vector<uint64_t>{B});
  EXPECT_EQ(addresses(S.entries()), std::vector<uint64_t>{B});
}

TEST(ProgramSetTest, ChangeOfSharedProgramKeepsItAndRegeneratesForNewOne) {
  ProgramSet S;
  expectValue(S.add(A));
  expectValue(S.add(A));
  ProgramSetDelta D = expectValue(S.change(A, B));
  EXPECT_TRUE(D.Removed.empty());
  EXPECT_EQ(addresses(D.Added), std::vector<uint64_t>{B});
  EXPECT_EQ(S.users(A), 1u);
}

TEST(ProgramSetTest, ChangeInFullSetFreesRoomFirst) {
  // The kernel removes `from` before adding `to`.
  ProgramSet S(1);
  expectValue(S.add(A));
  ProgramSetDelta D = expectValue(S.change(A, B));
  EXPECT_TRUE(D.changed());
  EXPECT_EQ(addresses(S.entries()), std::vector<uint64_t>{B});
}

TEST(ProgramSetTest, FailedChangeChangesNothing) {
  ProgramSet S(1);
  expectValue(S.add(A));
  auto Before = state(S);
  // From is unknown: the add of To must not happen either.
  expectError(S.change(B, C), "program 0x2000 is not registered");
  EXPECT_EQ(state(S), Before);
  // From is shared, so removing it frees no room: To does not fit, and From
  // keeps both references.
  expectValue(S.add(A));
  Before = state(S);
  expectError(S.change(A, C), "the dispatcher is full (1 programs)");
  EXPECT_EQ(state(S), Before);
}

TEST(ProgramSetTest, BatchAppliesEverythingWithOneDelta) {
  ProgramSet S;
  expectValue(S.add(A));
  ProgramSet::Batch Ops;
  Ops.add(B).add(C).remove(A).change(0, 0x4000);
  ProgramSetDelta D = expectValue(S.apply(Ops));
  EXPECT_EQ(addresses(D.Added), (std::vector<uint64_t>{B, C, 0x4000}));
  EXPECT_EQ(addresses(D.Removed), std::vector<uint64_t>{A});
  EXPECT_EQ(addresses(S.entries()), (std::vector<uint64_t>{B, C, 0x4000}));
}

TEST(ProgramSetTest, BatchThatAddsAndRemovesSameProgramIsNoChange) {
  ProgramSet S;
  ProgramSet::Batch Ops;
  Ops.add(A).remove(A);
  ProgramSetDelta D = expectValue(S.apply(Ops));
  EXPECT_FALSE(D.changed());
  EXPECT_TRUE(S.empty());

  expectValue(S.add(B));
  ProgramSet::Batch Readd;
  Readd.remove(B).add(B);
  D = expectValue(S.apply(Readd));
  EXPECT_FALSE(D.changed());
  EXPECT_EQ(S.users(B), 1u);
}

TEST(ProgramSetTest, FailedBatchRollsBackEveryOperation) {
  ProgramSet S(3);
  expectValue(S.add(A, "a"));
  expectValue(S.add(A));
  expectValue(S.add(B, "b"));
  auto Before = state(S);
  ProgramSet::Batch Ops;
  // Drops a reference of A, removes B, adds C and D, then fails on E (full).
  Ops.remove(A).remove(B).add(C).add(0x4000).add(0x5000);
  expectError(S.apply(Ops), "operation 5 of 5 in the batch failed, nothing "
                            "was changed: cannot add program 0x5000: the "
                            "dispatcher is full (3 programs)");
  EXPECT_EQ(state(S), Before);
}

TEST(ProgramSetTest, FailedBatchOfOneReturnsItsOwnError) {
  ProgramSet S;
  expectValue(S.add(A));
  auto Before = state(S);
  auto D = S.apply(ProgramSet::Batch().remove(B));
  ASSERT_FALSE(!!D);
  EXPECT_EQ(llvm::toString(D.takeError()), "program 0x2000 is not registered");
  EXPECT_EQ(state(S), Before);
}

TEST(ProgramSetTest, EmptyBatchChangesNothing) {
  ProgramSet S;
  ProgramSet::Batch Ops;
  EXPECT_TRUE(Ops.empty());
  EXPECT_FALSE(expectValue(S.apply(Ops)).changed());
}

TEST(ProgramSetTest, ThousandsOfProgramsFit) {
  ProgramSet S(4096);
  ProgramSet::Batch Ops;
  for (uint64_t I = 1; I <= 4096; ++I)
    Ops.add(I * 16);
  ProgramSetDelta D = expectValue(S.apply(Ops));
  EXPECT_EQ(D.Added.size(), 4096u);
  EXPECT_EQ(S.size(), 4096u);
  expectError(S.add(0x10 * 4097), "the dispatcher is full (4096 programs)");
  // Another reference to a registered program still fits.
  EXPECT_FALSE(expectValue(S.add(0x10)).changed());
  EXPECT_EQ(S.users(0x10), 2u);
}

} // namespace

TEST(ProgramSetRevertTest, RevertPutsMembershipAndCountsBack) {
  ProgramSet S(4);
  ASSERT_FALSE(!!S.add(0x1000, "a").takeError());
  ASSERT_FALSE(!!S.add(0x1000).takeError()); // two users
  ASSERT_FALSE(!!S.add(0x2000, "b").takeError());
  std::vector<ProgramEntry> Before = S.entries();
  // One batch that drops a user, removes a program, adds two and renames
  // nothing: revert must restore all of it, counts and names included.
  auto D = S.apply(ProgramSet::Batch()
                       .remove(0x1000)
                       .remove(0x2000)
                       .add(0x3000, "c")
                       .change(0x3000, 0x4000, "d"));
  ASSERT_TRUE(!!D) << llvm::toString(D.takeError());
  EXPECT_TRUE(D->changed());
  EXPECT_FALSE(S.contains(0x2000));
  EXPECT_TRUE(S.contains(0x4000));
  EXPECT_EQ(S.users(0x1000), 1u);
  S.revert(*D);
  std::vector<ProgramEntry> After = S.entries();
  ASSERT_EQ(After.size(), Before.size());
  for (size_t I = 0; I < Before.size(); ++I) {
    EXPECT_EQ(After[I].Address, Before[I].Address);
    EXPECT_EQ(After[I].Name, Before[I].Name);
    EXPECT_EQ(After[I].Users, Before[I].Users);
  }
  EXPECT_FALSE(S.contains(0x3000));
  EXPECT_FALSE(S.contains(0x4000));
  // A delta that changed nothing reverts to the same set.
  auto Same = S.change(0x1000, 0x1000);
  ASSERT_TRUE(!!Same);
  S.revert(*Same);
  EXPECT_EQ(S.users(0x1000), 2u);
}
