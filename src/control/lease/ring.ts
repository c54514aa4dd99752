// One node's view of who owns each subnet slot: the ring CRDT at the heart of lease safety
// (after Weave Net's IPAM ring). Like Weave's ring it holds ranges, not slots: a sorted list of
// segments, each a run of consecutive slots with one state, so memory, saved state and gossip grow
// with the number of ownership changes (a few per node), not with the number of subnets — an IPv6
// /32 cut into /64s is 2^32 slots. Every operation below works on whole segments.
//
// Each slot has (owner, version, leased). `leased` marks the one slot a node uses as its own
// subnet; its other owned slots are free and may be given away. The rules that make this safe:
//
//  1. Only the owner of a slot changes it (gives it away, marks it leased or free), and every
//     change bumps the slot's version. The owner persists the change before anyone hears of it.
//  2. Merge takes, per slot, the state with the higher version. Equal versions must carry equal
//     states: the same version with a different owner or lease flag means two histories exist
//     (a rolled-back state dir, a reclaimed node that was alive); such a remote state is refused
//     whole, so nothing from a broken history is half-applied, and the caller reports it.
//  3. So versions only grow and a replayed old message changes nothing (its versions are not
//     higher), and for every slot at most one node's own view says "mine": the node that made
//     the latest version handed it on before anybody could learn of it.
//  4. Reclaiming a dead node's slots is the one exception to rule 1: the heir (the owner of the
//     slot just before the dead node's run, wrapping at the end) takes the run over with
//     version + 1. Exactly one node is heir in a settled view, so heirs never compete. It is
//     safe only if the dead node is really gone and its last changes have spread (see
//     subnet-leases.ts for when reclaim runs).
//  5. Two histories (the same version with different states: a node reclaimed while alive, a
//     state dir restored from an old copy) are settled by the nodes they name, never by a
//     bystander: each picks the same winner (forkWinner) and writes it at version + 1, which
//     then spreads by rule 2, so every view agrees again (subnet-leases.ts, resolveForks).
//
// The first owners come from a fixed seed list: every node divides the slots among the sorted
// seed names at version 1, so all seeded nodes start from the same ring and nobody claims
// anything optimistically. A node without a seed list starts from an unknown ring (version 0
// everywhere) and adopts the seeds and ownership it learns from peers.
import { type LeaseErrorCode, WeftError } from "../../errors.js";

export interface SlotState {
  /** null while the slot is unknown (version 0: this node has not learnt the ring yet). */
  readonly owner: string | null;
  readonly version: number;
  readonly leased: boolean;
}

/** Consecutive slots with the same state: the unit of gossip and persistence. */
export interface RingRun {
  readonly start: number;
  readonly count: number;
  readonly owner: string;
  readonly version: number;
  readonly leased: boolean;
}

/** A full ring or a part of one (a broadcast delta); slots not listed are not said anything about. */
export interface RingState {
  /** Sorted seed names the ring was started from; null if the sender has not learnt the ring. */
  readonly seeds: readonly string[] | null;
  readonly runs: readonly RingRun[];
}

/** Slots [start, start+count) that changed in a merge, all from one state to one state. */
export interface SlotChange {
  readonly start: number;
  readonly count: number;
  readonly before: SlotState;
  readonly after: SlotState;
}

/** Slots [start, start+count) that carry the same version here and there but a different state. */
export interface Conflict {
  readonly start: number;
  readonly count: number;
  readonly mine: SlotState;
  readonly theirs: SlotState;
}

export type MergeResult =
  | { readonly ok: true; readonly changed: readonly SlotChange[] }
  | { readonly ok: false; readonly error: WeftError; readonly conflicts: readonly Conflict[] };

export interface SlotSpan {
  readonly start: number;
  readonly count: number;
}

const NO_OWNER = -1;

/** Slots from `start` up to the next segment's start (or the end of the ring) share this state. */
interface Segment {
  readonly start: number;
  /** Index into Ring.names, or NO_OWNER while unknown (version 0). */
  readonly owner: number;
  readonly version: number;
  readonly leased: boolean;
}

export class Ring {
  /** Sorted by start, the first at 0, no two neighbours with the same state. Segments are never
   *  changed in place, so a clone copies the array, not the segments. */
  private segs: Segment[];
  /** Owner names interned, only ever appended to. Shared with clones like `owned` (a merge
   *  rarely brings a new name): id() copies both first while `namesShared`. */
  private names: string[];
  private nameIndex: Map<string, number>;
  private namesShared: boolean;
  /** Slots per owner (by name index; owners of none absent), kept by assign(): the reclaimer asks
   *  for one node's count on every membership death and every reclaim pass. Shared with clones
   *  (every merge of a peer's message clones, and most change nothing) until a change: count()
   *  copies it first while `ownedShared`, which both sides of a clone set. */
  private owned: Map<number, number>;
  private ownedShared: boolean;
  private seedList: readonly string[] | null;

  private constructor(
    readonly slotCount: number,
    seeds: readonly string[] | null,
    from?: Ring,
  ) {
    this.segs = from ? from.segs.slice() : [{ start: 0, owner: NO_OWNER, version: 0, leased: false }];
    this.names = from ? from.names : [];
    this.nameIndex = from ? from.nameIndex : new Map();
    this.namesShared = from !== undefined;
    this.owned = from ? from.owned : new Map();
    this.ownedShared = from !== undefined;
    this.seedList = seeds;
  }

  /** A ring this node knows nothing about yet, except perhaps the seed list it must have. */
  static unknown(slotCount: number, seeds: readonly string[] | null = null): Ring {
    return new Ring(checkSlotCount(slotCount), seeds === null ? null : sortedSeeds(seeds));
  }

  /** The ring every node derives from the same seed list: contiguous, near-equal shares at
   *  version 1, in sorted name order (the first slotCount % seeds shares get one slot more). */
  static seeded(slotCount: number, seeds: readonly string[]): Ring {
    const sorted = sortedSeeds(seeds);
    const ring = new Ring(checkSlotCount(slotCount), sorted);
    const base = Math.floor(slotCount / sorted.length);
    const extra = slotCount % sorted.length;
    let slot = 0;
    sorted.forEach((seed, i) => {
      const share = base + (i < extra ? 1 : 0);
      if (share > 0) ring.assign(slot, share, ring.id(seed), 1, false);
      slot += share;
    });
    return ring;
  }

  get seeds(): readonly string[] | null {
    return this.seedList;
  }

  /** Number of segments: what memory, the state file and a full-ring message grow with. */
  get segmentCount(): number {
    return this.segs.length;
  }

  clone(): Ring {
    this.namesShared = true;
    this.ownedShared = true;
    return new Ring(this.slotCount, this.seedList, this);
  }

  slot(slot: number): SlotState {
    return this.stateOf(this.segs[this.find(slot)]);
  }

  ownerOf(slot: number): string | null {
    return this.slot(slot).owner;
  }

  /** Slots this view says `node` uses as its subnet. One in a settled view; a stale view can
   *  briefly show a node's old and new lease. */
  leasesOf(node: string): number[] {
    const id = this.nameIndex.get(node);
    return id === undefined
      ? []
      : this.leasedSlots()
          .filter((l) => l.owner === id)
          .map((l) => l.slot);
  }

  /** Every leased slot with its owner, in slot order. */
  allLeases(): Array<{ slot: number; owner: string }> {
    return this.leasedSlots().map((l) => ({ slot: l.slot, owner: this.names[l.owner] }));
  }

  /** leasesOf() for every node that leases a slot, in one pass. */
  leasesByOwner(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const { slot, owner } of this.allLeases()) {
      const slots = out.get(owner);
      if (slots) slots.push(slot);
      else out.set(owner, [slot]);
    }
    return out;
  }

  /** Maximal runs of free slots owned by `node`, in slot order (not joined across the wrap). */
  freeSpansOf(node: string): SlotSpan[] {
    const id = this.nameIndex.get(node);
    const spans: Array<{ start: number; count: number }> = [];
    if (id === undefined) return spans;
    this.segs.forEach((g, i) => {
      if (g.owner !== id || g.leased) return;
      const count = this.end(i) - g.start;
      const last = spans[spans.length - 1];
      if (last && last.start + last.count === g.start) last.count += count;
      else spans.push({ start: g.start, count });
    });
    return spans;
  }

  /** Number of free (owned, not leased) slots per owner. */
  freeCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    this.segs.forEach((g, i) => {
      if (g.owner === NO_OWNER || g.leased) return;
      const name = this.names[g.owner];
      counts.set(name, (counts.get(name) ?? 0) + this.end(i) - g.start);
    });
    return counts;
  }

  /** Number of slots per owner, leased or free (owners of none are absent). */
  ownedCounts(): Map<string, number> {
    return new Map([...this.owned].map(([id, n]) => [this.names[id], n]));
  }

  /** Number of slots `node` owns, leased or free. */
  ownedBy(node: string): number {
    const id = this.nameIndex.get(node);
    return id === undefined ? 0 : (this.owned.get(id) ?? 0);
  }

  /** Slots whose owner this view knows (all of them once the ring has been learnt). */
  knownCount(): number {
    return this.segs.reduce((n, g, i) => (g.owner === NO_OWNER ? n : n + this.end(i) - g.start), 0);
  }

  /** `by` gives free slots [start, start+count) to `to`. Returns the changed runs. */
  transfer(by: string, span: SlotSpan, to: string): RingRun[] {
    if (to === by || to.length === 0)
      throw new WeftError("LEASE_BAD_TRANSFER", `cannot transfer slots from ${by} to "${to}"`);
    this.checkSpan(span);
    const by_ = this.nameIndex.get(by);
    for (const piece of this.pieces(span.start, span.count)) {
      if (piece.seg.owner !== by_ || by_ === undefined || piece.seg.leased) {
        throw new WeftError(
          "LEASE_NOT_OWNER",
          `${by} cannot give slot ${piece.start} away: it is ${this.describe(piece.start)} (only free slots of one's own can be transferred)`,
        );
      }
    }
    const to_ = this.id(to);
    for (const piece of this.pieces(span.start, span.count))
      this.assign(piece.start, piece.count, to_, piece.seg.version + 1, false);
    return this.runsIn([span]);
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
    const seg = this.segs[this.find(slot)];
    this.assign(slot, 1, seg.owner, seg.version + 1, leased);
    return this.runsIn([{ start: slot, count: 1 }]);
  }

  /**
   * `heir` takes over every run of slots owned by a condemned node that directly follows a slot
   * `heir` owns (rule 4), and so on, so chains of dead owners are taken too (in one pass: every
   * condemned segment with only condemned ones back to one of `heir`'s). With `takeOrphans`, if no live (uncondemned) node owns any slot at all, nobody can be
   * heir and `heir` takes every condemned slot (only for an operator's explicit reclaim).
   * Reclaimed slots become free slots of the heir. Returns the changed runs.
   */
  reclaim(heir: string, condemned: ReadonlySet<string>, takeOrphans: boolean): RingRun[] {
    const heirId = this.id(heir);
    const isCondemned = (g: Segment): boolean =>
      g.owner !== NO_OWNER && g.owner !== heirId && condemned.has(this.names[g.owner]);
    const n = this.segs.length;
    const take: boolean[] = new Array(n).fill(false);
    const anchor = this.segs.findIndex((g) => g.owner === heirId);
    if (anchor >= 0) {
      // One lap from one of heir's segments, wrapping past the end: a condemned segment is taken
      // when every segment back to heir's last one is taken too — what taking run after run until
      // nothing changes gives, since each run taken makes the next one follow a slot of heir's.
      for (let k = 1, chain = true; k < n; k++) {
        const j = (anchor + k) % n;
        const g = this.segs[j];
        if (g.owner === heirId) chain = true;
        else if (chain && isCondemned(g)) take[j] = true;
        else chain = false;
      }
    } else if (takeOrphans && !this.segs.some((g) => g.owner !== NO_OWNER && !isCondemned(g))) {
      for (const [i, g] of this.segs.entries()) take[i] = isCondemned(g);
    }
    // Rebuilt in one pass, not assigned run by run (each assign splices the whole list).
    const taken: SlotSpan[] = [];
    const segs = this.segs.map((g, i): Segment => {
      if (!take[i]) return g;
      const count = this.end(i) - g.start;
      this.count(g.owner, -count);
      this.count(heirId, count);
      taken.push({ start: g.start, count });
      return { start: g.start, owner: heirId, version: g.version + 1, leased: false };
    });
    this.segs = joined(segs);
    return this.runsIn(taken);
  }

  /** Rule 5: slots `span` (a Conflict's range) forked at `version`; write the winner's state at
   *  version + 1 where this view is still at that version. Returns the changed runs. */
  settleFork(span: SlotSpan, version: number, winner: SlotState): RingRun[] {
    this.checkSpan(span);
    if (winner.owner === null) return [];
    const at = this.pieces(span.start, span.count).filter((p) => p.seg.version === version);
    const owner = this.id(winner.owner);
    for (const p of at) this.assign(p.start, p.count, owner, version + 1, winner.leased);
    return this.runsIn(at);
  }

  /** Merges a remote (full or partial) state by rule 2. Nothing changes unless ok is true.
   *  `source` names the remote state in refusals (a peer's, or the node's own saved one). */
  merge(remote: RingState, source = "a peer's ring"): MergeResult {
    if (remote.seeds !== null && this.seedList !== null && !sameList(remote.seeds, this.seedList)) {
      return refused(
        "LEASE_RING_MISMATCH",
        source,
        `it was seeded with [${remote.seeds.join(", ")}] but ours with [${this.seedList.join(", ")}]: all nodes of a cluster need the same seed list`,
      );
    }
    const bad = this.checkRuns(remote.runs);
    if (bad) return refused("LEASE_BAD_STATE", source, bad);
    const conflicts: Conflict[] = [];
    const newer: Array<{ start: number; count: number; before: SlotState; run: RingRun }> = [];
    for (const run of remote.runs) {
      for (const piece of this.pieces(run.start, run.count)) {
        const mine = this.stateOf(piece.seg);
        const theirs = { owner: run.owner, version: run.version, leased: run.leased };
        if (mine.version === run.version && (mine.owner !== run.owner || mine.leased !== run.leased)) {
          conflicts.push({ start: piece.start, count: piece.count, mine, theirs });
        } else if (run.version > mine.version) {
          newer.push({ start: piece.start, count: piece.count, before: mine, run });
        }
      }
    }
    if (conflicts.length > 0) {
      const c = conflicts[0];
      const slots = conflicts.reduce((n, x) => n + x.count, 0);
      return {
        ok: false,
        conflicts,
        error: new WeftError(
          "LEASE_INCONSISTENT",
          `refused a peer's ring: ${slots} slot(s) have the same version but a different state, e.g. slot ${c.start} v${c.mine.version} is ` +
            `${c.mine.owner}${c.mine.leased ? " (leased)" : ""} here but ${c.theirs.owner}${c.theirs.leased ? " (leased)" : ""} there. ` +
            `Two histories exist (a node reclaimed while alive, or a state dir restored from an old copy); find the node with the stale state and reclaim its slots or reset it`,
        ),
      };
    }
    if (this.seedList === null && remote.seeds !== null) this.seedList = [...remote.seeds];
    const changed: SlotChange[] = newer.map((n) => {
      this.assign(n.start, n.count, this.id(n.run.owner), n.run.version, n.run.leased);
      return {
        start: n.start,
        count: n.count,
        before: n.before,
        after: { owner: n.run.owner, version: n.run.version, leased: n.run.leased },
      };
    });
    return { ok: true, changed };
  }

  /** The full known state (unknown slots left out). */
  state(): RingState {
    return { seeds: this.seedList, runs: this.runsIn([{ start: 0, count: this.slotCount }]) };
  }

  /**
   * The current state of the given slots as runs, in slot order (unknown slots left out). Spans
   * may come from a peer's message (a transfer's view is answered with ours): the part outside
   * the ring is left out, since walking past the last slot never ended.
   */
  runsIn(spans: readonly SlotSpan[]): RingRun[] {
    const runs: RingRun[] = [];
    const inRing = spans.flatMap((span): SlotSpan[] => {
      if (!Number.isInteger(span.start) || !Number.isInteger(span.count)) return [];
      const start = Math.max(0, span.start);
      const stop = Math.min(this.slotCount, span.start + span.count);
      return stop > start ? [{ start, count: stop - start }] : [];
    });
    const sorted = inRing.sort((a, b) => a.start - b.start);
    for (const span of sorted) {
      for (const piece of this.pieces(span.start, span.count)) {
        if (piece.seg.owner === NO_OWNER) continue;
        const last = runs[runs.length - 1];
        const run = {
          start: piece.start,
          count: piece.count,
          owner: this.names[piece.seg.owner],
          version: piece.seg.version,
          leased: piece.seg.leased,
        };
        if (last && last.start + last.count > run.start) continue; // spans overlapped: listed already
        if (
          last &&
          last.start + last.count === run.start &&
          last.owner === run.owner &&
          last.version === run.version &&
          last.leased === run.leased
        ) {
          runs[runs.length - 1] = { ...last, count: last.count + run.count };
        } else {
          runs.push(run);
        }
      }
    }
    return runs;
  }

  // ---- segments ----

  private id(owner: string): number {
    let id = this.nameIndex.get(owner);
    if (id === undefined) {
      if (this.namesShared) {
        this.names = this.names.slice();
        this.nameIndex = new Map(this.nameIndex);
        this.namesShared = false;
      }
      id = this.names.push(owner) - 1;
      this.nameIndex.set(owner, id);
    }
    return id;
  }

  private stateOf(g: Segment): SlotState {
    return { owner: g.owner === NO_OWNER ? null : this.names[g.owner], version: g.version, leased: g.leased };
  }

  /** End (exclusive) of segment i. */
  private end(i: number): number {
    return i + 1 < this.segs.length ? this.segs[i + 1].start : this.slotCount;
  }

  /** Index of the segment holding `slot` (binary search). */
  private find(slot: number): number {
    let lo = 0;
    let hi = this.segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segs[mid].start <= slot) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The parts of [start, start+count) that lie in one segment each, in order. */
  private pieces(start: number, count: number): Array<{ start: number; count: number; seg: Segment }> {
    const out: Array<{ start: number; count: number; seg: Segment }> = [];
    const stop = start + count;
    for (let i = this.find(start), s = start; s < stop; i++) {
      const e = Math.min(this.end(i), stop);
      out.push({ start: s, count: e - s, seg: this.segs[i] });
      s = e;
    }
    return out;
  }

  /** Sets slots [start, start+count) to one state, splitting and joining segments as needed. */
  private assign(start: number, count: number, owner: number, version: number, leased: boolean): void {
    const stop = start + count;
    const first = this.find(start);
    const last = this.find(stop - 1);
    for (let i = first; i <= last; i++) {
      const was = this.segs[i].owner;
      if (was !== NO_OWNER) this.count(was, Math.max(this.segs[i].start, start) - Math.min(this.end(i), stop));
    }
    this.count(owner, count);
    const replaced: Segment[] = [];
    const head = this.segs[first];
    if (head.start < start) replaced.push(head);
    replaced.push({ start, owner, version, leased });
    const tail = this.segs[last];
    if (this.end(last) > stop) replaced.push({ ...tail, start: stop });
    // Join equal neighbours, including the segments just outside the replaced range.
    const from = first > 0 ? first - 1 : first;
    const to = last + 1 < this.segs.length ? last + 2 : last + 1;
    const window = [...this.segs.slice(from, first), ...replaced, ...this.segs.slice(last + 1, to)];
    this.segs.splice(from, to - from, ...joined(window));
  }

  /** Adds `delta` (negative: takes) to `owner`'s count in the index. */
  private count(owner: number, delta: number): void {
    if (this.ownedShared) {
      this.owned = new Map(this.owned);
      this.ownedShared = false;
    }
    const n = (this.owned.get(owner) ?? 0) + delta;
    if (n === 0) this.owned.delete(owner);
    else this.owned.set(owner, n);
  }

  /** Leased slots, one entry per slot; a leased segment longer than one slot only in a stale view. */
  private leasedSlots(): Array<{ slot: number; owner: number }> {
    const out: Array<{ slot: number; owner: number }> = [];
    this.segs.forEach((g, i) => {
      if (g.leased) for (let s = g.start; s < this.end(i); s++) out.push({ slot: s, owner: g.owner });
    });
    return out;
  }

  /** Semantic checks on remote runs (wire.ts has checked the types): in range, no overlap. */
  private checkRuns(runs: readonly RingRun[]): string | undefined {
    const byStart = [...runs].sort((a, b) => a.start - b.start);
    let end = 0;
    for (const r of byStart) {
      if (r.start < end) return `runs overlap at slot ${r.start}`;
      if (r.start + r.count > this.slotCount)
        return `run ${r.start}+${r.count} is outside the ${this.slotCount} slots of this network`;
      if (r.leased && r.count > MAX_LEASED_RUN)
        return `run ${r.start}+${r.count} marks more slots leased than any view can hold`;
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

/** `segs` with each segment that has its predecessor's state left out (joined into it). */
function joined(segs: readonly Segment[]): Segment[] {
  const out: Segment[] = [];
  for (const g of segs) {
    const prev = out[out.length - 1];
    if (prev && prev.owner === g.owner && prev.version === g.version && prev.leased === g.leased) continue;
    out.push(g);
  }
  return out;
}

/** A node leases one slot; a stale view can show a node's old and new lease side by side, and
 *  rarely more. A longer leased run can only come from a broken or hostile peer. */
const MAX_LEASED_RUN = 64;

/** Of two states of one slot at the same version, the one every node keeps (rule 5): a leased slot
 *  before a free one (a running node keeps its subnet), then the smaller owner name. */
export function forkWinner(a: SlotState, b: SlotState): SlotState {
  if (a.leased !== b.leased) return a.leased ? a : b;
  return (a.owner ?? "") <= (b.owner ?? "") ? a : b;
}

export function sortedSeeds(seeds: readonly string[]): string[] {
  const sorted = [...new Set(seeds)].sort();
  if (sorted.length === 0 || sorted.some((s) => s.length === 0)) {
    throw new WeftError("LEASE_BAD_SEEDS", "the seed list must name at least one node, with no empty names");
  }
  return sorted;
}

export function checkSlotCount(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new WeftError("LEASE_BAD_SLOT", `a ring needs at least one slot, not ${n}`);
  return n;
}

export function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function refused(code: LeaseErrorCode, source: string, message: string): MergeResult {
  return { ok: false, conflicts: [], error: new WeftError(code, `refused ${source}: ${message}`) };
}
