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
  put16(p, 20, f.srcPort);
  put16(p, 22, f.dstPort);
  p.set(be32(f.seq >>> 0), 24);
  p.set(be32(f.ack >>> 0), 28);
  p[32] = (thl / 4) << 4;
  p[33] = f.flags;
  put16(p, 34, f.window);
  p.set(opts, 40);
  p.set(f.payload, 20 + thl);
  put16(p, 36, tcpChecksumOf(p));
  return p;
}

/** The TCP checksum field value of the packet (its current field taken as zero). */
function tcpChecksumOf(p: Uint8Array): number {
  const seg = p.slice(20);
  seg[16] = 0;
  seg[17] = 0;
  return ~onesSum(seg, pseudoHeaderSum(p, 6, seg.length)) & 0xffff;
}

/** Whether the IPv4 header checksum and the TCP checksum of the packet are right. */
export function tcp4ChecksumsValid(p: Uint8Array): boolean {
  return (
    internetChecksum(p.subarray(0, 20)) === 0 &&
    (~onesSum(p.subarray(20), pseudoHeaderSum(p, 6, p.length - 20)) & 0xffff) === 0
  );
}

/** Finishes a NEEDS_CSUM packet as the kernel would: checksum from csumStart, field included. */
export function completePartial(p: Uint8Array, csumStart: number, csumOffset: number): Uint8Array {
  const q = p.slice();
  const c = ~onesSum(q.subarray(csumStart)) & 0xffff;
  put16(q, csumStart + csumOffset, c);
  return q;
}

/** Segments a TCP/IPv4 super-packet (no IP options) into segments of gsoSize payload bytes. */
export function refSegmentTcp4(p: Uint8Array, gsoSize: number): Uint8Array[] {
  const thl = (p[32] >> 4) * 4;
  const hdr = 20 + thl;
  const payload = p.subarray(hdr);
  const n = Math.max(1, Math.ceil(payload.length / gsoSize));
  const out: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const part = payload.subarray(k * gsoSize, Math.min(payload.length, (k + 1) * gsoSize));
    const s = new Uint8Array(hdr + part.length);
    s.set(p.subarray(0, hdr));
    s.set(part, hdr);
    put16(s, 2, s.length);
    put16(s, 4, (u16(p, 4) + k) & 0xffff);
    put16(s, 10, 0);
    put16(s, 10, internetChecksum(s.subarray(0, 20)));
    s.set(be32((((s[24] << 24) | (s[25] << 16) | (s[26] << 8) | s[27]) + k * gsoSize) >>> 0), 24);
    if (k !== n - 1) s[33] &= ~(0x01 | 0x08);
    if (k !== 0) s[33] &= ~0x80;
    put16(s, 36, tcpChecksumOf(s));
    out.push(s);
  }
  return out;
}

export interface Tcp6Fields extends Omit<Tcp4Fields, "src" | "dst" | "id" | "ttl" | "tos" | "df"> {
  src: bigint;
  dst: bigint;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}

const addr6 = (a: bigint) => Uint8Array.from({ length: 16 }, (_, i) => Number((a >> BigInt(120 - 8 * i)) & 255n));

/** Sum of the IPv6 pseudo-header for an L4 segment of `length` bytes (not inverted). */
export function pseudoHeaderSum6(ip: Uint8Array, protocol: number, length: number): number {
  return onesSum(Uint8Array.from([...ip.subarray(8, 40), 0, 0, length >> 8, length & 255, 0, 0, 0, protocol]));
}

/** The TCP checksum field value of the IPv6 packet (its current field taken as zero). */
function tcp6ChecksumOf(p: Uint8Array): number {
  const seg = p.slice(40);
  seg[16] = 0;
  seg[17] = 0;
  return ~onesSum(seg, pseudoHeaderSum6(p, 6, seg.length)) & 0xffff;
}

/** A TCP/IPv6 packet (TCP right after the fixed header) with its checksum right. */
export function buildTcp6(f: Tcp6Fields): Uint8Array {
  const opts = f.options ?? new Uint8Array(0);
  const thl = 20 + opts.length;
  const l4 = thl + f.payload.length;
  const p = new Uint8Array(40 + l4);
  const tc = f.trafficClass ?? 0;
  const flow = f.flowLabel ?? 0;
  p.set([0x60 | (tc >> 4), ((tc & 15) << 4) | (flow >> 16), (flow >> 8) & 255, flow & 255]);
  put16(p, 4, l4);
  p[6] = 6;
  p[7] = f.hopLimit ?? 64;
  p.set(addr6(f.src), 8);
  p.set(addr6(f.dst), 24);
  put16(p, 40, f.srcPort);
  put16(p, 42, f.dstPort);
  p.set(be32(f.seq >>> 0), 44);
  p.set(be32(f.ack >>> 0), 48);
  p[52] = (thl / 4) << 4;
  p[53] = f.flags;
  put16(p, 54, f.window);
  p.set(opts, 60);
  p.set(f.payload, 40 + thl);
  put16(p, 56, tcp6ChecksumOf(p));
  return p;
}

/** Whether the TCP checksum of the IPv6 packet is right. */
export function tcp6ChecksumValid(p: Uint8Array): boolean {
  return (~onesSum(p.subarray(40), pseudoHeaderSum6(p, 6, p.length - 40)) & 0xffff) === 0;
}

/** Segments a TCP/IPv6 super-packet into segments of gsoSize payload bytes. */
export function refSegmentTcp6(p: Uint8Array, gsoSize: number): Uint8Array[] {
  const thl = (p[52] >> 4) * 4;
  const hdr = 40 + thl;
  const payload = p.subarray(hdr);
  const n = Math.max(1, Math.ceil(payload.length / gsoSize));
  const out: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const part = payload.subarray(k * gsoSize, Math.min(payload.length, (k + 1) * gsoSize));
    const s = new Uint8Array(hdr + part.length);
    s.set(p.subarray(0, hdr));
    s.set(part, hdr);
    put16(s, 4, s.length - 40);
    s.set(be32((((s[44] << 24) | (s[45] << 16) | (s[46] << 8) | s[47]) + k * gsoSize) >>> 0), 44);
    if (k !== n - 1) s[53] &= ~(0x01 | 0x08);
    if (k !== 0) s[53] &= ~0x80;
    put16(s, 56, tcp6ChecksumOf(s));
    out.push(s);
  }
  return out;
}
