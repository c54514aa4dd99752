// Several SubnetLeases nodes on an in-memory bus (lease-harness.ts) with random delays, loss,
// duplication, partitions, crashes and restarts. Checked after every simulated event: no two
// nodes hold the same subnet, and no slot is "mine" in two nodes' own saved views.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Ipv6SubnetSpace, SubnetSpace, type LeaseSpace } from "../../src/control/lease/slots.js";
import { Bus, DEFAULT_BUS, type SimNode } from "./lease-harness.js";

const SPACE = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
/** A /32 cut into /64s: 2^32 - 1 subnets (flannel skips the first). */
const SPACE6 = Ipv6SubnetSpace.fromConfig({ IPv6Network: "2001:2::/32" });

/** Slot each node holds in family `f`: the live lease of running nodes, the saved one of crashed
 *  nodes (they come back with it) unless an operator declared them gone (`gone`). */
function heldSlots(bus: Bus, gone: ReadonlySet<string>, f = 0): Map<string, number> {
  const out = new Map<string, number>();
  for (const n of bus.nodes.values()) {
    if (!n.up && gone.has(n.name)) continue;
    if (n.up) {
      const l = n.families[f].currentLease();
      if (l) out.set(n.name, l.slot);
    } else {
      const run = n.stores[f].saved?.ring.runs.find((r) => r.owner === n.name && r.leased);
      if (run) out.set(n.name, run.start);
    }
  }
  return out;
}

/** In every family: no two nodes hold one subnet, and no slot is "mine" in two nodes' own views
 *  (checked on runs, so a ring of 2^32 slots costs what a small one does). */
function checkSafety(bus: Bus, gone: ReadonlySet<string> = new Set()): void {
  bus.spaces.forEach((space, f) => {
    const bySlot = new Map<number, string>();
    for (const [node, slot] of heldSlots(bus, gone, f)) {
      const other = bySlot.get(slot);
      if (other !== undefined)
        throw new Error(`t=${bus.clock.now()}: ${node} and ${other} both hold ${space.subnetOf(slot)}`);
      bySlot.set(slot, node);
    }
    const mine: Array<{ start: number; end: number; node: string }> = [];
    for (const n of bus.nodes.values()) {
      if (!n.up && gone.has(n.name)) continue;
      const ring = n.up ? n.families[f].ringState() : n.stores[f].saved?.ring;
      for (const r of ring?.runs ?? [])
        if (r.owner === n.name) mine.push({ start: r.start, end: r.start + r.count, node: n.name });
    }
    mine.sort((a, b) => a.start - b.start);
    mine.forEach((r, i) => {
      const next = mine[i + 1];
      if (next && next.start < r.end)
        throw new Error(
          `t=${bus.clock.now()}: slot ${next.start} is owned by both ${r.node} and ${next.node} in their own views`,
        );
    });
  });
}

function names(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
}

describe("SubnetLeases cluster on a lossy bus", () => {
  it.each<[string, LeaseSpace[]]>([
    ["IPv4", [SPACE]],
    ["dual-stack, the IPv6 ring of 2^32 subnets", [SPACE, SPACE6]],
  ])(
    "%s: every node ends with exactly one subnet per family, none shared at any instant; restarts keep subnets; views converge",
    async (_, spaces) => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            seed: fc.integer({ min: 1, max: 2 ** 30 }),
            nodes: fc.integer({ min: 2, max: 6 }),
            seeds: fc.integer({ min: 1, max: 3 }),
            loss: fc.constantFrom(0, 0.05, 0.2),
            duplicate: fc.constantFrom(0, 0.1),
            seedsEverywhere: fc.boolean(),
            startsAt: fc.array(fc.integer({ min: 0, max: 20_000 }), { minLength: 6, maxLength: 6 }),
            crash: fc.option(
              fc.record({
                node: fc.nat(),
                at: fc.integer({ min: 1_000, max: 40_000 }),
                downFor: fc.integer({ min: 1, max: 30_000 }),
              }),
            ),
          }),
          async (p) => {
            const bus = new Bus(spaces, { ...DEFAULT_BUS, seed: p.seed, loss: p.loss, duplicate: p.duplicate });
            const all = names(p.nodes);
            const seeds = all.slice(0, Math.min(p.seeds, p.nodes));
            // Seeds always know the list; other nodes know it only if the deployment gives it to all.
            for (const n of all) bus.add(n, seeds.includes(n) || p.seedsEverywhere ? { seeds } : {});
            const actions: Array<{ at: number; run: () => Promise<void> }> = all.map((n, i) => ({
              at: seeds.includes(n) ? 0 : p.startsAt[i],
              run: () => bus.start(bus.nodes.get(n)!),
            }));
            if (p.crash) {
              const victim = bus.nodes.get(all[p.crash.node % p.nodes])!;
              let before: Array<number | undefined> = [];
              actions.push({
                at: Math.max(p.crash.at, 20_001),
                run: async () => {
                  before = victim.families.map((l) => l.currentLease()?.slot);
                  await bus.crash(victim);
                },
              });
              actions.push({
                at: Math.max(p.crash.at, 20_001) + p.crash.downFor,
                run: async () => {
                  await bus.start(victim);
                  // Back with its saved state: the same subnet in every family, before hearing from anyone.
                  expect(victim.families.map((l) => l.currentLease()?.slot)).toEqual(before);
                },
              });
            }
            actions.sort((a, b) => a.at - b.at);
            for (const a of actions) {
              await bus.clock.runUntil(a.at, () => checkSafety(bus));
              await a.run();
              checkSafety(bus);
            }
            await bus.clock.runUntil(150_000, () => checkSafety(bus));

            const up = bus.upNodes();
            expect(up.length).toBe(p.nodes);
            spaces.forEach((_, f) => {
              const slots = up.map((n) => n.families[f].currentLease()?.slot);
              expect(
                slots.every((s) => s !== undefined),
                `nodes without subnet: ${up.filter((n) => !n.families[f].currentLease()).map((n) => n.name)}`,
              ).toBe(true);
              expect(new Set(slots).size).toBe(p.nodes);
              for (const n of up) {
                expect(
                  n.families[f].stats.refusedStates,
                  `${n.name} refused a state: ${JSON.stringify(n.log.withCode("LEASE_INCONSISTENT"))}`,
                ).toBe(0);
                expect(n.families[f].stats.slotsTakenFromUs).toBe(0);
              }
              const views = new Set(up.map((n) => JSON.stringify(n.families[f].ringState())));
              expect(views.size, "views did not converge").toBe(1);
              const peers = up[0].families[f].peers();
              expect(peers.map((x) => x.node).sort()).toEqual([...all].sort());
            });
          },
        ),
        { numRuns: 20 },
      );
    },
    120_000,
  );

  it("a node cut off from every owner of free slots waits, says why, and gets a subnet after the heal", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 7 });
    const [a, b, c] = ["a", "b", "c"].map((n) => bus.add(n, { seeds: ["a"] }));
    await bus.start(a);
    await bus.start(b);
    await bus.clock.runUntil(10_000, () => checkSafety(bus));
    expect(a.leases.currentLease()).not.toBeNull();
    expect(b.leases.currentLease()).not.toBeNull();
    // c comes up on the wrong side of a partition: it knows the seed division but no owner of
    // free slots is reachable (b got half of a's slots, so both own free ones).
    bus.partition(["a", "b"], ["c"]);
    await bus.start(c);
    await bus.clock.runUntil(600_000, () => checkSafety(bus));
    expect(c.leases.currentLease()).toBeNull();
    const waits = c.log.withCode("LEASE_WAITING_FOR_OWNER");
    expect(waits.length).toBeGreaterThan(0);
    expect(waits[0].msg).toMatch(/no subnet yet: the free subnets are owned by a.*none of which answered/);
    // Logged again now and then, not on every retry.
    expect(waits.length).toBeLessThan(15);
    let got: string | undefined;
    void c.leases.lease().then((l) => (got = l.subnet));
    bus.heal();
    await bus.clock.runUntil(660_000, () => checkSafety(bus));
    expect(got).toBeDefined();
    expect(new Set([a, b, c].map((n) => n.leases.currentLease()?.subnet)).size).toBe(3);
    for (const n of [a, b, c]) expect(n.leases.stats.refusedStates).toBe(0);
  });

  it("both sides of a partition keep leasing from what they own, and merge without conflict after the heal", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 11, loss: 0.05 });
    const seeds = ["a", "d"];
    const nodes = ["a", "b", "c", "d", "e", "f"].map((n) => bus.add(n, { seeds }));
    bus.partition(["a", "b", "c"], ["d", "e", "f"]);
    for (const n of nodes) await bus.start(n);
    await bus.clock.runUntil(120_000, () => checkSafety(bus));
    for (const n of nodes) expect(n.leases.currentLease(), n.name).not.toBeNull();
    bus.heal();
    await bus.clock.runUntil(240_000, () => checkSafety(bus));
    for (const n of nodes) expect(n.leases.stats.refusedStates).toBe(0);
    expect(new Set(nodes.map((n) => JSON.stringify(n.leases.ringState()))).size).toBe(1);
    expect(
      nodes[0].leases
        .peers()
        .map((p) => p.node)
        .sort(),
    ).toEqual(["a", "b", "c", "d", "e", "f"]);
  });

  it("a donor that crashes just after the receiver took its grant comes back knowing it gave the slots", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 21 });
    const donor = bus.add("a", { seeds: ["a"] });
    const receiver = bus.add("b");
    await bus.start(donor);
    await bus.clock.runUntil(5_000, () => checkSafety(bus));
    await bus.start(receiver);
    let crashed = false;
    await bus.clock.runUntil(60_000, () => {
      if (!crashed && receiver.leases.currentLease()) {
        crashed = true;
        void bus.crash(donor); // before the donor changes anything else
      }
      checkSafety(bus);
    });
    expect(crashed).toBe(true);
    await bus.start(donor);
    const given = donor.leases.ringState().runs.filter((r) => r.owner === "b");
    expect(given.length).toBeGreaterThan(0);
    await bus.clock.runUntil(120_000, () => checkSafety(bus));
    expect(donor.leases.ringState()).toEqual(receiver.leases.ringState());
  });

  it("a donor that crashes after saving a transfer but before replying: the receiver learns it from the donor's state later", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 22 });
    const donor = bus.add("a", { seeds: ["a"] });
    const receiver = bus.add("b");
    await bus.start(donor);
    await bus.clock.runUntil(5_000, () => checkSafety(bus));
    donor.leases.on("announce", (msg) => {
      if (msg.kind === "state" && msg.ring.runs.some((r) => r.owner === "b")) void bus.crash(donor);
    });
    await bus.start(receiver);
    await bus.clock.runUntil(60_000, () => checkSafety(bus));
    expect(donor.up).toBe(false);
    expect(receiver.leases.currentLease()).toBeNull();
    expect(receiver.log.codes().some((c) => c.startsWith("LEASE_WAITING_"))).toBe(true);
    await bus.start(donor);
    await bus.clock.runUntil(120_000, () => checkSafety(bus));
    const lease = receiver.leases.currentLease();
    expect(lease).not.toBeNull();
    expect(donor.leases.ringState().runs.find((r) => r.start === lease!.slot)?.owner).toBe("b");
  });

  it("nodes that lost their state dir get their subnets back from their peers; a wiped seed never trusts its stale share", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 31 });
    // a is the only seed, so b and c own slots a gave them; c has no seed list at all.
    const [a, b, c] = ["a", "b", "c"].map((n) => bus.add(n, n === "c" ? {} : { seeds: ["a"] }));
    for (const n of [a, b, c]) await bus.start(n);
    await bus.clock.runUntil(30_000, () => checkSafety(bus));
    const before = [a, c].map((n) => n.leases.currentLease()?.subnet);
    expect(before.every((s) => s !== undefined)).toBe(true);
    expect(a.leases.stats.slotsGiven).toBeGreaterThan(0);
    for (const n of [a, c]) {
      await bus.crash(n);
      n.store.saved = null; // the disk was replaced
    }
    await bus.clock.runUntil(40_000, () => checkSafety(bus));
    for (const n of [a, c]) await bus.start(n);
    await bus.clock.runUntil(100_000, () => checkSafety(bus));
    expect([a, c].map((n) => n.leases.currentLease()?.subnet)).toEqual(before);
    expect(a.log.withCode("LEASE_BOOTSTRAP").map((l) => l.msg)).not.toContain(expect.stringMatching(/cold start/));
    for (const n of [a, b, c]) expect(n.leases.stats.refusedStates).toBe(0);
  });

  it("a node without a seed list waits for the ring and says so", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 3 });
    const lone = bus.add("late");
    await bus.start(lone);
    await bus.clock.runUntil(30_000);
    expect(lone.leases.currentLease()).toBeNull();
    expect(lone.log.codes()).toContain("LEASE_WAITING_FOR_RING");
  });
});

describe("reclaiming a dead node's subnet", () => {
  // A /28 has three /30 slots: small enough to run out.
  const TINY = SubnetSpace.fromConfig({ Network: "198.19.0.0/28" });

  async function fullCluster(seed: number, graceMs?: number): Promise<{ bus: Bus; nodes: SimNode[] }> {
    const bus = new Bus(TINY, { ...DEFAULT_BUS, seed });
    const extra = { seeds: ["a"], ...(graceMs ? { reclaimGraceMs: graceMs } : {}) };
    const nodes = ["a", "b", "c", "d"].map((n) => bus.add(n, extra));
    for (const n of nodes.slice(0, 3)) await bus.start(n);
    await bus.clock.runUntil(30_000, () => checkSafety(bus));
    expect(nodes.slice(0, 3).every((n) => n.leases.currentLease())).toBe(true);
    return { bus, nodes };
  }

  it("by command: the heir takes the dead node's slot and a waiting node gets it", async () => {
    const { bus, nodes } = await fullCluster(5);
    const [a, b, c, d] = nodes;
    const cSubnet = c.leases.currentLease()!.subnet;
    await bus.crash(c);
    await bus.start(d);
    await bus.clock.runUntil(60_000, () => checkSafety(bus));
    expect(d.leases.currentLease()).toBeNull();
    expect(d.log.codes()).toContain("LEASE_WAITING_NO_FREE_SLOT");
    await expect(b.leases.reclaim("a")).rejects.toMatchObject({ code: "LEASE_RECLAIM_ALIVE" });
    await expect(b.leases.reclaim("b")).rejects.toMatchObject({ code: "LEASE_RECLAIM_SELF" });
    const report = await b.leases.reclaim("c");
    expect(report.takenHere + report.remaining).toBe(1);
    const gone = new Set(["c"]);
    await bus.clock.runUntil(120_000, () => checkSafety(bus, gone));
    expect(d.leases.currentLease()?.subnet).toBe(cSubnet);
    expect([a, b].flatMap((n) => n.log.codes())).toContain("LEASE_RECLAIMED");
    for (const n of [a, b, d]) expect(n.leases.stats.refusedStates).toBe(0);
  });

  it("after the grace period, not before; and the reclaimed node, restarted with its old state, gives the subnet up", async () => {
    const { bus, nodes } = await fullCluster(9, 600_000);
    const [, , c, d] = nodes;
    const cSubnet = c.leases.currentLease()!.subnet;
    await bus.crash(c);
    await bus.start(d);
    await bus.clock.runUntil(30_000 + 500_000, () => checkSafety(bus));
    expect(d.leases.currentLease()).toBeNull();
    const gone = new Set(["c"]);
    await bus.clock.runUntil(30_000 + 700_000, () => checkSafety(bus, gone));
    expect(d.leases.currentLease()?.subnet).toBe(cSubnet);
    // The documented risk of reclaiming: c comes back with its saved state and, until it hears
    // the cluster, still believes it holds its old subnet. The first merge takes it away.
    await bus.start(c);
    expect(c.leases.currentLease()?.subnet).toBe(cSubnet);
    await bus.clock.runUntil(30_000 + 760_000);
    expect(c.log.codes()).toContain("LEASE_LOST");
    expect(c.leases.currentLease()?.subnet).not.toBe(cSubnet);
    expect(c.leases.stats.slotsTakenFromUs).toBeGreaterThan(0);
  });

  it("two histories (both sides of a partition changed the same slots): the nodes they name settle them, and every view agrees again", async () => {
    const bus = new Bus(SPACE, { ...DEFAULT_BUS, seed: 41 });
    const seeds = ["a", "b"];
    const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => bus.add(n, { seeds, reclaimGraceMs: 20_000 }));
    for (const n of [a, b, c]) await bus.start(n);
    await bus.clock.runUntil(30_000, () => checkSafety(bus));
    // Cut a off longer than the grace: b's side reclaims a's slots (version + 1) while a hands
    // some of the same free slots to d (version + 1 too): the same versions, different owners.
    bus.partition(["a", "d"], ["b", "c"]);
    await bus.start(d);
    await bus.clock.runUntil(120_000);
    expect(d.leases.currentLease()).not.toBeNull();
    expect([b, c].flatMap((n) => n.log.codes())).toContain("LEASE_RECLAIMED");
    bus.heal();
    await bus.clock.runUntil(600_000);
    const all = [a, b, c, d];
    expect(all.flatMap((n) => n.log.codes())).toContain("LEASE_INCONSISTENT");
    expect(all.flatMap((n) => n.log.codes())).toContain("LEASE_FORK_SETTLED");
    expect(new Set(all.map((n) => JSON.stringify(n.leases.ringState()))).size, "views did not converge").toBe(1);
    const leases = all.map((n) => n.leases.currentLease()?.subnet);
    expect(leases.every((l) => l !== undefined)).toBe(true);
    expect(new Set(leases).size).toBe(4);
    checkSafety(bus);
  });
});
