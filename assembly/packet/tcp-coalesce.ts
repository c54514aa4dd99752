// GRO in Wasm: the tests that decide whether received TCP segments (over IPv4 or IPv6) may be
// merged into one super-packet for the TUN device, and the header fix-ups of the merged packet.
// The rules follow the kernel's TCP GRO, so that the pod's TCP sees what a kernel receive path
// would give it: same flow, IP header fields that must match (IPv4: TOS, TTL, DF, no options, no
// fragments, IDs counting up by one per segment unless DF is set; IPv6: the whole first word —
// traffic class, flow label — and the hop limit, TCP right after the fixed header), TCP headers
// identical except the sequence number, checksum and PSH (ACK and window included, options byte
// for byte), the next segment's sequence number right after the last byte merged, all segments of
// the size of the first except a shorter last one, ACK with at most PSH set. One difference: with
// DF set weft merges segments of any IDs, where the kernel wants them counting up or all the same;
// harmless, as such an atomic datagram's ID means nothing (RFC 6864). Every merged segment's TCP
// checksum is verified first unless the kernel verified its outer UDP checksum
// (offload-receive.ts): the kernel trusts the merged packet (NEEDS_CSUM), so a damaged segment
// must never be laundered into it.
import { be16, be32, putBe16 } from "./bytes";
import { checksum, checksumPartial } from "./checksum";
import { IPV4_HEADER_MIN } from "./ipv4";
import { IPV6_HEADER } from "./ipv6";
import { PROTO_TCP, TCP_HEADER_MIN, ipv4PseudoSum } from "./tcp-segment";

const TCP_ACK: u32 = 0x10;
export const TCP_PSH: u32 = 0x08;
/** Largest super-packet: an IPv4 packet's limit, kept for IPv6 too (one output slot size). */
export const IPV4_MAX_TOTAL: i32 = 65535;

/** Bytes of the IP header in front of a mergeable packet's transport header: 20 (IPv4 without options) or 40 (IPv6). */
@inline export function ipHeaderLen(p: usize): i32 {
  return load<u8>(p) >> 4 == 6 ? IPV6_HEADER : IPV4_HEADER_MIN;
}

@inline export function tcpFlags(p: usize): u32 {
  return <u32>load<u8>(p + <usize>ipHeaderLen(p) + 13);
}

@inline export function tcpHeaderLen(p: usize): i32 {
  return (<i32>load<u8>(p + <usize>ipHeaderLen(p) + 12) >> 4) << 2;
}

@inline export function tcpSeq(p: usize): u32 {
  return be32(p + <usize>ipHeaderLen(p) + 4);
}

/**
 * The transport protocol of the IP packet at p when its IP header allows a merge: IPv4 without
 * options and not a fragment (DF alone is fine), or IPv6 with the transport header right after the
 * fixed one (extension headers go alone); 0 otherwise.
 */
export function mergeableProto(p: usize): u32 {
  const v = load<u8>(p);
  if (v >> 4 == 6) return <u32>load<u8>(p + 6);
  if (v != 0x45 || (be16(p + 6) & 0xbfff) != 0) return 0;
  return <u32>load<u8>(p + 9);
}

/**
 * Payload bytes of the IP packet at p (len = its length, checked by decapsulation) when it is a
 * TCP segment that may start or join a super-packet; -1 when it must go alone.
 */
export function tcpMergeablePayload(p: usize, len: i32): i32 {
  if (mergeableProto(p) != PROTO_TCP) return -1;
  const l3 = ipHeaderLen(p);
  if (len < l3 + TCP_HEADER_MIN) return -1;
  const thl = tcpHeaderLen(p);
  if (thl < TCP_HEADER_MIN || l3 + thl >= len) return -1; // no payload: pure ACKs go alone
  if ((tcpFlags(p) & ~TCP_PSH) != TCP_ACK) return -1; // SYN, FIN, RST, URG, ECE, CWR go alone
  return len - l3 - thl;
}

/**
 * Whether the IP headers of packets head and q (IPv4 without options, or IPv6 with the transport
 * header right after it, as the mergeable-payload tests accept) are those of one flow that GRO may
 * merge: only the lengths (and IPv4's ID and header checksum) may differ.
 */
export function ipHeadersMatch(head: usize, q: usize): bool {
  if (load<u8>(head) >> 4 == 6) {
    // IPv6: version, traffic class, flow label; next header and hop limit; addresses (the payload length may differ)
    if (load<u32>(head) != load<u32>(q) || load<u16>(head + 6) != load<u16>(q + 6)) return false;
    if (load<u64>(head + 8) != load<u64>(q + 8) || load<u64>(head + 16) != load<u64>(q + 16)) return false;
    return load<u64>(head + 24) == load<u64>(q + 24) && load<u64>(head + 32) == load<u64>(q + 32);
  }
  // IPv4: TOS, flags/fragment word, TTL, protocol, addresses (ID and lengths may differ)
  if (load<u8>(q) != 0x45 || load<u8>(head + 1) != load<u8>(q + 1)) return false;
  if (load<u16>(head + 6) != load<u16>(q + 6) || load<u16>(head + 8) != load<u16>(q + 8)) return false;
  return load<u64>(head + 12) == load<u64>(q + 12);
}

const IPV4_DF: u32 = 0x4000;

/**
 * Whether packet q's IPv4 ID is `count` past that of `head` (the first of the `count` packets
 * merged so far), as segmentation will write them again: the kernel's GRO asks it where DF is
 * clear (the ID may yet serve fragmentation). With DF set (RFC 6864) or over IPv6 any ID goes.
 */
export function ipIdFollows(head: usize, q: usize, count: i32): bool {
  if (ipHeaderLen(head) == IPV6_HEADER || (be16(head + 6) & IPV4_DF) != 0) return true;
  return ((be16(head + 4) + <u32>count) & 0xffff) == be16(q + 4);
}

/**
 * Whether segment q may follow the super-packet whose first segment is `head` and that holds
 * `count` segments (both accepted by tcpMergeablePayload): same flow and headers, IPv4 IDs
 * counting up where DF is clear, sequence number `nextSeq`.
 */
export function tcpFollows(head: usize, q: usize, nextSeq: u32, count: i32): bool {
  if (!ipHeadersMatch(head, q) || !ipIdFollows(head, q, count)) return false;
  const l3 = ipHeaderLen(head);
  const th = head + <usize>l3;
  const tq = q + <usize>l3;
  if (load<u32>(th) != load<u32>(tq) || load<u32>(th + 8) != load<u32>(tq + 8)) return false; // ports, ACK
  if (be32(tq + 4) != nextSeq) return false;
  // data offset, flags but PSH, window
  if (((load<u32>(th + 12) ^ load<u32>(tq + 12)) & ~((<u32>TCP_PSH) << 8)) != 0) return false;
  const thl = tcpHeaderLen(head);
  for (let i = TCP_HEADER_MIN; i < thl; i += 4) {
    if (load<u32>(th + <usize>i) != load<u32>(tq + <usize>i)) return false;
  }
  return true;
}

/** Sum of the pseudo-header of the `proto` segment of the packet at p, l4len bytes (not inverted). */
@inline export function l4PseudoSum(p: usize, l3: i32, proto: u32, l4len: i32): u32 {
  return l3 == IPV6_HEADER ? checksumPartial(p + 8, 32, proto + <u32>l4len) : ipv4PseudoSum(p, proto, l4len);
}

/**
 * Whether the `proto` (TCP or UDP) checksum of the packet at p (IPv4 without options or IPv6, the
 * transport header right after it, len bytes) is right.
 */
export function l4ChecksumValid(p: usize, len: i32, proto: u32): bool {
  const l3 = ipHeaderLen(p);
  const l4len = len - l3;
  return checksumPartial(p + <usize>l3, l4len, l4PseudoSum(p, l3, proto, l4len)) == 0xffff;
}

/**
 * Gives the merged packet at p its length (len bytes) in the IP header, and IPv4 its header
 * checksum again; returns the IP header's length.
 */
export function ipFinishMerged(p: usize, len: i32): i32 {
  const l3 = ipHeaderLen(p);
  if (l3 == IPV6_HEADER) {
    putBe16(p + 4, len - IPV6_HEADER);
  } else {
    putBe16(p + 2, len);
    store<u16>(p + 10, 0);
    putBe16(p + 10, checksum(p, IPV4_HEADER_MIN));
  }
  return l3;
}

/**
 * Makes the merged packet at p (len bytes) consistent: the IP length (and IPv4's header checksum),
 * and the TCP checksum field set to the pseudo-header sum, as NEEDS_CSUM asks (the kernel finishes
 * it if the packet ever leaves the host; locally it is trusted).
 */
export function tcpFinishMerged(p: usize, len: i32): void {
  const l3 = ipFinishMerged(p, len);
  putBe16(p + <usize>l3 + 16, l4PseudoSum(p, l3, PROTO_TCP, len - l3));
}
