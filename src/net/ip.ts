// Addresses and prefixes of either family where code is the same for both (kernel entries, the
// kernel backends, peers): an IPv4 address is a number (src/net/ipv4.ts), an IPv6 address a
// bigint (src/net/ipv6.ts), so the type itself says the family.
import { WeftError } from "../errors.js";
import {
  formatIpv4,
  formatPrefix,
  parseIpv4,
  parsePrefix,
  prefixContains,
  prefixesOverlap,
  type Ipv4Prefix,
} from "./ipv4.js";
import {
  formatIpv6,
  formatPrefix6,
  isIpv4Mapped,
  isIpv6Text,
  parseIpv6,
  parsePrefix6,
  prefixContains6,
  prefixesOverlap6,
  type Ipv6Prefix,
} from "./ipv6.js";

export type IpAddr = number | bigint;
export type IpPrefix = Ipv4Prefix | Ipv6Prefix;

export const familyOf = (a: IpAddr): 4 | 6 => (typeof a === "bigint" ? 6 : 4);

export function formatAddr(a: IpAddr): string {
  return typeof a === "bigint" ? formatIpv6(a) : formatIpv4(a);
}

export function formatAnyPrefix(p: IpPrefix): string {
  return typeof p.addr === "bigint" ? formatPrefix6(p as Ipv6Prefix) : formatPrefix(p as Ipv4Prefix);
}

export function parseAddr(text: string): IpAddr {
  return isIpv6Text(text) ? parseIpv6(text) : parseIpv4(text);
}

export function parseAnyPrefix(text: string): IpPrefix {
  return isIpv6Text(text) ? parsePrefix6(text) : parsePrefix(text);
}

/** Whether two prefixes overlap; prefixes of different families never do. */
export function overlaps(a: IpPrefix, b: IpPrefix): boolean {
  if (typeof a.addr !== typeof b.addr) return false;
  return typeof a.addr === "bigint"
    ? prefixesOverlap6(a as Ipv6Prefix, b as Ipv6Prefix)
    : prefixesOverlap(a as Ipv4Prefix, b as Ipv4Prefix);
}

export function contains(p: IpPrefix, a: IpAddr): boolean {
  if (typeof p.addr !== typeof a) return false;
  return typeof a === "bigint" ? prefixContains6(p as Ipv6Prefix, a) : prefixContains(p as Ipv4Prefix, a);
}

const NOT_GLOBAL_UNICAST = [
  ...["0.0.0.0/32", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32"],
  ...["::/128", "::1/128", "fe80::/10", "ff00::/8"],
].map(parseAnyPrefix);

/**
 * Go's net.IP.IsGlobalUnicast, by which the CNI plugins pick an interface's addresses (the kernel's
 * scope differs: an IPv4 link-local address is scope global unless given another). An IPv4-mapped
 * IPv6 address is judged as its IPv4 one, as Go does.
 */
export function isGlobalUnicast(a: IpAddr): boolean {
  const addr = typeof a === "bigint" && isIpv4Mapped(a) ? Number(a & 0xffff_ffffn) : a;
  return !NOT_GLOBAL_UNICAST.some((p) => contains(p, addr));
}

/** The longest node subnet of each family, as flannel caps it: each host needs room for a gateway and pods. */
export const MAX_SUBNET_LEN = { 4: 30, 6: 126 } as const;

/** A host prefix (/32 or /128) of an address. */
export function hostPrefix(a: IpAddr): IpPrefix {
  return typeof a === "bigint" ? { addr: a, len: 128 } : { addr: a, len: 32 };
}

/** The IPv4 prefix of code that carries IPv4 only (the userspace dataplane). */
export function v4Prefix(p: IpPrefix): Ipv4Prefix {
  if (typeof p.addr === "bigint")
    throw new WeftError("NET_BAD_IPV4", `${formatAnyPrefix(p)} is IPv6 where only IPv4 is carried`);
  return p as Ipv4Prefix;
}

export function v4Addr(a: IpAddr): number {
  if (typeof a === "bigint") throw new WeftError("NET_BAD_IPV4", `${formatAddr(a)} is IPv6 where only IPv4 is carried`);
  return a;
}

/** host:port, with an IPv6 host in brackets as in URLs ([2001:2::1]:7946). */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The host of formatHostPort's text ("[2001:2::1]:7946" -> "2001:2::1", "198.18.0.1:7946" -> "198.18.0.1"). */
export function hostOfHostPort(text: string): string {
  if (text.startsWith("[")) return text.slice(1, text.indexOf("]"));
  const colon = text.lastIndexOf(":");
  return colon < 0 ? text : text.slice(0, colon);
}
