// Members' addresses kept in the state dir, as Serf's snapshot keeps them, and joined at the next
// start besides the --join list. A node started with an empty list (the first node, a lone
// control-plane seed) knows nobody from its flags when it restarts: after a graceful leave the
// others hold it as left and never send to it again, so it stayed alone until each of them
// restarted; kept on exit, it waited for one's push-pull to find it. Saved every minute when the
// set changed, and at stop: at most MEMBERS_KEPT addresses (one that answers is enough). A saved
// address is dropped when its member left, when it is this node's, or when this node knows another
// member and no record holds it (a replaced node, a reaped tombstone): a node that knows nobody
// else when it saves (stopped before its first round merged anything, or alone for a while) keeps
// the addresses nothing contradicts, as they are all it has to rejoin with.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { WeftError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import type { NodeView } from "./gossip/delegate.js";
import type { Addr, Clock, Random, TimerHandle } from "./runtime.js";

export const MEMBERS_FILE = "members.json";
export const MEMBERS_KEPT = 16;
export const MEMBERS_SAVE_INTERVAL_MS = 60_000;

/** Where the addresses are kept: FileMemberStore on a node, an in-memory one in the simulator. */
export interface MemberStore {
  /** The saved addresses ([] if none were saved); rejects with GOSSIP_MEMBERS_FILE_INVALID if damaged. */
  load(): Promise<Addr[]>;
  /** Replaces them atomically. Calls are not concurrent. */
  save(addrs: readonly Addr[]): Promise<void>;
}

export class FileMemberStore implements MemberStore {
  private readonly file: string;

  constructor(dir: string) {
    this.file = join(dir, MEMBERS_FILE);
  }

  async load(): Promise<Addr[]> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    let members: unknown;
    try {
      members = (JSON.parse(text) as { members?: unknown }).members;
    } catch {
      members = undefined;
    }
    const valid = (a: unknown): a is Addr =>
      typeof (a as Addr)?.host === "string" &&
      Number.isInteger((a as Addr).port) &&
      (a as Addr).port > 0 &&
      (a as Addr).port < 65536;
    if (!Array.isArray(members) || !members.every(valid))
      throw new WeftError(
        "GOSSIP_MEMBERS_FILE_INVALID",
        `${this.file} is damaged; it is rewritten at the first save once this node knows a member, or delete it (it only helps a restart rejoin)`,
      );
    return members.map(({ host, port }) => ({ host, port }));
  }

  async save(addrs: readonly Addr[]): Promise<void> {
    await writeFileAtomic(
      this.file,
      `${JSON.stringify({ members: addrs.map(({ host, port }) => ({ host, port })) })}\n`,
      { mode: 0o600, dirMode: 0o700 },
    );
  }
}

const key = (a: Addr) => `${a.host}:${a.port}`;

/**
 * The other members whose addresses are worth saving: those alive or suspected, or, where none
 * is, the dead ones too (every peer crashed while this node ran: they are all it has). A dead
 * member's address beside live ones would cost every restart's join round the push-pull timeout
 * (it counts only once every address answered or timed out) until the member is back or reaped.
 */
function holders(members: readonly NodeView[], self: string): NodeView[] {
  const others = members.filter((m) => m.name !== self && m.state !== "left");
  const reachable = others.filter((m) => m.state !== "dead");
  return reachable.length > 0 ? reachable : others;
}

/** The saved addresses nothing contradicts: not this node's, and not held only by members that left
 *  (an address reused by a new member stays). One no record holds may still be a member's while
 *  this node knows nobody else; once it knows another member, whose ring would hold it, it is out,
 *  as is a dead member's while another is live (holders). */
export function stillSaved(saved: readonly Addr[], members: readonly NodeView[], self: string): Addr[] {
  const live = new Set(holders(members, self).map(key));
  const gone = new Set(members.filter((m) => m.name === self || m.state === "left").map(key));
  const seen = new Set<string>();
  return saved.filter((a) => {
    const k = key(a);
    if (seen.has(k) || (live.size > 0 ? !live.has(k) : gone.has(k))) return false;
    seen.add(k);
    return true;
  });
}

/**
 * The addresses to keep, up to MEMBERS_KEPT: the saved ones held by a member worth saving
 * (holders: a live one, or a dead one where none is live), then other such members at random;
 * knowing none, the saved ones nothing contradicts. Undefined when that is the
 * set saved already; empty when every saved address was contradicted (its member left).
 */
export function membersToKeep(
  saved: readonly Addr[],
  members: readonly NodeView[],
  self: string,
  random: Random,
): Addr[] | undefined {
  const others = holders(members, self);
  const held = new Set(others.map(key));
  const valid = stillSaved(saved, members, self);
  const keep = valid.filter((a) => held.has(key(a)));
  const kept = new Set(keep.map(key));
  const shuffled = others
    .filter((m) => !kept.has(key(m)))
    .map((m) => ({ m, order: (m.state === "dead" ? 1 : 0) + random.next() }))
    .sort((x, y) => x.order - y.order)
    .map(({ m }) => ({ host: m.host, port: m.port }));
  // The saved ones no member holds: none once this node knows another member (stillSaved).
  keep.push(...shuffled, ...valid.filter((a) => !held.has(key(a))));
  keep.splice(MEMBERS_KEPT);
  const same = keep.length === saved.length && keep.every((a) => saved.some((s) => key(s) === key(a)));
  return same ? undefined : keep;
}

export interface SavedMembersDeps {
  readonly store: MemberStore;
  readonly clock: Clock;
  readonly random: Random;
  /** Every member this node knows, tombstones included. */
  readonly members: () => NodeView[];
  readonly self: string;
  readonly log: { warn(obj: object, msg: string): void };
}

/** Loads the saved addresses at start, then saves the members' every minute (if changed) and at stop. */
export class SavedMembers {
  private saved: readonly Addr[] = [];
  private timer?: TimerHandle;
  private saving: Promise<void> = Promise.resolve();
  /** The last save failed (logged once until one succeeds: a full disk would log every minute). */
  private saveFailing = false;

  constructor(private readonly deps: SavedMembersDeps) {}

  /** Reads the saved addresses; none if the file cannot be read (logged: the node runs without them). */
  async load(): Promise<void> {
    try {
      this.saved = await this.deps.store.load();
    } catch (err) {
      this.failed(err, "cannot read the saved members: this start joins its --join list alone");
    }
  }

  /** The saved addresses as they stand now (those contradicted since, out), for the joiner's rounds. */
  current(): Addr[] {
    return stillSaved(this.saved, this.deps.members(), this.deps.self);
  }

  start(): void {
    this.timer = this.deps.clock.setTimer(MEMBERS_SAVE_INTERVAL_MS, () => {
      void this.save();
      this.start();
    });
  }

  /** Stops saving, after one last save (before a leave, while the members are still known). */
  async stop(): Promise<void> {
    if (this.timer) this.deps.clock.cancel(this.timer);
    this.timer = undefined;
    await this.save();
  }

  private save(): Promise<void> {
    this.saving = this.saving.then(async () => {
      const keep = membersToKeep(this.saved, this.deps.members(), this.deps.self, this.deps.random);
      if (!keep) return;
      try {
        await this.deps.store.save(keep);
        this.saved = keep;
        this.saveFailing = false;
      } catch (err) {
        if (!this.saveFailing)
          this.failed(
            err,
            "cannot save the members' addresses (logged once until a save succeeds): a restart may have only its --join list to rejoin",
          );
        this.saveFailing = true;
      }
    });
    return this.saving;
  }

  private failed(err: unknown, msg: string): void {
    this.deps.log.warn({ code: "GOSSIP_SAVED_MEMBERS_FAILED", err }, msg);
  }
}
