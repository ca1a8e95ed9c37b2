//===- NearArena.cpp - Process-wide executable memory near code -----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "NearArena.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <string>

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#define DISPATCHGEN_ARENA_SUPPORTED 1
#endif

using namespace llvm;

namespace dispatchgen {

std::mutex &textPatchMutex() {
  static std::mutex M;
  return M;
}

NearArena &NearArena::get() {
  // Never destroyed: a dispatcher destroyed during the host's exit still
  // gives its blocks back, and code in them may run until the end.
  static NearArena *A = new NearArena();
  return *A;
}

#ifdef DISPATCHGEN_ARENA_SUPPORTED

namespace {

size_t pageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

/// Every live DualMapping; guarded by dualMappingsMutex(), which fork()
/// holds from prepare to the parent's or child's handler.
std::mutex &dualMappingsMutex() {
  static std::mutex M;
  return M;
}
std::set<DualMapping *> &dualMappings() {
  static auto *S = new std::set<DualMapping *>;
  return *S;
}

/// In a forked child: moves M onto a private copy of its memory, at the
/// same addresses. The child has one thread, which runs no dispatched code
/// now. A failure leaves M shared with the parent, and says so.
void privatize(DualMapping &M) {
  auto FdOrErr = executableSharedMemory(M.Size);
  std::string Why;
  if (!FdOrErr) {
    Why = toString(FdOrErr.takeError());
  } else {
    int Fd = *FdOrErr;
    void *Write = MAP_FAILED;
    if (pwrite(Fd, M.Exec, M.Size, 0) == static_cast<ssize_t>(M.Size))
      Write = mmap(nullptr, M.Size, PROT_READ | PROT_WRITE, MAP_SHARED, Fd, 0);
    if (Write == MAP_FAILED ||
        mapFixed(M.Exec, M.Size, PROT_READ | PROT_EXEC, Fd) == MAP_FAILED) {
      Why = errnoAsErrorCode().message();
      if (Write != MAP_FAILED)
        munmap(Write, M.Size);
    } else {
      munmap(M.Write, M.Size);
      M.Write = static_cast<char *>(Write);
    }
    close(Fd);
  }
  if (!Why.empty())
    errs() << formatv("dispatch-gen: after fork(), the code memory at {0:x} "
                      "is still shared with the parent: {1}\n",
                      reinterpret_cast<uint64_t>(M.Exec), Why);
}

void installForkHandlers() {
  static std::once_flag Once;
  std::call_once(Once, [] {
    pthread_atfork(
        [] {
          textPatchMutex().lock();
          NearArena::get().mutex().lock();
          dualMappingsMutex().lock();
        },
        [] {
          dualMappingsMutex().unlock();
          NearArena::get().mutex().unlock();
          textPatchMutex().unlock();
        },
        [] {
          for (DualMapping *M : dualMappings())
            privatize(*M);
          dualMappingsMutex().unlock();
          NearArena::get().mutex().unlock();
          textPatchMutex().unlock();
        });
  });
}

} // namespace

void rememberDualMapping(DualMapping &M) {
  installForkHandlers();
  std::lock_guard<std::mutex> Lock(dualMappingsMutex());
  dualMappings().insert(&M);
}

void forgetDualMapping(DualMapping &M) {
  std::lock_guard<std::mutex> Lock(dualMappingsMutex());
  dualMappings().erase(&M);
}

void *mapNear(uint64_t Near, size_t Size, int Prot, int Flags, int Fd,
              uint64_t MaxDistance) {
  if (Near == 0)
    return mmap(nullptr, Size, Prot, Flags, Fd, 0);
  constexpr uint64_t Step = 2ull << 20;
  uint64_t Base = Near & ~(Step - 1);
  // Closest first, above then below Near, in 2 MiB steps; the whole range
  // within MaxDistance of Near.
  for (uint64_t Off = 0; Off + Step + Size <= MaxDistance; Off += Step) {
    for (int Dir : {+1, -1}) {
      if (Dir < 0 && Base < Off + Step)
        continue;
      uint64_t Hint = Dir > 0 ? Base + Off + Step : Base - Off - Step;
      void *P = mmap(reinterpret_cast<void *>(Hint), Size, Prot,
                     Flags | MAP_FIXED_NOREPLACE, Fd, 0);
      if (P == MAP_FAILED)
        continue;
      if (reinterpret_cast<uint64_t>(P) == Hint)
        return P;
      // A kernel older than 4.17 took the flag as a hint only.
      munmap(P, Size);
    }
  }
  errno = ENOMEM;
  return MAP_FAILED;
}

Expected<int> executableSharedMemory(size_t Size) {
  std::string Why;
  // Each is tried by mapping it executable (a noexec mount refuses).
  auto Try = [&](int Fd, const char *What) -> int {
    if (Fd < 0) {
      Why += formatv("; {0}: {1}", What, errnoAsErrorCode().message()).str();
      return -1;
    }
    if (ftruncate(Fd, Size) != 0) {
      Why +=
          formatv("; {0}: ftruncate: {1}", What, errnoAsErrorCode().message())
              .str();
      close(Fd);
      return -1;
    }
    void *Probe = mmap(nullptr, Size, PROT_READ | PROT_EXEC, MAP_SHARED, Fd, 0);
    if (Probe == MAP_FAILED) {
      Why += formatv("; {0}: not executable: {1}", What,
                     errnoAsErrorCode().message())
                 .str();
      close(Fd);
      return -1;
    }
    munmap(Probe, Size);
    return Fd;
  };
  if (int Fd = Try(memfd_create("dispatch-gen", MFD_CLOEXEC), "memfd_create");
      Fd >= 0)
    return Fd;
  {
    static std::atomic<unsigned> Counter{0};
    std::string Name =
        formatv("/dispatch-gen-{0}-{1}", getpid(), Counter++).str();
    int Fd =
        shm_open(Name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (Fd >= 0)
      shm_unlink(Name.c_str());
    if ((Fd = Try(Fd, "shm_open")) >= 0)
      return Fd;
  }
  for (const char *Dir : {"/dev/shm", "/tmp"}) {
    std::string What = formatv("O_TMPFILE in {0}", Dir).str();
    if (int Fd =
            Try(open(Dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600), What.c_str());
        Fd >= 0)
      return Fd;
  }
  return createStringError(
      "no shared memory can be mapped executable here, and a "
      "page both writable and executable is never used" +
      Why);
}

/// A raw system call: sanitizer runtimes intercept mmap() to reset the
/// shadow of the range, and ThreadSanitizer's shadow of the host's text is
/// read-only. The bytes mapped are the same as those replaced, so no
/// shadow needs to change.
void *mapFixed(void *Addr, size_t Size, int Prot, int Fd) {
  // Every argument a full register: syscall() is variadic.
  long R = syscall(SYS_mmap, Addr, static_cast<unsigned long>(Size),
                   static_cast<long>(Prot),
                   static_cast<long>(MAP_SHARED | MAP_FIXED),
                   static_cast<long>(Fd), static_cast<long>(0));
  return R == -1 ? MAP_FAILED : reinterpret_cast<void *>(R);
}

Expected<NearArena::Chunk *> NearArena::newChunk(size_t Size, uint64_t Near) {
  auto FdOrErr = executableSharedMemory(Size);
  if (!FdOrErr)
    return FdOrErr.takeError();
  int Fd = *FdOrErr;
  void *Exec =
      mapNear(Near, Size, PROT_READ | PROT_EXEC, MAP_SHARED, Fd, Reach);
  if (Exec == MAP_FAILED) {
    close(Fd);
    return createStringError(
        formatv("no free address range of {0} bytes within "
                "1 GiB of {1:x} for code",
                Size, Near));
  }
  void *Write = mmap(nullptr, Size, PROT_READ | PROT_WRITE, MAP_SHARED, Fd, 0);
  int SavedErrno = errno;
  close(Fd);
  if (Write == MAP_FAILED) {
    munmap(Exec, Size);
    return createStringError(formatv(
        "cannot map a writable view of code memory: {0}",
        std::error_code(SavedErrno, std::generic_category()).message()));
  }
  auto C = std::make_unique<Chunk>();
  C->Map = {static_cast<char *>(Exec), static_cast<char *>(Write), Size};
  insertFree(*C, 0, Size);
  rememberDualMapping(C->Map);
  Chunks.push_back(std::move(C));
  return Chunks.back().get();
}

void NearArena::insertFree(Chunk &C, size_t Offset, size_t Size) {
  C.Free[Offset] = Size;
  C.BySize.insert({Size, Offset});
}

void NearArena::eraseFree(Chunk &C, std::map<size_t, size_t>::iterator It) {
  C.BySize.erase({It->second, It->first});
  C.Free.erase(It);
}

std::optional<NearArena::Block> NearArena::carve(Chunk &C, size_t Size,
                                                 size_t Align) {
  uint64_t Base = reinterpret_cast<uint64_t>(C.Map.Exec);
  // Best fit: the smallest free range that holds the block once aligned.
  // Offsets are multiples of 16, so only a larger alignment may need to
  // look past the first candidates; a range of Size + Align always holds it.
  auto Holds = [&](size_t Offset, size_t Length) {
    size_t Start = alignTo(Base + Offset, Align) - Base;
    return Start + Size <= Offset + Length;
  };
  auto Cand = C.BySize.lower_bound({Size, 0});
  for (unsigned Tries = 0; Cand != C.BySize.end() && Tries < 16;
       ++Tries, ++Cand)
    if (Holds(Cand->second, Cand->first))
      break;
  if (Cand == C.BySize.end() || !Holds(Cand->second, Cand->first))
    Cand = C.BySize.lower_bound({Size + Align, 0});
  if (Cand == C.BySize.end())
    return std::nullopt;
  size_t FreeStart = Cand->second, FreeEnd = Cand->second + Cand->first;
  size_t Start = alignTo(Base + FreeStart, Align) - Base;
  eraseFree(C, C.Free.find(FreeStart));
  if (Start > FreeStart)
    insertFree(C, FreeStart, Start - FreeStart);
  if (Start + Size < FreeEnd)
    insertFree(C, Start + Size, FreeEnd - (Start + Size));
  C.InUse += Size;
  return Block{Base + Start, Size, &C.Map};
}

void NearArena::addFree(Chunk &C, size_t Offset, size_t Size) {
  auto Next = C.Free.lower_bound(Offset);
  if (Next != C.Free.end() && Offset + Size == Next->first) {
    Size += Next->second;
    eraseFree(C, Next);
  }
  auto After = C.Free.lower_bound(Offset);
  if (After != C.Free.begin()) {
    auto Prev = std::prev(After);
    if (Prev->first + Prev->second == Offset) {
      Offset = Prev->first;
      Size += Prev->second;
      eraseFree(C, Prev);
    }
  }
  insertFree(C, Offset, Size);
}

uint64_t NearArena::newMemoryAddress() {
  // A page that is mapped and unmapped at once: the address the next
  // mapping without a hint would get. 0 if none can be had.
  void *P =
      mmap(nullptr, pageSize(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (P == MAP_FAILED)
    return 0;
  munmap(P, pageSize());
  return reinterpret_cast<uint64_t>(P);
}

Expected<NearArena::Block> NearArena::allocate(size_t Size, size_t Align,
                                               uint64_t Near) {
  Size = alignTo(std::max<size_t>(Size, 1), 16);
  Align = std::max<size_t>(Align, 16);
  if (!isPowerOf2_64(Align) || Align > pageSize())
    return createStringError(formatv("bad code alignment {0}", Align));
  // Near 0 is where mmap puts new memory now: next to the shared libraries
  // and to JIT memory the host maps after this. A chunk that an earlier
  // request placed near an executable's text (a PIE's is far from both)
  // is no place for it.
  if (Near == 0)
    Near = newMemoryAddress();
  auto Fits = [&](const Chunk &C) {
    if (Near == 0)
      return true;
    uint64_t Lo = reinterpret_cast<uint64_t>(C.Map.Exec);
    uint64_t Hi = Lo + C.Map.Size;
    auto Dist = [](uint64_t A, uint64_t B) { return A > B ? A - B : B - A; };
    return Dist(Lo, Near) <= Reach && Dist(Hi, Near) <= Reach;
  };
  std::lock_guard<std::mutex> Lock(M);
  for (auto &C : Chunks)
    if (Fits(*C))
      if (auto B = carve(*C, Size, Align)) {
        ++Blocks;
        return *B;
      }
  size_t PS = pageSize();
  auto C =
      newChunk(std::max<size_t>(ChunkSize, alignTo(Size + Align, PS)), Near);
  if (!C)
    return C.takeError();
  auto B = carve(**C, Size, Align);
  assert(B && "a new chunk holds the block");
  ++Blocks;
  return *B;
}

void NearArena::giveBack(const Block &B) {
  for (size_t I = 0; I < Chunks.size(); ++I) {
    Chunk &C = *Chunks[I];
    if (!C.contains(B.Address))
      continue;
    addFree(C, B.Address - reinterpret_cast<uint64_t>(C.Map.Exec), B.Size);
    C.InUse -= B.Size;
    // A wholly free chunk goes, unless it is the last one.
    if (C.InUse == 0 && Chunks.size() > 1) {
      forgetDualMapping(C.Map);
      munmap(C.Map.Exec, C.Map.Size);
      munmap(C.Map.Write, C.Map.Size);
      Chunks.erase(Chunks.begin() + I);
    }
    return;
  }
  assert(false && "a block of no chunk");
}

void NearArena::release(const Block &B) {
  if (!B.Map)
    return;
  // A late caller faults on the first instruction it fetches.
  std::memset(B.writable(), FreeFill, B.Size);
  std::lock_guard<std::mutex> Lock(M);
  --Blocks;
  if (!QuarantineLimit) {
    giveBack(B);
    return;
  }
  Quarantine.push_back(B);
  while (Quarantine.size() > QuarantineLimit) {
    giveBack(Quarantine.front());
    Quarantine.pop_front();
  }
}

void NearArena::setQuarantineForTesting(size_t Count) {
  std::lock_guard<std::mutex> Lock(M);
  QuarantineLimit = std::max(QuarantineLimit, Count);
}

NearArena::Stats NearArena::stats() {
  std::lock_guard<std::mutex> Lock(M);
  Stats S;
  S.Chunks = Chunks.size();
  S.Blocks = Blocks;
  for (auto &C : Chunks) {
    S.ReservedBytes += C->Map.Size;
    S.BytesInUse += C->InUse;
  }
  return S;
}

#else // !DISPATCHGEN_ARENA_SUPPORTED

void rememberDualMapping(DualMapping &) {}
void forgetDualMapping(DualMapping &) {}
Expected<int> executableSharedMemory(size_t) {
  return createStringError("no executable shared memory on this system");
}
void *mapNear(uint64_t, size_t, int, int, int, uint64_t) { return nullptr; }
void *mapFixed(void *, size_t, int, int) { return nullptr; }
Expected<NearArena::Block> NearArena::allocate(size_t, size_t, uint64_t) {
  return createStringError("code memory is not supported on this system");
}
void NearArena::release(const Block &) {}
void NearArena::setQuarantineForTesting(size_t) {}
NearArena::Stats NearArena::stats() { return {}; }

#endif // DISPATCHGEN_ARENA_SUPPORTED

} // namespace dispatchgen
