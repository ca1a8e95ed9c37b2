//===- NearArena.h - Process-wide executable memory near code ---*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Every dispatcher of a process takes its code memory from one arena: JIT
// entries with their resident areas, and images. The arena reserves
// address space lazily, in chunks of 1 MiB (a larger request gets a chunk
// of its own), each placed near the code that asked for it, and packs the
// blocks of all dispatchers into them: a dispatcher costs the bytes its
// code needs, not pages or reserved regions of its own, and how many fit
// does not depend on the address-space layout of the run.
//
// A chunk is shared memory mapped twice: read+execute where the code runs
// and read+write elsewhere, where it is written (no page is ever writable
// and executable). A block is written before anything jumps to it, and
// released only after its grace period; the arena then fills it with
// `hlt` (a privileged instruction: a late call faults at once, whatever
// the offset it lands on) before it can be reused. A chunk that becomes
// wholly free is unmapped, except the last one.
//
// fork(): the child moves every chunk onto a private copy at the same
// address (see DualMapping), so neither process writes the other's code.
//
// Private to the Trampoline and Dispatcher components. Thread-safe.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_TRAMPOLINE_NEARARENA_H
#define DISPATCH_GEN_LIB_TRAMPOLINE_NEARARENA_H

#include "llvm/Support/Error.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

namespace dispatchgen {

/// Shared memory mapped twice: Exec (read+execute, where code runs) and
/// Write (read+write, where the updater writes). fork() would leave both
/// processes on the same memory, so that an update in one patched the
/// other's code: the child gets a private copy of every remembered one.
struct DualMapping {
  char *Exec;
  char *Write;
  size_t Size;
};

/// Registers M (alive until forgotten) for the fork handlers.
void rememberDualMapping(DualMapping &M);
void forgetDualMapping(DualMapping &M);

/// Guards the adopted compiled-in entries and the views of their pages;
/// held across fork().
std::mutex &textPatchMutex();

/// Size bytes of shared memory that may be mapped executable, as a file
/// descriptor: a memfd, else (a sandbox without memfd_create, or
/// vm.memfd_noexec) a POSIX shared memory object unlinked at once, else an
/// unnamed file in /dev/shm or /tmp. The error lists why each failed.
llvm::Expected<int> executableSharedMemory(size_t Size);

/// Maps Size bytes of Fd (or anonymous memory when Fd < 0) with Prot, at a
/// free address whose every byte lies within MaxDistance of Near, as close
/// to it as possible; anywhere when Near is 0. MAP_FAILED if none is free.
void *mapNear(uint64_t Near, size_t Size, int Prot, int Flags, int Fd,
              uint64_t MaxDistance);

/// Maps Fd shared over [Addr, Addr + Size), replacing what is there, by a
/// raw system call (see NearArena.cpp).
void *mapFixed(void *Addr, size_t Size, int Prot, int Fd);

class NearArena {
public:
  /// A block of code memory: executable at Address, writable at
  /// writable() (which a fork() moves in the child: never keep it).
  struct Block {
    uint64_t Address = 0;
    size_t Size = 0;
    /// The chunk's mapping.
    const DualMapping *Map = nullptr;
    char *writable() const {
      return Map->Write + (Address - reinterpret_cast<uint64_t>(Map->Exec));
    }
  };

  /// How far from the Near of a request every byte of its block may lie,
  /// so that a rel32 branch between the block and anything within Reach of
  /// Near on the other side still reaches.
  static constexpr uint64_t Reach = 1ull << 30;
  /// What released memory holds until it is reused: `hlt`.
  static constexpr uint8_t FreeFill = 0xf4;
  static constexpr size_t ChunkSize = 1u << 20;

  /// The process's arena (never destroyed: code may run until exit).
  static NearArena &get();

  /// Size bytes (rounded up to 16) at an Align-aligned address (Align a
  /// power of two, at most a page) within Reach of Near (0: of where mmap puts
  /// new memory now). Memory never used before holds zeros, released memory
  /// FreeFill: the owner writes the whole block before anything runs it.
  llvm::Expected<Block> allocate(size_t Size, size_t Align, uint64_t Near);
  /// Gives B back. No thread may run it any more (its grace period has
  /// passed).
  void release(const Block &B);

  /// Testing only: released blocks wait in a FIFO of the last Count
  /// releases before they can be reused, so a caller left behind in one
  /// faults on FreeFill instead of running the next block placed there.
  /// The largest count asked for holds, process-wide.
  void setQuarantineForTesting(size_t Count);

  struct Stats {
    size_t Chunks = 0;
    uint64_t ReservedBytes = 0;
    uint64_t BytesInUse = 0;
    uint64_t Blocks = 0;
  };
  Stats stats();

  /// Held across fork() (see the fork handlers).
  std::mutex &mutex() { return M; }

private:
  struct Chunk {
    DualMapping Map;
    /// Free ranges by offset (coalesced), and the same by size (best fit).
    std::map<size_t, size_t> Free;
    std::set<std::pair<size_t, size_t>> BySize;
    size_t InUse = 0;
    bool contains(uint64_t Address) const {
      uint64_t Base = reinterpret_cast<uint64_t>(Map.Exec);
      return Address >= Base && Address < Base + Map.Size;
    }
  };

  NearArena() = default;
  /// Where the next mapping without a hint would go (0 if none can be had).
  static uint64_t newMemoryAddress();
  /// M must be held.
  std::optional<Block> carve(Chunk &C, size_t Size, size_t Align);
  void addFree(Chunk &C, size_t Offset, size_t Size);
  static void insertFree(Chunk &C, size_t Offset, size_t Size);
  static void eraseFree(Chunk &C, std::map<size_t, size_t>::iterator It);
  void giveBack(const Block &B);
  llvm::Expected<Chunk *> newChunk(size_t Size, uint64_t Near);

  std::mutex M;
  std::vector<std::unique_ptr<Chunk>> Chunks;
  std::deque<Block> Quarantine;
  size_t QuarantineLimit = 0;
  uint64_t Blocks = 0;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_TRAMPOLINE_NEARARENA_H
