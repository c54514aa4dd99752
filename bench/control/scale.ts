// Membership at scale, in the deterministic simulator (a benchmark, not a test; nothing here is
// asserted). For each packet-loss level (0%, 5%): 1,000 nodes join in a wave, steady-state
// traffic is measured, single nodes join the settled cluster, and 1% of the nodes crash at once.
// Two last runs keep one node slow under 5% loss (see slowNode).
// `npm run build:ts && node dist/bench/control/scale.js --help` lists the options.
//
// Reports, per scenario: time until every node knows a new node / a failure (p50/p99/max),
// false suspicions and false deaths (about nodes that never failed), and bytes sent per node per
// second at steady state (whole frames: encryption and headers included).
import { encode } from "@msgpack/msgpack";
import { Command, InvalidArgumentError, Option } from "commander";
import { percentile } from "../../src/bench/stats.js";
import { profiles, type GossipProfile, type MemberlistConfig } from "../../src/control/gossip/config.js";
import type { EventDelegate, NodeView } from "../../src/control/gossip/delegate.js";
import { pushPullInterval } from "../../src/control/gossip/memberlist.js";
import type { GossipCounters } from "../../src/control/gossip/observability.js";
import { SimCluster, type SimNode } from "../../test/control/sim/cluster.js";
import { listOf, numberValue, oneOf, wholeNumber } from "../cli-options.js";

interface Args {
  nodes: number;
  seed: number;
  waveMs: number;
  singles: number;
  steadyMs: number;
  /** Rounds of 1% of the nodes crashing at once (so a crash p99 rests on enough crashes). */
  crashRounds: number;
  quick: boolean;
  losses: number[];
  slow: ("stretched" | "starved")[];
  /** Settings that differ from the LAN profile (none: the production defaults are measured). */
  overrides: Partial<MemberlistConfig>;
}

const SLOW = ["stretched", "starved"] as const;

/** A list where "none" is the empty list (skip those runs). */
const orNone =
  <T>(parse: (v: string) => T[]) =>
  (v: string): T[] =>
    v === "none" ? [] : parse(v);

/** One `--set key=value` (repeatable): a LAN profile setting and a value of its type. */
function setting(kv: string, previous: Record<string, number | boolean> = {}): Record<string, number | boolean> {
  const eq = kv.indexOf("=");
  if (eq < 0) throw new InvalidArgumentError("not key=value");
  const [k, v] = [kv.slice(0, eq), kv.slice(eq + 1)];
  if (!Object.hasOwn(profiles.lan, k))
    throw new InvalidArgumentError(`${k}: not a gossip setting (see src/control/gossip/config.ts)`);
  if (typeof profiles.lan[k as keyof GossipProfile] !== "boolean") return { ...previous, [k]: numberValue()(v) };
  if (v !== "true" && v !== "false") throw new InvalidArgumentError(`${k} takes true or false`);
  return { ...previous, [k]: v === "true" };
}

function parseArgs(argv: string[]): Args {
  const o = new Command("bench:gossip")
    .description(
      "membership at scale in the deterministic gossip simulator: per loss level a join wave, steady traffic, single joins and crashes; then one slow node under 5% loss",
    )
    .option(
      "--quick",
      "shorter: 200 nodes, 5 single joins, 1 crash round; slow-node runs of 100 nodes observed 120 s (not 300 s)",
      false,
    )
    .option("--nodes <n>", "nodes in the scale runs (default: 1000; 200 with --quick)", wholeNumber(2))
    .option("--seed <n>", "the simulator's seed (the slow-node runs take seed + 1)", wholeNumber(0), 1)
    .option("--wave-ms <ms>", "simulated time the join wave is spread over", numberValue({ min: 0 }), 10_000)
    .option(
      "--singles <n>",
      "single joins into the settled cluster, 10 s apart (default: 20; 5 with --quick)",
      wholeNumber(0),
    )
    .option(
      "--steady-ms <ms>",
      "steady-state traffic measured over this long (default: one push-pull period at --nodes)",
      numberValue({ min: 1 }),
    )
    .option(
      "--crash-rounds <n>",
      "rounds of 1% of the nodes crashing at once, 20 s apart (default: 5, 50 crashes at 1,000 nodes; 1 with --quick)",
      wholeNumber(0),
    )
    .addOption(
      new Option("--loss <p,...>", "packet-loss levels of the scale runs, as fractions (none: skip them)")
        .argParser(orNone(listOf(numberValue({ min: 0, max: 1 }))))
        .default([0, 0.05], "0,0.05"),
    )
    .addOption(
      new Option("--slow <variants>", "slow-node runs under 5% loss, stretched and/or starved (none: skip them)")
        .argParser(orNone(listOf(oneOf(SLOW))))
        .default([...SLOW], SLOW.join(",")),
    )
    .option(
      "--set <key=value>",
      "override a LAN profile setting, e.g. gossipIntervalMs=200, for trade-off curves (repeatable; the settings: src/control/gossip/config.ts)",
      setting,
    )
    .parse(argv, { from: "user" })
    .opts<{
      quick: boolean;
      nodes?: number;
      seed: number;
      waveMs: number;
      singles?: number;
      steadyMs?: number;
      crashRounds?: number;
      loss: number[];
      slow: Args["slow"];
      set?: Partial<MemberlistConfig>;
    }>();
  const nodes = o.nodes ?? (o.quick ? 200 : 1000);
  return {
    nodes,
    seed: o.seed,
    waveMs: o.waveMs,
    singles: o.singles ?? (o.quick ? 5 : 20),
    // One whole push-pull period, so the steady rate includes each node's full-state exchange.
    steadyMs: o.steadyMs ?? pushPullInterval(profiles.lan.pushPullIntervalMs, nodes),
    // 10 crashes put the p99 on the slowest of them; 5 rounds give 50 at 1,000 nodes.
    crashRounds: o.crashRounds ?? (o.quick ? 1 : 5),
    quick: o.quick,
    losses: o.loss,
    slow: o.slow,
    overrides: o.set ?? {},
  };
}

/** Records when each node first learns that a subject joined, was suspected, or died. */
class Recorder {
  /** subject → observers that have seen it join (this run of the subject). */
  readonly joinedAt = new Map<string, Map<string, number>>();
  readonly deadAt = new Map<string, Map<string, number>>();
  /** subject → when any node suspected it, in order (where a crash's detection time goes). */
  readonly suspectedAt = new Map<string, number[]>();
  /** Distinct (subject, incarnation) suspicions and deaths, for the false-positive counts. */
  readonly suspicions = new Set<string>();
  readonly deaths = new Set<string>();

  constructor(private readonly now: () => number) {}

  delegateFor(observer: string): EventDelegate {
    const mark = (table: Map<string, Map<string, number>>, v: NodeView): void => {
      let m = table.get(v.name);
      if (!m) table.set(v.name, (m = new Map()));
      if (!m.has(observer)) m.set(observer, this.now());
    };
    return {
      notifyJoin: (v) => mark(this.joinedAt, v),
      notifyUpdate: () => {},
      notifyLeave: (v) => {
        if (v.state !== "dead") return;
        mark(this.deadAt, v);
        this.deaths.add(`${v.name}@${v.incarnation}`);
      },
      notifySuspect: (v) => {
        this.suspicions.add(`${v.name}@${v.incarnation}`);
        const times = this.suspectedAt.get(v.name) ?? [];
        if (times.length === 0) this.suspectedAt.set(v.name, times);
        times.push(this.now());
      },
    };
  }

  /** When the last of `observers` learned of the subject (undefined: not all have). */
  allKnew(table: Map<string, Map<string, number>>, subject: string, observers: readonly SimNode[]): number | undefined {
    const m = table.get(subject);
    let last = 0;
    for (const o of observers) {
      const t = m?.get(o.name);
      if (t === undefined) return undefined;
      last = Math.max(last, t);
    }
    return last;
  }

  countAbout(set: Set<string>, subjects: Set<string>): number {
    let n = 0;
    for (const k of set) if (subjects.has(k.slice(0, k.lastIndexOf("@")))) n++;
    return n;
  }
}

function percentiles(xs: number[]): string {
  if (xs.length === 0) return "n/a";
  return `p50 ${fmt(percentile(xs, 0.5))}  p99 ${fmt(percentile(xs, 0.99))}  max ${fmt(Math.max(...xs))}  (n=${xs.length})`;
}
const fmt = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

/** Encoded message bytes sent, by kind, as shares of their sum (where the bytes go). */
function sharesByKind(nodes: readonly SimNode[]): string {
  const byKind = new Map<string, number>();
  for (const n of nodes) {
    for (const [kind, c] of Object.entries(n.ml().counters().sent)) byKind.set(kind, (byKind.get(kind) ?? 0) + c.bytes);
  }
  const sum = [...byKind.values()].reduce((a, b) => a + b, 0);
  return [...byKind.entries()]
    .filter(([, b]) => b > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, b]) => `${k} ${((100 * b) / sum).toFixed(0)}%`)
    .join(", ");
}

/**
 * Where the bytes went, per node: each kind's bytes, messages and mean size; the framing around
 * the messages (envelope header, bin headers, encryption: whole frames minus message bytes); and
 * the fields of an "alive" (msgpack bytes of each, averaged over the nodes' own records).
 */
function byteBreakdown(nodes: readonly SimNode[]): string[] {
  const per = (x: number): string => `${(x / nodes.length / 1000).toFixed(1)} KB`;
  const sum = (f: (c: GossipCounters) => number): number => nodes.reduce((a, n) => a + f(n.ml().counters()), 0);
  const kinds = Object.keys(nodes[0].ml().counters().sent) as (keyof GossipCounters["sent"])[];
  const lines: string[] = [];
  let messageBytes = 0;
  for (const k of kinds) {
    const bytes = sum((c) => c.sent[k].bytes);
    const count = sum((c) => c.sent[k].messages);
    messageBytes += bytes;
    if (bytes > 0)
      lines.push(
        `${k} ${per(bytes)} (${(count / nodes.length).toFixed(0)} msgs, ${(bytes / count).toFixed(1)} B each)`,
      );
  }
  const packets = sum((c) => c.frames.packetsSent);
  const frameBytes = sum((c) => c.frames.packetBytesSent + c.frames.streamBytesSent);
  lines.push(
    `framing ${per(frameBytes - messageBytes)} (${(packets / nodes.length).toFixed(0)} packets, ${(sum((c) => c.frames.streamsSent) / nodes.length).toFixed(0)} stream frames); all frames ${per(frameBytes)}`,
  );
  const fields = { code: 1, name: 0, incarnation: 0, host: 0, port: 0, meta: 0, "array+bin headers": 3 };
  for (const n of nodes) {
    const me = n.ml().localNode();
    fields.name += encode(me.name).length / nodes.length;
    fields.incarnation += encode(me.incarnation).length / nodes.length;
    fields.host += encode(me.host).length / nodes.length;
    fields.port += encode(me.port).length / nodes.length;
    fields.meta += encode(me.meta).length / nodes.length;
  }
  lines.push(
    `an alive's fields: ${Object.entries(fields)
      .map(([f, b]) => `${f} ${b.toFixed(1)}`)
      .join(", ")} B`,
  );
  return lines;
}

function bytesSent(nodes: readonly SimNode[]): number {
  let total = 0;
  for (const n of nodes) {
    const f = n.ml().counters().frames;
    total += f.packetBytesSent + f.streamBytesSent;
  }
  return total;
}

async function scenario(args: Args, loss: number): Promise<void> {
  const started = Date.now();
  const cluster = new SimCluster({
    seed: args.seed,
    conditions: { loss, minDelayMs: 1, maxDelayMs: 10 },
    config: args.overrides,
    checkInvariants: false,
  });
  const rec = new Recorder(() => cluster.scheduler.now());
  const add = (name: string): SimNode => cluster.add(name, { events: rec.delegateFor(name) });
  const seeds = (): string[] => {
    const live = cluster.liveNodes();
    return Array.from({ length: Math.min(3, live.length) }, () => live[cluster.random.int(live.length)].name);
  };
  const nameSet = (nodes: SimNode[]): Set<string> => new Set(nodes.map((n) => n.name));

  // 1. The wave: node 0 first, then the rest spread evenly over waveMs, each joining via 3 random members.
  add("n0");
  const waveJoins: { name: string; at: number; observers: SimNode[] }[] = [];
  const gap = args.waveMs / (args.nodes - 1);
  for (let i = 1; i < args.nodes; i++) {
    const observers = cluster.liveNodes();
    const node = add(`n${i}`);
    waveJoins.push({ name: node.name, at: cluster.scheduler.now(), observers });
    // Never itself, as the agent's join list (join.ts): a joiner that asked itself first got no
    // full state and waited for anti-entropy.
    void node.ml().join(
      seeds()
        .filter((s) => s !== node.name)
        .map((s) => cluster.node(s).addr),
    );
    await cluster.runFor(gap);
  }
  const convergedIn = await cluster.runUntil(() => cluster.converged(), 300_000, 500);
  const convergedAt = cluster.scheduler.elapsed();
  // Over the wave and its convergence, per node that took part (the last joiners count fully).
  const waveRate = bytesSent(cluster.liveNodes()) / cluster.liveNodes().length / (convergedAt / 1000);
  const waveShares = sharesByKind(cluster.liveNodes());
  const waveBytes = byteBreakdown(cluster.liveNodes());
  const pulled = (f: (c: GossipCounters) => number): number =>
    cluster.liveNodes().reduce((a, n) => a + f(n.ml().counters()), 0);
  const pulledWaste = `pull replies brought ${(pulled((c) => c.protocol.pulledRecords) / cluster.liveNodes().length).toFixed(0)} records per node, ${(
    (100 * pulled((c) => c.protocol.pulledKnown)) /
      Math.max(
        1,
        pulled((c) => c.protocol.pulledRecords),
      )
  ).toFixed(0)}% of them already held`;
  const waveLatency = waveJoins.map((j) => (rec.allKnew(rec.joinedAt, j.name, j.observers) ?? Infinity) - j.at);
  const original = nameSet(cluster.liveNodes());

  // 2. Steady state traffic (nothing joins or fails).
  await cluster.runFor(10_000);
  const before = bytesSent(cluster.liveNodes());
  await cluster.runFor(args.steadyMs);
  const steadyRate = (bytesSent(cluster.liveNodes()) - before) / cluster.liveNodes().length / (args.steadyMs / 1000);

  // 3. Single joins into the settled cluster, 10 s apart.
  const singleLatency: number[] = [];
  for (let i = 0; i < args.singles; i++) {
    const observers = cluster.liveNodes();
    const node = add(`late${i}`);
    const at = cluster.scheduler.now();
    void node.ml().join(
      seeds()
        .filter((s) => s !== node.name)
        .map((s) => cluster.node(s).addr),
    );
    await cluster.runUntil(() => rec.allKnew(rec.joinedAt, node.name, observers) !== undefined, 60_000, 50);
    singleLatency.push((rec.allKnew(rec.joinedAt, node.name, observers) ?? Infinity) - at);
    await cluster.runFor(10_000 - ((cluster.scheduler.now() - at) % 10_000));
  }

  // 4. 1% crash at once, crashRounds times, each round once the last one's deaths are known
  // everywhere and 20 s after it began (so rounds do not overlap).
  const detection: number[] = [];
  const spread: number[] = [];
  // Where a detection's time goes: crash → first failed probe (a suspicion anywhere), that → the
  // first "dead" (the suspicion timeout), that → dead everywhere (spread, above).
  const phases: { name: string; total: number; probe: number; suspect: number; spread: number }[] = [];
  let survivors = cluster.liveNodes();
  for (let round = 0; round < args.crashRounds; round++) {
    const victims: SimNode[] = [];
    const candidates = cluster.liveNodes();
    while (victims.length < Math.max(1, Math.round(args.nodes / 100))) {
      const v = candidates[cluster.random.int(candidates.length)];
      if (!victims.includes(v)) victims.push(v);
    }
    const crashAt = cluster.scheduler.now();
    for (const v of victims) cluster.crash(v.name);
    survivors = cluster.liveNodes();
    const known = (v: SimNode): number | undefined => rec.allKnew(rec.deadAt, v.name, survivors);
    await cluster.runUntil(() => victims.every((v) => known(v) !== undefined), 300_000, 500);
    for (const v of victims) {
      detection.push((known(v) ?? Infinity) - crashAt);
      const times = [...(rec.deadAt.get(v.name)?.values() ?? [])];
      const firstDead = times.length ? Math.min(...times) : Infinity;
      spread.push((known(v) ?? Infinity) - firstDead);
      const firstSuspect = rec.suspectedAt.get(v.name)?.find((t) => t >= crashAt) ?? firstDead;
      phases.push({
        name: v.name,
        total: (known(v) ?? Infinity) - crashAt,
        probe: firstSuspect - crashAt,
        suspect: firstDead - firstSuspect,
        spread: (known(v) ?? Infinity) - firstDead,
      });
    }
    const elapsed = cluster.scheduler.now() - crashAt;
    if (round + 1 < args.crashRounds && elapsed < 20_000) await cluster.runFor(20_000 - elapsed);
  }

  const neverFailed = nameSet(survivors);
  console.log(`\n== ${args.nodes} nodes, ${(loss * 100).toFixed(0)}% loss, seed ${args.seed} ==`);
  console.log(
    `wave of ${args.nodes - 1} joins over ${fmt(args.waveMs)}; every node saw every node alive ${convergedIn ? "at" : "NOT by"} ${fmt(convergedAt)} (checked every 0.5 s)`,
  );
  console.log(`  join known by all earlier nodes (wave):    ${percentiles(waveLatency)}`);
  console.log(`  join known by all nodes (settled cluster): ${percentiles(singleLatency)}`);
  console.log(
    `  failure: crash → dead everywhere:          ${percentiles(detection)}  (${args.crashRounds} round(s) of 1%)`,
  );
  console.log(`  failure: crash → first suspicion:          ${percentiles(phases.map((p) => p.probe))}`);
  console.log(`  failure: first suspicion → first 'dead':   ${percentiles(phases.map((p) => p.suspect))}`);
  console.log(`  failure: first 'dead' → dead everywhere:   ${percentiles(spread)}`);
  const slowest = [...phases].sort((a, b) => b.total - a.total).slice(0, 5);
  console.log(
    `  slowest crashes (total = to suspicion + to 'dead' + spread): ${slowest
      .map((p) => `${p.name} ${fmt(p.total)} = ${fmt(p.probe)} + ${fmt(p.suspect)} + ${fmt(p.spread)}`)
      .join("; ")}`,
  );
  console.log(
    `  steady state: ${(steadyRate / 1024).toFixed(2)} KiB/s sent per node (over ${fmt(args.steadyMs)}); during the wave: ${(waveRate / 1024).toFixed(2)} KiB/s = ${waveRate.toFixed(0)} B/s (${((waveRate * convergedAt) / 1000 / 1024).toFixed(0)} KiB per node until converged)`,
  );
  console.log(`  bytes sent during the wave, by message kind: ${waveShares}`);
  console.log(`    ${pulledWaste}`);
  for (const line of waveBytes) console.log(`    per node: ${line}`);
  console.log(
    `  false suspicions: ${rec.countAbout(rec.suspicions, neverFailed)}  false deaths: ${rec.countAbout(rec.deaths, neverFailed)}  (about ${neverFailed.size} nodes that never failed; ${original.size} in the wave)`,
  );
  console.log(
    `  simulated ${fmt(cluster.scheduler.elapsed())} in ${fmt(Date.now() - started)} wall, ${cluster.scheduler.eventsRun} events, net ${JSON.stringify(cluster.net.stats)}`,
  );
}

/**
 * 5% loss and one slow node. "stretched": its timers fire 10x late and it handles everything it
 * receives 600 ms late (so every direct ping to it misses the 500 ms probe timeout).
 * "starved": same late handling but timers on time, so its own probes see acks too late and it
 * would accuse healthy nodes without Lifeguard's local health awareness.
 */
async function slowNode(args: Args, variant: "stretched" | "starved"): Promise<void> {
  const started = Date.now();
  const n = args.quick ? 100 : args.nodes;
  const cluster = new SimCluster({
    seed: args.seed + 1,
    conditions: { loss: 0.05 },
    config: args.overrides,
    checkInvariants: false,
  });
  const rec = new Recorder(() => cluster.scheduler.now());
  const slowOptions = { timerStretch: variant === "stretched" ? 10 : 1, inboundDelayMs: 600 };
  for (let i = 0; i < n; i++) {
    cluster.add(`n${i}`, { events: rec.delegateFor(`n${i}`), ...(i === n - 1 ? slowOptions : {}) });
  }
  const names = cluster.liveNodes().map((x) => x.name);
  for (let i = 1; i < n; i += 50) {
    void Promise.all(
      names.slice(i, i + 50).map((m) =>
        cluster
          .node(m)
          .ml()
          .join([cluster.node("n0").addr]),
      ),
    );
    await cluster.runFor(1000);
  }
  const converged = await cluster.runUntil(() => cluster.converged(), 300_000, 500);
  const measureMs = args.quick ? 120_000 : 300_000;
  await cluster.runFor(measureMs);
  const slowName = `n${n - 1}`;
  const slow = cluster.node(slowName).ml();
  const aboutSlow = [...rec.suspicions].filter((k) => k.startsWith(`${slowName}@`)).length;
  console.log(
    `\n== ${n} nodes, 5% loss, ${slowName} slow (${variant}: timers x${slowOptions.timerStretch}, handles input ${slowOptions.inboundDelayMs} ms late), seed ${args.seed + 1} ==`,
  );
  console.log(`  converged: ${converged}; then ${fmt(measureMs)} observed (counts cover the whole run)`);
  console.log(
    `  false suspicions: ${rec.suspicions.size} (${aboutSlow} about the slow node)  false deaths: ${rec.deaths.size}`,
  );
  const total = (f: (c: GossipCounters) => number): number =>
    cluster.liveNodes().reduce((sum, x) => sum + f(x.ml().counters()), 0);
  console.log(
    `  accusations by probing (every one false here): ${total((c) => c.protocol.suspicionsRaised)}; suspicions that ran out but the last probe was answered: ${total((c) => c.protocol.lastChecksAnswered)}`,
  );
  console.log(
    `  slow node: suspicions it raised ${slow.counters().protocol.suspicionsRaised}, refutations ${slow.counters().protocol.refutations}, health score now ${slow.healthScore()}`,
  );
  console.log(
    `  simulated ${fmt(cluster.scheduler.elapsed())} in ${fmt(Date.now() - started)} wall, ${cluster.scheduler.eventsRun} events`,
  );
}

const args = parseArgs(process.argv.slice(2));
if (Object.keys(args.overrides).length > 0) console.log(`LAN profile with ${JSON.stringify(args.overrides)}`);
for (const loss of args.losses) await scenario(args, loss);
for (const variant of args.slow) await slowNode(args, variant);
