// Unit tests of the membership building blocks: config profiles, Lifeguard suspicion, the probe
// schedule, local health, the transmit-limited broadcast queue, join waves and the pull digest.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Awareness } from "../../src/control/gossip/awareness.js";
import { KNOWN_NEWS_SENDS, retransmitLimit, TransmitLimitedQueue } from "../../src/control/gossip/broadcast.js";
import { makeConfig, profiles } from "../../src/control/gossip/config.js";
import { ProbeRing, probePhase, probeSlot, untilProbeTime } from "../../src/control/gossip/schedule.js";
import { buildDigest, digestHas } from "../../src/control/gossip/digest.js";
import { MAX_DIGEST_BYTES } from "../../src/control/gossip/messages.js";
import { WaveMeter, waveRetransmitLimit } from "../../src/control/gossip/wave.js";
import { WeftError } from "../../src/errors.js";
import { Suspicion, suspicionBounds, suspicionTimeout } from "../../src/control/gossip/suspicion.js";
import { loneClock } from "./sim/doubles.js";

describe("config profiles", () => {
  it("LAN profile carries memberlist's DefaultLANConfig timings, but for suspicion and gossip interval", () => {
    const c = makeConfig("lan", "a");
    expect([c.probeIntervalMs, c.probeTimeoutMs, c.indirectChecks, c.retransmitMult]).toEqual([1000, 500, 3, 4]);
    expect([c.suspicionMult, c.suspicionMaxTimeoutMult, c.suspicionConfirmations]).toEqual([1, 6, 2]);
    expect([c.gossipIntervalMs, c.gossipNodes, c.pushPullIntervalMs, c.maxPacketBytes]).toEqual([100, 3, 30_000, 1400]);
    expect(profiles.wan.probeIntervalMs).toBe(5000);
    expect(profiles.local.probeTimeoutMs).toBe(200);
  });

  it("refuses invalid settings with GOSSIP_CONFIG_INVALID", () => {
    const invalid = [
      () => makeConfig("lan", ""),
      () => makeConfig("lan", "a", { probeTimeoutMs: 1000 }),
      () => makeConfig("lan", "a", { gossipNodes: 0 }),
      () => makeConfig("lan", "a", { suspicionConfirmations: -1 }),
      () => makeConfig("lan", "a", { suspicionMult: 0 }),
      () => makeConfig("lan", "a", { suspicionMult: Number.NaN }),
      () => makeConfig("lan", "a", { maxPacketBytes: 100 }),
      () => makeConfig("lan", "a", { maxMetaBytes: 1300 }),
      () => makeConfig("lan", "a", { tombstoneRetentionMs: 1000 }),
      () => makeConfig("lan", "x".repeat(129)),
      () => makeConfig("lan", "a", { pullIntervalMs: -1 }),
      () => makeConfig("lan", "a", { pullWindowMs: 100 }),
      () => makeConfig("lan", "a", { waveChanges: 0 }),
      () => makeConfig("lan", "a", { waveRetransmitMult: 0 }),
      () => makeConfig("lan", "a", { waveRetransmitMult: 5 }),
    ];
    // A fractional multiplier is a setting (trade-off curves, ARCHITECTURE.md), not an error.
    expect(makeConfig("lan", "a", { suspicionMult: 0.8 }).suspicionMult).toBe(0.8);
    for (const f of invalid) {
      expect(f).toThrow(WeftError);
      try {
        f();
      } catch (e) {
        expect((e as WeftError).code).toBe("GOSSIP_CONFIG_INVALID");
      }
    }
  });
});

describe("Lifeguard suspicion", () => {
  it("scales bounds with log10 N and wants the configured confirmations", () => {
    expect(suspicionBounds(4, 6, 2, 1000, 1000)).toEqual({ minMs: 12_000, maxMs: 72_000, k: 2 });
    expect(suspicionBounds(4, 6, 2, 5, 1000)).toEqual({ minMs: 4000, maxMs: 24_000, k: 2 });
    // A small mult never goes under three probe intervals (LAN's mult 1 at 8 members would be 1 s).
    expect(suspicionBounds(1, 6, 2, 8, 1000)).toEqual({ minMs: 3000, maxMs: 18_000, k: 2 });
    expect(suspicionBounds(1, 6, 2, 1000, 1000)).toEqual({ minMs: 3000, maxMs: 18_000, k: 2 });
    expect(suspicionBounds(1, 6, 2, 10_000, 1000)).toEqual({ minMs: 4000, maxMs: 24_000, k: 2 });
    // Too few members to confirm: k = 0 and the timer runs the maximum.
    expect(suspicionBounds(4, 6, 2, 3, 1000).k).toBe(0);
    expect(suspicionTimeout(0, suspicionBounds(4, 6, 2, 3, 1000))).toBe(24_000);
    // No confirmations asked for: the minimum from the start.
    expect(suspicionTimeout(0, suspicionBounds(4, 6, 0, 1000, 1000))).toBe(12_000);
  });

  it("shortens from max to min on a log scale as confirmations arrive", () => {
    const b = suspicionBounds(5, 6, 3, 100, 1000); // k = 3
    const t = [0, 1, 2, 3, 4].map((n) => suspicionTimeout(n, b));
    expect(t[0]).toBe(b.maxMs);
    expect(t[3]).toBe(b.minMs);
    expect(t[4]).toBe(b.minMs);
    for (let i = 1; i < t.length; i++) expect(t[i]).toBeLessThanOrEqual(t[i - 1]);
    // log scale: the first confirmation buys the biggest cut.
    expect(t[0] - t[1]).toBeGreaterThan(t[1] - t[2]);
  });

  const clockFor = () => {
    const { scheduler: sched, clock } = loneClock();
    return { sched, clock };
  };

  it("fires at max with no confirmations and at min after k distinct ones", async () => {
    const b = suspicionBounds(4, 6, 2, 10, 1000); // min 4 s, max 24 s, k 2
    const { sched, clock } = clockFor();
    let firedAt = -1;
    new Suspicion(clock, "a", b, () => (firedAt = sched.elapsed()));
    await sched.runFor(30_000);
    expect(firedAt).toBe(b.maxMs);

    const second = clockFor();
    let fired2 = -1;
    const s = new Suspicion(second.clock, "a", b, () => (fired2 = second.sched.elapsed()));
    await second.sched.runFor(1000);
    expect(s.confirm("a")).toBe(false); // the accuser itself never confirms
    expect(s.confirm("b")).toBe(true);
    expect(s.confirm("b")).toBe(false); // one confirmation per member
    expect(s.confirm("c")).toBe(true);
    expect(s.confirm("d")).toBe(false); // enough already
    expect(s.confirmations()).toBe(2);
    await second.sched.runFor(30_000);
    expect(fired2).toBe(b.minMs);
  });

  it("fires at once when a confirmation arrives after the shortened timeout has passed", async () => {
    const b = suspicionBounds(4, 6, 2, 10, 1000);
    const { sched, clock } = clockFor();
    let firedAt = -1;
    const s = new Suspicion(clock, "a", b, () => (firedAt = sched.elapsed()));
    await sched.runFor(20_000);
    s.confirm("b");
    s.confirm("c");
    await sched.runFor(1);
    expect(firedAt).toBe(20_000);
  });

  it("cancel stops the timer", async () => {
    const { sched, clock } = clockFor();
    let fired = false;
    new Suspicion(clock, "a", suspicionBounds(4, 6, 2, 10, 1000), () => (fired = true)).cancel();
    await sched.runFor(100_000);
    expect(fired).toBe(false);
  });
});

describe("probe schedule (ProbeRing)", () => {
  const names = fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { minLength: 2, maxLength: 40 });
  const ringOf = (members: string[]): ProbeRing => {
    const ring = new ProbeRing();
    for (const m of members) ring.add(m);
    return ring;
  };

  it("in any slot, equal views probe every member exactly once and nobody probes itself (property)", () => {
    fc.assert(
      fc.property(names, fc.integer({ min: 0, max: 2 ** 40 }), (members, slot) => {
        const ring = ringOf(members);
        const targets = members.map((m) => ring.target(m, slot));
        expect(targets.every((t, i) => t !== undefined && t !== members[i])).toBe(true);
        expect(new Set(targets).size).toBe(members.length);
      }),
    );
  });

  it("each member visits every other member once in L − 1 consecutive slots (property)", () => {
    fc.assert(
      fc.property(names, fc.integer({ min: 0, max: 2 ** 40 }), fc.nat(), (members, start, pick) => {
        const ring = ringOf(members);
        const self = members[pick % members.length];
        const seen = Array.from({ length: members.length - 1 }, (_, i) => ring.target(self, start + i));
        expect(new Set(seen)).toEqual(new Set(members.filter((m) => m !== self)));
      }),
    );
  });

  it("a member's probes come at most one interval apart, bar one gap per lap of the ring (property)", () => {
    // Each prober probes at its own phase of the slot (probePhase); a crash then waits at most
    // about one interval for its first probe. With random phases a gap could reach two intervals.
    const I = 1000;
    fc.assert(
      fc.property(names, fc.integer({ min: 0, max: 2 ** 30 }), fc.nat(), (members, start, pick) => {
        fc.pre(members.length >= 3);
        const ring = ringOf(members);
        const v = members[pick % members.length];
        const times: number[] = [];
        for (let s = start; s < start + members.length - 1; s++) {
          const probers = members.filter((p) => ring.target(p, s) === v);
          expect(probers.length).toBe(1);
          const at = s * I + probePhase(probers[0]) * I;
          // The prober's own clock puts this probe time in slot s.
          expect(probeSlot(at, I, probePhase(probers[0]))).toBe(s);
          times.push(at);
        }
        const gaps = times.slice(1).map((t, i) => t - times[i]);
        expect(gaps.every((g) => g <= 2 * I)).toBe(true);
        expect(gaps.filter((g) => g > I).length).toBeLessThanOrEqual(1);
      }),
    );
  });

  it("spreads the probe phases of names that differ only in their last characters over the slot", () => {
    // Names as clusters give them (node-1, worker-2, host10): phases bunched in a corner of the
    // slot would make nodes started together probe in lockstep.
    for (const prefix of ["node-", "worker-", "host", "n"]) {
      const phases = Array.from({ length: 16 }, (_, i) => probePhase(`${prefix}${i + 1}`)).sort((a, b) => a - b);
      const gaps = phases.map((p, i) => (i + 1 < phases.length ? phases[i + 1] : phases[0] + 1) - p);
      // 16 uniform points leave a largest gap of about 0.21 on average, above 0.45 with odds near 1e-3.
      expect(Math.max(...gaps), prefix).toBeLessThan(0.45);
      const quarters = new Set(phases.map((p) => Math.floor(p * 4)));
      expect(quarters.size, prefix).toBe(4);
    }
  });

  it("a round that fires a little late runs at once; an early or off-phase one waits for its time", () => {
    const I = 1000;
    const phase = probePhase("n7");
    const at = 5 * I + phase * I;
    expect(untilProbeTime(at, I, phase)).toBe(0);
    expect(untilProbeTime(at + 3, I, phase)).toBe(0);
    expect(untilProbeTime(at - 3, I, phase)).toBeCloseTo(3, 6);
    expect(untilProbeTime(at + 600, I, phase)).toBeCloseTo(400, 6);
    expect(probeSlot(at + 3, I, phase)).toBe(5);
    expect(probeSlot(at - 3, I, phase)).toBe(5);
  });

  it("add and remove are idempotent; no target for a node off the ring or alone on it", () => {
    const ring = ringOf(["a", "b", "a"]);
    expect(ring.size()).toBe(2);
    expect(ring.target("a", 7)).toBe("b");
    expect(ring.target("c", 7)).toBeUndefined();
    ring.remove("b");
    ring.remove("b");
    expect(ring.size()).toBe(1);
    expect(ring.target("a", 7)).toBeUndefined();
  });
});

describe("local health awareness", () => {
  it("keeps the score in [0, max-1] and stretches timeouts by score + 1", () => {
    const a = new Awareness(8);
    a.applyDelta(-1);
    expect(a.score()).toBe(0);
    expect(a.scale(500)).toBe(500);
    a.applyDelta(3);
    expect(a.scale(500)).toBe(2000);
    a.applyDelta(100);
    expect(a.score()).toBe(7);
    expect(a.scale(1000)).toBe(8000);
  });
});

describe("TransmitLimitedQueue", () => {
  const bytes = (tag: number, len = 10): Uint8Array => new Uint8Array(len).fill(tag);

  it("uses memberlist's limit RetransmitMult × ceil(log10(N+1))", () => {
    expect(retransmitLimit(4, 1)).toBe(4);
    expect(retransmitLimit(4, 9)).toBe(4);
    expect(retransmitLimit(4, 10)).toBe(8);
    expect(retransmitLimit(4, 1000)).toBe(16);
  });

  it("sends least-transmitted first, newest first among equals, within the budget", () => {
    const q = new TransmitLimitedQueue(() => 3, 100);
    q.enqueue({ payload: bytes(1) });
    q.enqueue({ payload: bytes(2) });
    q.enqueue({ payload: bytes(3) });
    // Budget for two: the two newest.
    expect(q.take(2, 24).map((p) => p[0])).toEqual([3, 2]);
    // Now 1 has been sent least: it comes first.
    expect(q.take(2, 24).map((p) => p[0])).toEqual([1, 3]);
    q.enqueue({ payload: bytes(4) });
    // 4 unsent; 2 and 1 sent once (newest first); 3 sent twice.
    expect(q.take(2, 1000).map((p) => p[0])).toEqual([4, 2, 1, 3]);
  });

  it("drops a broadcast after its limit and reports it done once", () => {
    let done = 0;
    const q = new TransmitLimitedQueue(() => 2, 100);
    q.enqueue({ payload: bytes(1), onDone: () => done++ });
    expect(q.take(0, 100)).toHaveLength(1);
    expect(done).toBe(0);
    expect(q.take(0, 100)).toHaveLength(1);
    expect(done).toBe(1);
    expect(q.take(0, 100)).toHaveLength(0);
    expect(q.size()).toBe(0);
  });

  it("replaces a broadcast with a newer one of the same key", () => {
    const finished: number[] = [];
    const q = new TransmitLimitedQueue(() => 5, 100);
    q.enqueue({ key: "x", payload: bytes(1), onDone: () => finished.push(1) });
    q.take(0, 100);
    q.enqueue({ key: "x", payload: bytes(2), onDone: () => finished.push(2) });
    expect(finished).toEqual([1]);
    expect(q.size()).toBe(1);
    expect(q.take(0, 100).map((p) => p[0])).toEqual([2]);
  });

  it("sends already-known news last and only a few times", () => {
    const q = new TransmitLimitedQueue(() => 10, 100);
    q.enqueue({ payload: bytes(1), alreadyKnown: true });
    q.enqueue({ payload: bytes(2) });
    expect(q.take(0, 10).map((p) => p[0])).toEqual([2]);
    let sends = 0;
    for (let i = 0; i < 20; i++) sends += q.take(0, 1000).filter((p) => p[0] === 1).length;
    expect(sends).toBe(KNOWN_NEWS_SENDS);
  });

  it("prunes the most transmitted, oldest entries beyond its bound", () => {
    const q = new TransmitLimitedQueue(() => 10, 3);
    q.enqueue({ payload: bytes(1) });
    q.enqueue({ payload: bytes(2) });
    q.take(0, 10); // 2 sent once
    q.enqueue({ payload: bytes(3) });
    q.enqueue({ payload: bytes(4) }); // over the bound: 2 goes
    expect(q.size()).toBe(3);
    expect(
      q
        .take(0, 1000)
        .map((p) => p[0])
        .sort(),
    ).toEqual([1, 3, 4]);
  });

  it("never exceeds the budget or the limit, and never returns a replaced broadcast (property)", () => {
    const op = fc.oneof(
      fc.record({
        enqueue: fc.constant(true),
        key: fc.option(fc.constantFrom("a", "b", "c"), { nil: undefined }),
        len: fc.integer({ min: 1, max: 300 }),
      }),
      fc.record({ enqueue: fc.constant(false), budget: fc.integer({ min: 0, max: 1400 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 1, max: 6 }), (ops, limit) => {
        const q = new TransmitLimitedQueue(() => limit, 50);
        const sent = new Map<Uint8Array, number>();
        const replaced = new Set<Uint8Array>();
        const latestByKey = new Map<string, Uint8Array>();
        for (const o of ops) {
          if (o.enqueue) {
            const payload = new Uint8Array(o.len);
            if (o.key !== undefined) {
              const old = latestByKey.get(o.key);
              if (old) replaced.add(old);
              latestByKey.set(o.key, payload);
            }
            q.enqueue({ key: o.key, payload });
          } else {
            const out = q.take(3, o.budget);
            expect(out.reduce((s, p) => s + p.length + 3, 0)).toBeLessThanOrEqual(o.budget);
            for (const p of out) {
              expect(replaced.has(p)).toBe(false);
              sent.set(p, (sent.get(p) ?? 0) + 1);
              expect(sent.get(p)).toBeLessThanOrEqual(limit);
            }
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it("a broadcast goes in its compact form to version-2 receivers, in its old form to others, within budget and limit (property)", () => {
    const op = fc.oneof(
      fc.record({
        enqueue: fc.constant(true),
        len: fc.integer({ min: 1, max: 300 }),
        compactLen: fc.option(fc.integer({ min: 1, max: 300 }), { nil: undefined }),
      }),
      fc.record({ enqueue: fc.constant(false), budget: fc.integer({ min: 0, max: 1400 }), compact: fc.boolean() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 1, max: 6 }), (ops, limit) => {
        const q = new TransmitLimitedQueue(() => limit, 50);
        /** Either form → its broadcast's index; sends counted per broadcast, whatever the form. */
        const formOf = new Map<Uint8Array, { id: number; compact: boolean }>();
        const sends: number[] = [];
        for (const o of ops) {
          if (o.enqueue) {
            const payload = new Uint8Array(o.len);
            const compact = o.compactLen === undefined ? undefined : new Uint8Array(o.compactLen);
            formOf.set(payload, { id: sends.length, compact: false });
            if (compact) formOf.set(compact, { id: sends.length, compact: true });
            sends.push(0);
            q.enqueue({ payload, compact });
            continue;
          }
          const out = q.take(3, o.budget, o.compact);
          expect(out.reduce((s, p) => s + p.length + 3, 0)).toBeLessThanOrEqual(o.budget);
          for (const p of out) {
            const form = formOf.get(p)!;
            // The compact form only to a version-2 receiver; the old form to one only when there is no compact form.
            if (form.compact) expect(o.compact).toBe(true);
            else if (o.compact) expect([...formOf.values()].some((f) => f.id === form.id && f.compact)).toBe(false);
            expect(++sends[form.id]).toBeLessThanOrEqual(limit);
          }
        }
      }),
      { numRuns: 200 },
    );
    // Room for the compact form only: the compact receiver gets it, the other gets nothing yet.
    const q = new TransmitLimitedQueue(() => 2, 10);
    const payload = new Uint8Array(200);
    const compact = new Uint8Array(100);
    q.enqueue({ payload, compact });
    expect(q.take(3, 150, false)).toEqual([]);
    expect(q.take(3, 150, true)).toEqual([compact]);
    expect(q.take(3, 250, false)).toEqual([payload]);
    expect(q.size()).toBe(0);
  });

  it("oncePerRound: a broadcast rides on at most one packet per gossip round, and still on `limit` packets in all (property)", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("enqueue" as const), len: fc.integer({ min: 1, max: 300 }) }),
      fc.record({ kind: fc.constant("take" as const), budget: fc.integer({ min: 0, max: 1400 }) }),
      fc.record({ kind: fc.constant("round" as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), fc.integer({ min: 1, max: 6 }), (ops, limit) => {
        const q = new TransmitLimitedQueue(() => limit, 1000, true);
        const sent = new Map<Uint8Array, number>();
        let thisRound = new Set<Uint8Array>();
        for (const o of ops) {
          if (o.kind === "enqueue") q.enqueue({ payload: new Uint8Array(o.len) });
          else if (o.kind === "round") {
            q.beginRound();
            thisRound = new Set();
          } else {
            for (const p of q.take(3, o.budget)) {
              expect(thisRound.has(p)).toBe(false);
              thisRound.add(p);
              sent.set(p, (sent.get(p) ?? 0) + 1);
            }
          }
        }
        // Rounds with room for everything: each broadcast goes once per round until its limit.
        for (let r = 0; r <= limit; r++) {
          q.beginRound();
          for (const p of q.take(3, 1_000_000)) sent.set(p, (sent.get(p) ?? 0) + 1);
          expect(q.take(3, 1_000_000)).toEqual([]);
        }
        expect(q.size()).toBe(0);
        for (const n of sent.values()) expect(n).toBe(limit);
      }),
      { numRuns: 200 },
    );
  });

  it("oncePerRound: the packets of one round carry different broadcasts, least sent first", () => {
    const q = new TransmitLimitedQueue(() => 5, 100, true);
    for (let i = 1; i <= 4; i++) q.enqueue({ payload: bytes(i) });
    q.beginRound();
    expect(q.take(0, 20).map((p) => p[0])).toEqual([4, 3]);
    expect(q.take(0, 20).map((p) => p[0])).toEqual([2, 1]);
    expect(q.take(0, 20)).toEqual([]);
    q.beginRound();
    expect(q.take(0, 40).map((p) => p[0])).toEqual([4, 3, 2, 1]);
  });

  it("oncePerRound: an urgent broadcast (a death) still rides on every packet", () => {
    const q = new TransmitLimitedQueue(() => 5, 100, true);
    q.enqueue({ payload: bytes(1) });
    q.enqueue({ payload: bytes(9), urgent: true });
    q.beginRound();
    expect(q.take(0, 20).map((p) => p[0])).toEqual([9, 1]);
    expect(q.take(0, 20).map((p) => p[0])).toEqual([9]);
    expect(q.take(0, 20).map((p) => p[0])).toEqual([9]);
  });

  it("to: a broadcast goes to a member again only after every peer had it", () => {
    const q = new TransmitLimitedQueue(() => 5, 100, true);
    q.enqueue({ payload: bytes(1), urgent: true });
    const to = (id: string) => q.take(0, 20, false, { id, peers: 2 }).map((p) => p[0]);
    expect(to("a")).toEqual([1]);
    expect(to("a")).toEqual([]); // b has not had it
    expect(to("b")).toEqual([1]);
    expect(to("a")).toEqual([1]); // both had it: a new lap
    expect(to("a")).toEqual([]);
    expect(to("b")).toEqual([1]);
    expect(to("b")).toEqual([1]); // the fifth send, its last
    expect(q.size()).toBe(0);
  });

  it("to: the members a broadcast goes to are distinct in every lap of `peers` sends (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 12 }),
        fc.array(
          fc.oneof(
            fc.nat(5).map((m) => ({ take: m })),
            fc.constant({ enqueue: true }),
          ),
          { maxLength: 200 },
        ),
        (peers, limit, ops) => {
          const q = new TransmitLimitedQueue(() => limit, 1000);
          const sends = new Map<Uint8Array, string[]>();
          for (const o of ops) {
            if ("enqueue" in o) q.enqueue({ payload: new Uint8Array(1) });
            else {
              const id = `m${o.take % peers}`;
              for (const p of q.take(0, 1_000_000, false, { id, peers })) sends.set(p, [...(sends.get(p) ?? []), id]);
            }
          }
          // Packets to every member in turn: nothing stays behind for good.
          for (let i = 0; i < peers * limit; i++) {
            const id = `m${i % peers}`;
            for (const p of q.take(0, 1_000_000, false, { id, peers })) sends.set(p, [...(sends.get(p) ?? []), id]);
          }
          expect(q.size()).toBe(0);
          for (const to of sends.values()) {
            expect(to.length).toBe(limit);
            for (let lap = 0; lap < to.length; lap += peers) {
              const members = to.slice(lap, lap + peers);
              expect(new Set(members).size).toBe(members.length);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("join waves (wave.ts) and the pull digest (digest.ts)", () => {
  it("sends another member's alive ceil(mult × ceil(log10(N+1))) times in a wave, at least once", () => {
    expect(waveRetransmitLimit(0.5, 1000)).toBe(2);
    expect(waveRetransmitLimit(0.5, 9)).toBe(1);
    expect(waveRetransmitLimit(1, 1000)).toBe(4);
    expect(waveRetransmitLimit(0.1, 1)).toBe(1);
  });

  it("is in a wave while the last `changes` changes fall within the window, and leaves it after", async () => {
    const { scheduler, clock } = loneClock();
    const meter = new WaveMeter(clock, 2000, 3);
    expect(meter.inWave()).toBe(false);
    meter.note();
    meter.note();
    expect(meter.inWave()).toBe(false);
    await scheduler.runFor(1500);
    meter.note();
    expect(meter.inWave()).toBe(true);
    await scheduler.runFor(501);
    expect(meter.inWave()).toBe(false); // the first two are now older than the window
    meter.note();
    meter.note();
    expect(meter.inWave()).toBe(true);
  });

  it("a queue whose limit depends on the broadcast ends join news at the lower limit", () => {
    const q = new TransmitLimitedQueue((b) => (b.joinNews ? 1 : 3), 100);
    q.enqueue({ payload: new Uint8Array(4).fill(1), joinNews: true });
    q.enqueue({ payload: new Uint8Array(4).fill(2) });
    expect(q.take(0, 100).map((p) => p[0])).toEqual([2, 1]);
    expect(q.take(0, 100).map((p) => p[0])).toEqual([2]);
    expect(q.take(0, 100).map((p) => p[0])).toEqual([2]);
    expect(q.size()).toBe(0);
  });

  it("a digest holds every key put in it, whatever the salt (property)", () => {
    const key = fc.record({ name: fc.string({ minLength: 1, maxLength: 40 }), incarnation: fc.nat() });
    fc.assert(
      fc.property(fc.array(key, { maxLength: 300 }), fc.nat({ max: 0xffffffff }), (keys, salt) => {
        const digest = buildDigest(salt, keys, keys.length);
        expect(digest.length).toBeLessThanOrEqual(MAX_DIGEST_BYTES);
        for (const k of keys) expect(digestHas(digest, salt, k)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("a digest rarely holds a key it was not given, and another salt hides other keys", () => {
    const held = Array.from({ length: 400 }, (_, i) => ({ name: `n${i}`, incarnation: 1_700_000_000 }));
    const others = Array.from({ length: 4000 }, (_, i) => ({ name: `m${i}`, incarnation: 1_700_000_000 }));
    const falsePositives = (salt: number): Set<string> => {
      const digest = buildDigest(salt, held, held.length);
      return new Set(others.filter((k) => digestHas(digest, salt, k)).map((k) => k.name));
    };
    const a = falsePositives(1);
    const b = falsePositives(2);
    // About 5.6% at 6 bits a key and 4 hashes; bounded loosely so the test cannot flake on the hash.
    expect(a.size).toBeLessThan(others.length * 0.09);
    expect([...a].filter((n) => b.has(n)).length).toBeLessThan(Math.max(3, a.size / 4));
    // An empty filter (a puller that holds nothing recent) holds nothing.
    expect(digestHas(new Uint8Array(0), 1, held[0])).toBe(false);
  });
});
