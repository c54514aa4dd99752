// Reference TCP/IPv4 and TCP/IPv6 code for the offload tests, written the plain way: building
// segments with correct checksums, checking checksums, and segmenting a TSO super-packet as the
// kernel's GSO does (headers copied, lengths, IPv4's IP ID + k, sequence + k * gso_size, FIN/PSH
// on the last only, CWR on the first only, every checksum in full).
import { internetChecksum, onesSum } from "./checksum.js";
import { be32 } from "./build.js";

export interface Tcp4Fields {
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** TCP flag byte (0x10 ACK, 0x08 PSH, 0x01 FIN, 0x80 CWR, ...). */
  flags: number;
  window: number;
  /** TCP options, a multiple of 4 bytes, at most 40. */
  options?: Uint8Array;
  id?: number;
  ttl?: number;
  tos?: number;
  /** DF set (the usual for TCP). */
  df?: boolean;
  payload: Uint8Array;
}

const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const put16 = (b: Uint8Array, o: number, v: number) => {
  b[o] = (v >> 8) & 255;
  b[o + 1] = v & 255;
};

/** Sum of the IPv4 pseudo-header for an L4 segment of `length` bytes (not folded to 16 bits inverted). */
export function pseudoHeaderSum(ip: Uint8Array, protocol: number, length: number): number {
  return onesSum(Uint8Array.from([...ip.subarray(12, 20), 0, protocol, length >> 8, length & 255]));
}

/** A TCP/IPv4 packet (no IP options) with both checksums right. */
export function buildTcp4(f: Tcp4Fields): Uint8Array {
  const opts = f.options ?? new Uint8Array(0);
  const thl = 20 + opts.length;
  const total = 20 + thl + f.payload.length;
  const p = new Uint8Array(total);
  p.set([0x45, f.tos ?? 0, total >> 8, total & 255, 0, 0, f.df === false ? 0 : 0x40, 0, f.ttl ?? 64, 6, 0, 0]);
  put16(p, 4, f.id ?? 0);
  p.set(be32(f.src), 12);
  p.set(be32(f.dst), 16);
  put16(p, 10, internetChecksum(p.subarray(0, 20)));
  writeTcp(p, 20, f);
  return p;
}

/** Writes the TCP header, options and payload of `f` at l3 (the IP header's length), checksum last. */
function writeTcp(p: Uint8Array, l3: number, f: Omit<Tcp4Fields, "src" | "dst">): void {
  const opts = f.options ?? new Uint8Array(0);
  const thl = 20 + opts.length;
  put16(p, l3, f.srcPort);
  put16(p, l3 + 2, f.dstPort);
  p.set(be32(f.seq >>> 0), l3 + 4);
  p.set(be32(f.ack >>> 0), l3 + 8);
  p[l3 + 12] = (thl / 4) << 4;
  p[l3 + 13] = f.flags;
  put16(p, l3 + 14, f.window);
  p.set(opts, l3 + 20);
  p.set(f.payload, l3 + thl);
  put16(p, l3 + 16, tcpChecksumOf(p));
}

/** Bytes of the IP header the IPv4 checksum covers: 20 (IPv4 without options), or IPv6's fixed 40. */
const l3Of = (p: Uint8Array) => (p[0] >> 4 === 6 ? 40 : 20);

/**
 * Where the transport header starts: behind the IPv4 header, or behind IPv6's fixed header and
 * any hop-by-hop, routing and destination options headers.
 */
export function transportOffset(p: Uint8Array): number {
  if (p[0] >> 4 !== 6) return (p[0] & 15) * 4;
  let next = p[6];
  let at = 40;
  while ((next === 0 || next === 43 || next === 60) && at + 8 <= p.length) {
    next = p[at];
    at += (p[at + 1] + 1) * 8;
  }
  return at;
}

/** The TCP checksum field value of the IPv4 or IPv6 packet (its current field taken as zero). */
function tcpChecksumOf(p: Uint8Array): number {
  const seg = p.slice(transportOffset(p));
  seg[16] = 0;
  seg[17] = 0;
  const pseudo = p[0] >> 4 === 6 ? pseudoHeaderSum6(p, 6, seg.length) : pseudoHeaderSum(p, 6, seg.length);
  return ~onesSum(seg, pseudo) & 0xffff;
}

/** Whether the IPv4 header checksum and the TCP checksum of the packet are right. */
export function tcp4ChecksumsValid(p: Uint8Array): boolean {
  return (
    internetChecksum(p.subarray(0, 20)) === 0 &&
    (~onesSum(p.subarray(20), pseudoHeaderSum(p, 6, p.length - 20)) & 0xffff) === 0
  );
}

/**
 * Finishes a NEEDS_CSUM packet: the checksum from csumStart, field included. A result of 0 goes out
 * as 0xffff for UDP, where 0 means "no checksum", and for TCP too where the kernel finishes it in
 * software (`skbChecksumHelp`, as Linux's skb_checksum_help does); a NIC leaves TCP's 0. Both
 * forms check alike at a receiver.
 */
export function completePartial(
  p: Uint8Array,
  csumStart: number,
  csumOffset: number,
  { skbChecksumHelp = false } = {},
): Uint8Array {
  const q = p.slice();
  const c = ~onesSum(q.subarray(csumStart)) & 0xffff;
  const udp = p[l3Of(p) === 40 ? 6 : 9] === 17;
  put16(q, csumStart + csumOffset, c === 0 && (udp || skbChecksumHelp) ? 0xffff : c);
  return q;
}

/**
 * Segments a TCP super-packet (IPv4 without options, or IPv6 with TCP behind the fixed header and
 * any extension headers, copied into every segment) into segments of gsoSize payload bytes.
 */
function refSegmentTcp(p: Uint8Array, gsoSize: number): Uint8Array[] {
  const l3 = l3Of(p);
  const l4 = transportOffset(p);
  const thl = (p[l4 + 12] >> 4) * 4;
  const hdr = l4 + thl;
  const payload = p.subarray(hdr);
  const n = Math.max(1, Math.ceil(payload.length / gsoSize));
  const out: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const part = payload.subarray(k * gsoSize, Math.min(payload.length, (k + 1) * gsoSize));
    const s = new Uint8Array(hdr + part.length);
    s.set(p.subarray(0, hdr));
    s.set(part, hdr);
    if (l3 === 40) {
      put16(s, 4, s.length - 40);
    } else {
      put16(s, 2, s.length);
      put16(s, 4, (u16(p, 4) + k) & 0xffff);
      put16(s, 10, 0);
      put16(s, 10, internetChecksum(s.subarray(0, 20)));
    }
    const q = l4 + 4;
    s.set(be32((((s[q] << 24) | (s[q + 1] << 16) | (s[q + 2] << 8) | s[q + 3]) + k * gsoSize) >>> 0), q);
    if (k !== n - 1) s[l4 + 13] &= ~(0x01 | 0x08);
    if (k !== 0) s[l4 + 13] &= ~0x80;
    put16(s, l4 + 16, tcpChecksumOf(s));
    out.push(s);
  }
  return out;
}

/** Segments a TCP/IPv4 super-packet (no IP options) into segments of gsoSize payload bytes. */
export const refSegmentTcp4 = refSegmentTcp;

export interface Tcp6Fields extends Omit<Tcp4Fields, "src" | "dst" | "id" | "ttl" | "tos" | "df"> {
  src: bigint;
  dst: bigint;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  /**
   * Extension headers between the fixed header and TCP, in order: their type (0 hop-by-hop, 43
   * routing, 60 destination options) and length (a multiple of 8), padded with PadN.
   */
  extensions?: ReadonlyArray<{ type: number; length: number }>;
}

const addr6 = (a: bigint) => Uint8Array.from({ length: 16 }, (_, i) => Number((a >> BigInt(120 - 8 * i)) & 255n));

/** Sum of the IPv6 pseudo-header for an L4 segment of `length` bytes (not inverted). */
export function pseudoHeaderSum6(ip: Uint8Array, protocol: number, length: number): number {
  return onesSum(Uint8Array.from([...ip.subarray(8, 40), 0, 0, length >> 8, length & 255, 0, 0, 0, protocol]));
}

/** A TCP/IPv6 packet (TCP behind the fixed header and `extensions`) with its checksum right. */
export function buildTcp6(f: Tcp6Fields): Uint8Array {
  const opts = f.options ?? new Uint8Array(0);
  const exts = f.extensions ?? [];
  const l4 = 40 + exts.reduce((n, e) => n + e.length, 0);
  const p = new Uint8Array(l4 + 20 + opts.length + f.payload.length);
  const tc = f.trafficClass ?? 0;
  const flow = f.flowLabel ?? 0;
  p.set([0x60 | (tc >> 4), ((tc & 15) << 4) | (flow >> 16), (flow >> 8) & 255, flow & 255]);
  put16(p, 4, p.length - 40);
  p[6] = exts.length > 0 ? exts[0].type : 6;
  p[7] = f.hopLimit ?? 64;
  p.set(addr6(f.src), 8);
  p.set(addr6(f.dst), 24);
  let at = 40;
  exts.forEach((e, i) => {
    p[at] = i + 1 < exts.length ? exts[i + 1].type : 6;
    p[at + 1] = e.length / 8 - 1;
    // PadN over the rest (a routing header gets the same bytes: it is there only to be refused).
    p[at + 2] = 1;
    p[at + 3] = e.length - 4;
    at += e.length;
  });
  writeTcp(p, l4, f);
  return p;
}

/** Whether the TCP checksum of the IPv6 packet is right. */
export function tcp6ChecksumValid(p: Uint8Array): boolean {
  const l4 = transportOffset(p);
  return (~onesSum(p.subarray(l4), pseudoHeaderSum6(p, 6, p.length - l4)) & 0xffff) === 0;
}

/** Segments a TCP/IPv6 super-packet into segments of gsoSize payload bytes. */
export const refSegmentTcp6 = refSegmentTcp;

/** The vnet header fields the receive path owes a lone packet handed to the TUN device. */
export interface LoneHeader {
  flags: number;
  csumStart: number;
  csumOffset: number;
}

/**
 * What a lone packet's vnet header must say, written the plain way. A packet whose outer UDP
 * checksum the kernel verified (it came in a UDP GRO receive of more than one datagram) is handed
 * over with NEEDS_CSUM when it is TCP, or UDP with a checksum and a UDP length of the whole IP
 * payload (the kernel finishes the checksum to the packet's end, so not a padded one), right after
 * the IPv4 header (not a fragment) or the IPv6 fixed header; every other packet with a zeroed
 * header, for the kernel to check.
 */
export function refLoneHeader(ip: Uint8Array, outerVerified: boolean): LoneHeader {
  const none = { flags: 0, csumStart: 0, csumOffset: 0 };
  if (!outerVerified) return none;
  const v6 = ip[0] >> 4 === 6;
  const l3 = v6 ? 40 : (ip[0] & 15) * 4;
  if (!v6 && (u16(ip, 6) & 0x3fff) !== 0) return none;
  const proto = v6 ? ip[6] : ip[9];
  const l4 = ip.length - l3;
  if (proto === 6 && l4 >= 20) return { flags: 1, csumStart: l3, csumOffset: 16 };
  if (proto === 17 && l4 >= 8 && u16(ip, l3 + 4) === l4 && u16(ip, l3 + 6) !== 0)
    return { flags: 1, csumStart: l3, csumOffset: 6 };
  return none;
}
