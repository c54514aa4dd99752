// The members' addresses a node keeps in its state dir for its next start (saved-members.ts), and
// a join round stopped while it resolves its targets (join.ts).
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { NodeView } from "../../src/control/gossip/delegate.js";
import { HELD_WARN_EVERY_MS, JOIN_DEFAULTS, Joiner, QUIET_AFTER_ROUNDS } from "../../src/control/join.js";
import { WeftError } from "../../src/errors.js";
import type { Addr } from "../../src/control/runtime.js";
import {
  FileMemberStore,
  MEMBERS_FILE,
  MEMBERS_KEPT,
  MEMBERS_SAVE_INTERVAL_MS,
  membersToKeep,
  SavedMembers,
} from "../../src/control/saved-members.js";
import { SeededRandom } from "./sim/random.js";
import { loneClock } from "./sim/doubles.js";

const member = (i: number, state: NodeView["state"] = "alive"): NodeView => ({
  name: `n${i}`,
  host: `198.18.0.${i}`,
  port: 7946,
  incarnation: 1,
  state,
  meta: new Uint8Array(0),
});

describe("saved members", () => {
  it("drops a dead member's address while another member is live (it would hold every restart's round), and keeps dead ones when none is", () => {
    const random = new SeededRandom(2);
    const [dead, live, dead2] = [member(2, "dead"), member(3), member(4, "dead")];
    const addr = ({ host, port }: NodeView) => ({ host, port });
    expect(membersToKeep([addr(dead), addr(live)], [member(1), dead, live], "n1", random)).toEqual([addr(live)]);
    expect(membersToKeep([], [member(1), dead, live], "n1", random)).toEqual([addr(live)]);
    // Every peer crashed while this node ran: they are all it has to try at its next start.
    expect(membersToKeep([addr(dead)], [member(1), dead, dead2], "n1", random)).toEqual([addr(dead), addr(dead2)]);
  });

  it("keeps at most MEMBERS_KEPT addresses, not this node's nor those that left, and the ones saved before while they are members", () => {
    const random = new SeededRandom(1);
    const members = [...Array.from({ length: 40 }, (_, i) => member(i + 1)), member(50, "left"), member(51, "dead")];
    const first = membersToKeep([], members, "n1", random)!;
    expect(first).toHaveLength(MEMBERS_KEPT);
    expect(first.map((a) => a.host)).not.toContain("198.18.0.1");
    expect(first.map((a) => a.host)).not.toContain("198.18.0.50");
    // Nothing changed: nothing to write.
    expect(membersToKeep(first, members, "n1", random)).toBeUndefined();
    // One of them left: it is replaced, the others stay.
    const gone = first[0].host;
    const next = membersToKeep(
      first,
      members.map((m) => (m.host === gone ? { ...m, state: "left" as const } : m)),
      "n1",
      random,
    )!;
    expect(next).toHaveLength(MEMBERS_KEPT);
    expect(next.map((a) => a.host)).not.toContain(gone);
    expect(next.slice(0, MEMBERS_KEPT - 1)).toEqual(first.slice(1));
    // Knowing nobody (stopped before a first round merged anything, or alone for a while): the
    // saved ones stay, nothing is written.
    expect(membersToKeep(next, [member(1)], "n1", random)).toBeUndefined();
    // Only what contradicts a saved address drops it: its member left, or it is this node's.
    const [left, mine, ...rest] = next;
    const contradicted = membersToKeep(
      next,
      [
        { ...member(1), ...mine },
        { ...member(99, "left"), ...left },
      ],
      "n1",
      random,
    )!;
    expect(contradicted).toEqual(rest);
    // An address a member left from but a new one holds stays; knowing a member, the saved
    // addresses no record holds go (a node replaced, or a tombstone reaped, 16 members or not).
    const reused = [
      { ...member(99, "left"), ...left },
      { ...member(98), ...left },
    ];
    expect(membersToKeep(next, [member(1), ...reused], "n1", random)).toEqual([left]);
    const stranger = member(200);
    expect(membersToKeep(next, [member(1), stranger], "n1", random)).toEqual([
      { host: stranger.host, port: stranger.port },
    ]);
    // Every saved member left (the last one, gracefully): the file is emptied, not kept for ever.
    expect(membersToKeep([left], [member(1), { ...member(99, "left"), ...left }], "n1", random)).toEqual([]);
    // Nothing saved, nobody known: nothing to write.
    expect(membersToKeep([], [member(1)], "n1", random)).toBeUndefined();
  });

  it("a save that keeps failing (a full disk) is logged once until one succeeds", async () => {
    const { scheduler, clock } = loneClock();
    let full = true;
    let saved: readonly Addr[] = [];
    const failures: object[] = [];
    let n = 2;
    const sm = new SavedMembers({
      store: {
        load: async () => [],
        save: async (addrs) => {
          if (full) throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
          saved = addrs;
        },
      },
      clock,
      random: new SeededRandom(2),
      // A new member every call: there is always something to save.
      members: () => [member(1), ...Array.from({ length: n++ - 1 }, (_, i) => member(i + 2))],
      self: "n1",
      log: { warn: (o: object) => void failures.push(o) },
    });
    await sm.load();
    sm.start();
    await scheduler.runFor(5 * MEMBERS_SAVE_INTERVAL_MS);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ code: "GOSSIP_SAVED_MEMBERS_FAILED" });
    full = false;
    await scheduler.runFor(MEMBERS_SAVE_INTERVAL_MS);
    expect(saved.length).toBeGreaterThan(0);
    full = true;
    await scheduler.runFor(3 * MEMBERS_SAVE_INTERVAL_MS);
    expect(failures).toHaveLength(2);
    await sm.stop();
  });

  it("the file: written whole, read back, and a damaged one refused with its code", async () => {
    const dir = await mkdtemp(join(tmpdir(), "weft-members-"));
    try {
      const store = new FileMemberStore(dir);
      expect(await store.load()).toEqual([]);
      const addrs = [
        { host: "198.18.0.2", port: 7946 },
        { host: "2001:2::3", port: 7000 },
      ];
      await store.save(addrs);
      expect(await store.load()).toEqual(addrs);
      expect(JSON.parse(await readFile(join(dir, MEMBERS_FILE), "utf8"))).toEqual({ members: addrs });
      // Like the other state files: the cluster's addresses are nobody else's business.
      expect((await stat(join(dir, MEMBERS_FILE))).mode & 0o777).toBe(0o600);
      await writeFile(join(dir, MEMBERS_FILE), '{"members":[{"host":"198.18.0.2"}]}');
      await expect(store.load()).rejects.toMatchObject({ code: "GOSSIP_MEMBERS_FILE_INVALID" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Joiner", () => {
  it("stopped while a round resolves its targets: the round ends there, joining nobody and retrying nothing", async () => {
    const { scheduler, clock } = loneClock();
    let answer: (addrs: string[]) => void = () => {};
    const joins: number[] = [];
    const warnings: string[] = [];
    const joiner = new Joiner([{ host: "seeds.test", port: 7946 }], {
      clock,
      random: new SeededRandom(3),
      resolve: () => new Promise((r) => (answer = r)),
      join: async (addrs) => (joins.push(addrs.length), 0),
      othersAlive: () => 0,
      nameHeld: () => false,
      self: { host: "198.18.0.1", port: 7946 },
      log: {
        debug: () => {},
        info: () => {},
        warn: (o: object) => void warnings.push(JSON.stringify(o)),
        error: () => {},
      },
      nameTaken: () => {},
      reached: () => {},
    });
    joiner.start();
    joiner.stop();
    answer(["198.18.0.2"]);
    await scheduler.runFor(120_000);
    expect(joins).toEqual([]);
    expect(warnings).toEqual([]);
    expect(joiner.status().failedRounds).toBe(0);
  });

  // The first address gets the full push-pull (memberlist.join): a join list's target, as before
  // members were saved, however long its name takes to resolve.
  it("a round asks the join list before the saved members, whichever resolves first", async () => {
    const { scheduler, clock } = loneClock();
    const rounds: string[][] = [];
    const joiner = new Joiner([{ host: "seeds.test", port: 7946 }], {
      clock,
      random: new SeededRandom(4),
      resolve: (host) =>
        host === "seeds.test"
          ? new Promise((r) => clock.setTimer(100, () => r(["198.18.0.2"])))
          : Promise.resolve([host]),
      join: async (addrs) => (rounds.push(addrs.map((a) => a.host)), 1),
      saved: () => [{ host: "198.18.0.3", port: 7946 }],
      othersAlive: () => 1,
      nameHeld: () => false,
      self: { host: "198.18.0.1", port: 7946 },
      log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      nameTaken: () => {},
      reached: () => {},
    });
    joiner.start();
    await scheduler.runFor(1_000);
    expect(rounds).toEqual([["198.18.0.2", "198.18.0.3"]]);
    joiner.stop();
  });
});

describe("Joiner waiting out a backoff", () => {
  const settle = () => new Promise((r) => setImmediate(r));

  // Its join list silent, a node others joined stayed unreached (its lease layer unadmitted) until
  // its next round: up to retryMaxMs (30 s) and the silent targets' timeout away.
  it("a member that reached it starts a round at once, which settles it joined", async () => {
    const { scheduler, clock } = loneClock();
    let others = 0;
    let rounds = 0;
    let reached = 0;
    const joiner = new Joiner(
      [{ host: "198.18.0.9", port: 7946 }],
      {
        clock,
        random: new SeededRandom(5),
        resolve: async (host) => [host],
        // The target is silent: each round ends after its timeout with nobody answering.
        join: (addrs) => new Promise((r) => clock.setTimer(5_000, () => (rounds++, r(addrs.length - 1)))),
        othersAlive: () => others,
        nameHeld: () => false,
        self: { host: "198.18.0.1", port: 7946 },
        log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
        nameTaken: () => {},
        reached: () => void reached++,
      },
      { retryMinMs: 30_000, retryMaxMs: 30_000, jitter: 0 },
    );
    joiner.start();
    joiner.memberJoined(); // nobody yet, and a round runs: nothing more
    await settle(); // the round resolves its target before it sets the target's timeout
    await scheduler.runFor(6_000);
    expect(rounds).toBe(1);
    expect(joiner.status().state).toBe("joining");
    const nextRound = joiner.status().nextAttemptAt!;
    others = 1;
    joiner.memberJoined();
    await settle();
    await scheduler.runFor(6_000);
    expect(clock.now()).toBeLessThan(nextRound);
    expect(rounds).toBe(2);
    expect(joiner.status().state).toBe("joined");
    expect(reached).toBe(1);
    joiner.stop();
  });
  // With a join list, a seed that resolves but never answers: the dropped saved member was asked
  // only with nobody else to ask, so the node asked the dead seed alone and stayed held for good.
  it.each([
    { list: [] as Addr[], what: "no join list" },
    { list: [{ host: "198.18.0.99", port: 7946 }], what: "a dead seed in the join list" },
  ])(
    "a held name is not left for standing alone when a member met meanwhile empties the saved list, and clears once its old record dies ($what)",
    async ({ list }) => {
      const { scheduler, clock } = loneClock();
      // The first node of its cluster (no join list) restarted on a new address: its saved member
      // reports its old record; then a new node joins it, and the saved member, held by no member
      // known here, is dropped (stillSaved) — a round with nobody to ask must not admit it.
      let saved: Addr[] = [{ host: "198.18.0.2", port: 7946 }];
      let others = 0;
      let held = false;
      let recordDead = false;
      let reached = 0;
      const asked: string[][] = [];
      const joiner = new Joiner(list, {
        clock,
        random: new SeededRandom(6),
        resolve: async (host) => [host],
        // The saved member reports the old record until the members declare it dead; then its
        // full state comes without it (Memberlist.join clears the hold). The dead seed never answers.
        join: async (addrs) => {
          asked.push(addrs.map((a) => a.host));
          if (!addrs.some((a) => a.host === "198.18.0.2")) return 0;
          held = !recordDead;
          if (held) throw new WeftError("GOSSIP_NAME_HELD", "held");
          return addrs.length;
        },
        saved: () => saved,
        othersAlive: () => others,
        nameHeld: () => held,
        self: { host: "198.18.0.1", port: 7946 },
        log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
        nameTaken: () => {},
        reached: () => void reached++,
      });
      joiner.start();
      await settle();
      await scheduler.runFor(100);
      expect(joiner.status().state).toBe("joining");
      others = 1;
      saved = [];
      const emptied = asked.length;
      joiner.memberJoined();
      await settle();
      // Stepped, so that each round's awaits settle before the next timer.
      expect(await scheduler.runUntilTrue(() => joiner.status().state !== "joining", 5_000, 50)).toBe(false);
      expect(reached).toBe(0);
      // It still asks the saved member dropped meanwhile: before, nobody, and it stayed held until restarted.
      expect(asked.slice(emptied).some((a) => a.includes("198.18.0.2"))).toBe(true);
      recordDead = true;
      expect(await scheduler.runUntilTrue(() => joiner.status().state === "joined", 5_000, 50)).toBe(true);
      expect(reached).toBe(1);
      joiner.stop();
    },
  );

  /** A joiner whose join rounds `join` runs, logging into `lines`, on a lone clock. */
  const heldJoiner = (
    targets: Addr[],
    deps: { join: (addrs: Addr[]) => Promise<number>; saved?: () => readonly Addr[]; held: () => boolean },
    others: () => number = () => 0,
  ) => {
    const { scheduler, clock } = loneClock();
    const lines: Array<{ level: string; code?: string; retryInMs?: number; msg: string; at: number }> = [];
    const log = (level: string) => (obj: object, msg: string) => lines.push({ level, ...obj, msg, at: clock.now() });
    const joiner = new Joiner(targets, {
      clock,
      random: new SeededRandom(7),
      resolve: async (host) => [host],
      join: deps.join,
      ...(deps.saved && { saved: deps.saved }),
      othersAlive: others,
      nameHeld: deps.held,
      self: { host: "198.18.0.1", port: 7946 },
      log: { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") },
      nameTaken: () => {},
      reached: () => {},
    });
    return { scheduler, clock, lines, joiner };
  };
  const addr = (i: number): Addr => ({ host: `198.18.0.${i}`, port: 7946 });

  it("a held node with only saved members keeps warning, also after more reported ones than are logged at warn alone, but not with every round: a bounded count over 10 minutes held", async () => {
    let reports = 0;
    const { scheduler, lines, joiner } = heldJoiner([], {
      // The saved member reports the old record a few times, then times out round after round.
      join: async () => {
        if (reports++ <= QUIET_AFTER_ROUNDS) throw new WeftError("GOSSIP_NAME_HELD", "held at 198.18.0.9:7946");
        return 0;
      },
      saved: () => [addr(2)],
      held: () => reports > 0,
    });
    joiner.start();
    await settle();
    const silent = () => lines.filter((l) => l.msg.includes("still held"));
    // The whole old cluster gone: held until restarted, a round every 5 s. Before, each at warn
    // (about 130 lines in these 10 minutes).
    expect(await scheduler.runUntilTrue(() => false, 600_000, 100)).toBe(false);
    expect(silent().length).toBeGreaterThan(100);
    expect(silent().every((l) => l.code === "GOSSIP_JOIN_NAME_HELD")).toBe(true);
    const warned = lines.filter((l) => l.level === "warn");
    expect(warned.length).toBeLessThanOrEqual(600_000 / HELD_WARN_EVERY_MS + 1);
    // Yet it keeps warning: before 0b064d5, at debug past QUIET_AFTER_ROUNDS failed rounds, as
    // if it ran alone meanwhile.
    expect(warned.filter((l) => l.msg.includes("still held")).length).toBeGreaterThan(10);
    for (const [i, l] of warned.entries())
      if (i > 0) expect(l.at - warned[i - 1].at).toBeLessThanOrEqual(HELD_WARN_EVERY_MS + JOIN_DEFAULTS.heldRetryMaxMs);
    expect(lines.some((l) => l.msg.includes("logged at debug"))).toBe(false);
    // The time since the first report, not the report's bound, minutes later.
    const first = lines.find((l) => l.code === "GOSSIP_JOIN_NAME_HELD")!.at;
    const last = silent().at(-1)!;
    expect(last.msg).toContain(`still held (first reported ${Math.round((last.at - first) / 1000)} s ago): held at`);
    expect(joiner.status().state).toBe("joining");
    joiner.stop();
  });

  it("a hold that clears without joining counts the rounds afresh: a node alone warns of its first failed rounds, then says the rest are at debug", async () => {
    let calls = 0;
    let held = false;
    const { scheduler, lines, joiner } = heldJoiner([], {
      // The saved member reports the old record for more rounds than are logged at warn alone,
      // then shows it gone and is gone itself: the node runs alone, retrying it.
      join: async () => {
        held = ++calls <= QUIET_AFTER_ROUNDS + 2;
        if (held) throw new WeftError("GOSSIP_NAME_HELD", "held");
        return 0;
      },
      saved: () => [addr(2)],
      held: () => held,
    });
    joiner.start();
    await settle();
    expect(await scheduler.runUntilTrue(() => joiner.status().state === "standalone", 60_000, 100)).toBe(true);
    expect(await scheduler.runUntilTrue(() => false, 120_000, 100)).toBe(false);
    // Before: the held rounds counted, so every line alone came at debug.
    const retries = lines.filter((l) => l.code === "GOSSIP_JOIN_RETRY");
    expect(retries.filter((l) => l.level === "warn").length).toBe(QUIET_AFTER_ROUNDS);
    expect(retries[QUIET_AFTER_ROUNDS - 1].msg).toContain("further retries are logged at debug");
    joiner.stop();
  });

  it("a held node asks the saved members it kept only when nobody else is left, and keeps at most MEMBERS_KEPT", async () => {
    // A dead saved member, dropped by stillSaved once a member was met, would hold every round
    // for tcpTimeoutMs: it is not asked while the live one is still saved.
    let saved: Addr[] = [addr(2), addr(3)];
    let held = false;
    const asked: string[][] = [];
    const { scheduler, joiner } = heldJoiner([], {
      join: async (addrs) => {
        asked.push(addrs.map((a) => a.host));
        held = true;
        throw new WeftError("GOSSIP_NAME_HELD", "held");
      },
      saved: () => saved,
      held: () => held,
    });
    joiner.start();
    await settle();
    saved = [addr(3)];
    await scheduler.runFor(1_500);
    expect(asked).toEqual([["198.18.0.2", "198.18.0.3"], ["198.18.0.3"]]);
    // Saved lists that change round after round (members met and gone), then none: the kept
    // ones are asked, the newest, up to MEMBERS_KEPT.
    for (let r = 0; r < 3; r++) {
      saved = Array.from({ length: MEMBERS_KEPT }, (_, i) => addr(10 + r * MEMBERS_KEPT + i));
      const n = asked.length;
      await scheduler.runUntilTrue(() => asked.length > n, 5_000, 50);
    }
    saved = [];
    const n = asked.length;
    expect(await scheduler.runUntilTrue(() => asked.length > n, 5_000, 50)).toBe(true);
    expect(asked.at(-1)).toEqual(Array.from({ length: MEMBERS_KEPT }, (_, i) => addr(10 + 2 * MEMBERS_KEPT + i).host));
    joiner.stop();
  });

  it("a held node whose targets were silent for minutes after a report joins soon after the record dies, not up to retryMaxMs later", async () => {
    let silentRounds = 0;
    let recordDead = false;
    let held = false;
    let diedAt = 0;
    const { scheduler, clock, lines, joiner } = heldJoiner(
      [addr(2)],
      {
        join: async () => {
          if (recordDead) {
            held = false;
            return 1;
          }
          held = true;
          if (silentRounds++ === 0) throw new WeftError("GOSSIP_NAME_HELD", "held");
          // Long silent: the members declare the old record dead right after this round.
          if (silentRounds > 20) {
            recordDead = true;
            diedAt = clock.now();
          }
          return 0;
        },
        held: () => held,
      },
      () => (held ? 0 : 1),
    );
    joiner.start();
    await settle();
    expect(await scheduler.runUntilTrue(() => joiner.status().state === "joined", 600_000, 100)).toBe(true);
    expect(clock.now() - diedAt).toBeLessThanOrEqual(JOIN_DEFAULTS.heldRetryMaxMs + 100);
    // Still far from once a second: the silent rounds back off up to the cap.
    const silent = lines.filter((l) => l.msg.includes("still held"));
    expect(silent.length).toBe(20);
    expect(Math.max(...silent.map((l) => l.retryInMs!))).toBeGreaterThan(JOIN_DEFAULTS.heldRetryMaxMs * 0.7);
    expect(silent.at(-1)!.at - silent[0].at).toBeGreaterThan(60_000);
    joiner.stop();
  });
});
