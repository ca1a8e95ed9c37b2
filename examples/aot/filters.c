/*===- filters.c - XDP-style packet filters, the dispatcher's targets ------===*
 * SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
 *
 * Each program looks at one Ethernet frame and returns a verdict, in the
 * shape of an XDP program: unsigned int prog(const void *ctx, const void
 **insn).
 *
 *===----------------------------------------------------------------------===*/
#include "filters.h"

static unsigned short be16(const unsigned char *P) {
  return (unsigned short)(P[0] << 8 | P[1]);
}

/* Offset of the L4 header and the IP protocol, or 0 for non-IP frames. */
static unsigned l4(const struct pkt *Pkt, unsigned char *Proto) {
  if (Pkt->len < 14)
    return 0;
  unsigned short EtherType = be16(Pkt->data + 12);
  if (EtherType == 0x0800 && Pkt->len >= 34) {
    *Proto = Pkt->data[23];
    return 14 + (Pkt->data[14] & 0xf) * 4;
  }
  if (EtherType == 0x86dd && Pkt->len >= 54) {
    *Proto = Pkt->data[20];
    return 54;
  }
  return 0;
}

unsigned int pass_all(const void *Ctx, const void *Insn) {
  (void)Ctx;
  (void)Insn;
  return XDP_PASS;
}

unsigned int drop_tcp(const void *Ctx, const void *Insn) {
  (void)Insn;
  unsigned char Proto = 0;
  return l4(Ctx, &Proto) && Proto == 6 ? XDP_DROP : XDP_PASS;
}

unsigned int drop_dns(const void *Ctx, const void *Insn) {
  (void)Insn;
  const struct pkt *Pkt = Ctx;
  unsigned char Proto = 0;
  unsigned Off = l4(Pkt, &Proto);
  if (!Off || Proto != 17 || Pkt->len < Off + 4)
    return XDP_PASS;
  return be16(Pkt->data + Off + 2) == 53 ? XDP_DROP : XDP_PASS;
}

unsigned int ipv6_only(const void *Ctx, const void *Insn) {
  (void)Insn;
  const struct pkt *Pkt = Ctx;
  return Pkt->len >= 14 && be16(Pkt->data + 12) == 0x86dd ? XDP_PASS
                                                          : XDP_DROP;
}

/* Not registered with the dispatcher: calls to it take the fallback. */
unsigned int drop_all(const void *Ctx, const void *Insn) {
  (void)Ctx;
  (void)Insn;
  return XDP_DROP;
}
