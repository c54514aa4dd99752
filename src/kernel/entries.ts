// The three kinds of kernel entry weft programs per peer — routes, neighbour entries and bridge
// FDB entries — as typed values: how to read them (`ip -json`, `bridge -json`), how to write and
// remove them (lines for `ip -batch` / `bridge -batch`), which key identifies one and when two
// are the same. Backends say what they want in these terms; converge.ts makes the kernel match.
// Addresses are of either family (src/net/ip.ts): one backend instance works on one family.
import { WeftError } from "../errors.js";
import {
  familyOf,
  formatAddr as formatIpv4,
  formatAnyPrefix as formatPrefix,
  hostPrefix,
  parseAddr as parseIpv4,
  parseAnyPrefix as parsePrefix,
  type IpAddr,
  type IpPrefix,
} from "../net/ip.js";
import type { Kernel } from "./iproute.js";

/** A route in the main table. */
export interface RouteEntry {
  dst: IpPrefix;
  gateway?: IpAddr;
  dev: string;
  onlink: boolean;
  /** routeMetric(family) for every route weft writes. */
  metric: number;
  /** Read side only: the route's protocol where not boot (`ip route replace`'s and netlink's default, weft's and flannel's). */
  protocol?: string;
}

/** Routes weft writes carry the kernel's default metric of their family (IPv6 gives 1024 to a route without one). */
export const routeMetric = (family: 4 | 6) => (family === 4 ? 0 : 1024);

/** A permanent neighbour (ARP) entry: `addr` is at `mac` on `dev`. */
export interface NeighEntry {
  addr: IpAddr;
  mac: string;
  dev: string;
  /** Read side only: weft writes permanent entries; anything else is not weft's. */
  permanent: boolean;
}

/** A permanent FDB entry of a vxlan device: frames for `mac` go to underlay `dst` (and `port`). */
export interface FdbEntry {
  mac: string;
  dev: string;
  dst: IpAddr;
  /** Only when it differs from the device's own dstport. */
  port?: number;
  /**
   * Read side only (weft writes neither): a VNI other than the device's, and the underlay device
   * to send through (`via`). The kernel matches a delete on both, and takes one that names
   * neither as done while the entry stays.
   */
  vni?: number;
  via?: string;
  permanent: boolean;
}

/** What one kind of entry needs for comparing and writing. */
export interface EntryKind<E> {
  readonly name: "route" | "neigh" | "fdb";
  key(e: E): string;
  same(a: E, b: E): boolean;
  replace(e: E): string;
  del(e: E): string;
}

export const ROUTE: EntryKind<RouteEntry> = {
  name: "route",
  key: (r) => `${formatPrefix(r.dst)} metric ${r.metric}`,
  same: (a, b) => a.gateway === b.gateway && a.dev === b.dev && a.onlink === b.onlink && a.metric === b.metric,
  replace: (r) =>
    `route replace ${formatPrefix(r.dst)}${via(r)} dev ${r.dev}${r.onlink ? " onlink" : ""}${r.metric ? ` metric ${r.metric}` : ""}`,
  del: (r) => `route del ${formatPrefix(r.dst)}${via(r)} dev ${r.dev}${r.metric ? ` metric ${r.metric}` : ""}`,
};

export const NEIGH: EntryKind<NeighEntry> = {
  name: "neigh",
  key: (n) => `${n.dev} ${formatIpv4(n.addr)}`,
  same: (a, b) => a.mac === b.mac && a.permanent === b.permanent,
  replace: (n) => `neigh replace ${formatIpv4(n.addr)} lladdr ${n.mac} dev ${n.dev} nud permanent`,
  del: (n) => `neigh del ${formatIpv4(n.addr)} dev ${n.dev}`,
};

export const FDB: EntryKind<FdbEntry> = {
  name: "fdb",
  key: (f) => `${f.dev} ${f.mac} ${formatIpv4(f.dst)}`,
  same: (a, b) => a.port === b.port && a.vni === b.vni && a.via === b.via && a.permanent === b.permanent,
  // A replace sets the remote's VNI and via back to the device's own.
  replace: (f) => `fdb replace ${f.mac} dev ${f.dev} dst ${formatIpv4(f.dst)}${port(f)} self permanent`,
  // The kernel matches a remote by its port, VNI and via too.
  del: (f) =>
    `fdb del ${f.mac} dev ${f.dev} dst ${formatIpv4(f.dst)}${port(f)}${f.vni === undefined ? "" : ` vni ${f.vni}`}${f.via === undefined ? "" : ` via ${f.via}`} self`,
};

/**
 * The lines that remove an FDB remote. A delete must name its via device, which iproute2 cannot
 * when the device is gone or in another namespace (read as `if<index>`): such a remote was refused
 * at every reconcile. A unicast MAC has one remote, which a replace first resets to the device's
 * VNI and no via. The kernel replaces no remote of an all-zeros or multicast MAC, which no peer
 * wants: that entry goes whole.
 */
export function fdbRemoval(f: FdbEntry): string[] {
  if (f.via === undefined || !/^if\d+$/.test(f.via)) return [FDB.del(f)];
  if (f.mac === "00:00:00:00:00:00" || (Number.parseInt(f.mac.slice(0, 2), 16) & 1) === 1)
    return [`fdb del ${f.mac} dev ${f.dev} self`];
  const plain = { ...f, vni: undefined, via: undefined };
  return [FDB.replace(plain), FDB.del(plain)];
}

const port = (f: FdbEntry) => (f.port ? ` port ${f.port}` : "");

const via = (r: RouteEntry) => (r.gateway === undefined ? "" : ` via ${formatIpv4(r.gateway)}`);

type RawRoute = {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
  metric?: number;
  type?: string;
  protocol?: string;
};
type RawNeigh = { dst: string; dev: string; lladdr?: string; state?: string[] };
type RawFdb = {
  mac: string;
  ifname: string;
  dst?: string;
  port?: number;
  vni?: number;
  /** The device `via` names; its index instead where that device is in another namespace (iproute2 reads `if<index>` as one). */
  viaIf?: string;
  viaIfIndex?: number;
  flags?: string[];
  state?: string;
};

const showRoutes = (within: IpPrefix) => ["route", "show", "table", "main", "root", formatPrefix(within)];
const familyFlag = (p: IpPrefix) => `-${familyOf(p.addr)}`;

/** Main-table routes to destinations inside `within` (`ip route show root`). */
export async function readRoutes(kernel: Kernel, within: IpPrefix): Promise<RouteEntry[]> {
  return parseRoutes(await kernel.ipJson<RawRoute[]>([familyFlag(within), ...showRoutes(within)]));
}

/**
 * Everything a backend may own in two reads (one `ip -batch`, one `bridge`): main-table routes
 * inside `within`, and the neighbour and FDB entries of `within`'s family on device `dev`.
 * Neighbours and FDB entries are listed for all devices and then filtered, so a device that is
 * gone reads as "no entries" rather than an error.
 */
export async function readEntries(
  kernel: Kernel,
  within: IpPrefix,
  dev?: string,
): Promise<{ routes: RouteEntry[]; neighs: NeighEntry[]; fdbs: FdbEntry[] }> {
  const v6 = familyOf(within.addr) === 6;
  const ofFamily = (addr: string) => addr.includes(":") === v6;
  const [ip, fdb] = await Promise.all([
    kernel.ipJsonBatch<RawRoute[] | RawNeigh[]>(
      [showRoutes(within).join(" "), ...(dev ? ["neigh show"] : [])],
      familyOf(within.addr),
    ),
    dev ? kernel.bridgeJson<RawFdb[]>(["fdb", "show"]) : [],
  ]);
  const failed = ip.failures[0];
  if (failed) throw new WeftError("KERNEL_COMMAND_FAILED", `\`ip ${failed.command}\` failed: ${failed.message}`);
  const [routes, neighs] = ip.answers as [RawRoute[], RawNeigh[] | undefined];
  return {
    routes: parseRoutes(routes),
    neighs: (neighs ?? [])
      .filter((n) => n.dev === dev && n.lladdr !== undefined && ofFamily(n.dst))
      .map((n) => ({
        addr: parseIpv4(n.dst),
        mac: n.lladdr!,
        dev: n.dev,
        permanent: n.state?.includes("PERMANENT") ?? false,
      })),
    fdbs: fdb
      .filter((f) => f.ifname === dev && f.dst !== undefined && ofFamily(f.dst) && (f.flags?.includes("self") ?? false))
      .map((f) => ({
        mac: f.mac,
        dev: f.ifname,
        dst: parseIpv4(f.dst!),
        port: f.port,
        vni: f.vni,
        via: f.viaIf ?? (f.viaIfIndex === undefined ? undefined : `if${f.viaIfIndex}`),
        permanent: f.state === "permanent",
      })),
  };
}

function parseRoutes(raw: RawRoute[]): RouteEntry[] {
  return raw
    .filter((r) => r.dev !== undefined && (r.type === undefined || r.type === "unicast"))
    .map((r) => ({
      dst: r.dst.includes("/") ? parsePrefix(r.dst) : hostPrefix(parseIpv4(r.dst)),
      gateway: r.gateway === undefined ? undefined : parseIpv4(r.gateway),
      dev: r.dev!,
      onlink: r.flags?.includes("onlink") ?? false,
      metric: r.metric ?? 0,
      ...(r.protocol !== undefined && r.protocol !== "boot" && { protocol: r.protocol }),
    }));
}

/** Where the kernel would send a packet to an address: `ip route get`. */
export type RouteLookup = { dev: string; gateway?: IpAddr; local: boolean } | { error: string };

/** `ip route get` for many addresses in one `ip -batch`. */
export async function lookupRoutes(kernel: Kernel, addrs: IpAddr[]): Promise<RouteLookup[]> {
  const { answers, failures } = await kernel.ipJsonBatch<Array<{ dev: string; gateway?: string; type?: string }>>(
    addrs.map((a) => `route get ${formatIpv4(a)}`),
  );
  return answers.map((answer, i) => {
    const r = answer?.[0];
    if (!r) return { error: failures.find((f) => f.line === i + 1)?.message ?? "no answer from `ip route get`" };
    return {
      dev: r.dev,
      gateway: r.gateway === undefined ? undefined : parseIpv4(r.gateway),
      local: r.type === "local",
    };
  });
}
