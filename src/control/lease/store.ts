// Persistence of a node's ring view (which includes its own lease): one JSON file in the state
// dir, replaced atomically (write a temp file, fsync, rename over, fsync the dir), so a crash
// leaves either the old or the new state, never a torn one. The lease layer saves before it lets
// anyone hear of a change, which is what makes its ownership survive a restart. With the ring go
// the transfers this node made that their receivers have not acknowledged yet, so a restarted
// giver keeps resending them (transfer-resend.ts). And the slots this node reclaimed that were a
// reclaimed node's subnet, which it hands out last (reclaim.ts), so a restarted heir does too.
// And since when this node knows each dead node that still owns slots gone (reclaim.ts), so a
// restarted heir counts the grace period from then (saved again when the wall clock stepped). All are optional fields, left out when empty: an older agent ignores them (and drops them at
// its next save), and an older file loads as having none.
// A damaged entry of any refuses the start with its own code (LEASE_STATE_TRANSFERS_CORRUPT,
// LEASE_STATE_VACATED_CORRUPT, LEASE_STATE_GONE_CORRUPT) naming it, rather than being dropped with a warning: a vacated mark
// may be all that keeps a subnet still in use (its node reclaimed while alive) from the first
// asker; a transfer entry owns nothing (the ring has its slots as the receiver's), but it may be
// all that brings them to a receiver whose reply was lost (a giver restarted knowing no member:
// lease-transfer.test.ts), and only the operator can tell whether that receiver has them by now.
// The advice keeps the ring, this node's ownership, which LEASE_STATE_CORRUPT's (move the file
// away) would throw out: mend or delete the entry.
import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../../fs/atomic-write.js";
import { join } from "node:path";
import { type LeaseErrorCode, WeftError } from "../../errors.js";
import type { RingState, SlotSpan } from "./ring.js";
import type { Family } from "./slots.js";
import { fromPlainRing, nodeName, toPlainRing } from "./wire.js";

export interface PersistedLeaseState {
  readonly node: string;
  /** SubnetSpace.fingerprint of the network config the ring belongs to. */
  readonly fingerprint: string;
  /** SubnetSpace.describe(), for a person reading the file. */
  readonly network: string;
  /** This node's subnet (CIDR) or null, for a person reading the file; the ring is authoritative. */
  readonly lease: string | null;
  readonly ring: RingState;
  /** Transfers given by this node and not yet acknowledged by their receivers (absent: none). */
  readonly transfers?: readonly SavedTransfer[];
  /** Slots this node reclaimed that a reclaimed node may still use as its subnet (absent: none). */
  readonly vacated?: readonly VacatedSlot[];
  /** Dead nodes this node counts a grace period for, and since when (absent: none). */
  readonly gone?: readonly GoneNode[];
}

/** `node` was first known gone here at `since` (wall-clock ms), at membership's `incarnation` of it
 *  (absent when membership did not know it): a later incarnation's death is another death. */
export interface GoneNode {
  readonly node: string;
  readonly since: number;
  readonly incarnation?: number;
}

/** A reclaimed subnet the heir hands out last: `slot` was `node`'s subnet. */
export interface VacatedSlot {
  readonly slot: number;
  readonly node: string;
}

/** A transfer the giver keeps delivering until the receiver shows it has the slots. */
export interface SavedTransfer {
  readonly to: string;
  readonly spans: readonly SlotSpan[];
}

/** Where the lease layer keeps its state; FileLeaseStore on a node, an in-memory one in tests. */
export interface LeaseStateStore {
  /** The saved state, or null if none was ever saved. */
  load(): Promise<PersistedLeaseState | null>;
  /** Replaces the saved state atomically and durably. Calls are not concurrent. */
  save(state: PersistedLeaseState): Promise<void>;
  /** Where the state is kept, for errors that must say which file to mend. */
  readonly location: string;
  /** The error for saved state that parsed but cannot be used (e.g. its ring does not fit the
   *  network): what is damaged, and what to do about it. */
  corrupt(why: string): WeftError;
}

const FILE_FORMAT = 1;
/** The IPv4 ring's file (the name from before IPv6, so existing state dirs keep their leases). */
export const STATE_FILE = "lease-state.json";
/** The IPv6 ring's file: each family has its own ring, saved on its own. */
export const STATE_FILE_IPV6 = "lease-state-ipv6.json";

export class FileLeaseStore implements LeaseStateStore {
  private readonly file: string;

  /** `log` hears of a save that stands but whose state dir fsync failed (the agent's; tests may
   *  leave it out). */
  constructor(
    dir: string,
    family: Family = 4,
    private readonly log?: { warn(obj: object, msg: string): void },
  ) {
    this.file = join(dir, family === 4 ? STATE_FILE : STATE_FILE_IPV6);
  }

  get location(): string {
    return this.file;
  }

  async load(): Promise<PersistedLeaseState | null> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw new WeftError(
        "LEASE_STATE_UNREADABLE",
        `cannot read ${this.file}: ${(err as Error).message}; check the state dir's permissions`,
        { cause: err },
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw this.corrupt(`not JSON (${(err as Error).message})`);
    }
    return this.parse(value);
  }

  async save(state: PersistedLeaseState): Promise<void> {
    const body = JSON.stringify({
      format: FILE_FORMAT,
      node: state.node,
      fingerprint: state.fingerprint,
      network: state.network,
      lease: state.lease,
      ring: toPlainRing(state.ring),
      // Left out when empty: the file stays as it was before transfers were saved.
      ...(state.transfers?.length && {
        transfers: state.transfers.map((t) => ({ to: t.to, spans: t.spans.map((s) => [s.start, s.count]) })),
      }),
      ...(state.vacated?.length && { vacated: state.vacated.map((v) => ({ slot: v.slot, node: v.node })) }),
      ...(state.gone?.length && {
        gone: state.gone.map((g) => ({ node: g.node, since: g.since, incarnation: g.incarnation })),
      }),
    });
    let unsynced: Error | undefined;
    try {
      unsynced = await writeFileAtomic(this.file, body, { mode: 0o600, dirMode: 0o700 });
    } catch (err) {
      throw new WeftError(
        "LEASE_PERSIST_FAILED",
        `cannot save lease state to ${this.file}: ${(err as Error).message}; the change was not made, check the disk`,
        { cause: err },
      );
    }
    // The file holds the change, so it is made (a restart loads it): reporting it failed would
    // keep it from the ring in use and from the cluster, while a crash then claims it unheard.
    if (unsynced)
      this.log?.warn(
        { code: "LEASE_STATE_DIR_SYNC_FAILED", file: this.file, err: unsynced },
        `saved ${this.file}, but syncing its directory failed (${unsynced.message}): the change stands; a power loss before the kernel writes the directory may bring back the previous file. Check the disk (and the agent's open-file limit if EMFILE)`,
      );
  }

  private parse(value: unknown): PersistedLeaseState {
    if (typeof value !== "object" || value === null) throw this.corrupt("not an object");
    const v = value as Record<string, unknown>;
    if (typeof v.format === "number" && v.format !== FILE_FORMAT)
      throw this.corrupt(
        `format ${v.format} is not ${FILE_FORMAT}`,
        "another version of weft wrote it: run that version, or restore the file this one wrote",
      );
    if (v.format !== FILE_FORMAT) throw this.corrupt("format missing");
    if (typeof v.fingerprint !== "string") throw this.corrupt("fingerprint missing");
    // The ring is authoritative: "network" is for a person reading the file, and "lease" only picks
    // which of this node's leased slots a restart keeps (the lowest when the ring lacks it), so
    // their advice keeps the ring; still refused, as their damage may be the first of more.
    if (typeof v.network !== "string") throw this.corrupt("network is not a string", keepRing('"network" to ""'));
    if (v.lease !== null && typeof v.lease !== "string")
      throw this.corrupt("lease is neither null nor a CIDR", keepRing('"lease" to null'));
    const fail = (why: string): WeftError => this.corrupt(why);
    return {
      node: nodeName(v.node, fail),
      fingerprint: v.fingerprint,
      network: v.network,
      lease: v.lease,
      ring: fromPlainRing(v.ring, fail),
      ...(v.transfers !== undefined && { transfers: parseTransfers(v.transfers, this.damaged("transfers")) }),
      ...(v.vacated !== undefined && { vacated: parseVacated(v.vacated, this.damaged("vacated")) }),
      ...(v.gone !== undefined && { gone: parseGone(v.gone, this.damaged("gone")) }),
    };
  }

  /** `advice`: what to do, where it is narrower than restoring the file or moving it away. */
  corrupt(
    why: string,
    advice = "restore the file, or move it away: the node then relearns its slots and subnet from its peers (safe once its last changes have reached them)",
  ): WeftError {
    return new WeftError(
      "LEASE_STATE_CORRUPT",
      `${this.file} is damaged (${why}). It holds this node's subnet ownership, so weft will not start from scratch on its own: ${advice}`,
    );
  }

  /** How a damaged entry of `field` (one of its elements, or the field itself) is refused. */
  private damaged(field: keyof typeof ENTRY_FIELDS): EntryFail {
    const { code, shape, purpose, deleting } = ENTRY_FIELDS[field];
    return (entry, why) =>
      new WeftError(
        code,
        `${this.file}: ${entry} is damaged (${why}). ${purpose}, so weft will not start without it. Mend the ` +
          `entry (${shape}) or delete it (or the whole "${field}" field) and keep the rest of the file: its ring ` +
          `holds this node's subnets. ${deleting}; moving the file away would lose the ring too`,
      );
  }
}

/** The advice for a damaged field only people read: set it to a harmless value, keep the ring. */
function keepRing(setting: string): string {
  return `set ${setting} (it is only for people to read; weft writes it again at its next save) and keep the rest of the file: its ring holds this node's subnets`;
}

const MAX_SAVED_SPANS = 100_000;
/** How much of a damaged entry its error quotes. */
const MAX_QUOTED = 80;

/** Builds the error for a damaged entry (`entry` names it) of an optional list field. */
type EntryFail = (entry: string, why: string) => WeftError;

/** Per optional list field: its code, the shape of an entry, what an entry is for and when deleting
 *  one is safe, for the advice in its error. */
const ENTRY_FIELDS: Record<
  "transfers" | "vacated" | "gone",
  { code: LeaseErrorCode; shape: string; purpose: string; deleting: string }
> = {
  transfers: {
    code: "LEASE_STATE_TRANSFERS_CORRUPT",
    shape: '{ "to": "<node name>", "spans": [[<first slot>, <slot count>], ...] }',
    purpose:
      "Each transfer entry names subnet slots this node gave to another that has not shown it has them yet; " +
      "weft resends them until it has",
    deleting:
      "Deleting gives no slot to two nodes (the ring already records them as the receiver's), but the receiver " +
      "then learns of them only by gossip, later (not at all while the two do not reach each other)",
  },
  vacated: {
    code: "LEASE_STATE_VACATED_CORRUPT",
    shape: '{ "slot": <slot number>, "node": "<node name>" }',
    purpose:
      "Each vacated mark keeps a reclaimed node's old subnet, perhaps still in use, from being handed out " +
      "before the other free ones",
    deleting: "Deleting is safe once the reclaimed nodes are stopped for good or lease another subnet (weft status)",
  },
  gone: {
    code: "LEASE_STATE_GONE_CORRUPT",
    shape: '{ "node": "<node name>", "since": <wall-clock ms>, "incarnation": <number, optional> }',
    purpose:
      "Each gone entry says since when a dead node's subnets wait for their grace period; without it a heir " +
      "that restarts more often than the grace period never hands them back",
    deleting: "Deleting is safe: that node's grace period starts again from the next start (later)",
  },
};

/** How an error names element `i` of `field`: `field[i]` and the element, quoted and cut short. */
function element(field: string, i: number, v: unknown): string {
  const quoted = JSON.stringify(v);
  return `${field}[${i}] ${quoted.length > MAX_QUOTED ? `${quoted.slice(0, MAX_QUOTED)}...` : quoted}`;
}

/** The saved resend list: [{ to, spans: [[start, count], ...] }, ...]. */
function parseTransfers(value: unknown, fail: EntryFail): SavedTransfer[] {
  if (!Array.isArray(value)) throw fail('"transfers"', "not a list");
  let total = 0;
  return value.map((t, i) => {
    const entry = element("transfers", i, t);
    if (typeof t !== "object" || t === null || Array.isArray(t)) throw fail(entry, "not { to, spans }");
    const { to, spans } = t as { to?: unknown; spans?: unknown };
    if (!Array.isArray(spans)) throw fail(entry, "spans is not a list");
    total += spans.length;
    if (total > MAX_SAVED_SPANS) throw fail('"transfers"', `more than ${MAX_SAVED_SPANS} spans`);
    return {
      to: nodeName(to, (why) => fail(entry, why)),
      spans: spans.map((s, j) => {
        const [start, count] = Array.isArray(s) ? (s as unknown[]) : [];
        if (!Array.isArray(s) || s.length !== 2 || !isSlot(start, 0) || !isSlot(count, 1))
          throw fail(entry, `${element("spans", j, s)} is not [first slot, slot count]`);
        return { start, count };
      }),
    };
  });
}

/** The saved marks: [{ slot, node }, ...]. */
function parseVacated(value: unknown, fail: EntryFail): VacatedSlot[] {
  return objects("vacated", value, fail, "{ slot, node }").map(({ v, entry }) => {
    if (!isSlot(v.slot, 0)) throw fail(entry, "slot is not a slot number");
    return { slot: v.slot, node: nodeName(v.node, (why) => fail(entry, why)) };
  });
}

/** The saved dead nodes: [{ node, since, incarnation? }, ...]. */
function parseGone(value: unknown, fail: EntryFail): GoneNode[] {
  return objects("gone", value, fail, "{ node, since }").map(({ v, entry }) => {
    const { since, incarnation } = v;
    if (!isSlot(since, 0)) throw fail(entry, "since is not a time in ms");
    if (incarnation !== undefined && !isSlot(incarnation, 0)) throw fail(entry, "incarnation is not a number");
    return {
      node: nodeName(v.node, (why) => fail(entry, why)),
      since,
      ...(incarnation !== undefined && { incarnation }),
    };
  });
}

/** The elements of list `field`, each an object (`shape`), with how an error names it. */
function objects(
  field: string,
  value: unknown,
  fail: EntryFail,
  shape: string,
): Array<{ v: Record<string, unknown>; entry: string }> {
  if (!Array.isArray(value)) throw fail(`"${field}"`, "not a list");
  if (value.length > MAX_SAVED_SPANS) throw fail(`"${field}"`, `more than ${MAX_SAVED_SPANS} entries`);
  return value.map((v, i) => {
    const entry = element(field, i, v);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw fail(entry, `not ${shape}`);
    return { v: v as Record<string, unknown>, entry };
  });
}

function isSlot(v: unknown, min: number): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= min;
}
