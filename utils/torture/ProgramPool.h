//===- ProgramPool.h - dispatch-gen-torture's programs ----------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The programs the torture registers: JIT-compiled in batches (one JITDylib
// each), never reused. Each has a unique id, which it returns after
// spinning for as many pauses as the caller asks, and a record of its stage
// (live, removed, released) that readers look up by id. When the dispatcher
// releases a program, its code is poisoned with int3, so that a later call
// into it traps.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_UTILS_TORTURE_PROGRAMPOOL_H
#define DISPATCH_GEN_UTILS_TORTURE_PROGRAMPOOL_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace llvm::orc {
class LLJIT;
} // namespace llvm::orc

namespace dispatchgen::torture {

/// The IR of a program named Name that spins (pause) for its argument's
/// count of iterations, then returns Result; aligned to Align.
std::string spinningProgramIR(llvm::StringRef Name, uint64_t Result,
                              unsigned Align);

enum ProgramStage : uint8_t { PS_Live, PS_Removed, PS_Released };

struct Program {
  uint64_t Address = 0;
  uint32_t PoisonSize = 0;
  /// Written by the updater before the program is published in a slot
  /// (release store of the slot), read by readers after they loaded it.
  uint64_t AddedSeq = 0;
  /// Set by the updater before it unpublishes the program; 0: not removed.
  std::atomic<uint64_t> RemovedSeq{0};
  /// PS_Released is stored by the release callback, before the poison.
  std::atomic<uint8_t> Stage{PS_Live};
};

/// Records by id, in chunks that never move, so readers can look up any id
/// below NextId while the updater appends. Chunks are created by the
/// updater and published with NextId (release).
class ProgramTable {
public:
  static constexpr unsigned ChunkBits = 12, MaxChunks = 1u << 14;
  Program *get(uint64_t Id) {
    return &Chunks[Id >> ChunkBits].load(
        std::memory_order_acquire)[Id & ((1u << ChunkBits) - 1)];
  }
  /// Updater only.
  Program *create(uint64_t Id) {
    unsigned C = Id >> ChunkBits;
    if (C >= MaxChunks)
      return nullptr;
    if (!Chunks[C].load(std::memory_order_relaxed))
      Chunks[C].store(new Program[1u << ChunkBits], std::memory_order_release);
    return get(Id);
  }
  ~ProgramTable() {
    for (auto &C : Chunks)
      delete[] C.load();
  }

private:
  std::array<std::atomic<Program *>, MaxChunks> Chunks{};
};

/// The programs, compiled in J a batch at a time as the updater needs them.
class ProgramPool {
public:
  static constexpr unsigned BatchSize = 64;
  /// Programs are 64-byte aligned and smaller than that; the poison covers
  /// the function up to the next program.
  static constexpr unsigned ProgramAlign = 64;

  explicit ProgramPool(llvm::orc::LLJIT &J);

  /// Compiles the next batch of programs (updater only).
  llvm::Error compileBatch();
  /// A compiled program never registered yet, by id (updater only).
  llvm::Expected<uint64_t> freshProgram();
  /// OnRelease: poisons the program at Address (the call_rcu thread).
  void release(uint64_t Address);

  /// The record of any id below end().
  Program *get(uint64_t Id) { return Table.get(Id); }
  /// Ids below it have a record (acquire: their records are written).
  uint64_t end() const { return NextId.load(std::memory_order_acquire); }
  uint64_t compiled() const { return NextId.load() - 1; }
  unsigned batches() const { return Batches; }
  uint64_t released() const { return ReleasedAsync.load(); }

private:
  llvm::orc::LLJIT &J;
  ProgramTable Table;
  /// Ids below it have a record (written by the updater; release).
  std::atomic<uint64_t> NextId{1};
  /// Compiled, never registered programs, for adds (updater only).
  std::vector<uint64_t> Fresh;
  unsigned Batches = 0;
  /// Address -> id, for the release callback (updater inserts, the
  /// call_rcu thread looks up; under ReleaseMutex).
  std::mutex ReleaseMutex;
  std::unordered_map<uint64_t, uint64_t> IdOf;
  uint64_t PageSize = 4096;
  std::atomic<uint64_t> ReleasedAsync{0};
};

} // namespace dispatchgen::torture

#endif // DISPATCH_GEN_UTILS_TORTURE_PROGRAMPOOL_H
