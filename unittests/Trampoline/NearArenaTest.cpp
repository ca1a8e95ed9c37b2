//===- NearArenaTest.cpp - The process-wide code arena --------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "Trampoline/NearArena.h"

#include "gtest/gtest.h"

#include "llvm/Support/Error.h"

#include <atomic>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

using namespace dispatchgen;

namespace {

extern "C" __attribute__((noinline)) int arenaAnchor(int X) { return X + 7; }

uint64_t anchor() { return reinterpret_cast<uint64_t>(&arenaAnchor); }

uint64_t distance(uint64_t A, uint64_t B) { return A > B ? A - B : B - A; }

NearArena::Block allocateOrFail(size_t Size, size_t Align, uint64_t Near) {
  auto B = NearArena::get().allocate(Size, Align, Near);
  if (!B) {
    ADD_FAILURE() << llvm::toString(B.takeError());
    return {};
  }
  return *B;
}

/// Mappings of the arena's shared memory (memfds named "dispatch-gen"):
/// only those, since a sanitizer's allocator maps memory of its own.
size_t mappings() {
  std::ifstream Maps("/proc/self/maps");
  size_t N = 0;
  for (std::string L; std::getline(Maps, L);)
    N += L.find("dispatch-gen") != std::string::npos;
  return N;
}

TEST(NearArenaTest, BlocksOfManyOwnersArePackedNearTheirAnchor) {
  size_t MapsBefore = mappings();
  std::vector<NearArena::Block> Blocks;
  for (int I = 0; I < 2000; ++I)
    Blocks.push_back(allocateOrFail(200, 64, anchor()));
  std::set<uint64_t> Pages;
  uint64_t PS = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (size_t I = 0; I < Blocks.size(); ++I) {
    const NearArena::Block &B = Blocks[I];
    ASSERT_NE(B.Address, 0u);
    EXPECT_EQ(B.Address % 64, 0u);
    EXPECT_GE(B.Size, 200u);
    EXPECT_LE(distance(B.Address, anchor()), NearArena::Reach);
    EXPECT_LE(distance(B.Address + B.Size, anchor()), NearArena::Reach);
    Pages.insert(B.Address / PS);
  }
  // No two blocks overlap.
  std::vector<std::pair<uint64_t, uint64_t>> Ranges;
  for (const NearArena::Block &B : Blocks)
    Ranges.push_back({B.Address, B.Address + B.Size});
  std::sort(Ranges.begin(), Ranges.end());
  for (size_t I = 1; I < Ranges.size(); ++I)
    EXPECT_LE(Ranges[I - 1].second, Ranges[I].first);
  // 2,000 blocks of 208 bytes share about 100 pages, not 2,000, and a
  // chunk or two: a handful of mappings, not one per block.
  EXPECT_LT(Pages.size(), 2000u * 256 / PS + 4);
  EXPECT_GT(mappings(), 0u) << "the arena's memfds are named dispatch-gen";
  EXPECT_LE(mappings(), MapsBefore + 4);
  for (const NearArena::Block &B : Blocks)
    NearArena::get().release(B);
}

TEST(NearArenaTest, WrittenBytesRunAtTheAddressAndReleasedOnesHoldHlt) {
  NearArena::Block B = allocateOrFail(16, 16, anchor());
  ASSERT_NE(B.Address, 0u);
  // mov $42, %eax; ret
  const uint8_t Code[] = {0xb8, 42, 0, 0, 0, 0xc3};
  std::memcpy(B.writable(), Code, sizeof(Code));
  EXPECT_EQ(reinterpret_cast<int (*)()>(B.Address)(), 42);
  NearArena::get().release(B);
  const auto *Bytes = reinterpret_cast<const uint8_t *>(B.Address);
  for (size_t I = 0; I < B.Size; ++I)
    EXPECT_EQ(Bytes[I], NearArena::FreeFill) << "byte " << I;
  // Reused: the best fit for the same size is the range just given back.
  NearArena::Block Again = allocateOrFail(16, 16, anchor());
  EXPECT_EQ(Again.Address, B.Address);
  NearArena::get().release(Again);
}

TEST(NearArenaTest, ABlockLargerThanAChunkGetsOneAndGivesItBack) {
  auto Before = NearArena::get().stats();
  size_t MapsBefore = mappings();
  NearArena::Block Big = allocateOrFail(2 * NearArena::ChunkSize, 64, anchor());
  ASSERT_NE(Big.Address, 0u);
  EXPECT_LE(distance(Big.Address + Big.Size, anchor()), NearArena::Reach);
  auto During = NearArena::get().stats();
  EXPECT_GT(During.ReservedBytes, Before.ReservedBytes);
  NearArena::get().release(Big);
  auto After = NearArena::get().stats();
  EXPECT_EQ(After.BytesInUse, Before.BytesInUse);
  EXPECT_LE(After.Chunks, std::max<size_t>(Before.Chunks, 1));
  EXPECT_LE(mappings(), MapsBefore + 2);
}

TEST(NearArenaTest, FreeRangesCoalesce) {
  // Three neighbours released in any order make one range again: a block
  // of their joint size fits where they were.
  NearArena::Block A = allocateOrFail(64, 64, anchor());
  NearArena::Block B = allocateOrFail(64, 64, anchor());
  NearArena::Block C = allocateOrFail(64, 64, anchor());
  ASSERT_EQ(B.Address, A.Address + 64);
  ASSERT_EQ(C.Address, B.Address + 64);
  NearArena::get().release(C);
  NearArena::get().release(A);
  NearArena::get().release(B);
  auto S = NearArena::get().stats();
  EXPECT_EQ(S.BytesInUse, 0u);
  NearArena::Block Joint = allocateOrFail(192, 64, anchor());
  EXPECT_EQ(Joint.Address, A.Address);
  NearArena::get().release(Joint);
}

TEST(NearArenaTest, ThreadsAllocatingAndReleasingAtOnceNeverShareABlock) {
  // Each thread fills its blocks with its own byte and checks them before
  // releasing: a block handed out twice shows the other thread's byte.
  std::atomic<unsigned> Corrupt{0}, Failed{0};
  auto Worker = [&](uint8_t Mark) {
    std::vector<NearArena::Block> Mine;
    for (unsigned I = 0; I < 3000; ++I) {
      size_t Size = 16 + (I * 37 + Mark) % 300;
      auto B = NearArena::get().allocate(Size, I % 3 ? 16 : 64, anchor());
      if (!B) {
        llvm::consumeError(B.takeError());
        ++Failed;
        continue;
      }
      std::memset(B->writable(), Mark, B->Size);
      Mine.push_back(*B);
      if (Mine.size() > 40 || I % 7 == 0) {
        size_t K = (I * 13) % Mine.size();
        const NearArena::Block &Old = Mine[K];
        const auto *Bytes = reinterpret_cast<const uint8_t *>(Old.Address);
        for (size_t J = 0; J < Old.Size; ++J)
          if (Bytes[J] != Mark) {
            ++Corrupt;
            break;
          }
        NearArena::get().release(Old);
        Mine.erase(Mine.begin() + K);
      }
    }
    for (const NearArena::Block &B : Mine)
      NearArena::get().release(B);
  };
  std::thread A(Worker, 0x11), B(Worker, 0x22);
  Worker(0x33);
  A.join();
  B.join();
  EXPECT_EQ(Failed.load(), 0u);
  EXPECT_EQ(Corrupt.load(), 0u);
}

TEST(NearArenaTest, BadAlignmentsAreErrors) {
  auto B = NearArena::get().allocate(16, 48, anchor());
  ASSERT_FALSE(!!B);
  EXPECT_NE(llvm::toString(B.takeError()).find("bad code alignment 48"),
            std::string::npos);
}

} // namespace
