// IPv6 addresses and prefixes as the control plane and the kernel backends pass them around:
// addresses as unsigned 128-bit bigints, the first byte most significant. Text is written the way
// Go's net.IP writes it (RFC 5952 with Go's one quirk, below), since flannel writes subnet.env and
// its logs through Go and weft's files must match flannel's byte for byte.
import { isIPv6 } from "node:net";
import { WeftError } from "../errors.js";

export interface Ipv6Prefix {
  /** Network address (host bits zero). */
  readonly addr: bigint;
  readonly len: number;
}

const ALL_ONES = (1n << 128n) - 1n;

export function parseIpv6(text: string): bigint {
  const fail = (): WeftError =>
    new WeftError(
      "NET_BAD_IPV6",
      `"${text}" is not an IPv6 address (expected eight hex groups, :: for a run of zeros, like 2001:2::1)`,
    );
  let s = text;
  // An embedded IPv4 address in the last 32 bits (::ffff:198.18.0.1) becomes two hex groups.
  const dotted = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (dotted) {
    const o = dotted.slice(2).map(Number);
    if (o.some((x) => x > 255)) throw fail();
    s = `${dotted[1]}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) throw fail();
  const groups = (part: string): number[] =>
    part === ""
      ? []
      : part.split(":").map((g) => {
          if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw fail();
          return parseInt(g, 16);
        });
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  if (halves.length === 2 ? head.length + rest.length > 7 : head.length !== 8) throw fail();
  const all = [...head, ...Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  return all.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/**
 * Formats as Go's net.IP.String(): lowercase hex without leading zeros, the longest run of two or
 * more zero groups (the first of equal runs) as "::", and an IPv4-mapped address (::ffff:0:0/96)
 * as plain dotted IPv4, which is what flannel would write for one.
 */
/** The IPv4-mapped IPv6 address of an IPv4 address (::ffff:a.b.c.d): an IPv4 underlay where IPv6 addresses are expected. */
export const ipv4Mapped = (addr: number): bigint => 0xffff_0000_0000n | BigInt(addr >>> 0);

export const isIpv4Mapped = (addr: bigint): boolean => addr >> 32n === 0xffffn;

export function formatIpv6(addr: bigint): string {
  if (isIpv4Mapped(addr)) {
    const v4 = Number(addr & 0xffffffffn);
    return [v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255].join(".");
  }
  const g = Array.from({ length: 8 }, (_, i) => Number((addr >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (from: number, to: number) =>
    g
      .slice(from, to)
      .map((x) => x.toString(16))
      .join(":");
  return best < 0 ? hex(0, 8) : `${hex(0, best)}::${hex(best + bestLen, 8)}`;
}

/** Netmask of a prefix length as a 128-bit number. */
export function prefixMask6(len: number): bigint {
  return len === 0 ? 0n : (ALL_ONES << BigInt(128 - len)) & ALL_ONES;
}

/** Parses "2001:2:0:8000::/64". Host bits must be zero, as `ip -6 route` insists. */
export function parsePrefix6(text: string): Ipv6Prefix {
  const { addr, len } = parseAddressAndLength6(text);
  if ((addr & ~prefixMask6(len) & ALL_ONES) !== 0n) {
    throw new WeftError(
      "NET_BAD_PREFIX",
      `"${text}" has host bits set; did you mean ${formatPrefix6({ addr: addr & prefixMask6(len), len })}?`,
    );
  }
  return { addr, len };
}

/** Parses a CIDR as Go's net.ParseCIDR does (flannel's IPv6Network): host bits are cleared. */
export function parseMaskedPrefix6(text: string): Ipv6Prefix {
  const { addr, len } = parseAddressAndLength6(text);
  return { addr: addr & prefixMask6(len), len };
}

function parseAddressAndLength6(text: string): { addr: bigint; len: number } {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m || Number(m[2]) > 128) {
    throw new WeftError(
      "NET_BAD_PREFIX",
      `"${text}" is not an IPv6 prefix (expected address/length, like 2001:2:0:8000::/49)`,
    );
  }
  return { addr: parseIpv6(m[1]), len: Number(m[2]) };
}

export function formatPrefix6(p: Ipv6Prefix): string {
  return `${formatIpv6(p.addr)}/${p.len}`;
}

export function prefixContains6(p: Ipv6Prefix, addr: bigint): boolean {
  return (addr & prefixMask6(p.len)) === p.addr;
}

export function prefixesOverlap6(a: Ipv6Prefix, b: Ipv6Prefix): boolean {
  const mask = prefixMask6(Math.min(a.len, b.len));
  return (a.addr & mask) === (b.addr & mask);
}

export function isIpv6Text(text: string): boolean {
  return text.includes(":");
}

/** Writes the address as 16 bytes in network order at bytes[at..at+16). */
export function writeIpv6(bytes: Uint8Array, at: number, addr: bigint): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, 16);
  view.setBigUint64(0, addr >> 64n);
  view.setBigUint64(8, addr & 0xffff_ffff_ffff_ffffn);
}

/** Reads 16 bytes in network order at bytes[at..at+16) as an address. */
export function readIpv6(bytes: Uint8Array, at: number): bigint {
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, 16);
  return (view.getBigUint64(0) << 64n) | view.getBigUint64(8);
}

/** Whom a connection's source address stands for when connections are capped per source: an IPv6
 *  address's /64 (one host can hold any number of its addresses), an IPv4 address itself, an
 *  IPv4-mapped one (a dual-stack socket's IPv4 client) as that IPv4 address, anything unparsable as is. */
export function sourceGroup(source: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(source);
  if (mapped) return mapped[1];
  if (!isIPv6(source)) return source;
  try {
    return `${(parseIpv6(source.split("%")[0]) >> 64n).toString(16)}/64`;
  } catch {
    return source;
  }
}
