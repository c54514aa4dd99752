// IPv4: header checks shared by every receive path,
// the TTL decrement flannel's udp proxy does, and the ICMP error it sends when a route is missing.
import { be16, be32, putBe16 } from "./bytes";
import { checksum, checksumUpdate16, ipv4HeaderSumsToZero } from "./checksum";
import {
  DROP_TOO_SHORT,
  DROP_IP_VERSION,
  DROP_IPV4_IHL,
  DROP_IP_LENGTH,
  DROP_IPV4_CHECKSUM,
  DROP_TTL_EXHAUSTED,
  VERDICT_FORWARD,
} from "../verdict";

export const IPV4_HEADER_MIN: i32 = 20;
export const PROTO_ICMP: u32 = 1;
/** 224.0.0.0: this and every address above it is multicast, class E or the broadcast address. */
const IPV4_MULTICAST: u32 = 0xe0000000;

/** ICMP header plus IPv4 header of the error packet written in front of the offending packet. */
export const ICMP_ERROR_OVERHEAD: i32 = IPV4_HEADER_MIN + 8;

@inline export function ipVersion(p: usize): u32 {
  return <u32>load<u8>(p) >> 4;
}

@inline export function ipv4HeaderLen(p: usize): i32 {
  return (<i32>load<u8>(p) & 0x0f) << 2;
}

@inline export function ipv4TotalLen(p: usize): i32 {
  return <i32>be16(p + 2);
}

@inline export function ipv4Ttl(p: usize): u32 {
  return <u32>load<u8>(p + 8);
}

@inline export function ipv4Dst(p: usize): u32 {
  return bswap<u32>(load<u32>(p + 16));
}

/**
 * Structure of an IPv4 header with `avail` bytes behind p: version, IHL, total length within
 * the bytes at hand, and (when `verifyChecksum`) the header checksum. Returns a verdict.
 */
export function ipv4Check(p: usize, avail: i32, verifyChecksum: bool): i32 {
  if (avail < IPV4_HEADER_MIN) return DROP_TOO_SHORT;
  if (ipVersion(p) != 4) return DROP_IP_VERSION;
  const ihl = ipv4HeaderLen(p);
  if (ihl < IPV4_HEADER_MIN) return DROP_IPV4_IHL;
  const total = ipv4TotalLen(p);
  if (ihl > avail || total < ihl || total > avail) return DROP_IP_LENGTH;
  if (verifyChecksum && !ipv4HeaderSumsToZero(p, ihl)) return DROP_IPV4_CHECKSUM;
  return VERDICT_FORWARD;
}

/**
 * Decrements the TTL as flannel's udp proxy does on both of its paths, patching the header
 * checksum incrementally (RFC 1624). A TTL that would reach zero drops the packet instead.
 */
export function ipv4DecrementTtl(p: usize): i32 {
  const ttl = ipv4Ttl(p);
  if (ttl <= 1) return DROP_TTL_EXHAUSTED;
  const word = be16(p + 8); // TTL and protocol share one 16-bit word
  const next = word - 0x100;
  store<u8>(p + 8, <u8>(ttl - 1));
  putBe16(p + 10, checksumUpdate16(be16(p + 10), word, next));
  return VERDICT_FORWARD;
}

/**
 * Whether an ICMP error may be sent about this packet: never about an ICMP error (RFC 1122
 * 3.2.2, avoids loops), a fragment other than the first, a multicast or broadcast destination, or
 * a source that names no single host (RFC 1122 3.2.2, RFC 1812 4.3.2.7: here 0.0.0.0, multicast,
 * class E and broadcast). The caller has checked the header (ihl bytes are present).
 */
export function ipv4MayTriggerIcmpError(p: usize, avail: i32): bool {
  if ((be16(p + 6) & 0x1fff) != 0) return false;
  const src = be32(p + 12);
  if (be32(p + 16) >= IPV4_MULTICAST || src >= IPV4_MULTICAST || src == 0) return false;
  if (<u32>load<u8>(p + 9) == PROTO_ICMP) {
    const ihl = ipv4HeaderLen(p);
    if (avail <= ihl) return false; // no ICMP type to tell: treat it as an error message
    const type = <u32>load<u8>(p + <usize>ihl);
    // 0 echo reply, 8 echo request, 13/14 timestamp, 17/18 mask: queries and replies, not errors
    return type == 0 || type == 8 || type == 13 || type == 14 || type == 17 || type == 18;
  }
  return true;
}

/**
 * Writes an ICMP destination-unreachable (code 0: net unreachable) in front of the offending
 * IPv4 packet at p, quoting its header and first 8 payload bytes, back to the offender's source.
 * It comes from the offender's destination: the kernel drops a packet that arrives on the TUN
 * device from one of the host's own addresses as a martian source (unless the device has
 * accept_local, which a container without a writable /proc/sys cannot set), so the error cannot
 * come from the TUN device's address as the ICMPv6 one does. Uses ICMP_ERROR_OVERHEAD bytes of
 * headroom; returns the new packet length (the packet now starts at p - ICMP_ERROR_OVERHEAD).
 */
export function ipv4WriteNetUnreachable(p: usize, avail: i32): i32 {
  const ihl = ipv4HeaderLen(p);
  let quoted = ihl + 8;
  if (quoted > avail) quoted = avail;
  const offenderSrc = load<u32>(p + 12); // wire order, copied as is
  const offenderDst = load<u32>(p + 16);
  const q = p - <usize>ICMP_ERROR_OVERHEAD;
  const total = ICMP_ERROR_OVERHEAD + quoted;
  // IPv4 header: version 4, IHL 5, TOS 0, no fragmentation, TTL 64, protocol ICMP
  store<u32>(q, bswap<u32>(0x45000000 | <u32>total));
  store<u32>(q + 4, 0);
  store<u32>(q + 8, bswap<u32>(0x40010000));
  store<u32>(q + 12, offenderDst);
  store<u32>(q + 16, offenderSrc);
  putBe16(q + 10, checksum(q, IPV4_HEADER_MIN));
  // ICMP: type 3, code 0, checksum, 4 unused bytes
  const icmp = q + <usize>IPV4_HEADER_MIN;
  store<u32>(icmp, bswap<u32>(0x03000000));
  store<u32>(icmp + 4, 0);
  putBe16(icmp + 2, checksum(icmp, 8 + quoted));
  return total;
}
