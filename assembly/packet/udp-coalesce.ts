// GRO for UDP in Wasm: the tests that decide whether received UDP datagrams (over IPv4 or IPv6)
// may be merged into one USO super-packet for the TUN device, and the header fix-ups of the merged
// packet. The kernel cuts it again (__udp_gso_segment) where the pod's socket takes it, so the
// pod receives the same datagrams; the forwarding, bridge and veth hops between the TUN device and
// the pod run once per super-packet instead of once per datagram. The rules follow the kernel's
// UDP GRO (udp_gro_receive_segment): same flow and IP header fields (tcp-coalesce.ts's
// ipHeadersMatch), a non-zero UDP checksum (segmentation writes one into every datagram, so a
// datagram sent without one would change), all datagrams of the first one's size except a
// shorter last one, at most GRO_MAX_SEGMENTS. IPv4 IDs must count up by one per datagram, as
// segmentation will write them, unless DF is set: an atomic datagram's ID means nothing (RFC 6864),
// as the kernel's GRO also treats it. Checksums are checked by the caller, as for TCP.
import { be16, putBe16 } from "./bytes";
import { PROTO_UDP } from "./tcp-segment";
import { ipFinishMerged, ipHeaderLen, ipHeadersMatch, ipIdFollows, l4PseudoSum, mergeableProto } from "./tcp-coalesce";

export const UDP_HEADER_BYTES: i32 = 8;

/**
 * Payload bytes of the IP packet at p (len = its length, checked by decapsulation) when it is a
 * UDP datagram that may start or join a super-packet; -1 when it must go alone.
 */
export function udpMergeablePayload(p: usize, len: i32): i32 {
  if (mergeableProto(p) != PROTO_UDP) return -1;
  const l3 = ipHeaderLen(p);
  const l4 = p + <usize>l3;
  if (len <= l3 + UDP_HEADER_BYTES || be16(l4 + 4) != <u32>(len - l3)) return -1; // no payload, or trailing bytes
  if (be16(l4 + 6) == 0) return -1; // no checksum
  return len - l3 - UDP_HEADER_BYTES;
}

/**
 * Whether datagram q may follow the super-packet whose first datagram is `head` and that holds
 * `count` datagrams (both accepted by udpMergeablePayload): same flow and headers, and IPv4's ID
 * `count` past head's unless DF is set.
 */
export function udpFollows(head: usize, q: usize, count: i32): bool {
  if (!ipHeadersMatch(head, q) || !ipIdFollows(head, q, count)) return false;
  const l3 = ipHeaderLen(head);
  return load<u32>(head + <usize>l3) == load<u32>(q + <usize>l3); // ports
}

/**
 * Makes the merged packet at p (len bytes) consistent: the IP length (and IPv4's header checksum),
 * the UDP length, and the UDP checksum field set to the pseudo-header sum, as NEEDS_CSUM asks
 * (segmentation finishes it per datagram; locally it is trusted).
 */
export function udpFinishMerged(p: usize, len: i32): void {
  const l3 = ipFinishMerged(p, len);
  putBe16(p + <usize>l3 + 4, len - l3);
  putBe16(p + <usize>l3 + 6, l4PseudoSum(p, l3, PROTO_UDP, len - l3));
}
