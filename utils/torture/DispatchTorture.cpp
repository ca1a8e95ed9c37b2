//===- DispatchTorture.cpp - RCU torture test of a live dispatcher --------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// dispatch-gen-torture, in the spirit of Linux's rcutorture: every core but
// one calls through a dispatcher's entry in a tight loop, as RCU readers,
// while an updater thread adds, removes and changes programs as fast as it
// can (Asynchronous, so updates do not wait for grace periods; --sync:
// Synchronous, where the entry also runs each image in place, so the
// resident area behind it is rewritten under the readers every update).
//
// Programs are JIT-compiled in an LLJIT of this process, in batches (one
// JITDylib each), and never reused: each has a unique id, its generation
// stamp, which it returns, after spinning for as long as the caller asks so
// that readers are inside programs when updates happen. When the dispatcher
// releases a program (OnRelease, after the grace period) its code is
// poisoned with int3, so a later call into it traps; a reader that traps
// counts a call into released code and leaves the call (siglongjmp).
//
// The pipeline count: each program records the update that removed it and
// whether it was released. After each call, still inside its read-side
// critical section, a reader looks up the program that answered: released
// means a grace period ended while the reader could still reach the program
// (a failure); removed but not yet released is legitimate and the reader
// histograms how many updates ago the removal happened.
//
// Readers also linger in images: every image starts with a delay loop
// (--image-delay pauses; DispatcherConfig::ImageDelayForTesting), freed
// images hold `hlt` in a quarantine before reuse and the resident
// area is filled with int3 before each rewrite (PoisonForTesting), so a
// reader left in an image that was freed, or in a resident area that was
// rewritten, faults; the signal handler tells which by where it stopped.
// The fallback calls a hook (FallbackHookForTesting): a call that took it
// for a program registered throughout the call is a routing failure.
//
// A failure is: a misrouted call (answered by another program than the one
// asked for, or by one not registered at any time during the call), a call
// into a released program, a released image or a rewritten resident area,
// an observed released program, a registered program sent to the
// fallback, or an update error. --broken-reclamation=programs|images|
// resident skips that one grace period
// (DispatcherConfig::SkipGracePeriodForTesting): the test must then fail,
// and report the matching count.
//
// --adaptive makes the dispatcher adaptive, with the background learner
// opening short windows, and the readers also call targets that are never
// registered, some hot (promoted, then demoted as the hot set moves), some
// rarely: each must answer, by the fallback or a promoted direct jump
// (AdaptiveTorture.h). A registered program may then take the fallback
// where the layout has no tree; the monitor of the dispatcher's status
// tells which calls could have.
//
//===----------------------------------------------------------------------===//

#include "AdaptiveTorture.h"

#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Reclamation.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csetjmp>
#include <csignal>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

using namespace llvm;
using namespace dispatchgen;

static cl::OptionCategory TortureCategory("dispatch-gen-torture options");
static cl::opt<unsigned> Seconds("seconds", cl::desc("How long to run"),
                                 cl::init(20), cl::cat(TortureCategory));
static cl::opt<unsigned>
    Readers("readers",
            cl::desc("Reader threads (default: every core but one, at "
                     "least one)"),
            cl::init(0), cl::cat(TortureCategory));
static cl::opt<unsigned> MinUpdateRate(
    "min-update-rate",
    cl::desc("Fail unless at least this many updates per second were made"),
    cl::init(0), cl::cat(TortureCategory));
static cl::opt<unsigned> BatchOps(
    "batch",
    cl::desc("Operations (add, remove, change) per update: one "
             "regeneration each (default 16; 1: one operation per update)"),
    cl::init(16), cl::cat(TortureCategory));
static cl::opt<bool>
    Sync("sync",
         cl::desc("Synchronous reclamation: each update waits for its grace "
                  "period, and images run resident behind the entry"),
         cl::init(false), cl::cat(TortureCategory));
static cl::opt<SkippedGracePeriod> BrokenReclamation(
    "broken-reclamation",
    cl::desc("Testing the test: skip one grace period; must fail"),
    cl::values(clEnumValN(SkippedGracePeriod::Programs, "programs",
                          "release programs at once"),
               clEnumValN(SkippedGracePeriod::Images, "images",
                          "free old images at once"),
               clEnumValN(SkippedGracePeriod::Resident, "resident",
                          "rewrite the resident area at once (implies "
                          "--sync)")),
    cl::init(SkippedGracePeriod::None), cl::cat(TortureCategory));
static cl::opt<unsigned> ImageDelay(
    "image-delay",
    cl::desc("pause instructions at the start of every image, so readers "
             "linger there longer than an update takes to free or rewrite "
             "what they left (default 4096, about 0.1 ms)"),
    cl::init(4096), cl::cat(TortureCategory));
static cl::opt<bool> Adaptive(
    "adaptive",
    cl::desc("Adaptive dispatch with the background learner; readers also "
             "call unregistered targets, hot ones (promoted) and rare ones"),
    cl::init(false), cl::cat(TortureCategory));
static cl::opt<unsigned>
    LearnWindow("learn-window",
                cl::desc("With --adaptive: microseconds a learning window "
                         "stays open (default 1000)"),
                cl::init(1000), cl::cat(TortureCategory));
static cl::opt<unsigned> LearnPeriod(
    "learn-period",
    cl::desc("With --adaptive: microseconds from a window to the next "
             "(default 2000; up to 4 times that after windows that "
             "changed nothing)"),
    cl::init(2000), cl::cat(TortureCategory));
static cl::opt<unsigned>
    HotPhase("hot-phase",
             cl::desc("With --adaptive: milliseconds before the hot "
                      "unregistered targets move on (default 250)"),
             cl::init(250), cl::cat(TortureCategory));

namespace {

using torture::AdaptiveMonitor;
using torture::FallbackCall;
using torture::UnregisteredTargets;

constexpr unsigned NumSlots = 32;
constexpr unsigned BatchSize = 64;
/// Programs are 64-byte aligned and smaller than that; the poison covers
/// the function up to the next program.
constexpr unsigned ProgramAlign = 64;

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

struct Counters {
  std::atomic<uint64_t> Calls{0}, Misrouted{0}, IntoReleased{0},
      IntoReleasedImages{0}, IntoRewrittenResident{0}, OtherFaults{0},
      ObservedReleased{0}, RegisteredToFallback{0}, CriticalSections{0};
  /// --adaptive: calls to unregistered targets, by the way they went.
  std::atomic<uint64_t> UnregisteredDirect{0}, UnregisteredFallback{0};
  /// Ages (updates since removal) of removed, not yet released programs
  /// that readers reached: 0, 1, 2-3, 4-15, 16-63, 64+.
  std::array<std::atomic<uint64_t>, 6> AgeHist{};
  std::array<std::atomic<uint64_t>, 3> StageHist{};
};

unsigned ageBucket(uint64_t Age) {
  if (Age <= 1)
    return Age;
  if (Age < 4)
    return 2;
  if (Age < 16)
    return 3;
  if (Age < 64)
    return 4;
  return 5;
}

// Signal handling: a reader that faults inside a call leaves it, with the
// kind of fault as siglongjmp's value.
enum FaultKind : int {
  FK_ReleasedProgram = 1,
  FK_ReleasedImage,
  FK_RewrittenResident,
  FK_Other
};
thread_local volatile sig_atomic_t InCall = 0;
thread_local sigjmp_buf CallJmp;
/// The entry and its resident area; set before the readers start.
uint64_t ResidentBegin = 0, ResidentEnd = 0;

FaultKind classify(int Sig, const siginfo_t *Info, const void *Context) {
  const auto *UC = static_cast<const ucontext_t *>(Context);
  uint64_t PC = UC->uc_mcontext.gregs[REG_RIP];
  if (Sig == SIGTRAP) {
    // int3 leaves the PC after itself. Poison is int3: the resident area's
    // before a rewrite, a released program's after its release.
    uint64_t At = PC - 1;
    if (At >= ResidentBegin && At < ResidentEnd)
      return FK_RewrittenResident;
    return FK_ReleasedProgram;
  }
  // Freed image memory holds `hlt` (a privileged instruction: SIGSEGV)
  // until it is reused; an instruction fetch from an inaccessible page is
  // one too. Programs are poisoned with int3 and entries never lose
  // execute, so only freed images fault so.
  if (Sig == SIGSEGV && (reinterpret_cast<uint64_t>(Info->si_addr) == PC ||
                         *reinterpret_cast<const uint8_t *>(PC) == 0xf4))
    return FK_ReleasedImage;
  return FK_Other;
}

void onFault(int Sig, siginfo_t *Info, void *Context) {
  if (InCall) {
    InCall = 0;
    siglongjmp(CallJmp, classify(Sig, Info, Context));
  }
  // Not a reader's call: nothing to recover, report and die.
  static const char Msg[] = "dispatch-gen-torture: fault outside a "
                            "dispatched call\n";
  (void)!write(2, Msg, sizeof(Msg) - 1);
  _exit(3);
}

void installFaultHandlers() {
  struct sigaction SA;
  std::memset(&SA, 0, sizeof(SA));
  SA.sa_sigaction = onFault;
  // NODEFER: leaving with siglongjmp (no mask restore) keeps it unblocked.
  SA.sa_flags = SA_NODEFER | SA_SIGINFO;
  sigemptyset(&SA.sa_mask);
  for (int Sig : {SIGTRAP, SIGILL, SIGSEGV, SIGBUS})
    sigaction(Sig, &SA, nullptr);
}

/// Set by the fallback hook on the calling thread.
thread_local bool TookFallback = false;
void onFallback(uint64_t) { TookFallback = true; }

using EntryFn = uint64_t(uint64_t Spins, uint64_t Program);

class Torture {
public:
  Error run();

private:
  Error compileBatch();
  Expected<uint64_t> freshProgram();
  void release(uint64_t Address);
  void readerLoop(unsigned Index);
  void callUnregistered(std::minstd_rand &Rng);
  Error updaterLoop(std::chrono::steady_clock::time_point End);

  std::unique_ptr<orc::LLJIT> J;
  std::unique_ptr<Dispatcher> D;
  EntryFn *Entry = nullptr;

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

  /// Slot k holds the id of a registered program, or 0. The updater
  /// stores (release) after registering and before removing; readers load
  /// (acquire) inside their critical section.
  std::array<std::atomic<uint64_t>, NumSlots> Slots{};
  /// Updates started (seq_cst: compared against slot loads, see below).
  std::atomic<uint64_t> Seq{0};
  std::atomic<bool> Stop{false};
  /// Set by the updater when some registered program is out of rel32 reach
  /// of the images, so its calls take the fallback legitimately.
  std::atomic<bool> OutOfReach{false};
  Counters C;
  /// --adaptive: the targets never registered, and per reader its calls
  /// for a registered program that took the fallback (judged at the end,
  /// against what the monitor saw).
  UnregisteredTargets Unregistered;
  std::vector<std::vector<FallbackCall>> FallbackCalls;
  uint64_t ExcusedFallbackCalls = 0;
  uint64_t Updates = 0, Adds = 0, Removes = 0, Changes = 0, Released = 0;
  std::atomic<uint64_t> ReleasedAsync{0};
};

Error Torture::compileBatch() {
  uint64_t First = NextId.load(std::memory_order_relaxed);
  std::string IR;
  raw_string_ostream OS(IR);
  // Spin (pause) for %spins iterations, then return the id.
  for (unsigned K = 0; K < BatchSize; ++K)
    OS << formatv(R"(
define i64 @torture_prog_{0}(i64 %spins) align {1} {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %n, %loop ]
  %n = add i64 %i, 1
  call void asm sideeffect "pause", ""()
  %c = icmp ult i64 %n, %spins
  br i1 %c, label %loop, label %done
done:
  ret i64 {0}
}
)",
                  First + K, ProgramAlign);
  auto Ctx = std::make_unique<LLVMContext>();
  SMDiagnostic Diag;
  auto M = parseIR(MemoryBufferRef(IR, "torture-programs"), Diag, *Ctx);
  if (!M)
    return createStringError("cannot parse the programs: " +
                             Diag.getMessage().str());
  auto JD = J->createJITDylib(formatv("torture_batch_{0}", Batches++).str());
  if (!JD)
    return JD.takeError();
  if (Error E = J->addIRModule(
          *JD, orc::ThreadSafeModule(std::move(M), std::move(Ctx))))
    return E;
  // One lookup for the batch: one materialisation, one link.
  orc::SymbolLookupSet Names;
  for (unsigned K = 0; K < BatchSize; ++K)
    Names.add(J->mangleAndIntern(formatv("torture_prog_{0}", First + K).str()));
  auto Found = J->getExecutionSession().lookup(
      orc::makeJITDylibSearchOrder(&*JD), std::move(Names));
  if (!Found)
    return Found.takeError();
  std::vector<uint64_t> Addrs;
  for (unsigned K = 0; K < BatchSize; ++K)
    Addrs.push_back((*Found)[J->mangleAndIntern(
                                 formatv("torture_prog_{0}", First + K).str())]
                        .getAddress()
                        .getValue());
  std::vector<uint64_t> Sorted = Addrs;
  std::sort(Sorted.begin(), Sorted.end());
  for (unsigned K = 0; K < BatchSize; ++K) {
    Program *P = Table.create(First + K);
    if (!P)
      return createStringError("out of program records");
    P->Address = Addrs[K];
    auto Next = std::upper_bound(Sorted.begin(), Sorted.end(), Addrs[K]);
    uint64_t Limit = Addrs[K] + ProgramAlign;
    P->PoisonSize =
        (Next == Sorted.end() ? Limit : std::min(Limit, *Next)) - Addrs[K];
    {
      std::lock_guard<std::mutex> Lock(ReleaseMutex);
      IdOf[Addrs[K]] = First + K;
    }
    Fresh.push_back(First + K);
  }
  NextId.store(First + BatchSize, std::memory_order_release);
  std::reverse(Fresh.begin(), Fresh.end());
  return Error::success();
}

Expected<uint64_t> Torture::freshProgram() {
  if (Fresh.empty())
    if (Error E = compileBatch())
      return std::move(E);
  uint64_t Id = Fresh.back();
  Fresh.pop_back();
  return Id;
}

/// OnRelease: the program may never run again. Mark, then poison its code
/// with int3 (the page is made writable without losing exec: other
/// programs on it stay live).
void Torture::release(uint64_t Address) {
  std::lock_guard<std::mutex> Lock(ReleaseMutex);
  auto It = IdOf.find(Address);
  if (It == IdOf.end())
    return;
  Program *P = Table.get(It->second);
  P->Stage.store(PS_Released, std::memory_order_release);
  uint64_t Page = Address & ~(PageSize - 1);
  uint64_t Len = Address + P->PoisonSize - Page;
  if (mprotect(reinterpret_cast<void *>(Page), Len,
               PROT_READ | PROT_WRITE | PROT_EXEC) == 0) {
    std::memset(reinterpret_cast<void *>(Address), 0xCC, P->PoisonSize);
    mprotect(reinterpret_cast<void *>(Page), Len, PROT_READ | PROT_EXEC);
  }
  ReleasedAsync.fetch_add(1, std::memory_order_relaxed);
}

void Torture::readerLoop(unsigned Index) {
  RCUReaderThread Registration(RCUFlavor::Memb);
  std::minstd_rand Rng(Index * 7919 + 1);
  while (!Stop.load(std::memory_order_relaxed)) {
    RCUReadGuard Guard;
    C.CriticalSections.fetch_add(1, std::memory_order_relaxed);
    uint64_t S0 = Seq.load(std::memory_order_seq_cst);
    uint64_t Id = Slots[Rng() % NumSlots].load(std::memory_order_seq_cst);
    if (!Id)
      continue;
    Program *P = Table.get(Id);
    uint64_t Address = P->Address;
    // Hold the reference for a while: up to 32 calls, each lingering in
    // the image (--image-delay) and spinning up to 64 pauses in the
    // program; one section in 8 is 16 times longer (tens of milliseconds),
    // longer than an update, so that updates and releases happen while
    // readers still use what they removed.
    unsigned Calls = 1 + Rng() % 32;
    if (Rng() % 8 == 0)
      Calls *= 16;
    volatile unsigned N = Calls;
    volatile unsigned K = 0;
    if (int Fault = sigsetjmp(CallJmp, 0)) {
      std::atomic<uint64_t> &Count =
          Fault == FK_ReleasedProgram     ? C.IntoReleased
          : Fault == FK_ReleasedImage     ? C.IntoReleasedImages
          : Fault == FK_RewrittenResident ? C.IntoRewrittenResident
                                          : C.OtherFaults;
      Count.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    for (; K < N; K = K + 1) {
      if (Adaptive && Rng() % 4 == 0) {
        callUnregistered(Rng);
        continue;
      }
      TookFallback = false;
      auto Begin = std::chrono::steady_clock::now();
      InCall = 1;
      uint64_t R = Entry(Rng() % 64, Address);
      InCall = 0;
      C.Calls.fetch_add(1, std::memory_order_relaxed);
      uint64_t S1 = Seq.load(std::memory_order_seq_cst);
      if (R == 0 || R >= NextId.load(std::memory_order_acquire)) {
        C.Misrouted.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      Program *Q = Table.get(R);
      uint64_t Removed = Q->RemovedSeq.load(std::memory_order_acquire);
      // Registered at some time during the call: added before it ended,
      // not removed before it began (see the slot ordering in updaterLoop).
      bool Registered = Q->AddedSeq != 0 && Q->AddedSeq <= S1 &&
                        (Removed == 0 || Removed >= S0);
      if (R != Id || !Registered)
        C.Misrouted.fetch_add(1, std::memory_order_relaxed);
      // In the dispatcher from before the call (published) until after it
      // (no removal had begun when S1 was read): every image the call could
      // enter had a direct jump to it.
      if (TookFallback && R == Id && (Removed == 0 || Removed > S1) &&
          !OutOfReach.load(std::memory_order_relaxed)) {
        // Adaptive: legitimate where the layout had no tree; judged at
        // the end.
        if (Adaptive)
          FallbackCalls[Index].push_back(
              {Begin, std::chrono::steady_clock::now()});
        else
          C.RegisteredToFallback.fetch_add(1, std::memory_order_relaxed);
      }
      uint8_t Stage = Q->Stage.load(std::memory_order_acquire);
      C.StageHist[Stage].fetch_add(1, std::memory_order_relaxed);
      if (Stage == PS_Released)
        C.ObservedReleased.fetch_add(1, std::memory_order_relaxed);
      else if (Removed && Removed <= S1)
        // (Removed after S1 was read: live when the call ended.)
        C.AgeHist[ageBucket(S1 - Removed)].fetch_add(1,
                                                     std::memory_order_relaxed);
    }
  }
}

/// --adaptive: a call to a target the dispatcher never registered. Its tag
/// must come back, through the fallback or a promoted target's jump.
void Torture::callUnregistered(std::minstd_rand &Rng) {
  unsigned K = Unregistered.pick(Rng);
  TookFallback = false;
  InCall = 1;
  uint64_t R = Entry(Rng() % 64, Unregistered.address(K));
  InCall = 0;
  C.Calls.fetch_add(1, std::memory_order_relaxed);
  if (R != UnregisteredTargets::tag(K))
    C.Misrouted.fetch_add(1, std::memory_order_relaxed);
  (TookFallback ? C.UnregisteredFallback : C.UnregisteredDirect)
      .fetch_add(1, std::memory_order_relaxed);
}

// Slot ordering: to remove, the updater bumps Seq (RemovedSeq = the new
// value), unpublishes, then calls the dispatcher; to add, it registers,
// then sets AddedSeq and publishes. A reader loads Seq (S0) before a slot,
// all seq_cst, so a program it found published has RemovedSeq 0 or >= S0.
//
// Each update applies --batch operations on distinct slots with one
// regeneration (Dispatcher::apply); --batch=1 makes every operation its own
// back-to-back update.
Error Torture::updaterLoop(std::chrono::steady_clock::time_point End) {
  std::minstd_rand Rng(42);
  std::array<unsigned, NumSlots> Order;
  for (unsigned K = 0; K < NumSlots; ++K)
    Order[K] = K;
  unsigned Ops = std::clamp<unsigned>(BatchOps, 1, NumSlots);
  struct Pending {
    unsigned Slot;
    uint64_t New;
  };
  std::vector<Pending> Publish;
  auto Start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < End) {
    if (Adaptive)
      Unregistered.setPhase((std::chrono::steady_clock::now() - Start) /
                            std::chrono::milliseconds(std::max(1u, +HotPhase)));
    std::shuffle(Order.begin(), Order.end(), Rng);
    uint64_t S = Seq.fetch_add(1, std::memory_order_seq_cst) + 1;
    ProgramSet::Batch B;
    Publish.clear();
    for (unsigned I = 0; I < Ops; ++I) {
      unsigned K = Order[I];
      uint64_t Old = Slots[K].load(std::memory_order_relaxed);
      uint64_t New = 0;
      bool Change = Old && Rng() % 2;
      if (!Old || Change) {
        auto F = freshProgram();
        if (!F)
          return F.takeError();
        New = *F;
        Publish.push_back({K, New});
      }
      if (Old) {
        Table.get(Old)->RemovedSeq.store(S, std::memory_order_seq_cst);
        Slots[K].store(0, std::memory_order_seq_cst);
        Table.get(Old)->Stage.store(PS_Removed, std::memory_order_relaxed);
      }
      if (Change) {
        B.change(Table.get(Old)->Address, Table.get(New)->Address);
        ++Changes;
      } else if (Old) {
        B.remove(Table.get(Old)->Address);
        ++Removes;
      } else {
        B.add(Table.get(New)->Address);
        ++Adds;
      }
    }
    if (Error E = D->apply(B))
      return E;
    ++Updates;
    // A layout without a tree (adaptive) counts every program as taking
    // the fallback; only a tree's count is of programs out of reach.
    DispatcherStatus St = D->status();
    if (St.FallbackTargets && St.Layout != "fallback-only")
      OutOfReach.store(true, std::memory_order_relaxed);
    uint64_t Now = Seq.load(std::memory_order_seq_cst);
    for (const Pending &P : Publish) {
      Table.get(P.New)->AddedSeq = Now;
      Slots[P.Slot].store(P.New, std::memory_order_seq_cst);
    }
  }
  return Error::success();
}

Error Torture::run() {
  PageSize = sysconf(_SC_PAGESIZE);
  auto JOrErr = orc::LLJITBuilder().create();
  if (!JOrErr)
    return JOrErr.takeError();
  J = std::move(*JOrErr);

  // The programs first, so that the images go near them.
  if (Error E = compileBatch())
    return E;
  if (Adaptive)
    if (Error E = Unregistered.compile(*J))
      return E;

  if (BrokenReclamation == SkippedGracePeriod::Resident)
    Sync = true;
  DispatcherConfig Config;
  Config.Name = "torture_dispatch";
  Config.Signature = "i64 (i64)";
  Config.Reclaim = Sync ? ReclaimMode::Synchronous : ReclaimMode::Asynchronous;
  // A change in a batch may add before it removes.
  Config.Capacity = 2 * NumSlots;
  Config.Near = Table.get(1)->Address;
  Config.SkipGracePeriodForTesting = BrokenReclamation;
  Config.ImageDelayForTesting = ImageDelay;
  Config.FallbackHookForTesting = onFallback;
  Config.PoisonForTesting = true;
  Config.OnRelease = [this](const ProgramEntry &P) { release(P.Address); };
  if (Adaptive) {
    Config.Adaptive.Enabled = true;
    Config.Adaptive.Background = true;
    Config.Adaptive.Window =
        std::chrono::microseconds(std::max(1u, +LearnWindow));
    Config.Adaptive.Period =
        std::chrono::microseconds(std::max(1u, +LearnPeriod));
    Config.Adaptive.MaxPeriod = 4 * Config.Adaptive.Period;
  }
  auto DOrErr = Dispatcher::create(std::move(Config), *J);
  if (!DOrErr)
    return DOrErr.takeError();
  D = std::move(*DOrErr);
  Entry = D->entryAs<EntryFn>();
  if (!D->status().Supported)
    WithColor::warning() << "no image generation on this host: the entry is "
                            "the plain indirect call\n";
  ResidentBegin = D->entry();
  ResidentEnd = ResidentBegin + 8 + (64u << 10);

  installFaultHandlers();
  unsigned NumReaders = Readers;
  if (!NumReaders)
    NumReaders = std::max(2u, std::thread::hardware_concurrency()) - 1;
  FallbackCalls.resize(NumReaders);
  std::optional<AdaptiveMonitor> Monitor;
  if (Adaptive) {
    Monitor.emplace(*D, Unregistered);
    Monitor->start(std::chrono::microseconds(100));
  }
  std::vector<std::thread> Threads;
  for (unsigned R = 0; R < NumReaders; ++R)
    Threads.emplace_back([this, R] { readerLoop(R); });

  auto Start = std::chrono::steady_clock::now();
  Error UpdateError =
      updaterLoop(Start + std::chrono::seconds(unsigned(Seconds)));
  double Elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - Start)
          .count();
  Stop = true;
  for (std::thread &T : Threads)
    T.join();
  DispatcherStatus St = D->status();
  if (Monitor) {
    Monitor->stop();
    for (const std::vector<FallbackCall> &Calls : FallbackCalls)
      for (const FallbackCall &Call : Calls)
        if (Monitor->mayHaveTakenFallback(Call))
          ++ExcusedFallbackCalls;
        else
          C.RegisteredToFallback.fetch_add(1, std::memory_order_relaxed);
  }
  // Releases every program still registered, after pending grace periods.
  D.reset();
  uint64_t Ops = Adds + Removes + Changes;
  double Rate = Ops / Elapsed;

  const char *Broken[] = {"", ", BROKEN: programs released at once",
                          ", BROKEN: images freed at once",
                          ", BROKEN: resident area rewritten at once"};
  outs() << formatv("dispatch-gen-torture: {0} readers, {1:f1} s{2}{3}{5}, "
                    "{4} pauses per image\n",
                    NumReaders, Elapsed, Sync ? ", synchronous" : "",
                    Broken[static_cast<int>(BrokenReclamation.getValue())],
                    unsigned(ImageDelay),
                    Adaptive
                        ? formatv(", adaptive (windows of {0} us every "
                                  "{1} us or more)",
                                  unsigned(LearnWindow), unsigned(LearnPeriod))
                              .str()
                        : std::string());
  outs() << formatv("  calls:           {0} in {1} read-side critical "
                    "sections\n",
                    C.Calls.load(), C.CriticalSections.load());
  outs() << formatv("  updates:         {0} ({1:f0}/s): {2} adds, {3} "
                    "removes, {4} changes\n",
                    Ops, Rate, Adds, Removes, Changes);
  outs() << formatv("  regenerations:   {0} ({1:f0}/s, --batch={2}); image "
                    "generation {3}\n",
                    Updates, Updates / Elapsed, unsigned(BatchOps),
                    St.Generation);
  outs() << formatv("  last update:     {0} us to regenerate and patch\n",
                    St.LastUpdateLatency.count() / 1000);
  outs() << formatv("  programs:        {0} compiled in {1} batches, {2} "
                    "released and poisoned\n",
                    NextId.load() - 1, Batches, ReleasedAsync.load());
  outs() << formatv("  observed stage:  live {0}, removed-not-released {1}, "
                    "released {2}\n",
                    C.StageHist[0].load(), C.StageHist[1].load(),
                    C.StageHist[2].load());
  outs() << formatv("  removal age:     0: {0}, 1: {1}, 2-3: {2}, 4-15: {3}, "
                    "16-63: {4}, 64+: {5} (updates since removal)\n",
                    C.AgeHist[0].load(), C.AgeHist[1].load(),
                    C.AgeHist[2].load(), C.AgeHist[3].load(),
                    C.AgeHist[4].load(), C.AgeHist[5].load());
  outs() << formatv("  misrouted:       {0}\n", C.Misrouted.load());
  outs() << formatv("  released programs: {0} calls trapped in one, {1} "
                    "answered by one\n",
                    C.IntoReleased.load(), C.ObservedReleased.load());
  outs() << formatv("  released images: {0} calls trapped in one\n",
                    C.IntoReleasedImages.load());
  outs() << formatv("  resident area:   {0} calls trapped in it while it was "
                    "rewritten; {1} rewrites{2}\n",
                    C.IntoRewrittenResident.load(), St.Generation,
                    St.Resident ? "" : " (not resident at the end)");
  outs() << formatv("  fallback:        {0} calls for a registered program "
                    "took it{1}\n",
                    C.RegisteredToFallback.load(),
                    OutOfReach ? " (not counted: some programs out of reach)"
                               : "");
  outs() << formatv("  other faults:    {0}\n", C.OtherFaults.load());
  if (Monitor) {
    outs() << formatv("  unregistered:    {0} calls to {1} targets never "
                      "registered: {2} by a promoted direct jump, {3} by the "
                      "fallback\n",
                      C.UnregisteredDirect + C.UnregisteredFallback,
                      UnregisteredTargets::Count, C.UnregisteredDirect.load(),
                      C.UnregisteredFallback.load());
    outs() << formatv("  fallback-only:   {0} calls for a registered program "
                      "took the fallback while an image without a tree may "
                      "have been live (not counted)\n",
                      ExcusedFallbackCalls);
    Monitor->print(outs(), St);
  }

  bool Failed = false;
  auto Fail = [&](const Twine &Why) {
    WithColor::error(errs(), "dispatch-gen-torture")
        << "caught: " << Why << "\n";
    Failed = true;
  };
  if (UpdateError)
    Fail("update failed: " + toString(std::move(UpdateError)));
  if (C.Misrouted)
    Fail(Twine(C.Misrouted.load()) + " misrouted calls");
  if (C.IntoReleased)
    Fail(Twine(C.IntoReleased.load()) + " calls into released programs");
  if (C.IntoReleasedImages)
    Fail(Twine(C.IntoReleasedImages.load()) + " calls into released images");
  if (C.IntoRewrittenResident)
    Fail(Twine(C.IntoRewrittenResident.load()) +
         " calls into a rewritten resident area");
  if (C.RegisteredToFallback)
    Fail(Twine(C.RegisteredToFallback.load()) +
         " calls for a registered program sent to the fallback");
  if (C.OtherFaults)
    Fail(Twine(C.OtherFaults.load()) + " other faults inside calls");
  if (C.ObservedReleased)
    Fail(Twine(C.ObservedReleased.load()) +
         " calls answered by a program released during the reader's "
         "critical section (past its grace period)");
  if (!C.Calls)
    Fail("readers made no calls");
  if (Adaptive && !St.LearningWindows)
    Fail("no learning window closed");
  if (Adaptive && !St.LearningError.empty())
    Fail("a learning window failed: " + St.LearningError);
  if (Sync && BrokenReclamation == SkippedGracePeriod::None && !St.Resident)
    Fail("with --sync the live image should run resident behind the entry");
  if (MinUpdateRate && Rate < MinUpdateRate)
    Fail(formatv("{0:f0} updates/s, below --min-update-rate={1}", Rate,
                 unsigned(MinUpdateRate))
             .str());
  if (Failed)
    return createStringError("torture test failed");
  outs() << "dispatch-gen-torture: PASS\n";
  return Error::success();
}

} // namespace

int main(int argc, char **argv) {
  InitLLVM X(argc, argv);
  cl::HideUnrelatedOptions(TortureCategory);
  cl::ParseCommandLineOptions(argc, argv,
                              "RCU torture test of a live dispatcher\n");
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  // The programs' `pause` is inline assembly.
  InitializeNativeTargetAsmParser();
  ExitOnError ExitOnErr("dispatch-gen-torture: ");
  Torture T;
  ExitOnErr(T.run());
  return 0;
}
