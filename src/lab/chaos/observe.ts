// What the chaos suite sees of a lab cluster, once a second, from every running agent: its own
// /status (over weft.sock), its subnet.env, and its host's kernel routes — read with plain
// `ip -json` and `bridge -json`, and followed to the host they lead to (a vxlan route's gateway
// → permanent neighbour → FDB entry → underlay address; a host-gw route's gateway is the
// underlay address). From each snapshot it checks the invariants that must hold at every
// moment, for every address family the agents run, and records the figures the others need.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseSubnetEnv, type SubnetEnv } from "../../agent/subnet-env.js";
import { formatIpv4, formatPrefix, parsePrefix, prefixContains, prefixesOverlap } from "../../net/ipv4.js";
import { hostOfHostPort } from "../../net/ip.js";
import { formatIpv6, formatPrefix6, parsePrefix6, prefixContains6, prefixesOverlap6 } from "../../net/ipv6.js";
import { type AgentStatus, type LabAgent, type LabAgents, running } from "../agents.js";
import { LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost } from "../cluster.js";
import type { SwitchFaults } from "./faults.js";

export type Family = 4 | 6;

/** How the monitor reads one address family: the lab's pod network, a host's underlay address, the /status and subnet.env keys. */
export interface FamilyReader {
  /** "IPv4" or "IPv6", for messages. */
  name: string;
  /** A route's destination (`ip -json`'s dst) inside the lab's pod network, normalised, and whether it is the whole network or wider (a userspace dataplane's device route); undefined outside it. */
  podRoute(dst: string): { prefix: string; wide: boolean } | undefined;
  overlap(a: string, b: string): boolean;
  underlay(a: LabAgent): string;
  subnet(s: AgentStatus): string | undefined;
  peers(s: AgentStatus): AgentStatus["peers"];
  envSubnet(e: SubnetEnv): string | undefined;
  vtepMac(s: AgentStatus): string | undefined;
}

export const FAMILIES: Record<Family, FamilyReader> = {
  4: {
    name: "IPv4",
    podRoute(dst) {
      if (!/^\d+\.\d+\.\d+\.\d+/.test(dst)) return undefined;
      const p = parsePrefix(dst.includes("/") ? dst : `${dst}/32`);
      if (!prefixContains(LAB_POD_NETWORK, p.addr)) return undefined;
      return { prefix: formatPrefix(p), wide: p.len <= LAB_POD_NETWORK.len };
    },
    overlap: (a, b) => prefixesOverlap(parsePrefix(a), parsePrefix(b)),
    underlay: (a) => formatIpv4(a.host.underlayAddr),
    subnet: (s) => s.subnet,
    peers: (s) => s.peers,
    envSubnet: (e) => e.v4 && formatPrefix(e.v4.subnet),
    vtepMac: (s) => s.backend?.vtepMac,
  },
  6: {
    name: "IPv6",
    podRoute(dst) {
      if (!dst.includes(":")) return undefined;
      const p = parsePrefix6(dst.includes("/") ? dst : `${dst}/128`);
      if (!prefixContains6(LAB_POD_NETWORK6, p.addr)) return undefined;
      return { prefix: formatPrefix6(p), wide: p.len <= LAB_POD_NETWORK6.len };
    },
    overlap: (a, b) => prefixesOverlap6(parsePrefix6(a), parsePrefix6(b)),
    // A host without an IPv6 underlay has no IPv6 routes either ("-" matches none).
    underlay: (a) => (a.host.underlayAddr6 === undefined ? "-" : formatIpv6(a.host.underlayAddr6)),
    subnet: (s) => s.subnet6,
    peers: (s) => s.peers6 ?? [],
    envSubnet: (e) => e.v6 && formatPrefix6(e.v6.subnet),
    vtepMac: (s) => s.backend6?.vtepMac,
  },
};

/** One family of one agent as seen at one moment. */
export interface FamilyView {
  /** subnet.env's subnet (the network address and length). */
  envSubnet?: string;
  /** Routes into the pod network other than the host's own cni0: destination → underlay address it leads to ("?" when it leads nowhere known). */
  routes: Map<string, string>;
  /** Network-wide routes into a userspace dataplane's device (the peers live in the dataplane). */
  userspaceDevice?: string;
}

/** One agent as seen at one moment; undefined parts did not answer. */
export interface NodeView {
  agent: LabAgent;
  status?: AgentStatus;
  /** Per family the agents run. */
  families: Map<Family, FamilyView>;
}

export interface Snapshot {
  at: number;
  views: NodeView[];
}

export interface Violation {
  kind: string;
  detail: string;
  first: number;
  last: number;
  count: number;
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  protocol?: string;
}

/** Reads, per family, the kernel state of one host that says where pod traffic goes. */
export async function hostRoutes(
  h: LabHost,
  families: readonly Family[],
): Promise<Map<Family, { routes: Map<string, string>; userspaceDevice?: string }>> {
  const [batches, fdbs] = await Promise.all([
    Promise.all(families.map((f) => h.ns.kernel.ipJsonBatch<unknown[]>(["route show", "neigh show nud permanent"], f))),
    h.ns.kernel.bridgeJson<Array<{ mac: string; dst?: string; ifname: string }>>(["fdb", "show"]).catch(() => []),
  ]);
  const out = new Map<Family, { routes: Map<string, string>; userspaceDevice?: string }>();
  for (const [i, family] of families.entries()) {
    const { answers } = batches[i];
    const routes = (answers[0] ?? []) as IpRoute[];
    const neighs = (answers[1] ?? []) as Array<{ dst: string; lladdr?: string; dev: string }>;
    const found = new Map<string, string>();
    let userspaceDevice: string | undefined;
    for (const r of routes) {
      // The kernel's own routes (cni0's subnet; with IPv6, the VTEP's /128 address) are not the agent's.
      if (r.dst === "default" || r.dev === "cni0" || r.protocol === "kernel") continue;
      const dst = FAMILIES[family].podRoute(r.dst);
      if (!dst) continue;
      if (dst.wide) {
        userspaceDevice = r.dev;
        continue;
      }
      let to = "?";
      if (r.gateway && r.dev === "eth0") to = r.gateway;
      else if (r.gateway) {
        const mac = neighs.find((n) => n.dst === r.gateway && n.dev === r.dev)?.lladdr;
        to = fdbs.find((f) => f.mac === mac && f.ifname === r.dev && f.dst)?.dst ?? "?";
      }
      found.set(dst.prefix, to);
    }
    out.set(family, { routes: found, userspaceDevice });
  }
  return out;
}

/** The agents of snapshot `s` still running now: only they count as subnet holders. */
export function liveIn(s: Snapshot): Set<LabAgent> {
  return new Set(s.views.map((v) => v.agent).filter((a) => running(a.process)));
}

/** A violation the subnet check found: its kind, detail (the same each time it is seen) and the sources that said so. */
export interface Finding {
  kind: "same-subnet" | "route-to-self";
  detail: string;
  more: string;
}

/**
 * The subnet check, for each of `families`: no two `live` agents hold overlapping subnets by
 * any source in `s` (their own /status, their subnet.env once ready, any agent's /status peers
 * or routes), and no agent routes to itself. The monitor runs it on every sample, a scenario on
 * its settled outcome; `agents`: the lab's agents, to tell which one an underlay address is.
 */
export function subnetFindings(
  s: Snapshot,
  live: ReadonlySet<LabAgent>,
  agents: readonly LabAgent[],
  families: readonly Family[],
): Finding[] {
  return families.flatMap((family) => familyFindings(s, live, agents, family));
}

function familyFindings(
  s: Snapshot,
  live: ReadonlySet<LabAgent>,
  agents: readonly LabAgent[],
  family: Family,
): Finding[] {
  const f = FAMILIES[family];
  const found: Finding[] = [];
  const byUnderlay = new Map(agents.map((a) => [f.underlay(a), a]));
  type Claim = { subnet: string; holder: LabAgent; source: string };
  const claims: Claim[] = [];
  for (const v of s.views) {
    if (!live.has(v.agent)) continue;
    const me = v.agent.host.name;
    const fv = v.families.get(family)!;
    const own = v.status && f.subnet(v.status);
    if (own) claims.push({ subnet: own, holder: v.agent, source: `${me}'s /status` });
    // subnet.env counts once the agent answers: a restarted agent rewrites it before it is ready.
    if (fv.envSubnet && v.status?.ready)
      claims.push({ subnet: fv.envSubnet, holder: v.agent, source: `${me}'s subnet.env` });
    for (const p of v.status ? f.peers(v.status) : []) {
      const holder = byUnderlay.get(p.underlay);
      if (holder && live.has(holder)) claims.push({ subnet: p.subnet, holder, source: `${me}'s /status peers` });
    }
    for (const [dst, to] of fv.routes) {
      const holder = byUnderlay.get(to);
      if (holder === v.agent) found.push({ kind: "route-to-self", detail: `${me} routes ${dst} to itself`, more: "" });
      else if (holder && live.has(holder)) claims.push({ subnet: dst, holder, source: `${me}'s routes` });
    }
  }
  // One finding per pair of holders and subnets, naming every source that said so.
  const conflicts = new Map<string, Set<string>>();
  for (let i = 0; i < claims.length; i++) {
    for (let j = i + 1; j < claims.length; j++) {
      const [x, y] = [claims[i], claims[j]].sort((p, q) => p.holder.host.name.localeCompare(q.holder.host.name));
      if (x.holder === y.holder || !f.overlap(x.subnet, y.subnet)) continue;
      const key = `${x.subnet} held by ${x.holder.host.name} and ${y.subnet} by ${y.holder.host.name}`;
      const sources = conflicts.get(key) ?? new Set<string>();
      sources.add(x.source).add(y.source);
      conflicts.set(key, sources);
    }
  }
  for (const [key, sources] of conflicts)
    found.push({ kind: "same-subnet", detail: key, more: `, according to ${[...sources].sort().join(", ")}` });
  return found;
}

export interface MonitorOptions {
  faults?: SwitchFaults;
  /** A node running for less than this, or cut from an observer less than this ago, may still be seen dead without it counting as a false death. */
  settleMs?: number;
  /** The address families the agents run (default IPv4 only); every invariant is checked for each. */
  families?: readonly Family[];
}

/**
 * Samples every running agent once a second and checks, at every sample and for every family
 * the agents run:
 * - no two running agents hold overlapping subnets — by their own /status, their subnet.env,
 *   any agent's /status peers, or any agent's routes;
 * - routes and peers pointing at a stopped agent are gone within `deadRouteBoundMs` of its stop;
 * and counts false deaths (an agent seen dead by another while it runs and the two can reach
 * each other). Convergence ("every node sees every other, with the right subnet, in /status and
 * in its routes", per family) is checked on demand by `waitConverged`.
 */
export class Monitor {
  readonly violations = new Map<string, Violation>();
  falseDeaths = 0;
  /** Agents that belong in the cluster (started and not expected to be refused). */
  readonly members = new Set<LabAgent>();
  private readonly startedAt = new Map<LabAgent, number>();
  private readonly stoppedAt = new Map<LabAgent, number>();
  private readonly cutSince = new Map<string, number>();
  private readonly seenDead = new Set<string>();
  private running = false;
  private loop?: Promise<void>;
  private listeners: Array<(s: Snapshot) => void> = [];
  readonly origin = Date.now();
  readonly families: readonly Family[];

  constructor(
    private readonly agents: LabAgents,
    private readonly opts: MonitorOptions = {},
  ) {
    this.families = opts.families ?? [4];
  }

  /** Seconds since the monitor was made (for violation times). */
  private rel(t: number): number {
    return Math.round((t - this.origin) / 100) / 10;
  }

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const t0 = Date.now();
        try {
          this.check(await this.sample());
        } catch (err) {
          this.violate("monitor", `sampling failed: ${(err as Error).message}`);
        }
        await sleep(Math.max(0, 1000 - (Date.now() - t0)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** Call right after starting (or restarting) an agent; `member` false for one expected to be refused. */
  started(a: LabAgent, member = true): void {
    this.startedAt.set(a, Date.now());
    this.stoppedAt.delete(a);
    if (member) this.members.add(a);
  }

  /** Call right after an agent stopped (killed or left); it leaves the expected membership unless `comingBack`. */
  stopped(a: LabAgent, comingBack = false): void {
    this.stoppedAt.set(a, Date.now());
    if (!comingBack) this.members.delete(a);
  }

  /** Call after changing partitions, so that deaths across a fresh cut are not counted as false. */
  partitionChanged(): void {
    const now = Date.now();
    const faults = this.opts.faults;
    for (const x of this.agents.agents) {
      for (const y of this.agents.agents) {
        const key = `${x.host.name}|${y.host.name}`;
        if (faults?.cut(x.host, y.host)) {
          if (!this.cutSince.has(key)) this.cutSince.set(key, now);
        } else if (this.cutSince.has(key)) this.cutSince.set(key, -now); // healed at `now`
      }
    }
  }

  /** Records a violation; the same kind and detail again only counts (`more` is kept from the first time). */
  violate(kind: string, detail: string, more = ""): void {
    const now = Date.now();
    const key = `${kind}: ${detail}`;
    const v = this.violations.get(key);
    if (v) {
      v.last = this.rel(now);
      v.count++;
    } else
      this.violations.set(key, { kind, detail: detail + more, first: this.rel(now), last: this.rel(now), count: 1 });
  }

  async sample(): Promise<Snapshot> {
    const up = this.agents.agents.filter((a) => running(a.process));
    const views = await Promise.all(
      up.map(async (a): Promise<NodeView> => {
        const [status, env, kernel] = await Promise.all([
          this.agents.status(a).catch(() => undefined),
          readFile(join(a.dir, "subnet.env"), "utf8").then(parseSubnetEnv, () => undefined),
          hostRoutes(a.host, this.families).catch(() => undefined),
        ]);
        const families = new Map(
          this.families.map((f): [Family, FamilyView] => [
            f,
            { envSubnet: env && FAMILIES[f].envSubnet(env), routes: new Map(), ...kernel?.get(f) },
          ]),
        );
        return { agent: a, status, families };
      }),
    );
    return { at: Date.now(), views };
  }

  /** Resolves with the next snapshot the loop takes. */
  next(): Promise<Snapshot> {
    return new Promise((resolve) => this.listeners.push(resolve));
  }

  private check(s: Snapshot): void {
    const live = liveIn(s);
    for (const x of subnetFindings(s, live, this.agents.agents, this.families)) this.violate(x.kind, x.detail, x.more);
    this.checkDead(s, live);
    this.countFalseDeaths(s, live);
    if (this.missing(s).length > 0) this.convergedSince = undefined;
    else this.convergedSince ??= s.at;
    for (const l of this.listeners.splice(0)) l(s);
  }

  /** The first sample of the current converged stretch (undefined: not converged now). */
  private convergedSince?: number;

  /** Routes and /status peers that still point at a stopped agent, longer than the bound. */
  deadRouteBoundMs = 30_000;
  /** For each stop (`name@time`): seconds until the last route or peer entry to it went. */
  private readonly deadGoneAfter = new Map<string, number>();

  /** Seconds from the agent's last stop until nobody routed to it or had it as a peer (undefined: not yet). */
  routesGoneAfter(a: LabAgent): number | undefined {
    const at = this.stoppedAt.get(a);
    return at === undefined ? undefined : this.deadGoneAfter.get(`${a.host.name}@${at}`);
  }

  private checkDead(s: Snapshot, running: Set<LabAgent>): void {
    for (const [a, at] of this.stoppedAt) {
      if (running.has(a)) continue;
      const pointing = s.views.filter(
        (v) =>
          running.has(v.agent) &&
          this.families.some((family) => {
            const f = FAMILIES[family];
            const dead = f.underlay(a);
            return (
              [...v.families.get(family)!.routes.values()].includes(dead) ||
              (v.status ? f.peers(v.status) : []).some((p) => p.underlay === dead)
            );
          }),
      );
      const key = `${a.host.name}@${at}`;
      if (pointing.length === 0) {
        if (!this.deadGoneAfter.has(key)) this.deadGoneAfter.set(key, (s.at - at) / 1000);
      } else {
        this.deadGoneAfter.delete(key);
        if (s.at - at > this.deadRouteBoundMs) {
          this.violate(
            "dead-routes",
            `${pointing.map((v) => v.agent.host.name).join(", ")} still route to ${a.host.name} more than ${this.deadRouteBoundMs / 1000} s after it stopped`,
          );
        }
      }
    }
  }

  private countFalseDeaths(s: Snapshot, running: Set<LabAgent>): void {
    const settle = this.opts.settleMs ?? 10_000;
    // Members are known at their gossip address: IPv4, or IPv6 in brackets with an IPv6 underlay.
    const byAddr = new Map(
      this.agents.agents.flatMap((a) => [
        [FAMILIES[4].underlay(a), a] as const,
        ...(a.host.underlayAddr6 !== undefined ? [[formatIpv6(a.host.underlayAddr6), a] as const] : []),
      ]),
    );
    for (const v of s.views) {
      for (const m of v.status?.members ?? []) {
        const y = m.addr ? byAddr.get(hostOfHostPort(m.addr)) : undefined;
        if (!y || y === v.agent) continue;
        const key = `${v.agent.host.name}|${y.host.name}|${m.name}`;
        if (m.state !== "dead") {
          this.seenDead.delete(key);
          continue;
        }
        if (this.seenDead.has(key)) continue;
        this.seenDead.add(key);
        const up = running.has(y) && s.at - (this.startedAt.get(y) ?? 0) > settle;
        const cut = this.cutSince.get(`${v.agent.host.name}|${y.host.name}`);
        // A positive time: cut since then; negative: healed then.
        const reachable = cut === undefined || (cut < 0 && s.at + cut > settle);
        if (up && reachable) {
          this.falseDeaths++;
          this.violate(
            "false-death",
            `${v.agent.host.name} declared ${m.name} (${y.host.name}) dead while it ran and was reachable`,
          );
        }
      }
    }
  }

  /**
   * Whether every member agent is ready and sees every other member alive, as a peer with the
   * subnet that member reports for itself, and (kernel backends) routes to it; and nobody routes
   * to an agent outside the membership. Returns what is missing, empty when converged.
   */
  missing(s: Snapshot): string[] {
    const out: string[] = [];
    const views = new Map(s.views.map((v) => [v.agent, v]));
    const members = [...this.members];
    for (const a of members) {
      const v = views.get(a);
      const me = a.host.name;
      if (!v?.status) {
        out.push(`${me}: no /status`);
        continue;
      }
      if (!v.status.ready) out.push(`${me}: not ready`);
      for (const family of this.families) {
        const f = FAMILIES[family];
        const fv = v.families.get(family)!;
        // IPv4 keeps its messages as they were; IPv6's name their family.
        const fam = family === 4 ? "" : ` (${f.name})`;
        for (const b of members) {
          if (b === a) continue;
          const theirs = views.get(b)?.status;
          const own = theirs && f.subnet(theirs);
          const peer = f.peers(v.status).find((p) => p.underlay === f.underlay(b));
          if (!own) out.push(`${me}: ${b.host.name} holds no subnet${fam}`);
          else if (!peer) out.push(`${me}: ${b.host.name} not a peer${fam}`);
          else if (peer.subnet !== own) out.push(`${me}: sees ${b.host.name} at ${peer.subnet}, it holds ${own}`);
          if (own && !fv.userspaceDevice && fv.routes.get(own) !== f.underlay(b))
            out.push(`${me}: no route ${own} -> ${b.host.name}`);
        }
        for (const [dst, to] of fv.routes) {
          const holder = members.find((b) => f.underlay(b) === to);
          if (!holder) out.push(`${me}: routes ${dst} to ${to}, not a member`);
        }
      }
    }
    return out;
  }

  /**
   * Waits until the cluster has converged (`missing` empty), sampling once a second; resolves
   * with the seconds from `since` to the first sample of that converged stretch (which may come
   * before this call, while the scenario was busy), a violation too when that is past `boundMs`;
   * or undefined (and a violation) when still not converged past `boundMs`.
   */
  async waitConverged(since: number, boundMs: number, what: string): Promise<number | undefined> {
    let lastMissing: string[] = [];
    for (;;) {
      const s = await this.next();
      lastMissing = this.missing(s);
      if (lastMissing.length === 0) {
        const at = Math.max(since, this.convergedSince ?? s.at);
        if (at - since > boundMs)
          this.violate("late-convergence", `${what}: converged only ${(at - since) / 1000} s after`);
        return (at - since) / 1000;
      }
      if (s.at - since > boundMs) {
        this.violate(
          "no-convergence",
          `${what}: not converged ${boundMs / 1000} s after; missing: ${lastMissing.slice(0, 6).join("; ")}${lastMissing.length > 6 ? ` (+${lastMissing.length - 6})` : ""}`,
        );
        return undefined;
      }
    }
  }
}
