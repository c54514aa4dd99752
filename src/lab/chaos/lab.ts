// One chaos scenario's world: a lab cluster with real agents (src/lab), the faults on its switch,
// the monitor sampling it, a pod per host, and the figures and notes the scenario reports.
// `close()` stops the agents gracefully, checks that nothing is left in their hosts' kernels, and
// removes everything (namespaces, bystander processes, tmpfs mounts, work dir) — also after a
// failure, and from the runner's Ctrl-C handler.
import { execFile } from "node:child_process";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { formatIpv4 } from "../../net/ipv4.js";
import { formatPrefix6 } from "../../net/ipv6.js";
import { projectFile } from "../../paths.js";
import { LabAgents, type LabAgent, running } from "../agents.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost } from "../cluster.js";
import { ping } from "../traffic.js";
import { Bystander, SwitchFaults, Tmpfs } from "./faults.js";
import { type Family, FAMILIES, hostRoutes, Monitor } from "./observe.js";

const run = promisify(execFile);

export type ChaosBackend = "vxlan" | "host-gw" | "wasm-vxlan";

/** net-conf.json of the lab (one worker for wasm-vxlan: these machines have 2 cores); `dualStack`: IPv6 too, as flannel's EnableIPv6/IPv6Network. */
export function chaosNetConf(backend: ChaosBackend, dualStack = false): object {
  return {
    Network: `${formatIpv4(LAB_POD_NETWORK.addr)}/${LAB_POD_NETWORK.len}`,
    ...(dualStack && { EnableIPv6: true, IPv6Network: formatPrefix6(LAB_POD_NETWORK6) }),
    Backend: backend === "wasm-vxlan" ? { Type: backend, Workers: 1 } : { Type: backend },
  };
}

/** The time bounds the invariants are held to (the full suite: the issue's; the short one: generous, as it asserts invariants, not speed). */
export interface Bounds {
  /** Every node sees every live node (status and routes) this long after a heal or a start. */
  convergeMs: number;
  /** Routes and peer entries to a stopped node are gone this long after it stopped. */
  deadRoutesMs: number;
  /** A killed and restarted node's pod traffic is back this long after the restart. */
  restartTrafficMs: number;
}

export interface Figures {
  /** Seconds until every node saw every live node after the scenario's heal (or last start). */
  convergenceS?: number;
  /** Seconds until every pair of pods pinged after it. */
  trafficS?: number;
  [name: string]: number | undefined;
}

export class ChaosLab {
  readonly figures: Figures = {};
  readonly notes: string[] = [];
  private bystanders: Bystander[] = [];
  private mounts: Tmpfs[] = [];
  private closing?: Promise<void>;

  private constructor(
    readonly lab: LabCluster,
    readonly agents: LabAgents,
    readonly faults: SwitchFaults,
    readonly monitor: Monitor,
    readonly bounds: Bounds,
    private readonly logsTo?: string,
  ) {}

  /**
   * `hosts` hosts on vxlan, the first `seeds` of them the subnet seeds and everyone's join
   * targets; `dualStack`: an IPv6 underlay too, agents and pods in both families (gossip stays on
   * IPv4); `logsTo`: a directory to copy every agent's log into when the lab closes.
   */
  static async open(
    hosts: number,
    seeds: number,
    bounds: Bounds,
    opts: { dualStack?: boolean; logsTo?: string } = {},
  ): Promise<ChaosLab> {
    const dualStack = opts.dualStack ?? false;
    const lab = await LabCluster.create({ tag: "chaos", hosts, ipv6: dualStack });
    let agents: LabAgents | undefined;
    try {
      agents = await LabAgents.prepare(lab, () => chaosNetConf("vxlan", dualStack), seeds);
      const faults = new SwitchFaults(lab);
      const monitor = new Monitor(agents, { faults, families: dualStack ? [4, 6] : [4] });
      monitor.deadRouteBoundMs = bounds.deadRoutesMs;
      monitor.start();
      return new ChaosLab(lab, agents, faults, monitor, bounds, opts.logsTo);
    } catch (error) {
      await agents?.stopAll();
      await lab.destroy();
      throw error;
    }
  }

  get all(): LabAgent[] {
    return this.agents.agents;
  }

  /**
   * Starts an agent (see LabAgents.start: the lab's first `seeds` hosts are the subnet seeds and,
   * unless `join` says otherwise, the join targets); `nodeName` overrides its name; `member:
   * false` for one that must be refused.
   */
  start(a: LabAgent, opts: { join?: LabAgent[]; nodeName?: string; member?: boolean } = {}): void {
    this.agents.start(a, opts.nodeName ? ["--node-name", opts.nodeName] : [], opts.join);
    this.monitor.started(a, opts.member ?? true);
  }

  /** Waits for /readyz; on timeout records a violation and resolves false. */
  async ready(a: LabAgent, timeoutMs = this.bounds.convergeMs): Promise<boolean> {
    try {
      await this.agents.waitReady(a, timeoutMs);
      return true;
    } catch (err) {
      const lines = (err as Error).message.split("\n");
      this.monitor.violate("not-ready", `${lines[0]} ${lines.at(-1)?.slice(0, 200) ?? ""}`);
      return false;
    }
  }

  /** Gives the host one pod, through the CNI plugins and the agent's subnet.env, once. */
  async addPod(a: LabAgent): Promise<void> {
    if (a.host.pods.length > 0) return;
    await this.lab.addPodsFromSubnetFile(a.host, this.agents.subnetFile(a), 1);
  }

  /** SIGKILL (a crash) or SIGTERM (a leave); `comingBack`: it stays in the expected membership. */
  async stop(a: LabAgent, signal: "SIGKILL" | "SIGTERM", comingBack: boolean): Promise<void> {
    await this.agents.stop(a, signal);
    this.monitor.stopped(a, comingBack);
    if (signal === "SIGTERM") await this.checkClean(a);
  }

  /** After a graceful stop nothing of the agent's may be left in its host's kernel. */
  private async checkClean(a: LabAgent): Promise<void> {
    const left = await leftovers(a.host);
    if (left.length > 0)
      this.monitor.violate("kernel-leftovers", `${a.host.name} after its agent stopped: ${left.join("; ")}`);
  }

  /** The address families the agents run. */
  get families(): readonly Family[] {
    return this.monitor.families;
  }

  /** Ordered pairs of the given agents' pods that do not answer one ping now, in each family the agents run. */
  async unreachablePairs(among: LabAgent[] = [...this.monitor.members]): Promise<string[]> {
    // A member without a pod (it never got a subnet) has no traffic at all.
    const withPods = among.filter((a) => a.host.pods.length > 0);
    const podless = among.filter((a) => a.host.pods.length === 0).map((a) => `${a.host.name}: no pod`);
    const pairs = withPods.flatMap((a) => withPods.filter((b) => b !== a).map((b) => [a, b] as const));
    // ping gives up at once, without output, when there is no route at all (or, LAB_NO_ADDRESS,
    // the pod has no address of the family): unreachable too.
    const answered = (a: LabAgent, b: LabAgent, family: Family) =>
      ping(a.host.pods[0], family === 6 ? b.host.pods[0].addr6! : b.host.pods[0].addr, {
        count: 1,
        timeoutS: 1,
      }).then(
        (r) => r.received === 1,
        () => false,
      );
    const results = await Promise.all(
      this.families.flatMap((family) =>
        pairs.map(async ([a, b]) =>
          (await answered(a, b, family))
            ? ""
            : `${a.host.name}->${b.host.name}${family === 4 ? "" : ` (${FAMILIES[family].name})`}`,
        ),
      ),
    );
    return [...podless, ...results.filter(Boolean)];
  }

  /**
   * Pings every pair until all answer; seconds since `since` (a violation too when that is past
   * `boundMs`: a round that started in time may answer late), or undefined (and a violation)
   * when still failing past `boundMs`.
   */
  async waitTraffic(since: number, boundMs: number, what: string, among?: LabAgent[]): Promise<number | undefined> {
    let failing: string[] = [];
    for (;;) {
      failing = await this.unreachablePairs(among);
      if (failing.length === 0) {
        const s = (Date.now() - since) / 1000;
        if (s * 1000 > boundMs) this.monitor.violate("late-traffic", `${what}: pods all reachable only ${s} s after`);
        return s;
      }
      if (Date.now() - since > boundMs) {
        this.monitor.violate(
          "no-traffic",
          `${what}: pods not all reachable ${boundMs / 1000} s after; failing: ${failing.slice(0, 6).join(", ")}`,
        );
        return undefined;
      }
      await sleep(200);
    }
  }

  async bystander(): Promise<Bystander> {
    const b = await Bystander.attach(this.lab, "chaos");
    this.bystanders.push(b);
    return b;
  }

  /** A tmpfs of `bytes` at `dir` for `host` (see Tmpfs), unmounted at close. */
  async tmpfs(host: LabHost, dir: string, bytes: number): Promise<Tmpfs> {
    const t = await Tmpfs.mount(host.ns, dir, bytes);
    this.mounts.push(t);
    return t;
  }

  /** Runs `weft <args>` (e.g. reclaim) against an agent; resolves with its exit code and output. */
  async cli(args: string[]): Promise<{ code: number; out: string }> {
    try {
      const r = await run(process.execPath, [projectFile("dist", "src", "cli", "main.js"), ...args], {
        timeout: 30_000,
      });
      return { code: 0, out: (r.stdout + r.stderr).trim() };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string; message: string };
      return {
        code: typeof e.code === "number" ? e.code : 1,
        out: ((e.stdout ?? "") + (e.stderr ?? "") || e.message).trim(),
      };
    }
  }

  /**
   * Stops the running agents gracefully and checks their hosts' kernels are clean (no overlay
   * device, pod route, permanent neighbour, FDB entry or nftables table left), then removes
   * everything. Hosts whose agent was killed and never restarted are not checked: a crash
   * cannot clean up, and the next start reuses what it left.
   */
  close(): Promise<void> {
    // One close: a second caller (the Ctrl-C handler and the scenario's finally) waits for it.
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    try {
      await this.monitor.stop();
      const up = this.all.filter((a) => running(a.process));
      await Promise.all(up.map((a) => this.agents.stop(a, "SIGTERM")));
      for (const a of up) await this.checkClean(a);
    } finally {
      await Promise.allSettled(this.all.map((a) => this.agents.stop(a, "SIGKILL")));
      await Promise.allSettled(this.bystanders.map((b) => b.destroy()));
      await Promise.allSettled(this.mounts.map((t) => t.unmount()));
      if (this.logsTo) {
        await mkdir(this.logsTo, { recursive: true });
        await Promise.allSettled(
          this.all.map((a) => copyFile(join(a.dir, "agent.log"), join(this.logsTo!, `${a.host.name}.log`))),
        );
      }
      await this.agents.stopAll().catch(() => undefined);
      await this.lab.destroy();
    }
  }
}

/** What an agent may leave in its host's kernel, found there now. */
export async function leftovers(h: LabHost): Promise<string[]> {
  const out: string[] = [];
  const links = await h.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]);
  for (const l of links)
    if (/^(flannel(-v6)?\.\d+|flannel0|weft(-v6)?\.\d+)$/.test(l.ifname)) out.push(`device ${l.ifname}`);
  for (const { routes, userspaceDevice } of (await hostRoutes(h, [4, 6])).values()) {
    for (const [dst, to] of routes) out.push(`route ${dst} -> ${to}`);
    if (userspaceDevice) out.push(`route into ${userspaceDevice}`);
  }
  const neighs = await h.ns.kernel.ipJson<Array<{ dst: string; dev: string }>>(["neigh", "show", "nud", "permanent"]);
  for (const n of neighs) out.push(`neighbour ${n.dst} dev ${n.dev}`);
  const fdbs = await h.ns.kernel.bridgeJson<Array<{ mac: string; dst?: string; ifname: string }>>(["fdb", "show"]);
  for (const f of fdbs) if (f.dst) out.push(`fdb ${f.mac} dst ${f.dst} dev ${f.ifname}`);
  // Only the agent's own table: the CNI plugins (portmap) keep theirs.
  for (const t of await h.ns.kernel.nftTables()) if (t.split(" ")[1].startsWith("weft")) out.push(`nft table ${t}`);
  return out;
}
