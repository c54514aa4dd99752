// Reference packet processing: the behaviour the Wasm hot path must match, written for clarity
// only (copies, plain branches). Verdicts are names from assembly/verdict.ts.
import { buildVxlan } from "./build.js";
import { internetChecksum } from "./checksum.js";

export interface NextHop {
  ip: number;
  port: number;
  mac: Uint8Array;
  valid: boolean;
}

export interface SendContext {
  vni: number;
  mac: Uint8Array;
  /** Longest-prefix match: next-hop index or -1. */
  lookup(addr: number): number;
  nextHop(i: number): NextHop | undefined;
}

export interface SendResult {
  verdict: string;
  /** Bytes to send (forward) or to write back to the TUN device (reply). */
  out?: Uint8Array;
  addr?: number;
  port?: number;
}

export interface ReceiveResult {
  verdict: string;
  /** The IP packet to write to the TUN device. */
  out?: Uint8Array;
  /** The peer (next hop) it came from, when sources are checked. */
  peer?: number;
}

/** Anti-spoofing: who sent the datagram and what the route table says. */
export interface SourceCheck {
  /** Underlay address the datagram came from. */
  from: number;
  lookup(addr: number): number;
  nextHop(i: number): NextHop | undefined;
}

/** The inner source must lie in a peer's subnet, and the datagram come from that peer. */
function checkSource(ip: Uint8Array, check: SourceCheck | undefined): { verdict: string | null; peer?: number } {
  if (!check) return { verdict: null };
  if (ip[0] >> 4 !== 4) return { verdict: "IPV6_UNROUTED" };
  const nh = check.lookup(u32(ip, 12));
  if (nh < 0) return { verdict: "UNKNOWN_SOURCE" };
  const hop = check.nextHop(nh);
  if (!hop?.valid || hop.ip !== check.from) return { verdict: "SPOOFED" };
  return { verdict: null, peer: nh };
}

const u16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const u32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

/** IPv4 header structure and (optionally) checksum; null when fine. */
function ipv4Problem(ip: Uint8Array, verifyChecksum: boolean): string | null {
  if (ip.length < 20) return "TOO_SHORT";
  if (ip[0] >> 4 !== 4) return "IP_VERSION";
  const ihl = (ip[0] & 15) * 4;
  if (ihl < 20) return "IPV4_IHL";
  const total = u16(ip, 2);
  if (ihl > ip.length || total < ihl || total > ip.length) return "IP_LENGTH";
  if (verifyChecksum && internetChecksum(ip.subarray(0, ihl)) !== 0) return "IPV4_CHECKSUM";
  return null;
}

/** flannel's TTL step: drop at TTL <= 1, else decrement and update the checksum by RFC 1624 eqn. 3. */
function decrementTtl(ip: Uint8Array): string | null {
  if (ip[8] <= 1) return "TTL_EXHAUSTED";
  const m = u16(ip, 8);
  ip[8] -= 1;
  const m2 = u16(ip, 8);
  let sum = (~u16(ip, 10) & 0xffff) + (~m & 0xffff) + m2;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const hc = ~sum & 0xffff;
  ip[10] = hc >> 8;
  ip[11] = hc & 255;
  return null;
}

/** Multicast (224/4), class E (240/4) and the broadcast address: no single host. */
const noSingleHost = (a: number) => a >= 0xe0000000;

function mayTriggerIcmpError(ip: Uint8Array): boolean {
  if ((u16(ip, 6) & 0x1fff) !== 0) return false;
  if (noSingleHost(u32(ip, 16)) || noSingleHost(u32(ip, 12)) || u32(ip, 12) === 0) return false;
  if (ip[9] !== 1) return true;
  const ihl = (ip[0] & 15) * 4;
  if (ip.length <= ihl) return false;
  return [0, 8, 13, 14, 17, 18].includes(ip[ihl]);
}

function netUnreachable(ip: Uint8Array): Uint8Array {
  const ihl = (ip[0] & 15) * 4;
  const quoted = ip.subarray(0, Math.min(ihl + 8, ip.length));
  const out = new Uint8Array(28 + quoted.length);
  const total = out.length;
  out.set([0x45, 0, total >> 8, total & 255, 0, 0, 0, 0, 64, 1, 0, 0]);
  out.set(ip.subarray(16, 20), 12); // from the offender's destination: the TUN device's own address would be a martian
  out.set(ip.subarray(12, 16), 16);
  const c = internetChecksum(out.subarray(0, 20));
  out[10] = c >> 8;
  out[11] = c & 255;
  out[20] = 3; // destination unreachable, code 0 (net)
  out.set(quoted, 28);
  const ic = internetChecksum(out.subarray(20));
  out[22] = ic >> 8;
  out[23] = ic & 255;
  return out;
}

/** A packet read from the TUN device, on its way to a peer: "vxlan" or flannel's "udp" format. */
export function refSend(packet: Uint8Array, ctx: SendContext, format: "vxlan" | "udp"): SendResult {
  const ip = packet.slice();
  if (ip.length < 1) return { verdict: "TOO_SHORT" };
  if (ip[0] >> 4 === 6) return { verdict: "IPV6_UNROUTED" };
  const problem = ipv4Problem(ip, false);
  if (problem) return { verdict: problem };
  const nh = ctx.lookup(u32(ip, 16));
  if (nh < 0) {
    if (!mayTriggerIcmpError(ip)) return { verdict: "NO_ROUTE" };
    return { verdict: "REPLY", out: netUnreachable(ip) };
  }
  const hop = ctx.nextHop(nh);
  if (!hop?.valid) return { verdict: "NO_NEXT_HOP" };
  if (format === "udp") {
    const ttl = decrementTtl(ip);
    if (ttl) return { verdict: ttl };
    return { verdict: "FORWARD", out: ip, addr: hop.ip, port: hop.port };
  }
  return { verdict: "FORWARD", out: buildVxlan(ctx.vni, hop.mac, ctx.mac, 0x0800, ip), addr: hop.ip, port: hop.port };
}

/** A VXLAN payload received from a peer. */
export function refVxlanReceive(payload: Uint8Array, vni: number, mac: Uint8Array, check?: SourceCheck): ReceiveResult {
  const r = vxlanValidate(payload, vni, mac);
  if (r.verdict !== "FORWARD") return r;
  const src = checkSource(r.out!, check);
  return src.verdict ? { verdict: src.verdict } : { ...r, peer: src.peer };
}

function vxlanValidate(payload: Uint8Array, vni: number, mac: Uint8Array): ReceiveResult {
  if (payload.length < 22) return { verdict: "TOO_SHORT" };
  if ((payload[0] & 0x08) === 0) return { verdict: "VXLAN_FLAGS" };
  if (((payload[4] << 16) | (payload[5] << 8) | payload[6]) !== vni) return { verdict: "VXLAN_VNI" };
  const dst = payload.subarray(8, 14);
  const ethertype = u16(payload, 20);
  if (!dst.every((b, i) => b === mac[i])) {
    const broadcast = dst.every((b) => b === 0xff);
    return { verdict: broadcast && ethertype === 0x0806 ? "ARP_BROADCAST" : "NOT_OUR_MAC" };
  }
  const ip = payload.subarray(22);
  if (ethertype === 0x0800) {
    const problem = ipv4Problem(ip, true);
    if (problem) return { verdict: problem };
    if (ip[8] === 0) return { verdict: "TTL_EXHAUSTED" };
    return { verdict: "FORWARD", out: ip.slice(0, u16(ip, 2)) };
  }
  if (ethertype === 0x86dd) {
    if (ip.length < 40) return { verdict: "TOO_SHORT" };
    if (ip[0] >> 4 !== 6) return { verdict: "IP_VERSION" };
    if (40 + u16(ip, 4) > ip.length) return { verdict: "IP_LENGTH" };
    if (ip[7] === 0) return { verdict: "TTL_EXHAUSTED" };
    return { verdict: "FORWARD", out: ip.slice(0, 40 + u16(ip, 4)) };
  }
  return { verdict: "ETHERTYPE" };
}

/** A flannel udp payload (a bare IPv4 packet) received from a peer. */
export function refUdpReceive(payload: Uint8Array, check?: SourceCheck): ReceiveResult {
  const ip = payload.slice();
  const problem = ipv4Problem(ip, true);
  if (problem) return { verdict: problem };
  const out = ip.slice(0, u16(ip, 2));
  const src = checkSource(out, check);
  if (src.verdict) return { verdict: src.verdict };
  const ttl = decrementTtl(out);
  if (ttl) return { verdict: ttl };
  return { verdict: "FORWARD", out, peer: src.peer };
}
