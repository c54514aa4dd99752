// Reference IPv6 packet processing of the VXLAN paths, written for clarity: what the Wasm send
// path does with an IPv6 packet from the TUN device when the context has an IPv6 route table, and
// the IPv6 source check on receive. Verdicts are names from assembly/verdict.ts. Decapsulation of
// IPv6 frames is the same function for both families (refVxlanReceive in packets.ts).
import { buildVxlan } from "./build.js";
import { internetChecksum } from "./checksum.js";
import type { ReceiveResult } from "./packets.js";

export interface NextHop6 {
  /** Underlay address: IPv6, or IPv4 mapped (::ffff:a.b.c.d). */
  ip: bigint;
  port: number;
  mac: Uint8Array;
  valid: boolean;
}

export interface SendContext6 {
  vni: number;
  localAddr: bigint;
  mac: Uint8Array;
  lookup(addr: bigint): number;
  nextHop(i: number): NextHop6 | undefined;
}

export interface SendResult6 {
  verdict: string;
  out?: Uint8Array;
  /** Destination on an IPv6 underlay. */
  addr6?: bigint;
  /** Destination on an IPv4 underlay (the next hop's mapped address). */
  addr?: number;
  port?: number;
  peer?: number;
}

const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
export const addrAt = (b: Uint8Array, o: number) => b.subarray(o, o + 16).reduce((a, x) => (a << 8n) | BigInt(x), 0n);
export const addrBytes = (a: bigint) =>
  Uint8Array.from({ length: 16 }, (_, i) => Number((a >> BigInt(120 - 8 * i)) & 255n));
export const isIpv4Mapped = (a: bigint) => a >> 32n === 0xffffn;

/** Bytes of each extension header (RFC 8200 4) the error check walks past, from the header at o. */
const EXTENSION_BYTES = new Map<number, (ip: Uint8Array, o: number) => number>([
  [0, (ip, o) => (ip[o + 1] + 1) * 8], // Hop-by-Hop Options
  [43, (ip, o) => (ip[o + 1] + 1) * 8], // Routing
  [44, () => 8], // Fragment
  [51, (ip, o) => (ip[o + 1] + 2) * 4], // Authentication Header
  [60, (ip, o) => (ip[o + 1] + 1) * 8], // Destination Options
]);

/**
 * RFC 4443 2.4 (e): no error about an ICMPv6 error or redirect (found behind the extension
 * headers), a multicast destination, an unspecified or multicast source. A chain of more than 8
 * extension headers, or one that runs past the payload, gets none; a non-first fragment may.
 */
function mayTriggerIcmpError(ip: Uint8Array): boolean {
  if (ip[24] === 0xff || ip[8] === 0xff) return false;
  if (addrAt(ip, 8) === 0n) return false;
  const end = 40 + u16(ip, 4);
  let next = ip[6];
  let at = 40;
  for (let walked = 0; EXTENSION_BYTES.has(next); walked++) {
    if (walked === 8 || at + 8 > end) return false;
    if (next === 44 && u16(ip, at + 2) >> 3 !== 0) return true; // a later fragment: no upper layer here
    const bytes = EXTENSION_BYTES.get(next)!(ip, at);
    if (at + bytes > end) return false;
    next = ip[at];
    at += bytes;
  }
  if (next !== 58) return true;
  return at < end && ip[at] >= 128 && ip[at] !== 137;
}

/** ICMPv6 destination unreachable, code 0, quoting what fits 1280 bytes. */
export function noRoute6(ip: Uint8Array, source: bigint): Uint8Array {
  const quoted = ip.subarray(0, Math.min(ip.length, 1280 - 48));
  const icmpLen = 8 + quoted.length;
  const out = new Uint8Array(48 + quoted.length);
  out.set([0x60, 0, 0, 0, icmpLen >> 8, icmpLen & 255, 58, 64]);
  out.set(addrBytes(source), 8);
  out.set(ip.subarray(8, 24), 24);
  out.set([1, 0, 0, 0, 0, 0, 0, 0], 40);
  out.set(quoted, 48);
  const pseudo = new Uint8Array(40 + icmpLen);
  pseudo.set(out.subarray(8, 40));
  pseudo.set([icmpLen >>> 24, (icmpLen >> 16) & 255, (icmpLen >> 8) & 255, icmpLen & 255, 0, 0, 0, 58], 32);
  pseudo.set(out.subarray(40), 40);
  const c = internetChecksum(pseudo);
  out[42] = c >> 8;
  out[43] = c & 255;
  return out;
}

/** An IPv6 packet read from the TUN device, on its way to a peer as VXLAN. */
export function refSend6(packet: Uint8Array, ctx: SendContext6): SendResult6 {
  const ip = packet.slice();
  if (ip.length < 40) return { verdict: "TOO_SHORT" };
  if (40 + u16(ip, 4) > ip.length) return { verdict: "IP_LENGTH" };
  if (ip[7] === 0) return { verdict: "TTL_EXHAUSTED" };
  const nh = ctx.lookup(addrAt(ip, 24));
  if (nh < 0)
    return mayTriggerIcmpError(ip) ? { verdict: "REPLY", out: noRoute6(ip, ctx.localAddr) } : { verdict: "NO_ROUTE" };
  const hop = ctx.nextHop(nh);
  if (!hop?.valid) return { verdict: "NO_NEXT_HOP" };
  const frame = buildVxlan(ctx.vni, hop.mac, ctx.mac, 0x86dd, ip);
  const to = isIpv4Mapped(hop.ip) ? { addr: Number(hop.ip & 0xffffffffn) } : { addr6: hop.ip };
  return { verdict: "FORWARD", out: frame, ...to, port: hop.port, peer: nh };
}

/** Anti-spoofing for an IPv6 inner packet that came from `from` (an IPv4 number or IPv6 bigint). */
export function refSourceCheck6(
  r: ReceiveResult,
  from: number | bigint,
  lookup: (a: bigint) => number,
  nextHop: (i: number) => NextHop6 | undefined,
): ReceiveResult {
  if (r.verdict !== "FORWARD" || r.out![0] >> 4 !== 6) return r;
  const nh = lookup(addrAt(r.out!, 8));
  if (nh < 0) return { verdict: "UNKNOWN_SOURCE" };
  const hop = nextHop(nh);
  const fromAddr = typeof from === "bigint" ? from : (0xffffn << 32n) | BigInt(from);
  if (!hop?.valid || hop.ip !== fromAddr) return { verdict: "SPOOFED" };
  return { ...r, peer: nh };
}
