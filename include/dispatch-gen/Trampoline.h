//===- Trampoline.h - The patchable, stable dispatcher entry ----*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Callers call a dispatcher through a trampoline: a `jmp rel32` whose
// displacement is rewritten when a new image goes live. The rules
// production JITs (HotSpot, V8, DynamoRIO) rely on for cross-modifying code
// hold here:
//
//  * the whole 5-byte jump lies in one naturally aligned 8-byte word, which
//    is rewritten by one atomic store, so a concurrent caller runs either the
//    old or the new jump, never a torn one;
//  * the page never loses execute permission: a JIT trampoline is written
//    through a second, writable mapping of the same shared memory (a
//    memfd; without one, a POSIX shared memory object or an unnamed file
//    in /dev/shm or /tmp; with none of them, create() fails: no page is
//    ever writable and executable at once). A compiled-in entry's page is
//    swapped, on adoption, for an identical read+execute shared mapping
//    written the same way, so the host's text is never made writable;
//  * after the store, membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)
//    serialises every running thread of the process, as Intel's rules for
//    cross-modifying code ask.
//
// Two kinds of entry:
//
//  * JIT: Trampoline::create() places an entry in fresh executable memory
//    near an address; JIT-compiled callers link against its address.
//  * Compiled (AOT): DISPATCHGEN_DEFINE_DISPATCHER (below) defines the entry
//    function in the host binary's own text, as the kernel's
//    DEFINE_BPF_DISPATCHER does. Until a dispatcher adopts it, and again
//    after reset(), it performs the plain indirect call.
//
// A JIT entry may also have a resident area right behind its first word,
// where a copy of the live image runs in place: the entry's first word is
// then an 8-byte nop (the gate is open) and a call falls through into the
// image instead of taking one more jump. An update closes the gate (the
// word becomes `jmp` to the new image elsewhere), waits for a grace period
// so no caller is left in the area, rewrites it and opens the gate again.
// The 8-byte nop and the jump are each one instruction in the same aligned
// word, so a caller sees one or the other whole.
//
// fork(): the child moves every entry (and every swapped text page) onto a
// private copy at the same address, so neither process patches the other.
//
// x86-64 only: elsewhere create() and adopt() fail with a "not supported"
// error and compiled-in entries keep doing the indirect call.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_TRAMPOLINE_H
#define DISPATCH_GEN_TRAMPOLINE_H

#ifdef __cplusplus
#define DISPATCHGEN_EXTERN_C extern "C"
#else
#define DISPATCHGEN_EXTERN_C
#endif

/// Defines `Ret Name Params` in the host's text as a patchable entry:
///
///   DISPATCHGEN_DEFINE_DISPATCHER(xdp_dispatch, unsigned int,
///       (const void *ctx, const void *insn, xdp_prog prog),
///       prog(ctx, insn));
///
/// Call is the plain indirect call the entry makes while no dispatcher is
/// attached. Use at namespace scope, followed by a semicolon, once per
/// entry, in C or C++; pass Name to Trampoline::adopt() (or, from C, to
/// DispatchGenConfigSetCompiledEntry).
#if defined(__x86_64__) && defined(__ELF__)
#define DISPATCHGEN_DEFINE_DISPATCHER(Name, Ret, Params, Call)                 \
  DISPATCHGEN_EXTERN_C Ret Name Params;                                        \
  DISPATCHGEN_EXTERN_C                                                         \
  __attribute__((used, noinline)) Ret Name##_dispatchgen_indirect Params {     \
    return Call;                                                               \
  }                                                                            \
  /* A 5-byte nop, alone at the start of an 8-byte aligned word, that  */      \
  /* Trampoline rewrites into `jmp rel32`; then the indirect call.     */      \
  __asm__(".pushsection .text.dispatchgen,\"ax\",@progbits\n"                  \
          ".globl " #Name "\n"                                                 \
          ".type " #Name ",@function\n"                                        \
          ".p2align 3\n" #Name ":\n"                                           \
          ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"                               \
          "jmp " #Name "_dispatchgen_indirect\n"                               \
          ".size " #Name ", .-" #Name "\n"                                     \
          ".popsection\n")
#else
#define DISPATCHGEN_DEFINE_DISPATCHER(Name, Ret, Params, Call)                 \
  DISPATCHGEN_EXTERN_C Ret Name Params { return Call; }
#endif

#ifdef __cplusplus

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>

namespace dispatchgen {

class Trampoline {
public:
  /// Success on x86-64 Linux; otherwise a "not supported" error.
  static llvm::Error checkSupported();

  /// Creates a JIT entry in new executable memory as close to Near as the
  /// address space allows (within +-1 GiB), so that images placed near it
  /// reach it and Near with rel32 jumps; Near 0 stands for where mmap puts
  /// new memory now (next to the shared libraries and JIT memory). Until
  /// the first retarget() the entry traps (ud2).
  /// ResidentBytes > 0 reserves a resident area of at least that many
  /// bytes right after the entry's first word (rounded up to 64). Entries
  /// of all dispatchers share pages: each takes a cache line, or a line
  /// more than its resident area.
  static llvm::Expected<std::unique_ptr<Trampoline>>
  create(uint64_t Near, size_t ResidentBytes = 0);

  /// Takes over an entry defined by DISPATCHGEN_DEFINE_DISPATCHER; fails if
  /// Entry does not hold the macro's code (or is adopted already).
  static llvm::Expected<std::unique_ptr<Trampoline>> adopt(void *Entry);

  /// Puts a compiled-in entry back to its indirect call; frees JIT memory.
  ~Trampoline();
  Trampoline(const Trampoline &) = delete;
  Trampoline &operator=(const Trampoline &) = delete;

  /// The address callers call.
  uint64_t address() const { return Entry; }
  /// Where the entry jumps now; 0 for a compiled-in entry doing its
  /// indirect call, or a JIT entry not yet targeted.
  uint64_t target() const { return Target; }
  /// Bytes of code from address() on that belong to the entry: its word
  /// and any resident area (a JIT entry has a cache line at least).
  size_t span() const { return Span; }
  /// Whether a `jmp rel32` at the entry reaches Address.
  bool canReach(uint64_t Address) const;

  /// Makes the entry jump to NewTarget (one atomic store, then every thread
  /// is serialised). Fails, changing nothing, if NewTarget is out of reach.
  llvm::Error retarget(uint64_t NewTarget);

  /// A compiled-in entry goes back to the plain indirect call; a JIT entry
  /// traps again. Callers must not be in flight on a JIT entry.
  llvm::Error reset();

  /// The resident area: where it starts (the entry + 8) and its size; 0
  /// without one.
  uint64_t residentAddress() const { return ResidentBytes ? Entry + 8 : 0; }
  size_t residentCapacity() const { return ResidentBytes; }
  /// Whether calls run the resident area (the gate is open).
  bool isResident() const { return Resident; }
  /// Copies Code, already relocated for residentAddress(), into the area
  /// and serialises every thread. The gate must be closed (retarget()
  /// since the last openGate()) and no caller may be left in the area (a
  /// grace period since). Fails, changing nothing, if Code does not fit.
  llvm::Error writeResident(llvm::ArrayRef<uint8_t> Code);
  /// Testing only: writeResident() first fills the whole area with int3,
  /// serialises every thread and waits a millisecond, so a caller left in
  /// the area traps instead of running on into the new code.
  void setPoisonForTesting(bool Poison) { PoisonResident = Poison; }
  /// Makes calls fall through into the resident area (one atomic store of
  /// an 8-byte nop, then every thread is serialised).
  llvm::Error openGate();

  /// Whether membarrier(SYNC_CORE) is available; without it the store
  /// alone is relied on (coherent on x86 for an aligned displacement).
  static bool hasSyncCore();

  /// Where the entry's bytes live and how they are written (private to the
  /// implementation).
  class Memory;

private:
  Trampoline(uint64_t Entry, uint64_t Original, std::unique_ptr<Memory> Mem);
  llvm::Error store(uint64_t Word);

  /// The entry's address (8-byte aligned).
  uint64_t Entry;
  /// The entry's first 8 bytes as created or adopted, restored by reset().
  uint64_t Original;
  /// Written only by retarget()/reset()/openGate(), which the owner
  /// serialises.
  uint64_t Target = 0;
  bool Resident = false;
  /// Bytes of the resident area (0: none); immutable.
  size_t ResidentBytes = 0;
  size_t Span = 8;
  bool PoisonResident = false;
  std::unique_ptr<Memory> Mem;
};

} // namespace dispatchgen

#endif // __cplusplus

#endif // DISPATCH_GEN_TRAMPOLINE_H
