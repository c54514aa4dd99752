// Peers a backend cannot exchange packets with, and reporting them. A peer is unreachable when
// its announcement does not match this node's wire format (kernel vxlan and wasm-vxlan share one;
// VNI and GBP must agree), when its lease makes no sense here (outside the pod network, or
// overlapping this node's subnet or another peer's), when kernel vxlan would give it the FDB entry
// of another node's VTEP MAC, or when the backend finds it cannot get
// there (host-gw: not on the same L2 network), or when IPv6 rides the IPv4 underlay at one end
// and an IPv6 underlay at the other (a node without an IPv6 underlay address; wasm-vxlan only).
// Every such peer is logged as an error when it
// becomes unreachable and counted while it stays so — never a route into nothing.
import type { Logger } from "pino";
import { parseMac } from "../net/ipv4.js";
import {
  contains as prefixContains,
  formatAddr as formatIpv4,
  formatAnyPrefix as formatPrefix,
  overlaps as prefixesOverlap,
  type IpPrefix,
} from "../net/ip.js";
import { isIpv4Mapped } from "../net/ipv6.js";
import {
  DEFAULT_VNI,
  type BackendAnnouncement,
  type BackendContext,
  type BackendPeer,
  type BackendType,
} from "./backend.js";

/** Backends that put the same bytes on the wire. */
const WIRE_FORMAT: Record<BackendType, string> = {
  vxlan: "vxlan",
  "wasm-vxlan": "vxlan",
  udp: "udp",
  "host-gw": "plain routing",
};

/** Why `peer` cannot be reached by a node announcing `own` with lease `subnet` in `network` over `underlay`; undefined when it can. */
export function announcementProblem(
  own: BackendAnnouncement,
  { network, subnet, underlay }: Pick<BackendContext, "network" | "subnet" | "underlay">,
  peer: BackendPeer,
): string | undefined {
  const theirs = peer.backend;
  if (!prefixContains(network, peer.subnet.addr) || peer.subnet.len < network.len) {
    return `its subnet ${formatPrefix(peer.subnet)} is outside the pod network ${formatPrefix(network)}; check that both nodes use the same net-conf.json`;
  }
  if (prefixesOverlap(peer.subnet, subnet)) {
    return `its subnet ${formatPrefix(peer.subnet)} overlaps this node's ${formatPrefix(subnet)}; one of the two leases is stale, reclaim it`;
  }
  // An IPv6 peer announces an IPv4-mapped underlay when it has no IPv6 underlay address.
  if (typeof peer.underlay === "bigint" && isIpv4Mapped(peer.underlay) !== (underlay.addr6 === undefined)) {
    return underlay.addr6 === undefined
      ? "it carries IPv6 over an IPv6 underlay, and this node, which has no IPv6 underlay address, over its IPv4 one; give this node an IPv6 underlay address (--public-ipv6), or use no IPv6 underlay anywhere"
      : "it has no IPv6 underlay address and carries IPv6 over its IPv4 underlay (wasm-vxlan only), which this node's IPv6 sockets cannot reach; give it an IPv6 underlay address (--public-ipv6)";
  }
  if (WIRE_FORMAT[theirs.type] !== WIRE_FORMAT[own.type]) {
    return `it runs backend ${theirs.type}, which does not speak ${own.type}'s wire format (${WIRE_FORMAT[own.type]}); use the same backend type everywhere (vxlan and wasm-vxlan mix)`;
  }
  if (WIRE_FORMAT[own.type] === "vxlan") {
    if ((theirs.vni ?? DEFAULT_VNI) !== (own.vni ?? DEFAULT_VNI))
      return `it uses VNI ${theirs.vni ?? DEFAULT_VNI}, this node ${own.vni ?? DEFAULT_VNI}; set the same VNI everywhere`;
    if ((theirs.gbp ?? false) !== (own.gbp ?? false))
      return `GBP is ${theirs.gbp ? "on" : "off"} there and ${own.gbp ? "on" : "off"} here; set GBP the same everywhere`;
    if (!theirs.vtepMac) return "it announced no VTEP MAC";
    try {
      parseMac(theirs.vtepMac);
    } catch {
      return `its VTEP MAC "${theirs.vtepMac}" is not a MAC address`;
    }
  }
  return undefined;
}

/** Why `peer` cannot be used next to `others` (already accepted peers); undefined when it can. */
export function overlapProblem(
  peer: BackendPeer,
  others: Iterable<{ name: string; subnet: IpPrefix }>,
): string | undefined {
  for (const o of others) {
    if (o.name !== peer.name && prefixesOverlap(o.subnet, peer.subnet)) {
      return `its subnet ${formatPrefix(peer.subnet)} overlaps ${o.name}'s ${formatPrefix(o.subnet)}; one of the two leases is stale, reclaim it`;
    }
  }
  return undefined;
}

/**
 * Why `peer` cannot get a kernel FDB entry next to this node's device and the `others` already
 * accepted: an FDB entry is found by MAC, so a second node with the same VTEP MAC (a state dir
 * copied with a VM image or a backup) would take the first one's traffic, and each reconcile
 * would swap them back and forth. Undefined when it can.
 */
export function vtepMacProblem(
  own: BackendAnnouncement,
  peer: BackendPeer,
  others: Iterable<BackendPeer>,
): string | undefined {
  const mac = peer.backend.vtepMac?.toLowerCase();
  if (!mac) return undefined;
  const fix = "delete vtep-mac (vtep-mac-ipv6) from one of the two nodes' state dirs and restart it";
  if (mac === own.vtepMac?.toLowerCase()) return `its VTEP MAC ${mac} is this node's own; ${fix}`;
  for (const o of others)
    if (o.name !== peer.name && o.backend.vtepMac?.toLowerCase() === mac)
      return `its VTEP MAC ${mac} is also ${o.name}'s; ${fix}`;
  return undefined;
}

/** The current verdicts: logs each change, counts the peers that cannot be reached. */
export class UnreachablePeers {
  private readonly reasons = new Map<string, string>();

  constructor(private readonly logger: Logger) {}

  /** Records whether `peer` can be reached (`reason` undefined) and logs when that changed. */
  note(peer: BackendPeer, reason: string | undefined): void {
    const before = this.reasons.get(peer.name);
    if (reason === before) return;
    const where = {
      peer: peer.name,
      subnet: formatPrefix(peer.subnet),
      underlay: formatIpv4(peer.underlay),
      backend: peer.backend.type,
    };
    if (reason === undefined) {
      this.reasons.delete(peer.name);
      this.logger.info(where, "peer reachable again");
    } else {
      this.reasons.set(peer.name, reason);
      this.logger.error({ ...where, reason }, `cannot reach peer ${peer.name}: ${reason}`);
    }
  }

  forget(name: string): void {
    this.reasons.delete(name);
  }

  get count(): number {
    return this.reasons.size;
  }
}
