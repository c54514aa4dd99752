// Building well-formed packets for tests and benchmarks.
import { internetChecksum } from "./checksum.js";

export interface Ipv4Fields {
  src: number;
  dst: number;
  protocol?: number;
  ttl?: number;
  id?: number;
  /** Fragment offset field including flags (the 16 bits after the ID). */
  fragment?: number;
  tos?: number;
  /** IP options, a multiple of 4 bytes, at most 40. */
  options?: Uint8Array;
  payload?: Uint8Array;
}

export function buildIpv4(f: Ipv4Fields): Uint8Array {
  const opts = f.options ?? new Uint8Array(0);
  const payload = f.payload ?? new Uint8Array(0);
  const ihl = 20 + opts.length;
  const total = ihl + payload.length;
  const p = new Uint8Array(total);
  const id = f.id ?? 0;
  const frag = f.fragment ?? 0;
  p.set([
    0x40 | (ihl >> 2),
    f.tos ?? 0,
    total >> 8,
    total & 255,
    id >> 8,
    id & 255,
    frag >> 8,
    frag & 255,
    f.ttl ?? 64,
    f.protocol ?? 17,
    0,
    0,
  ]);
  p.set(be32(f.src), 12);
  p.set(be32(f.dst), 16);
  p.set(opts, 20);
  const c = internetChecksum(p.subarray(0, ihl));
  p[10] = c >> 8;
  p[11] = c & 255;
  p.set(payload, ihl);
  return p;
}

export function be32(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
}

/** A VXLAN payload (what the UDP socket carries): header, inner Ethernet, packet. */
export function buildVxlan(
  vni: number,
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  ethertype: number,
  packet: Uint8Array,
  flags = 0x08,
): Uint8Array {
  const f = new Uint8Array(22 + packet.length);
  f.set([flags, 0, 0, 0, (vni >> 16) & 255, (vni >> 8) & 255, vni & 255, 0]);
  f.set(dstMac, 8);
  f.set(srcMac, 14);
  f.set([ethertype >> 8, ethertype & 255], 20);
  f.set(packet, 22);
  return f;
}

/** A UDP/IPv4 packet from src:srcPort to dst:dstPort carrying `data`, its UDP checksum in full. */
export function buildUdp4(src: number, dst: number, srcPort: number, dstPort: number, data: Uint8Array): Uint8Array {
  const len = 8 + data.length;
  const udp = new Uint8Array(len);
  udp.set([srcPort >> 8, srcPort & 255, dstPort >> 8, dstPort & 255, len >> 8, len & 255, 0, 0]);
  udp.set(data, 8);
  const pseudo = Uint8Array.from([...be32(src), ...be32(dst), 0, 17, len >> 8, len & 255]);
  const c = internetChecksum(Uint8Array.from([...pseudo, ...udp])) || 0xffff;
  udp[6] = c >> 8;
  udp[7] = c & 255;
  return buildIpv4({ src, dst, protocol: 17, payload: udp });
}
