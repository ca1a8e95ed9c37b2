/*===- filters.c - XDP programs and their traffic, for `dispatch-gen run` -===*
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
 *
 *   dispatch-gen run examples/xdp/filters.c
 *
 * compiles this file, registers the functions marked DISPATCHGEN_PROGRAM in
 * a live dispatcher defined under the name xdp_dispatch, and drives the
 * synthetic frames built here through it from several threads while it
 * swaps programs. README.md in this directory states the contract.
 *
 * The programs have the shape the kernel's BPF dispatcher calls XDP programs
 * in, bpf_dispatcher_xdp_func(ctx, insnsi, bpf_func): ctx is the frame (a
 * struct pkt), insn is unused. They parse Ethernet with one 802.1Q tag,
 * IPv4 with options and fragments, IPv6 with a hop-by-hop header, TCP, UDP,
 * ICMP and ICMPv6, and check bounds before every read: the traffic includes
 * truncated and malformed frames.
 *
 *===----------------------------------------------------------------------===*/
#if defined(__has_include)
#if __has_include("dispatch-gen/program.h")
#include "dispatch-gen/program.h"
#endif
#endif
#ifndef DISPATCHGEN_PROGRAM
#define DISPATCHGEN_PROGRAM __attribute__((annotate("dispatch-gen.program")))
#endif

#include "pkt.h"

#include <string.h>

typedef unsigned int (*xdp_prog)(const void *ctx, const void *insn);

/* The entry the programs are called through: the dispatcher `run`
 * generates. Declared here, never defined in this file. */
unsigned int xdp_dispatch(const void *ctx, const void *insn, xdp_prog prog);

int dispatchgen_setup(void);
unsigned long dispatchgen_drive(unsigned long iteration, xdp_prog prog);
unsigned long dispatchgen_expect(unsigned long iteration, xdp_prog prog);
const char *dispatchgen_describe(unsigned long iteration);
int dispatchgen_stateful(xdp_prog prog);

/*===----------------------------------------------------------------------===*
 * Header parsing
 *===----------------------------------------------------------------------===*/

enum {
  ETH_HLEN = 14,
  ETH_P_IP = 0x0800,
  ETH_P_ARP = 0x0806,
  ETH_P_8021Q = 0x8100,
  ETH_P_IPV6 = 0x86dd,
  IPPROTO_HOPOPTS = 0,
  IPPROTO_ICMP = 1,
  IPPROTO_TCP = 6,
  IPPROTO_UDP = 17,
  IPPROTO_GRE = 47,
  IPPROTO_ICMPV6 = 58,
  TCP_SYN = 0x02,
  TCP_PSH = 0x08,
  TCP_ACK = 0x10,
  NO_VLAN = 0xffff
};

static unsigned be16(const unsigned char *P) {
  return (unsigned)P[0] << 8 | P[1];
}

static unsigned be32(const unsigned char *P) {
  return be16(P) << 16 | be16(P + 2);
}

/* Whether the N bytes at Off are inside the frame. */
static int has(const struct pkt *Pkt, unsigned Off, unsigned N) {
  return N <= Pkt->len && Off <= Pkt->len - N;
}

/* What parse() found. Fields of the headers up to the first broken one are
 * set; every nonzero offset is in bounds for the header it names. */
struct hdrs {
  unsigned EthType;  /* after the VLAN tag */
  unsigned Vlan;     /* the tag's VLAN id, or NO_VLAN */
  unsigned L3;       /* IP header, or 0 */
  unsigned End;      /* end of the IP packet by its length field (<= len) */
  unsigned L4;       /* TCP (20 bytes), UDP (8) or ICMP (4) header, or 0 */
  unsigned Payload;  /* after the TCP or UDP header, or 0 */
  unsigned Family;   /* 4 or 6 with L3 set, else 0 */
  unsigned Proto;    /* IP protocol; for IPv6 after the hop-by-hop header */
  unsigned Ttl;      /* TTL or hop limit */
  unsigned Fragment; /* IPv4 fragment: 1 the first, 2 a later one */
  int Bad;           /* a header is truncated or a length field wrong */
  const unsigned char *Src; /* source address: 4 or 16 bytes */
};

/* TCP, UDP or ICMP at Off, which is at most H->End. */
static void parseL4(const struct pkt *Pkt, unsigned Off, struct hdrs *H) {
  const unsigned char *D = Pkt->data;
  unsigned Need; /* the header's fixed part */
  if (H->Proto == IPPROTO_TCP)
    Need = 20;
  else if (H->Proto == IPPROTO_UDP)
    Need = 8;
  else if (H->Proto == IPPROTO_ICMP || H->Proto == IPPROTO_ICMPV6)
    Need = 4;
  else
    return; /* other protocols are not parsed */
  if (H->End - Off < Need) {
    H->Bad = 1;
    return;
  }
  H->L4 = Off;
  if (H->Proto == IPPROTO_TCP) {
    unsigned DataOff = (D[Off + 12] >> 4) * 4u;
    if (DataOff < 20 || H->End - Off < DataOff)
      H->Bad = 1;
    else
      H->Payload = Off + DataOff;
  } else if (H->Proto == IPPROTO_UDP) {
    /* A first fragment holds only part of the datagram. */
    unsigned Len = be16(D + Off + 4);
    if (!H->Fragment && (Len < 8 || H->End - Off < Len))
      H->Bad = 1;
    else
      H->Payload = Off + 8;
  }
}

static void parseIPv4(const struct pkt *Pkt, unsigned Off, struct hdrs *H) {
  const unsigned char *D = Pkt->data;
  if (!has(Pkt, Off, 20) || D[Off] >> 4 != 4) {
    H->Bad = 1;
    return;
  }
  unsigned HeaderLen = (D[Off] & 0xf) * 4u, Total = be16(D + Off + 2);
  if (HeaderLen < 20 || Total < HeaderLen || !has(Pkt, Off, Total)) {
    H->Bad = 1;
    return;
  }
  H->Family = 4;
  H->L3 = Off;
  H->End = Off + Total;
  H->Ttl = D[Off + 8];
  H->Proto = D[Off + 9];
  H->Src = D + Off + 12;
  unsigned Frag = be16(D + Off + 6);
  if (Frag & 0x1fff) { /* offset: no L4 header here */
    H->Fragment = 2;
    return;
  }
  if (Frag & 0x2000) /* more fragments */
    H->Fragment = 1;
  parseL4(Pkt, Off + HeaderLen, H);
}

static void parseIPv6(const struct pkt *Pkt, unsigned Off, struct hdrs *H) {
  const unsigned char *D = Pkt->data;
  if (!has(Pkt, Off, 40) || D[Off] >> 4 != 6) {
    H->Bad = 1;
    return;
  }
  unsigned Total = 40 + be16(D + Off + 4);
  if (!has(Pkt, Off, Total)) {
    H->Bad = 1;
    return;
  }
  H->Family = 6;
  H->L3 = Off;
  H->End = Off + Total;
  H->Proto = D[Off + 6];
  H->Ttl = D[Off + 7];
  H->Src = D + Off + 8;
  unsigned L4 = Off + 40;
  if (H->Proto == IPPROTO_HOPOPTS) {
    if (H->End - L4 < 8) {
      H->Bad = 1;
      return;
    }
    unsigned Next = D[L4], Len = (D[L4 + 1] + 1) * 8u;
    if (H->End - L4 < Len) {
      H->Bad = 1;
      return;
    }
    H->Proto = Next;
    L4 += Len;
  }
  parseL4(Pkt, L4, H);
}

static void parse(const struct pkt *Pkt, struct hdrs *H) {
  memset(H, 0, sizeof(*H));
  H->Vlan = NO_VLAN;
  if (!has(Pkt, 0, ETH_HLEN)) {
    H->Bad = 1;
    return;
  }
  unsigned Off = ETH_HLEN;
  H->EthType = be16(Pkt->data + 12);
  if (H->EthType == ETH_P_8021Q) {
    if (!has(Pkt, Off, 4)) {
      H->Bad = 1;
      return;
    }
    H->Vlan = be16(Pkt->data + Off) & 0xfff;
    H->EthType = be16(Pkt->data + Off + 2);
    Off += 4;
  }
  if (H->EthType == ETH_P_IP)
    parseIPv4(Pkt, Off, H);
  else if (H->EthType == ETH_P_IPV6)
    parseIPv6(Pkt, Off, H);
}

/* The one's complement sum of N bytes, added to Sum. */
static unsigned sum16(const unsigned char *P, unsigned N, unsigned Sum) {
  for (unsigned I = 0; I + 1 < N; I += 2)
    Sum += be16(P + I);
  if (N & 1)
    Sum += (unsigned)P[N - 1] << 8;
  return Sum;
}

static unsigned fold16(unsigned Sum) {
  while (Sum >> 16)
    Sum = (Sum & 0xffff) + (Sum >> 16);
  return Sum;
}

/* The QTYPE of a DNS query to port 53 over UDP or TCP, or 0. */
static unsigned dnsQueryType(const struct pkt *Pkt, const struct hdrs *H) {
  const unsigned char *D = Pkt->data;
  if (!H->Payload || be16(D + H->L4 + 2) != 53)
    return 0;
  /* Over TCP every message has a two-byte length first (RFC 1035 4.2.2). */
  unsigned Off = H->Payload + (H->Proto == IPPROTO_TCP ? 2 : 0);
  if (Off > H->End || H->End - Off < 12)
    return 0;
  if (D[Off + 2] & 0x80 || be16(D + Off + 4) == 0) /* a response; no query */
    return 0;
  Off += 12;
  while (Off < H->End && D[Off] != 0) { /* the QNAME's labels */
    if (D[Off] > 63) /* a compression pointer has no place here */
      return 0;
    Off += 1 + D[Off];
  }
  if (Off >= H->End || H->End - Off < 5) /* root label, QTYPE, QCLASS */
    return 0;
  return be16(D + Off + 1);
}

/*===----------------------------------------------------------------------===*
 * The programs
 *===----------------------------------------------------------------------===*/

DISPATCHGEN_PROGRAM unsigned int pass_all(const void *Ctx, const void *Insn) {
  (void)Ctx;
  (void)Insn;
  return XDP_PASS;
}

/* TCP over IPv4 or IPv6, fragments included. */
DISPATCHGEN_PROGRAM unsigned int drop_all_tcp(const void *Ctx,
                                              const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  return H.Family && H.Proto == IPPROTO_TCP ? XDP_DROP : XDP_PASS;
}

/* UDP datagrams to port 53: plain DNS queries. */
DISPATCHGEN_PROGRAM unsigned int drop_udp_port53(const void *Ctx,
                                                 const void *Insn) {
  (void)Insn;
  const struct pkt *Pkt = Ctx;
  struct hdrs H;
  parse(Pkt, &H);
  if (!H.L4 || H.Proto != IPPROTO_UDP)
    return XDP_PASS;
  return be16(Pkt->data + H.L4 + 2) == 53 ? XDP_DROP : XDP_PASS;
}

/* DNS queries for type ANY (255), the classic amplification query, over UDP
 * and over TCP. */
DISPATCHGEN_PROGRAM unsigned int drop_dns_any(const void *Ctx,
                                              const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  return dnsQueryType(Ctx, &H) == 255 ? XDP_DROP : XDP_PASS;
}

/* IPv4 sources on a blocklist of prefixes. */
DISPATCHGEN_PROGRAM unsigned int drop_by_src_ipv4(const void *Ctx,
                                                  const void *Insn) {
  static const struct {
    unsigned Addr, Mask;
  } Blocklist[] = {
      {0xcb007100, 0xffffff00}, /* 203.0.113.0/24 */
      {0xc0000242, 0xffffffff}, /* 192.0.2.66 */
      {0x0a420000, 0xffff0000}, /* 10.66.0.0/16 */
  };
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  if (H.Family != 4)
    return XDP_PASS;
  unsigned Src = be32(H.Src);
  for (unsigned I = 0; I < sizeof(Blocklist) / sizeof(Blocklist[0]); ++I)
    if ((Src & Blocklist[I].Mask) == Blocklist[I].Addr)
      return XDP_DROP;
  return XDP_PASS;
}

/* An IPv6-only link: everything else, ARP too, goes. */
DISPATCHGEN_PROGRAM unsigned int allow_only_ipv6(const void *Ctx,
                                                 const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  return H.EthType == ETH_P_IPV6 ? XDP_PASS : XDP_DROP;
}

/* Every IPv4 fragment, the first one too (more-fragments set). */
DISPATCHGEN_PROGRAM unsigned int drop_ipv4_fragments(const void *Ctx,
                                                     const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  return H.Family == 4 && H.Fragment ? XDP_DROP : XDP_PASS;
}

/* SYN flood heuristic: a SYN without ACK to a service port (< 1024) that
 * carries no TCP options. Every real stack sends at least MSS on a SYN;
 * bare 20-byte SYNs are what flood tools send. */
DISPATCHGEN_PROGRAM unsigned int drop_tcp_syn_flood(const void *Ctx,
                                                    const void *Insn) {
  (void)Insn;
  const struct pkt *Pkt = Ctx;
  struct hdrs H;
  parse(Pkt, &H);
  if (!H.L4 || H.Proto != IPPROTO_TCP)
    return XDP_PASS;
  const unsigned char *Tcp = Pkt->data + H.L4;
  int Syn = (Tcp[13] & (TCP_SYN | TCP_ACK)) == TCP_SYN;
  int NoOptions = (Tcp[12] >> 4) == 5;
  return Syn && NoOptions && be16(Tcp + 2) < 1024 ? XDP_DROP : XDP_PASS;
}

unsigned long proto_counts[PROTO_NCLASSES];

/* Counts frames by protocol, the way an XDP program fills a per-CPU array
 * map. Shared by every thread, hence atomic (relaxed: counts only). */
DISPATCHGEN_PROGRAM unsigned int count_per_protocol(const void *Ctx,
                                                    const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  enum proto_class Class = PROTO_OTHER_IP;
  if (H.Bad)
    Class = PROTO_MALFORMED;
  else if (!H.Family)
    Class = PROTO_NON_IP;
  else if (H.Fragment == 2)
    Class = PROTO_FRAGMENT;
  else if (H.Proto == IPPROTO_TCP)
    Class = PROTO_TCP;
  else if (H.Proto == IPPROTO_UDP)
    Class = PROTO_UDP;
  else if (H.Proto == IPPROTO_ICMP || H.Proto == IPPROTO_ICMPV6)
    Class = PROTO_ICMP;
  __atomic_fetch_add(&proto_counts[Class], 1, __ATOMIC_RELAXED);
  return XDP_PASS;
}

/* rate_limiter's token buckets, one per hash of the source address. Time is
 * counted in frames this program has seen, not in wall-clock time, so a
 * single-threaded run is reproducible: every RL_PERIOD frames a bucket gains
 * RL_RATE tokens, up to RL_BURST. A bucket is one word, updated by
 * compare-and-swap: the period of its last refill (high bits) and the tokens
 * spent since (low 8 bits); a zero word is a full bucket. */
enum { RL_BUCKETS = 256, RL_PERIOD = 64, RL_RATE = 3, RL_BURST = 8 };
static unsigned long long RlClock;
static unsigned long long RlBuckets[RL_BUCKETS];

/* A token bucket per source: the heavy hitter in the traffic mix exceeds its
 * rate, other sources (unless they share its bucket) do not. The verdict
 * depends on earlier calls (see dispatchgen_stateful). */
DISPATCHGEN_PROGRAM unsigned int rate_limiter(const void *Ctx,
                                              const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  if (!H.Family)
    return XDP_PASS;
  unsigned Hash = 2166136261u; /* FNV-1a */
  for (unsigned I = 0; I < (H.Family == 4 ? 4u : 16u); ++I)
    Hash = (Hash ^ H.Src[I]) * 16777619u;
  unsigned long long Now =
      __atomic_fetch_add(&RlClock, 1, __ATOMIC_RELAXED) / RL_PERIOD;
  unsigned long long *Bucket = &RlBuckets[Hash % RL_BUCKETS];
  unsigned long long Old = __atomic_load_n(Bucket, __ATOMIC_RELAXED), New;
  do {
    unsigned long long Last = Old >> 8, Spent = Old & 0xff;
    if (Now > Last) {
      unsigned long long Refill = (Now - Last) * RL_RATE;
      Spent = Refill >= Spent ? 0 : Spent - Refill;
    }
    if (Spent >= RL_BURST)
      return XDP_DROP;
    New = (Now > Last ? Now : Last) << 8 | (Spent + 1);
  } while (!__atomic_compare_exchange_n(Bucket, &Old, New, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED));
  return XDP_PASS;
}

/* What a router does with TTL or hop limit 0 or 1 (without sending the ICMP
 * time-exceeded a router would). */
DISPATCHGEN_PROGRAM unsigned int drop_ttl_expired(const void *Ctx,
                                                  const void *Insn) {
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  return H.Family && H.Ttl <= 1 ? XDP_DROP : XDP_PASS;
}

/* Header validation: truncated headers, wrong header or length fields and
 * bad IPv4 header checksums are dropped. A frame too short for an Ethernet
 * header cannot come from a working NIC: XDP_ABORTED (in the kernel, a drop
 * that also fires the xdp_exception tracepoint). */
DISPATCHGEN_PROGRAM unsigned int drop_malformed(const void *Ctx,
                                                const void *Insn) {
  (void)Insn;
  const struct pkt *Pkt = Ctx;
  if (Pkt->len < ETH_HLEN)
    return XDP_ABORTED;
  struct hdrs H;
  parse(Pkt, &H);
  if (H.Bad)
    return XDP_DROP;
  if (H.Family == 4) {
    const unsigned char *Ip = Pkt->data + H.L3;
    if (fold16(sum16(Ip, (Ip[0] & 0xf) * 4u, 0)) != 0xffff)
      return XDP_DROP;
  }
  return XDP_PASS;
}

/* Answers pings: ICMP echo request or ICMPv6 echo request go back out of
 * the port they came in on. A real responder swaps the addresses and
 * rewrites the type in place first; here the frame is read-only, so this is
 * only the decision. */
DISPATCHGEN_PROGRAM unsigned int icmp_echo_tx(const void *Ctx,
                                              const void *Insn) {
  (void)Insn;
  const struct pkt *Pkt = Ctx;
  struct hdrs H;
  parse(Pkt, &H);
  if (!H.L4)
    return XDP_PASS;
  unsigned Type = Pkt->data[H.L4];
  if ((H.Proto == IPPROTO_ICMP && Type == 8) ||
      (H.Proto == IPPROTO_ICMPV6 && Type == 128))
    return XDP_TX;
  return XDP_PASS;
}

/* A trunk port: untagged frames and the allowed VLANs pass. */
DISPATCHGEN_PROGRAM unsigned int vlan_filter(const void *Ctx,
                                             const void *Insn) {
  static const unsigned short Allowed[] = {100, 101};
  (void)Insn;
  struct hdrs H;
  parse(Ctx, &H);
  if (H.Vlan == NO_VLAN) /* untagged, or the tag is cut off */
    return H.EthType == ETH_P_8021Q ? XDP_DROP : XDP_PASS;
  for (unsigned I = 0; I < sizeof(Allowed) / sizeof(Allowed[0]); ++I)
    if (H.Vlan == Allowed[I])
      return XDP_PASS;
  return XDP_DROP;
}

/* Whether a program's verdict depends on the calls before it, so that two
 * calls on the same frame may disagree: the dispatcher and the plain
 * indirect call can only be compared on the other programs. */
int dispatchgen_stateful(xdp_prog prog) { return prog == rate_limiter; }

/*===----------------------------------------------------------------------===*
 * Synthetic traffic
 *===----------------------------------------------------------------------===*/

/* The kinds of frames and their weights in the mix. */
#define DG_KINDS(X)                                                            \
  X(K4TcpWeb, 34, "ipv4/tcp web")                                              \
  X(K4TcpSyn, 10, "ipv4/tcp syn")                                              \
  X(K4TcpSynFlood, 20, "ipv4/tcp bare syn (flood)")                            \
  X(K4TcpSynAck, 6, "ipv4/tcp syn-ack")                                        \
  X(K4TcpBlocked, 10, "ipv4/tcp from blocklist")                               \
  X(K6TcpWeb, 16, "ipv6/tcp web")                                              \
  X(K6TcpSyn, 5, "ipv6/tcp syn")                                               \
  X(K4UdpDns, 16, "ipv4/udp dns query")                                        \
  X(K4UdpDnsAny, 6, "ipv4/udp dns any query")                                  \
  X(K4UdpDnsReply, 8, "ipv4/udp dns reply")                                    \
  X(K6UdpDns, 8, "ipv6/udp dns query")                                         \
  X(K4TcpDns, 5, "ipv4/tcp dns query")                                         \
  X(K4TcpDnsAny, 4, "ipv4/tcp dns any query")                                  \
  X(K4UdpQuicHeavy, 40, "ipv4/udp quic, heavy hitter")                         \
  X(K4UdpNtp, 6, "ipv4/udp ntp")                                               \
  X(K6UdpQuic, 12, "ipv6/udp quic")                                            \
  X(K4IcmpEcho, 8, "ipv4/icmp echo request")                                   \
  X(K4IcmpReply, 4, "ipv4/icmp echo reply")                                    \
  X(K4IcmpUnreach, 3, "ipv4/icmp dest unreachable")                            \
  X(K6IcmpEcho, 6, "ipv6/icmpv6 echo request")                                 \
  X(K6IcmpNs, 4, "ipv6/icmpv6 neighbor solicit")                               \
  X(K4FragFirst, 5, "ipv4/udp first fragment")                                 \
  X(K4FragLater, 5, "ipv4/udp later fragment")                                 \
  X(K4IpOptions, 4, "ipv4/udp with ip options")                                \
  X(K4Ttl1, 5, "ipv4/udp ttl 1 (traceroute)")                                  \
  X(K6HopLimit1, 3, "ipv6/udp hop limit 1")                                    \
  X(K6HbhMld, 3, "ipv6/hop-by-hop/icmpv6 mld, hop limit 1")                    \
  X(K6HbhUdp, 3, "ipv6/hop-by-hop/udp")                                        \
  X(K4Gre, 3, "ipv4/gre")                                                      \
  X(KArp, 6, "arp")                                                            \
  X(KVlan100Web, 8, "vlan 100/ipv4/tcp web")                                   \
  X(KVlan101Quic, 5, "vlan 101/ipv6/udp quic")                                 \
  X(KVlan200Dns, 4, "vlan 200/ipv4/udp dns query")                             \
  X(KVlan300Echo, 3, "vlan 300/ipv4/icmp echo request")                        \
  X(KBadRunt, 2, "malformed: runt (< 14 bytes)")                               \
  X(KBadTruncated, 4, "malformed: truncated")                                  \
  X(KBadVlan, 2, "malformed: truncated vlan tag")                              \
  X(KBadIhl, 2, "malformed: ipv4 ihl < 5")                                     \
  X(KBadTotalLong, 2, "malformed: ipv4 total length > frame")                  \
  X(KBadTotalShort, 2, "malformed: ipv4 total length < header")                \
  X(KBadVersion, 2, "malformed: ipv4 ethertype, version 6")                    \
  X(KBadChecksum, 3, "malformed: ipv4 header checksum")                        \
  X(KBadTcpOffLow, 2, "malformed: tcp data offset < 5")                        \
  X(KBadTcpOffHigh, 2, "malformed: tcp data offset past end")                  \
  X(KBadUdpLen, 2, "malformed: udp length < 8")                                \
  X(KBadV6Len, 2, "malformed: ipv6 payload length > frame")                    \
  X(KBadHbh, 2, "malformed: ipv6 hop-by-hop past end")

#define DG_ENUM(Kind, Weight, Name) Kind,
#define DG_WEIGHT(Kind, Weight, Name) Weight,
#define DG_NAME(Kind, Weight, Name) Name,
enum kind { DG_KINDS(DG_ENUM) NKinds };
static const unsigned char KindWeights[] = {DG_KINDS(DG_WEIGHT)};
static const char *const KindNames[] = {DG_KINDS(DG_NAME)};

enum { NPACKETS = 512, FRAME_MAX = 256 };
static unsigned char Frames[NPACKETS][FRAME_MAX];
static struct pkt Packets[NPACKETS];
static unsigned char PacketKinds[NPACKETS];
static int SetupState; /* 0: not built, 1: being built, 2: ready */

/* xorshift64 (Marsaglia, 2003). */
static unsigned rnd(unsigned long long *State) {
  *State ^= *State << 13;
  *State ^= *State >> 7;
  *State ^= *State << 17;
  return (unsigned)(*State >> 32);
}

/* What build() writes: one frame, before any damage. */
struct spec {
  unsigned Family; /* 4 or 6; 0: ARP */
  unsigned Vlan;   /* 0: untagged */
  unsigned Proto, Ttl;
  unsigned Src4, Dst4; /* IPv4 addresses */
  unsigned Src6, Dst6; /* IPv6: 2001:db8:1::Src6 and 2001:db8::Dst6 */
  unsigned IpOptions;  /* IPv4 option bytes: 0, 4 or 8 */
  int HopByHop;        /* IPv6: a hop-by-hop header first */
  unsigned Fragment;   /* IPv4: 1 the first fragment, 2 a later one */
  unsigned SrcPort, DstPort;
  unsigned TcpFlags, TcpOptions; /* option bytes: 0, 12 (timestamps), 20 */
  unsigned IcmpType, IcmpCode;
  unsigned DnsType; /* a DNS query of this QTYPE as payload; 0: none */
  int DnsReply;     /* a DNS reply (type A) as payload */
  unsigned Data;    /* other payload bytes */
};

/* Where build() put the headers. */
struct layout {
  unsigned Len, L3, L4, End;
};

struct writer {
  unsigned char *Buf;
  unsigned Len;
};

static void put(struct writer *W, const void *Bytes, unsigned N) {
  if (N > FRAME_MAX - W->Len) /* never, for the frames built here */
    N = FRAME_MAX - W->Len;
  memcpy(W->Buf + W->Len, Bytes, N);
  W->Len += N;
}

static void put8(struct writer *W, unsigned V) {
  unsigned char B = (unsigned char)V;
  put(W, &B, 1);
}

static void put16(struct writer *W, unsigned V) {
  put8(W, V >> 8);
  put8(W, V);
}

static void put32(struct writer *W, unsigned V) {
  put16(W, V >> 16);
  put16(W, V);
}

static void set16(unsigned char *P, unsigned V) {
  P[0] = (unsigned char)(V >> 8);
  P[1] = (unsigned char)V;
}

static void putIPv6(struct writer *W, unsigned Prefix, unsigned Host) {
  put32(W, 0x20010db8);
  put32(W, Prefix << 16);
  put32(W, 0);
  put32(W, Host);
}

static void putDnsName(struct writer *W, const char *Name) {
  while (*Name) {
    const char *Dot = Name;
    while (*Dot && *Dot != '.')
      ++Dot;
    put8(W, (unsigned)(Dot - Name));
    put(W, Name, (unsigned)(Dot - Name));
    Name = *Dot ? Dot + 1 : Dot;
  }
  put8(W, 0);
}

static void putDns(struct writer *W, const struct spec *S,
                   unsigned long long *Rng) {
  static const char *const Names[] = {"example.com", "www.example.org",
                                      "deb.debian.org", "llvm.org",
                                      "a.root-servers.net"};
  int Any = S->DnsType == 255;
  put16(W, rnd(Rng));                      /* id */
  put16(W, S->DnsReply ? 0x8180 : 0x0100); /* QR, RD, RA */
  put16(W, 1);                             /* QDCOUNT */
  put16(W, S->DnsReply ? 1 : 0);           /* ANCOUNT */
  put16(W, 0);                             /* NSCOUNT */
  put16(W, Any ? 1 : 0);                   /* ARCOUNT: EDNS */
  putDnsName(W, Names[rnd(Rng) % 5]);
  put16(W, S->DnsReply ? 1 : S->DnsType);
  put16(W, 1); /* IN */
  if (S->DnsReply) {
    put16(W, 0xc00c); /* the name, compressed */
    put32(W, 0x00010001);
    put32(W, 3600);
    put16(W, 4);
    put32(W, 0xc6336400 | (rnd(Rng) & 0xff));
  }
  if (Any) { /* OPT: 4096-byte UDP payload, as amplifiers ask for */
    put8(W, 0);
    put16(W, 41);
    put16(W, 4096);
    put32(W, 0);
    put16(W, 0);
  }
}

/* TCP options: none, timestamps, or what Linux sends on a SYN. */
static void putTcpOptions(struct writer *W, unsigned Bytes,
                          unsigned long long *Rng) {
  if (Bytes == 20) {
    put32(W, 0x020405b4); /* MSS 1460 */
    put16(W, 0x0402);     /* SACK permitted */
  } else if (Bytes == 12) {
    put16(W, 0x0101); /* NOP NOP */
  }
  if (Bytes) {
    put16(W, 0x080a); /* timestamps */
    put32(W, rnd(Rng));
    put32(W, Bytes == 20 ? 0 : rnd(Rng));
  }
  if (Bytes == 20)
    put32(W, 0x01030307); /* NOP, window scale 7 */
}

/* The L4 checksum: over the segment and, but for ICMP, the IPv4 or IPv6
 * pseudo-header. The checksum field must be zero. */
static unsigned l4Checksum(const unsigned char *B, const struct spec *S,
                           unsigned L3, unsigned L4, unsigned End) {
  unsigned Len = End - L4, Sum = sum16(B + L4, Len, 0);
  if (S->Family == 4 && S->Proto != IPPROTO_ICMP)
    Sum = sum16(B + L3 + 12, 8, Sum + S->Proto + Len);
  else if (S->Family == 6)
    Sum = sum16(B + L3 + 8, 32, Sum + S->Proto + Len);
  unsigned Check = ~fold16(Sum) & 0xffff;
  return Check ? Check : 0xffff;
}

static struct layout build(unsigned char *B, const struct spec *S,
                           unsigned long long *Rng) {
  struct writer W = {B, 0};
  struct layout L = {0, 0, 0, 0};
  put32(&W, 0x02000000); /* destination MAC 02:00:00:00:00:01 */
  put16(&W, 0x0001);
  put32(&W, 0x0200005e); /* source MAC 02:00:00:5e:10:xx */
  put16(&W, 0x1000 | (rnd(Rng) & 0xff));
  if (S->Vlan) {
    put16(&W, ETH_P_8021Q);
    put16(&W, S->Vlan);
  }
  if (!S->Family) { /* ARP request: who has 192.168.1.1? */
    put16(&W, ETH_P_ARP);
    put32(&W, 0x00010800);
    put32(&W, 0x06040001);
    put(&W, B + 6, 6);
    put32(&W, S->Src4);
    put32(&W, 0);
    put16(&W, 0);
    put32(&W, 0xc0a80101);
  } else {
    put16(&W, S->Family == 4 ? ETH_P_IP : ETH_P_IPV6);
    L.L3 = W.Len;
    if (S->Family == 4) {
      put8(&W, 0x45 + S->IpOptions / 4);
      put8(&W, 0);         /* DSCP, ECN */
      put16(&W, 0);        /* total length, below */
      put16(&W, rnd(Rng)); /* id */
      put16(&W, S->Fragment == 1 ? 0x2000 : S->Fragment == 2 ? 185 : 0x4000);
      put8(&W, S->Ttl);
      put8(&W, S->Proto);
      put16(&W, 0); /* checksum, below */
      put32(&W, S->Src4);
      put32(&W, S->Dst4);
      if (S->IpOptions) /* router alert, then end of options */
        put32(&W, 0x94040000);
      if (S->IpOptions == 8)
        put32(&W, 0x01010100);
    } else {
      put32(&W, 0x60000000);
      put16(&W, 0); /* payload length, below */
      put8(&W, S->HopByHop ? IPPROTO_HOPOPTS : S->Proto);
      put8(&W, S->Ttl);
      putIPv6(&W, 1, S->Src6);
      putIPv6(&W, 0, S->Dst6);
      if (S->HopByHop) { /* router alert (MLD), padding */
        put8(&W, S->Proto);
        put8(&W, 0);
        put32(&W, 0x05020000);
        put16(&W, 0x0100);
      }
    }
    L.L4 = W.Len;
    unsigned Check = 0; /* offset of the L4 checksum, 0: none */
    if (S->Fragment == 2) {
      /* The datagram's middle: no L4 header. */
    } else if (S->Proto == IPPROTO_TCP) {
      put16(&W, S->SrcPort);
      put16(&W, S->DstPort);
      put32(&W, rnd(Rng));
      put32(&W, S->TcpFlags & TCP_ACK ? rnd(Rng) : 0);
      put8(&W, (5 + S->TcpOptions / 4) << 4);
      put8(&W, S->TcpFlags);
      put16(&W, 64240);
      put32(&W, 0); /* checksum, urgent pointer */
      putTcpOptions(&W, S->TcpOptions, Rng);
      Check = L.L4 + 16;
      if (S->DnsType) { /* length, then the message */
        unsigned At = W.Len;
        put16(&W, 0);
        putDns(&W, S, Rng);
        set16(B + At, W.Len - At - 2);
      }
    } else if (S->Proto == IPPROTO_UDP) {
      put16(&W, S->SrcPort);
      put16(&W, S->DstPort);
      put32(&W, 0); /* length, checksum */
      Check = L.L4 + 6;
      if (S->DnsType || S->DnsReply)
        putDns(&W, S, Rng);
    } else if (S->Proto == IPPROTO_ICMP || S->Proto == IPPROTO_ICMPV6) {
      put8(&W, S->IcmpType);
      put8(&W, S->IcmpCode);
      put16(&W, 0);        /* checksum */
      put32(&W, rnd(Rng)); /* identifier and sequence, or unused */
      Check = L.L4 + 2;
    } else if (S->Proto == IPPROTO_GRE) {
      put32(&W, 0x00000800); /* carrying IPv4 */
    }
    for (unsigned I = 0; I < S->Data; ++I)
      put8(&W, rnd(Rng));
    L.End = W.Len;
    if (S->Family == 4) {
      set16(B + L.L3 + 2, L.End - L.L3);
      set16(B + L.L3 + 10,
            ~fold16(sum16(B + L.L3, 20 + S->IpOptions, 0)) & 0xffff);
    } else {
      set16(B + L.L3 + 4, L.End - L.L3 - 40);
    }
    if (S->Proto == IPPROTO_UDP && S->Fragment != 2)
      /* A first fragment: the datagram goes on for 1480 more bytes. */
      set16(B + L.L4 + 4, L.End - L.L4 + (S->Fragment ? 1480 : 0));
    if (Check && !S->Fragment)
      set16(B + Check, l4Checksum(B, S, L.L3, L.L4, L.End));
    else if (Check && S->Proto == IPPROTO_UDP)
      set16(B + Check, 0); /* "no checksum", as it cannot be computed */
  }
  while (W.Len < 60) /* the minimum frame, without the FCS */
    put8(&W, 0);
  L.Len = W.Len;
  return L;
}

/* A client of the pool: 24 IPv4 and 16 IPv6 hosts. */
static unsigned client4(unsigned long long *Rng) {
  unsigned I = rnd(Rng) % 24;
  return 0x0a000000 | (I / 8 + 1) << 8 | (I % 8 * 16 + 5);
}

static unsigned client6(unsigned long long *Rng) { return rnd(Rng) % 16 + 1; }

static unsigned ephemeralPort(unsigned long long *Rng) {
  return 32768 + rnd(Rng) % 28232;
}

/* The kind a VLAN-tagged or malformed kind starts from. */
static enum kind baseKind(enum kind Kind, unsigned long long *Rng) {
  switch (Kind) {
  case KVlan100Web:
    return K4TcpWeb;
  case KVlan101Quic:
    return K6UdpQuic;
  case KVlan200Dns:
    return K4UdpDns;
  case KVlan300Echo:
    return K4IcmpEcho;
  case KBadRunt:
  case KBadTruncated:
    return rnd(Rng) % 2 ? K4TcpWeb : K4UdpDns;
  case KBadVlan:
    return K4TcpWeb;
  case KBadUdpLen:
    return K4UdpDns;
  case KBadV6Len:
    return K6UdpQuic;
  case KBadHbh:
    return K6HbhUdp;
  case KBadIhl:
  case KBadTotalLong:
  case KBadTotalShort:
  case KBadVersion:
  case KBadChecksum:
  case KBadTcpOffLow:
  case KBadTcpOffHigh:
    return K4TcpWeb;
  default:
    return Kind;
  }
}

static void makeSpec(enum kind Kind, struct spec *S, unsigned long long *Rng) {
  static const unsigned ServicePorts[] = {22, 25, 80, 443};
  memset(S, 0, sizeof(*S));
  S->Family = 4;
  S->Ttl = 64;
  S->Src4 = client4(Rng);
  S->Dst4 = 0xc0a8010a; /* 192.168.1.10 */
  S->Src6 = client6(Rng);
  S->Dst6 = 0x10;
  S->SrcPort = ephemeralPort(Rng);
  switch (Kind) {
  case K4TcpWeb:
  case K6TcpWeb:
  case K4TcpBlocked:
    S->Family = Kind == K6TcpWeb ? 6 : 4;
    S->Proto = IPPROTO_TCP;
    S->DstPort = rnd(Rng) % 4 ? 443 : 80;
    S->TcpFlags = TCP_ACK | (rnd(Rng) % 2 ? TCP_PSH : 0);
    S->TcpOptions = 12;
    S->Data = S->TcpFlags & TCP_PSH ? 16 + rnd(Rng) % 80 : 0;
    if (Kind == K4TcpBlocked) {
      static const unsigned Blocked[] = {0xcb007100, 0xc0000242, 0x0a420000};
      S->Src4 = Blocked[rnd(Rng) % 3] | (rnd(Rng) % 2 ? 0x42 : 0x07);
      if ((S->Src4 & 0xffffff00) == 0xc0000200)
        S->Src4 = 0xc0000242;
    }
    break;
  case K4TcpSyn:
  case K6TcpSyn:
    S->Family = Kind == K6TcpSyn ? 6 : 4;
    S->Proto = IPPROTO_TCP;
    S->DstPort = ServicePorts[rnd(Rng) % 4];
    S->TcpFlags = TCP_SYN;
    S->TcpOptions = 20;
    break;
  case K4TcpSynFlood: /* spoofed sources in 100.64.0.0/10 */
    S->Proto = IPPROTO_TCP;
    S->Src4 = 0x64400000 | (rnd(Rng) & 0x3fffff);
    S->DstPort = ServicePorts[rnd(Rng) % 4];
    S->TcpFlags = TCP_SYN;
    S->Ttl = 240 + rnd(Rng) % 16;
    break;
  case K4TcpSynAck: /* from a server we connected to */
    S->Proto = IPPROTO_TCP;
    S->Src4 = 0x5db8d822; /* 93.184.216.34 */
    S->SrcPort = 443;
    S->DstPort = ephemeralPort(Rng);
    S->TcpFlags = TCP_SYN | TCP_ACK;
    S->TcpOptions = 20;
    S->Ttl = 52;
    break;
  case K4UdpDns:
  case K4UdpDnsAny:
  case K6UdpDns:
    S->Family = Kind == K6UdpDns ? 6 : 4;
    S->Proto = IPPROTO_UDP;
    S->DstPort = 53;
    S->DnsType = Kind == K4UdpDnsAny ? 255 : rnd(Rng) % 2 ? 1 : 28;
    break;
  case K4UdpDnsReply:
    S->Proto = IPPROTO_UDP;
    S->Src4 = 0x09090909; /* the resolver */
    S->Dst4 = client4(Rng);
    S->SrcPort = 53;
    S->DstPort = ephemeralPort(Rng);
    S->DnsReply = 1;
    S->Ttl = 57;
    break;
  case K4TcpDns:
  case K4TcpDnsAny:
    S->Proto = IPPROTO_TCP;
    S->DstPort = 53;
    S->TcpFlags = TCP_ACK | TCP_PSH;
    S->TcpOptions = 12;
    S->DnsType = Kind == K4TcpDnsAny ? 255 : 1;
    break;
  case K4UdpQuicHeavy:
    S->Proto = IPPROTO_UDP;
    S->Src4 = 0xc6336407; /* 198.51.100.7 */
    S->DstPort = 443;
    S->Data = 24 + rnd(Rng) % 72;
    break;
  case K4UdpNtp:
    S->Proto = IPPROTO_UDP;
    S->SrcPort = 123;
    S->DstPort = 123;
    S->Data = 48;
    break;
  case K6UdpQuic:
    S->Family = 6;
    S->Proto = IPPROTO_UDP;
    S->DstPort = 443;
    S->Data = 24 + rnd(Rng) % 72;
    break;
  case K4IcmpEcho:
  case K4IcmpReply:
    S->Proto = IPPROTO_ICMP;
    S->IcmpType = Kind == K4IcmpReply ? 0 : 8;
    S->Data = 56;
    break;
  case K4IcmpUnreach: /* port unreachable, quoting a UDP datagram */
    S->Proto = IPPROTO_ICMP;
    S->Src4 = 0xc0a80101;
    S->IcmpType = 3;
    S->IcmpCode = 3;
    S->Data = 28;
    S->Ttl = 255;
    break;
  case K6IcmpEcho:
  case K6IcmpNs:
    S->Family = 6;
    S->Proto = IPPROTO_ICMPV6;
    S->IcmpType = Kind == K6IcmpEcho ? 128 : 135;
    S->Data = Kind == K6IcmpEcho ? 56 : 24;
    S->Ttl = Kind == K6IcmpEcho ? 64 : 255;
    break;
  case K4FragFirst:
  case K4FragLater:
    S->Proto = IPPROTO_UDP;
    S->DstPort = 4789;
    S->Fragment = Kind == K4FragFirst ? 1 : 2;
    S->Data = 64 + rnd(Rng) % 32;
    break;
  case K4IpOptions:
    S->Proto = IPPROTO_UDP;
    S->IpOptions = rnd(Rng) % 2 ? 4 : 8;
    S->DstPort = 5353;
    S->Data = 32;
    break;
  case K4Ttl1:
  case K6HopLimit1:
    S->Family = Kind == K6HopLimit1 ? 6 : 4;
    S->Proto = IPPROTO_UDP;
    S->Ttl = 1;
    S->DstPort = 33434 + rnd(Rng) % 32;
    S->Data = 32;
    break;
  case K6HbhMld: /* MLDv2 report */
    S->Family = 6;
    S->HopByHop = 1;
    S->Proto = IPPROTO_ICMPV6;
    S->IcmpType = 143;
    S->Data = 20;
    S->Ttl = 1;
    S->Dst6 = 0x16;
    break;
  case K6HbhUdp:
    S->Family = 6;
    S->HopByHop = 1;
    S->Proto = IPPROTO_UDP;
    S->DstPort = 521;
    S->Data = 24;
    break;
  case K4Gre:
    S->Proto = IPPROTO_GRE;
    S->Src4 = 0xac100001; /* 172.16.0.1 */
    S->Data = 40;
    break;
  case KArp:
    S->Family = 0;
    break;
  default: /* VLAN-tagged and malformed kinds: see baseKind() */
    break;
  }
}

/* The VLAN a kind is tagged with, or 0. */
static unsigned vlanOf(enum kind Kind) {
  switch (Kind) {
  case KVlan100Web:
  case KBadVlan:
    return 100;
  case KVlan101Quic:
    return 101;
  case KVlan200Dns:
    return 200;
  case KVlan300Echo:
    return 300;
  default:
    return 0;
  }
}

/* Breaks a frame the way Kind names. */
static void damage(enum kind Kind, unsigned char *B, struct layout *L,
                   unsigned long long *Rng) {
  unsigned char *Ip = B + L->L3, *L4 = B + L->L4;
  switch (Kind) {
  case KBadRunt:
    L->Len = rnd(Rng) % ETH_HLEN;
    return;
  case KBadTruncated:
    L->Len = ETH_HLEN + rnd(Rng) % (L->End - ETH_HLEN);
    return;
  case KBadVlan:
    L->Len = ETH_HLEN + rnd(Rng) % 4;
    return;
  case KBadIhl:
    Ip[0] = (unsigned char)(0x40 | rnd(Rng) % 5);
    break;
  case KBadTotalLong:
    set16(Ip + 2, L->Len - L->L3 + 1 + rnd(Rng) % 200);
    break;
  case KBadTotalShort:
    set16(Ip + 2, rnd(Rng) % 20);
    break;
  case KBadVersion:
    Ip[0] = 0x65;
    break;
  case KBadChecksum:
    Ip[10] ^= (unsigned char)(1 + rnd(Rng) % 255);
    return;
  case KBadTcpOffLow:
    L4[12] = (unsigned char)(rnd(Rng) % 5 << 4);
    return;
  case KBadTcpOffHigh: /* 60 bytes; the segment is shorter */
    L4[12] = 0xf0;
    return;
  case KBadUdpLen:
    set16(L4 + 4, rnd(Rng) % 8);
    return;
  case KBadV6Len:
    set16(Ip + 4, L->End - L->L3 - 40 + 1 + rnd(Rng) % 100);
    return;
  case KBadHbh:
    Ip[41] = (unsigned char)(8 + rnd(Rng) % 24);
    return;
  default:
    return;
  }
  /* A wrong IPv4 field, and a checksum that is right for it. */
  set16(Ip + 10, 0);
  set16(Ip + 10, ~fold16(sum16(Ip, 20, 0)) & 0xffff);
}

static void buildTraffic(void) {
  unsigned long long Rng = 0x9e3779b97f4a7c15ull; /* fixed: reproducible */
  unsigned Total = 0;
  for (unsigned K = 0; K < NKinds; ++K)
    Total += KindWeights[K];
  for (unsigned I = 0; I < NPACKETS; ++I) {
    unsigned Pick = rnd(&Rng) % Total, K = 0;
    while (Pick >= KindWeights[K])
      Pick -= KindWeights[K++];
    enum kind Kind = (enum kind)K;
    struct spec S;
    makeSpec(baseKind(Kind, &Rng), &S, &Rng);
    S.Vlan = vlanOf(Kind);
    if (Kind == KBadTcpOffHigh) /* shorter than the 60 bytes claimed */
      S.Data = 8;
    struct layout L = build(Frames[I], &S, &Rng);
    damage(Kind, Frames[I], &L, &Rng);
    PacketKinds[I] = (unsigned char)Kind;
    Packets[I].data = Frames[I];
    Packets[I].len = L.Len;
  }
}

/* Builds the frames on the first call; later calls (from any thread) wait
 * until they are built. Always succeeds. */
int dispatchgen_setup(void) {
  int Expected = 0;
  if (__atomic_compare_exchange_n(&SetupState, &Expected, 1, 0,
                                  __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
    buildTraffic();
    __atomic_store_n(&SetupState, 2, __ATOMIC_RELEASE);
  }
  while (__atomic_load_n(&SetupState, __ATOMIC_ACQUIRE) != 2)
    ;
  return 0;
}

/* The hot path: frame number iteration % NPACKETS through the dispatcher,
 * by a direct call. (Before dispatchgen_setup every frame is empty.) */
unsigned long dispatchgen_drive(unsigned long iteration, xdp_prog prog) {
  return xdp_dispatch(&Packets[iteration % NPACKETS], 0, prog);
}

/* The same frame through the plain indirect call, for comparison. */
unsigned long dispatchgen_expect(unsigned long iteration, xdp_prog prog) {
  return prog(&Packets[iteration % NPACKETS], 0);
}

/* The kind of frame number iteration % NPACKETS, e.g. "ipv4/udp dns query"
 * or "malformed: truncated". */
const char *dispatchgen_describe(unsigned long iteration) {
  if (__atomic_load_n(&SetupState, __ATOMIC_ACQUIRE) != 2)
    return "(not set up)";
  return KindNames[PacketKinds[iteration % NPACKETS]];
}
