// IPv4 addresses, prefixes and MAC addresses as the rest of weft passes them around: addresses
// as unsigned 32-bit numbers with the first octet most significant (the hot path's format).
import { WeftError } from "../errors.js";

export interface Ipv4Prefix {
  /** Network address (host bits zero). */
  readonly addr: number;
  readonly len: number;
}

export function parseIpv4(text: string): number {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new WeftError(
      "NET_BAD_IPV4",
      `"${text}" is not an IPv4 address (expected four numbers 0-255, like 198.18.0.1)`,
    );
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4(addr: number): string {
  return [addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, addr & 255].join(".");
}

/** Netmask of a prefix length as a number (len 0 gives 0). */
export function prefixMask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** Parses "198.19.1.0/24". Host bits must be zero, as `ip route` insists. */
export function parsePrefix(text: string): Ipv4Prefix {
  const { addr, len } = parseAddressAndLength(text);
  if ((addr & ~prefixMask(len)) !== 0) {
    throw new WeftError(
      "NET_BAD_PREFIX",
      `"${text}" has host bits set; did you mean ${formatPrefix({ addr: (addr & prefixMask(len)) >>> 0, len })}?`,
    );
  }
  return { addr, len };
}

/** Parses a CIDR as Go's net.ParseCIDR does (flannel's Network): host bits are cleared, so 10.244.1.0/16 is 10.244.0.0/16. */
export function parseMaskedPrefix(text: string): Ipv4Prefix {
  const { addr, len } = parseAddressAndLength(text);
  return { addr: (addr & prefixMask(len)) >>> 0, len };
}

function parseAddressAndLength(text: string): { addr: number; len: number } {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (!m || Number(m[2]) > 32) {
    throw new WeftError(
      "NET_BAD_PREFIX",
      `"${text}" is not an IPv4 prefix (expected address/length, like 198.19.1.0/24)`,
    );
  }
  return { addr: parseIpv4(m[1]), len: Number(m[2]) };
}

export function formatPrefix(p: Ipv4Prefix): string {
  return `${formatIpv4(p.addr)}/${p.len}`;
}

export function prefixContains(p: Ipv4Prefix, addr: number): boolean {
  return (addr & prefixMask(p.len)) >>> 0 === p.addr;
}

export function prefixesOverlap(a: Ipv4Prefix, b: Ipv4Prefix): boolean {
  const mask = prefixMask(Math.min(a.len, b.len));
  return (a.addr & mask) >>> 0 === (b.addr & mask) >>> 0;
}

/** Parses "aa:bb:cc:dd:ee:ff" into 6 bytes. */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new WeftError(
      "NET_BAD_MAC",
      `"${text}" is not a MAC address (expected six hex pairs, like 0a:58:c6:13:01:00)`,
    );
  }
  return Uint8Array.from(parts, (p) => parseInt(p, 16));
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** A MAC as the hot path takes it: its first 2 bytes and its last 4 bytes, as numbers. */
export function macHalves(mac: Uint8Array): [hi16: number, lo32: number] {
  return [(mac[0] << 8) | mac[1], ((mac[2] << 24) | (mac[3] << 16) | (mac[4] << 8) | mac[5]) >>> 0];
}
