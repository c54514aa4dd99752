// ICMP echo packets for the TUN tests and benchmark: the kernel answers an echo request written
// into a TUN device with a reply read back from it, and ping accepts a reply written by a test.
import { buildIpv4 } from "../reference/build.js";
import { internetChecksum } from "../reference/checksum.js";

export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

export interface Echo {
  src: number;
  dst: number;
  type: number;
  id: number;
  seq: number;
  data: Uint8Array;
}

export function buildEcho(e: Echo): Uint8Array {
  const icmp = new Uint8Array(8 + e.data.length);
  icmp.set([e.type, 0, 0, 0, e.id >> 8, e.id & 255, e.seq >> 8, e.seq & 255]);
  icmp.set(e.data, 8);
  const c = internetChecksum(icmp);
  icmp[2] = c >> 8;
  icmp[3] = c & 255;
  return buildIpv4({ src: e.src, dst: e.dst, protocol: 1, payload: icmp });
}

/** The echo in an IPv4 packet whose header and ICMP checksums are right, or undefined. */
export function parseEcho(p: Uint8Array): Echo | undefined {
  if (p.length < 28 || p[0] !== 0x45 || p[9] !== 1) return undefined;
  if (((p[2] << 8) | p[3]) !== p.length) return undefined;
  if (internetChecksum(p.subarray(0, 20)) !== 0 || internetChecksum(p.subarray(20)) !== 0) return undefined;
  const u32 = (i: number) => ((p[i] << 24) | (p[i + 1] << 16) | (p[i + 2] << 8) | p[i + 3]) >>> 0;
  return {
    src: u32(12),
    dst: u32(16),
    type: p[20],
    id: (p[24] << 8) | p[25],
    seq: (p[26] << 8) | p[27],
    data: p.slice(28),
  };
}
