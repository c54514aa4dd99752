import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type MergeResult, Ring, type RingRun, type RingState } from "../../src/control/lease/ring.js";
import { SlotRing, type MergeResult as SlotMergeResult } from "../reference/slot-ring.js";

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

describe("Ring: clone", () => {
  it("a clone and its original each learning a different name keep their own owners, whichever learns first", () => {
    for (const originalFirst of [true, false]) {
      const original = Ring.seeded(8, ["a", "b"]);
      const clone = original.clone();
      const learn = [
        () => original.transfer("a", { start: 0, count: 2 }, "x"),
        () => clone.transfer("a", { start: 1, count: 3 }, "y"),
      ];
      for (const f of originalFirst ? learn : learn.reverse()) f();
      // Each learns a third name after the other's, which must not take the other's place.
      original.transfer("b", { start: 7, count: 1 }, "z");
      clone.transfer("b", { start: 6, count: 2 }, "z");
      expect(original.state().runs.map((r) => [r.start, r.count, r.owner])).toEqual([
        [0, 2, "x"],
        [2, 2, "a"],
        [4, 3, "b"],
        [7, 1, "z"],
      ]);
      expect(clone.state().runs.map((r) => [r.start, r.count, r.owner])).toEqual([
        [0, 1, "a"],
        [1, 3, "y"],
        [4, 2, "b"],
        [6, 2, "z"],
      ]);
      expect(original.ownedCounts()).toEqual(
        new Map([
          ["x", 2],
          ["a", 2],
          ["b", 3],
          ["z", 1],
        ]),
      );
      expect(clone.ownedCounts()).toEqual(
        new Map([
          ["a", 1],
          ["y", 3],
          ["b", 2],
          ["z", 2],
        ]),
      );
      expect([original.ownedBy("y"), clone.ownedBy("x")]).toEqual([0, 0]);
      expect([original.freeSpansOf("y"), clone.freeSpansOf("x")]).toEqual([[], []]);
      expect(() => original.setLeased("y", 1, true)).toThrow(/owned by x/);
      original.setLeased("x", 1, true);
      clone.setLeased("y", 1, true);
      expect([original.allLeases(), clone.allLeases()]).toEqual([[{ slot: 1, owner: "x" }], [{ slot: 1, owner: "y" }]]);
    }
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
  | { op: "reclaim"; node: number }
  | { op: "adopt"; node: number };

const nodeIx = fc.integer({ min: 0, max: NAMES.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant("give" as const), by: nodeIx, to: nodeIx, half: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("lease" as const), node: nodeIx }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("unlease" as const), node: nodeIx }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("snapshot" as const), node: nodeIx }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant("deliver" as const), msg: fc.nat(), to: nodeIx }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("pushpull" as const), a: nodeIx, b: nodeIx }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("adopt" as const), node: nodeIx }) },
);

/** Where a view starts. Not only from the seed division: as bootstrap.ts starts it before it has
 *  learnt the whole ring — unknown (a fresh joiner without a seed list, or a seed without saved
 *  state, listening for the cluster's ring) or known in parts (a partial saved ring, or the
 *  deltas heard before the first push-pull): the runs of `spans` merged into an unknown ring. */
type Start =
  | { kind: "seeded" }
  | { kind: "unknown" }
  | { kind: "partial"; spans: ReadonlyArray<{ at: number; count: number }> };

const startArb: fc.Arbitrary<Start> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ kind: "seeded" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "unknown" as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("partial" as const),
      spans: fc.array(fc.record({ at: fc.nat(), count: fc.integer({ min: 1, max: 2 ** 40 }) }), { maxLength: 4 }),
    }),
  },
);

/** An unknown ring (with `seeds` as its configured list, or none) that has merged the parts
 *  `spans` (wrapped into the ring) of `full`: how a view holds a ring it has partly heard of. */
function partOf<R extends { merge(s: RingState): { ok: boolean } }>(
  unknown: R,
  full: Ring,
  spans: ReadonlyArray<{ at: number; count: number }>,
): R {
  const runs = full.runsIn(spans.map((s) => ({ start: s.at % full.slotCount, count: s.count })));
  expect(unknown.merge({ seeds: full.seeds, runs }).ok).toBe(true);
  return unknown;
}

class World {
  readonly views: Ring[];
  /** Everything ever sent; delivery picks any of it, any number of times (delay, dup, replay). */
  readonly bag: RingState[] = [];
  readonly dead = new Set<string>();
  readonly condemned = new Set<string>();
  refusals = 0;

  constructor(
    readonly slotCount: number,
    readonly seeds: string[],
    starts: readonly Start[] = [],
  ) {
    const division = Ring.seeded(slotCount, seeds);
    this.views = NAMES.map((n, i) => {
      const start = starts[i] ?? { kind: "seeded" };
      if (start.kind === "seeded") return division.clone();
      // A seed has its seed list configured from the start; a joiner learns it with the ring.
      const unknown = Ring.unknown(slotCount, seeds.includes(n) ? seeds : null);
      return start.kind === "unknown" ? unknown : partOf(unknown, division, start.spans);
    });
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
      case "adopt": {
        // bootstrap.ts: a seed that heard no complete ring within its quiet period takes the seed
        // division (at version 1, so it only fills in what this view has not heard of).
        const view = this.views[o.node];
        if (!live(o.node) || !this.seeds.includes(name(o.node)) || view.knownCount() === this.slotCount) return;
        this.merge(o.node, Ring.seeded(this.slotCount, this.seeds).state());
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

  /** All-pairs push-pull among live nodes until nothing changes (after the seeds' quiet periods:
   *  in a cluster where nobody knew the ring, it is what gives the first owners). */
  settle(): void {
    for (let n = 0; n < NAMES.length; n++) this.apply({ op: "adopt", node: n });
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
  // Every view seeded, or each from its own start.
  starts: fc.oneof(fc.constant([]), fc.array(startArb, { minLength: NAMES.length, maxLength: NAMES.length })),
  ops: fc.array(opArb, { maxLength: 120 }),
});

describe("Ring properties", () => {
  it("no slot is ever owned by two live nodes in their own views; versions only grow; no false conflicts; views converge", () => {
    fc.assert(
      fc.property(worldArb, ({ slotCount, seeds, starts, ops }) => {
        const world = new World(slotCount, seeds, starts);
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
      fc.property(worldArb, fc.nat(), fc.nat(), fc.nat(), ({ slotCount, seeds, starts, ops }, i, j, k) => {
        const world = new World(slotCount, seeds, starts);
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
      fc.property(worldArb, nodeIx, fc.nat(), ({ slotCount, seeds, starts, ops }, at, slotPick) => {
        const world = new World(slotCount, seeds, starts);
        for (const o of ops) world.apply(o);
        const view = world.views[at];
        const forged = view.state();
        // A slot this view knows (one it has not heard of has no state to contradict).
        fc.pre(forged.runs.length > 0);
        const pickedRun = forged.runs[slotPick % forged.runs.length];
        const slot = pickedRun.start + (Math.floor(slotPick / forged.runs.length) % pickedRun.count);
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
        ({ slotCount, seeds, starts, ops }, dying, after) => {
          const world = new World(slotCount, seeds, starts);
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
  // `by` and `node` null: the slot's owner in this view (what a node does: it changes its own);
  // else anyone, mostly refused.
  | { op: "transfer"; by: number | null; to: number; at: number; count: number }
  | { op: "lease"; node: number | null; at: number; leased: boolean }
  | { op: "reclaim"; heir: number; dead: number[]; orphans: boolean }
  | { op: "merge"; from: number }
  /** Goes on with the clone or with the original; the other is left behind. */
  | { op: "clone"; goOnWithClone: boolean };

const diffOp: fc.Arbitrary<DiffOp> = fc.oneof(
  fc.record({
    op: fc.constant("transfer" as const),
    by: fc.option(nodeIx),
    to: nodeIx,
    at: fc.nat(),
    count: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 12 })),
  }),
  fc.record({ op: fc.constant("lease" as const), node: fc.option(nodeIx), at: fc.nat(), leased: fc.boolean() }),
  fc.record({
    op: fc.constant("reclaim" as const),
    heir: nodeIx,
    dead: fc.subarray([0, 1, 2, 3, 4]),
    orphans: fc.boolean(),
  }),
  fc.record({ op: fc.constant("merge" as const), from: fc.nat() }),
  fc.record({ op: fc.constant("clone" as const), goOnWithClone: fc.boolean() }),
);

/** The node named by `ix`, or (null) the owner of `slot` in `ring`'s view. */
function actor(ix: number | null, ring: Ring, slot: number): string {
  return ix === null ? (ring.ownerOf(slot) ?? NAMES[0]) : NAMES[ix];
}

/** Owner counts (and leases, free counts, known slots) of `ring` equal those of counting `ref`'s
 *  slots, per owner and one by one. */
function expectCounts(ring: Ring, ref: SlotRing): void {
  const counted = ref.ownedCounts();
  const leases = ring.leasesByOwner();
  expect(ring.ownedCounts()).toEqual(counted);
  expect(ring.freeCounts()).toEqual(ref.freeCounts());
  expect(ring.knownCount()).toBe(ref.knownCount());
  for (const n of NAMES) {
    expect(ring.ownedBy(n)).toBe(counted.get(n) ?? 0);
    expect(leases.get(n) ?? []).toEqual(ref.leasesOf(n));
    expect(ring.freeSpansOf(n)).toEqual(ref.freeSpansOf(n));
  }
}

type Spanned = { slot: number } | { start: number; count: number };

/** A merge result as the reference reports it: what changed and what conflicted, slot by slot. */
function perSlot(res: string | MergeResult | SlotMergeResult): unknown {
  if (typeof res === "string") return res;
  const bySlot = (xs: readonly Spanned[]) =>
    xs.flatMap((x) => {
      if ("slot" in x) return [x];
      const { start, count, ...rest } = x;
      return Array.from({ length: count }, (_, i) => ({ slot: start + i, ...rest }));
    });
  return res.ok ? { changed: bySlot(res.changed) } : { code: res.error.code, conflicts: bySlot(res.conflicts) };
}

/** A peer's ring, seeded and changed by `ops`: what the ring under test hears (its full states
 *  and the deltas of its changes), so that merges bring news, not only its own past states. */
function peerHistory(slotCount: number, seeds: string[], ops: readonly DiffOp[]): RingState[] {
  const peer = Ring.seeded(slotCount, seeds);
  const heard: RingState[] = [peer.state()];
  for (const o of ops) {
    try {
      const runs =
        o.op === "transfer"
          ? peer.transfer(actor(o.by, peer, o.at % slotCount), { start: o.at % slotCount, count: o.count }, NAMES[o.to])
          : o.op === "lease"
            ? peer.setLeased(actor(o.node, peer, o.at % slotCount), o.at % slotCount, o.leased)
            : o.op === "reclaim"
              ? peer.reclaim(NAMES[o.heir], new Set(o.dead.map((i) => NAMES[i])), o.orphans)
              : [];
      heard.push({ seeds: peer.seeds, runs }, peer.state());
    } catch {
      // A refused change changes nothing: nothing to hear.
    }
  }
  return heard;
}

describe("Ring against the per-slot reference", () => {
  it("gives the same states, deltas, errors, merge results and owner counts from any start (clones keep their own)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.subarray(NAMES, { minLength: 1 }),
        startArb,
        fc.boolean(),
        fc.array(diffOp, { maxLength: 30 }),
        fc.array(diffOp, { maxLength: 80 }),
        (slotCount, seeds, start, withSeeds, peerOps, ops) => {
          const history = peerHistory(slotCount, seeds, peerOps);
          // The ring under test starts seeded, or unknown (with the seed list or none), or from
          // parts of the peer's ring: the peer's latest state cut to `spans`.
          const configured = withSeeds ? seeds : null;
          let ring = start.kind === "seeded" ? Ring.seeded(slotCount, seeds) : Ring.unknown(slotCount, configured);
          let ref =
            start.kind === "seeded" ? SlotRing.seeded(slotCount, seeds) : SlotRing.unknown(slotCount, configured);
          if (start.kind === "partial") {
            const peer = Ring.unknown(slotCount);
            expect(peer.merge(history[history.length - 1]).ok).toBe(true);
            partOf(ring, peer, start.spans);
            partOf(ref, peer, start.spans);
          }
          expect(ring.state()).toEqual(ref.state());
          history.push(ring.state());
          /** Rings left behind by a clone op (the original or the clone), with their references:
           *  later changes of the other must not reach them. */
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
              const by = actor(o.by, ring, o.at % slotCount);
              const [a, b] = both((r) => r.transfer(by, { start: o.at % slotCount, count: o.count }, NAMES[o.to]));
              expect(a).toEqual(b);
            } else if (o.op === "lease") {
              const node = actor(o.node, ring, o.at % slotCount);
              const [a, b] = both((r) => r.setLeased(node, o.at % slotCount, o.leased));
              expect(a).toEqual(b);
            } else if (o.op === "reclaim") {
              const dead = new Set(o.dead.map((i) => NAMES[i]));
              const [a, b] = both((r) => r.reclaim(NAMES[o.heir], dead, o.orphans));
              expect(a).toEqual(b);
            } else if (o.op === "clone") {
              const [clone, refClone] = [ring.clone(), ref.clone()];
              if (o.goOnWithClone) {
                left.push([ring, ref]);
                [ring, ref] = [clone, refClone];
              } else {
                left.push([clone, refClone]);
              }
            } else {
              const st = history[o.from % history.length];
              const [a, b] = both((r) => r.merge(st));
              expect(perSlot(a)).toEqual(perSlot(b));
            }
            expect(ring.state()).toEqual(ref.state());
            expect(ring.seeds).toEqual(ref.seeds);
            expectCounts(ring, ref);
            for (const [r, x] of left) {
              expect(r.state()).toEqual(x.state());
              expectCounts(r, x);
            }
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
