/*===- pkt.h - The frame XDP-style programs look at -----------------------===*
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
 *
 * The programs' ctx: one received Ethernet frame, like the kernel's
 * struct xdp_md reduced to its data and length. A program must not read
 * data[len] or beyond.
 *
 *===----------------------------------------------------------------------===*/
#ifndef DISPATCH_GEN_EXAMPLES_XDP_PKT_H
#define DISPATCH_GEN_EXAMPLES_XDP_PKT_H

struct pkt {
  const unsigned char *data;
  unsigned len;
};

/* Verdicts, as the kernel's enum xdp_action. */
enum xdp_action { XDP_ABORTED = 0, XDP_DROP = 1, XDP_PASS = 2, XDP_TX = 3 };

/* What count_per_protocol counts, in proto_counts. */
enum proto_class {
  PROTO_NON_IP,    /* ARP and other EtherTypes */
  PROTO_MALFORMED, /* a frame whose headers do not parse */
  PROTO_TCP,
  PROTO_UDP,
  PROTO_ICMP,     /* ICMP and ICMPv6 */
  PROTO_FRAGMENT, /* IPv4 fragments after the first */
  PROTO_OTHER_IP,
  PROTO_NCLASSES
};

/* Defined in filters.c; updated with relaxed atomic adds. */
extern unsigned long proto_counts[PROTO_NCLASSES];

#endif
