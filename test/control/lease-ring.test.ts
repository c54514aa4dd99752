import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Ring, type RingRun, type RingState } from "../../src/control/lease/ring.js";
import { SlotRing } from "../reference/slot-ring.js";

const NAMES = ["n0", "n1", "n2", "n3", "n4"];

function owners(r: Ring): string[] {
  return [...new Set(r.state().runs.map((x) => x.owner))].sort();
}

function mergedInto(slotCount: number, ...states: RingState[]): RingState {
  const r = Ring.unknown(slotCount);
  for (const s of states) expect(r.merge(s).ok).toBe(true);
  return r.state();
}

describe("Ring: seeding", () => {
  it("divides the slots among the sorted, de-duplicated seeds at version 1", () => {
    const a = Ring.seeded(10, ["c", "a", "b", "a"]);
    expect(a.seeds).toEqual(["a", "b", "c"]);
    expect(a.state().runs).toEqual([
      { start: 0, count: 4, owner: "a", version: 1, leased: false },
      { start: 4, count: 3, owner: "b", version: 1, leased: false },
      { start: 7, count: 3, owner: "c", version: 1, leased: false },
    ]);
    expect(Ring.seeded(10, ["b", "c", "a"]).state()).toEqual(a.state());
  });

  it("gives later seeds nothing when there are more seeds than slots", () => {
    const r = Ring.seeded(2, ["a", "b", "c"]);
    expect(owners(r)).toEqual(["a", "b"]);
  });

  it("refuses an empty seed list", () => {
    expect(() => Ring.seeded(4, [])).toThrow(expect.objectContaining({ code: "LEASE_BAD_SEEDS" }));
  });
});

describe("Ring: owner changes", () => {
  it("transfers only the giver's own free slots and bumps their versions", () => {
    const r = Ring.seeded(8, ["a", "b"]);
    expect(r.transfer("a", { start: 2, count: 2 }, "c")).toEqual([
      { start: 2, count: 2, owner: "c", version: 2, leased: false },
    ]);
    expect(() => r.transfer("a", { start: 2, count: 1 }, "d")).toThrow(
      expect.objectContaining({ code: "LEASE_NOT_OWNER" }),
    );
    expect(() => r.transfer("a", { start: 3, count: 2 }, "d")).toThrow(
      expect.objectContaining({ code: "LEASE_NOT_OWNER" }),
    );
    r.setLeased("a", 0, true);
    expect(() => r.transfer("a", { start: 0, count: 1 }, "d")).toThrow(
      expect.objectContaining({ code: "LEASE_NOT_OWNER" }),
    );
    expect(() => r.transfer("a", { start: 7, count: 2 }, "d")).toThrow(
      expect.objectContaining({ code: "LEASE_BAD_SLOT" }),
    );
  });

  it("lets a node lease one slot of its own", () => {
    const r = Ring.seeded(8, ["a", "b"]);
    r.setLeased("a", 1, true);
    expect(r.leasesOf("a")).toEqual([1]);
    expect(() => r.setLeased("a", 2, true)).toThrow(expect.objectContaining({ code: "LEASE_ALREADY_LEASED" }));
    expect(() => r.setLeased("a", 5, true)).toThrow(expect.objectContaining({ code: "LEASE_NOT_OWNER" }));
    expect(r.freeSpansOf("a")).toEqual([
      { start: 0, count: 1 },
      { start: 2, count: 2 },
    ]);
    expect(r.slot(1)).toEqual({ owner: "a", version: 2, leased: true });
  });
});

describe("Ring: merge", () => {
  it("takes the higher version per slot and reports what changed", () => {
    const a = Ring.seeded(8, ["a", "b"]);
    const b = a.clone();
    a.transfer("a", { start: 0, count: 2 }, "c");
    b.setLeased("b", 4, true);
    const res = a.merge(b.state());
    expect(res.ok && res.changed.map((c) => [c.start, c.count])).toEqual([[4, 1]]);
    expect(a.slot(0)).toEqual({ owner: "c", version: 2, leased: false });
    expect(a.slot(4)).toEqual({ owner: "b", version: 2, leased: true });
    // An old state changes nothing.
    const old = Ring.seeded(8, ["a", "b"]).state();
    expect(a.merge(old)).toEqual({ ok: true, changed: [] });
  });

  it("refuses the same version with a different owner, whole, and changes nothing", () => {
    const a = Ring.seeded(8, ["a", "b"]);
    const b = a.clone();
    a.transfer("a", { start: 0, count: 1 }, "c");
    b.transfer("a", { start: 0, count: 1 }, "d"); // a second history: what a rolled-back "a" might do
    b.setLeased("b", 6, true); // a legitimate change in the same message must not get in either
    const before = a.state();
    const res = a.merge(b.state());
    expect(res.ok).toBe(false);
    if (res.ok) return;
    expect(res.error.code).toBe("LEASE_INCONSISTENT");
    expect(res.conflicts).toEqual([
      {
        start: 0,
        count: 1,
        mine: { owner: "c", version: 2, leased: false },
        theirs: { owner: "d", version: 2, leased: false },
      },
    ]);
    expect(a.state()).toEqual(before);
  });

  it("refuses the same version with a different lease flag", () => {
    const a = Ring.seeded(4, ["a"]);
    const b = a.clone();
    a.setLeased("a", 0, true);
    b.transfer("a", { start: 0, count: 1 }, "x");
    const res = a.merge(b.state());
    expect(!res.ok && res.error.code).toBe("LEASE_INCONSISTENT");
  });

  it("refuses a ring seeded differently, and malformed runs", () => {
    const a = Ring.seeded(8, ["a", "b"]);
    const other = a.merge(Ring.seeded(8, ["a", "c"]).state());
    expect(!other.ok && other.error.code).toBe("LEASE_RING_MISMATCH");
    const overlap = a.merge({
      seeds: ["a", "b"],
      runs: [
        { start: 0, count: 3, owner: "x", version: 9, leased: false },
        { start: 2, count: 1, owner: "y", version: 9, leased: false },
      ],
    });
    expect(!overlap.ok && overlap.error.code).toBe("LEASE_BAD_STATE");
    const outside = a.merge({
      seeds: ["a", "b"],
      runs: [{ start: 7, count: 2, owner: "x", version: 9, leased: false }],
    });
    expect(!outside.ok && outside.error.code).toBe("LEASE_BAD_STATE");
    expect(a.state()).toEqual(Ring.seeded(8, ["a", "b"]).state());
  });

  it("lets a node without seeds adopt the ring it hears", () => {
    const r = Ring.unknown(8);
    expect(r.seeds).toBeNull();
    expect(r.merge(Ring.seeded(8, ["a", "b"]).state()).ok).toBe(true);
    expect(r.seeds).toEqual(["a", "b"]);
    expect(r.state()).toEqual(Ring.seeded(8, ["a", "b"]).state());
  });
});

describe("Ring: reclaim by the heir", () => {
  it("gives a dead node's run to the owner of the slot before it, wrapping, and chains", () => {
    const r = Ring.seeded(12, ["a", "b", "c", "d"]); // a 0-2, b 3-5, c 6-8, d 9-11
    r.setLeased("b", 4, true);
    // b and c are dead: a is heir of b's run, then of c's.
    expect(r.reclaim("d", new Set(["b", "c"]), false)).toEqual([]);
    const delta = r.reclaim("a", new Set(["b", "c"]), false);
    expect(delta).toEqual([
      { start: 3, count: 1, owner: "a", version: 2, leased: false },
      { start: 4, count: 1, owner: "a", version: 3, leased: false },
      { start: 5, count: 4, owner: "a", version: 2, leased: false },
    ]);
    expect(r.slot(4)).toEqual({ owner: "a", version: 3, leased: false });
    // a dead: d is heir across the wrap (slot 11 precedes slot 0).
    const wrapped = r.reclaim("d", new Set(["a"]), false);
    expect(wrapped.reduce((n, x) => n + x.count, 0)).toBe(9);
    expect(r.slot(0)).toEqual({ owner: "d", version: 2, leased: false });
    expect(owners(r)).toEqual(["d"]);
  });

  it("takes orphans (no live owner left) only when asked to", () => {
    const r = Ring.seeded(6, ["a", "b"]);
    expect(r.reclaim("z", new Set(["a", "b"]), false)).toEqual([]);
    expect(r.reclaim("z", new Set(["a", "b"]), true)).toEqual([
      { start: 0, count: 6, owner: "z", version: 2, leased: false },
    ]);
  });
});

// ---- Property tests: random histories of a small cluster, messages delivered in any order,
// duplicated, delayed, replayed. Every node follows the rules; the properties must hold. ----

type Op =
  | { op: "give"; by: number; to: number; half: boolean }
  | { op: "lease"; node: number }
  | { op: "unlease"; node: number }
  | { op: "snapshot"; node: number }
  | { op: "deliver"; msg: number; to: number }
  | { op: "pushpull"; a: number; b: number }
  | { op: "die"; node: number }
  | { op: "reclaim"; node: number };

const nodeIx = fc.integer({ min: 0, max: NAMES.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant("give" as const), by: nodeIx, to: nodeIx, half: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("lease" as const), node: nodeIx }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("unlease" as const), node: nodeIx }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("snapshot" as const), node: nodeIx }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant("deliver" as const), msg: fc.nat(), to: nodeIx }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("pushpull" as const), a: nodeIx, b: nodeIx }) },
);

class World {
  readonly views: Ring[];
  /** Everything ever sent; delivery picks any of it, any number of times (delay, dup, replay). */
  readonly bag: RingState[] = [];
  readonly dead = new Set<string>();
  readonly condemned = new Set<string>();
  refusals = 0;

  constructor(
    readonly slotCount: number,
    seeds: string[],
  ) {
    this.views = NAMES.map(() => Ring.seeded(slotCount, seeds));
  }

  apply(o: Op): void {
    const name = (i: number): string => NAMES[i];
    const live = (i: number): boolean => !this.dead.has(name(i));
    switch (o.op) {
      case "give": {
        if (o.by === o.to || !live(o.by)) return;
        const view = this.views[o.by];
        const span = view.freeSpansOf(name(o.by))[0];
        if (!span) return;
        const count = o.half ? Math.ceil(span.count / 2) : 1;
        this.bag.push({ seeds: view.seeds, runs: view.transfer(name(o.by), { start: span.start, count }, name(o.to)) });
        return;
      }
      case "lease": {
        const view = this.views[o.node];
        const free = view.freeSpansOf(name(o.node))[0];
        if (!live(o.node) || !free || view.leasesOf(name(o.node)).length > 0) return;
        this.bag.push({ seeds: view.seeds, runs: view.setLeased(name(o.node), free.start, true) });
        return;
      }
      case "unlease": {
        const view = this.views[o.node];
        const leased = view.leasesOf(name(o.node))[0];
        if (!live(o.node) || leased === undefined) return;
        this.bag.push({ seeds: view.seeds, runs: view.setLeased(name(o.node), leased, false) });
        return;
      }
      case "snapshot":
        this.bag.push(this.views[o.node].state());
        return;
      case "deliver":
        if (this.bag.length === 0 || !live(o.to)) return;
        this.merge(o.to, this.bag[o.msg % this.bag.length]);
        return;
      case "pushpull": {
        if (!live(o.a) || !live(o.b)) return;
        const [sa, sb] = [this.views[o.a].state(), this.views[o.b].state()];
        this.merge(o.b, sa);
        this.merge(o.a, sb);
        return;
      }
      case "die":
        this.dead.add(name(o.node));
        return;
      case "reclaim": {
        if (!live(o.node)) return;
        const view = this.views[o.node];
        const runs = view.reclaim(name(o.node), this.dead, false);
        if (runs.length > 0) this.bag.push({ seeds: view.seeds, runs });
        return;
      }
    }
  }

  private merge(to: number, state: RingState): void {
    const res = this.views[to].merge(state);
    if (!res.ok) this.refusals++;
  }

  /** Each live node's own slots by its own view, as runs; overlaps are double owners. Works on
   *  ranges, so spaces of 2^32 slots are checked as cheaply as small ones. */
  selfOwned(): Array<{ start: number; count: number; owner: string }> {
    return NAMES.flatMap((n, i) =>
      this.dead.has(n)
        ? []
        : this.views[i]
            .state()
            .runs.filter((r) => r.owner === n)
            .map((r) => ({ start: r.start, count: r.count, owner: n })),
    ).sort((a, b) => a.start - b.start);
  }

  /** Per view, its runs (unknown slots have version 0 and are left out). */
  versions(): RingRun[][] {
    return this.views.map((v) => [...v.state().runs]);
  }

  /** All-pairs push-pull among live nodes until nothing changes. */
  settle(): void {
    for (let round = 0; round < 3; round++) {
      for (let a = 0; a < NAMES.length; a++)
        for (let b = 0; b < NAMES.length; b++) this.apply({ op: "pushpull", a, b });
    }
  }
}

function versionAt(runs: readonly RingRun[], slot: number): number {
  const r = runs.find((x) => slot >= x.start && slot < x.start + x.count);
  return r ? r.version : 0;
}

function checkStep(world: World, before: RingRun[][]): RingRun[][] {
  const own = world.selfOwned();
  own.forEach((r, i) => {
    const next = own[i + 1];
    if (next)
      expect(
        r.start + r.count,
        `slots from ${next.start} owned by ${r.owner} and ${next.owner} in their own views`,
      ).toBeLessThanOrEqual(next.start);
  });
  const after = world.versions();
  // Versions are constant along a run: checking every run start of both sides covers every slot.
  after.forEach((runs, i) => {
    for (const slot of new Set([...runs, ...before[i]].map((r) => r.start))) {
      expect(versionAt(runs, slot), `${NAMES[i]} slot ${slot} version went back`).toBeGreaterThanOrEqual(
        versionAt(before[i], slot),
      );
    }
  });
  expect(world.refusals, "a legitimate history produced an inconsistency").toBe(0);
  return after;
}

const worldArb = fc.record({
  // Small spaces, where slots run out and wrap, and IPv6-sized ones (a /32 of /64s is 2^32 - 1
  // slots after flannel skips the first).
  slotCount: fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom(2 ** 32 - 1, 2 ** 32, 2 ** 48) },
  ),
  seeds: fc.subarray(NAMES, { minLength: 1 }),
  ops: fc.array(opArb, { maxLength: 120 }),
});

describe("Ring properties", () => {
  it("no slot is ever owned by two live nodes in their own views; versions only grow; no false conflicts; views converge", () => {
    fc.assert(
      fc.property(worldArb, ({ slotCount, seeds, ops }) => {
        const world = new World(slotCount, seeds);
        let versions = world.versions();
        for (const o of ops) {
          world.apply(o);
          versions = checkStep(world, versions);
        }
        world.settle();
        checkStep(world, versions);
        const states = world.views.map((v) => JSON.stringify(v.state()));
        expect(new Set(states).size).toBe(1);
        // Every slot has exactly one owner who knows it, and a node leases at most one slot.
        expect(world.selfOwned().reduce((n, r) => n + r.count, 0)).toBe(slotCount);
        for (const n of NAMES) expect(world.views[0].leasesOf(n).length).toBeLessThanOrEqual(1);
      }),
      { numRuns: 150 },
    );
  });

  it("merge is commutative, associative and idempotent on states of one history", () => {
    fc.assert(
      fc.property(worldArb, fc.nat(), fc.nat(), fc.nat(), ({ slotCount, seeds, ops }, i, j, k) => {
        const world = new World(slotCount, seeds);
        for (const o of ops) world.apply(o);
        for (let n = 0; n < NAMES.length; n++) world.apply({ op: "snapshot", node: n });
        const pick = (x: number): RingState => world.bag[x % world.bag.length];
        const [a, b, c] = [pick(i), pick(j), pick(k)];
        expect(mergedInto(slotCount, a, b)).toEqual(mergedInto(slotCount, b, a));
        expect(mergedInto(slotCount, a, a)).toEqual(mergedInto(slotCount, a));
        expect(mergedInto(slotCount, mergedInto(slotCount, a, b), c)).toEqual(
          mergedInto(slotCount, a, mergedInto(slotCount, b, c)),
        );
      }),
      { numRuns: 300 },
    );
  });

  it("a state with one slot of the same version but another owner is refused whole, and reported", () => {
    fc.assert(
      fc.property(worldArb, nodeIx, fc.nat(), ({ slotCount, seeds, ops }, at, slotPick) => {
        const world = new World(slotCount, seeds);
        for (const o of ops) world.apply(o);
        const view = world.views[at];
        const forged = view.state();
        const slot = slotPick % slotCount;
        const st = view.slot(slot);
        const runs = forged.runs.flatMap((r) => {
          if (slot < r.start || slot >= r.start + r.count) return [{ ...r, version: r.version + 1 }];
          const left = { ...r, count: slot - r.start, version: r.version + 1 };
          const right = { ...r, start: slot + 1, count: r.start + r.count - slot - 1, version: r.version + 1 };
          const mid = {
            start: slot,
            count: 1,
            owner: st.owner === "intruder" ? "other" : "intruder",
            version: st.version,
            leased: st.leased,
          };
          return [left, mid, right].filter((x) => x.count > 0);
        });
        const before = view.state();
        const res = view.merge({ seeds: forged.seeds, runs });
        expect(res.ok).toBe(false);
        if (!res.ok) {
          expect(res.error.code).toBe("LEASE_INCONSISTENT");
          expect(res.conflicts.map((c) => [c.start, c.count])).toEqual([[slot, 1]]);
        }
        expect(view.state()).toEqual(before);
      }),
      { numRuns: 200 },
    );
  });

  it("after nodes die and views settle, heirs reclaim everything without conflicts or double owners", () => {
    fc.assert(
      fc.property(
        worldArb,
        fc.subarray([0, 1, 2, 3, 4], { minLength: 1, maxLength: 4 }),
        fc.array(opArb, { maxLength: 60 }),
        ({ slotCount, seeds, ops }, dying, after) => {
          const world = new World(slotCount, seeds);
          for (const o of ops) world.apply(o);
          world.settle(); // the dead nodes' last changes have spread: the precondition of reclaim
          let versions = world.versions();
          for (const d of dying) world.apply({ op: "die", node: d });
          // Heirs act in random interleavings with delivery of what they send.
          for (const o of after) {
            world.apply(
              o.op === "give" || o.op === "lease" || o.op === "unlease"
                ? { op: "reclaim", node: o.op === "give" ? o.by : o.node }
                : o,
            );
            versions = checkStep(world, versions);
          }
          // Until nothing changes (each round takes at least one dead run while any is left).
          for (let i = 0, last = ""; i < 2 * Math.min(slotCount, 200) + 4; i++) {
            for (let n = 0; n < NAMES.length; n++) world.apply({ op: "reclaim", node: n });
            world.settle();
            const now = JSON.stringify(world.versions());
            if (now === last) break;
            last = now;
          }
          checkStep(world, versions);
          const liveOwners = owners(world.views[NAMES.findIndex((n) => !world.dead.has(n))]);
          if (liveOwners.some((n) => !world.dead.has(n))) {
            expect(
              liveOwners.filter((n) => world.dead.has(n)),
              "dead owners left although a live heir exists",
            ).toEqual([]);
          }
        },
      ),
      { numRuns: 100 },
    );
  });
});

// ---- The range ring against the per-slot reference (test/reference/slot-ring.ts): the same
// operations, including refused ones and merges of each other's states, give the same results;
// the range ring's per-owner index gives the counts of counting the slots. ----

type DiffOp =
  | { op: "transfer"; by: number; to: number; at: number; count: number }
  | { op: "lease"; node: number; at: number; leased: boolean }
  | { op: "reclaim"; heir: number; dead: number[]; orphans: boolean }
  | { op: "merge"; from: number }
  | { op: "clone" };

const diffOp: fc.Arbitrary<DiffOp> = fc.oneof(
  fc.record({
    op: fc.constant("transfer" as const),
    by: nodeIx,
    to: nodeIx,
    at: fc.nat(),
    count: fc.integer({ min: 1, max: 12 }),
  }),
  fc.record({ op: fc.constant("lease" as const), node: nodeIx, at: fc.nat(), leased: fc.boolean() }),
  fc.record({
    op: fc.constant("reclaim" as const),
    heir: nodeIx,
    dead: fc.subarray([0, 1, 2, 3, 4]),
    orphans: fc.boolean(),
  }),
  fc.record({ op: fc.constant("merge" as const), from: fc.nat() }),
  fc.record({ op: fc.constant("clone" as const) }),
);

/** Owner counts (and leases) of `ring` equal those of counting `ref`'s slots, per owner and one by one. */
function expectCounts(ring: Ring, ref: SlotRing): void {
  const counted = ref.ownedCounts();
  const leases = ring.leasesByOwner();
  expect(ring.ownedCounts()).toEqual(counted);
  for (const n of NAMES) {
    expect(ring.ownedBy(n)).toBe(counted.get(n) ?? 0);
    expect(leases.get(n) ?? []).toEqual(ref.leasesOf(n));
  }
}

describe("Ring against the per-slot reference", () => {
  it("gives the same states, deltas, errors, merge results and owner counts (clones keep their own)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.subarray(NAMES, { minLength: 1 }),
        fc.array(diffOp, { maxLength: 80 }),
        (slotCount, seeds, ops) => {
          let ring = Ring.seeded(slotCount, seeds);
          let ref = SlotRing.seeded(slotCount, seeds);
          const history: RingState[] = [ring.state()];
          /** Rings left behind by a clone op, with their references: later changes must not reach them. */
          const left: Array<[Ring, SlotRing]> = [];
          const both = <T>(f: (r: Ring | SlotRing) => T): [T | string, T | string] =>
            [ring, ref].map((r) => {
              try {
                return f(r);
              } catch (e) {
                return (e as { code: string }).code;
              }
            }) as [T | string, T | string];
          for (const o of ops) {
            if (o.op === "transfer") {
              const [a, b] = both((r) =>
                r.transfer(NAMES[o.by], { start: o.at % slotCount, count: o.count }, NAMES[o.to]),
              );
              expect(a).toEqual(b);
            } else if (o.op === "lease") {
              const [a, b] = both((r) => r.setLeased(NAMES[o.node], o.at % slotCount, o.leased));
              expect(a).toEqual(b);
            } else if (o.op === "reclaim") {
              const dead = new Set(o.dead.map((i) => NAMES[i]));
              const [a, b] = both((r) => r.reclaim(NAMES[o.heir], dead, o.orphans));
              expect(a).toEqual(b);
            } else if (o.op === "clone") {
              left.push([ring, ref]);
              ring = ring.clone();
              ref = ref.clone();
            } else {
              const st = history[o.from % history.length];
              const [a, b] = both((r) => r.merge(st));
              const slots = (x: typeof a) =>
                typeof x === "string"
                  ? x
                  : x.ok
                    ? x.changed.reduce((n, c) => n + ("count" in c ? c.count : 1), 0)
                    : `refused ${x.error.code}`;
              expect(slots(a)).toEqual(slots(b));
            }
            expect(ring.state()).toEqual(ref.state());
            expectCounts(ring, ref);
            for (const [r, x] of left) expectCounts(r, x);
            history.push(ring.state());
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("Ring size grows with nodes, not with subnets", () => {
  it("2^32 slots, 500 nodes joining as the allocator does it (half of the donor's largest free run): a few segments per node", () => {
    const ring = Ring.seeded(2 ** 32 - 1, ["seed"]);
    const names = ["seed", ...Array.from({ length: 499 }, (_, i) => `node-${i}`)];
    ring.setLeased("seed", 0, true);
    for (const n of names.slice(1)) {
      const [donor, spans] = names
        .map((d) => [d, ring.freeSpansOf(d)] as const)
        .filter(([, s]) => s.length > 0)
        .reduce((best, cur) =>
          Math.max(...cur[1].map((s) => s.count)) > Math.max(...best[1].map((s) => s.count)) ? cur : best,
        );
      const largest = spans.reduce((a, b) => (b.count > a.count ? b : a));
      const count = Math.ceil(largest.count / 2);
      ring.transfer(donor, { start: largest.start + largest.count - count, count }, n);
      ring.setLeased(n, ring.freeSpansOf(n)[0].start, true);
    }
    expect(ring.allLeases()).toHaveLength(500);
    expect(ring.segmentCount).toBeLessThanOrEqual(3 * names.length);
    expect(JSON.stringify(ring.state()).length).toBeLessThan(200 * names.length);
  });
});
