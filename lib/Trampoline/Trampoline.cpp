//===- Trampoline.cpp - The patchable, stable dispatcher entry ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Trampoline.h"

#include "NearArena.h"

#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#define DISPATCHGEN_TRAMPOLINE_SUPPORTED 1
#endif

using namespace llvm;

namespace dispatchgen {

#ifdef DISPATCHGEN_TRAMPOLINE_SUPPORTED

namespace {

constexpr uint8_t JmpRel32 = 0xe9;
/// `nopl 0x0(%rax,%rax,1)`: the compiled-in entry's patchable nop.
constexpr uint8_t Nop5[5] = {0x0f, 0x1f, 0x44, 0x00, 0x00};
/// `ud2` twice and int3s: what a JIT entry runs before its first target.
constexpr uint64_t TrapWord = 0xcccccccc0b0f0b0full;
constexpr uint64_t Low5Bytes = 0xffffffffffull;
/// `nopl 0x0(%rax,%rax,1)` with a 32-bit displacement: one instruction of
/// 8 bytes, the open gate of a resident area.
constexpr uint64_t Nop8Word = 0x0000000000841f0full;

size_t pageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

Error errnoError(const Twine &What) {
  return createStringError(What + ": " + errnoAsErrorCode().message());
}

/// Serialises every thread of the process after a code change, once
/// registered; registration happens once per process.
bool syncCoreAvailable() {
  static bool Available = [] {
    long Cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (Cmds < 0 || !(Cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE))
      return false;
    return syscall(__NR_membarrier,
                   MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0,
                   0) == 0;
  }();
  return Available;
}

void syncCore() {
  if (syncCoreAvailable())
    syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
}

/// Entries adopted by a live Trampoline; guarded by textPatchMutex().
std::set<uint64_t> &adoptedEntries() {
  static std::set<uint64_t> S;
  return S;
}

} // namespace

/// Where the entry's bytes live and how they are written.
class Trampoline::Memory {
public:
  virtual ~Memory() = default;
  /// Whether the entry is compiled into the host (else JIT memory we own).
  virtual bool isCompiledIn() const = 0;
  /// Stores Word at the entry with one atomic 8-byte store.
  virtual Error store(uint64_t Entry, uint64_t Word) = 0;
  /// Copies Bytes to Address (in JIT memory we own).
  virtual void write(uint64_t Address, ArrayRef<uint8_t> Bytes) {
    llvm_unreachable("only JIT entries have a resident area");
  }
};

namespace {

/// A JIT entry: a block of the process's code arena (the entry, then any
/// resident area), written through the arena's writable view. Execute
/// permission is never touched.
class ArenaEntry : public Trampoline::Memory {
public:
  explicit ArenaEntry(NearArena::Block B) : B(B) {}
  ~ArenaEntry() override { NearArena::get().release(B); }
  void write(uint64_t Address, ArrayRef<uint8_t> Bytes) override {
    std::memcpy(B.writable() + (Address - B.Address), Bytes.data(),
                Bytes.size());
  }
  bool isCompiledIn() const override { return false; }
  Error store(uint64_t Entry, uint64_t Word) override {
    auto *Slot =
        reinterpret_cast<uint64_t *>(B.writable() + (Entry - B.Address));
    // Release: a caller that runs the new jump also sees the image bytes the
    // updater wrote before it.
    __atomic_store_n(Slot, Word, __ATOMIC_RELEASE);
    return Error::success();
  }

private:
  NearArena::Block B;
};

/// Writable views of host text pages that hold compiled-in entries. The
/// first adoption of an entry on a page replaces that page, at the same
/// address, by a shared mapping of a copy of its bytes, read+execute as
/// before; the view is the same memory, read+write. No page is ever
/// writable and executable, and the host's own text is never written: its
/// page is swapped for an identical one. Kept for the process's life (a
/// few pages at most); guarded by textPatchMutex().
std::map<uint64_t, DualMapping> &textViews() {
  // Never destroyed: the pages stay swapped until the process ends, and a
  // fork handler may still walk them during exit.
  static auto *M = new std::map<uint64_t, DualMapping>;
  return *M;
}

Expected<DualMapping *> textViewOf(uint64_t Page) {
  auto It = textViews().find(Page);
  if (It != textViews().end())
    return &It->second;
  size_t PS = pageSize();
  auto FdOrErr = executableSharedMemory(PS);
  if (!FdOrErr)
    return FdOrErr.takeError();
  int Fd = *FdOrErr;
  auto Fail = [&](const Twine &What) -> Error {
    Error E = errnoError(What);
    close(Fd);
    return E;
  };
  if (pwrite(Fd, reinterpret_cast<const void *>(Page), PS, 0) !=
      static_cast<ssize_t>(PS))
    return Fail(formatv("cannot copy the text page at {0:x}", Page));
  void *View = mmap(nullptr, PS, PROT_READ | PROT_WRITE, MAP_SHARED, Fd, 0);
  if (View == MAP_FAILED)
    return Fail("cannot map a view of the entry's page");
  // The swap is one mmap: a thread running code on the page meanwhile
  // faults and resumes on the new, identical page.
  if (mapFixed(reinterpret_cast<void *>(Page), PS, PROT_READ | PROT_EXEC, Fd) ==
      MAP_FAILED) {
    munmap(View, PS);
    return Fail(formatv("cannot swap the text page at {0:x} for a patchable "
                        "copy",
                        Page));
  }
  close(Fd);
  DualMapping &M = textViews()[Page];
  M = {reinterpret_cast<char *>(Page), static_cast<char *>(View), PS};
  rememberDualMapping(M);
  return &M;
}

/// A compiled-in entry in the host's text, written through the view of its
/// page (textViewOf).
class HostText : public Trampoline::Memory {
public:
  explicit HostText(DualMapping *View) : View(View) {}
  bool isCompiledIn() const override { return true; }
  Error store(uint64_t Entry, uint64_t Word) override {
    char *Write = View->Write;
    uint64_t Offset = Entry - reinterpret_cast<uint64_t>(View->Exec);
    // Release, as for a JIT entry.
    __atomic_store_n(reinterpret_cast<uint64_t *>(Write + Offset), Word,
                     __ATOMIC_RELEASE);
    return Error::success();
  }

private:
  DualMapping *View;
};

} // namespace

Error Trampoline::checkSupported() { return Error::success(); }

bool Trampoline::hasSyncCore() { return syncCoreAvailable(); }

Expected<std::unique_ptr<Trampoline>> Trampoline::create(uint64_t Near,
                                                         size_t ResidentBytes) {
  // An entry has a cache line of its own, so that patching it does not
  // disturb the callers of its neighbours. With a resident area, the gate
  // word ends the first line and the code starts the next one.
  constexpr size_t Line = 64;
  size_t Size = ResidentBytes ? Line + alignTo(ResidentBytes, Line) : Line;
  auto B = NearArena::get().allocate(Size, Line, Near);
  if (!B)
    return createStringError(
        formatv("cannot place a trampoline of {0} bytes: {1}", Size,
                toString(B.takeError())));
  // Trap everywhere until the first retarget().
  for (size_t I = 0; I < Size / sizeof(uint64_t); ++I)
    std::memcpy(B->writable() + I * sizeof(uint64_t), &TrapWord,
                sizeof(uint64_t));
  uint64_t Entry = B->Address + (ResidentBytes ? Line - 8 : 0);
  // Register for membarrier now, not on the first update's hot moment.
  (void)syncCoreAvailable();
  std::unique_ptr<Trampoline> T(
      new Trampoline(Entry, TrapWord, std::make_unique<ArenaEntry>(*B)));
  T->ResidentBytes = ResidentBytes ? Size - Line : 0;
  T->Span = B->Address + Size - Entry;
  return std::move(T);
}

Expected<std::unique_ptr<Trampoline>> Trampoline::adopt(void *EntryPtr) {
  uint64_t Entry = reinterpret_cast<uint64_t>(EntryPtr);
  if (!EntryPtr || Entry % 8)
    return createStringError(
        formatv("{0:x} is not a dispatch-gen entry (entries are "
                "8-byte aligned)",
                Entry));
  std::lock_guard<std::mutex> Lock(textPatchMutex());
  if (adoptedEntries().count(Entry))
    return createStringError(formatv(
        "the entry at {0:x} is already adopted by a dispatcher", Entry));
  uint64_t Word =
      __atomic_load_n(reinterpret_cast<uint64_t *>(Entry), __ATOMIC_ACQUIRE);
  if (std::memcmp(&Word, Nop5, sizeof(Nop5)) != 0 ||
      static_cast<uint8_t>(Word >> 40) != JmpRel32)
    return createStringError(formatv("{0:x} is not an entry defined by "
                                     "DISPATCHGEN_DEFINE_DISPATCHER",
                                     Entry));
  auto View = textViewOf(Entry & ~(uint64_t(pageSize()) - 1));
  if (!View)
    return View.takeError();
  adoptedEntries().insert(Entry);
  (void)syncCoreAvailable();
  return std::unique_ptr<Trampoline>(
      new Trampoline(Entry, Word, std::make_unique<HostText>(*View)));
}

Trampoline::Trampoline(uint64_t Entry, uint64_t Original,
                       std::unique_ptr<Memory> Mem)
    : Entry(Entry), Original(Original), Mem(std::move(Mem)) {}

Trampoline::~Trampoline() {
  if (Mem && Mem->isCompiledIn()) {
    // Nothing to report to from a destructor; a failure leaves the entry
    // jumping to its last target, which the owner keeps alive until now.
    consumeError(reset());
    std::lock_guard<std::mutex> Lock(textPatchMutex());
    adoptedEntries().erase(Entry);
  }
}

bool Trampoline::canReach(uint64_t Address) const {
  int64_t Rel = static_cast<int64_t>(Address - (Entry + 5));
  return Rel >= INT32_MIN && Rel <= INT32_MAX;
}

Error Trampoline::store(uint64_t Word) {
  if (Error E = Mem->store(Entry, Word))
    return E;
  syncCore();
  return Error::success();
}

Error Trampoline::retarget(uint64_t NewTarget) {
  if (!canReach(NewTarget))
    return createStringError(
        formatv("the entry at {0:x} cannot reach {1:x} with a "
                "rel32 jump",
                Entry, NewTarget));
  uint32_t Rel = static_cast<uint32_t>(NewTarget - (Entry + 5));
  // Bytes 5..7 belong to the next instruction; keep them.
  uint64_t Word =
      (Original & ~Low5Bytes) | (uint64_t(Rel) << 8) | uint64_t(JmpRel32);
  if (Error E = store(Word))
    return E;
  Target = NewTarget;
  Resident = false;
  return Error::success();
}

Error Trampoline::reset() {
  if (Error E = store(Original))
    return E;
  Target = 0;
  Resident = false;
  return Error::success();
}

Error Trampoline::writeResident(ArrayRef<uint8_t> Code) {
  if (Resident)
    return createStringError("the resident area is live: close the gate first");
  if (Code.size() > ResidentBytes)
    return createStringError(
        formatv("{0} bytes do not fit in the resident area of "
                "{1} bytes",
                Code.size(), ResidentBytes));
  if (PoisonResident) {
    Mem->write(residentAddress(), std::vector<uint8_t>(ResidentBytes, 0xCC));
    syncCore();
    // A caller left in the area traps at its next instruction if it is
    // running; one that is preempted gets a millisecond to be scheduled.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Mem->write(residentAddress(), Code);
  // Every thread drops what it may have fetched of the area before.
  syncCore();
  return Error::success();
}

Error Trampoline::openGate() {
  if (!ResidentBytes)
    return createStringError("the entry has no resident area");
  if (Error E = store(Nop8Word))
    return E;
  Target = residentAddress();
  Resident = true;
  return Error::success();
}

#else // !DISPATCHGEN_TRAMPOLINE_SUPPORTED

class Trampoline::Memory {};

Error Trampoline::checkSupported() {
  return createStringError(
      "patchable dispatcher entries are not supported on this "
      "architecture (x86-64 Linux only); callers keep the "
      "indirect call");
}

bool Trampoline::hasSyncCore() { return false; }

Expected<std::unique_ptr<Trampoline>> Trampoline::create(uint64_t) {
  return checkSupported();
}

Expected<std::unique_ptr<Trampoline>> Trampoline::adopt(void *) {
  return checkSupported();
}

Trampoline::~Trampoline() = default;
bool Trampoline::canReach(uint64_t) const { return false; }
Error Trampoline::retarget(uint64_t) { return checkSupported(); }
Error Trampoline::reset() { return checkSupported(); }
Error Trampoline::writeResident(ArrayRef<uint8_t>) { return checkSupported(); }
Error Trampoline::openGate() { return checkSupported(); }

#endif // DISPATCHGEN_TRAMPOLINE_SUPPORTED

} // namespace dispatchgen
