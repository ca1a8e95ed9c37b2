//===- ProgramSet.h - Refcounted program registry ---------------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The set of programs a dispatcher reaches directly, with the kernel's
// semantics (kernel/bpf/dispatcher.c):
//
//  * add(P) takes a reference: a program added twice has two users and stays
//    until it has been removed twice;
//  * remove(P) drops one reference; only the last one takes P out of the set;
//  * change(From, To) is bpf_dispatcher_change_prog(): either may be null,
//    From == To is a no-op, otherwise remove(From) then add(To).
//
// A program is identified by its address, the value callers pass as the
// target pointer. Every operation is all-or-nothing: an error (a null or
// unknown program, a full set) leaves the set exactly as it was. A Batch
// applies many operations at once, so one regeneration covers them all.
//
// ProgramSet is not thread-safe: the dispatcher that owns one serialises its
// updates.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_PROGRAMSET_H
#define DISPATCH_GEN_PROGRAMSET_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dispatchgen {

/// A program as the registry knows it.
struct ProgramEntry {
  /// The program's entry address; never 0.
  uint64_t Address = 0;
  /// A name for diagnostics, listings and symbols; may be empty.
  std::string Name;
  /// How many adds are not yet matched by a remove.
  unsigned Users = 0;
  /// Not registered: a target an adaptive dispatcher promoted
  /// (Dispatcher::programs()); it has no users.
  bool Promoted = false;
};

/// The prior state of one address an update touched (ProgramSet::revert).
struct ProgramSetUndo {
  uint64_t Address = 0;
  bool Existed = false;
  ProgramEntry Before;
};

/// What an update did to the set's membership. Reference counts that went
/// up or down without a program entering or leaving do not show here.
struct ProgramSetDelta {
  /// Programs that entered the set (by address).
  std::vector<ProgramEntry> Added;
  /// Programs whose last reference went (by address).
  std::vector<ProgramEntry> Removed;

  /// Whether the membership changed, i.e. the dispatcher must regenerate.
  bool changed() const { return !Added.empty() || !Removed.empty(); }
  /// What ProgramSet::revert() needs to undo the update, reference counts
  /// included.
  std::vector<ProgramSetUndo> Undo;
};

class ProgramSet {
public:
  /// The kernel's BPF_DISPATCHER_MAX.
  static constexpr unsigned DefaultCapacity = 48;

  /// A list of operations applied together by ProgramSet::apply().
  class Batch {
  public:
    Batch &add(uint64_t Address, llvm::StringRef Name = "");
    Batch &remove(uint64_t Address);
    Batch &change(uint64_t From, uint64_t To, llvm::StringRef ToName = "");

    bool empty() const { return Ops.empty(); }
    size_t size() const { return Ops.size(); }

  private:
    friend class ProgramSet;
    enum class OpKind { Add, Remove };
    struct Op {
      OpKind Kind;
      uint64_t Address;
      std::string Name;
    };
    std::vector<Op> Ops;
  };

  /// Capacity is the number of distinct programs the set holds, at least 1
  /// (a smaller value is raised to 1; Dispatcher rejects it up front).
  explicit ProgramSet(unsigned Capacity = DefaultCapacity);

  /// Takes a reference on the program at Address, adding it when new.
  /// Errors: Address is 0; the set is full.
  llvm::Expected<ProgramSetDelta> add(uint64_t Address,
                                      llvm::StringRef Name = "");

  /// Drops one reference; the last one removes the program.
  /// Errors: Address is 0 or not registered.
  llvm::Expected<ProgramSetDelta> remove(uint64_t Address);

  /// bpf_dispatcher_change_prog(): From or To may be 0 (none); From == To
  /// changes nothing. Errors: From is not registered; the set is full.
  llvm::Expected<ProgramSetDelta> change(uint64_t From, uint64_t To,
                                         llvm::StringRef ToName = "");

  /// Applies every operation of B in order, or none of them: on the first
  /// failing operation the set is restored and the error names the
  /// operation (a batch of one returns that operation's own error). The
  /// delta compares the membership before and after.
  llvm::Expected<ProgramSetDelta> apply(const Batch &B);

  /// Undoes the update that returned D (its membership and reference
  /// counts), which must be the last change made to the set: what a caller
  /// does when a later step of its own update fails, without copying the
  /// set beforehand.
  void revert(const ProgramSetDelta &D);

  /// Number of distinct programs.
  size_t size() const { return Entries.size(); }
  bool empty() const { return Entries.empty(); }
  unsigned capacity() const { return Capacity; }
  bool contains(uint64_t Address) const { return Entries.count(Address); }
  /// Users of the program at Address; 0 when it is not registered.
  unsigned users(uint64_t Address) const;
  /// Every program, by ascending address.
  std::vector<ProgramEntry> entries() const;

private:
  using Undo = ProgramSetUndo;

  /// apply(); IsUserBatch says whether errors of a batch of more than one
  /// operation name the failing operation.
  llvm::Expected<ProgramSetDelta> applyOps(const Batch &B, bool IsUserBatch);
  llvm::Error applyOne(const Batch::Op &O, std::vector<Undo> &Log);
  void rollback(std::vector<Undo> &Log);
  ProgramSetDelta deltaOf(const std::vector<Undo> &Log) const;

  unsigned Capacity;
  std::map<uint64_t, ProgramEntry> Entries;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_PROGRAMSET_H
