// The benchmark's topology: for each setup (settings.ts) its own two-host lab cluster (src/lab)
// with one pod per host and real weft agents running that setup on both hosts. All labs are built
// before the first measurement, so workloads can alternate between setups run after run.
import { execFileSync } from "node:child_process";
import type { BackendType } from "../backends/backend.js";
import type { OffloadState } from "../dataplane/offload.js";
import { WeftError } from "../errors.js";
import { LabAgents } from "../lab/agents.js";
import { LabCluster, LAB_POD_NETWORK, type LabPod } from "../lab/cluster.js";
import { ping } from "../lab/traffic.js";
import { formatPrefix } from "../net/ipv4.js";
import type { BenchSetup } from "./settings.js";

/** One setup's lab: two hosts, their agents, and (once ready) one pod per host. */
export class BenchLab {
  /**
   * Once ready, per host, the offloads its userspace dataplane really runs with (from the agent's
   * status): "on" falls back to off where the kernel lacks a feature, and the report must say so.
   */
  offload: Record<string, OffloadState> = {};

  constructor(
    readonly setup: BenchSetup,
    /** The net-conf.json both agents run with (recorded in the report). */
    readonly netConf: object,
    readonly lab: LabCluster,
    readonly agents: LabAgents,
  ) {}

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
const TAGS: Record<BackendType, string> = { vxlan: "bench-vx", "host-gw": "bench-hg", udp: "bench-ud", "wasm-vxlan": "bench-wv" };

/**
 * Builds one setup's lab and starts its agents without waiting for them; `labs` receives the
 * lab as soon as it exists, so a failure or an interrupt later still tears it down.
 */
export async function buildLab(setup: BenchSetup, labs: BenchLab[]): Promise<BenchLab> {
  const lab = await LabCluster.create({ tag: `${TAGS[setup.backend]}${setup.offloads === false ? "-off" : ""}`, hosts: 2 });
  const netConf = { Network: formatPrefix(LAB_POD_NETWORK), Backend: { Type: setup.backend, ...(setup.offloads !== undefined && { Offloads: setup.offloads }) } };
  let agents: LabAgents;
  try {
    agents = await LabAgents.prepare(lab, () => netConf);
  } catch (error) {
    await lab.destroy();
    throw error;
  }
  const entry = new BenchLab(setup, netConf, lab, agents);
  labs.push(entry);
  agents.startAll();
  return entry;
}

/**
 * Waits for both agents, notes their dataplanes' offloads, gives each host a pod (in its leased
 * subnet) and waits until they talk.
 */
export async function readyLab(l: BenchLab, timeoutMs = 30_000): Promise<void> {
  await l.agents.waitAllReady();
  for (const a of l.agents.agents) {
    const { dataplane } = await l.agents.status(a);
    if (dataplane) l.offload[a.host.name] = dataplane.offload;
  }
  await l.agents.addPods(1);
  // Ready means leased and programmed, but the other host's route may come a moment later (its
  // peer sync runs on membership changes and at every reconcile): poll until a ping gets through.
  const until = Date.now() + timeoutMs;
  while ((await ping(l.client, l.server.addr, { count: 1, timeoutS: 1 })).received === 0) {
    if (Date.now() > until) {
      // The agents' logs go with their work dir at teardown, so their last lines go into the error.
      const logs = await Promise.all(l.agents.agents.map(async (a) => `${a.host.name}:\n${await l.agents.logTail(a)}`));
      throw new WeftError("BENCH_NO_CONNECTIVITY", `${l.setup.name}: ${l.client.name} cannot reach ${l.server.name} after ${timeoutMs / 1000} s; agents' last log lines:\n${logs.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The agents' pids, for /proc accounting (`ip netns exec` execs the agent, so this is its pid). */
export function agentPids(l: BenchLab): number[] {
  return l.agents.agents.map((a) => {
    const pid = a.process?.pid;
    if (pid === undefined || a.process!.exitCode !== null) throw new WeftError("BENCH_AGENT_GONE", `${l.setup.name}: ${a.host.name}'s agent is not running (exit code ${a.process?.exitCode})`);
    return pid;
  });
}

/** Stops the agents (graceful leave, devices removed) and removes every namespace of the lab. */
export async function teardownLab(l: BenchLab): Promise<void> {
  try {
    await l.agents.stopAll();
  } finally {
    await l.lab.destroy();
  }
}

/**
 * For an interrupt, synchronously, before anything removes the namespaces' names: kills every
 * process inside the labs' namespaces except the agents (iperf3 servers and clients, ping), so no
 * traffic tool outlives the run or keeps a namespace alive. The agents are stopped afterwards by
 * teardownLab, gracefully.
 */
export function killTrafficTools(labs: BenchLab[]): void {
  for (const l of labs) {
    const agents = new Set(l.agents.agents.map((a) => a.process?.pid));
    const names = [...l.lab.hosts.flatMap((h) => h.pods.map((p) => p.ns.name)), ...l.lab.hosts.map((h) => h.ns.name)];
    for (const name of names) {
      let pids: number[] = [];
      try {
        pids = execFileSync("ip", ["netns", "pids", name], { encoding: "utf8" }).split(/\s+/).filter(Boolean).map(Number);
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
