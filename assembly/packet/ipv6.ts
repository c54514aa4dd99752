// IPv6: the fixed header's checks shared by the receive paths, and the ICMPv6 destination
// unreachable (RFC 4443) the send path writes where IPv4 gets ICMP net-unreachable.
import { be16, putBe16 } from "./bytes";
import { checksumPartial } from "./checksum";
import { DROP_TOO_SHORT, DROP_IP_VERSION, DROP_IP_LENGTH, DROP_TTL_EXHAUSTED, VERDICT_FORWARD } from "../verdict";

export const IPV6_HEADER: i32 = 40;
export const PROTO_ICMPV6: u32 = 58;
/** IPv6 header plus ICMPv6 header of the error packet written in front of the offending packet. */
export const ICMPV6_ERROR_OVERHEAD: i32 = IPV6_HEADER + 8;
/** An ICMPv6 error must fit the IPv6 minimum MTU (RFC 4443 2.4 c): quote at most this much. */
const ICMPV6_ERROR_MAX: i32 = 1280;

@inline export function ipv6PayloadLen(p: usize): i32 {
  return <i32>be16(p + 4);
}

/** IPv6 fixed header with `avail` bytes behind p: version, payload length, hop limit. */
export function ipv6Check(p: usize, avail: i32): i32 {
  if (avail < IPV6_HEADER) return DROP_TOO_SHORT;
  if (<u32>load<u8>(p) >> 4 != 6) return DROP_IP_VERSION;
  if (IPV6_HEADER + ipv6PayloadLen(p) > avail) return DROP_IP_LENGTH;
  if (load<u8>(p + 7) == 0) return DROP_TTL_EXHAUSTED;
  return VERDICT_FORWARD;
}

// The extension headers (RFC 8200 4) the error check walks past to find the upper layer.
const EXT_HOP_BY_HOP: u32 = 0;
const EXT_ROUTING: u32 = 43;
const EXT_FRAGMENT: u32 = 44;
const EXT_AUTH: u32 = 51;
const EXT_DEST_OPTIONS: u32 = 60;
/** Extension headers walked at most; a longer chain gets no error, as one that runs past the end. */
const EXT_HEADERS_MAX: i32 = 8;
const ICMPV6_REDIRECT: u32 = 137;

@inline function isExtensionHeader(next: u32): bool {
  return (
    next == EXT_HOP_BY_HOP ||
    next == EXT_ROUTING ||
    next == EXT_FRAGMENT ||
    next == EXT_AUTH ||
    next == EXT_DEST_OPTIONS
  );
}

/**
 * Whether an ICMPv6 error may be sent about this packet (RFC 4443 2.4 e, f): not about an ICMPv6
 * error message or redirect, not to a multicast destination, not from an unspecified or multicast
 * source. The upper layer is found behind the extension headers, as the kernel's icmp6_send does
 * (is_ineligible); a chain that runs past the payload or is longer than EXT_HEADERS_MAX gets no
 * error (the kernel sends one then: we cannot tell that it quotes no ICMPv6 error). A non-first
 * fragment holds no upper-layer header and may get one (RFC 4443 has no rule against it, unlike
 * IPv4's; the kernel sends one too). The caller has checked the fixed header.
 */
export function ipv6MayTriggerIcmpError(p: usize): bool {
  if (load<u8>(p + 24) == 0xff) return false; // multicast destination (router solicitations, ...)
  if (load<u8>(p + 8) == 0xff) return false; // multicast source
  if ((load<u64>(p + 8) | load<u64>(p + 16)) == 0) return false; // unspecified source
  const end = IPV6_HEADER + ipv6PayloadLen(p);
  let next = <u32>load<u8>(p + 6);
  let at = IPV6_HEADER;
  let walked = 0;
  while (isExtensionHeader(next)) {
    // Every extension header is a multiple of 8 bytes, at least 8.
    if (walked++ == EXT_HEADERS_MAX || at + 8 > end) return false;
    const h = p + <usize>at;
    if (next == EXT_FRAGMENT) {
      if ((be16(h + 2) & 0xfff8) != 0) return true; // not the first fragment
      at += 8;
    } else {
      at += next == EXT_AUTH ? (<i32>load<u8>(h + 1) + 2) << 2 : (<i32>load<u8>(h + 1) + 1) << 3;
    }
    if (at > end) return false;
    next = <u32>load<u8>(h);
  }
  if (next != PROTO_ICMPV6) return true;
  if (at >= end) return false;
  const type = <u32>load<u8>(p + <usize>at);
  return type >= 128 && type != ICMPV6_REDIRECT; // informational (echo...), not an error
}

/**
 * Where `proto` starts in the IPv6 packet at p (len bytes) behind nothing but extension headers
 * a segmented super-packet may carry a copy of in every segment: hop-by-hop (first only) and
 * destination options, at most EXT_HEADERS_MAX. -1 for any other chain: a routing header too, as
 * the transport checksum would then cover its final destination, not the fixed header's.
 */
export function ipv6SegmentableOffset(p: usize, len: i32, proto: u32): i32 {
  let next = <u32>load<u8>(p + 6);
  let at = IPV6_HEADER;
  for (let walked = 0; next != proto; walked++) {
    if (next != EXT_DEST_OPTIONS && (next != EXT_HOP_BY_HOP || at != IPV6_HEADER)) return -1;
    if (walked == EXT_HEADERS_MAX || at + 8 > len) return -1;
    const h = p + <usize>at;
    next = <u32>load<u8>(h);
    at += (<i32>load<u8>(h + 1) + 1) << 3;
  }
  return at;
}

/**
 * Writes an ICMPv6 destination unreachable (code 0: no route) in front of the offending packet at
 * p, quoting as much of it as fits 1280 bytes, from the 16-byte address at `source` back to the
 * offender's source. Uses ICMPV6_ERROR_OVERHEAD bytes of headroom; returns the new packet length
 * (the packet now starts at p - ICMPV6_ERROR_OVERHEAD).
 */
export function ipv6WriteNoRoute(p: usize, avail: i32, source: usize): i32 {
  let quoted = avail;
  if (quoted > ICMPV6_ERROR_MAX - ICMPV6_ERROR_OVERHEAD) quoted = ICMPV6_ERROR_MAX - ICMPV6_ERROR_OVERHEAD;
  const q = p - <usize>ICMPV6_ERROR_OVERHEAD;
  const icmpLen = 8 + quoted;
  // Read the offender's source before the header overwrites anything (they do not overlap, but
  // keep the order obvious): version 6, class 0, flow 0; payload length; ICMPv6; hop limit 64.
  const src0 = load<u64>(p + 8);
  const src1 = load<u64>(p + 16);
  store<u32>(q, bswap<u32>(0x60000000));
  putBe16(q + 4, <u32>icmpLen);
  store<u8>(q + 6, <u8>PROTO_ICMPV6);
  store<u8>(q + 7, 64);
  store<u64>(q + 8, load<u64>(source));
  store<u64>(q + 16, load<u64>(source, 8));
  store<u64>(q + 24, src0);
  store<u64>(q + 32, src1);
  // ICMPv6: type 1, code 0, checksum over the pseudo-header (addresses, length, next header).
  const icmp = q + <usize>IPV6_HEADER;
  store<u32>(icmp, bswap<u32>(0x01000000));
  store<u32>(icmp + 4, 0);
  const pseudo = checksumPartial(q + 8, 32, <u32>icmpLen + PROTO_ICMPV6);
  putBe16(icmp + 2, ~checksumPartial(icmp, icmpLen, pseudo) & 0xffff);
  return ICMPV6_ERROR_OVERHEAD + quoted;
}
