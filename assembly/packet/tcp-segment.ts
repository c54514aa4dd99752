// Segmentation offload in Wasm: a TSO (TCP over IPv4 or IPv6) or USO (UDP) super-packet read from
// the TUN device is cut into segments of gso_size payload bytes, each with its own copy of the IP
// and transport headers, fixed up as the kernel's own GSO would (IPv4 total length and IP ID + k,
// or the IPv6 payload length, extension headers copied into each segment; TCP sequence
// number + k * gso_size, FIN/PSH only on the last and CWR only on the first segment, UDP length),
// and every checksum computed in full. The segments are written back to back at equal strides,
// each behind a copy of the encapsulation header, exactly the layout UDP GSO (UDP_SEGMENT) sends
// in one sendmsg: all datagrams of `stride` bytes but the last.
// Also here: finishing a checksum the kernel left partial (virtio NEEDS_CSUM) on a single packet.
import { be16, be32, putBe16, putBe32 } from "./bytes";
import { checksum, checksumPartial, copyChecksumPartial } from "./checksum";
import { ipVersion, ipv4HeaderLen } from "./ipv4";
import { IPV6_HEADER, ipv6SegmentableOffset } from "./ipv6";
import { DESC_OFF, DESC_LEN, DESC_FLAGS, DESC_FLAG_ADDR6 } from "../descriptor";
import { VERDICT_FORWARD, DROP_OFFLOAD_HEADER, DROP_OFFLOAD_SIZE } from "../verdict";
import { VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP_L4 } from "./vnet-header";
import { countAdd, COUNTER_OFFLOAD_SEGMENTS } from "../counters";

export const PROTO_TCP: u32 = 6;
export const PROTO_UDP: u32 = 17;
export const TCP_HEADER_MIN: i32 = 20;
const UDP_HEADER: i32 = 8;
const TCP_FIN: u32 = 0x01;
const TCP_PSH: u32 = 0x08;
const TCP_CWR: u32 = 0x80;

/** Most datagrams the kernel takes in one UDP_SEGMENT send (UDP_MAX_SEGMENTS on older kernels). */
export const UDP_GSO_MAX_SEGMENTS: i32 = 64;
/** Most UDP payload bytes in one send over IPv4: 65535 - 20 (IP) - 8 (UDP). */
export const UDP_GSO_MAX_BYTES: i32 = 65507;
/** Most sends (trains of datagrams) one super-packet may need; the send batch sizes its output by it. */
export const OFFLOAD_MAX_TRAINS: i32 = 8;
/**
 * Most segments of a super-packet the TUN device hands over: the dataplane sets the device's
 * gso_max_segs to this or fewer (tunGsoMaxSegs in src/dataplane/dataplane.ts: as many segments of
 * the pods' MTU as its segment slot holds), and the kernel cuts a super-packet of more segments (a
 * peer's small MSS, large IPv6 extension headers) itself. 128 segments fit 2 trains.
 */
export const OFFLOAD_MAX_SEGMENTS: i32 = 128;

/** Sum of an IPv4 packet's pseudo-header for a transport segment of l4len bytes (not inverted). */
@inline export function ipv4PseudoSum(ip: usize, proto: u32, l4len: i32): u32 {
  return checksumPartial(ip + 12, 8, proto + <u32>l4len);
}

/**
 * Finishes a partial checksum (virtio NEEDS_CSUM): the field at start + offset holds the
 * pseudo-header sum, so the checksum over [start, len) including it is the final value. Returns a
 * verdict (the offsets must lie inside the packet).
 */
export function completeChecksum(p: usize, len: i32, start: i32, offset: i32): i32 {
  if (start < 0 || offset < 0 || start + offset + 2 > len) return DROP_OFFLOAD_HEADER;
  const c = ~checksumPartial(p + <usize>start, len - start, 0) & 0xffff;
  putBe16(p + <usize>(start + offset), c == 0 ? 0xffff : c); // as the kernel does: 0 means "none" for UDP
  return VERDICT_FORWARD;
}

/** Bytes of one UDP_SEGMENT send: as many datagrams of `stride` bytes as the kernel takes at once. */
@inline export function gsoTrainBytes(stride: i32): i32 {
  let segs = UDP_GSO_MAX_BYTES / stride;
  if (segs > UDP_GSO_MAX_SEGMENTS) segs = UDP_GSO_MAX_SEGMENTS;
  return segs * stride;
}

/**
 * Segments the IPv4 or IPv6 super-packet at the descriptor's OFF (LEN bytes, the IP header checked
 * by the caller) into `out` (cap bytes), each segment behind a copy of the `encap` bytes in front
 * of OFF. `gsoType` must fit the packet's version: TCPV4 for IPv4, TCPV6 for IPv6, UDP_L4 for
 * either. In an IPv6 super-packet TCP or UDP may sit behind hop-by-hop and destination options
 * headers (a socket's IPV6_HOPOPTS/IPV6_DSTOPTS), which every segment carries; where they end
 * must be `csumStart` (the vnet header's csum_start), unless that is 0 (none given). On success
 * the descriptor points at the segments:
 * OFF = out, LEN = all of them, FLAGS = the segment stride (0 when there is just one) beside
 * DESC_FLAG_ADDR6 (an IPv6 underlay stays the destination). Returns a
 * verdict and counts the segments in the counter block `counters`.
 */
export function segmentSuperPacket(
  d: usize,
  gsoType: u32,
  gsoSize: i32,
  csumStart: i32,
  encap: i32,
  out: usize,
  cap: i32,
  counters: usize,
): i32 {
  const p = <usize>load<i32>(d + DESC_OFF);
  const len = load<i32>(d + DESC_LEN);
  const v6 = ipVersion(p) == 6;
  const tcp = gsoType != VNET_GSO_UDP_L4;
  if (tcp && gsoType != (v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4)) return DROP_OFFLOAD_HEADER;
  const proto = tcp ? PROTO_TCP : PROTO_UDP;
  if (gsoSize < 1) return DROP_OFFLOAD_HEADER;
  // l3: the IP header's bytes the IPv4 checksum covers; l4: where the transport header starts.
  const l3 = v6 ? IPV6_HEADER : ipv4HeaderLen(p);
  const l4 = v6 ? ipv6SegmentableOffset(p, len, proto) : l3;
  if (v6) {
    if (l4 < 0 || (csumStart != 0 && csumStart != l4)) return DROP_OFFLOAD_HEADER;
  } else if (<u32>load<u8>(p + 9) != proto || (be16(p + 6) & 0x3fff) != 0) return DROP_OFFLOAD_HEADER;
  let thl = UDP_HEADER;
  if (tcp) {
    if (l4 + TCP_HEADER_MIN > len) return DROP_OFFLOAD_HEADER;
    thl = (<i32>load<u8>(p + <usize>l4 + 12) >> 4) << 2;
    if (thl < TCP_HEADER_MIN) return DROP_OFFLOAD_HEADER;
  }
  const hdr = l4 + thl;
  if (hdr > len) return DROP_OFFLOAD_HEADER;
  const payload = len - hdr;
  const nseg = payload <= gsoSize ? 1 : (payload + gsoSize - 1) / gsoSize;
  const stride = encap + hdr + gsoSize;
  const total = (nseg - 1) * stride + encap + hdr + (payload - (nseg - 1) * gsoSize);
  // The stride first: a segment size past a UDP datagram's (any u16 a vnet header holds) leaves
  // no train, and dividing by its size would trap, which restarts the worker.
  if (total > cap || stride > UDP_GSO_MAX_BYTES) return DROP_OFFLOAD_SIZE;
  const train = gsoTrainBytes(stride);
  if ((nseg * stride + train - 1) / train > OFFLOAD_MAX_TRAINS) return DROP_OFFLOAD_SIZE;

  const id0 = v6 ? 0 : be16(p + 4);
  const seq0 = tcp ? be32(p + <usize>l4 + 4) : 0;
  const flags0 = tcp ? <u32>load<u8>(p + <usize>l4 + 13) : 0;
  // The pseudo-header's addresses: 8 bytes at 12 (IPv4), 32 bytes at 8 (IPv6).
  const addrSum = v6 ? checksumPartial(p + 8, 32, proto) : checksumPartial(p + 12, 8, proto);
  for (let k = 0; k < nseg; k++) {
    const o = out + <usize>(k * stride);
    const m = k == nseg - 1 ? payload - k * gsoSize : gsoSize;
    if (encap > 0) memory.copy(o, p - <usize>encap, encap);
    const ip = o + <usize>encap;
    memory.copy(ip, p, hdr);
    // The payload starts at an even offset of the L4 segment, so its sum simply adds to the header's.
    const payloadSum = copyChecksumPartial(ip + <usize>hdr, p + <usize>(hdr + k * gsoSize), m, 0);
    const l4len = thl + m;
    if (v6) {
      putBe16(ip + 4, hdr - IPV6_HEADER + m); // the extension headers and the L4 segment
    } else {
      putBe16(ip + 2, hdr + m);
      putBe16(ip + 4, (id0 + <u32>k) & 0xffff);
      store<u16>(ip + 10, 0);
      putBe16(ip + 10, checksum(ip, l3));
    }
    const t = ip + <usize>l4;
    let field: usize;
    if (tcp) {
      putBe32(t + 4, seq0 + <u32>(k * gsoSize));
      let f = flags0;
      if (k != nseg - 1) f &= ~(TCP_FIN | TCP_PSH);
      if (k != 0) f &= ~TCP_CWR;
      store<u8>(t + 13, <u8>f);
      field = t + 16;
    } else {
      putBe16(t + 4, l4len);
      field = t + 6;
    }
    store<u16>(field, 0);
    const c = ~checksumPartial(t, thl, addrSum + <u32>l4len + payloadSum) & 0xffff;
    putBe16(field, c == 0 && !tcp ? 0xffff : c);
  }
  store<i32>(d + DESC_OFF, <i32>out);
  store<i32>(d + DESC_LEN, total);
  store<i32>(d + DESC_FLAGS, (nseg > 1 ? stride : 0) | (load<i32>(d + DESC_FLAGS) & DESC_FLAG_ADDR6));
  countAdd(counters, COUNTER_OFFLOAD_SEGMENTS, <u64>nseg);
  return VERDICT_FORWARD;
}
