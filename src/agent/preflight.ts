// Checks that protect the host, run before anything is leased, bound for long or touched in the
// kernel: flag values and their limits, ports that collide with each other or with another
// process, addresses that are not on this host, join targets of the family gossip does not run
// over, and a Network or IPv6Network that overlaps the host's own addresses or routes of its
// family (such a network would take the host's underlay route and cut it off).
// Every error names the flag or net-conf key, the value and what is allowed.
import { createSocket } from "node:dgram";
import { createServer, isIP } from "node:net";
import type { Underlay } from "../backends/backend.js";
import { backendOptions, overlayDevice } from "../backends/index.js";
import type { NetConf } from "../config/net-conf.js";
import { WeftError } from "../errors.js";
import type { Kernel } from "../kernel/iproute.js";
import {
  formatAddr,
  formatAnyPrefix,
  formatHostPort,
  hostPrefix,
  isGlobalUnicast,
  overlaps,
  type IpAddr,
  type IpPrefix,
} from "../net/ip.js";
import { parseIpv4, prefixMask } from "../net/ipv4.js";
import { isIpv4Mapped, isIpv6Text, parseIpv6, prefixMask6 } from "../net/ipv6.js";
import { gossipHost, ifaceRegExp } from "./underlay.js";
import { WEFT_DEVICE } from "../kernel/pod-addresses.js";
import { overlayDevices } from "../kernel/stale-devices.js";

/** Below this, reconcile passes (each lists the kernel's routes and neighbours) would keep a core busy. */
export const MIN_RECONCILE_INTERVAL_MS = 1000;
/** Node names travel in gossip records (memberlist's limit, in UTF-8 bytes). */
export const MAX_NODE_NAME_BYTES = 128;
/** The longest timer Node keeps (a longer one fires at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** 1..MAX_NODE_NAME_BYTES bytes without spaces or control characters. */
function validNodeName(name: string): boolean {
  const bytes = Buffer.byteLength(name, "utf8");
  return bytes > 0 && bytes <= MAX_NODE_NAME_BYTES && !/[\s\p{Cc}]/u.test(name);
}

export interface FlagValues {
  iface?: string[];
  ifaceRegex?: string[];
  publicIp?: string;
  publicIpv6?: string;
  healthzIp: string;
  healthzPort?: number;
  metricsIp: string;
  metricsPort?: number;
  gossipPort: number;
  join: ReadonlyArray<{ host: string; port: number }>;
  seeds?: string[];
  nodeName: string;
  reconcileIntervalMs: number;
}

const flagError = (flag: string, value: unknown, allowed: string): WeftError =>
  new WeftError("CONFIG_FLAG_INVALID", `${flag} ${JSON.stringify(value)}: ${allowed}`);

/** The flags alone, before any file or the kernel is read. */
export function checkFlags(f: FlagValues): void {
  for (const [flag, port] of [
    ["--gossip-port", f.gossipPort],
    ["--healthz-port", f.healthzPort],
    ["--metrics-port", f.metricsPort],
  ] as const) {
    if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535))
      throw flagError(flag, port, "a port is a whole number in 1..65535");
  }
  for (const j of f.join) {
    if (!(Number.isInteger(j.port) && j.port >= 1 && j.port <= 65535))
      throw flagError("--join", `${j.host}:${j.port}`, "each address is host:port with a port in 1..65535");
  }
  // A timer longer than 2^31 - 1 ms fires at once in Node, so a huge interval meant as "never"
  // would reconcile every millisecond.
  if (!(f.reconcileIntervalMs >= MIN_RECONCILE_INTERVAL_MS && f.reconcileIntervalMs <= MAX_TIMER_MS)) {
    throw flagError(
      "--reconcile-interval",
      f.reconcileIntervalMs / 1000,
      `${MIN_RECONCILE_INTERVAL_MS / 1000} to ${Math.floor(MAX_TIMER_MS / 1000)} seconds (each pass lists the kernel's routes and neighbours)`,
    );
  }
  if (!validNodeName(f.nodeName)) {
    throw flagError(
      "--node-name",
      f.nodeName,
      `1..${MAX_NODE_NAME_BYTES} bytes without spaces or control characters, the same on every restart`,
    );
  }
  if (f.join.length > 0 && f.seeds === undefined) {
    throw new WeftError(
      "CONFIG_FLAG_INVALID",
      `--join ${f.join.map((j) => `${j.host}:${j.port}`).join(",")} needs --subnet-seeds: the initial owners of the subnet space, the same list on every node (e.g. --subnet-seeds node-a,node-b)`,
    );
  }
  // A seed no node can be named never comes up, and its share of the subnets stays unused: the
  // seed list can never change afterwards.
  if (f.seeds !== undefined && (f.seeds.length === 0 || !f.seeds.every(validNodeName)))
    throw flagError(
      "--subnet-seeds",
      f.seeds.join(","),
      "a comma-separated list of node names (as --node-name takes them: no spaces), at least one",
    );
  if (f.publicIp !== undefined && !isGlobalUnicast(parseFlagIpv4("--public-ip", f.publicIp)))
    throw flagError(
      "--public-ip",
      f.publicIp,
      "a global unicast IPv4 address of this host, like 198.18.0.1 (peers cannot send to an unspecified, loopback, link-local, multicast or broadcast one)",
    );
  // Either family: an IPv6-only host's kubelet probes its IPv6 address ("::" takes both where the host has IPv6).
  for (const [flag, ip] of [
    ["--healthz-ip", f.healthzIp],
    ["--metrics-ip", f.metricsIp],
  ] as const) {
    if (ip !== undefined && !isIP(ip))
      throw flagError(flag, ip, "an address of this host, IPv4 or IPv6, like 198.18.0.1, 0.0.0.0 or ::");
  }
  if (f.publicIpv6 !== undefined) {
    let addr: bigint;
    try {
      addr = parseIpv6(f.publicIpv6);
    } catch {
      throw flagError("--public-ipv6", f.publicIpv6, "an IPv6 address of this host, like 2001:2::1");
    }
    // Checked before isGlobalUnicast, which judges a mapped address as its IPv4 one.
    if (isIpv4Mapped(addr))
      throw flagError(
        "--public-ipv6",
        f.publicIpv6,
        `an IPv4-mapped address, which is IPv4 on the wire: give it as --public-ip ${formatAddr(Number(addr & 0xffff_ffffn))}, or give a global unicast IPv6 address of this host`,
      );
    if (!isGlobalUnicast(addr))
      throw flagError(
        "--public-ipv6",
        f.publicIpv6,
        "a global unicast IPv6 address of this host, like 2001:2::1 (peers cannot send to an unspecified, loopback, link-local or multicast one)",
      );
  }
  for (const re of f.ifaceRegex ?? []) {
    try {
      ifaceRegExp(re);
    } catch (e) {
      throw flagError(
        "--iface-regex",
        re,
        `a JavaScript regular expression over interface names and addresses, or one led by Go's (?i) (${(e as Error).message})`,
      );
    }
  }
}

function parseFlagIpv4(flag: string, text: string): number {
  try {
    return parseIpv4(text);
  } catch {
    throw flagError(flag, text, "an IPv4 address of this host, like 198.18.0.1");
  }
}

/** One port weft will bind, and who asked for it. */
interface PortUse {
  readonly what: string;
  readonly port: number;
  readonly udp: boolean;
  readonly tcp: boolean;
  /** Address bound; 0.0.0.0 collides with every address. */
  readonly host: string;
  /** The flag that sets the address, for an address that is not on this host. */
  readonly hostFlag?: string;
  /** False for the kernel vxlan device's own socket, which the kernel may already hold from a kept device. */
  readonly probe: boolean;
}

/** The wildcard addresses, which collide with every address of their family (:: with both, as Node binds it). */
const ANY = ["0.0.0.0", "::"];

/** `heldByOverlay(port)`: a kernel VXLAN device weft reuses or removes holds it (not probed). */
function portUses(
  f: FlagValues,
  conf: NetConf,
  underlay: Underlay,
  heldByOverlay: (port: number) => boolean,
): PortUse[] {
  const gossip = gossipHost(underlay);
  // Where no flag named the interface, weft chose the address: no flag to blame.
  const ifaceFlag = f.iface?.length ? "--iface" : f.ifaceRegex?.length ? "--iface-regex" : "the underlay address";
  const addrFlag =
    underlay.addr !== undefined ? (f.publicIp ? "--public-ip" : ifaceFlag) : f.publicIpv6 ? "--public-ipv6" : ifaceFlag;
  const uses: PortUse[] = [
    { what: "--gossip-port", port: f.gossipPort, udp: true, tcp: true, host: gossip, hostFlag: addrFlag, probe: true },
  ];
  if (f.healthzPort !== undefined)
    uses.push({
      what: "--healthz-port",
      port: f.healthzPort,
      udp: false,
      tcp: true,
      host: f.healthzIp,
      hostFlag: "--healthz-ip",
      probe: true,
    });
  if (f.metricsPort !== undefined)
    uses.push({
      what: "--metrics-port",
      port: f.metricsPort,
      udp: false,
      tcp: true,
      host: f.metricsIp,
      hostFlag: "--metrics-ip",
      probe: true,
    });
  const b = conf.Backend;
  // The kernel's vxlan sockets listen on the wildcard of their family (both with dual-stack).
  if (b.Type === "vxlan")
    uses.push({
      what: "Backend.Port (net-conf.json)",
      port: b.Port,
      udp: true,
      tcp: false,
      host: conf.space ? "0.0.0.0" : "::",
      probe: !heldByOverlay(b.Port),
    });
  // The userspace dataplanes bind the underlay address of their family: IPv4's holds Port; IPv6's
  // holds Port on the IPv6 underlay address, or IPv6OverIPv4Port on the IPv4 one where it has none.
  const ipv4Flag = f.publicIp ? "--public-ip" : ifaceFlag;
  if ((b.Type === "wasm-vxlan" || b.Type === "udp") && conf.space)
    uses.push({
      what: "Backend.Port (net-conf.json)",
      port: b.Port,
      udp: true,
      tcp: false,
      host: formatAddr(underlay.addr!),
      hostFlag: ipv4Flag,
      probe: !heldByOverlay(b.Port),
    });
  if (b.Type === "wasm-vxlan" && conf.space6) {
    uses.push(
      underlay.addr6 !== undefined
        ? {
            what: "Backend.Port (net-conf.json)",
            port: b.Port,
            udp: true,
            tcp: false,
            host: formatAddr(underlay.addr6),
            hostFlag: f.publicIpv6 ? "--public-ipv6" : ifaceFlag,
            probe: !heldByOverlay(b.Port),
          }
        : {
            what: "Backend.IPv6OverIPv4Port (net-conf.json; the IPv6 dataplane over the IPv4 underlay)",
            // Undefined only where the schema refused Port 65535 already.
            port: b.IPv6OverIPv4Port!,
            udp: true,
            tcp: false,
            host: formatAddr(underlay.addr!),
            hostFlag: ipv4Flag,
            probe: true,
          },
    );
  }
  return uses;
}

/** Ports set twice: two users of one protocol on one port and overlapping addresses. */
function checkPortConflicts(uses: readonly PortUse[]): void {
  for (let i = 0; i < uses.length; i++) {
    for (let j = i + 1; j < uses.length; j++) {
      const a = uses[i];
      const b = uses[j];
      const proto = a.udp && b.udp ? "UDP" : a.tcp && b.tcp ? "TCP" : undefined;
      const sameHost = a.host === b.host || ANY.includes(a.host) || ANY.includes(b.host);
      if (a.port === b.port && proto && sameHost) {
        throw new WeftError(
          "CONFIG_PORT_CONFLICT",
          `${a.what} ${a.port} and ${b.what} ${b.port} both need ${proto} port ${a.port}: give each its own port`,
        );
      }
    }
  }
}

/** Binds and releases each port at once, so a port held by another process is found before the lease, not 10 s after it. */
async function checkPortsFree(uses: readonly PortUse[]): Promise<void> {
  for (const u of uses.filter((x) => x.probe)) {
    const protos = [...(u.udp ? (["udp"] as const) : []), ...(u.tcp ? (["tcp"] as const) : [])];
    for (const proto of protos) {
      const err = await (proto === "udp" ? probeUdp(u.host, u.port) : probeTcp(u.host, u.port));
      if (!err) continue;
      if (err.code === "EADDRNOTAVAIL") {
        throw new WeftError(
          "CONFIG_ADDRESS_NOT_LOCAL",
          `${u.hostFlag ?? u.what} ${u.host}: not an address of this host (in its network namespace), so ${u.what} cannot be bound there; use one of the host's own addresses (ip ${isIpv6Text(u.host) ? "-6" : "-4"} addr)`,
        );
      }
      if (err.code === "EADDRINUSE") {
        throw new WeftError(
          "CONFIG_PORT_IN_USE",
          `${u.what} ${u.port}: ${proto.toUpperCase()} ${u.host}:${u.port} is already in use by another process (see \`ss -${proto === "udp" ? "u" : "t"}lnp 'sport = :${u.port}'\`); stop it, or set ${u.what} to a free port`,
        );
      }
      throw new WeftError(
        "CONFIG_PORT_IN_USE",
        `${u.what} ${u.port}: cannot bind ${proto.toUpperCase()} ${u.host}:${u.port} (${err.message}); set ${u.what} to a port weft may use`,
      );
    }
  }
}

function probeUdp(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    // IPv6 only, as the sockets probed for: the kernel's flannel-v6 socket on :: shares its port with an
    // IPv4 socket on 0.0.0.0 (an IPv4 flannel.1 kept from an earlier config), and Node's dual-stack :: would not.
    const s = createSocket({ type: isIpv6Text(host) ? "udp6" : "udp4", reuseAddr: false, ipv6Only: isIpv6Text(host) });
    s.once("error", (err) => {
      s.close();
      resolve(err);
    });
    s.bind({ address: host, port, exclusive: true }, () => s.close(() => resolve(undefined)));
  });
}

function probeTcp(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", (err) => resolve(err));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(undefined)));
  });
}

export interface HostPrefix {
  prefix: IpPrefix;
  dev: string;
  kind: "address" | "route";
  /** A route's next hop, if it has one. */
  via?: string;
}

/**
 * The host's addresses and routes that each enabled family's pod network (Network, IPv6Network)
 * must leave alone, each checked against the host's addresses and routes of its own family.
 * Allowed: a prefix at least as long as the subnet length inside the network (a pod subnet: the
 * CNI bridge's gateway, a host-gw peer route), anything on weft's own devices, and a route via a
 * gateway that contains the whole network (the default route, or a VPN's 10.0.0.0/8: pod routes
 * are more specific and take only the pod range, by design). Refused: the underlay address inside
 * the network, an on-link network around or inside it (hosts there would become unreachable), a
 * foreign route inside it. A refused prefix that looks like another cluster's node subnet (inside
 * the network, shorter than the subnet length but a valid one, on the CNI bridge cni0 or a route
 * via a gateway: what kube-flannel leaves where kube-controller-manager hands out /23s, say) is
 * named as such, with the subnet length that fits it.
 */
export function checkNetworkAgainstHost(
  conf: Partial<Pick<NetConf, "space" | "space6">>,
  underlay: Underlay,
  host: readonly HostPrefix[],
): void {
  if (conf.space) checkFamilyAgainstHost("Network", conf.space, underlay.addr, underlay.iface, host);
  if (conf.space6) checkFamilyAgainstHost("IPv6Network", conf.space6, underlay.addr6, underlay.iface, host);
}

function checkFamilyAgainstHost(
  key: string,
  space: { network: IpPrefix; subnetLen: number },
  addr: IpAddr | undefined,
  iface: string,
  host: readonly HostPrefix[],
): void {
  const { network, subnetLen } = space;
  const v = typeof network.addr === "bigint" ? "-6" : "-4";
  const pick = `pick a${key === "Network" ? "" : "n"} ${key} that overlaps none of the host's addresses and routes (ip ${v} addr, ip ${v} route)`;
  const inNetwork = (p: IpPrefix) => p.len >= network.len && overlaps(p, network);
  if (addr !== undefined && overlaps(hostPrefix(addr), network)) {
    throw new WeftError(
      "CONFIG_NETWORK_OVERLAPS_HOST",
      `${key} ${formatAnyPrefix(network)} (net-conf.json) contains the underlay address ${formatAddr(addr)} on ${iface}: its routes would replace the host's own and cut it off; ${pick}`,
    );
  }
  for (const h of host) {
    if (h.prefix.len === 0 || WEFT_DEVICE.test(h.dev) || !overlaps(h.prefix, network)) continue;
    if (inNetwork(h.prefix) && h.prefix.len >= subnetLen) continue;
    if (h.kind === "route" && h.via !== undefined && h.prefix.len <= network.len) continue;
    const overlap = `${key} ${formatAnyPrefix(network)} (net-conf.json) overlaps the host's ${h.kind} ${formatAnyPrefix(h.prefix)} on ${h.dev}`;
    const nodeSubnet =
      inNetwork(h.prefix) && h.prefix.len >= network.len + 2 && (h.dev === "cni0" || h.via !== undefined);
    if (nodeSubnet) {
      // kube-flannel's node subnets are the Nodes' PodCIDRs, whatever SubnetLen says.
      const lenKey = key === "Network" ? "SubnetLen" : "IPv6SubnetLen";
      const mask =
        key === "Network" ? "--node-cidr-mask-size (-ipv4 on a dual-stack cluster)" : "--node-cidr-mask-size-ipv6";
      throw new WeftError(
        "CONFIG_NETWORK_OVERLAPS_HOST",
        `${overlap}, a node subnet /${h.prefix.len} where ${lenKey} is ${subnetLen}: if the cluster's node subnets are /${h.prefix.len} (kube-flannel's follow kube-controller-manager's ${mask}), set ${lenKey} to ${h.prefix.len} in net-conf.json; else ${pick}`,
      );
    }
    throw new WeftError(
      "CONFIG_NETWORK_OVERLAPS_HOST",
      `${overlap}: pod routes would take traffic meant for it; ${pick}`,
    );
  }
}

/** The host's addresses (as the networks they are on) and main-table routes of one family. */
async function hostPrefixes(kernel: Kernel, family: 4 | 6): Promise<HostPrefix[]> {
  const v = family === 4 ? "-4" : "-6";
  const links = await kernel.ipJson<
    Array<{ ifname: string; addr_info?: Array<{ family: string; local: string; prefixlen: number; scope: string }> }>
  >([v, "addr", "show"]);
  const routes = await kernel.ipJson<Array<{ dst: string; dev?: string; gateway?: string }>>([
    v,
    "route",
    "show",
    "table",
    "main",
  ]);
  const max = family === 4 ? 32 : 128;
  const prefix = (text: string, len: number): IpPrefix =>
    family === 4
      ? { addr: (parseIpv4(text) & prefixMask(len)) >>> 0, len }
      : { addr: parseIpv6(text) & prefixMask6(len), len };
  const out: HostPrefix[] = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (a.family !== (family === 4 ? "inet" : "inet6") || a.scope === "host") continue;
      out.push({ prefix: prefix(a.local, a.prefixlen), dev: l.ifname, kind: "address" });
    }
  }
  for (const r of routes) {
    if (r.dst === "default") continue;
    const [addr, len] = r.dst.split("/");
    out.push({
      prefix: prefix(addr, len === undefined ? max : Number(len)),
      dev: r.dev ?? "(no device)",
      kind: "route",
      via: r.gateway,
    });
  }
  return out;
}

/**
 * Join targets written as addresses must be of the family gossip runs over (the IPv4 underlay's
 * where there is one, else IPv6): a gossip socket of one family cannot reach the other. Names are resolved to the right
 * family when joining.
 */
function checkJoinFamily(f: FlagValues, underlay: Underlay): void {
  const v6 = underlay.addr === undefined;
  for (const j of f.join) {
    const literal = isIpv6Text(j.host) || /^\d+\.\d+\.\d+\.\d+$/.test(j.host);
    if (literal && isIpv6Text(j.host) !== v6) {
      throw flagError(
        "--join",
        formatHostPort(j.host, j.port),
        v6
          ? "an IPv4 address, but gossip runs over IPv6 here (EnableIPv4 is false): give the peers' IPv6 addresses in brackets ([2001:2::1]:7946) or names with AAAA records"
          : `an IPv6 address, but gossip runs over IPv4 here (on the IPv4 underlay address ${formatAddr(underlay.addr!)}: IPv4 is on, or IPv6 rides the IPv4 underlay): give the peers' IPv4 addresses, or names with A records`,
      );
    }
  }
}

/** The checks that read the host: addresses, routes and ports. Nothing is changed. */
export async function checkHost(kernel: Kernel, f: FlagValues, conf: NetConf, underlay: Underlay): Promise<void> {
  checkJoinFamily(f, underlay);
  checkNetworkAgainstHost(conf, underlay, [
    ...(conf.space ? await hostPrefixes(kernel, 4) : []),
    ...(conf.space6 ? await hostPrefixes(kernel, 6) : []),
  ]);
  // A kernel VXLAN device holds its port on the wildcard address: the config's own (kept by
  // --keep-on-exit) is reused, and one of this pod network that the config does not use (kept
  // from an earlier backend or VNI, or flannel's) is removed before the backend binds
  // (Agent.removeStaleDevices); neither is another process holding the port.
  const b = conf.Backend;
  const families = [...(conf.space ? [4 as const] : []), ...(conf.space6 ? [6 as const] : [])];
  const own = new Set(families.flatMap((f) => overlayDevice(b.Type, backendOptions(b), f) ?? []));
  const networks = [conf.space?.network, conf.space6?.network].filter((n) => n !== undefined);
  const devices = await overlayDevices(kernel, networks);
  const heldByOverlay = (port: number) => devices.some((d) => d.vxlanPort === port && (own.has(d.name) || d.inNetwork));
  const uses = portUses(f, conf, underlay, heldByOverlay);
  checkPortConflicts(uses);
  await checkPortsFree(uses);
}
