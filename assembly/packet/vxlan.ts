// VXLAN (RFC 7348) as the Linux vxlan device speaks it when flannel sets it up: UDP payload =
// 8-byte VXLAN header + inner Ethernet header + the IP packet (vxlan-header.ts), IPv4 as flannel.1
// carries it and IPv6 as flannel-v6.1 does. The outer IP/UDP headers are the socket's business
// (over IPv6 the kernel fills in the UDP checksum, which VXLAN over IPv6 must carry).
// Encapsulation (resolve.ts, offload-send.ts) writes the 22 header bytes into the slot's headroom.
import { be16 } from "./bytes";
import { ipv4Check, ipv4TotalLen } from "./ipv4";
import { ipv6Check, IPV6_HEADER } from "./ipv6";
import {
  VXLAN_HEADER,
  VXLAN_ENCAP_HEADER_BYTES,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_ARP,
  VXLAN_FLAG_I,
} from "./vxlan-header";
import { DESC_OFF, DESC_LEN, DESC_VERDICT, descPtr } from "../descriptor";
import { batchSize, descInBounds, finishRx, memoryTop } from "../batch";
import { CTX_VNI, CTX_MAC } from "../context";
import { sourceCheckBatch } from "./source-check";
import {
  VERDICT_FORWARD,
  DROP_TOO_SHORT,
  DROP_VXLAN_FLAGS,
  DROP_VXLAN_VNI,
  DROP_NOT_OUR_MAC,
  DROP_ARP_BROADCAST,
  DROP_ETHERTYPE,
  DROP_TTL_EXHAUSTED,
  DROP_BAD_DESCRIPTOR,
} from "../verdict";

/** Validates one received VXLAN payload; on success moves OFF/LEN to the inner IP packet. */
@inline function decapOne(ctx: usize, d: usize, top: i64): i32 {
  if (!descInBounds(d, top)) return DROP_BAD_DESCRIPTOR;
  const p = <usize>load<i32>(d + DESC_OFF);
  const len = load<i32>(d + DESC_LEN);
  if (len < VXLAN_ENCAP_HEADER_BYTES) return DROP_TOO_SHORT;
  if ((<u32>load<u8>(p) & VXLAN_FLAG_I) == 0) return DROP_VXLAN_FLAGS;
  if (bswap<u32>(load<u32>(p + 4)) >> 8 != load<u32>(ctx + CTX_VNI)) return DROP_VXLAN_VNI;
  const eth = p + <usize>VXLAN_HEADER;
  const ethertype = be16(eth + 12);
  const mac = ctx + <usize>CTX_MAC;
  if (load<u32>(eth) != load<u32>(mac) || load<u16>(eth + 4) != load<u16>(mac, 4)) {
    const broadcast = load<u32>(eth) == 0xffffffff && load<u16>(eth + 4) == 0xffff;
    return broadcast && ethertype == ETHERTYPE_ARP ? DROP_ARP_BROADCAST : DROP_NOT_OUR_MAC;
  }
  const ip = p + <usize>VXLAN_ENCAP_HEADER_BYTES;
  const avail = len - VXLAN_ENCAP_HEADER_BYTES;
  let ipLen: i32;
  if (ethertype == ETHERTYPE_IPV4) {
    const v = ipv4Check(ip, avail, true);
    if (v != VERDICT_FORWARD) return v;
    // TTL 0 can't be forwarded by anyone; TTL 1 is left to the kernel, which answers with
    // ICMP time-exceeded (so traceroute keeps working across the overlay).
    if (load<u8>(ip + 8) == 0) return DROP_TTL_EXHAUSTED;
    ipLen = ipv4TotalLen(ip);
  } else if (ethertype == ETHERTYPE_IPV6) {
    const v = ipv6Check(ip, avail);
    if (v != VERDICT_FORWARD) return v;
    ipLen = IPV6_HEADER + <i32>be16(ip + 4);
  } else {
    return DROP_ETHERTYPE;
  }
  store<i32>(d + DESC_OFF, <i32>ip);
  store<i32>(d + DESC_LEN, ipLen);
  return VERDICT_FORWARD;
}

/**
 * Decapsulates a batch received on the VXLAN socket. Each packet is validated in full (and its
 * source checked, source-check.ts); the ones to forward end up first with OFF/LEN on the inner
 * IP packet (padding trimmed), ready for the TUN write. Returns the number to forward.
 */
export function vxlanDecapBatch(ctx: usize, descs: usize, n: i32): i32 {
  n = batchSize(n);
  const top = memoryTop();
  for (let i = 0; i < n; i++) {
    const d = descPtr(descs, i);
    store<i32>(d + DESC_VERDICT, decapOne(ctx, d, top));
  }
  sourceCheckBatch(ctx, descs, n);
  return finishRx(ctx, descs, n);
}
