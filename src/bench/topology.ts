// The benchmark's topology: for each setup (settings.ts) its own two-host lab cluster (src/lab)
// with one pod per host and real weft agents running that setup on both hosts; with --family 4,6,
// a setup whose backend carries IPv6 also gets an IPv6-only lab (EnableIPv4 false, an IPv6
// underlay) for its IPv6 TCP runs, so its IPv4 figures come from the same IPv4-only lab as every
// other setup's. All labs are built before the first measurement, so workloads can alternate
// between setups run after run.
import { execFileSync } from "node:child_process";
import type { BackendType } from "../backends/backend.js";
import type { OffloadState } from "../dataplane/offload.js";
import { WeftError } from "../errors.js";
import { exitText, LabAgents, running } from "../lab/agents.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabPod } from "../lab/cluster.js";
import { ping } from "../lab/traffic.js";
import type { IpAddr } from "../net/ip.js";
import { formatPrefix } from "../net/ipv4.js";
import { formatPrefix6 } from "../net/ipv6.js";
import { settleAll } from "../util/settle.js";
import type { BenchSetup } from "./settings.js";

/** One setup's lab: two hosts, their agents, and (once ready) one pod per host. */
export class BenchLab {
  /**
   * Once ready, per host, the offloads its userspace dataplane really runs with (from the agent's
   * status): "on" falls back to off where the kernel lacks a feature, and the report must say so.
   */
  offload: Record<string, OffloadState> = {};

  /** With --family 4,6 and a backend that carries IPv6: the setup's IPv6-only lab. */
  ipv6?: BenchLab;

  /** Set once teardownLab has begun: a sibling still being built then goes too (buildLab). */
  tornDown = false;

  constructor(
    readonly setup: BenchSetup,
    /** The net-conf.json both agents run with (recorded in the report). */
    readonly netConf: object,
    readonly lab: LabCluster,
    readonly agents: LabAgents,
    /** 6 for an IPv6-only lab: its pods have IPv6 addresses only. */
    readonly family: 4 | 6 = 4,
  ) {}

  ipv6Lab(): BenchLab {
    if (!this.ipv6)
      throw new WeftError(
        "BENCH_NO_IPV6_LAB",
        `${this.setup.name} has no IPv6 lab (its backend carries no IPv6, or --family has no 6)`,
      );
    return this.ipv6;
  }

  /** This lab and its IPv6-only sibling, if any. */
  all(): BenchLab[] {
    return [this, ...(this.ipv6 ? [this.ipv6] : [])];
  }

  /** host1's pod: the iperf3 and ping client. */
  get client(): LabPod {
    return this.lab.hosts[0].pods[0];
  }

  /** host2's pod: the iperf3 server, the ping target. */
  get server(): LabPod {
    return this.lab.hosts[1].pods[0];
  }
}

/**
 * Short tags keep namespace names (weft-<tag>-h1-<pid>-<n>) readable in `ip netns`; a setup
 * without offloads adds "-off", so every setup's tag is unique.
 */
const TAGS: Record<BackendType, string> = {
  vxlan: "bench-vx",
  "host-gw": "bench-hg",
  udp: "bench-ud",
  "wasm-vxlan": "bench-wv",
};

/**
 * Builds one setup's lab (and, with `ipv6`, its IPv6-only sibling) and starts its agents without
 * waiting for them; `labs` receives the lab as soon as it exists, so a failure or an interrupt
 * later still tears it down (the sibling with it). A sibling whose lab's teardown began while it
 * was being built (Ctrl-C) is removed as soon as it exists: that teardown did not see it.
 */
export async function buildLab(setup: BenchSetup, labs: BenchLab[], ipv6 = false): Promise<BenchLab> {
  const backend = { Type: setup.backend, ...(setup.offloads !== undefined && { Offloads: setup.offloads }) };
  const entry = await buildOne(setup, 4, { Network: formatPrefix(LAB_POD_NETWORK), Backend: backend });
  labs.push(entry);
  entry.agents.startAll();
  if (ipv6) {
    const sibling = await buildOne(setup, 6, {
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: formatPrefix6(LAB_POD_NETWORK6),
      Backend: backend,
    });
    if (entry.tornDown) await teardownLab(sibling);
    else {
      entry.ipv6 = sibling;
      sibling.agents.startAll();
    }
  }
  return entry;
}

async function buildOne(setup: BenchSetup, family: 4 | 6, netConf: object): Promise<BenchLab> {
  const lab = await LabCluster.create({
    tag: `${TAGS[setup.backend]}${setup.offloads === false ? "-off" : ""}${family === 6 ? "-6" : ""}`,
    hosts: 2,
    ipv6: family === 6,
  });
  try {
    return new BenchLab(
      setup,
      netConf,
      lab,
      await LabAgents.prepare(lab, () => netConf, lab.hosts.length, family === 6),
      family,
    );
  } catch (error) {
    await lab.destroy();
    throw error;
  }
}

/**
 * Waits for both agents, notes their dataplanes' offloads, gives each host a pod (in its leased
 * subnet) and waits until they talk.
 */
export async function readyLab(lab: BenchLab, timeoutMs = 30_000): Promise<void> {
  for (const l of lab.all()) await readyOne(l, timeoutMs);
}

async function readyOne(l: BenchLab, timeoutMs: number): Promise<void> {
  await l.agents.waitAllReady();
  for (const a of l.agents.agents) {
    const { dataplane } = await l.agents.status(a);
    if (dataplane) l.offload[a.host.name] = dataplane.offload;
  }
  await l.agents.addPods(1);
  // Ready means leased and programmed, but the other host's route may come a moment later (its
  // peer sync runs on membership changes and at every reconcile): poll until a ping gets through.
  const until = Date.now() + timeoutMs;
  const target: IpAddr = l.family === 6 ? l.server.addr6! : l.server.addr;
  while ((await ping(l.client, target, { count: 1, timeoutS: 1 })).received === 0) {
    if (Date.now() > until) {
      // The agents' logs go with their work dir at teardown, so their last lines go into the error.
      const logs = await Promise.all(l.agents.agents.map(async (a) => `${a.host.name}:\n${await l.agents.logTail(a)}`));
      throw new WeftError(
        "BENCH_NO_CONNECTIVITY",
        `${l.setup.name}: ${l.client.name} cannot reach ${l.server.name} after ${timeoutMs / 1000} s; agents' last log lines:\n${logs.join("\n")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The agents' pids, for /proc accounting (`ip netns exec` execs the agent, so this is its pid). */
export function agentPids(l: BenchLab): number[] {
  return l.agents.agents.map((a) => {
    const p = a.process;
    if (!running(p) || p.pid === undefined)
      throw new WeftError("BENCH_AGENT_GONE", `${l.setup.name}: ${a.host.name}'s agent ${exitText(p)}`);
    return p.pid;
  });
}

/**
 * Throws BENCH_AGENT_GONE if an agent of the setup is not running, in its IPv4 lab or its IPv6
 * sibling: after a failed run, whether the failure was an agent's exit (which voids every later
 * figure of the setup) or only the run's.
 */
export function checkAgents(lab: BenchLab): void {
  for (const l of lab.all()) agentPids(l);
}

/** Stops the agents (graceful leave, devices removed) and removes every namespace of the lab (and of its IPv6 sibling). */
export async function teardownLab(lab: BenchLab): Promise<void> {
  lab.tornDown = true;
  await settleAll(
    lab.all().map(async (l) => {
      try {
        await l.agents.stopAll();
      } finally {
        await l.lab.destroy();
      }
    }),
  );
}

/**
 * For an interrupt, synchronously, before anything removes the namespaces' names: kills every
 * process inside the labs' namespaces except the agents (iperf3 servers and clients, ping), so no
 * traffic tool outlives the run or keeps a namespace alive. The agents are stopped afterwards by
 * teardownLab, gracefully.
 */
export function killTrafficTools(labs: BenchLab[]): void {
  for (const l of labs.flatMap((x) => x.all())) {
    const agents = new Set(l.agents.agents.map((a) => a.process?.pid));
    const names = [...l.lab.hosts.flatMap((h) => h.pods.map((p) => p.ns.name)), ...l.lab.hosts.map((h) => h.ns.name)];
    for (const name of names) {
      let pids: number[] = [];
      try {
        pids = execFileSync("ip", ["netns", "pids", name], { encoding: "utf8" })
          .split(/\s+/)
          .filter(Boolean)
          .map(Number);
      } catch {
        // the namespace is already gone
      }
      for (const pid of pids) {
        if (agents.has(pid)) continue;
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // exited meanwhile
        }
      }
    }
  }
}
