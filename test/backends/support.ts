// What the backend tests share: a backend context for a lab host (its own state dir, a logger
// whose lines the test can read), peers as another host would announce them, and typed views of
// the kernel state a backend leaves behind.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { type Logger, pino } from "pino";
import type {
  Backend,
  BackendAnnouncement,
  BackendContext,
  BackendOptions,
  BackendPeer,
  Underlay,
} from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost } from "../../src/lab/cluster.js";
import type { Ipv4Prefix } from "../../src/net/ipv4.js";
import { parsePrefix6, type Ipv6Prefix } from "../../src/net/ipv6.js";

export const subnetOf = (i: number): Ipv4Prefix => ({ addr: 0xc6130000 + i * 256, len: 24 }); // 198.19.i.0/24
export const subnet6Of = (i: number): Ipv6Prefix => parsePrefix6(`2001:2:0:${(0x8000 + i).toString(16)}::/64`);

/** A backend context of `family` for `host`, host number `i` of a dual-stack lab (silent log). */
export function familyCtx(host: LabHost, dir: string, family: 4 | 6, i: number): BackendContext {
  return {
    kernel: host.ns.kernel,
    network: family === 4 ? LAB_POD_NETWORK : LAB_POD_NETWORK6,
    subnet: family === 4 ? subnetOf(i) : subnet6Of(i),
    underlay: labUnderlay(host),
    stateDir: dir,
    logger: pino({ level: "silent" }),
  };
}

/** A lab host's underlay, both families' addresses (MTU 1500, as the lab makes it). */
export const labUnderlay = (host: LabHost): Underlay => ({
  iface: host.underlayIf,
  ifindex: host.underlayIfindex,
  addr: host.underlayAddr,
  addr6: host.underlayAddr6,
  mtu: 1500,
});

/** Log records as JSON objects, for checking what a backend reported. */
export interface LogBook {
  lines: Array<{ level: number; msg: string; [k: string]: unknown }>;
  errors(): string[];
}

export interface HostCtx {
  ctx: BackendContext;
  log: LogBook;
  cleanup(): void;
}

/** A debug logger whose lines the test reads. */
export function loggedTo(): { logger: Logger; log: LogBook } {
  const lines: LogBook["lines"] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l));
      done();
    },
  });
  return {
    logger: pino({ level: "debug" }, sink),
    log: { lines, errors: () => lines.filter((l) => l.level >= 50).map((l) => l.msg) },
  };
}

/** A context for `host` leasing `subnet`, with a fresh state dir unless one is given (restarts). */
export function hostCtx(host: LabHost, subnet: Ipv4Prefix, stateDir?: string): HostCtx {
  const dir = stateDir ?? mkdtempSync(join(tmpdir(), `weft-${host.name}-`));
  const { logger, log } = loggedTo();
  return {
    ctx: {
      kernel: host.ns.kernel,
      network: LAB_POD_NETWORK,
      subnet,
      underlay: { iface: host.underlayIf, ifindex: host.underlayIfindex, addr: host.underlayAddr, mtu: 1500 },
      stateDir: dir,
      logger,
    },
    log,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export const peerOf = (
  name: string,
  subnet: Ipv4Prefix,
  underlay: number,
  backend: BackendAnnouncement,
): BackendPeer => ({ name, subnet, underlay, backend });

/** A lab host running a backend; `backend` and `announced` change when a test restarts it. */
export interface LabNode {
  host: LabHost;
  subnet: Ipv4Prefix;
  c: HostCtx;
  backend: Backend;
  announced: BackendAnnouncement;
}

/**
 * Creates the backend inside the host's namespace (a userspace backend opens its TUN device and
 * sockets there) and starts it. Subnet 198.19.i.0/24.
 */
export async function startNode(
  host: LabHost,
  i: number,
  type: string,
  options: BackendOptions = {},
): Promise<LabNode> {
  const subnet = subnetOf(i);
  const c = hostCtx(host, subnet);
  const backend = withNetns(host.ns.name, () => createBackend(type, { workers: 1, ...options }, c.ctx));
  return { host, subnet, c, backend, announced: await backend.start() };
}

/** The peer `n` is to the others. */
export const peerFrom = (n: LabNode): BackendPeer => peerOf(n.host.name, n.subnet, n.host.underlayAddr, n.announced);

/** Two hosts with two pods each running backend `type`, each told about the other. */
export async function twoHostLab(
  tag: string,
  type: string,
  podMtu: number,
): Promise<{ lab: LabCluster; n1: LabNode; n2: LabNode }> {
  const lab = await LabCluster.create({ tag, hosts: 2 });
  const nodes: LabNode[] = [];
  try {
    await lab.addPods(lab.hosts[0], subnetOf(1), 2, podMtu);
    await lab.addPods(lab.hosts[1], subnetOf(2), 2, podMtu);
    nodes.push(await startNode(lab.hosts[0], 1, type));
    nodes.push(await startNode(lab.hosts[1], 2, type));
    const [n1, n2] = nodes;
    await Promise.all([n1.backend.setPeer(peerFrom(n2)), n2.backend.setPeer(peerFrom(n1))]);
    return { lab, n1, n2 };
  } catch (err) {
    await removeLab(lab, nodes);
    throw err;
  }
}

/** Stops every backend (removing what it made), then the lab and the state dirs. */
export async function removeLab(lab: LabCluster | undefined, nodes: Array<LabNode | undefined>): Promise<void> {
  for (const n of nodes) await n?.backend.stop(false).catch(() => undefined);
  await lab?.destroy();
  for (const n of nodes) n?.c.cleanup();
}

export interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  flags: string[];
  protocol?: string;
}

/** `ip -json route` of the pod network in a namespace. */
export async function podRoutes(host: LabHost): Promise<IpRoute[]> {
  return host.ns.kernel.ipJson<IpRoute[]>(["route", "show", "root", "198.19.0.0/16"]);
}

export async function neighbours(
  host: LabHost,
  dev: string,
): Promise<Array<{ dst: string; lladdr: string; state: string[] }>> {
  return host.ns.kernel.ipJson(["-4", "neigh", "show", "dev", dev]);
}

export async function fdb(
  host: LabHost,
  dev: string,
): Promise<Array<{ mac: string; dst?: string; flags: string[]; state: string }>> {
  const all = await host.ns.kernel.bridgeJson<Array<{ mac: string; dst?: string; flags: string[]; state: string }>>([
    "fdb",
    "show",
    "dev",
    dev,
  ]);
  return all.filter((f) => f.dst !== undefined);
}

export async function linkNames(host: LabHost): Promise<string[]> {
  return (await host.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"])).map((l) => l.ifname);
}
