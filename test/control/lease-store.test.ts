import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SubnetLeases } from "../../src/control/lease/subnet-leases.js";
import { Ring } from "../../src/control/lease/ring.js";
import { Ipv6SubnetSpace, SubnetSpace, type LeaseSpace } from "../../src/control/lease/slots.js";
import {
  FileLeaseStore,
  STATE_FILE,
  STATE_FILE_IPV6,
  type PersistedLeaseState,
} from "../../src/control/lease/store.js";
import { loneClock, MemoryStore, RecordingLog } from "./sim/doubles.js";
import { SeededRandom } from "./sim/random.js";

type Lone = ReturnType<typeof loneClock>;

const SPACE = SubnetSpace.fromConfig({ Network: "198.19.0.0/16" });
const SPACE6 = Ipv6SubnetSpace.fromConfig({ IPv6Network: "2001:2::/32" });
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "weft-lease-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sample(): PersistedLeaseState {
  const ring = Ring.seeded(SPACE.slotCount, ["a", "b"]);
  ring.setLeased("a", 3, true);
  ring.transfer("a", { start: 10, count: 5 }, "c");
  return {
    node: "a",
    fingerprint: SPACE.fingerprint,
    network: SPACE.describe(),
    lease: SPACE.subnetOf(3),
    ring: ring.state(),
  };
}

describe("FileLeaseStore", () => {
  it("has nothing before the first save, and reads back what it saved", async () => {
    const store = new FileLeaseStore(join(dir, "state"));
    expect(await store.load()).toBeNull();
    await store.save(sample());
    expect(await new FileLeaseStore(join(dir, "state")).load()).toEqual(sample());
    expect(await readdir(join(dir, "state"))).toEqual([STATE_FILE]); // no temp file left behind
    expect((await stat(join(dir, "state", STATE_FILE))).mode & 0o777).toBe(0o600);
    const text = JSON.parse(await readFile(join(dir, "state", STATE_FILE), "utf8"));
    expect(text.lease).toBe("198.19.4.0/24"); // readable by a person
    expect(text.transfers).toBeUndefined(); // none: the file is as before transfers were saved
    expect(text.vacated).toBeUndefined(); // likewise for the vacated subnets
  });

  it("keeps the unacknowledged transfers with the ring", async () => {
    const store = new FileLeaseStore(dir);
    const state = { ...sample(), transfers: [{ to: "c", spans: [{ start: 10, count: 5 }] }] };
    await store.save(state);
    expect(await store.load()).toEqual(state);
  });

  it("keeps the vacated subnets with the ring; a file from before them loads as having none", async () => {
    const store = new FileLeaseStore(dir);
    const state = { ...sample(), vacated: [{ slot: 12, node: "c" }] };
    await store.save(state);
    expect(await store.load()).toEqual(state);
    expect(JSON.parse(await readFile(join(dir, STATE_FILE), "utf8")).vacated).toEqual([{ slot: 12, node: "c" }]);
    await store.save({ ...sample(), vacated: [] });
    expect(JSON.parse(await readFile(join(dir, STATE_FILE), "utf8")).vacated).toBeUndefined();
    // As an agent before them wrote it: same format number, no field.
    const { format, node, fingerprint, network, lease, ring } = JSON.parse(
      await readFile(join(dir, STATE_FILE), "utf8"),
    );
    await writeFile(join(dir, STATE_FILE), JSON.stringify({ format, node, fingerprint, network, lease, ring }));
    const old = await store.load();
    expect(old).toEqual(sample());
    expect(old?.vacated).toBeUndefined();
  });

  it("keeps the dead nodes' grace period starts with the ring", async () => {
    const store = new FileLeaseStore(dir);
    const state = {
      ...sample(),
      gone: [
        { node: "c", since: 1_750_000_000_000, incarnation: 3 },
        { node: "d", since: 1_750_000_000_001 },
      ],
    };
    await store.save(state);
    expect(await store.load()).toEqual(state);
    await store.save({ ...sample(), gone: [] });
    expect(JSON.parse(await readFile(join(dir, STATE_FILE), "utf8")).gone).toBeUndefined();
  });

  it("ignores a temp file left by a crash in the middle of a save", async () => {
    const store = new FileLeaseStore(dir);
    await store.save(sample());
    await writeFile(join(dir, `${STATE_FILE}.tmp`), '{"format":1,"no');
    expect(await store.load()).toEqual(sample());
  });

  it("refuses a damaged file with LEASE_STATE_CORRUPT instead of starting over", async () => {
    const store = new FileLeaseStore(dir);
    const file = join(dir, STATE_FILE);
    const good = {
      format: 1,
      node: "a",
      fingerprint: "f",
      network: "n",
      lease: null,
      ring: { seeds: ["a"], owners: ["a"], runs: [[0, 4, 0, 1, 0]] },
    };
    const broken: unknown[] = [
      "{ not json",
      "[]",
      { ...good, format: 2 },
      { ...good, node: "" },
      { ...good, lease: 7 },
      { ...good, ring: { ...good.ring, runs: [[0, 4, 1, 1, 0]] } },
      { ...good, ring: { ...good.ring, runs: [[0, 0, 0, 1, 0]] } },
      { ...good, ring: { ...good.ring, runs: [[0, 4, 0, 0, 0]] } },
      { ...good, ring: { ...good.ring, seeds: [] } },
    ];
    for (const b of broken) {
      await writeFile(file, typeof b === "string" ? b : JSON.stringify(b));
      await expect(store.load(), JSON.stringify(b)).rejects.toMatchObject({ code: "LEASE_STATE_CORRUPT" });
    }
    await writeFile(file, JSON.stringify(good));
    await expect(store.load()).resolves.toMatchObject({ node: "a" });
  });

  it("says to keep the ring where only a field people read is damaged, and to run the other version for another format", async () => {
    const store = new FileLeaseStore(dir);
    const file = join(dir, STATE_FILE);
    await store.save(sample());
    const good = JSON.parse(await readFile(file, "utf8"));
    const damaged: [Record<string, unknown>, string][] = [
      [{ network: 7 }, 'set "network" to ""'],
      [{ network: undefined }, 'set "network" to ""'],
      [{ lease: 7 }, 'set "lease" to null'],
      [{ format: 2 }, "another version of weft wrote it"],
    ];
    for (const [fields, advice] of damaged) {
      const text = JSON.stringify({ ...good, ...fields });
      await writeFile(file, text);
      const err = await store.load().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, text).toMatchObject({ code: "LEASE_STATE_CORRUPT", message: expect.stringContaining(advice) });
      expect((err as Error).message).not.toContain("move it away");
      expect(await readFile(file, "utf8")).toBe(text);
    }
    // As the error says (weft writes both again at its next save).
    await writeFile(file, JSON.stringify({ ...good, network: "", lease: null }));
    expect(await store.load()).toEqual({ ...sample(), network: "", lease: null });
  });

  /** Writes each of `damaged` ([the field's value, the entry the error names, why]) as `field` of
   *  a good file: the load is refused with `code`, naming the file and the entry and saying to keep
   *  the ring, and the file is left as it was. As the error says, with `mended` instead the ring and
   *  the good entries load (as `loaded`). */
  async function refusesDamaged(
    field: "transfers" | "vacated" | "gone",
    code: string,
    damaged: [unknown, string, string?][],
    mended: unknown,
    loaded: PersistedLeaseState,
  ): Promise<void> {
    const store = new FileLeaseStore(dir);
    const file = join(dir, STATE_FILE);
    await store.save(sample());
    const good = JSON.parse(await readFile(file, "utf8"));
    for (const [value, entry, why = ""] of damaged) {
      const text = JSON.stringify({ ...good, [field]: value });
      await writeFile(file, text);
      const err = await store.load().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, entry).toMatchObject({ code });
      const { message } = err as Error;
      expect(message).toContain(`${file}: ${entry}`);
      expect(message).toContain(why);
      expect(message).toContain("keep the rest of the file: its ring holds this node's subnets");
      expect(message).not.toContain("move it away");
      expect(await readFile(file, "utf8")).toBe(text); // refused, not mended behind the operator's back
    }
    await writeFile(file, JSON.stringify({ ...good, [field]: mended }));
    expect(await store.load()).toEqual(loaded);
  }

  it("refuses a damaged vacated mark with its own code, naming the entry and saying to keep the ring", async () => {
    const mark = { slot: 12, node: "c" };
    await refusesDamaged(
      "vacated",
      "LEASE_STATE_VACATED_CORRUPT",
      [
        [{}, '"vacated"'],
        ["c", '"vacated"'],
        [Array.from({ length: 100_001 }, () => mark), '"vacated"'],
        [[mark, null], "vacated[1] null"],
        [[mark, 12], "vacated[1] 12"],
        [[mark, [12, "c"]], 'vacated[1] [12,"c"]'],
        [[mark, { node: "c" }], 'vacated[1] {"node":"c"}'],
        [[mark, { slot: -1, node: "c" }], "vacated[1]"],
        [[mark, { slot: 1.5, node: "c" }], "vacated[1]"],
        [[mark, { slot: "12", node: "c" }], "vacated[1]"],
        [[mark, { slot: 12 }], "vacated[1]"],
        [[mark, { slot: 12, node: "" }], "vacated[1]"],
        [[mark, { slot: 12, node: 7 }], "vacated[1]"],
        [[mark, { slot: 12, node: "n".repeat(256) }], `vacated[1] {"slot":12,"node":"${"n".repeat(61)}...`],
      ],
      [mark],
      { ...sample(), vacated: [mark] },
    );
  });

  it("refuses a damaged gone entry with its own code, naming the entry and saying to keep the ring", async () => {
    const gone = { node: "c", since: 1_750_000_000_000 };
    await refusesDamaged(
      "gone",
      "LEASE_STATE_GONE_CORRUPT",
      [
        [{}, '"gone"', "not a list"],
        [[gone, null], "gone[1] null", "not { node, since }"],
        [[gone, { node: "c" }], 'gone[1] {"node":"c"}', "since is not a time"],
        [[gone, { node: "c", since: -1 }], "gone[1]", "since is not a time"],
        [[gone, { node: "c", since: 1, incarnation: "3" }], "gone[1]", "incarnation is not a number"],
        [[gone, { node: "", since: 1 }], "gone[1]", "node name"],
      ],
      [gone],
      { ...sample(), gone: [gone] },
    );
  });

  it("refuses a damaged transfer entry with its own code, naming the entry and saying to keep the ring", async () => {
    const spans = [[10, 5]];
    const gift = { to: "c", spans };
    const bad = (span: unknown): unknown[] => [gift, { to: "c", spans: [...spans, span] }];
    await refusesDamaged(
      "transfers",
      "LEASE_STATE_TRANSFERS_CORRUPT",
      [
        [{}, '"transfers"', "not a list"],
        ["c", '"transfers"', "not a list"],
        [[gift, { to: "c", spans: Array.from({ length: 100_000 }, () => [10, 5]) }], '"transfers"', "more than 100000"],
        [[gift, null], "transfers[1] null", "not { to, spans }"],
        [[gift, 12], "transfers[1] 12", "not { to, spans }"],
        [[gift, ["c", spans]], 'transfers[1] ["c",[[10,5]]]', "not { to, spans }"],
        [[gift, { to: "c" }], 'transfers[1] {"to":"c"}', "spans is not a list"],
        [[gift, { to: "c", spans: {} }], "transfers[1]", "spans is not a list"],
        [[gift, { spans }], "transfers[1]", "node name"],
        [[gift, { to: "", spans }], "transfers[1]", "node name"],
        [[gift, { to: 7, spans }], "transfers[1]", "node name"],
        [[gift, { to: "n".repeat(256), spans }], `transfers[1] {"to":"${"n".repeat(73)}...`, "node name"],
        [bad(null), "transfers[1]", "spans[1] null is not [first slot, slot count]"],
        [bad([0, 0]), "transfers[1]", "spans[1] [0,0] is not"],
        [bad([-1, 1]), "transfers[1]", "spans[1] [-1,1] is not"],
        [bad([0.5, 1]), "transfers[1]", "spans[1] [0.5,1] is not"],
        [bad(["10", 5]), "transfers[1]", 'spans[1] ["10",5] is not'],
        [bad([10]), "transfers[1]", "spans[1] [10] is not"],
        [bad([10, 5, 1]), "transfers[1]", "spans[1] [10,5,1] is not"],
        [bad({ start: 10, count: 5 }), "transfers[1]", 'spans[1] {"start":10,"count":5} is not'],
      ],
      [gift],
      { ...sample(), transfers: [{ to: "c", spans: [{ start: 10, count: 5 }] }] },
    );
  });

  it("reports a failed save with LEASE_PERSIST_FAILED", async () => {
    await writeFile(join(dir, "blocker"), "");
    await expect(new FileLeaseStore(join(dir, "blocker", "state")).save(sample())).rejects.toMatchObject({
      code: "LEASE_PERSIST_FAILED",
    });
  });
});

describe("SubnetLeases with a state dir", () => {
  const alone = {
    localNode: () => ({ name: "solo" }),
    members: () => [],
    request: () => Promise.reject(new Error("alone")),
    updateNode: () => undefined,
    allMembers: () => [],
  };

  function leases(
    stateDir: string,
    seeds: string[] | undefined,
    { clock }: Lone,
    log = new RecordingLog(),
    space: LeaseSpace = SPACE,
  ): SubnetLeases {
    const l = new SubnetLeases({
      space,
      seeds,
      membership: alone,
      store: new FileLeaseStore(stateDir, space.family),
      clock,
      random: new SeededRandom(1),
      log,
      bootstrapQuietMs: 1_000,
    });
    l.admit(); // alone, as a node with nothing to join: it has reached its cluster at once
    return l;
  }

  /** Advances virtual time while real file I/O completes. */
  async function until<T>({ scheduler }: Lone, p: Promise<T>): Promise<T> {
    let done = false;
    void p.then(
      () => (done = true),
      () => (done = true),
    );
    while (!done) {
      await scheduler.runFor(100);
      await new Promise((r) => setTimeout(r, 5));
    }
    return p;
  }

  it("a one-node cluster (seed list = itself) leases after the quiet period and keeps its subnet across restarts", async () => {
    const lone = loneClock();
    const first = leases(dir, ["solo"], lone);
    await first.start();
    const lease = await until(lone, first.lease());
    expect(lone.scheduler.elapsed()).toBeGreaterThanOrEqual(1_000);
    await first.stop();

    const log = new RecordingLog();
    const again = leases(dir, ["solo"], loneClock(), log);
    await again.start();
    expect(again.currentLease()).toEqual(lease); // at once: no quiet period, no peers needed
    expect(log.codes()).not.toContain("LEASE_BOOTSTRAP");
    await again.stop();
  });

  it("will not start from a damaged state file, and does not overwrite it", async () => {
    await writeFile(join(dir, STATE_FILE), "garbage");
    const l = leases(dir, ["solo"], loneClock());
    await expect(l.start()).rejects.toMatchObject({ code: "LEASE_STATE_CORRUPT" });
    expect(await readFile(join(dir, STATE_FILE), "utf8")).toBe("garbage");
    await expect(l.lease()).rejects.toMatchObject({ code: "LEASE_STOPPED" });
  });

  it.each<[string, "transfers" | "vacated", string, (slot: number) => unknown, (slot: number) => unknown]>([
    [
      "a damaged vacated mark; without the mark",
      "vacated",
      "LEASE_STATE_VACATED_CORRUPT",
      (slot) => [{ slot, node: 7 }],
      (slot) => [{ slot, node: "gone" }],
    ],
    [
      "a damaged transfer entry; with the entry mended",
      "transfers",
      "LEASE_STATE_TRANSFERS_CORRUPT",
      (slot) => [{ to: "gone", spans: [[slot, -1]] }],
      (slot) => [{ to: "gone", spans: [[slot, 1]] }],
    ],
  ])("will not start from a state file with %s it keeps its subnet", async (_, field, code, damage, mend) => {
    const lone = loneClock();
    const first = leases(dir, ["solo"], lone);
    await first.start();
    const lease = await until(lone, first.lease());
    await first.stop();
    const file = join(dir, STATE_FILE);
    const saved = JSON.parse(await readFile(file, "utf8"));
    const damaged = JSON.stringify({ ...saved, [field]: damage(lease.slot + 1) });
    await writeFile(file, damaged);
    const refused = leases(dir, ["solo"], loneClock());
    await expect(refused.start()).rejects.toMatchObject({ code });
    expect(await readFile(file, "utf8")).toBe(damaged);
    await writeFile(file, JSON.stringify({ ...saved, [field]: mend(lease.slot + 1) }));
    const again = leases(dir, ["solo"], loneClock());
    await again.start();
    expect(again.currentLease()).toEqual(lease);
    await again.stop();
  });

  it("will not start from another node's or network's state, or with a changed seed list", async () => {
    const store = new FileLeaseStore(dir);
    await store.save({ ...sample(), node: "someone-else" });
    await expect(leases(dir, ["solo"], loneClock()).start()).rejects.toMatchObject({
      code: "LEASE_STATE_MISMATCH",
    });
    await store.save({ ...sample(), node: "solo", fingerprint: "0000" });
    await expect(leases(dir, ["solo"], loneClock()).start()).rejects.toMatchObject({
      code: "LEASE_STATE_MISMATCH",
    });
    await store.save({ ...sample(), node: "solo" });
    await expect(leases(dir, ["solo"], loneClock()).start()).rejects.toMatchObject({
      code: "LEASE_STATE_MISMATCH",
      message: expect.stringContaining(join(dir, STATE_FILE)),
    });
  });

  it("will not start from a saved ring that does not fit the network, and says which file to mend", async () => {
    const last = SPACE.slotCount - 1;
    await new FileLeaseStore(dir).save({
      ...sample(),
      node: "solo",
      ring: { seeds: ["solo"], runs: [{ start: last, count: 2, owner: "solo", version: 1, leased: false }] },
    });
    await expect(leases(dir, ["solo"], loneClock()).start()).rejects.toMatchObject({
      code: "LEASE_STATE_CORRUPT",
      message: expect.stringMatching(
        new RegExp(
          `^${join(dir, STATE_FILE)} is damaged \\(refused the saved ring: run ${last}\\+2 is outside .* move it away`,
        ),
      ),
    });
  });

  // A merge before admission can show an old lease of this node beside the one in use (the cluster
  // remembers it from before this node's state was lost); only admission frees the extra one. A
  // restart in between must come back on the subnet in use: the pods kept across it use that one.
  it("restarted before admission with two of its leases in the ring, a node keeps the subnet in use and frees the other", async () => {
    const store = new MemoryStore();
    const own = Ring.seeded(SPACE.slotCount, ["solo"]);
    own.setLeased("solo", 50, true);
    store.saved = {
      node: "solo",
      fingerprint: SPACE.fingerprint,
      network: SPACE.describe(),
      lease: SPACE.subnetOf(50),
      ring: own.state(),
    };
    const old = Ring.seeded(SPACE.slotCount, ["solo"]);
    old.setLeased("solo", 10, true);
    const run = (admit: boolean) => {
      const l = new SubnetLeases({
        space: SPACE,
        seeds: ["solo"],
        membership: alone,
        store,
        clock: loneClock().clock,
        random: new SeededRandom(1),
        log: new RecordingLog(),
      });
      if (admit) l.admit();
      return l;
    };
    const first = run(false);
    await first.start();
    first.mergeRemote(old.state(), "push-pull");
    await first.settled();
    expect(first.currentLease()?.slot).toBe(50);
    // Before admission both stay leased in the saved ring; the saved lease names the one in use.
    const savedRing = Ring.unknown(SPACE.slotCount);
    savedRing.merge(store.saved!.ring);
    expect(savedRing.leasesOf("solo")).toEqual([10, 50]);
    expect(store.saved?.lease).toBe(SPACE.subnetOf(50));
    await first.stop();

    const again = run(false);
    await again.start();
    expect(again.currentLease()?.slot).toBe(50);
    again.admit();
    await again.settled();
    expect(again.currentLease()?.slot).toBe(50);
    expect(
      again
        .peers()
        .filter((p) => p.node === "solo")
        .map((p) => p.slot),
    ).toEqual([50]);
    expect(store.saved?.lease).toBe(SPACE.subnetOf(50));
    await again.stop();
  });

  it("dual-stack: one state file per family; restarted with its state dir, a node keeps both subnets", async () => {
    const lone = loneClock();
    const first = [leases(dir, ["solo"], lone), leases(dir, ["solo"], lone, new RecordingLog(), SPACE6)];
    for (const l of first) await l.start();
    const held = await until(lone, Promise.all(first.map((l) => l.lease())));
    expect(held[0].subnet).toMatch(/^198\.19\./);
    expect(held[1].subnet).toMatch(/^2001:2:[0-9a-f:]+\/64$/);
    for (const l of first) await l.stop();
    expect((await readdir(dir)).sort()).toEqual([STATE_FILE, STATE_FILE_IPV6].sort());
    // The IPv6 ring of 2^32 subnets is saved as ranges: a few hundred bytes.
    expect((await stat(join(dir, STATE_FILE_IPV6))).size).toBeLessThan(1000);

    const again = [leases(dir, ["solo"], loneClock()), leases(dir, ["solo"], loneClock(), new RecordingLog(), SPACE6)];
    for (const l of again) await l.start();
    expect(again.map((l) => l.currentLease())).toEqual(held);
    for (const l of again) await l.stop();
  });
});
