// Membership properties in the deterministic simulator, over many seeds. Every run checks the
// membership invariants after every event (sim/invariants.ts). A failure prints the seed (and
// fast-check's counterexample); `new SimCluster({ seed })` with the same steps replays it.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Addr } from "../../src/control/runtime.js";
import type { EventDelegate, NodeView } from "../../src/control/gossip/delegate.js";
import { generateKey, Keyring } from "../../src/control/gossip/keyring.js";
import { profiles } from "../../src/control/gossip/config.js";
import {
  buildEnvelope,
  EnvelopeDecoder,
  encodeMessage,
  envelopeHeader,
  type Message,
  type MessageKind,
  type NodeState,
  protocolOf,
} from "../../src/control/gossip/messages.js";
import type { GossipCounters } from "../../src/control/gossip/observability.js";
import { CLUSTER_KEY, SimCluster, type NodeOptions, type SimNode } from "./sim/cluster.js";
import type { LinkConditions } from "./sim/network.js";

/** Runs per property; raise with GOSSIP_SIM_RUNS for a longer soak. */
const RUNS = Number(process.env.GOSSIP_SIM_RUNS ?? 6);
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** Records every death (not suspicion, not leave) any node reports. */
function deathLog(): { deaths: string[]; events: EventDelegate } {
  const deaths: string[] = [];
  const events: EventDelegate = {
    notifyJoin: () => {},
    notifyUpdate: () => {},
    notifyLeave: (v: NodeView) => {
      if (v.state === "dead") deaths.push(`${v.name}@${v.incarnation}`);
    },
  };
  return { deaths, events };
}

/** Every live node but the first joins through n0; the join results. */
function joinThroughN0(cluster: SimCluster): Promise<number[]> {
  return cluster.join(
    cluster
      .liveNodes()
      .slice(1)
      .map((x) => x.name),
    ["n0"],
  );
}

/** n nodes that join through n0 and converge (asserted). */
async function formCluster(s: number, n: number, conditions: Partial<LinkConditions> = {}, options: NodeOptions = {}) {
  const cluster = new SimCluster({ seed: s, conditions });
  cluster.addMany(n, "n", options);
  const joined = await joinThroughN0(cluster);
  expect(
    joined.every((j) => j === 1),
    cluster.describe(),
  ).toBe(true);
  expect(await cluster.runUntil(() => cluster.converged(), 60_000), `${cluster.describe()}: no convergence`).toBe(true);
  return cluster;
}

/** n nodes: n0 first, then each of the others joins through up to 3 random earlier ones, spread over spreadMs. */
async function joinWave(
  cluster: SimCluster,
  n: number,
  spreadMs: number,
  options: (i: number) => NodeOptions = () => ({}),
  added: (node: SimNode, i: number) => void = () => {},
) {
  added(cluster.add("n0", options(0)), 0);
  for (let i = 1; i < n; i++) {
    const earlier = cluster.liveNodes();
    const node = cluster.add(`n${i}`, options(i));
    added(node, i);
    const seeds = Array.from(
      { length: Math.min(3, earlier.length) },
      () => earlier[cluster.random.int(earlier.length)],
    );
    void node.ml().join(seeds.map((x) => x.addr));
    await cluster.runFor(spreadMs / (n - 1));
  }
}

/** A joiner "a" and scripted join targets around it; "a"'s earlier record is `old` (at .1). */
function heldJoiner(s: number) {
  const cluster = new SimCluster({ seed: s, checkInvariants: false });
  const joiner = cluster.add("a");
  const keyring = new Keyring(CLUSTER_KEY);
  const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
  const meta = new Uint8Array(0);
  const old = { name: "a", host: "198.18.9.1", port: 7946, meta, stateAgeMs: 0 };
  /** A target named `name` whose full state lists itself (at `incarnation`) and `listed`. */
  const target = (host: string, name: string, incarnation = 1) => {
    const addr = { host, port: 7946 };
    let listed: NodeState[] = [];
    cluster.net.attach(cluster.net.host(addr)).onExchange(async (_from, frame) => {
      const opened = keyring.open(frame, "request");
      const kind = opened.ok ? decoder.decode(opened.plaintext)?.messages[0].message.kind : undefined;
      if (kind !== "pushPull" && kind !== "pushPull2") throw new Error(`unexpected ${kind}`);
      const self: NodeState = { name, ...addr, incarnation, state: "alive", meta, stateAgeMs: 0 };
      const reply: Message = { kind, join: false, nodes: [self, ...listed], userState: meta };
      return keyring.seal(buildEnvelope(envelopeHeader(name), [encodeMessage(reply)]), "response");
    });
    return { addr, list: (nodes: NodeState[]) => (listed = nodes) };
  };
  /** One join round through `to`: how it ended, and whether the name is held after it. */
  const round = async (to: Addr) => {
    let ended: string | undefined;
    joiner
      .ml()
      .join([to])
      .then(
        (n) => (ended = `joined ${n}`),
        (e: { code?: string }) => (ended = e.code),
      );
    expect(await cluster.runUntil(() => ended !== undefined, 30_000)).toBe(true);
    return { ended, held: joiner.ml().nameIsHeld() };
  };
  /** A member `name` as a full state lists it. */
  const member = (name: string, host: string, incarnation = 1, state: NodeState["state"] = "alive"): NodeState => ({
    name,
    host,
    port: 7946,
    incarnation,
    state,
    meta,
    stateAgeMs: 0,
  });
  return { cluster, joiner, meta, old, target, round, member };
}

const deadEverywhere = (cluster: SimCluster, names: string[]) => () =>
  cluster.liveNodes().every((o) => names.every((v) => cluster.view(o.name, v)?.state === "dead"));

describe("membership in the simulator", () => {
  it("every live node learns every live node and its meta, despite loss, duplication, reordering", async () => {
    const conditions = fc.record({
      loss: fc.double({ min: 0, max: 0.1, noNaN: true }),
      duplicate: fc.double({ min: 0, max: 0.1, noNaN: true }),
      reorder: fc.double({ min: 0, max: 0.3, noNaN: true }),
      maxDelayMs: fc.integer({ min: 2, max: 80 }),
    });
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 2, max: 12 }), conditions, async (s, n, c) => {
        const cluster = await formCluster(s, n, c);
        // New meta (the lease layer announcing a subnet) reaches everyone too.
        const changed = cluster.node(`n${s % n}`);
        changed.meta = new TextEncoder().encode(`new meta ${s}`);
        changed.ml().updateNode();
        expect(
          await cluster.runUntil(() => cluster.converged(), 30_000),
          `${cluster.describe()}: meta did not spread`,
        ).toBe(true);
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it("a crashed node is declared dead by every other node", async () => {
    await fc.assert(
      fc.asyncProperty(
        seed,
        fc.integer({ min: 4, max: 12 }),
        fc.double({ min: 0, max: 0.05, noNaN: true }),
        async (s, n, loss) => {
          const cluster = await formCluster(s, n, { loss });
          const victims = cluster
            .liveNodes()
            .slice(1, 1 + Math.max(1, Math.floor(n / 4)))
            .map((v) => v.name);
          for (const v of victims) cluster.crash(v);
          expect(
            await cluster.runUntil(deadEverywhere(cluster, victims), 120_000),
            `${cluster.describe()}: ${victims} not dead everywhere`,
          ).toBe(true);
          // And nobody alive was taken down with them.
          expect(cluster.converged(), cluster.describe()).toBe(true);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("helpers' nacks for a crashed member reach the prober within its probe: no prober's health score rises", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 5, max: 12 }), async (s, n) => {
        const cluster = await formCluster(s, n, { loss: 0 });
        const victim = cluster.liveNodes()[1].name;
        cluster.crash(victim);
        expect(await cluster.runUntil(deadEverywhere(cluster, [victim]), 60_000), cluster.describe()).toBe(true);
        // Without loss every helper nacks in time, so a failed probe is the target's fault, not ours.
        const failed = cluster.liveNodes().reduce((a, v) => a + v.ml().counters().protocol.probeFailures, 0);
        expect(failed, cluster.describe()).toBeGreaterThan(0);
        expect(
          cluster.liveNodes().map((v) => `${v.name}:${v.ml().healthScore()}`),
          cluster.describe(),
        ).toEqual(cluster.liveNodes().map((v) => `${v.name}:0`));
      }),
      { numRuns: RUNS },
    );
  });

  it("a prober whose timers all fire 150 ms late still hears the helpers' nacks: its health score never rises", async () => {
    await fc.assert(
      fc.asyncProperty(seed, async (s) => {
        // Five members: three helpers, so no draw of them comes back empty (a probe without helpers
        // counts as one missed nack); more confirmations than can come keep the suspicion 18 s.
        const cluster = new SimCluster({ seed: s, conditions: { loss: 0 }, config: { suspicionConfirmations: 4 } });
        cluster.addMany(4, "n");
        // Its round timer fires late, so the round started late; before, it was shortened by that
        // much and ended before the nacks (sent 400 ms after the indirect pings at 500 ms) came.
        const late = cluster.add("late", { timerLateMs: 150 });
        await joinThroughN0(cluster);
        expect(await cluster.runUntil(() => cluster.converged(), 60_000), cluster.describe()).toBe(true);
        expect(await cluster.runUntil(() => late.ml().healthScore() === 0, 60_000), cluster.describe()).toBe(true);
        let worst = 0;
        cluster.scheduler.addCheck(() => (worst = Math.max(worst, late.crashed ? 0 : late.ml().healthScore())));
        const failedBefore = late.ml().counters().protocol.probeFailures;
        cluster.crash("n1");
        expect(await cluster.runUntil(deadEverywhere(cluster, ["n1"]), 60_000), cluster.describe()).toBe(true);
        // In those 18 s the late node probes the crashed one about four times.
        expect(late.ml().counters().protocol.probeFailures, cluster.describe()).toBeGreaterThan(failedBefore);
        expect(worst, cluster.describe()).toBe(0);
      }),
      { numRuns: RUNS },
    );
  });

  it("three nodes, two of which cannot reach each other directly: every probe between them finds the third as helper", async () => {
    // With memberlist's draw (at most 3n random picks), seed 3 found no helper in 7 of n0's probes
    // of n1 and 3 of n1's of n0: each failed, raised the prober's health score and suspected a
    // live member.
    for (const s of [3, 1, 2]) {
      const cluster = await formCluster(s, 3, { loss: 0 });
      cluster.net.cut(cluster.node("n0").addr, cluster.node("n1").addr);
      let worst = 0;
      cluster.scheduler.addCheck(
        () => (worst = Math.max(worst, ...cluster.liveNodes().map((v) => v.ml().healthScore()))),
      );
      const before = cluster.liveNodes().map((v) => v.ml().counters().protocol);
      // Each of n0 and n1 probes the other about 100 times.
      await cluster.runFor(200_000);
      const after = cluster.liveNodes().map((v) => v.ml().counters().protocol);
      expect(after[0].probes - before[0].probes, cluster.describe()).toBeGreaterThan(150);
      expect(
        after.map((c, i) => c.probeFailures - before[i].probeFailures),
        cluster.describe(),
      ).toEqual([0, 0, 0]);
      expect(worst, cluster.describe()).toBe(0);
      expect(cluster.converged(), cluster.describe()).toBe(true);
    }
  });

  it("no false deaths with 5% loss and one node 10x slower (stretched timers or starved CPU)", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 5, max: 12 }), fc.boolean(), async (s, n, stretched) => {
        const log = deathLog();
        const cluster = new SimCluster({ seed: s, conditions: { loss: 0.05 } });
        cluster.addMany(n - 1, "n", { events: log.events });
        // Handles everything 600 ms late: every direct ping to it misses the 500 ms probe timeout.
        cluster.add("slow", { events: log.events, timerStretch: stretched ? 10 : 1, inboundDelayMs: 600 });
        await joinThroughN0(cluster);
        await cluster.runFor(180_000);
        expect(log.deaths, cluster.describe()).toEqual([]);
        // The slow node may be under (refutable) suspicion at any moment; nobody is missing.
        expect(cluster.everyoneKnown(), cluster.describe()).toBe(true);
      }),
      // Seeds that once failed (a suspicion outliving the refutation), kept as regressions.
      {
        numRuns: RUNS,
        examples: [
          [2147483627, 8, true],
          [2144206836, 6, true],
          [1, 9, true],
          [917437767, 7, false],
          // The refutation 46 ms late: the suspicion missed the slow node until the last probe,
          // whose ack was lost (CI; fixed by telling the accused at once and a 3 s minimum).
          [290982648, 6, true],
          [1209460654, 5, true],
        ],
      },
    );
    // Twelve runs of 180 simulated seconds each: about a minute on an idle 2-core machine, more
    // when it is shared, so this one gets more than the default 60 s.
  }, 600_000);

  it("the prober that raises a suspicion tells the accused at once: it refutes though no gossip or other probe brings it the suspicion", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 5, max: 10 }), async (s, n) => {
        const log = deathLog();
        const cluster = new SimCluster({ seed: s, conditions: {} });
        cluster.addMany(n - 1, "n", { events: log.events });
        // Acks 600 ms late: a helper's (500 ms) and the stream ping's wait run out, the direct one's does not.
        const accused = cluster.add("accused", { events: log.events, inboundDelayMs: 600 });
        await joinThroughN0(cluster);
        expect(await cluster.runUntil(() => cluster.converged(), 60_000), cluster.describe()).toBe(true);
        // n1 never gets the accused's acks, so its probes of it fail (the others' succeed). Every
        // packet that carries a suspicion is lost but n1's bare one to the accused: nobody else
        // hears of it, so no other probe carries it, and no gossip brings it to the accused.
        const [accuserHost, accusedHost] = [cluster.node("n1").addr.host, accused.addr.host];
        const keyring = new Keyring(CLUSTER_KEY);
        const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
        let told = 0;
        cluster.net.filter = (from, to, frame) => {
          const opened = keyring.open(frame, "packet");
          const kinds = opened.ok ? (decoder.decode(opened.plaintext)?.messages.map((m) => m.message.kind) ?? []) : [];
          if (from.host === accusedHost && to.host === accuserHost && kinds.includes("ack")) return false;
          if (!kinds.includes("suspect")) return true;
          const bare = from.host === accuserHost && to.host === accusedHost && kinds.length === 1;
          if (bare) told++;
          return bare;
        };
        const before = accused.ml().localNode().incarnation;
        // Longer than a lone accuser's suspicion (the maximum, 18 s here) and its last probe.
        await cluster.runFor(60_000);
        expect(told, cluster.describe()).toBeGreaterThan(0);
        expect(accused.ml().localNode().incarnation, cluster.describe()).toBeGreaterThan(before);
        expect(log.deaths, cluster.describe()).toEqual([]);
      }),
      { numRuns: RUNS },
    );
  });

  it("a broadcast's sends go to distinct members until every member had it", async () => {
    await fc.assert(
      fc.asyncProperty(seed, async (s) => {
        const cluster = await formCluster(s, 4);
        const sender = cluster.node("n1");
        const before = sender.ml().localNode().incarnation;
        const keyring = new Keyring(CLUSTER_KEY);
        const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
        const to: string[] = [];
        cluster.net.filter = (from, dest, frame) => {
          if (from.host !== sender.addr.host) return true;
          const opened = keyring.open(frame, "packet");
          const messages = opened.ok ? (decoder.decode(opened.plaintext)?.messages ?? []) : [];
          const news = messages.some(
            ({ message: m }) =>
              (m.kind === "alive" || m.kind === "alive2") && m.node === "n1" && m.incarnation > before,
          );
          if (news) to.push(dest.host);
          return true;
        };
        sender.ml().updateNode(); // a new incarnation of n1's record, broadcast by n1
        await cluster.runFor(10_000);
        // 4 sends (RetransmitMult 4 × ceil(log10(5))): the first 3 to the 3 other members.
        expect(to.length, cluster.describe()).toBe(4);
        expect(new Set(to.slice(0, 3)).size, `${cluster.describe()}: ${to}`).toBe(3);
      }),
      // Seed 1 sent the first two to one member without the receiver passed to take().
      { numRuns: RUNS, examples: [[1]] },
    );
  });

  it("a partition makes each side declare the other dead; after healing the cluster merges by itself", async () => {
    await fc.assert(
      fc.asyncProperty(
        seed,
        fc.integer({ min: 4, max: 10 }),
        fc.double({ min: 0, max: 0.05, noNaN: true }),
        fc.boolean(),
        async (s, n, loss, late) => {
          const cluster = await formCluster(s, n, { loss });
          const names = cluster.liveNodes().map((x) => x.name);
          const cut = 1 + (s % (n - 1));
          const [left, right] = [names.slice(0, cut), names.slice(cut)];
          cluster.partition(left, right);
          const split = () =>
            left.every((a) =>
              right.every((b) => cluster.view(a, b)?.state === "dead" && cluster.view(b, a)?.state === "dead"),
            );
          expect(await cluster.runUntil(split, 180_000), `${cluster.describe()}: sides did not split`).toBe(true);
          // Heal soon (dead members still get gossip) or late (only reconnect can bring them back).
          await cluster.runFor(late ? 120_000 : 0);
          cluster.heal();
          expect(
            await cluster.runUntil(() => cluster.converged(), 300_000, 500),
            `${cluster.describe()}: no merge after heal`,
          ).toBe(true);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("a graceful leave is seen as left, never as dead", async () => {
    await fc.assert(
      fc.asyncProperty(
        seed,
        fc.integer({ min: 3, max: 10 }),
        fc.double({ min: 0, max: 0.05, noNaN: true }),
        async (s, n, loss) => {
          const log = deathLog();
          const cluster = await formCluster(s, n, { loss }, { events: log.events });
          const leaver = `n${1 + (s % (n - 1))}`;
          await cluster.leave(leaver);
          const leftEverywhere = () => cluster.liveNodes().every((o) => cluster.view(o.name, leaver)?.state === "left");
          expect(await cluster.runUntil(leftEverywhere, 90_000), `${cluster.describe()}: leave not seen`).toBe(true);
          await cluster.runFor(120_000);
          expect(leftEverywhere(), cluster.describe()).toBe(true);
          expect(log.deaths, cluster.describe()).toEqual([]);
          expect(cluster.converged(), cluster.describe()).toBe(true);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("a meta update while leaving (the lease layer adopting or losing a subnet) does not cancel the leave", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 3, max: 8 }), async (s, n) => {
        const log = deathLog();
        const cluster = await formCluster(s, n, {}, { events: log.events });
        const leaver = `n${1 + (s % (n - 1))}`;
        await cluster.leave(leaver, 2000, (ml) => ml.updateNode());
        const leftEverywhere = () => cluster.liveNodes().every((o) => cluster.view(o.name, leaver)?.state === "left");
        expect(await cluster.runUntil(leftEverywhere, 90_000), `${cluster.describe()}: leave not seen`).toBe(true);
        expect(log.deaths, cluster.describe()).toEqual([]);
      }),
      { numRuns: Math.min(RUNS, 10) },
    );
  });

  it("a member the gossip of a leave missed hears it on a probe, and never declares the leaver dead", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 4, max: 10 }), async (s, n) => {
        const log = deathLog();
        const cluster = await formCluster(s, n, {}, { events: log.events });
        const [leaver, deaf] = ["n1", `n${n - 1}`];
        const deafHost = cluster.node(deaf).addr.host;
        const keyring = new Keyring(CLUSTER_KEY);
        const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
        // Gossip never brings the leave to `deaf`; only pings and acks (and push-pull, every 30 s) may.
        let dropped = 0;
        cluster.net.filter = (_from, to, frame) => {
          if (to.host !== deafHost) return true;
          const opened = keyring.open(frame, "packet");
          const kinds = opened.ok ? (decoder.decode(opened.plaintext)?.messages.map((m) => m.message.kind) ?? []) : [];
          const gossipOfLeave = kinds.includes("dead") && !kinds.includes("ping") && !kinds.includes("ack");
          if (gossipOfLeave) dropped++;
          return !gossipOfLeave;
        };
        await cluster.leave(leaver);
        await cluster.runFor(20_000);
        // Now and then every copy of the leave `deaf` was sent rode on a ping or ack: nothing to test.
        fc.pre(dropped > 0);
        expect(cluster.view(deaf, leaver)?.state, cluster.describe()).toBe("left");
        expect(log.deaths, cluster.describe()).toEqual([]);
      }),
      { numRuns: RUNS },
    );
  });

  it("rotates the cluster key mid-run (OLD,NEW; NEW,OLD; NEW on every node, as SIGHUP does) without losing membership", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 3, max: 8 }), async (s, n) => {
        const log = deathLog();
        const cluster = await formCluster(s, n, { loss: 0.02 }, { events: log.events });
        const next = generateKey();
        const nodes = cluster.liveNodes();
        // Each step reaches every node at a different moment within 10 s; the next step starts after.
        for (const keys of [[CLUSTER_KEY, next], [next, CLUSTER_KEY], [next]]) {
          const order = [...nodes].sort(() => cluster.random.next() - 0.5);
          for (const node of order) {
            await cluster.runFor(cluster.random.int(10_000 / n));
            node.keyring.replace(keys);
          }
          await cluster.runFor(5000);
        }
        await cluster.runFor(60_000);
        expect(log.deaths, cluster.describe()).toEqual([]);
        expect(cluster.converged(), cluster.describe()).toBe(true);
        for (const node of nodes) {
          expect(node.keyring.ids()).toEqual(new Keyring(next).ids());
          expect(node.ml().counters().dropped.badKey, cluster.describe()).toBe(0);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("a node with another key cannot join, and nobody learns of it", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 2, max: 6 }), async (s, n) => {
        const cluster = await formCluster(s, n);
        const intruder = cluster.add("intruder", { keyring: new Keyring(generateKey()) });
        const [answered] = await cluster.join(["intruder"], ["n0", "n1"]);
        expect(answered).toBe(0);
        // It also tries to gossip its own record at a member directly.
        intruder.ml().sendBestEffort("intruder", new Uint8Array([1]));
        await cluster.runFor(60_000);
        expect(
          intruder
            .ml()
            .members()
            .map((m) => m.name),
        ).toEqual(["intruder"]);
        intruder.crashed = true; // leave it out of the convergence check below
        expect(cluster.converged(), cluster.describe()).toBe(true);
        expect(
          cluster.node("n0").ml().counters().dropped.badKey + cluster.node("n1").ml().counters().dropped.badKey,
        ).toBeGreaterThan(0);
      }),
      { numRuns: RUNS },
    );
  });

  it("a joiner makes one more push-pull a little after joining, whatever the number of seeds", async () => {
    // Periodic anti-entropy and reconnects pushed out of the way: every push-pull here is a join's.
    const cluster = new SimCluster({
      seed: 11,
      config: { pushPullIntervalMs: 3_600_000, reconnectIntervalMs: 3_600_000 },
    });
    cluster.addMany(4);
    // Stream requests (push-pull is the only one here: no reliable sends, no TCP ping fallback
    // without loss) by their sender.
    const requests = new Map<string, number>();
    cluster.net.tap = (kind, from) => {
      if (kind === "request") requests.set(from.host, (requests.get(from.host) ?? 0) + 1);
    };
    const pushPulls = (name: string) => requests.get(cluster.node(name).addr.host) ?? 0;
    await cluster.join(["n1", "n2"], ["n0"]);
    await cluster.join(["n3"], ["n0", "n1", "n2"]);
    expect(pushPulls("n3"), cluster.describe()).toBe(3);
    // Sent two retransmission periods later: 2 × 4 × ceil(log10 5) × 200 ms / 3 nodes.
    await cluster.runFor(2 * ((4 * 200) / 3) + 50);
    expect(pushPulls("n3"), cluster.describe()).toBe(4);
    await cluster.runFor(60_000);
    expect([pushPulls("n0"), pushPulls("n1"), pushPulls("n2"), pushPulls("n3")], cluster.describe()).toEqual([
      0, 2, 2, 4,
    ]);
    expect(cluster.converged(), cluster.describe()).toBe(true);
  });

  it("the join's follow-up is a catch-up: only records changed around the join come back", async () => {
    // Periodic anti-entropy and reconnects pushed out of the way: the joiner's exchanges are its own.
    // The 25 records a joiner learns are no wave here (in a wave, pulls replace the follow-up).
    const quiet = { config: { pushPullIntervalMs: 3_600_000, reconnectIntervalMs: 3_600_000, waveChanges: 100 } };
    const cluster = await formCluster(12, 24, {}, quiet);
    await cluster.runFor(30_000); // everything the members know is older than any catch-up window
    const joiner = cluster.add("late", quiet);
    const received = () => joiner.ml().counters().frames.streamBytesReceived;
    await cluster.join(["late"], ["n5"]);
    const fullState = received();
    await cluster.runUntil(() => joiner.ml().counters().frames.streamsSent === 2, 10_000);
    await cluster.runFor(1000);
    const catchUp = received() - fullState;
    // The member answered (one more reply) with the joiner's own record, not its 25 records.
    expect(joiner.ml().counters().frames.streamsReceived, cluster.describe()).toBe(2);
    expect(catchUp, cluster.describe()).toBeGreaterThan(0);
    expect(catchUp * 5, cluster.describe()).toBeLessThan(fullState);
    expect(await cluster.runUntil(() => cluster.converged(), 30_000), cluster.describe()).toBe(true);
  });

  it("24 nodes joining one seed at once converge without anti-entropy (short push, then pulls)", async () => {
    const quiet = { config: { pushPullIntervalMs: 3_600_000, reconnectIntervalMs: 3_600_000 } };
    for (const s of [12, 13, 14]) {
      const cluster = await formCluster(s, 24, {}, quiet);
      expect(cluster.converged(), cluster.describe()).toBe(true);
    }
  });

  it("a join wave converges through delta pulls with anti-entropy out of the way; an idle cluster pulls nothing", async () => {
    const quiet = { pushPullIntervalMs: 3_600_000, reconnectIntervalMs: 3_600_000 };
    const cluster = new SimCluster({ seed: 21, conditions: { loss: 0.05 }, config: quiet });
    await joinWave(cluster, 28, 500);
    expect(await cluster.runUntil(() => cluster.converged(), 30_000), `${cluster.describe()}: no convergence`).toBe(
      true,
    );
    const sum = (f: (c: GossipCounters) => number) => cluster.liveNodes().reduce((a, n) => a + f(n.ml().counters()), 0);
    // The short push left gaps that pulls filled: pulls were answered with records.
    expect(
      sum((c) => c.sent.pull.messages),
      cluster.describe(),
    ).toBeGreaterThan(0);
    expect(
      sum((c) => c.received.pullReply.messages + c.received.pullReply2.messages),
      cluster.describe(),
    ).toBeGreaterThan(0);
    // Once the wave is over nobody pulls: a settled cluster pays nothing for them.
    await cluster.runFor(5_000);
    const pulls = sum((c) => c.sent.pull.messages);
    await cluster.runFor(30_000);
    expect(
      sum((c) => c.sent.pull.messages),
      cluster.describe(),
    ).toBe(pulls);
    expect(cluster.converged(), cluster.describe()).toBe(true);
  }, 240_000);

  it("pull replies bring what the puller lacks, not the records a recent joiner took from its seed's full state", async () => {
    // A recent joiner took every record at its join; offering those (the puller's digest covers
    // only what the puller itself took lately) filled its replies with records the puller held,
    // oldest first, ahead of the few it lacked: at 1,000 nodes 80% of such replies were waste.
    // A wave longer than the pull window (4 s), so pullers' digests no longer cover it all: here
    // 84% of pulled records were held already before, 13% now.
    const cluster = new SimCluster({ seed: 23, conditions: { loss: 0.05 }, checkInvariants: false });
    await joinWave(cluster, 150, 12_000);
    expect(await cluster.runUntil(() => cluster.converged(), 30_000), `${cluster.describe()}: no convergence`).toBe(
      true,
    );
    const sum = (f: (c: GossipCounters) => number) => cluster.liveNodes().reduce((a, n) => a + f(n.ml().counters()), 0);
    const pulled = sum((c) => c.protocol.pulledRecords);
    const known = sum((c) => c.protocol.pulledKnown);
    expect(pulled, cluster.describe()).toBeGreaterThan(0);
    expect(
      known / pulled,
      `${cluster.describe()}: ${known} of ${pulled} pulled records were held already`,
    ).toBeLessThan(0.3);
  }, 240_000);

  it("mixed versions: agents without pulls (they refuse the frame) and agents with them converge after a wave", async () => {
    // Anti-entropy as configured (30 s here): an older agent hears less of a wave while the agents
    // with pulls still push short (until their unanswered pulls make them push in full), and
    // push-pull repairs that, as it repairs any missed gossip.
    const cluster = new SimCluster({ seed: 22 });
    // Odd nodes play the older agent: full push, no pulls, full joins, and (below) they refuse
    // any frame holding a kind they do not know, as EnvelopeDecoder refuses unknown kinds.
    const old = (i: number) => i % 2 === 1;
    const oldHosts = new Set<string>();
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    const refusedByOld: string[] = [];
    cluster.net.filter = (_from, to, frame) => {
      if (!oldHosts.has(to.host)) return true;
      const opened = keyring.open(frame, "packet");
      const kinds = opened.ok ? (decoder.decode(opened.plaintext)?.messages.map((m) => m.message.kind) ?? []) : [];
      const unknown = kinds.filter((k) => k === "pull" || k === "pullReply");
      refusedByOld.push(...unknown);
      return unknown.length === 0;
    };
    await joinWave(
      cluster,
      32,
      600,
      (i) =>
        old(i)
          ? { config: { pullIntervalMs: 0, waveRetransmitMult: profiles.lan.retransmitMult, protocolVersion: 1 } }
          : {},
      (node, i) => old(i) && oldHosts.add(node.addr.host),
    );
    expect(await cluster.runUntil(() => cluster.converged(), 60_000), `${cluster.describe()}: no convergence`).toBe(
      true,
    );
    // Older agents only ever got pull requests (which they drop), never a reply they did not ask for.
    expect(refusedByOld.length, cluster.describe()).toBeGreaterThan(0);
    expect(new Set(refusedByOld), cluster.describe()).toEqual(new Set(["pull"]));
  });

  it("mixed protocol versions: version-1 agents never get a version-2 kind in a packet; version-2 agents use compact records among themselves", async () => {
    // Odd nodes speak version 1 (their decoder refuses version-2 kinds, as an older agent's does);
    // they learn nothing of version 2, so the others must find out who speaks what on their own.
    const cluster = new SimCluster({ seed: 24, conditions: { loss: 0.02 } });
    const v1 = (i: number) => i % 2 === 1;
    const v1Hosts = new Set<string>();
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    const newerToV1: string[] = [];
    cluster.net.tap = (kind, _from, to, frame) => {
      if (kind !== "packet" || !v1Hosts.has(to.host)) return;
      const opened = keyring.open(frame, "packet");
      const kinds = opened.ok ? (decoder.decode(opened.plaintext)?.messages.map((m) => m.message.kind) ?? []) : [];
      newerToV1.push(...kinds.filter((k) => protocolOf(k) > 1));
    };
    const nodes: SimNode[] = [];
    await joinWave(
      cluster,
      32,
      600,
      (i) => (v1(i) ? { config: { protocolVersion: 1 } } : {}),
      (node, i) => {
        nodes.push(node);
        if (v1(i)) v1Hosts.add(node.addr.host);
      },
    );
    expect(await cluster.runUntil(() => cluster.converged(), 60_000), `${cluster.describe()}: no convergence`).toBe(
      true,
    );
    // A crash is still seen by everyone, whichever version declares it.
    cluster.crash("n4");
    expect(await cluster.runUntil(deadEverywhere(cluster, ["n4"]), 60_000), cluster.describe()).toBe(true);
    expect(newerToV1, cluster.describe()).toEqual([]);
    const sent = (pick: (i: number) => boolean, kind: MessageKind) =>
      nodes.filter((_, i) => pick(i) && i !== 4).reduce((a, n) => a + n.ml().counters().sent[kind].messages, 0);
    const v2 = (i: number) => !v1(i);
    for (const kind of ["alive2", "pullReply2", "pushPull2"] as const) {
      expect(sent(v2, kind), `${kind}: ${cluster.describe()}`).toBeGreaterThan(0);
      expect(sent(v1, kind), `${kind}: ${cluster.describe()}`).toBe(0);
    }
    // Version-2 agents still told version-1 agents everything, in version 1.
    expect(sent(v2, "alive"), cluster.describe()).toBeGreaterThan(0);
    // How they found out: version-1 agents refused a pushPull2 (a stream frame, counted as garbage).
    const refused = nodes.filter((_, i) => v1(i) && i !== 4).reduce((a, n) => a + n.ml().counters().dropped.garbage, 0);
    expect(refused, cluster.describe()).toBeGreaterThan(0);
  }, 240_000);

  it("a crashed node that restarts rejoins under a higher incarnation", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 3, max: 8 }), async (s, n) => {
        const cluster = await formCluster(s, n, { loss: 0.02 });
        const victim = "n1";
        const before = cluster.node(victim).ml().localNode().incarnation;
        cluster.crash(victim);
        expect(await cluster.runUntil(deadEverywhere(cluster, [victim]), 120_000), cluster.describe()).toBe(true);
        cluster.restart(victim);
        await cluster.join([victim], ["n0"]);
        expect(await cluster.runUntil(() => cluster.converged(), 60_000), `${cluster.describe()}: no rejoin`).toBe(
          true,
        );
        for (const o of cluster.liveNodes()) expect(cluster.view(o.name, victim)!.incarnation).toBeGreaterThan(before);
      }),
      { numRuns: RUNS },
    );
  });

  it("replayed frames of a dead node (packets and push-pull requests) do not bring it back", async () => {
    await fc.assert(
      fc.asyncProperty(seed, fc.integer({ min: 3, max: 8 }), async (s, n) => {
        const cluster = await formCluster(s, n);
        const victim = cluster.node("n1");
        const captured: { kind: "packet" | "request"; to: string; frame: Uint8Array }[] = [];
        cluster.net.tap = (kind, from, to, frame) => {
          if (from.host === victim.addr.host) captured.push({ kind, to: `${to.host}`, frame });
        };
        // Capture a join (its push-pull request) and some probes, gossip and refutations.
        await cluster.join(["n1"], ["n0"]);
        victim.ml().updateNode();
        await cluster.runFor(20_000);
        cluster.net.tap = undefined;
        cluster.crash("n1");
        expect(await cluster.runUntil(deadEverywhere(cluster, ["n1"]), 120_000), cluster.describe()).toBe(true);
        expect(captured.some((c) => c.kind === "request")).toBe(true);
        for (const target of cluster.liveNodes()) {
          for (const c of captured) {
            if (c.kind === "packet") cluster.net.inject(victim.addr, target.addr, c.frame);
            else target.host.transport!.receiveExchange(victim.addr, c.frame).catch(() => {});
          }
        }
        await cluster.runFor(10_000);
        expect(deadEverywhere(cluster, ["n1"])(), cluster.describe()).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it("a replayed ping with a forged source gets a bare ack, no larger than the ping (no reflection)", async () => {
    const cluster = await formCluster(11, 4);
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    const pings: Uint8Array[] = [];
    cluster.net.tap = (kind, from, to, frame) => {
      if (kind !== "packet" || from.host !== cluster.node("n1").addr.host || to.host !== cluster.node("n0").addr.host)
        return;
      // Pings only: an ack's sequence number may take fewer bytes (each node counts from its own random start).
      const opened = keyring.open(frame, "packet");
      if (opened.ok && decoder.decode(opened.plaintext)?.messages.some((m) => m.message.kind === "ping"))
        pings.push(frame);
    };
    await cluster.runFor(20_000);
    const victim = { host: "198.18.200.1", port: 7946 };
    const reflected: Uint8Array[] = [];
    cluster.net.tap = (kind, _from, to, frame) => {
      if (kind === "packet" && to.host === victim.host) reflected.push(frame);
    };
    for (const frame of pings) {
      cluster.node("n0").ml().updateNode(); // something to piggyback is queued
      cluster.net.inject(victim, cluster.node("n0").addr, frame);
      await cluster.runFor(50);
    }
    expect(reflected.length).toBeGreaterThan(0); // the pings among the frames were answered...
    const smallestPing = Math.min(...pings.map((p) => p.length));
    for (const r of reflected) expect(r.length).toBeLessThanOrEqual(smallestPing); // ...with bare acks
  });

  it("a replayed pull with a forged source is answered to the puller's own address, never to the source", async () => {
    const cluster = new SimCluster({ seed: 23 });
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    const pulls: { from: string; to: string; frame: Uint8Array }[] = [];
    cluster.net.tap = (kind, from, to, frame) => {
      const opened = kind === "packet" ? keyring.open(frame, "packet") : undefined;
      if (opened?.ok && decoder.decode(opened.plaintext)?.messages.some((m) => m.message.kind === "pull"))
        pulls.push({ from: from.host, to: to.host, frame });
    };
    await joinWave(cluster, 24, 400);
    expect(pulls.length, cluster.describe()).toBeGreaterThan(0);
    const victim = { host: "198.18.200.1", port: 7946 };
    await cluster.runFor(10_000); // the wave is over: nobody pulls on its own any more
    const toVictim: Uint8Array[] = [];
    const replies = new Set<string>();
    cluster.net.tap = (kind, _from, to, frame) => {
      if (kind !== "packet") return;
      if (to.host === victim.host) toVictim.push(frame);
      const opened = keyring.open(frame, "packet");
      if (
        opened.ok &&
        decoder
          .decode(opened.plaintext)
          ?.messages.some((m) => m.message.kind === "pullReply" || m.message.kind === "pullReply2")
      )
        replies.add(to.host);
    };
    const sample = pulls.slice(-20);
    for (const p of sample) cluster.net.inject(victim, { host: p.to, port: 7946 }, p.frame);
    await cluster.runFor(200);
    expect(toVictim, cluster.describe()).toEqual([]);
    expect(replies.size, cluster.describe()).toBeGreaterThan(0);
    for (const host of replies)
      expect(
        sample.map((p) => p.from),
        cluster.describe(),
      ).toContain(host);
  });

  it("a replayed indirect ping with a forged source gets a bare ack or nack (no reflection)", async () => {
    const cluster = await formCluster(12, 5);
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    const kinds = (frame: Uint8Array): MessageKind[] => {
      const opened = keyring.open(frame, "packet");
      return opened.ok ? (decoder.decode(opened.plaintext)?.messages.map((m) => m.message.kind) ?? []) : [];
    };
    const requests: { to: Addr; frame: Uint8Array }[] = [];
    cluster.net.tap = (kind, _from, to, frame) => {
      if (kind === "packet" && kinds(frame).includes("indirectPing")) requests.push({ to, frame });
    };
    cluster.crash("n4"); // its probers ask helpers to ping it
    await cluster.runFor(10_000);
    expect(requests.length, cluster.describe()).toBeGreaterThan(0);
    cluster.restart("n4"); // it answers the helpers' pings again: they relay acks at once
    const victim = { host: "198.18.200.1", port: 7946 };
    const reflected: MessageKind[][] = [];
    cluster.net.tap = (kind, _from, to, frame) => {
      if (kind === "packet" && to.host === victim.host) reflected.push(kinds(frame));
    };
    for (const [i, { to, frame }] of requests.slice(-10).entries()) {
      // News of a death queued at the helper, which rides every packet (urgent) until sent enough.
      const gone = { node: `gone${i}`, incarnation: 1 };
      const news: Message[] = [
        { kind: "alive", ...gone, host: "198.18.0.200", port: 7946, meta: new Uint8Array(0) },
        { kind: "dead", ...gone, from: "n1" },
      ];
      cluster.net.inject(
        cluster.node("n1").addr,
        to,
        keyring.seal(buildEnvelope(envelopeHeader("n1"), news.map(encodeMessage)), "packet"),
      );
      await cluster.runFor(1);
      cluster.net.inject(victim, to, frame);
      await cluster.runFor(1000);
    }
    // The helpers relayed n4's acks... with nothing else in the packet.
    expect(reflected.length, cluster.describe()).toBeGreaterThan(0);
    for (const r of reflected) expect(r.join()).toBe("ack");
  });

  it("acks captured from a node's previous run, replayed at its next, do not hide a crashed member from its probes", async () => {
    const cluster = await formCluster(13, 4);
    const n0 = cluster.node("n0");
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    const acks: { from: Addr; frame: Uint8Array }[] = [];
    cluster.net.tap = (kind, from, to, frame) => {
      const opened = kind === "packet" && to.host === n0.addr.host ? keyring.open(frame, "packet") : undefined;
      if (opened?.ok && decoder.decode(opened.plaintext)?.messages.some((m) => m.message.kind === "ack"))
        acks.push({ from, frame });
    };
    await cluster.runFor(60_000);
    cluster.net.tap = undefined;
    expect(acks.length, cluster.describe()).toBeGreaterThan(20);
    cluster.crash("n0");
    cluster.restart("n0");
    expect(await cluster.join(["n0"], ["n1"]), cluster.describe()).toEqual([1]);
    cluster.crash("n3");
    // The whole capture, again and again, while n0's new run probes.
    for (let t = 0; t < 10_000; t += 100) {
      for (const a of acks) cluster.net.inject(a.from, n0.addr, a.frame);
      await cluster.runFor(100);
    }
    expect(n0.ml().counters().protocol.probeFailures, cluster.describe()).toBeGreaterThan(0);
    expect(["suspect", "dead"], cluster.describe()).toContain(cluster.view("n0", "n3")?.state);
  });

  it("an ack with the probe's sequence number counts only from the probed member or a helper asked", async () => {
    const cluster = await formCluster(15, 4);
    const [n0, n3] = [cluster.node("n0"), cluster.node("n3")];
    const keyring = new Keyring(CLUSTER_KEY);
    const decoder = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 1 << 20 });
    cluster.crash("n3");
    // Each ping n0 sends the crashed n3 gets an ack with its number, from n3's address, sent by a
    // name that is neither n3 nor any helper.
    cluster.net.tap = (kind, _from, to, frame) => {
      const opened = kind === "packet" && to.host === n3.addr.host ? keyring.open(frame, "packet") : undefined;
      for (const { message: m } of (opened?.ok && decoder.decode(opened.plaintext)?.messages) || []) {
        if (m.kind !== "ping") continue;
        const ack = encodeMessage({ kind: "ack", seq: m.seq });
        cluster.net.inject(n3.addr, n0.addr, keyring.seal(buildEnvelope(envelopeHeader("mallory"), [ack]), "packet"));
      }
    };
    const failures = n0.ml().counters().protocol.probeFailures;
    await cluster.runFor(10_000);
    expect(n0.ml().counters().protocol.probeFailures, cluster.describe()).toBeGreaterThan(failures);
  });

  it("a record with port 0 is refused whole and makes no member (sending to it used to throw from a timer)", async () => {
    const cluster = await formCluster(14, 3);
    const n0 = cluster.node("n0");
    const evil: Message = {
      kind: "alive",
      node: "evil",
      incarnation: 1,
      host: "198.18.0.99",
      port: 0,
      meta: new Uint8Array(0),
    };
    const frame = new Keyring(CLUSTER_KEY).seal(buildEnvelope(envelopeHeader("evil"), [encodeMessage(evil)]), "packet");
    const garbage = n0.ml().counters().dropped.garbage;
    cluster.net.inject({ host: "198.18.0.99", port: 7946 }, n0.addr, frame);
    await cluster.runFor(5000);
    expect(n0.ml().counters().dropped.garbage).toBe(garbage + 1);
    expect(cluster.view("n0", "evil")).toBeUndefined();
  });

  it("a held name is not cleared by a full state listing its record dead at an older incarnation (a death since refuted)", async () => {
    const { old, target, round } = heldJoiner(16);
    // The reporter lists "a" alive at an address where nothing answers, at incarnation 5.
    const reporter = target("198.18.9.2", "r");
    reporter.list([{ ...old, incarnation: 5, state: "alive" }]);
    expect(await round(reporter.addr)).toEqual({ ended: "GOSSIP_NAME_HELD", held: true });
    // Another member lists it dead at 4: that node refuted the death since, as the reporter knew.
    const other = target("198.18.9.3", "t");
    other.list([{ ...old, incarnation: 4, state: "dead" }]);
    expect(await round(other.addr)).toEqual({ ended: "joined 1", held: true });
    // Dead at 5 (or later), it is gone.
    other.list([{ ...old, incarnation: 5, state: "dead" }]);
    expect(await round(other.addr)).toEqual({ ended: "joined 1", held: false });
  });

  it("a held name is cleared by a member of the reporter's cluster that lists the reporter moved at a later incarnation, not at its reported one nor by another member", async () => {
    const { old, meta, target, round } = heldJoiner(17);
    // The reporter r (incarnation 5) lists "a" alive where nothing answers, and its member t.
    const reporter = target("198.18.9.2", "r", 5);
    const fellow = target("198.18.9.3", "t");
    const stranger = target("198.18.9.5", "u");
    const t = { name: "t", ...fellow.addr, incarnation: 1, state: "alive", meta, stateAgeMs: 0 } as const;
    reporter.list([{ ...old, incarnation: 5, state: "alive" }, t]);
    expect(await round(reporter.addr)).toEqual({ ended: "GOSSIP_NAME_HELD", held: true });
    // r moved to .4. t lists it there at an older incarnation: news from before the report.
    const moved = { name: "r", host: "198.18.9.4", port: 7946, meta, stateAgeMs: 0, state: "alive" } as const;
    fellow.list([{ ...moved, incarnation: 4 }]);
    expect(await round(fellow.addr)).toEqual({ ended: "joined 1", held: true });
    // u, which no report listed (another cluster's, its "r" another node), is no evidence at any incarnation.
    stranger.list([{ ...moved, incarnation: 6 }]);
    expect(await round(stranger.addr)).toEqual({ ended: "joined 1", held: true });
    // At its reported incarnation: news from before the report, or another node of its name (members take r's move only above it).
    fellow.list([{ ...moved, incarnation: 5 }]);
    expect(await round(fellow.addr)).toEqual({ ended: "joined 1", held: true });
    // t lists r at .4 at a later incarnation: r restarted there, and the record is gone.
    fellow.list([{ ...moved, incarnation: 6 }]);
    expect(await round(fellow.addr)).toEqual({ ended: "joined 1", held: false });
  });

  it("a held name is not cleared by a reporter restarted alone, nor by a fellow, while neither lists another live member of the reports where they did", async () => {
    const { old, target, round, member } = heldJoiner(18);
    // r (incarnation 5) lists "a" alive where nothing answers, and its members t and v.
    const reporter = target("198.18.9.2", "r", 5);
    const fellow = target("198.18.9.3", "t");
    const [t, v] = [member("t", "198.18.9.3"), member("v", "198.18.9.6")];
    reporter.list([{ ...old, incarnation: 5, state: "alive" }, t, v]);
    expect(await round(reporter.addr)).toEqual({ ended: "GOSSIP_NAME_HELD", held: true });
    // r restarted and is asked before it rejoined: it lists only itself, while t and v still hold the record.
    reporter.list([]);
    expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: true });
    // t restarted into another cluster, whose "r" is at .4: it does not list v.
    fellow.list([member("r", "198.18.9.4", 6), member("w", "198.18.9.7")]);
    expect(await round(fellow.addr)).toEqual({ ended: "joined 1", held: true });
    // v where the report listed it: t is of r's cluster, and r moved.
    fellow.list([member("r", "198.18.9.4", 6), v]);
    expect(await round(fellow.addr)).toEqual({ ended: "joined 1", held: false });
    // Held again; r's own answer that lists v where the report did (r rejoined) shows it gone.
    reporter.list([{ ...old, incarnation: 5, state: "alive" }, t, v]);
    expect(await round(reporter.addr)).toEqual({ ended: "GOSSIP_NAME_HELD", held: true });
    reporter.list([{ ...v, state: "suspect" }]);
    expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: false });
  });

  it("a held name is cleared by a reporter's own answer that lists no other member where the reports did, once the bound has passed since the record was last reported, but not by one alone", async () => {
    const { cluster, joiner, old, target, round, member } = heldJoiner(20);
    const reporter = target("198.18.9.2", "r", 5);
    const v = member("v", "198.18.9.6");
    const reported = async () => {
      reporter.list([{ ...old, incarnation: 5, state: "alive" }, v]);
      expect(await round(reporter.addr)).toEqual({ ended: "GOSSIP_NAME_HELD", held: true });
    };
    // r restarted, or the record was replaced, and v moved or left.
    for (const answer of [[{ ...v, host: "198.18.9.8" }], [{ ...v, state: "left" as const }]]) {
      await reported();
      // Within the bound (34 s: the 18 s suspicion of a cluster of three, plus two probes stretched
      // 8 times) r's cluster may still hold the record alive.
      reporter.list(answer);
      expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: true });
      await cluster.runFor(30_000);
      expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: true });
      // Past it, that cluster has declared a silent record dead, and nothing reported it again: a
      // record with a live node behind it would have been reported and refused by the bound.
      await cluster.runFor(5_000);
      expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: false });
    }
    // r restarted and still alone, listing only itself (and this node): past the bound too, it
    // shows nothing of its cluster, which it may not reach and which may hold a live node of the name.
    await reported();
    await cluster.runFor(35_000);
    const self = { ...member("a", joiner.addr.host), port: joiner.addr.port };
    for (const alone of [[], [self]]) {
      reporter.list(alone);
      expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: true });
    }
    // Back in its cluster, r lists v (in any state) again.
    reporter.list([{ ...v, state: "left" }]);
    expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: false });
  });

  it("a held name is cleared by a reporter's own answer if the reports listed no other live member; a tombstone's node is no member of theirs", async () => {
    const { old, target, round, member } = heldJoiner(19);
    // r lists "a" alive where nothing answers, and t dead (its node may have restarted elsewhere).
    const reporter = target("198.18.9.2", "r", 5);
    const gone = target("198.18.9.3", "t");
    reporter.list([{ ...old, incarnation: 5, state: "alive" }, member("t", "198.18.9.3", 1, "dead")]);
    expect(await round(reporter.addr)).toEqual({ ended: "GOSSIP_NAME_HELD", held: true });
    // t, in another cluster now, knows an "r" elsewhere at a later incarnation: no evidence.
    gone.list([member("r", "198.18.9.4", 6)]);
    expect(await round(gone.addr)).toEqual({ ended: "joined 1", held: true });
    // r alone: its cluster had no other live member, so its own answer shows the record gone.
    reporter.list([]);
    expect(await round(reporter.addr)).toEqual({ ended: "joined 1", held: false });
  });

  it("garbage, bit-flipped and oversized frames are dropped, counted, and change nothing", async () => {
    const cluster = await formCluster(7, 4);
    const target = cluster.node("n0");
    const transport = target.host.transport!;
    const genuine: Uint8Array[] = [];
    cluster.net.tap = (kind, _from, to, frame) => {
      if (kind === "packet" && to.host === target.addr.host) genuine.push(frame);
    };
    await cluster.runFor(5000);
    cluster.net.tap = undefined;
    const snapshot = () =>
      JSON.stringify(
        target
          .ml()
          .allMembers()
          .map((v) => [v.name, v.state, v.incarnation]),
      );
    const frames = fc.oneof(
      fc.uint8Array({ maxLength: 3000 }),
      fc.tuple(fc.constantFrom(...genuine), fc.nat(), fc.integer({ min: 1, max: 255 })).map(([g, at, mask]) => {
        const bad = Uint8Array.from(g);
        bad[at % bad.length] ^= mask;
        return bad;
      }),
    );
    await fc.assert(
      fc.asyncProperty(frames, async (frame) => {
        const before = snapshot();
        const dropped = Object.values(target.ml().counters().dropped).reduce((a, b) => a + b, 0);
        transport.receivePacket(cluster.node("n1").addr, frame);
        await expect(transport.receiveExchange(cluster.node("n1").addr, frame)).rejects.toBeDefined();
        expect(snapshot()).toBe(before);
        expect(Object.values(target.ml().counters().dropped).reduce((a, b) => a + b, 0)).toBe(dropped + 2);
      }),
      { numRuns: 300 },
    );
    const dropped = target.ml().counters().dropped;
    expect(dropped.badTag + dropped.badKey + dropped.tooBig + dropped.badLength + dropped.garbage).toBeGreaterThan(0);
    // The cluster carries on.
    await cluster.runFor(10_000);
    expect(cluster.converged()).toBe(true);
  });
});
