// Reference UDP code for the USO tests, written the plain way: UDP datagrams over IPv4 or IPv6
// with or without a checksum, and cutting a USO super-packet as the kernel's __udp_gso_segment
// does (headers copied, IPv4's ID + k and header checksum, IPv6's payload length, the UDP length
// and a full UDP checksum per datagram, 0 sent as 0xffff).
import { buildIpv4 } from "./build.js";
import { internetChecksum, onesSum } from "./checksum.js";
import { pseudoHeaderSum, pseudoHeaderSum6 } from "./tcp-offload.js";

export interface UdpFields {
  /** IPv4 source and destination (numbers) or IPv6 ones (bigints). */
  src: number | bigint;
  dst: number | bigint;
  srcPort: number;
  dstPort: number;
  /** IPv4 only. */
  id?: number;
  df?: boolean;
  ttl?: number;
  tos?: number;
  /** false: the checksum field stays 0 (IPv4 only: "no checksum"). */
  checksum?: boolean;
  payload: Uint8Array;
}

const put16 = (b: Uint8Array, o: number, v: number) => {
  b[o] = (v >> 8) & 255;
  b[o + 1] = v & 255;
};
const addr6 = (a: bigint) => Uint8Array.from({ length: 16 }, (_, i) => Number((a >> BigInt(120 - 8 * i)) & 255n));
const l3Of = (p: Uint8Array) => (p[0] >> 4 === 6 ? 40 : 20);

/** Writes the UDP checksum of the IPv4 or IPv6 packet p (its field taken as zero). */
function fillUdpChecksum(p: Uint8Array): void {
  const l3 = l3Of(p);
  const seg = p.subarray(l3);
  put16(p, l3 + 6, 0);
  const pseudo = l3 === 40 ? pseudoHeaderSum6(p, 17, seg.length) : pseudoHeaderSum(p, 17, seg.length);
  put16(p, l3 + 6, ~onesSum(seg, pseudo) & 0xffff || 0xffff);
}

export function buildUdp(f: UdpFields): Uint8Array {
  const udp = new Uint8Array(8 + f.payload.length);
  put16(udp, 0, f.srcPort);
  put16(udp, 2, f.dstPort);
  put16(udp, 4, udp.length);
  udp.set(f.payload, 8);
  let p: Uint8Array;
  if (typeof f.src === "bigint") {
    p = new Uint8Array(40 + udp.length);
    p[0] = 0x60;
    put16(p, 4, udp.length);
    p[6] = 17;
    p[7] = f.ttl ?? 64;
    p.set(addr6(f.src), 8);
    p.set(addr6(f.dst as bigint), 24);
    p.set(udp, 40);
  } else {
    p = buildIpv4({
      src: f.src,
      dst: f.dst as number,
      protocol: 17,
      id: f.id,
      fragment: f.df ? 0x4000 : 0,
      ttl: f.ttl,
      tos: f.tos,
      payload: udp,
    });
  }
  if (f.checksum ?? true) fillUdpChecksum(p);
  return p;
}

/** Cuts a USO super-packet into datagrams of gsoSize payload bytes, as the kernel does. */
export function refSegmentUdp(p: Uint8Array, gsoSize: number): Uint8Array[] {
  const l3 = l3Of(p);
  const hdr = l3 + 8;
  const out: Uint8Array[] = [];
  const id0 = (p[4] << 8) | p[5];
  for (let at = hdr, k = 0; at < p.length; at += gsoSize, k++) {
    const chunk = p.subarray(at, Math.min(p.length, at + gsoSize));
    const q = new Uint8Array(hdr + chunk.length);
    q.set(p.subarray(0, hdr));
    q.set(chunk, hdr);
    if (l3 === 40) put16(q, 4, q.length - 40);
    else {
      put16(q, 2, q.length);
      put16(q, 4, (id0 + k) & 0xffff);
      put16(q, 10, 0);
      put16(q, 10, internetChecksum(q.subarray(0, 20)));
    }
    put16(q, l3 + 4, q.length - l3);
    fillUdpChecksum(q);
    out.push(q);
  }
  return out;
}
