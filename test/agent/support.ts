// What the agent tests share: net-conf.json per backend, views of the kernel state an agent leaves
// in its host's namespace (read with plain `ip -json`, `bridge -json` and `nft -j`, not with the
// agent's own readers, so a bug there cannot hide itself), pings between every pair of hosts,
// polling for things that happen a little after the agent says so, and a describe block's lab of
// real agents (agentLab).
import { execFileSync, spawn } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, expect } from "vitest";
import { LabAgents, type AgentStatus, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster, LAB_POD_NETWORK, type LabHost, type LabOptions } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { formatIpv4, formatPrefix, parseIpv4, parsePrefix, prefixContains } from "../../src/net/ipv4.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

export const NETWORK = formatPrefix(LAB_POD_NETWORK); // 198.19.0.0/16

export type BackendName = "vxlan" | "host-gw" | "udp" | "wasm-vxlan";

/** net-conf.json for a backend (Network: the lab's, or `network`); one worker for wasm-vxlan (the machines running this have 2 cores). */
export function netConf(backend: BackendName, network = NETWORK): object {
  return { Network: network, Backend: backend === "wasm-vxlan" ? { Type: backend, Workers: 1 } : { Type: backend } };
}

/** FLANNEL_MTU with a 1500-byte underlay: VXLAN costs 50 bytes, flannel's udp 28, host-gw nothing. */
export const POD_MTU: Record<BackendName, number> = { vxlan: 1450, "wasm-vxlan": 1450, udp: 1472, "host-gw": 1500 };

/** The devices each backend creates (VNI 1). */
export const OVERLAY_DEVICES: Record<BackendName, string[]> = {
  vxlan: ["flannel.1"],
  "wasm-vxlan": ["weft.1"],
  udp: ["flannel0"],
  "host-gw": [],
};

interface IpLink {
  ifname: string;
  address?: string;
  mtu: number;
}

/** The host's links by name. */
export async function links(h: LabHost): Promise<Map<string, IpLink>> {
  return new Map((await h.ns.kernel.ipJson<IpLink[]>(["link", "show"])).map((l) => [l.ifname, l]));
}

/** The overlay devices present (flannel.<VNI>, flannel0, weft.<VNI>, their IPv6 -v6 ones), sorted. */
export async function overlayDevices(h: LabHost): Promise<string[]> {
  return [...(await links(h)).keys()].filter((n) => /^((flannel|weft)(-v6)?\.\d+|flannel0)$/.test(n)).sort();
}

/**
 * Routes into the pod network other than the host's own cni0 subnet, as `dst [via gw] dev D
 * [onlink]`, sorted: what a backend programs.
 */
export async function podRoutes(h: LabHost): Promise<string[]> {
  const routes = await h.ns.kernel.ipJson<Array<{ dst: string; gateway?: string; dev: string; flags: string[] }>>([
    "-4",
    "route",
    "show",
  ]);
  return routes
    .filter(
      (r) => r.dst !== "default" && r.dev !== "cni0" && prefixContains(LAB_POD_NETWORK, parseIpv4(r.dst.split("/")[0])),
    )
    .map(
      (r) =>
        `${r.dst}${r.gateway ? ` via ${r.gateway}` : ""} dev ${r.dev}${r.flags.includes("onlink") ? " onlink" : ""}`,
    )
    .sort();
}

/** Permanent neighbour entries (`addr lladdr dev`) and FDB entries (`mac dst dev`) the vxlan backend writes. */
export async function vxlanEntries(h: LabHost): Promise<{ neighs: string[]; fdbs: string[] }> {
  const neighs = await h.ns.kernel.ipJson<Array<{ dst: string; lladdr?: string; dev: string; state?: string[] }>>([
    "-4",
    "neigh",
    "show",
    "nud",
    "permanent",
  ]);
  const fdbs = await h.ns.kernel.bridgeJson<Array<{ mac: string; dst?: string; ifname: string; state?: string }>>([
    "fdb",
    "show",
  ]);
  return {
    neighs: neighs.map((n) => `${n.dst} ${n.lladdr} ${n.dev}`).sort(),
    fdbs: fdbs
      .filter((f) => f.dst !== undefined)
      .map((f) => `${f.mac} ${f.dst} ${f.ifname}`)
      .sort(),
  };
}

/** nftables tables as `family name`. */
export async function nftTables(h: LabHost): Promise<string[]> {
  return await h.ns.kernel.nftTables();
}

/** subnet.env's FLANNEL_SUBNET: the first usable address of the subnet, with its prefix length. */
export function firstAddress(subnet: string): string {
  const p = parsePrefix(subnet);
  return `${formatIpv4(p.addr + 1)}/${p.len}`;
}

/** Pings (3 each) from every host's first pod to every other host's first pod: `from -> to: received/sent`. */
export async function pingEveryPair(hosts: LabHost[]): Promise<string[]> {
  const out: string[] = [];
  for (const a of hosts) {
    for (const b of hosts) {
      if (a === b) continue;
      const r = await ping(a.pods[0], b.pods[0].addr, { count: 3, timeoutS: 1 });
      out.push(`${a.name} -> ${b.name}: ${r.received}/${r.sent}`);
    }
  }
  return out;
}

/** The answer `pingEveryPair` gives when every ping came back. */
export function allPingsAnswered(hosts: LabHost[]): string[] {
  return hosts.flatMap((a) => hosts.filter((b) => b !== a).map((b) => `${a.name} -> ${b.name}: 3/3`));
}

/**
 * Polls `probe` until `ok` holds for its answer, for at most `timeoutMs`; fails with the last
 * answer. For kernel state that follows an agent's decision by a few milliseconds.
 */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline)
      throw new Error(`${what} did not happen within ${timeoutMs} ms; last seen: ${JSON.stringify(v)}`);
    await sleep(200);
  }
}

let kernelWatches = 0;

/**
 * Records every link, address, route and neighbour/FDB event in the host's namespace (`ip monitor`),
 * from when it resolves (it listens by then) until `stop`, which gives the IPv4 and link events naming `dev`: an entry deleted and added
 * again, or a device re-created, shows even where the state after equals the state before (the
 * kernel reports no event for a replace by an identical entry, which changes nothing). IPv6 events
 * are left out: the kernel's own link-local address and its duplicate address detection come and
 * go by themselves.
 */
export async function watchKernelEvents(h: LabHost): Promise<{ stop(dev: string): Promise<string[]> }> {
  const [cmd, ...args] = h.ns.wrap(["ip", "monitor", "link", "address", "route", "neigh"]);
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  p.stdout.on("data", (d: Buffer) => (out += d));
  p.stderr.on("data", (d: Buffer) => (err += d));
  const exited = new Promise<void>((r) => p.on("exit", () => r()));
  // A watcher that died early would see nothing and pass anything.
  const alive = () => {
    if (p.exitCode !== null || p.signalCode !== null)
      throw new Error(`ip monitor in ${h.name} ended early (${p.exitCode ?? p.signalCode}): ${err}`);
  };
  // `ip monitor` says nothing once it listens, and what happens before goes unseen: a veth pair
  // made and deleted in the namespace it watches, until it shows the deletion, tells that it does.
  const mark = `wkmark${++kernelWatches}`;
  const marked = () => out.split("\n").some((l) => l.startsWith("Deleted ") && l.includes(` ${mark}@`));
  try {
    for (let t = 0; !marked(); t++) {
      alive();
      if (t === 50) throw new Error(`ip monitor in ${h.name} showed no event of ${mark} in 50 tries`);
      await h.ns.ip(`link add ${mark} type veth peer name ${mark}p`);
      await h.ns.ip(`link del ${mark}`);
      for (let w = 0; w < 10 && !marked(); w++) await sleep(20);
    }
  } catch (e) {
    p.kill();
    throw e;
  }
  return {
    async stop(dev) {
      alive();
      p.kill();
      await exited;
      return out
        .split("\n")
        .filter((line) => line.split(/\s+/).some((t) => t.replace(/:$/, "") === dev) && !line.includes("::"));
    },
  };
}

/**
 * The host's kernel state an agent could change, as `ip -d link`, `ip addr`, `ip route` (every
 * table), `ip neigh` (permanent), `bridge fdb` and `nft list ruleset` show it. (IPv6 is left out:
 * the kernel's own duplicate address detection changes link-local addresses and routes meanwhile.)
 */
export async function kernelState(h: LabHost): Promise<unknown> {
  const k = h.ns.kernel;
  const links = await k.ipJson<Array<Record<string, unknown>>>(["-d", "link", "show"]);
  return {
    links: links.map(({ operstate: _o, ...l }) => l), // a veth's carrier may settle meanwhile
    addrs: await k.ipJson(["-4", "addr", "show"]),
    routes: await k.ipJson(["-4", "route", "show", "table", "all"]),
    neighs: await k.ipJson(["-4", "neigh", "show", "nud", "permanent"]),
    fdb: await k.bridgeJson(["fdb", "show"]),
    nft: (await h.ns.exec(["nft", "list", "ruleset"])).trim(),
  };
}

/**
 * Deletes `device` and gives its name to a device of another kind (a bridge) at once, so that
 * a backend's start making a TUN device of that name fails (EINVAL) until the bridge is gone.
 * ip can be held back between the two (a loaded machine) while the agent makes its new device:
 * then that one is deleted too (each deletion is a restart, counted).
 */
export async function takeDeviceName(h: LabHost, device: string): Promise<void> {
  const kind = () =>
    h.ns.kernel.ipJson<Array<{ linkinfo?: { info_kind?: string } }>>(["-d", "link", "show", "dev", device]).then(
      (links) => links[0]?.linkinfo?.info_kind,
      () => undefined,
    );
  for (let tries = 0; tries < 5; tries++) {
    await h.ns.exec([
      "sh",
      "-c",
      `printf 'link del ${device}\\nlink add ${device} type bridge\\n' | ip -force -batch - || true`,
    ]);
    if ((await kind()) === "bridge") return;
  }
  throw new Error(`${device} is not a bridge after 5 tries`);
}

export interface AgentLabOptions {
  tag: string;
  hosts: number;
  /** The lab's IPv6 underlay (LabOptions.ipv6). */
  ipv6?: LabOptions["ipv6"];
  /** Each host's net-conf.json (`i`: the host's index in the lab). */
  conf: (h: LabHost, i: number) => object;
  /** What every agent's status shows once it settled (its peers of each family known, ...). */
  settled: { what: string; check: (s: AgentStatus) => boolean };
  /** Gossip over IPv6 (IPv6-only agents on an IPv6 underlay). */
  gossip6?: boolean;
  /** Changes to the lab before the agents start (an address added, the IPv4 underlay flushed). */
  beforeStart?: (lab: LabCluster) => Promise<unknown>;
  /** An agent's extra flags. */
  flags?: (a: LabAgent) => string[];
  /** Changes to an agent before its first start (e.g. readOnlyProcSys). */
  setup?: (a: LabAgent) => void;
  /** Runs once every agent settled, before the pods are made. */
  beforePods?: (env: AgentLab) => Promise<void>;
  timeoutMs?: number;
}

/** A describe block's lab of real agents; filled in by its beforeAll. */
export interface AgentLab {
  lab: LabCluster;
  agents: LabAgents;
  all: LabAgent[];
  /** Each agent's status once it settled, by node name (its subnets then). */
  settled: Map<string, AgentStatus>;
  others(a: LabAgent): LabAgent[];
}

/**
 * Registers the describe block's beforeAll and afterAll: a lab of `hosts` hosts, a real agent on
 * each (every one a subnet seed, joining the others), all ready and settled, then a pod per host;
 * afterwards the agents stop and the lab goes, also when the start failed halfway.
 */
export function agentLab(o: AgentLabOptions): AgentLab {
  const env: AgentLab = {
    settled: new Map(),
    others: (a) => env.all.filter((x) => x !== a),
  } as Partial<AgentLab> as AgentLab;
  beforeAll(async () => {
    env.lab = await LabCluster.create({ tag: o.tag, hosts: o.hosts, ipv6: o.ipv6 });
    await o.beforeStart?.(env.lab);
    env.agents = await LabAgents.prepare(
      env.lab,
      (h) => o.conf(h, env.lab.hosts.indexOf(h)),
      env.lab.hosts.length,
      o.gossip6,
    );
    env.all = env.agents.agents;
    for (const a of env.all) {
      o.setup?.(a);
      env.agents.start(a, o.flags?.(a) ?? []);
    }
    await env.agents.waitAllReady();
    for (const a of env.all) env.settled.set(a.host.name, await env.agents.waitFor(a, o.settled.what, o.settled.check));
    await o.beforePods?.(env);
    await env.agents.addPods(1);
  }, o.timeoutMs ?? 180_000);
  afterAll(async () => {
    await env.agents?.stopAll();
    await env.lab?.destroy();
  });
  return env;
}

/**
 * TCP from the first pod of each `from` host to the first pod of its `to` host over `family`, on
 * the port given: each transfer must arrive exactly (byte count and hash).
 */
export async function expectExactTcp(
  transfers: ReadonlyArray<readonly [from: LabAgent, to: LabAgent, port: number]>,
  family: 4 | 6,
  bytes = 8 << 20,
): Promise<void> {
  for (const [from, to, port] of transfers) {
    const { sent, received } = await tcpTransfer(from.host.pods[0], to.host.pods[0], bytes, port, family);
    expect(received, `${from.host.name} -> ${to.host.name} IPv${family}`).toEqual(sent);
    expect(sent.bytes).toBe(bytes);
  }
}

/**
 * Kills `a` (SIGKILL) and rewrites its saved ring (its state file, `lease-state.json` or
 * `lease-state-ipv6.json`) as a restored old copy or a transfer it never heard of would: the
 * subnet `holder` leases passes, one version on, to `owner` (leased by it, or a free slot of its);
 * then starts it again and waits until it is ready. It spreads that version, and `holder` loses
 * its subnet (LEASE_LOST).
 */
export async function restartGivingSubnet(
  agents: LabAgents,
  a: LabAgent,
  file: string,
  holder: string,
  owner: string,
  leased: boolean,
  joinTargets?: LabAgent[],
): Promise<void> {
  await agents.stop(a, "SIGKILL");
  const path = join(a.stateDir, file);
  const state = JSON.parse(await readFile(path, "utf8")) as {
    ring: { owners: string[]; runs: Array<[number, number, number, number, 0 | 1]> };
  };
  const ring = state.ring;
  const i = ring.runs.findIndex(([, count, o, , l]) => ring.owners[o] === holder && l === 1 && count === 1);
  expect(i, `${holder}'s lease in ${path}`).toBeGreaterThanOrEqual(0);
  if (!ring.owners.includes(owner)) ring.owners.push(owner);
  const [start, count, , version] = ring.runs[i];
  ring.runs[i] = [start, count, ring.owners.indexOf(owner), version + 1, leased ? 1 : 0];
  await writeFile(path, JSON.stringify(state), { mode: 0o600 });
  agents.start(a, [], joinTargets);
  await agents.waitReady(a);
}

/**
 * Puts a FIFO in place of `a`'s net-conf.json: its next SIGHUP's reload waits reading it, holding
 * the backend-change queue (what is queued meanwhile runs after it), until `release` gives it
 * `text` and puts a plain file with `text` back.
 */
export async function holdNetConf(agents: LabAgents, a: LabAgent, text: string): Promise<() => Promise<void>> {
  const path = agents.netConfPath(a);
  await rm(path);
  execFileSync("mkfifo", [path]);
  return async () => {
    await writeFile(path, text);
    await rm(path);
    await writeFile(path, text);
  };
}

/** The log records of the agent logging in `dir`, from byte `since` on. */
export async function logRecords(dir: string, since: number): Promise<Array<Record<string, unknown>>> {
  const text = (await readFile(join(dir, "agent.log"))).subarray(since).toString("utf8");
  return text.split("\n").flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** The log records of the agent logging in `dir` from byte `since` on, with a code starting with `prefix`. */
export async function coded(dir: string, since: number, prefix: string): Promise<Array<Record<string, unknown>>> {
  return (await logRecords(dir, since)).filter((r) => typeof r.code === "string" && r.code.startsWith(prefix));
}

/** The UDP sockets of address family `family` bound to `port` in the host's namespace, as `ss` lists them. */
export async function udpSockets(h: LabHost, family: 4 | 6, port: number): Promise<number> {
  return (await h.ns.exec(["ss", `-H${family}uan`, "sport", "=", `:${port}`]))
    .split("\n")
    .filter((l) => l.trim() !== "").length;
}

/** The samples of every metric of type counter in a scrape, by name and labels. */
export function counterSamples(text: string): Map<string, number> {
  const counters = new Set([...text.matchAll(/^# TYPE (\S+) counter$/gm)].map((m) => m[1]));
  const samples = new Map<string, number>();
  for (const [, series, name, value] of text.matchAll(/^(([a-z_]+)(?:\{[^}]*\})?) (\S+)$/gm))
    if (counters.has(name)) samples.set(series, Number(value));
  return samples;
}

/** Sends argv[2] datagrams of 1200 bytes to argv[1]:8472, as fast as it can (bounded in count); argv[3] "udp6" for an IPv6 argv[1]. */
export const FLOOD = `const s = require("node:dgram").createSocket(process.argv[3] ?? "udp4"); const b = Buffer.alloc(1200, 7); let n = Number(process.argv[2]); const next = () => { if (n-- <= 0) return s.close(); s.send(b, 8472, process.argv[1], next); }; next();`;
