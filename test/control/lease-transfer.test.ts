// A transfer the giver saved must reach its receiver whatever is lost on the way: the reply, the
// giver's view of membership (a lone seed restarted without a join list knows nobody), or a save
// on either side (a full disk failing before the state file is replaced, or after: the rename
// landed but the directory's fsync failed). The agent's ControlPlane in the simulator, with the
// agent's defaults and the simulator's invariants after every event. And a giver restarted before the receiver acknowledged resends what it saved.
// And a giver that had reclaimed the asker (its grace ran out while the two were apart) keeps
// what it gives it, gives it to nobody else, and does not give out the asker's old subnet.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { ControlPlane } from "../../src/control/control-plane.js";
import type { RingRun } from "../../src/control/lease/ring.js";
import { Ipv6SubnetSpace, SubnetSpace } from "../../src/control/lease/slots.js";
import type { SubnetLeases } from "../../src/control/lease/subnet-leases.js";
import { FileLeaseStore, type LeaseStateStore } from "../../src/control/lease/store.js";
import { createLeaseLayer } from "../../src/control/control-plane.js";
import type { MembershipPort } from "../../src/control/lease/types.js";
import { decodeMessage, encodeMessage, type LeaseMessage } from "../../src/control/lease/wire.js";
import { SimControlPlanes, type PlaneNode } from "./sim/control-planes.js";
import { Disk, GatedStore, loneClock, MemoryStore, RecordingLog } from "./sim/doubles.js";
import { SeededRandom } from "./sim/random.js";
import { SIM_EPOCH_MS } from "./sim/scheduler.js";
import type { SimClock } from "./sim/network.js";

const SPACE = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
const SPACE6 = Ipv6SubnetSpace.fromConfig({ IPv6Network: "2001:2:0:8000::/49" });

type Node = PlaneNode & { store: Disk };

interface Faults {
  /** The giver's disk while the others ask. */
  giver?: "full" | "torn";
  /** The receivers' disks while they ask. */
  receivers?: "full" | "torn";
  /** Answers to the receivers' requests lost after the giver took them (a broken stream). */
  lostReplies?: number;
  /** Restart the giver (crashed while its disk was full, started again with space). */
  restartGiver?: boolean;
}

/**
 * The chaos suite's "state dir fills up": a is the only seed and has no join list (it owns every
 * slot, so b's and c's first subnets are its transfers); b and c join a; faults last 20 s, then
 * the disks have space again.
 */
async function donation(seed: number, faults: Faults): Promise<{ sim: SimControlPlanes; a: Node; b: Node; c: Node }> {
  const sim = new SimControlPlanes(SPACE, seed);
  const [a, b, c] = ["a", "b", "c"].map((name) => sim.add(name, new Disk()) as Node);
  const startGiver = (): Promise<ControlPlane> => sim.start(a, { join: [], seeds: ["a"] });
  await startGiver();
  expect(await sim.runUntil(() => a.plane?.leases.currentLease() != null, 60_000)).toBe(true);
  a.store.fault = faults.giver ?? null;
  for (const n of [b, c]) {
    n.store.fault = faults.receivers ?? null;
    const plane = await sim.start(n, { join: [a.host.addr], seeds: ["a"] });
    let lose = faults.lostReplies ?? 0;
    if (lose === 0) continue;
    const request = plane.request.bind(plane);
    // The lease layer's stream exchanges go through this port; the giver has acted when it fails.
    plane.request = async (to, msg) => {
      const answer = await request(to, msg);
      if (lose > 0 && to === "a") {
        lose--;
        throw new Error("connection reset by peer (simulated)");
      }
      return answer;
    };
  }
  await sim.runFor(20_000);
  if (faults.restartGiver) {
    sim.crash(a);
    await sim.runFor(1_000);
  }
  for (const n of [a, b, c]) n.store.fault = null;
  if (faults.restartGiver) await startGiver();
  return { sim, a, b, c };
}

describe("a transfer the giver saved reaches its receiver", () => {
  it.each<[string, Faults]>([
    [
      "the giver's disk is full, it crashes and restarts knowing no member (the chaos suite's tmpfs scenario)",
      { giver: "full", restartGiver: true },
    ],
    [
      "the giver's saves land but report ENOSPC, then it restarts from what landed",
      { giver: "torn", restartGiver: true },
    ],
    ["the giver's saves land but report ENOSPC, and it keeps running", { giver: "torn" }],
    ["the receivers' disks are full when the transfer arrives", { receivers: "full" }],
    ["the receivers' saves land but report ENOSPC", { receivers: "torn" }],
    ["the replies are lost after the giver saved the transfer", { lostReplies: 3 }],
    ["the replies are lost, then the giver restarts knowing no member", { lostReplies: 3, restartGiver: true }],
  ])(
    "%s",
    async (_, faults) => {
      for (const seed of [1, 2, 3]) {
        const { sim, a, b, c } = await donation(seed, faults);
        // One anti-entropy period (push-pull every 30 s) at most: delivery must not wait for it.
        expect(
          await sim.runUntil(() => [b, c].every((n) => n.plane?.leases.currentLease() != null), 25_000),
          `seed ${seed}: b or c has no subnet`,
        ).toBe(true);
        expect(await sim.runUntil(() => sim.agreed(), 120_000), `seed ${seed}: views differ`).toBe(true);
        if (faults.giver) expect(a.store.failures).toBeGreaterThan(0);
        if (faults.receivers) expect(b.store.failures + c.store.failures).toBeGreaterThan(0);
        for (const n of [a, b, c]) expect(n.plane!.leases.stats.refusedStates).toBe(0);
      }
    },
    120_000,
  );
});

describe("a giver restarted before its transfer was acknowledged", () => {
  const FP = SPACE.fingerprint;

  /** Membership for the giver "a": b is alive; every lease message a sends is recorded, and b
   *  answers a delivered ring state with its view (all it was sent) only once `bAnswers` is set. */
  function giver(store: MemoryStore, clock: SimClock, sent: LeaseMessage[], bAnswers: () => boolean) {
    const membership: MembershipPort = {
      localNode: () => ({ name: "a" }),
      members: () => [{ name: "b", host: "sim", port: 0, incarnation: 0, state: "alive", meta: new Uint8Array(0) }],
      request: async (to, bytes) => {
        const msg = decodeMessage(FP, bytes);
        sent.push(msg);
        if (to !== "b" || !bAnswers() || msg.kind !== "state") throw new Error("connection refused (simulated)");
        return encodeMessage(FP, msg);
      },
      updateNode: () => undefined,
      allMembers: () => [],
    };
    const layer = createLeaseLayer(
      { space: SPACE, seeds: ["a"], lease: { bootstrapQuietMs: 1_000 } },
      { membership, store, clock, random: new SeededRandom(1), log: new RecordingLog() },
    );
    layer.families[0].admit(); // as its control plane does once it reached its cluster
    return layer.families[0];
  }

  it("resends it from its state dir, with backoff, until the receiver shows it has the slots", async () => {
    const store = new MemoryStore();
    const { scheduler, clock } = loneClock();
    const sent: LeaseMessage[] = [];
    const first = giver(store, clock, sent, () => false);
    await first.start();
    await scheduler.runFor(2_000);
    expect(first.currentLease()).not.toBeNull();
    // b asks; a saves the transfer (and that it is unacknowledged) before answering.
    const reply = await first.answer("b", { kind: "request", id: 7 });
    expect(reply).toMatchObject({ kind: "reply", granted: true });
    const given = first.ringState().runs.filter((r) => r.owner === "b");
    expect(given.length).toBeGreaterThan(0);
    expect(store.saved?.transfers).toEqual([{ to: "b", spans: [{ start: given[0].start, count: given[0].count }] }]);
    // The reply is lost and b cannot be reached; a dies before b ever answers.
    await scheduler.runFor(5_000);
    expect(sent.filter((m) => m.kind === "state").length).toBeGreaterThan(0);
    await first.stop();

    sent.length = 0;
    let answering = false;
    const again = giver(store, clock, sent, () => answering);
    await again.start();
    await scheduler.runFor(4_000);
    const resent = sent.filter((m) => m.kind === "state");
    expect(resent.length, "the restarted giver resends the saved transfer").toBeGreaterThan(0);
    for (const m of resent) expect(m.kind === "state" && m.ring.runs.filter((r) => r.owner === "b")).toEqual(given);
    // Backoff: 1 s doubling, so 4 s hold at most three tries (1, 2 and 4 s after the start).
    expect(resent.length).toBeLessThanOrEqual(3);

    answering = true;
    await scheduler.runFor(60_000);
    const count = sent.filter((m) => m.kind === "state").length;
    expect(count).toBeGreaterThan(resent.length);
    await scheduler.runFor(600_000);
    expect(sent.filter((m) => m.kind === "state").length, "acknowledged: no more resends").toBe(count);
    await again.stop();
  });
});

describe("a reclaimer asked for slots by the node it reclaimed, before membership says it is back", () => {
  const GRACE_MS = 20_000;

  /** A ring change naming c, newer than b's: c's old `share` (b reclaimed it) at the next version. */
  function namingC(b: SubnetLeases, share: readonly RingRun[]): void {
    const reclaimed = b.ringState().runs.filter((r) => r.start >= share[0].start && r.owner === "b");
    b.mergeRemote(
      { seeds: ["b", "c"], runs: reclaimed.map((r) => ({ ...r, owner: "c", version: r.version + 1 })) },
      "gossip",
    );
  }

  /**
   * b's lease layer, heir of c (seeds b and c), with c alive in membership until `killC` (or dead
   * from the start: `cAtStart`); with `store6`, dual-stack (an IPv6 ring too, `b6`). Membership's
   * news goes to every family, as the gossip delegate sends it.
   */
  async function heirOfC(
    store: LeaseStateStore,
    store6?: LeaseStateStore,
    cAtStart: "alive" | "dead" = "alive",
    /** The wall clock's step (SimClock.wallStepMs); c's incarnation; c reported gone before start();
     *  the grace period (GRACE_MS when absent). */
    restart: { wallStepMs?: number; cIncarnation?: number; goneBeforeStart?: boolean; graceMs?: number } = {},
  ) {
    const { scheduler, clock } = loneClock();
    clock.wallStepMs = restart.wallStepMs ?? 0;
    const log = new RecordingLog();
    let cState = cAtStart;
    const membership: MembershipPort = {
      localNode: () => ({ name: "b" }),
      members: () => [
        {
          name: "c",
          host: "sim",
          port: 0,
          incarnation: restart.cIncarnation ?? 0,
          state: cState,
          meta: new Uint8Array(0),
        },
      ],
      request: async () => {
        throw new Error("connection refused (simulated)");
      },
      updateNode: () => undefined,
      // c's record, dead too (as gossip keeps a tombstone).
      allMembers: () => membership.members(),
    };
    const layer = createLeaseLayer(
      {
        space: SPACE,
        ...(store6 && { space6: SPACE6 }),
        seeds: ["b", "c"],
        lease: { bootstrapQuietMs: 1_000, reclaimGraceMs: restart.graceMs ?? GRACE_MS },
      },
      { membership, store, store6, clock, random: new SeededRandom(1), log },
    );
    const [b, b6] = layer.families;
    if (restart.goneBeforeStart) for (const l of layer.families) l.memberGone("c");
    for (const l of layer.families) {
      await l.start();
      l.admit(); // as its control plane does once it reached its cluster
    }
    await scheduler.runFor(2_000);
    const ownedIn = (l: SubnetLeases, node: string) => l.ringState().runs.filter((r) => r.owner === node);
    const owned = (node: string) => ownedIn(b, node);
    // The seed division: b is the heir of c's share.
    if (cAtStart === "alive") expect(owned("c").length).toBeGreaterThan(0);
    const killC = () => {
      cState = "dead";
      for (const l of layer.families) l.memberGone("c");
    };
    const reviveC = () => {
      cState = "alive";
      for (const l of layer.families) l.memberAlive("c");
    };
    return { b, b6, scheduler, clock, log, owned, ownedIn, killC, reviveC };
  }

  it("gives it slots, takes none back on the old verdict, gives them to nobody else, and reclaims only after a new grace period", async () => {
    const { b, scheduler, clock, log, owned, killC } = await heirOfC(new MemoryStore());
    // c uses the first slot of its share as its subnet.
    const cSubnet = {
      start: owned("c")[0].start,
      count: 1,
      owner: "c",
      version: owned("c")[0].version + 1,
      leased: true,
    };
    b.mergeRemote({ seeds: ["b", "c"], runs: [cSubnet] }, "gossip");
    await scheduler.runFor(1_000);
    expect(owned("c").filter((r) => r.leased)).toEqual([cSubnet]);

    // c is declared dead; after the grace period b takes its share.
    killC();
    await scheduler.runFor(GRACE_MS + 1_000);
    expect(owned("c")).toEqual([]);
    expect(log.codes()).toContain("LEASE_RECLAIMED");

    // c, back but not yet alive in b's membership, asks b for a subnet (a stream request).
    const reply = await b.answer("c", { kind: "request", id: 1 });
    expect(reply).toMatchObject({ kind: "reply", granted: true });
    const given = owned("c");
    expect(given.length).toBe(1);
    // Not the subnet c used before: c may still use it until it hears of the reclaim.
    expect(given[0].start > cSubnet.start || given[0].start + given[0].count <= cSubnet.start).toBe(true);
    expect(log.codes()).toContain("LEASE_GONE_NODE_ACTIVE");
    await scheduler.runFor(GRACE_MS / 2);
    expect(owned("c"), "the reclaim pass after the transfer took it back").toEqual(given);
    // Another asker gets slots c does not hold.
    const other = await b.answer("d", { kind: "request", id: 2 });
    expect(other).toMatchObject({ kind: "reply", granted: true });
    const [g] = given;
    for (const r of owned("d")) expect(r.start + r.count <= g.start || g.start + g.count <= r.start).toBe(true);

    // c leases one of its slots: a ring change naming c, newer than b's view, starts the grace over.
    const lease = { start: g.start, count: 1, owner: "c", version: g.version + 1, leased: true };
    const heard = clock.now();
    b.mergeRemote({ seeds: ["b", "c"], runs: [lease] }, "gossip");
    await scheduler.runFor(GRACE_MS * 0.75); // past the grace that began with the request
    expect(b.ringState().runs.filter((r) => r.owner === "c" && r.leased)).toEqual([lease]);
    const reserved = () => b.reservations().find((r) => r.node === "c");
    expect(reserved()?.condemned).toBe(false);
    expect(reserved()?.reclaimAt).toBeGreaterThanOrEqual(heard + GRACE_MS);
    // Still dead in membership a whole grace period after its last sign of life: reclaimed (b
    // holds the slots before c's, so b is its heir).
    await scheduler.runFor(GRACE_MS);
    expect(owned("c")).toEqual([]);
    expect(log.codes().filter((c) => c === "LEASE_RECLAIMED").length).toBe(2);
    await b.stop();
  });

  it("says when the grace period ends in wall-clock time, also after the wall clock was stepped", async () => {
    const { b, scheduler, clock, killC } = await heirOfC(new MemoryStore());
    killC();
    clock.wallStepMs = 3_600_000; // NTP stepped the wall clock an hour forward
    await scheduler.runFor(1_000);
    // Before, the monotonic deadline was shown: an hour off the wall clock.
    expect(b.reservations().find((r) => r.node === "c")?.reclaimAt).toBe(clock.wallNow() + GRACE_MS - 1_000);
    await b.stop();
  });

  it("a restarted heir counts the grace period from its saved start (at most a whole one if the wall clock went back; a whole one for a later incarnation's death)", async () => {
    const store = new MemoryStore();
    const first = await heirOfC(store);
    first.killC();
    await first.scheduler.runFor(GRACE_MS / 4);
    await first.b.stop();
    expect(store.saved?.gone).toEqual([{ node: "c", since: expect.any(Number), incarnation: 0 }]);
    const since = store.saved!.gone![0].since;
    const left = async (wallStepMs: number, more: { cIncarnation?: number; goneBeforeStart?: boolean } = {}) => {
      // Each from the same saved state (a start would save it again, pulled back or reclaimed).
      const copy = new MemoryStore();
      copy.saved = structuredClone(store.saved);
      const { b, clock, killC } = await heirOfC(copy, undefined, "dead", { wallStepMs, ...more });
      if (!more.goneBeforeStart) killC();
      const at = b.reservations().find((r) => r.node === "c")?.reclaimAt;
      await b.stop();
      return { left: at! - clock.wallNow(), wall: clock.wallNow() };
    };
    // Half a grace period of wall time later: half is left.
    const half = await left(since + GRACE_MS / 2 - (SIM_EPOCH_MS + 2_000));
    expect(half.left).toBe(since + GRACE_MS - half.wall);
    expect(half.left).toBeCloseTo(GRACE_MS / 2, -1);
    // The wall clock before the saved start (stepped back): a whole grace period from the restart
    // (2 s before), no more.
    expect((await left(-3_600_000)).left).toBe(GRACE_MS - 2_000);
    // Past it: reclaimed at once.
    expect((await left(since + GRACE_MS - SIM_EPOCH_MS)).left).toBeLessThanOrEqual(0);
    // Also when membership reported the death before the saved state was loaded.
    const early = await left(since + GRACE_MS / 2 - (SIM_EPOCH_MS + 2_000), { goneBeforeStart: true });
    expect(early.left).toBeCloseTo(GRACE_MS / 2, -1);
    // c came back and died again (a later incarnation): that death's grace is a whole one.
    expect((await left(since + GRACE_MS / 2 - (SIM_EPOCH_MS + 2_000), { cIncarnation: 1 })).left).toBe(GRACE_MS);
  });

  it("a restarted heir saves a death membership reported before the saved state was loaded", async () => {
    const store = new MemoryStore();
    const first = await heirOfC(store);
    await first.b.stop();
    expect(store.saved?.gone ?? []).toEqual([]);
    const { b } = await heirOfC(store, undefined, "dead", { goneBeforeStart: true });
    // Before, nothing saved it (until some later commit): a restart then counted a whole grace again.
    expect(store.saved?.gone).toEqual([{ node: "c", since: expect.any(Number), incarnation: 0 }]);
    await b.stop();
  });

  it("a saved start later than the wall clock is pulled back to it: restarts do not each count a whole grace period", async () => {
    const store = new MemoryStore();
    const first = await heirOfC(store);
    first.killC();
    await first.scheduler.runFor(1_000);
    await first.b.stop();
    // Restarted with the wall clock an hour behind (a boot without RTC): a whole grace period...
    const behind = await heirOfC(store, undefined, "dead", { wallStepMs: -3_600_000 });
    behind.killC();
    const reclaimAt = (b: SubnetLeases) => b.reservations().find((r) => r.node === "c")!.reclaimAt!;
    expect(reclaimAt(behind.b) - behind.clock.wallNow()).toBe(GRACE_MS - 2_000);
    await behind.b.stop();
    // ... counted from then: restarted half a grace period of wall time later, half is left (less
    // the 2 s since). Before, the start saved in the future gave every restart a whole one again.
    const later = await heirOfC(store, undefined, "dead", { wallStepMs: -3_600_000 + GRACE_MS / 2 });
    later.killC();
    expect(reclaimAt(later.b) - later.clock.wallNow()).toBe(GRACE_MS / 2 - 2_000);
    await later.b.stop();
  });

  it("a start saved while the wall clock was behind is saved again once it is corrected: a restart does not reclaim at once", async () => {
    const graceMs = 600_000;
    const store = new MemoryStore();
    // Booted without RTC: the wall clock an hour behind when c dies; NTP corrects it 10 s later.
    const first = await heirOfC(store, undefined, "alive", { wallStepMs: -3_600_000, graceMs });
    first.killC();
    await first.scheduler.runFor(10_000);
    first.clock.wallStepMs = 0;
    await first.scheduler.runFor(70_000);
    await first.b.stop();
    // Restarted 80 s of wall time after c died (10 s down).
    const { b, clock, killC, owned } = await heirOfC(store, undefined, "dead", { wallStepMs: 80_000, graceMs });
    killC();
    const left = b.reservations().find((r) => r.node === "c")!.reclaimAt! - clock.wallNow();
    // Before, the start saved an hour back reclaimed c's slots at once.
    expect(owned("c").length).toBeGreaterThan(0);
    expect(left).toBeGreaterThan(graceMs - 85_000);
    expect(left).toBeLessThan(graceMs - 75_000);
    await b.stop();
  });

  // The clock check's save failed (a full disk): before, the offset it saved with counted as
  // saved, and once the disk had space the next checks saw no step, so the file kept the start an
  // hour back and a restart reclaimed at once.
  it("a start saved again after a wall-clock step is tried again when that save failed", async () => {
    const store = new Disk();
    const { b, scheduler, clock, killC } = await heirOfC(store, undefined, "alive", {
      wallStepMs: -3_600_000,
      graceMs: 600_000,
    });
    killC();
    const diedAt = clock.now();
    await scheduler.runFor(10_000);
    store.fault = "full";
    clock.wallStepMs = 0;
    await scheduler.runFor(60_000); // the check's save fails
    expect(store.failures).toBe(1);
    store.fault = null;
    await scheduler.runFor(60_000);
    expect(store.saved?.gone).toEqual([expect.objectContaining({ node: "c" })]);
    expect(Math.abs(store.saved!.gone![0].since - diedAt)).toBeLessThan(2_000);
    await b.stop();
  });

  // Revoked while the reclaim's save was at the disk: before, the ring change and the notice
  // were still gossiped under a name that is another node's, and the operator was told of a
  // reclaim made (notifying no one), nor was the change kept from push-pull.
  it("an operator's reclaim whose save outlasts the node's admission announces nothing, shows nothing, and fails (LEASE_NOT_ADMITTED)", async () => {
    const store = new GatedStore();
    const { b, killC } = await heirOfC(store);
    killC();
    await b.settled();
    const announced: LeaseMessage[] = [];
    b.on("announce", (m) => announced.push(m));
    const open = store.close();
    const report = b.reclaim("c");
    for (let i = 0; i < 100 && store.waiting.length === 0; i++) await Promise.resolve();
    expect(store.waiting).toHaveLength(1);
    const before = b.ringState();
    b.revoke();
    open();
    await expect(report).rejects.toMatchObject({
      code: "LEASE_NOT_ADMITTED",
      message: expect.stringMatching(/another node's while the reclaim of c was saved/),
    });
    expect(announced).toEqual([]);
    expect(b.ringState()).toEqual(before);
    await b.stop();
  });

  it("a sign of life queued before the grace verdict voids the verdict", async () => {
    const store = new GatedStore();
    const { b, scheduler, clock, log, owned, killC } = await heirOfC(store);
    const share = owned("c");
    killC();
    await scheduler.runFor(GRACE_MS - 1_000);
    const open = store.close();
    const blocker = b.answer("d", { kind: "request", id: 1 }); // a donation, saving at the gate
    // c leases a slot of its share: queued behind the donation, before the verdict.
    const lease = { ...share[0], count: 1, version: share[0].version + 1, leased: true };
    b.mergeRemote({ seeds: ["b", "c"], runs: [lease] }, "gossip");
    await scheduler.runFor(2_000); // the grace timer fires; its verdict queues behind both
    const reserved = () => b.reservations().find((r) => r.node === "c");
    expect(reserved()?.reclaimAt).toBeLessThanOrEqual(clock.now()); // fired, its verdict waiting
    open();
    await blocker;
    await scheduler.runFor(1_000);
    expect(log.codes()).toContain("LEASE_GONE_NODE_ACTIVE");
    expect(log.codes()).not.toContain("LEASE_RECLAIMED");
    expect(owned("c").filter((r) => r.leased)).toEqual([lease]);
    // The verdict found its grace period replaced, and did nothing.
    expect(reserved()?.condemned).toBe(false);
    expect(reserved()?.reclaimAt).toBeGreaterThan(clock.now() + GRACE_MS - 2_000);
    // A whole grace period after the sign of life: condemned (d, given the slots before c's, is its heir).
    await scheduler.runFor(GRACE_MS);
    expect(b.reservations().find((r) => r.node === "c")).toMatchObject({ condemned: true });
    await b.stop();
  });

  it("an operator's verdict yields to the node's own request, not to a ring change naming it, also after its grace period ran out", async () => {
    const { b, scheduler, log, owned, killC } = await heirOfC(new MemoryStore());
    const share = owned("c");
    killC();
    await scheduler.runFor(5_000);
    const report = await b.reclaim("c");
    expect(report.takenHere).toBeGreaterThan(0);
    await scheduler.runFor(GRACE_MS); // past the grace period membership's verdict started
    namingC(b, share);
    await scheduler.runFor(1_000);
    expect(log.codes()).not.toContain("LEASE_GONE_NODE_ACTIVE");
    expect(owned("c"), "taken again on the operator's verdict").toEqual([]);
    // c itself asks: alive, whatever the operator said.
    expect(await b.answer("c", { kind: "request", id: 1 })).toMatchObject({ kind: "reply", granted: true });
    expect(log.codes()).toContain("LEASE_GONE_NODE_ACTIVE");
    await scheduler.runFor(1_000);
    expect(owned("c").length).toBe(1);
    await b.stop();
  });

  it("an operator's verdict stays the operator's when membership reports the node gone again (dead, then left)", async () => {
    const { b, scheduler, log, owned, killC } = await heirOfC(new MemoryStore());
    const share = owned("c");
    killC();
    await scheduler.runFor(5_000);
    await b.reclaim("c");
    // The delegate's notifyUpdate for a dead node later reported as left. Before, this started a
    // grace period for the condemned node whose verdict, when it ran out, replaced the operator's.
    b.memberGone("c");
    await scheduler.runFor(GRACE_MS + 1_000);
    // So a ring change naming c, which does not undo an operator's verdict, undid it.
    namingC(b, share);
    await scheduler.runFor(1_000);
    expect(log.codes()).not.toContain("LEASE_GONE_NODE_ACTIVE");
    expect(owned("c"), "taken again on the operator's verdict").toEqual([]);
    await b.stop();
  });

  it("an operator's reclaim whose turn comes after membership saw the node back takes nothing", async () => {
    const store = new GatedStore();
    const { b, scheduler, log, owned, killC, reviveC } = await heirOfC(store);
    const share = owned("c");
    killC();
    await scheduler.runFor(1_000);
    const open = store.close();
    const blocker = b.answer("d", { kind: "request", id: 1 }); // a donation, saving at the gate
    const asked = b.reclaim("c"); // accepted: c is gone; queued behind the donation
    reviveC(); // c rejoins meanwhile
    open();
    await blocker;
    await expect(asked).rejects.toMatchObject({ code: "LEASE_RECLAIM_ALIVE" });
    await scheduler.runFor(GRACE_MS * 2);
    expect(owned("c")).toEqual(share);
    expect(log.codes()).not.toContain("LEASE_RECLAIMED");
    // Nor does a later commit's reclaim pass (a live node left condemned would lose its share there).
    expect(await b.answer("e", { kind: "request", id: 2 })).toMatchObject({ kind: "reply", granted: true });
    await scheduler.runFor(1_000);
    expect(owned("c")).toEqual(share);
    await b.stop();
  });

  it("an operator's reclaim that could not be saved takes nothing later either; the grace period goes on", async () => {
    const disk = new Disk();
    const { b, scheduler, log, owned, killC } = await heirOfC(disk);
    const share = owned("c");
    killC();
    await scheduler.runFor(1_000);
    const reserved = () => b.reservations().find((r) => r.node === "c");
    const before = reserved();
    expect(before).toMatchObject({ condemned: false, reclaimAt: expect.any(Number) });
    disk.fault = "full";
    await expect(b.reclaim("c")).rejects.toMatchObject({ code: "LEASE_PERSIST_FAILED" });
    expect(reserved()).toEqual(before); // its grace deadline, not a new one from now
    disk.fault = null;
    // The next commit's reclaim pass once took the share on the verdict the operator was told had
    // not been made, and without the notice to other heirs. A commit that leaves b heir of c's
    // share (a donation would make the receiver heir): another node's change to one of b's slots.
    const v = b.ringState().runs.find((r) => r.start <= 10 && 10 < r.start + r.count)!.version;
    b.mergeRemote(
      { seeds: ["b", "c"], runs: [{ start: 10, count: 1, owner: "e", version: v + 1, leased: false }] },
      "gossip",
    );
    await scheduler.runFor(GRACE_MS / 2);
    expect(owned("b").some((r) => r.start + r.count === share[0].start)).toBe(true); // still c's heir
    expect(owned("c")).toEqual(share);
    expect(log.codes()).not.toContain("LEASE_RECLAIMED");
    // Still gone in membership: it is reclaimed when its grace period, begun at its death, ends
    // (half a second past it here; the failed attempt does not start it over).
    await scheduler.runFor(GRACE_MS / 2 - 500);
    expect(owned("c")).toEqual([]);
    expect(log.codes()).toContain("LEASE_RECLAIMED");
    await b.stop();
  });

  it("an operator's reclaim that could not be saved leaves the grace period's verdict standing: the next commit takes the share on it", async () => {
    const disk = new Disk();
    const { b, scheduler, log, owned, killC } = await heirOfC(disk);
    const share = owned("c");
    const reserved = () => b.reservations().find((r) => r.node === "c");
    killC();
    // The disk is full when the grace period ends: its verdict stands, the share not yet taken.
    disk.fault = "full";
    await scheduler.runFor(GRACE_MS + 1_000);
    const before = reserved();
    expect(before).toMatchObject({ condemned: true, reclaimAt: null });
    expect(owned("c")).toEqual(share);
    await expect(b.reclaim("c")).rejects.toMatchObject({ code: "LEASE_PERSIST_FAILED" });
    // Before, the failed reclaim dropped the verdict and started a new grace period from now.
    expect(reserved()).toEqual(before);
    expect(owned("c")).toEqual(share);
    expect(disk.saved?.ring).toEqual(b.ringState()); // nothing half made: what is seen is what is saved
    disk.fault = null;
    // The next commit (another node's change to one of b's slots) runs the reclaim pass on it.
    const v = b.ringState().runs.find((r) => r.start <= 10 && 10 < r.start + r.count)!.version;
    b.mergeRemote(
      { seeds: ["b", "c"], runs: [{ start: 10, count: 1, owner: "e", version: v + 1, leased: false }] },
      "gossip",
    );
    await scheduler.runFor(1_000);
    expect(owned("c")).toEqual([]);
    expect(log.lines.find((l) => l.obj.code === "LEASE_RECLAIMED")?.obj).toMatchObject({
      node: "c",
      reason: "grace period",
    });
    expect(disk.saved?.ring).toEqual(b.ringState());
    await b.stop();
  });

  it("dual-stack: a sign of life in the IPv4 ring restarts the IPv6 grace period too", async () => {
    const { b, b6, scheduler, log, ownedIn, killC } = await heirOfC(new MemoryStore(), new MemoryStore());
    // c leases the first slot of its share in each ring.
    const leaseOf = (l: SubnetLeases) => {
      const [first] = ownedIn(l, "c");
      const lease = { start: first.start, count: 1, owner: "c", version: first.version + 1, leased: true };
      l.mergeRemote({ seeds: ["b", "c"], runs: [lease] }, "gossip");
      return lease;
    };
    const [lease4, lease6] = [leaseOf(b), leaseOf(b6!)];
    await scheduler.runFor(1_000);
    killC();
    await scheduler.runFor(GRACE_MS - 5_000);
    // Only the IPv4 ring hears of c again (its lease, one version on), 5 s before the deadline.
    const renewed = { ...lease4, version: lease4.version + 1 };
    b.mergeRemote({ seeds: ["b", "c"], runs: [renewed] }, "gossip");
    await scheduler.runFor(10_000); // past the deadline both grace periods began with
    expect(ownedIn(b, "c").filter((r) => r.leased)).toEqual([renewed]);
    expect(
      ownedIn(b6!, "c").filter((r) => r.leased),
      "IPv6 subnet reclaimed on the old verdict",
    ).toEqual([lease6]);
    const signs = log.lines.filter((l) => l.obj.code === "LEASE_GONE_NODE_ACTIVE").map((l) => String(l.obj.sign));
    expect(signs).toEqual([expect.not.stringContaining("IPv4 ring"), expect.stringContaining("(IPv4 ring)")]);
    // Still gone a whole grace period after that sign: reclaimed in both rings.
    await scheduler.runFor(GRACE_MS);
    expect(ownedIn(b, "c")).toEqual([]);
    expect(ownedIn(b6!, "c")).toEqual([]);
    for (const l of [b, b6!]) await l.stop();
  });

  it("dual-stack: an heir restarted from its state dir still hands out the subnet of a node it reclaimed last, until that node leases another", async () => {
    const stores = [new MemoryStore(), new MemoryStore()] as const;
    const first = await heirOfC(...stores);
    // c leases the first slot of its share in each ring, then dies; its grace period runs out.
    const cSubnets = [first.b, first.b6!].map((l) => {
      const [share] = first.ownedIn(l, "c");
      const lease = { start: share.start, count: 1, owner: "c", version: share.version + 1, leased: true };
      l.mergeRemote({ seeds: ["b", "c"], runs: [lease] }, "gossip");
      return share.start;
    });
    await first.scheduler.runFor(1_000);
    first.killC();
    await first.scheduler.runFor(GRACE_MS + 1_000);
    for (const l of [first.b, first.b6!]) expect(first.ownedIn(l, "c")).toEqual([]);
    // b restarts (an upgrade, a crash) while c, behind a partition, may still use its subnets. What
    // it saved goes through the state files (one per family) and back.
    for (const l of [first.b, first.b6!]) await l.stop();
    const dir = await mkdtemp(join(tmpdir(), "weft-vacated-"));
    try {
      for (const [family, store] of [
        [4, stores[0]],
        [6, stores[1]],
      ] as const) {
        const file = new FileLeaseStore(dir, family);
        await file.save(store.saved!);
        store.saved = await file.load();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const again = await heirOfC(...stores, "dead");
    const rings = [again.b, again.b6!];
    /** The one run `node` was given (still free: split only by versions). */
    const spanOf = (l: SubnetLeases, node: string) => {
      const [span, ...more] = freeRuns(l, node);
      expect(more).toEqual([]);
      return span;
    };
    const holds = (span: { start: number; end: number }, slot: number) => span.start <= slot && slot < span.end;

    for (const [i, l] of rings.entries()) {
      // d asks first: b owns every other slot but its own lease, all free, c's old subnet among them.
      expect(await l.answer("d", { kind: "request", id: 1 })).toMatchObject({ granted: true });
      expect(holds(spanOf(l, "d"), cSubnets[i]), `IPv${i === 0 ? 4 : 6}: c's subnet given to d`).toBe(false);
      expect(stores[i].saved?.vacated).toEqual([{ slot: cSubnets[i], node: "c" }]);
    }

    for (const [i, l] of rings.entries()) {
      // c comes back and asks (not given its old subnet either), then leases a slot it was given.
      expect(await l.answer("c", { kind: "request", id: 2 })).toMatchObject({ granted: true });
      expect(holds(spanOf(l, "c"), cSubnets[i])).toBe(false);
      const [run] = again.ownedIn(l, "c");
      l.mergeRemote(
        { seeds: ["b", "c"], runs: [{ ...run, count: 1, version: run.version + 1, leased: true }] },
        "gossip",
      );
    }
    await again.scheduler.runFor(1_000);
    for (const [i, l] of rings.entries()) {
      // The mark is gone, from the saved state too: the next asker is given the upper half of b's
      // largest free run counted with c's old subnet in it.
      expect(stores[i].saved?.vacated).toEqual([]);
      const largest = freeRuns(l, "b").reduce((best, r) => (r.end - r.start > best.end - best.start ? r : best));
      expect(holds(largest, cSubnets[i])).toBe(true);
      expect(await l.answer("e", { kind: "request", id: 3 })).toMatchObject({ granted: true });
      const half = Math.ceil((largest.end - largest.start) / 2);
      expect(spanOf(l, "e")).toEqual({ start: largest.end - half, end: largest.end });
    }
    for (const l of rings) await l.stop();
  });
});

/** `node`'s runs of free slots (adjacent runs of different versions joined), end exclusive. */
function freeRuns(l: SubnetLeases, node: string): Array<{ start: number; end: number }> {
  const out: Array<{ start: number; end: number }> = [];
  for (const r of l.ringState().runs) {
    if (r.owner !== node || r.leased) continue;
    const last = out[out.length - 1];
    if (last && last.end === r.start) last.end += r.count;
    else out.push({ start: r.start, end: r.start + r.count });
  }
  return out;
}

describe("reclaimed nodes", () => {
  /** a's lease layer (the only seed, holding a subnet), with `alive` and `dead` as its membership. */
  async function lone(alive: Set<string>, dead: Set<string>) {
    const { scheduler, clock } = loneClock();
    const log = new RecordingLog();
    const view = (name: string, state: "alive" | "dead") => ({
      name,
      host: "sim",
      port: 0,
      incarnation: 0,
      state,
      meta: new Uint8Array(0),
    });
    const membership: MembershipPort = {
      localNode: () => ({ name: "a" }),
      members: () => [...alive].map((n) => view(n, "alive")),
      allMembers: () => [...[...alive].map((n) => view(n, "alive")), ...[...dead].map((n) => view(n, "dead"))],
      request: async () => undefined,
      updateNode: () => undefined,
    };
    const store = new MemoryStore();
    const layer = createLeaseLayer(
      { space: SPACE, seeds: ["a"], lease: { bootstrapQuietMs: 1_000, reclaimGraceMs: 1_000 } },
      { membership, store, clock, random: new SeededRandom(1), log },
    );
    const a = layer.families[0];
    await a.start();
    a.admit(); // as its control plane does once it reached its cluster
    await scheduler.runFor(2_000);
    expect(a.currentLease()).not.toBeNull();
    return { a, scheduler, log, store };
  }

  it("are forgotten once they own nothing and their tombstones are reaped: 1000 deaths of nodes without slots, and one whose slots this node took", async () => {
    const alive = new Set(["a", "d"]);
    const dead = new Set<string>();
    const { a, scheduler, store, log } = await lone(alive, dead);
    // d gets slots from a (a is heir of them: the slot before d's run is a's), then dies.
    expect(await a.answer("d", { kind: "request", id: 1 })).toMatchObject({ granted: true });
    const ownedByD = () => a.ringState().runs.filter((r) => r.owner === "d").length;
    expect(ownedByD()).toBeGreaterThan(0);
    alive.delete("d");
    dead.add("d");
    a.memberGone("d");
    const saves = store.saves;
    for (let i = 0; i < 1000; i++) {
      dead.add(`gone${i}`);
      a.memberGone(`gone${i}`);
    }
    await scheduler.runFor(2_000);
    await a.settled();
    expect(ownedByD()).toBe(0);
    // d's death and its reclaim; before, every death of a node owning nothing saved the ring too.
    expect(store.saves - saves).toBeLessThanOrEqual(3);
    const { reclaimer } = a as unknown as {
      reclaimer: { condemned: Map<string, unknown>; gone: Map<string, unknown> };
    };
    // While membership keeps their tombstones the verdicts stand (a request of theirs is a sign of life).
    expect(reclaimer.condemned.size).toBe(1001);
    // Tombstones reaped; the next commit (a donation) forgets them. Before, every one of them
    // stayed condemned for good, and each commit's reclaim pass went through them all (counting
    // each one's slots in a copy of the whole ring).
    dead.clear();
    alive.add("e");
    expect(await a.answer("e", { kind: "request", id: 2 })).toMatchObject({ granted: true });
    await a.settled();
    expect(reclaimer.condemned.size).toBe(0);
    // With their deaths: before, each stayed, and was counted again for its node's next death that
    // membership gave no incarnation for.
    expect(reclaimer.gone.size).toBe(0);
    // d comes back under its name and gets slots from a; a push-pull ring naming d arrives before
    // its alive record. Before, d's old death was reused: graceMs 0, its new subnet taken at once.
    expect(await a.answer("d", { kind: "request", id: 3 })).toMatchObject({ granted: true });
    expect(ownedByD()).toBeGreaterThan(0);
    a.mergeRemote(a.ringState(), "push-pull");
    await a.settled();
    const noticed = log.lines.filter((l) => l.obj.code === "LEASE_NODE_GONE" && l.obj.node === "d");
    expect(noticed.at(-1)?.obj).toMatchObject({ graceMs: 1_000 });
    expect(ownedByD()).toBeGreaterThan(0);
  });

  // Before, each death heard saved the ring: K nodes dying together were K saves (fsyncs).
  it("deaths of slot-owning nodes heard together are saved in one save, before any later give", async () => {
    const nodes = ["n1", "n2", "n3", "n4", "n5"];
    const alive = new Set(["a", ...nodes]);
    const dead = new Set<string>();
    const { a, store } = await lone(alive, dead);
    for (const [i, n] of nodes.entries())
      expect(await a.answer(n, { kind: "request", id: i })).toMatchObject({ granted: true });
    const saves = store.saves;
    for (const n of nodes) {
      alive.delete(n);
      dead.add(n);
      a.memberGone(n);
    }
    // Asked after the deaths: its give is saved after them, with them.
    alive.add("e");
    const given = a.answer("e", { kind: "request", id: 9 });
    await a.settled();
    expect(await given).toMatchObject({ granted: true });
    expect(store.saves - saves).toBe(2);
    expect(store.saved?.gone?.map((g) => g.node).sort()).toEqual(nodes);
  });

  it("this node, running, reclaimed by an operator elsewhere: says what follows and what to check", async () => {
    const { a, log } = await lone(new Set(["a", "b"]), new Set());
    await a.answer("b", { kind: "reclaim", node: "a" });
    const line = log.lines.find((l) => l.obj.code === "LEASE_RECLAIM_OF_LIVE_NODE");
    expect(line).toMatchObject({ level: "error", obj: { by: "b" } });
    // Before, it said "refusing" (nothing refuses it) and to "undo the decision" (no command does).
    expect(line!.msg).toMatch(/loses its subnet .* leases a new one; check the network between this node and b\b/);
    expect(line!.msg).not.toMatch(/refus|undo/);
  });
});
