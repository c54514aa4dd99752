// Transmit-limited broadcast queue (memberlist's TransmitLimitedQueue). Each queued broadcast
// rides on outgoing packets until it was sent `limit(broadcast)` times (read on every send, so a
// limit that drops ends the broadcasts already past it); least-sent first, newest first
// among equals, so fresh news spreads before repeats. A broadcast with a key replaces an older one
// with the same key (only a node's newest state is worth spreading).
//
// Once per round (gossipOncePerRound): a broadcast rides on at most one packet per gossip round
// (deaths excepted: `urgent`). When news comes faster than packets carry it (a join wave), least-
// sent-first put a fresh item in every packet until it caught up with the rest, so each member sent
// it ~9 times in its next 3 rounds (~0.25 s) and then hardly at all for seconds, behind hundreds of
// items at the same count; since all members learn an item within ~0.3 s, nearly all its sends
// fell into ~0.7 s, and a member whose ~20 packets then came from senders past their burst missed
// it, and the joins of the same 50 ms (they travel together), until anti-entropy (ARCHITECTURE.md,
// "Gossip at 1,000 nodes"). One packet per round spreads each member's sends over its limit in
// rounds (1.2 s at 1,000 nodes), so a member's chance to be missed falls from about 1e-4 to 1e-6.
//
// To distinct members (take's `to`): a broadcast goes to a member again only once every live
// member could have had it. Packets go to members drawn at random, so a broadcast's few sends
// could all go to one of them: a refutation once went four times to the one member that could not
// hear it, and the others declared its sender dead (ARCHITECTURE.md, "A slow member's refutation").

/** The member a packet goes to, for take(). */
export interface BroadcastTarget {
  /** The member's address, host:port. */
  readonly id: string;
  /** The members a broadcast can go to: the live ones, this node excluded. */
  readonly peers: number;
}

export interface Broadcast {
  /** Broadcasts with equal keys invalidate each other: the newer one replaces the older. */
  readonly key?: string;
  /** One encoded message. */
  readonly payload: Uint8Array;
  /** The same news in protocol version 2 (messages.ts), sent instead to members known to speak it. */
  readonly compact?: Uint8Array;
  /** Called once when the broadcast leaves the queue: sent `limit` times, replaced, pruned or cleared. */
  readonly onDone?: () => void;
  /** News most members already have: sent only KNOWN_NEWS_SENDS times, after everything fresher. */
  readonly alreadyKnown?: boolean;
  /** Another member's "alive": in a join wave it is pushed fewer times, and pulls find it (pull.ts). */
  readonly joinNews?: boolean;
  /** Exempt from the queue's once-per-round rule (see beginRound). */
  readonly urgent?: boolean;
}

/**
 * Sends of a broadcast most members already have. Measured in the simulator (400-node join wave,
 * 5% loss): 1 send leaves rare pairs waiting for push-pull (tails of 20-120 s); 3 sends halve
 * the median time for a joiner to be known everywhere against full retransmission, with a
 * similar p99.
 */
export const KNOWN_NEWS_SENDS = 3;

/** memberlist's retransmit limit: RetransmitMult × ceil(log10(N + 1)). */
export function retransmitLimit(retransmitMult: number, liveCount: number): number {
  return retransmitMult * Math.ceil(Math.log10(liveCount + 1));
}

interface Entry {
  readonly broadcast: Broadcast;
  /** Insertion order; higher is newer. */
  readonly id: number;
  transmits: number;
  /** The gossip round (see beginRound) in which it was last taken. */
  round: number;
  /** The members it went to since it last went to every peer (take's `to`). */
  sentTo?: Set<string>;
}

export class TransmitLimitedQueue {
  /** buckets[t] holds the entries sent t times, sorted by id ascending (newest last). */
  private readonly buckets: Entry[][] = [];
  private readonly byKey = new Map<string, Entry>();
  /** Payload length → entries of that length: take() stops once nothing left can fit. */
  private readonly lengths = new Map<number, number>();
  private minLength = Infinity;
  private nextId = 0;
  private count = 0;
  private round = 0;

  constructor(
    private readonly limit: (broadcast: Broadcast) => number,
    private readonly maxEntries: number,
    /** Take each broadcast at most once per gossip round (see beginRound). */
    private readonly oncePerRound = false,
  ) {}

  /** A gossip round begins: with oncePerRound, what was taken in the last round may go again. */
  beginRound(): void {
    this.round++;
  }

  size(): number {
    return this.count;
  }

  enqueue(broadcast: Broadcast): void {
    if (broadcast.key !== undefined) {
      const old = this.byKey.get(broadcast.key);
      if (old) this.remove(old);
    }
    // Already-known news starts near the limit: it goes out after fresher news, and only a few times.
    const transmits = broadcast.alreadyKnown ? Math.max(0, this.limit(broadcast) - KNOWN_NEWS_SENDS) : 0;
    const entry: Entry = { broadcast, id: this.nextId++, transmits, round: -1 };
    this.bucket(transmits).push(entry);
    this.count++;
    this.countLength(smallest(broadcast), 1);
    if (broadcast.key !== undefined) this.byKey.set(broadcast.key, entry);
    while (this.count > this.maxEntries) this.pruneOne();
  }

  /**
   * Payloads that fit in `budget` bytes, each costing its length plus `overhead`; every returned
   * broadcast counts one more transmission. compact: the receiver speaks protocol version 2. to:
   * the receiver, which gets none it already got while some peer has not.
   */
  take(overhead: number, budget: number, compact = false, to?: BroadcastTarget): Uint8Array[] {
    const picked: Entry[] = [];
    let remaining = budget;
    scan: for (const bucket of this.buckets) {
      for (let i = bucket.length - 1; i >= 0; i--) {
        if (remaining < overhead + this.minLength) break scan;
        const entry = bucket[i];
        if (this.oncePerRound && entry.round === this.round && !entry.broadcast.urgent) continue;
        if (to && entry.sentTo?.has(to.id) && entry.sentTo.size < to.peers) continue;
        const cost = payloadFor(entry.broadcast, compact).length + overhead;
        if (cost > remaining) continue;
        picked.push(entry);
        remaining -= cost;
      }
    }
    for (const entry of picked) {
      this.detach(entry);
      entry.transmits++;
      entry.round = this.round;
      if (to) sentTo(entry, to);
      if (entry.transmits >= this.limit(entry.broadcast)) this.finish(entry);
      else this.insertSorted(this.bucket(entry.transmits), entry);
    }
    return picked.map((e) => payloadFor(e.broadcast, compact));
  }

  /** Drops everything (shutdown); waiters on onDone are released. */
  clear(): void {
    const all = this.buckets.flatMap((bucket) => bucket.splice(0));
    this.count = 0;
    this.lengths.clear();
    this.minLength = Infinity;
    for (const entry of all) this.finish(entry);
  }

  private bucket(transmits: number): Entry[] {
    while (this.buckets.length <= transmits) this.buckets.push([]);
    return this.buckets[transmits];
  }

  private remove(entry: Entry): void {
    this.detach(entry);
    this.finish(entry);
  }

  /** Takes the entry out of its bucket (found by binary search on id). */
  private detach(entry: Entry): void {
    const bucket = this.buckets[entry.transmits];
    const at = lowerBound(bucket, entry.id);
    bucket.splice(at, 1);
    this.count--;
    this.countLength(smallest(entry.broadcast), -1);
  }

  private finish(entry: Entry): void {
    const key = entry.broadcast.key;
    if (key !== undefined && this.byKey.get(key) === entry) this.byKey.delete(key);
    entry.broadcast.onDone?.();
  }

  private insertSorted(bucket: Entry[], entry: Entry): void {
    bucket.splice(lowerBound(bucket, entry.id), 0, entry);
    this.count++;
    this.countLength(smallest(entry.broadcast), 1);
  }

  private countLength(length: number, delta: 1 | -1): void {
    const n = (this.lengths.get(length) ?? 0) + delta;
    if (n > 0) {
      this.lengths.set(length, n);
      this.minLength = Math.min(this.minLength, length);
      return;
    }
    this.lengths.delete(length);
    // Few distinct lengths exist (one per kind of message and name length), so this is cheap.
    if (length === this.minLength) this.minLength = Math.min(Infinity, ...this.lengths.keys());
  }

  /** Over the bound: drop the most retransmitted, oldest entry (it has done most of its work). */
  private pruneOne(): void {
    for (let t = this.buckets.length - 1; t >= 0; t--) {
      if (this.buckets[t].length > 0) return this.remove(this.buckets[t][0]);
    }
  }
}

/** Records a send to `to`; a send to a member already in the set starts a new set (every peer had it). */
function sentTo(entry: Entry, to: BroadcastTarget): void {
  if (!entry.sentTo || entry.sentTo.has(to.id)) entry.sentTo = new Set([to.id]);
  else entry.sentTo.add(to.id);
}

const payloadFor = (b: Broadcast, compact: boolean): Uint8Array => (compact && b.compact) || b.payload;
/** The shortest form, for take()'s early stop (nothing left can fit). */
const smallest = (b: Broadcast): number => Math.min(b.payload.length, b.compact?.length ?? Infinity);

function lowerBound(bucket: Entry[], id: number): number {
  let lo = 0;
  let hi = bucket.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (bucket[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
