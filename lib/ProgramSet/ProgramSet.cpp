//===- ProgramSet.cpp - Refcounted program registry -----------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/ProgramSet.h"

#include "llvm/ADT/SmallSet.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>

using namespace llvm;

namespace dispatchgen {

static std::string describe(uint64_t Address, StringRef Name) {
  if (Name.empty())
    return formatv("program {0:x}", Address).str();
  return formatv("program '{0}' ({1:x})", Name, Address).str();
}

ProgramSet::Batch &ProgramSet::Batch::add(uint64_t Address, StringRef Name) {
  Ops.push_back({OpKind::Add, Address, Name.str()});
  return *this;
}

ProgramSet::Batch &ProgramSet::Batch::remove(uint64_t Address) {
  Ops.push_back({OpKind::Remove, Address, ""});
  return *this;
}

ProgramSet::Batch &ProgramSet::Batch::change(uint64_t From, uint64_t To,
                                             StringRef ToName) {
  // bpf_dispatcher_change_prog(): nothing to do when from == to.
  if (From == To)
    return *this;
  if (From)
    remove(From);
  if (To)
    add(To, ToName);
  return *this;
}

ProgramSet::ProgramSet(unsigned Capacity)
    : Capacity(std::max(Capacity, 1u)) {}

unsigned ProgramSet::users(uint64_t Address) const {
  auto It = Entries.find(Address);
  return It == Entries.end() ? 0 : It->second.Users;
}

std::vector<ProgramEntry> ProgramSet::entries() const {
  std::vector<ProgramEntry> Result;
  Result.reserve(Entries.size());
  for (const auto &KV : Entries)
    Result.push_back(KV.second);
  return Result;
}

Error ProgramSet::applyOne(const Batch::Op &O, std::vector<Undo> &Log) {
  if (O.Address == 0)
    return createStringError(O.Kind == Batch::OpKind::Add
                                 ? "cannot add a null program"
                                 : "cannot remove a null program");
  auto It = Entries.find(O.Address);
  bool Exists = It != Entries.end();
  if (O.Kind == Batch::OpKind::Remove && !Exists)
    return createStringError(describe(O.Address, O.Name) +
                             " is not registered");
  if (O.Kind == Batch::OpKind::Add && !Exists && Entries.size() >= Capacity)
    return createStringError(
        formatv("cannot add {0}: the dispatcher is full ({1} "
                "programs)",
                describe(O.Address, O.Name), Capacity));

  Log.push_back({O.Address, Exists, Exists ? It->second : ProgramEntry()});
  if (O.Kind == Batch::OpKind::Add) {
    if (Exists) {
      ++It->second.Users;
      return Error::success();
    }
    Entries.emplace(O.Address, ProgramEntry{O.Address, O.Name, 1});
    return Error::success();
  }
  if (--It->second.Users == 0)
    Entries.erase(It);
  return Error::success();
}

void ProgramSet::rollback(std::vector<Undo> &Log) {
  for (auto It = Log.rbegin(); It != Log.rend(); ++It) {
    if (It->Existed)
      Entries[It->Address] = It->Before;
    else
      Entries.erase(It->Address);
  }
  Log.clear();
}

void ProgramSet::revert(const ProgramSetDelta &D) {
  std::vector<Undo> Log = D.Undo;
  rollback(Log);
}

ProgramSetDelta ProgramSet::deltaOf(const std::vector<Undo> &Log) const {
  // The first record of an address holds its state before the update.
  SmallSet<uint64_t, 8> Seen;
  ProgramSetDelta D;
  for (const Undo &U : Log) {
    if (!Seen.insert(U.Address).second)
      continue;
    auto Now = Entries.find(U.Address);
    bool ExistsNow = Now != Entries.end();
    if (U.Existed && !ExistsNow)
      D.Removed.push_back(U.Before);
    else if (!U.Existed && ExistsNow)
      D.Added.push_back(Now->second);
  }
  auto ByAddress = [](const ProgramEntry &L, const ProgramEntry &R) {
    return L.Address < R.Address;
  };
  std::sort(D.Added.begin(), D.Added.end(), ByAddress);
  std::sort(D.Removed.begin(), D.Removed.end(), ByAddress);
  D.Undo = Log;
  return D;
}

Expected<ProgramSetDelta> ProgramSet::apply(const Batch &B) {
  return applyOps(B, /*IsUserBatch=*/true);
}

Expected<ProgramSetDelta> ProgramSet::applyOps(const Batch &B,
                                               bool IsUserBatch) {
  std::vector<Undo> Log;
  Log.reserve(B.Ops.size());
  for (size_t I = 0; I < B.Ops.size(); ++I) {
    if (Error E = applyOne(B.Ops[I], Log)) {
      rollback(Log);
      // A batch of one operation is that operation: its own error says
      // what failed.
      if (!IsUserBatch || B.Ops.size() == 1)
        return std::move(E);
      return createStringError(
          formatv("operation {0} of {1} in the batch failed, "
                  "nothing was changed: {2}",
                  I + 1, B.Ops.size(), toString(std::move(E))));
    }
  }
  return deltaOf(Log);
}

Expected<ProgramSetDelta> ProgramSet::add(uint64_t Address, StringRef Name) {
  return applyOps(Batch().add(Address, Name), /*IsUserBatch=*/false);
}

Expected<ProgramSetDelta> ProgramSet::remove(uint64_t Address) {
  return applyOps(Batch().remove(Address), /*IsUserBatch=*/false);
}

Expected<ProgramSetDelta> ProgramSet::change(uint64_t From, uint64_t To,
                                             StringRef ToName) {
  return applyOps(Batch().change(From, To, ToName), /*IsUserBatch=*/false);
}

} // namespace dispatchgen
