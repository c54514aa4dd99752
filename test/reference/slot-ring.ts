// The lease ring as it was before it held ranges: one entry per slot (owner, version, leased).
// Kept as the plain reference for the range ring in src/control/lease/ring.ts: the same random
// histories must give the same states (test/control/lease-ring.test.ts).
import { type LeaseErrorCode, WeftError } from "../../src/errors.js";
import {
  checkSlotCount,
  sameList,
  sortedSeeds,
  type RingRun,
  type RingState,
  type SlotSpan,
  type SlotState,
} from "../../src/control/lease/ring.js";
export interface SlotChange {
  readonly slot: number;
  readonly before: SlotState;
  readonly after: SlotState;
}

export interface Conflict {
  readonly slot: number;
  readonly mine: SlotState;
  readonly theirs: SlotState;
}

export type MergeResult =
  | { readonly ok: true; readonly changed: readonly SlotChange[] }
  | { readonly ok: false; readonly error: WeftError; readonly conflicts: readonly Conflict[] };

const NO_OWNER = -1;

export class SlotRing {
  private readonly owners: Int32Array;
  private readonly versions: Float64Array;
  private readonly leasedFlags: Uint8Array;
  /** Owner names interned, so that cloning copies typed arrays, not strings. */
  private readonly names: string[];
  private readonly nameIndex: Map<string, number>;
  private seedList: readonly string[] | null;

  private constructor(slotCount: number, seeds: readonly string[] | null, from?: SlotRing) {
    this.owners = from ? from.owners.slice() : new Int32Array(slotCount).fill(NO_OWNER);
    this.versions = from ? from.versions.slice() : new Float64Array(slotCount);
    this.leasedFlags = from ? from.leasedFlags.slice() : new Uint8Array(slotCount);
    this.names = from ? from.names.slice() : [];
    this.nameIndex = new Map(from?.nameIndex);
    this.seedList = seeds;
  }

  /** A ring this node knows nothing about yet, except perhaps the seed list it must have. */
  static unknown(slotCount: number, seeds: readonly string[] | null = null): SlotRing {
    return new SlotRing(checkSlotCount(slotCount), seeds === null ? null : sortedSeeds(seeds));
  }

  /** The ring every node derives from the same seed list: contiguous, near-equal shares at
   *  version 1, in sorted name order (the first slotCount % seeds shares get one slot more). */
  static seeded(slotCount: number, seeds: readonly string[]): SlotRing {
    const sorted = sortedSeeds(seeds);
    const ring = new SlotRing(checkSlotCount(slotCount), sorted);
    const base = Math.floor(slotCount / sorted.length);
    const extra = slotCount % sorted.length;
    let slot = 0;
    sorted.forEach((seed, i) => {
      const share = base + (i < extra ? 1 : 0);
      for (let end = slot + share; slot < end; slot++) ring.write(slot, seed, 1, false);
    });
    return ring;
  }

  get slotCount(): number {
    return this.versions.length;
  }

  get seeds(): readonly string[] | null {
    return this.seedList;
  }

  clone(): SlotRing {
    return new SlotRing(this.slotCount, this.seedList, this);
  }

  slot(slot: number): SlotState {
    const o = this.owners[slot];
    return {
      owner: o === NO_OWNER ? null : this.names[o],
      version: this.versions[slot],
      leased: this.leasedFlags[slot] === 1,
    };
  }

  ownerOf(slot: number): string | null {
    const o = this.owners[slot];
    return o === NO_OWNER ? null : this.names[o];
  }

  /** Slots this view says `node` uses as its subnet. One in a settled view; a stale view can
   *  briefly show a node's old and new lease. */
  leasesOf(node: string): number[] {
    const id = this.nameIndex.get(node);
    const out: number[] = [];
    if (id === undefined) return out;
    for (let s = 0; s < this.slotCount; s++) if (this.owners[s] === id && this.leasedFlags[s] === 1) out.push(s);
    return out;
  }

  /** Every leased slot with its owner, in slot order. */
  allLeases(): Array<{ slot: number; owner: string }> {
    const out: Array<{ slot: number; owner: string }> = [];
    for (let s = 0; s < this.slotCount; s++) {
      if (this.leasedFlags[s] === 1) out.push({ slot: s, owner: this.names[this.owners[s]] });
    }
    return out;
  }

  /** Maximal runs of free slots owned by `node`, in slot order (not joined across the wrap). */
  freeSpansOf(node: string): SlotSpan[] {
    const id = this.nameIndex.get(node);
    const spans: SlotSpan[] = [];
    if (id === undefined) return spans;
    for (let s = 0; s < this.slotCount; ) {
      if (this.owners[s] !== id || this.leasedFlags[s] === 1) {
        s++;
        continue;
      }
      const start = s;
      while (s < this.slotCount && this.owners[s] === id && this.leasedFlags[s] === 0) s++;
      spans.push({ start, count: s - start });
    }
    return spans;
  }

  /** Number of free (owned, not leased) slots per owner. */
  freeCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (let s = 0; s < this.slotCount; s++) {
      const o = this.owners[s];
      if (o !== NO_OWNER && this.leasedFlags[s] === 0) counts.set(this.names[o], (counts.get(this.names[o]) ?? 0) + 1);
    }
    return counts;
  }

  /** Number of slots per owner, leased or free (owners of none are absent). */
  ownedCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (let s = 0; s < this.slotCount; s++) {
      const o = this.owners[s];
      if (o !== NO_OWNER) counts.set(this.names[o], (counts.get(this.names[o]) ?? 0) + 1);
    }
    return counts;
  }

  /** Slots whose owner this view knows (all of them once the ring has been learnt). */
  knownCount(): number {
    let n = 0;
    for (let s = 0; s < this.slotCount; s++) if (this.owners[s] !== NO_OWNER) n++;
    return n;
  }

  /** `by` gives free slots [start, start+count) to `to`. Returns the changed runs. */
  transfer(by: string, span: SlotSpan, to: string): RingRun[] {
    if (to === by || to.length === 0)
      throw new WeftError("LEASE_BAD_TRANSFER", `cannot transfer slots from ${by} to "${to}"`);
    this.checkSpan(span);
    for (let s = span.start; s < span.start + span.count; s++) {
      if (this.ownerOf(s) !== by || this.leasedFlags[s] === 1) {
        throw new WeftError(
          "LEASE_NOT_OWNER",
          `${by} cannot give slot ${s} away: it is ${this.describe(s)} (only free slots of one's own can be transferred)`,
        );
      }
    }
    for (let s = span.start; s < span.start + span.count; s++) this.write(s, to, this.versions[s] + 1, false);
    return this.runsOf(range(span));
  }

  /** The owner starts (leased = true) or stops using one of its slots as its subnet. */
  setLeased(by: string, slot: number, leased: boolean): RingRun[] {
    this.checkSpan({ start: slot, count: 1 });
    if (this.ownerOf(slot) !== by) {
      throw new WeftError("LEASE_NOT_OWNER", `${by} cannot change slot ${slot}: it is ${this.describe(slot)}`);
    }
    if (leased && this.leasesOf(by).length > 0) {
      throw new WeftError(
        "LEASE_ALREADY_LEASED",
        `${by} already uses slot ${this.leasesOf(by)[0]}; a node uses one slot`,
      );
    }
    this.write(slot, by, this.versions[slot] + 1, leased);
    return this.runsOf([slot]);
  }

  /**
   * `heir` takes over every run of slots owned by a condemned node that directly follows a slot
   * `heir` owns (rule 4), repeating until nothing changes, so chains of dead owners are taken
   * too. With `takeOrphans`, if no live (uncondemned) node owns any slot at all, nobody can be
   * heir and `heir` takes every condemned slot (only for an operator's explicit reclaim).
   * Reclaimed slots become free slots of the heir. Returns the changed runs.
   */
  reclaim(heir: string, condemned: ReadonlySet<string>, takeOrphans: boolean): RingRun[] {
    const isCondemned = (s: number): boolean => {
      const owner = this.ownerOf(s);
      return owner !== null && owner !== heir && condemned.has(owner);
    };
    const taken: number[] = [];
    const take = (s: number): void => {
      this.write(s, heir, this.versions[s] + 1, false);
      taken.push(s);
    };
    const n = this.slotCount;
    for (let progress = true; progress; ) {
      progress = false;
      for (let s = 0; s < n; s++) {
        const prev = (s + n - 1) % n;
        if (isCondemned(s) && this.ownerOf(prev) === heir) {
          // s starts a condemned run right after one of heir's slots: take the whole run.
          const dead = this.owners[s];
          for (let t = s; this.owners[t] === dead; t = (t + 1) % n) take(t);
          progress = true;
        }
      }
    }
    if (takeOrphans) {
      let anyLive = false;
      for (let s = 0; s < n && !anyLive; s++) anyLive = this.ownerOf(s) !== null && !isCondemned(s);
      if (!anyLive) for (let s = 0; s < n; s++) if (isCondemned(s)) take(s);
    }
    return this.runsOf(taken);
  }

  /** Merges a remote (full or partial) state by rule 2. Nothing changes unless ok is true. */
  merge(remote: RingState): MergeResult {
    if (remote.seeds !== null && this.seedList !== null && !sameList(remote.seeds, this.seedList)) {
      return refused(
        "LEASE_RING_MISMATCH",
        `the peer's ring was seeded with [${remote.seeds.join(", ")}] but ours with [${this.seedList.join(", ")}]: all nodes of a cluster need the same seed list`,
      );
    }
    const bad = this.checkRuns(remote.runs);
    if (bad) return refused("LEASE_BAD_STATE", bad);
    const conflicts: Conflict[] = [];
    for (const run of remote.runs) {
      for (let s = run.start; s < run.start + run.count; s++) {
        const mine = this.slot(s);
        if (mine.version === run.version && (mine.owner !== run.owner || mine.leased !== run.leased)) {
          conflicts.push({ slot: s, mine, theirs: { owner: run.owner, version: run.version, leased: run.leased } });
        }
      }
    }
    if (conflicts.length > 0) {
      const c = conflicts[0];
      return {
        ok: false,
        conflicts,
        error: new WeftError(
          "LEASE_INCONSISTENT",
          `refused a peer's ring: ${conflicts.length} slot(s) have the same version but a different state, e.g. slot ${c.slot} v${c.mine.version} is ` +
            `${c.mine.owner}${c.mine.leased ? " (leased)" : ""} here but ${c.theirs.owner}${c.theirs.leased ? " (leased)" : ""} there. ` +
            `Two histories exist (a node reclaimed while alive, or a state dir restored from an old copy); find the node with the stale state and reclaim its slots or reset it`,
        ),
      };
    }
    if (this.seedList === null && remote.seeds !== null) this.seedList = [...remote.seeds];
    const changed: SlotChange[] = [];
    for (const run of remote.runs) {
      for (let s = run.start; s < run.start + run.count; s++) {
        if (run.version > this.versions[s]) {
          const before = this.slot(s);
          this.write(s, run.owner, run.version, run.leased);
          changed.push({ slot: s, before, after: this.slot(s) });
        }
      }
    }
    return { ok: true, changed };
  }

  /** The full known state (unknown slots left out). */
  state(): RingState {
    const all: number[] = [];
    for (let s = 0; s < this.slotCount; s++) if (this.owners[s] !== NO_OWNER) all.push(s);
    return { seeds: this.seedList, runs: this.runsOf(all) };
  }

  /** The current state of the given known slots as runs (slots ascending, each once). */
  runsOf(slots: readonly number[]): RingRun[] {
    const sorted = [...new Set(slots)].sort((a, b) => a - b);
    const runs: RingRun[] = [];
    let cur: { start: number; count: number; owner: number; version: number; leased: number } | undefined;
    for (const s of sorted) {
      const o = this.owners[s];
      if (o === NO_OWNER) continue;
      if (
        cur &&
        cur.start + cur.count === s &&
        cur.owner === o &&
        cur.version === this.versions[s] &&
        cur.leased === this.leasedFlags[s]
      ) {
        cur.count++;
        continue;
      }
      if (cur) runs.push(this.toRun(cur));
      cur = { start: s, count: 1, owner: o, version: this.versions[s], leased: this.leasedFlags[s] };
    }
    if (cur) runs.push(this.toRun(cur));
    return runs;
  }

  private toRun(r: { start: number; count: number; owner: number; version: number; leased: number }): RingRun {
    return { start: r.start, count: r.count, owner: this.names[r.owner], version: r.version, leased: r.leased === 1 };
  }

  private write(slot: number, owner: string, version: number, leased: boolean): void {
    let id = this.nameIndex.get(owner);
    if (id === undefined) {
      id = this.names.push(owner) - 1;
      this.nameIndex.set(owner, id);
    }
    this.owners[slot] = id;
    this.versions[slot] = version;
    this.leasedFlags[slot] = leased ? 1 : 0;
  }

  /** Semantic checks on remote runs (wire.ts has checked the types): in range, no overlap. */
  private checkRuns(runs: readonly RingRun[]): string | undefined {
    const byStart = [...runs].sort((a, b) => a.start - b.start);
    let end = 0;
    for (const r of byStart) {
      if (r.start < end) return `runs overlap at slot ${r.start}`;
      if (r.start + r.count > this.slotCount)
        return `run ${r.start}+${r.count} is outside the ${this.slotCount} slots of this network`;
      end = r.start + r.count;
    }
    return undefined;
  }

  private checkSpan(span: SlotSpan): void {
    if (
      !Number.isInteger(span.start) ||
      !Number.isInteger(span.count) ||
      span.count < 1 ||
      span.start < 0 ||
      span.start + span.count > this.slotCount
    ) {
      throw new WeftError("LEASE_BAD_SLOT", `slots ${span.start}+${span.count} are outside 0..${this.slotCount - 1}`);
    }
  }

  private describe(slot: number): string {
    const st = this.slot(slot);
    return st.owner === null ? "unknown here" : `owned by ${st.owner} at v${st.version}${st.leased ? ", leased" : ""}`;
  }
}

function range(span: SlotSpan): number[] {
  return Array.from({ length: span.count }, (_, i) => span.start + i);
}

function refused(code: LeaseErrorCode, message: string): MergeResult {
  return { ok: false, conflicts: [], error: new WeftError(code, `refused a peer's ring: ${message}`) };
}
