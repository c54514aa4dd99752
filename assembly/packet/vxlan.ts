// VXLAN (RFC 7348) as the Linux vxlan device speaks it when flannel sets it up: UDP payload =
// 8-byte VXLAN header (flags 0x08, 24-bit VNI, reserved bytes zero) + inner Ethernet header
// (peer VTEP MAC, our VTEP MAC, ethertype) + the IP packet. The outer IP/UDP headers are the
// socket's business. Encapsulation (resolve.ts, offload-send.ts) writes the 22 header bytes into
// the slot's headroom.
import { be16, putBe16 } from "./bytes";
import { ipv4Check, ipv6Check, ipv4TotalLen, IPV6_HEADER } from "./ipv4";
import { DESC_OFF, DESC_LEN, DESC_VERDICT, descPtr } from "../descriptor";
import { batchSize, descInBounds, finishRx, memoryTop } from "../batch";
import { CTX_VNI, CTX_MAC } from "../context";
import { sourceCheckBatch } from "./source-check";
import {
  VERDICT_FORWARD, DROP_TOO_SHORT, DROP_VXLAN_FLAGS, DROP_VXLAN_VNI, DROP_NOT_OUR_MAC,
  DROP_ARP_BROADCAST, DROP_ETHERTYPE, DROP_TTL_EXHAUSTED, DROP_BAD_DESCRIPTOR,
} from "../verdict";

export const VXLAN_HEADER: i32 = 8;
export const ETHERNET_HEADER: i32 = 14;
export const VXLAN_OVERHEAD: i32 = VXLAN_HEADER + ETHERNET_HEADER;
export const ETHERTYPE_IPV4: u32 = 0x0800;
export const ETHERTYPE_IPV6: u32 = 0x86dd;
export const ETHERTYPE_ARP: u32 = 0x0806;
const VXLAN_FLAG_I: u32 = 0x08;

/** Writes the VXLAN and inner Ethernet headers in the 22 bytes in front of the IP packet at p. */
@inline export function vxlanWriteHeader(p: usize, vni: u32, dstMac: usize, srcMac: usize, ethertype: u32): void {
  const h = p - <usize>VXLAN_OVERHEAD;
  store<u32>(h, VXLAN_FLAG_I);
  store<u32>(h + 4, bswap<u32>(vni << 8));
  store<u32>(h + 8, load<u32>(dstMac));
  store<u16>(h + 12, load<u16>(dstMac, 4));
  store<u16>(h + 14, load<u16>(srcMac));
  store<u32>(h + 16, load<u32>(srcMac, 2));
  putBe16(h + 20, ethertype);
}

/** Validates one received VXLAN payload; on success moves OFF/LEN to the inner IP packet. */
@inline function decapOne(ctx: usize, d: usize, top: i64): i32 {
  if (!descInBounds(d, top)) return DROP_BAD_DESCRIPTOR;
  const p = <usize>load<i32>(d + DESC_OFF);
  const len = load<i32>(d + DESC_LEN);
  if (len < VXLAN_OVERHEAD) return DROP_TOO_SHORT;
  if ((<u32>load<u8>(p) & VXLAN_FLAG_I) == 0) return DROP_VXLAN_FLAGS;
  if ((bswap<u32>(load<u32>(p + 4)) >> 8) != load<u32>(ctx + CTX_VNI)) return DROP_VXLAN_VNI;
  const eth = p + <usize>VXLAN_HEADER;
  const ethertype = be16(eth + 12);
  const mac = ctx + <usize>CTX_MAC;
  if (load<u32>(eth) != load<u32>(mac) || load<u16>(eth + 4) != load<u16>(mac, 4)) {
    const broadcast = load<u32>(eth) == 0xffffffff && load<u16>(eth + 4) == 0xffff;
    return broadcast && ethertype == ETHERTYPE_ARP ? DROP_ARP_BROADCAST : DROP_NOT_OUR_MAC;
  }
  const ip = p + <usize>VXLAN_OVERHEAD;
  const avail = len - VXLAN_OVERHEAD;
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
