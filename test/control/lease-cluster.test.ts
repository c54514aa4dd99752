// Lease rings of several nodes in the simulator (sim/control-planes.ts: whole control planes built
// as the agent builds them, gossiping over a simulated network) with random delays, loss,
// duplication, partitions, crashes and restarts. The simulator checks after every event that no
// two nodes hold one subnet and no slot is "mine" in two nodes' own views (a crashed node counts
// with the state it saved).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Ipv6SubnetSpace, SubnetSpace } from "../../src/control/lease/slots.js";
import { SimControlPlanes, type PlaneNode, type SimOptions } from "./sim/control-planes.js";
import { Disk } from "./sim/doubles.js";
import { SIM_EPOCH_MS } from "./sim/scheduler.js";

const SPACE = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
/** A /32 cut into /64s: 2^32 - 1 subnets (flannel skips the first). */
const SPACE6 = Ipv6SubnetSpace.fromConfig({ IPv6Network: "2001:2::/32" });

function names(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
}

/** The node's running lease layer (first family). */
function leases(n: PlaneNode) {
  if (!n.plane) throw new Error(`${n.name} is not running`);
  return n.plane.leases;
}

/** Runs the simulation to `ms` after its start. */
function runTo(sim: SimControlPlanes, ms: number): Promise<void> {
  return sim.scheduler.runUntil(SIM_EPOCH_MS + ms);
}

/** Nodes `all`, each joining through every other one (as a deployment's join list does). */
function cluster(
  all: string[],
  seed: number,
  options: { space6?: Ipv6SubnetSpace; sim?: SimOptions; space?: SubnetSpace } = {},
): { sim: SimControlPlanes; nodes: PlaneNode[]; start: (n: PlaneNode, extra?: object) => Promise<void> } {
  const sim = new SimControlPlanes(options.space ?? SPACE, seed, options.space6, options.sim);
  const nodes = all.map((n) => sim.add(n));
  const start = async (n: PlaneNode, extra: object = {}): Promise<void> => {
    const join = nodes.filter((o) => o !== n).map((o) => o.host.addr);
    await sim.start(n, { join, seeds: [], ...extra });
  };
  return { sim, nodes, start };
}

describe("lease rings of simulated control planes on a lossy network", () => {
  it.each<[string, Ipv6SubnetSpace | undefined]>([
    ["IPv4", undefined],
    ["dual-stack, the IPv6 ring of 2^32 subnets", SPACE6],
  ])(
    "%s: every node ends with exactly one subnet per family, none shared at any instant; restarts keep subnets; views converge",
    async (_, space6) => {
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
            const all = names(p.nodes);
            const { sim, nodes, start } = cluster(all, p.seed, {
              space6,
              sim: { conditions: { loss: p.loss, duplicate: p.duplicate } },
            });
            const seeds = all.slice(0, Math.min(p.seeds, p.nodes));
            // Seeds always know the list; other nodes know it only if the deployment gives it to all.
            const actions: Array<{ at: number; run: () => Promise<void> }> = nodes.map((n, i) => ({
              at: seeds.includes(n.name) ? 0 : p.startsAt[i],
              run: () => start(n, { seeds: seeds.includes(n.name) || p.seedsEverywhere ? seeds : [] }),
            }));
            if (p.crash) {
              const victim = nodes[p.crash.node % p.nodes];
              let before: Array<number | undefined> = [];
              actions.push({
                at: Math.max(p.crash.at, 20_001),
                run: async () => {
                  before = victim.plane!.families.map((l) => l.currentLease()?.slot);
                  sim.crash(victim);
                },
              });
              actions.push({
                at: Math.max(p.crash.at, 20_001) + p.crash.downFor,
                run: async () => {
                  const plane = await sim.restart(victim);
                  // Back with its saved state: the same subnet in every family, before hearing from anyone.
                  expect(plane.families.map((l) => l.currentLease()?.slot)).toEqual(before);
                },
              });
            }
            actions.sort((a, b) => a.at - b.at);
            for (const a of actions) {
              await runTo(sim, a.at);
              await a.run();
            }
            await runTo(sim, 150_000);

            const up = sim.live();
            expect(up.length).toBe(p.nodes);
            sim.spaces.forEach((_, f) => {
              const slots = up.map((n) => n.plane.families[f].currentLease()?.slot);
              expect(
                slots.every((s) => s !== undefined),
                `${sim.describe()}: nodes without subnet: ${up.filter((n) => !n.plane.families[f].currentLease()).map((n) => n.name)}`,
              ).toBe(true);
              expect(new Set(slots).size).toBe(p.nodes);
              for (const n of up) {
                expect(
                  n.plane.families[f].stats.refusedStates,
                  `${n.name} refused a state: ${JSON.stringify(sim.withCode(n.name, "LEASE_INCONSISTENT"))}`,
                ).toBe(0);
                expect(n.plane.families[f].stats.slotsTakenFromUs).toBe(0);
              }
              const views = new Set(up.map((n) => JSON.stringify(n.plane.families[f].ringState())));
              expect(views.size, `${sim.describe()}: views did not converge`).toBe(1);
              const peers = up[0].plane.families[f].peers();
              expect(peers.map((x) => x.node).sort()).toEqual([...all].sort());
            });
          },
        ),
        { numRuns: 20 },
      );
    },
    300_000,
  );

  it("a node cut off from every owner of free slots waits, says why, and gets a subnet after the heal", async () => {
    const { sim, nodes, start } = cluster(["a", "b", "c"], 7);
    const [a, b, c] = nodes;
    await start(a, { seeds: ["a"] });
    await start(b, { seeds: ["a"] });
    await runTo(sim, 30_000);
    expect(leases(a).currentLease()).not.toBeNull();
    expect(leases(b).currentLease()).not.toBeNull();
    // c comes up on the wrong side of a partition: it knows the seed division but no owner of
    // free slots is reachable (b got half of a's slots, so both own free ones). With a join list it
    // would wait to reach a target (its lease layer holds back until then); with none, its saved
    // members silent, it runs standalone, and leasing says why it has no subnet.
    sim.partition(["a", "b"], ["c"]);
    c.members.saved = [a.host.addr, b.host.addr];
    await start(c, { seeds: ["a"], join: [] });
    await runTo(sim, 600_000);
    expect(leases(c).currentLease()).toBeNull();
    const waits = sim.withCode("c", "LEASE_WAITING_FOR_OWNER");
    expect(waits.length).toBeGreaterThan(0);
    expect(waits[0].msg).toMatch(
      /no subnet yet: the free subnets are owned by a.*a.* did not answer \(partitioned or down\)/,
    );
    // Logged again now and then, not on every retry.
    expect(waits.length).toBeLessThan(15);
    let got: string | undefined;
    void leases(c)
      .lease()
      .then((l) => (got = l.subnet));
    sim.heal();
    expect(await sim.runUntil(() => got !== undefined, 120_000)).toBe(true);
    expect(new Set(nodes.map((n) => leases(n).currentLease()?.subnet)).size).toBe(3);
    for (const n of nodes) expect(leases(n).stats.refusedStates).toBe(0);
  });

  it("both sides of a partition keep leasing from what they own, and merge without conflict after the heal", async () => {
    const seeds = ["a", "d"];
    const { sim, nodes, start } = cluster(["a", "b", "c", "d", "e", "f"], 11, { sim: { conditions: { loss: 0.05 } } });
    for (const n of nodes) await start(n, { seeds });
    // Joined, but the seeds still listen for an existing ring: nobody has leased yet.
    expect(await sim.runUntil(() => sim.live().every((n) => n.plane.members().length === 6), 5_000)).toBe(true);
    expect(nodes.every((n) => leases(n).currentLease() === null)).toBe(true);
    sim.partition(["a", "b", "c"], ["d", "e", "f"]);
    await runTo(sim, 120_000);
    for (const n of nodes) expect(leases(n).currentLease(), n.name).not.toBeNull();
    sim.heal();
    expect(await sim.runUntil(() => sim.agreed(), 240_000)).toBe(true);
    for (const n of nodes) expect(leases(n).stats.refusedStates).toBe(0);
    expect(
      leases(nodes[0])
        .peers()
        .map((p) => p.node)
        .sort(),
    ).toEqual(["a", "b", "c", "d", "e", "f"]);
  });

  it("a donor that crashes just after the receiver took its grant comes back knowing it gave the slots", async () => {
    const { sim, nodes, start } = cluster(["a", "b"], 21);
    const [donor, receiver] = nodes;
    await start(donor, { seeds: ["a"], join: [] });
    await runTo(sim, 15_000);
    await start(receiver);
    let crashed = false;
    sim.scheduler.addCheck(() => {
      if (!crashed && receiver.plane?.leases.currentLease()) {
        crashed = true;
        sim.crash(donor); // before the donor changes anything else
      }
    });
    await runTo(sim, 60_000);
    expect(crashed).toBe(true);
    await sim.restart(donor);
    const given = leases(donor)
      .ringState()
      .runs.filter((r) => r.owner === "b");
    expect(given.length).toBeGreaterThan(0);
    await runTo(sim, 120_000);
    expect(leases(donor).ringState()).toEqual(leases(receiver).ringState());
  });

  it("a donor that crashes after saving a transfer but before replying: the receiver learns it from the donor's state later", async () => {
    const { sim, nodes, start } = cluster(["a", "b"], 22);
    const [donor, receiver] = nodes;
    await start(donor, { seeds: ["a"], join: [] });
    await runTo(sim, 15_000);
    leases(donor).on("announce", (msg) => {
      if (msg.kind === "state" && msg.ring.runs.some((r) => r.owner === "b")) sim.crash(donor);
    });
    await start(receiver);
    await runTo(sim, 60_000);
    expect(donor.plane).toBeUndefined();
    expect(leases(receiver).currentLease()).toBeNull();
    expect(sim.codes("b").some((c) => c.startsWith("LEASE_WAITING_"))).toBe(true);
    await sim.restart(donor);
    await runTo(sim, 120_000);
    const lease = leases(receiver).currentLease();
    expect(lease).not.toBeNull();
    expect(
      leases(donor)
        .ringState()
        .runs.find((r) => r.start === lease!.slot)?.owner,
    ).toBe("b");
  });

  it("nodes that lost their state dir get their subnets back from their peers; a wiped seed never trusts its stale share", async () => {
    // a is the only seed, so b and c own slots a gave them; c has no seed list at all.
    const { sim, nodes, start } = cluster(["a", "b", "c"], 31);
    const [a, b, c] = nodes;
    for (const n of nodes) await start(n, n === c ? {} : { seeds: ["a"] });
    await runTo(sim, 30_000);
    const before = [a, c].map((n) => leases(n).currentLease()?.subnet);
    expect(before.every((s) => s !== undefined)).toBe(true);
    expect(leases(a).stats.slotsGiven).toBeGreaterThan(0);
    for (const n of [a, c]) {
      sim.crash(n);
      n.store.saved = null; // the disk was replaced
    }
    await runTo(sim, 40_000);
    for (const n of [a, c]) await sim.restart(n);
    await runTo(sim, 100_000);
    expect([a, c].map((n) => leases(n).currentLease()?.subnet)).toEqual(before);
    expect(sim.withCode("a", "LEASE_BOOTSTRAP").map((l) => l.msg)).not.toContain(expect.stringMatching(/cold start/));
    for (const n of [a, b, c]) expect(leases(n).stats.refusedStates).toBe(0);
  });

  it("a node without a seed list waits for the ring and says so", async () => {
    const { sim, nodes, start } = cluster(["late"], 3);
    await start(nodes[0]);
    await runTo(sim, 30_000);
    expect(leases(nodes[0]).currentLease()).toBeNull();
    expect(sim.codes("late")).toContain("LEASE_WAITING_FOR_RING");
  });
});

describe("reclaiming a dead node's subnet", () => {
  // A /28 has three /30 slots: small enough to run out.
  const TINY = SubnetSpace.fromConfig({ Network: "198.19.0.0/28" });

  async function fullCluster(
    seed: number,
    graceMs?: number,
  ): Promise<{ sim: SimControlPlanes; nodes: PlaneNode[]; start: (n: PlaneNode) => Promise<void> }> {
    const { sim, nodes, start } = cluster(["a", "b", "c", "d"], seed, { space: TINY });
    const startOne = (n: PlaneNode): Promise<void> =>
      start(n, { seeds: ["a"], ...(graceMs ? { lease: { reclaimGraceMs: graceMs } } : {}) });
    for (const n of nodes.slice(0, 3)) await startOne(n);
    await runTo(sim, 30_000);
    expect(nodes.slice(0, 3).every((n) => leases(n).currentLease())).toBe(true);
    return { sim, nodes, start: startOne };
  }

  it("by command: the heir takes the dead node's slot and a waiting node gets it", async () => {
    const { sim, nodes, start } = await fullCluster(5);
    const [a, b, c, d] = nodes;
    const cSubnet = leases(c).currentLease()!.subnet;
    sim.crash(c);
    await start(d);
    await runTo(sim, 60_000);
    expect(leases(d).currentLease()).toBeNull();
    expect(sim.codes("d")).toContain("LEASE_WAITING_NO_FREE_SLOT");
    await expect(leases(b).reclaim("a")).rejects.toMatchObject({ code: "LEASE_RECLAIM_ALIVE" });
    await expect(leases(b).reclaim("b")).rejects.toMatchObject({ code: "LEASE_RECLAIM_SELF" });
    sim.gone.add("c");
    const report = await leases(b).reclaim("c");
    expect(report.takenHere + report.remaining).toBe(1);
    await runTo(sim, 120_000);
    expect(leases(d).currentLease()?.subnet).toBe(cSubnet);
    expect([...sim.codes("a"), ...sim.codes("b")]).toContain("LEASE_RECLAIMED");
    for (const n of [a, b, d]) expect(leases(n).stats.refusedStates).toBe(0);
  });

  it("dual-stack, by command: an IPv6 ring that cannot save after the IPv4 one reclaimed says so, and the command run again reclaims the rest", async () => {
    // All three are seeds, so each ring starts divided a, b, c in slot order and b is the heir of
    // c's whole run in both (reclaiming, it must save them), whatever the random stream does.
    const { sim, nodes, start } = cluster(["a", "b", "c"], 6, { space: TINY, space6: SPACE6 });
    const [a, b, c] = nodes;
    const disk6 = new Disk();
    b.stores[1] = disk6;
    for (const n of nodes) await start(n, { seeds: ["a", "b", "c"] });
    await runTo(sim, 30_000);
    expect(nodes.every((n) => n.plane!.families.every((l) => l.currentLease()))).toBe(true);
    sim.crash(c);
    sim.gone.add("c");
    await runTo(sim, 90_000);
    /** Slots c holds in `n`'s view of each ring, IPv4 first. */
    const heldByC = (n: PlaneNode) =>
      n.plane!.families.map((l) =>
        l
          .ringState()
          .runs.filter((r) => r.owner === "c")
          .reduce((sum, r) => sum + r.count, 0),
      );
    const [held4, held6] = heldByC(b);
    expect(held4).toBeGreaterThan(0);
    expect(held6).toBeGreaterThan(0);
    for (const l of b.plane!.families) {
      const runs = l.ringState().runs;
      const first = runs.find((r) => r.owner === "c")!;
      expect(runs.find((r) => r.start + r.count === first.start)?.owner).toBe("b");
    }
    disk6.fault = "full";
    const failed = await b.plane!.reclaim("c").then(
      () => null,
      (e: unknown) => e,
    );
    disk6.fault = null;
    expect(failed).toMatchObject({
      code: "LEASE_PERSIST_FAILED",
      message: expect.stringMatching(/IPv4 subnet slots were reclaimed, its IPv6 ones not: .*run weft reclaim c again/),
    });
    await runTo(sim, 100_000);
    // Half done, and stable so: the IPv6 ring kept c's slots everywhere (no notice went out).
    for (const n of [a, b]) expect(heldByC(n)).toEqual([0, held6]);
    // Run again: the IPv4 ring has nothing left of c (skipped), the IPv6 one reclaims.
    await b.plane!.reclaim("c");
    await runTo(sim, 110_000);
    for (const n of [a, b]) expect(heldByC(n)).toEqual([0, 0]);
    expect(sim.codes("b")).toContain("LEASE_RECLAIMED");
  });

  it("by command, overtaken by stop(): refused with a code, nothing reclaimed", async () => {
    const { sim, nodes } = await fullCluster(5);
    const [, b, c] = nodes;
    sim.crash(c);
    sim.gone.add("c");
    await runTo(sim, 90_000);
    const asked = leases(b).reclaim("c");
    const stopped = leases(b).stop();
    await expect(asked).rejects.toMatchObject({ code: "LEASE_NOT_RUNNING" });
    await stopped;
    expect(
      leases(b)
        .reservations()
        .find((r) => r.node === "c")?.slots,
    ).toBe(1);
  });

  it("after the grace period, not before; and the reclaimed node, restarted with its old state, gives the subnet up", async () => {
    const { sim, nodes, start } = await fullCluster(9, 600_000);
    const [, , c, d] = nodes;
    const cSubnet = leases(c).currentLease()!.subnet;
    sim.crash(c);
    await start(d);
    await runTo(sim, 30_000 + 500_000);
    expect(leases(d).currentLease()).toBeNull();
    sim.gone.add("c");
    await runTo(sim, 30_000 + 700_000);
    expect(leases(d).currentLease()?.subnet).toBe(cSubnet);
    // The documented risk of reclaiming: c comes back with its saved state and, until it hears
    // the cluster, still believes it holds its old subnet. The first merge takes it away.
    sim.checkLeases = false;
    await sim.restart(c);
    expect(leases(c).currentLease()?.subnet).toBe(cSubnet);
    await runTo(sim, 30_000 + 760_000);
    expect(sim.codes("c")).toContain("LEASE_LOST");
    expect(leases(c).currentLease()?.subnet).not.toBe(cSubnet);
    expect(leases(c).stats.slotsTakenFromUs).toBeGreaterThan(0);
    sim.checkLeases = true; // and the invariants hold again
    await sim.runFor(1_000);
  });

  /** a, b and c, seeds all three (a 0-84, b 85-169, c 170-254: b is heir of c's run), up, and c
   *  then dead everywhere; tombstones kept `tombstoneMs` (default: the agent's 24 h). */
  async function cDead(seed: number, graceMs: number, tombstoneMs?: number) {
    const { sim, nodes, start } = cluster(["a", "b", "c", "d"], seed);
    const extra = {
      seeds: ["a", "b", "c"],
      lease: { reclaimGraceMs: graceMs },
      ...(tombstoneMs !== undefined && { gossip: { tombstoneRetentionMs: tombstoneMs } }),
    };
    for (const n of nodes.slice(0, 3)) await start(n, extra);
    await runTo(sim, 30_000);
    expect(nodes.slice(0, 3).every((n) => leases(n).currentLease())).toBe(true);
    const [a, , c] = nodes;
    sim.crash(c);
    sim.gone.add("c"); // its saved state is not a claim the invariants should weigh once reclaimed
    await runTo(sim, 60_000);
    expect(a.plane!.allMembers().find((m) => m.name === "c")?.state).toBe("dead");
    const ownedByC = () =>
      leases(a)
        .ringState()
        .runs.filter((r) => r.owner === "c").length;
    expect(ownedByC()).toBeGreaterThan(0);
    return { sim, nodes, start: (n: PlaneNode) => start(n, extra), ownedByC };
  }

  it("after the grace period also when the heir restarted after the death (it learns of the death only from a peer's state)", async () => {
    const { sim, nodes, ownedByC } = await cDead(7, 60_000);
    const b = nodes[1];
    sim.crash(b);
    await runTo(sim, 62_000);
    await sim.restart(b);
    await runTo(sim, 62_000 + 30_000);
    // b's own timer, from when it learnt of the death: a's fired meanwhile, but a is not heir.
    expect(
      leases(b)
        .reservations()
        .find((r) => r.node === "c")?.reclaimAt,
    ).toEqual(expect.any(Number));
    await runTo(sim, 62_000 + 200_000);
    expect(ownedByC()).toBe(0);
    expect(sim.codes("b")).toContain("LEASE_RECLAIMED");
  });

  it("after the grace period also when the heir restarts again once every tombstone of the dead node is reaped", async () => {
    // Tombstones kept as long as the grace period, as the agent's defaults (24 h each).
    const { sim, nodes, ownedByC } = await cDead(7, 60_000, 60_000);
    const [a, b] = nodes;
    // b restarts knowing c's tombstone (its timer starts), then goes down again before it fires...
    sim.crash(b);
    await runTo(sim, 62_000);
    await sim.restart(b);
    await runTo(sim, 90_000);
    expect(
      leases(b)
        .reservations()
        .find((r) => r.node === "c")?.reclaimAt,
    ).toEqual(expect.any(Number));
    sim.crash(b);
    // ... and comes back once a, too, has forgotten c: nobody can tell b that c died.
    const known = (n: PlaneNode) => n.plane!.allMembers().some((m) => m.name === "c");
    expect(await sim.runUntil(() => !known(a), 120_000)).toBe(true);
    // Without the time b saved when it learnt of the death (which would reclaim at once: a file
    // saved before it was kept), only the ring can tell b that c is gone.
    b.store.saved = { ...b.store.saved!, gone: undefined };
    await sim.restart(b);
    await sim.runFor(10_000);
    expect(known(b)).toBe(false);
    expect(ownedByC()).toBeGreaterThan(0);
    // Before, c's slots stayed reserved for good (reclaimAt null everywhere).
    expect(
      leases(b)
        .reservations()
        .find((r) => r.node === "c")?.reclaimAt,
    ).toEqual(expect.any(Number));
    await sim.runFor(200_000);
    expect(ownedByC()).toBe(0);
    expect(sim.codes("b")).toContain("LEASE_RECLAIMED");
    // a and b never lost a subnet (the simulator also checked after every event that no two nodes held one).
    for (const n of [a, b]) expect(sim.codes(n.name)).not.toContain("LEASE_LOST");
  });

  it("after the grace period counted from the death also when the heir restarts more often than the grace period", async () => {
    // c died by 60 s; b, its heir, restarts every 20 s (a crash loop, a rollout) with a 60 s grace.
    const { sim, nodes, ownedByC } = await cDead(11, 60_000);
    const b = nodes[1];
    const reclaimAt = () =>
      leases(b)
        .reservations()
        .find((r) => r.node === "c")?.reclaimAt;
    const firstDeadline = reclaimAt()!;
    expect(firstDeadline).toEqual(expect.any(Number));
    let checked = 0;
    for (let t = 60_000; t < 160_000; t += 20_000) {
      await runTo(sim, t + 15_000);
      // Before, every restart set it a whole grace period later: the slots stayed c's for good.
      if (ownedByC() > 0) {
        expect(Math.abs(reclaimAt()! - firstDeadline)).toBeLessThan(1); // saved in whole ms
        checked++;
      }
      sim.crash(b);
      await runTo(sim, t + 16_000);
      await sim.restart(b);
    }
    expect(checked).toBeGreaterThan(1); // also after a restart
    await runTo(sim, 180_000);
    expect(ownedByC()).toBe(0);
    expect(sim.codes("b")).toContain("LEASE_RECLAIMED");
    for (const n of [nodes[0], b]) expect(sim.codes(n.name)).not.toContain("LEASE_LOST");
  });

  it("after the grace period also when a node that joined after the death became heir by a donation", async () => {
    for (const seed of [3, 4]) {
      const { sim, nodes, start, ownedByC } = await cDead(seed, 60_000);
      const d = nodes[3];
      await start(d);
      await runTo(sim, 90_000);
      expect(leases(d).currentLease()).not.toBeNull();
      await runTo(sim, 90_000 + 200_000);
      expect(ownedByC()).toBe(0);
      expect([...sim.codes("b"), ...sim.codes("d")]).toContain("LEASE_RECLAIMED");
    }
  });

  it("two histories (both sides of a partition changed the same slots): the nodes they name settle them, and every view agrees again", async () => {
    const { sim, nodes, start } = cluster(["a", "b", "c", "d"], 41);
    const [a, b, c, d] = nodes;
    const startOne = (n: PlaneNode): Promise<void> =>
      start(n, { seeds: ["a", "b"], lease: { reclaimGraceMs: 20_000 } });
    for (const n of [a, b, c]) await startOne(n);
    await runTo(sim, 30_000);
    // Cut a off longer than the grace: b's side reclaims a's slots (version + 1) while a hands
    // some of the same free slots to d (version + 1 too): the same versions, different owners.
    // Two nodes then hold one subnet until the heal: the documented risk, so no invariant here.
    sim.checkLeases = false;
    sim.partition(["a", "d"], ["b", "c"]);
    await startOne(d);
    await runTo(sim, 120_000);
    expect(leases(d).currentLease()).not.toBeNull();
    expect([...sim.codes("b"), ...sim.codes("c")]).toContain("LEASE_RECLAIMED");
    sim.heal();
    expect(await sim.runUntil(() => sim.agreed(), 480_000), "views did not converge").toBe(true);
    const codes = nodes.flatMap((n) => sim.codes(n.name));
    expect(codes).toContain("LEASE_INCONSISTENT");
    expect(codes).toContain("LEASE_FORK_SETTLED");
    sim.checkLeases = true;
    await sim.runFor(1_000);
  });
});
