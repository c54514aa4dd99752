// GRO in Wasm: the tests that decide whether received TCP segments may be merged into one
// super-packet for the TUN device, and the header fix-ups of the merged packet. The rules follow
// the kernel's TCP GRO, so that the pod's TCP sees what a kernel receive path would give it:
// same flow, IP header fields that must match (TOS, TTL, DF, no options, no fragments), TCP
// headers identical except the sequence number, checksum and PSH (ACK and window included,
// options byte for byte), the next segment's sequence number right after the last byte merged,
// all segments of the size of the first except a shorter last one, ACK with at most PSH set.
// Every merged segment's TCP checksum is verified first: the kernel trusts the merged packet
// (NEEDS_CSUM), so a damaged segment must never be laundered into it.
import { be16, be32, putBe16 } from "./bytes";
import { checksum, checksumPartial } from "./checksum";
import { IPV4_HEADER_MIN } from "./ipv4";
import { PROTO_TCP, TCP_HEADER_MIN, ipv4PseudoSum } from "./tcp-segment";

const TCP_ACK: u32 = 0x10;
export const TCP_PSH: u32 = 0x08;
/** Largest IPv4 packet, hence largest super-packet. */
export const IPV4_MAX_TOTAL: i32 = 65535;

@inline export function tcpFlags(p: usize): u32 {
  return <u32>load<u8>(p + <usize>IPV4_HEADER_MIN + 13);
}

@inline export function tcpHeaderLen(p: usize): i32 {
  return (<i32>load<u8>(p + <usize>IPV4_HEADER_MIN + 12) >> 4) << 2;
}

@inline export function tcpSeq(p: usize): u32 {
  return be32(p + <usize>IPV4_HEADER_MIN + 4);
}

/**
 * Payload bytes of the IPv4 packet at p (len = its total length, checked by decapsulation) when
 * it is a TCP segment that may start or join a super-packet; -1 when it must go alone.
 */
export function tcpMergeablePayload(p: usize, len: i32): i32 {
  if (load<u8>(p) != 0x45) return -1; // IPv4 without options
  if ((be16(p + 6) & 0xbfff) != 0) return -1; // fragment (DF alone is fine)
  if (<u32>load<u8>(p + 9) != PROTO_TCP || len < IPV4_HEADER_MIN + TCP_HEADER_MIN) return -1;
  const thl = tcpHeaderLen(p);
  if (thl < TCP_HEADER_MIN || IPV4_HEADER_MIN + thl >= len) return -1; // no payload: pure ACKs go alone
  if ((tcpFlags(p) & ~TCP_PSH) != TCP_ACK) return -1; // SYN, FIN, RST, URG, ECE, CWR go alone
  return len - IPV4_HEADER_MIN - thl;
}

/**
 * Whether segment q may follow the super-packet whose first segment is `head` (both accepted by
 * tcpMergeablePayload): same flow and headers, sequence number `nextSeq`.
 */
export function tcpFollows(head: usize, q: usize, nextSeq: u32): bool {
  // IP: TOS, flags/fragment word, TTL, protocol, addresses (ID and lengths may differ)
  if (load<u8>(head + 1) != load<u8>(q + 1)) return false;
  if (load<u16>(head + 6) != load<u16>(q + 6) || load<u16>(head + 8) != load<u16>(q + 8)) return false;
  if (load<u64>(head + 12) != load<u64>(q + 12)) return false;
  const th = head + <usize>IPV4_HEADER_MIN;
  const tq = q + <usize>IPV4_HEADER_MIN;
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

/** Whether the TCP checksum of the IPv4 packet at p (no options, len bytes) is right. */
export function tcp4ChecksumValid(p: usize, len: i32): bool {
  const l4len = len - IPV4_HEADER_MIN;
  return checksumPartial(p + <usize>IPV4_HEADER_MIN, l4len, ipv4PseudoSum(p, PROTO_TCP, l4len)) == 0xffff;
}

/**
 * Makes the merged packet at p (len bytes) consistent: IP total length and header checksum, and
 * the TCP checksum field set to the pseudo-header sum, as NEEDS_CSUM asks (the kernel finishes it
 * if the packet ever leaves the host; locally it is trusted).
 */
export function tcp4FinishMerged(p: usize, len: i32): void {
  putBe16(p + 2, len);
  store<u16>(p + 10, 0);
  putBe16(p + 10, checksum(p, IPV4_HEADER_MIN));
  putBe16(p + <usize>IPV4_HEADER_MIN + 16, ipv4PseudoSum(p, PROTO_TCP, len - IPV4_HEADER_MIN));
}
