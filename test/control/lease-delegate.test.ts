import { encode } from "@msgpack/msgpack";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createLeaseLayer } from "../../src/control/control-plane.js";
import { decodeLeaseMeta, encodeLeaseMeta } from "../../src/control/lease/delegate.js";
import type { RingState } from "../../src/control/lease/ring.js";
import { SubnetSpace } from "../../src/control/lease/slots.js";
import { decodeMessage, encodeMessage, type LeaseMessage } from "../../src/control/lease/wire.js";
import type { NodeView } from "../../src/control/gossip/delegate.js";
import { Disk, GatedStore, loneClock, MemoryStore, RecordingLog } from "./sim/doubles.js";
import { SeededRandom } from "./sim/random.js";

const SPACE = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
const FP = SPACE.fingerprint;

const name = fc.string({ minLength: 1, maxLength: 12 });
const ringArb: fc.Arbitrary<RingState> = fc.record({
  seeds: fc.option(fc.uniqueArray(name, { minLength: 1, maxLength: 4 }), { nil: null }),
  runs: fc.array(
    fc.record({
      start: fc.nat({ max: 254 }),
      count: fc.integer({ min: 1, max: 255 }),
      owner: name,
      version: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      leased: fc.boolean(),
    }),
    { maxLength: 20 },
  ),
});
const messageArb: fc.Arbitrary<LeaseMessage> = fc.oneof(
  fc.record({ kind: fc.constant("state" as const), ring: ringArb }),
  fc.record({ kind: fc.constant("request" as const), id: fc.nat({ max: 0xffffffff }) }),
  fc.record({
    kind: fc.constant("reply" as const),
    id: fc.nat({ max: 0xffffffff }),
    granted: fc.boolean(),
    ring: ringArb,
  }),
  fc.record({ kind: fc.constant("reclaim" as const), node: name }),
);

describe("lease wire format", () => {
  it("round-trips every message kind", () => {
    fc.assert(
      fc.property(messageArb, (msg) => {
        expect(decodeMessage(FP, encodeMessage(FP, msg))).toEqual(msg);
      }),
    );
  });

  it("turns any garbage into LEASE_BAD_MESSAGE (or LEASE_RING_MISMATCH), never another exception", () => {
    const mutated = fc.tuple(messageArb, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([m, at, byte]) => {
      const bytes = encodeMessage(FP, m);
      bytes[at % bytes.length] = byte;
      return bytes;
    });
    const structured = fc.anything({ maxDepth: 3 }).map((v) => encode([1, FP, ...(Array.isArray(v) ? v : [v])]));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), mutated, structured), (bytes) => {
        try {
          decodeMessage(FP, bytes);
        } catch (err) {
          expect(["LEASE_BAD_MESSAGE", "LEASE_RING_MISMATCH"]).toContain((err as { code?: string }).code);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses a message of another network config", () => {
    const other = SubnetSpace.fromConfig({ Network: "198.20.0.0/16" }).fingerprint;
    expect(() => decodeMessage(FP, encodeMessage(other, { kind: "request", id: 1 }))).toThrow(
      expect.objectContaining({ code: "LEASE_RING_MISMATCH" }),
    );
  });
});

describe("LeaseDelegate", () => {
  async function setup(members: NodeView[] = []) {
    const log = new RecordingLog();
    const membership = {
      localNode: () => ({ name: "a" }),
      members: () => members,
      request: () => Promise.resolve(undefined),
      updateNode: () => undefined,
      allMembers: () => [],
    };
    const { scheduler, clock } = loneClock();
    // Built as the agent builds it: the lease ring and its gossip adapter, production defaults.
    const {
      families: [leases],
      delegate,
    } = createLeaseLayer(
      { space: SPACE, seeds: ["a"] },
      { membership, store: new MemoryStore(), clock, random: new SeededRandom(3), log },
    );
    await leases.start();
    leases.admit(); // as its control plane does once it reached its cluster
    await scheduler.runFor(60_000); // past the bootstrap quiet period: the seed division is in place
    while (delegate.queued > 0) delegate.getBroadcasts(0, 1 << 20); // this node's own lease news
    return { leases, delegate, log };
  }

  it("drops and counts garbage without changing anything", async () => {
    const { leases, delegate } = await setup();
    const before = JSON.stringify(leases.ringState());
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        delegate.notifyMsg("x", bytes);
        delegate.mergeRemoteState(bytes);
      }),
      { numRuns: 300 },
    );
    await leases.settled();
    expect(delegate.droppedMessages).toBe(600);
    expect(JSON.stringify(leases.ringState())).toBe(before);
  });

  it("refuses a push-pull payload that is not a ring state", async () => {
    const { delegate } = await setup();
    delegate.mergeRemoteState(encodeMessage(FP, { kind: "request", id: 3 }));
    expect(delegate.droppedMessages).toBe(1);
  });

  it("refuses an inconsistent push-pull state, counts it and leaves the ring alone", async () => {
    const { leases, delegate, log } = await setup();
    const forged: RingState = {
      seeds: ["a"],
      runs: [{ start: 0, count: 255, owner: "mallory", version: 1, leased: false }],
    };
    delegate.mergeRemoteState(encodeMessage(FP, { kind: "state", ring: forged }));
    await leases.settled();
    expect(leases.stats.refusedStates).toBe(1);
    expect(log.codes()).toContain("LEASE_INCONSISTENT");
    expect(leases.ringState().runs.every((r) => r.owner === "a")).toBe(true);
  });

  it("answers a ring state whose runs lie past the last slot with its view of the slots it has, at once", async () => {
    // A keyed peer, buggy or hostile: the merge refuses the run, and the answer (this node's view
    // of the slots the message names) once walked past the last slot without end and ran out of memory.
    const { leases, delegate, log } = await setup();
    const before = JSON.stringify(leases.ringState());
    const lying: RingState = { seeds: ["a"], runs: [{ start: 250, count: 10, owner: "x", version: 9, leased: false }] };
    const answer = await delegate.answerMsg("x", encodeMessage(FP, { kind: "state", ring: lying }));
    expect(log.codes()).toContain("LEASE_BAD_STATE");
    expect(JSON.stringify(leases.ringState())).toBe(before);
    const reply = decodeMessage(FP, answer!);
    expect(reply.kind === "state" && reply.ring.runs).toEqual([
      { start: 250, count: 5, owner: "a", version: expect.any(Number), leased: false },
    ]);
  });

  it("piggybacks each broadcast about RetransmitMult x log10(N+1) times, newest first, within the size limit", async () => {
    const members = Array.from(
      { length: 9 },
      (_, i): NodeView => ({
        name: `m${i}`,
        host: "h",
        port: 1,
        incarnation: 0,
        state: "alive",
        meta: new Uint8Array(),
      }),
    );
    const { leases, delegate } = await setup(members);
    const delta = (slot: number): LeaseMessage => ({
      kind: "state",
      ring: { seeds: ["a"], runs: [{ start: slot, count: 1, owner: "b", version: 5, leased: false }] },
    });
    leases.emit("announce", delta(1));
    leases.emit("announce", delta(2));
    const newest = encodeMessage(FP, delta(2));
    expect(delegate.getBroadcasts(10, newest.length + 10)).toEqual([newest]);
    let sends = 1;
    while (delegate.queued > 0) sends += delegate.getBroadcasts(10, 1400).length;
    // 4 x ceil(log10(10)) = 4 transmissions each.
    expect(sends).toBe(8);
  });

  it("splits a big ring change into broadcasts that fit a gossip packet", async () => {
    const { leases, delegate } = await setup();
    const runs = Array.from({ length: 200 }, (_, i) => ({
      start: i,
      count: 1,
      owner: `node-with-a-long-name-${i}`,
      version: 7,
      leased: false,
    }));
    leases.emit("announce", { kind: "state", ring: { seeds: ["a"], runs } });
    const parts = delegate.getBroadcasts(0, 1 << 20);
    expect(parts.length).toBeGreaterThan(5);
    const got = parts.flatMap((p) => {
      expect(p.length).toBeLessThanOrEqual(512);
      const m = decodeMessage(FP, p);
      return m.kind === "state" ? m.ring.runs : [];
    });
    expect(got.sort((x, y) => x.start - y.start)).toEqual(runs);
  });

  it("encodes the lease part of the node record, one subnet per family", () => {
    expect(decodeLeaseMeta(encodeLeaseMeta(null))).toEqual({ subnet: null, subnets: [null] });
    expect(decodeLeaseMeta(encodeLeaseMeta("198.19.1.0/24", "2001:2:0:8001::/64"))).toEqual({
      subnet: "198.19.1.0/24",
      subnets: ["198.19.1.0/24", "2001:2:0:8001::/64"],
    });
    expect(decodeLeaseMeta(new Uint8Array([1, 2, 3]))).toBeUndefined();
  });
});

describe("asking for slots before the owner reached its cluster", () => {
  const alive = (name: string): NodeView => ({
    name,
    host: "sim",
    port: 0,
    incarnation: 0,
    state: "alive",
    meta: new Uint8Array(0),
  });

  /** `self` with the seed division of ["a"] in place; `answer` is how a's side of a request goes. */
  async function node(
    self: string,
    answer: (to: string, bytes: Uint8Array) => Promise<Uint8Array | undefined>,
    admitted: boolean,
    store = new MemoryStore(),
  ) {
    const log = new RecordingLog();
    const membership = {
      localNode: () => ({ name: self }),
      members: () => (self === "a" ? [] : [alive("a")]),
      request: answer,
      updateNode: () => undefined,
      allMembers: () => [],
    };
    const { scheduler, clock } = loneClock();
    const {
      families: [leases],
    } = createLeaseLayer(
      { space: SPACE, seeds: ["a"] },
      { membership, store, clock, random: new SeededRandom(5), log },
    );
    await leases.start();
    if (admitted) leases.admit();
    await scheduler.runFor(60_000);
    return { leases, log };
  }

  // The asker is alive whatever the answer: a reclaimer (here or in the other family's ring) that
  // holds it gone must hear it, or it may reclaim a node that just asked.
  it("an owner not yet admitted answers with a plain ack and still takes the ask as the asker's sign of life", async () => {
    const { leases } = await node("a", () => Promise.resolve(undefined), false);
    const signs: Array<[string, boolean]> = [];
    leases.on("signOfLife", (who, _sign, direct) => signs.push([who, direct]));
    expect(await leases.answer("c", { kind: "request", id: 7 })).toBeUndefined();
    expect(signs).toEqual([["c", true]]);
  });

  // Its name lost after joining: a request already queued when revoke() came gets nothing either.
  it("an owner whose admission is revoked gives nothing, also to a request queued before", async () => {
    const { leases } = await node("a", () => Promise.resolve(undefined), true);
    const queued = leases.answer("c", { kind: "request", id: 8 });
    leases.revoke();
    expect(await queued).toBeUndefined();
    leases.admit(); // for good: a later admit() does not undo it
    expect(await leases.answer("d", { kind: "request", id: 9 })).toBeUndefined();
    expect(leases.stats.slotsGiven).toBe(0);
  });

  // Revoked while the transfer's save was at the disk (one fsync): before, the change was still
  // gossiped and the asker given the slots, under a name that is another node's.
  it("an owner whose admission is revoked while it saves a transfer neither announces, gives nor shows it", async () => {
    const store = new GatedStore();
    const { leases, log } = await node("a", () => Promise.resolve(undefined), true, store);
    const announced: LeaseMessage[] = [];
    leases.on("announce", (m) => announced.push(m));
    const open = store.close();
    const queued = leases.answer("c", { kind: "request", id: 10 });
    for (let i = 0; i < 100 && store.waiting.length === 0; i++) await Promise.resolve();
    expect(store.waiting).toHaveLength(1);
    const before = leases.ringState();
    leases.revoke();
    open();
    expect(await queued).toBeUndefined();
    expect(announced).toEqual([]);
    expect(leases.stats.slotsGiven).toBe(0);
    expect(log.codes()).not.toContain("LEASE_GAVE");
    // Nor in push-pull or an answer to a state, in the few awaits before its stop.
    expect(leases.ringState()).toEqual(before);
    expect(await leases.answer("b", { kind: "state", ring: before })).toEqual({ kind: "state", ring: before });
  });

  it("refuses a reclaim with its own code, saying to run it on a node that has joined", async () => {
    const { leases } = await node("a", () => Promise.resolve(undefined), false);
    await expect(leases.reclaim("z")).rejects.toMatchObject({
      code: "LEASE_NOT_ADMITTED",
      message: expect.stringMatching(/run reclaim on a node that has/),
    });
  });

  it("the asker's wait says the owner answered it gives none yet, not that it is partitioned", async () => {
    const acked = await node("c", () => Promise.resolve(undefined), true);
    const waits = acked.log.lines.filter((l) => l.obj.code === "LEASE_WAITING_FOR_OWNER");
    expect(waits.length).toBeGreaterThan(0);
    expect(waits[0].msg).toMatch(/a answered that it gives none yet \(not joined its cluster yet, or starting\)/);
    expect(waits[0].msg).not.toMatch(/partitioned/);

    const silent = await node("c", () => Promise.reject(new Error("timed out")), true);
    const silentWaits = silent.log.lines.filter((l) => l.obj.code === "LEASE_WAITING_FOR_OWNER");
    expect(silentWaits[0].msg).toMatch(/a did not answer \(partitioned or down\)/);
  });

  // A donor whose save failed (a full disk) is admitted and running: before, it answered as one
  // not admitted yet does, and the asker's wait said it had not joined its cluster yet.
  it("a donor whose save failed answers that it gave none, and the asker's wait says so", async () => {
    const disk = new Disk();
    const donor = await node("a", () => Promise.resolve(undefined), true, disk);
    disk.fault = "full";
    expect(await donor.leases.answer("c", { kind: "request", id: 11 })).toMatchObject({
      kind: "reply",
      id: 11,
      granted: false,
    });
    expect(donor.leases.stats.slotsGiven).toBe(0);

    const declined = await node(
      "c",
      (_to, bytes) => {
        const req = decodeMessage(FP, bytes);
        if (req.kind !== "request") return Promise.resolve(undefined);
        return Promise.resolve(
          encodeMessage(FP, { kind: "reply", id: req.id, granted: false, ring: { seeds: ["a"], runs: [] } }),
        );
      },
      true,
    );
    const waits = declined.log.lines.filter((l) => l.obj.code === "LEASE_WAITING_FOR_OWNER");
    expect(waits.length).toBeGreaterThan(0);
    // Only a failed save is in the owner's log: the wait names the other reasons, which it does not log.
    expect(waits[0].msg).toMatch(
      /a answered that it gave none \(it could not save the transfer, e\.g\. a full disk, which its log says; or, logging nothing, it keeps its last free slot while it has no subnet, has no free slot left in its view, or its view gives this node slots already\)/,
    );
    expect(waits[0].msg).not.toMatch(/gives none yet|did not answer/);
  });
});
