/*===- selftest.c - Check filters.c without dispatch-gen ------------------===*
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
 *
 * Links with filters.c and stands in for the dispatcher: its xdp_dispatch
 * calls the program on an exact-size heap copy of the frame, so that under
 * AddressSanitizer any read past the frame's length is reported. Then:
 *
 *  - every program on every frame, through dispatchgen_drive (the entry)
 *    and dispatchgen_expect (the plain indirect call): the verdicts must
 *    agree, but for programs dispatchgen_stateful names;
 *  - every program's verdicts on the well-formed frames against what the
 *    frames' kinds say (drop_udp_port53 drops exactly the UDP DNS queries);
 *  - every program on every prefix of every frame (0 .. len bytes).
 *
 * usage: selftest [--quiet] [--pcap FILE]
 *   --quiet      print only the summary line and failures
 *   --pcap FILE  also write the frames to FILE (pcap, for tcpdump/Wireshark)
 *
 *===----------------------------------------------------------------------===*/
#include "pkt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned int (*xdp_prog)(const void *ctx, const void *insn);

int dispatchgen_setup(void);
unsigned long dispatchgen_drive(unsigned long iteration, xdp_prog prog);
unsigned long dispatchgen_expect(unsigned long iteration, xdp_prog prog);
const char *dispatchgen_describe(unsigned long iteration);
int dispatchgen_stateful(xdp_prog prog);

/* The programs of filters.c, in its order. */
#define PROGRAMS(X)                                                            \
  X(pass_all)                                                                  \
  X(drop_all_tcp)                                                              \
  X(drop_udp_port53)                                                           \
  X(drop_dns_any)                                                              \
  X(drop_by_src_ipv4)                                                          \
  X(allow_only_ipv6)                                                           \
  X(drop_ipv4_fragments)                                                       \
  X(drop_tcp_syn_flood)                                                        \
  X(count_per_protocol)                                                        \
  X(rate_limiter)                                                              \
  X(drop_ttl_expired)                                                          \
  X(drop_malformed)                                                            \
  X(icmp_echo_tx)                                                              \
  X(vlan_filter)

#define DECLARE(Name) unsigned int Name(const void *ctx, const void *insn);
#define ENTRY(Name) {#Name, Name},
PROGRAMS(DECLARE)
static const struct {
  const char *Name;
  xdp_prog Prog;
} Programs[] = {PROGRAMS(ENTRY)};
enum { NPROGRAMS = sizeof(Programs) / sizeof(Programs[0]) };

enum { NPACKETS = 512 }; /* filters.c's */

/* On frames whose kind contains Match (and no Unless, if given) the program
 * returns Verdict; on other well-formed frames Otherwise. */
static const struct {
  const char *Program;
  const char *Match, *Unless;
  unsigned Verdict, Otherwise;
} Oracle[] = {
    {"pass_all", "", 0, XDP_PASS, XDP_PASS},
    {"drop_all_tcp", "/tcp", 0, XDP_DROP, XDP_PASS},
    {"drop_udp_port53", "udp dns", "reply", XDP_DROP, XDP_PASS},
    {"drop_dns_any", "dns any", 0, XDP_DROP, XDP_PASS},
    {"drop_by_src_ipv4", "blocklist", 0, XDP_DROP, XDP_PASS},
    {"allow_only_ipv6", "ipv6", 0, XDP_PASS, XDP_DROP},
    {"drop_ipv4_fragments", "fragment", 0, XDP_DROP, XDP_PASS},
    {"drop_tcp_syn_flood", "bare syn", 0, XDP_DROP, XDP_PASS},
    {"count_per_protocol", "", 0, XDP_PASS, XDP_PASS},
    {"drop_ttl_expired", "ttl 1", 0, XDP_DROP, XDP_PASS},
    {"drop_ttl_expired", "hop limit 1", 0, XDP_DROP, XDP_PASS},
    {"drop_malformed", "", 0, XDP_PASS, XDP_PASS},
    {"icmp_echo_tx", "echo request", 0, XDP_TX, XDP_PASS},
    {"vlan_filter", "vlan 200", 0, XDP_DROP, XDP_PASS},
    {"vlan_filter", "vlan 300", 0, XDP_DROP, XDP_PASS},
};

static const char *const VerdictNames[] = {"ABORTED", "DROP", "PASS", "TX"};
static const char VerdictLetters[] = "ADPT";

static int Quiet;
static unsigned Failures;
static unsigned long Dispatched;
static struct pkt LastSeen; /* the frame of the last xdp_dispatch call */

__attribute__((format(printf, 1, 2))) static void fail(const char *Fmt, ...) {
  if (++Failures > 20)
    return;
  va_list Args;
  va_start(Args, Fmt);
  printf("FAIL: ");
  vprintf(Fmt, Args);
  printf("\n");
  va_end(Args);
}

/* Calls Prog on a heap copy of exactly Len bytes of Data. */
static unsigned callOnCopy(xdp_prog Prog, const unsigned char *Data,
                           unsigned Len, const void *Insn) {
  unsigned char *Copy = malloc(Len ? Len : 1);
  if (!Copy) {
    perror("malloc");
    exit(2);
  }
  if (Len)
    memcpy(Copy, Data, Len);
  /* A zero-length frame points at an allocation with no bytes to read. */
  struct pkt Frame = {Len ? Copy : Copy + 1, Len};
  unsigned Verdict = Prog(&Frame, Insn);
  free(Copy);
  return Verdict;
}

/* The stand-in for the dispatcher `dispatch-gen run` generates. */
unsigned int xdp_dispatch(const void *ctx, const void *insn, xdp_prog prog) {
  const struct pkt *Frame = ctx;
  ++Dispatched;
  LastSeen = *Frame;
  return callOnCopy(prog, Frame->data, Frame->len, insn);
}

static int contains(const char *S, const char *Part) {
  return Part && strstr(S, Part) != 0;
}

static int malformedKind(const char *Kind) {
  return strncmp(Kind, "malformed", 9) == 0;
}

/* FNV-1a over every frame, to see the traffic is the same each run. */
static unsigned long long hashTraffic(void) {
  unsigned long long Hash = 14695981039346656037ull;
  for (unsigned long I = 0; I < NPACKETS; ++I) {
    dispatchgen_drive(I, Programs[0].Prog);
    for (unsigned J = 0; J < LastSeen.len; ++J)
      Hash = (Hash ^ LastSeen.data[J]) * 1099511628211ull;
    Hash = (Hash ^ LastSeen.len) * 1099511628211ull;
  }
  return Hash;
}

static void writePcap(const char *Path) {
  FILE *F = fopen(Path, "wb");
  if (!F) {
    perror(Path);
    exit(2);
  }
  /* Little-endian pcap: magic, version 2.4, zone, sigfigs, snaplen,
   * LINKTYPE_ETHERNET. */
  unsigned Header[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1};
  fwrite(Header, sizeof(Header), 1, F);
  for (unsigned long I = 0; I < NPACKETS; ++I) {
    dispatchgen_drive(I, Programs[0].Prog);
    unsigned Record[4] = {(unsigned)I, 0, LastSeen.len, LastSeen.len};
    fwrite(Record, sizeof(Record), 1, F);
    fwrite(LastSeen.data, 1, LastSeen.len, F);
  }
  fclose(F);
}

int main(int Argc, char **Argv) {
  const char *Pcap = 0;
  for (int I = 1; I < Argc; ++I) {
    if (!strcmp(Argv[I], "--quiet"))
      Quiet = 1;
    else if (!strcmp(Argv[I], "--pcap") && I + 1 < Argc)
      Pcap = Argv[++I];
    else {
      fprintf(stderr, "usage: %s [--quiet] [--pcap FILE]\n", Argv[0]);
      return 2;
    }
  }

  /* Before setup every frame is empty, and every program must cope. */
  for (unsigned P = 0; P < NPROGRAMS; ++P)
    if (dispatchgen_drive(0, Programs[P].Prog) > XDP_TX)
      fail("%s: bad verdict on the empty frame", Programs[P].Name);

  if (dispatchgen_setup() != 0)
    fail("dispatchgen_setup failed");
  unsigned long long Hash = hashTraffic();
  if (dispatchgen_setup() != 0 || hashTraffic() != Hash)
    fail("dispatchgen_setup is not idempotent");
  if (Pcap)
    writePcap(Pcap);

  /* The kinds of frames, sorted by name. */
  const char *Kinds[64];
  unsigned NKinds = 0, KindOf[NPACKETS], KindCount[64] = {0};
  for (unsigned long I = 0; I < NPACKETS; ++I) {
    const char *Kind = dispatchgen_describe(I);
    unsigned K = 0;
    while (K < NKinds && strcmp(Kinds[K], Kind) < 0)
      ++K;
    if (K < NKinds && !strcmp(Kinds[K], Kind))
      continue;
    if (NKinds == 64) {
      fail("more than 64 kinds of frames");
      break;
    }
    memmove(Kinds + K + 1, Kinds + K, (NKinds++ - K) * sizeof(Kinds[0]));
    Kinds[K] = Kind;
  }
  for (unsigned long I = 0; I < NPACKETS; ++I) {
    unsigned K = 0;
    while (K < NKinds && strcmp(Kinds[K], dispatchgen_describe(I)))
      ++K;
    KindOf[I] = K;
    ++KindCount[K];
  }

  /* Every program on every frame through the entry, then again through the
   * entry (an iteration that wraps around) and through the plain indirect
   * call. A stateful program's first pass is its verdicts on the traffic as
   * it comes, one call per frame. */
  static unsigned Counts[NPROGRAMS][4], ByKind[NPROGRAMS][64][4];
  unsigned Verdicts[NPACKETS], Disagree[NPROGRAMS] = {0};
  unsigned long ProtoCounts[PROTO_NCLASSES] = {0};
  unsigned long Before = Dispatched;
  for (unsigned P = 0; P < NPROGRAMS; ++P) {
    xdp_prog Prog = Programs[P].Prog;
    if (Prog == count_per_protocol)
      for (unsigned C = 0; C < PROTO_NCLASSES; ++C)
        ProtoCounts[C] = proto_counts[C];
    for (unsigned long I = 0; I < NPACKETS; ++I) {
      unsigned long Via = dispatchgen_drive(I, Prog);
      Verdicts[I] = (unsigned)Via;
      if (Via > XDP_TX) {
        fail("%s on %s frame %lu: verdict %lu", Programs[P].Name,
             dispatchgen_describe(I), I, Via);
        continue;
      }
      ++Counts[P][Via];
      ++ByKind[P][KindOf[I]][Via];
    }
    if (Prog == count_per_protocol)
      for (unsigned C = 0; C < PROTO_NCLASSES; ++C)
        ProtoCounts[C] = proto_counts[C] - ProtoCounts[C];
    int Stateful = dispatchgen_stateful(Prog);
    for (unsigned long I = 0; I < NPACKETS; ++I) {
      unsigned long Ref = dispatchgen_expect(I, Prog);
      unsigned long Again = dispatchgen_drive(I + 3 * NPACKETS, Prog);
      if (Ref > XDP_TX || Again > XDP_TX)
        fail("%s on %s frame %lu: verdicts %lu, %lu", Programs[P].Name,
             dispatchgen_describe(I), I, Ref, Again);
      else if (!Stateful && (Verdicts[I] != Ref || Verdicts[I] != Again)) {
        ++Disagree[P];
        fail("%s on %s frame %lu: entry %u (%lu later), indirect call %lu",
             Programs[P].Name, dispatchgen_describe(I), I, Verdicts[I], Again,
             Ref);
      }
    }
  }
  if (Dispatched - Before != 2ul * NPROGRAMS * NPACKETS)
    fail("xdp_dispatch ran %lu times, not %lu", Dispatched - Before,
         2ul * NPROGRAMS * NPACKETS);

  /* Well-formed frames against the oracle; malformed ones against
   * drop_malformed. */
  for (unsigned P = 0; P < NPROGRAMS; ++P) {
    for (unsigned K = 0; K < NKinds; ++K) {
      const unsigned *V = ByKind[P][K];
      if (malformedKind(Kinds[K])) {
        int Runt = contains(Kinds[K], "runt");
        if (!strcmp(Programs[P].Name, "drop_malformed") &&
            V[Runt ? XDP_ABORTED : XDP_DROP] != KindCount[K])
          fail("drop_malformed lets %s frames through", Kinds[K]);
        continue;
      }
      int Checked = 0;
      unsigned Expected = XDP_PASS;
      for (unsigned O = 0; O < sizeof(Oracle) / sizeof(Oracle[0]); ++O) {
        if (strcmp(Oracle[O].Program, Programs[P].Name))
          continue;
        if (!Checked)
          Expected = Oracle[O].Otherwise;
        Checked = 1;
        if (contains(Kinds[K], Oracle[O].Match) &&
            !contains(Kinds[K], Oracle[O].Unless))
          Expected = Oracle[O].Verdict;
      }
      if (Checked && V[Expected] != KindCount[K])
        fail("%s on %s frames: %u of %u not %s", Programs[P].Name, Kinds[K],
             KindCount[K] - V[Expected], KindCount[K], VerdictNames[Expected]);
    }
  }

  /* Every prefix of every frame: a bounds check missing anywhere is an
   * out-of-bounds read under AddressSanitizer. */
  unsigned long Prefixes = 0;
  for (unsigned long I = 0; I < NPACKETS; ++I) {
    dispatchgen_drive(I, Programs[0].Prog);
    struct pkt Frame = LastSeen;
    for (unsigned Len = 0; Len <= Frame.len; ++Len)
      for (unsigned P = 0; P < NPROGRAMS; ++P, ++Prefixes)
        if (callOnCopy(Programs[P].Prog, Frame.data, Len, 0) > XDP_TX)
          fail("%s on %s frame %lu: bad verdict on %u bytes", Programs[P].Name,
               dispatchgen_describe(I), I, Len);
  }

  if (!Quiet) {
    printf("traffic: %d frames of %u kinds, hash %016llx\n", NPACKETS, NKinds,
           Hash);
    for (unsigned K = 0; K < NKinds; ++K)
      printf("  %3u  %s\n", KindCount[K], Kinds[K]);

    printf("\n%-3s %-20s %8s %8s %8s %8s  %s\n", "#", "program", "ABORTED",
           "DROP", "PASS", "TX", "entry = indirect call");
    for (unsigned P = 0; P < NPROGRAMS; ++P) {
      printf("%-3u %-20s", P + 1, Programs[P].Name);
      for (unsigned V = 0; V < 4; ++V)
        printf(" %8u", Counts[P][V]);
      if (dispatchgen_stateful(Programs[P].Prog))
        printf("  not compared: stateful\n");
      else
        printf("  %u of %u\n", NPACKETS - Disagree[P], NPACKETS);
    }

    printf("\nverdicts by kind of frame (program # as above; A D P T, or "
           "counts when mixed):\n%-40s",
           "");
    for (unsigned P = 0; P < NPROGRAMS; ++P)
      printf(" %5u", P + 1);
    printf("\n");
    for (unsigned K = 0; K < NKinds; ++K) {
      printf("%-40s", Kinds[K]);
      for (unsigned P = 0; P < NPROGRAMS; ++P) {
        char Cell[32] = "";
        unsigned Distinct = 0, Len = 0;
        for (unsigned V = 0; V < 4; ++V)
          Distinct += ByKind[P][K][V] != 0;
        for (unsigned V = 0; V < 4; ++V)
          if (ByKind[P][K][V])
            Len += (unsigned)(Distinct == 1
                                  ? snprintf(Cell + Len, sizeof(Cell) - Len,
                                             "%c", VerdictLetters[V])
                                  : snprintf(Cell + Len, sizeof(Cell) - Len,
                                             "%u%c", ByKind[P][K][V],
                                             VerdictLetters[V]));
        printf(" %5s", Cell);
      }
      printf("\n");
    }

    static const char *const ClassNames[] = {
        "non-ip", "malformed", "tcp", "udp", "icmp", "fragment", "other ip"};
    printf("\ncount_per_protocol's counters after one pass:");
    for (unsigned C = 0; C < PROTO_NCLASSES; ++C)
      printf(" %s %lu", ClassNames[C], ProtoCounts[C]);
    printf("\n\n");
  }
  printf("%s: %d programs x %d frames through the entry and the indirect "
         "call, %lu calls on prefixes, %u failures\n",
         Failures ? "FAIL" : "OK", NPROGRAMS, NPACKETS, Prefixes, Failures);
  return Failures != 0;
}
