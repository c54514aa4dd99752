// The node side of subnet leasing: bootstrap from the seed list or the saved state, get a subnet
// (use a free slot of one's own, or ask a member that owns free slots to transfer some), give
// slots to members that ask, merge what gossip brings, and reclaim dead nodes' slots.
//
// Order of effects, which the safety argument in ring.ts relies on: every change is made on a
// copy of the ring, saved to the state store, and only then becomes the ring that gossip, peers()
// and the lease see. Changes run one at a time (a promise queue), so a donor never hands the same
// slot to two askers and a half-saved change is never visible.
//
// Partitions: each side keeps what it owns. A node that needs a subnet and cannot reach an owner
// of free slots waits, logs why (LEASE_WAITING_*) and retries with backoff; it never claims.
//
// Reclaim (taking a dead node's slots) happens only by an explicit decision:
//  - reclaim(node): an operator says the node is gone for good. Refused while membership sees it
//    alive. The heirs (ring.ts rule 4) take its slots; a notice is broadcast so that heirs on
//    other nodes act too. Risk: if the node is in fact alive behind a partition, or its last
//    transfers have not spread yet, two nodes can use one subnet until the partition heals (the
//    node then loses its lease, LEASE_LOST, and conflicts are reported as LEASE_INCONSISTENT).
//  - after a grace period (default 24 h, flannel's lease TTL) since membership declared the node
//    dead or gone. Same risk if a node stays alive but partitioned for longer than the grace
//    period. The grace timer runs in memory: a restarting heir starts it again (later, safer).
//    Ranges owned only by dead nodes with no live heir (e.g. the whole ring of a lone dead seed)
//    are left alone by the automatic path; reclaim(node) takes them.
// A seed that never came up was never declared dead, so its share stays unused until reclaimed
// by the command.
//
// Fresh state: a node with a seed list but no complete saved ring does not adopt the version-1
// seed division at once: it is stale if the cluster already exists (e.g. a seed's disk was
// replaced). It first listens for bootstrapQuietMs; if a peer's full ring arrives meanwhile, that
// is the truth, else (a cold start of the whole cluster) it takes the seed division. Any node
// that lost its state dir relearns its slots, and its subnet, from the ring its peers keep.
import { EventEmitter } from "node:events";
import { WeftError } from "../../errors.js";
import type { NodeView } from "../gossip/delegate.js";
import { withDefaults } from "../options.js";
import type { Clock, Random, TimerHandle } from "../runtime.js";
import {
  forkWinner,
  Ring,
  type Conflict,
  type RingRun,
  type RingState,
  type SlotChange,
  type SlotSpan,
} from "./ring.js";
import type { LeaseSpace } from "./slots.js";
import type { LeaseStateStore } from "./store.js";
import { decodeMessage, encodeMessage, type LeaseMessage } from "./wire.js";

/** What leasing needs from gossip membership (the Memberlist offers this). */
export interface MembershipPort {
  localNode(): { readonly name: string };
  /** Alive and suspect members. */
  members(): readonly NodeView[];
  /** A stream exchange: delivers msg to the peer's lease layer (SubnetLeases.answer) and resolves
   *  to its answer from the same stream (undefined: none); rejects if it cannot. */
  request(name: string, msg: Uint8Array): Promise<Uint8Array | undefined>;
  /** Re-announces this node's meta (it carries the lease). */
  updateNode(): void;
}

/** The part of a pino logger used here. */
export interface LeaseLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface Lease {
  readonly slot: number;
  /** CIDR, e.g. "198.19.7.0/24". */
  readonly subnet: string;
}

export interface PeerLease extends Lease {
  readonly node: string;
}

export interface ReclaimReport {
  readonly node: string;
  /** Slots of the node this node took over as heir. */
  readonly takenHere: number;
  /** Slots of the node that remain with it in this node's view (other heirs take them). */
  readonly remaining: number;
  /** Nodes told to take over the rest. */
  readonly notified: readonly string[];
}

export interface Reservation {
  readonly node: string;
  /** Slots (subnets) the node owns in this view. */
  readonly slots: number;
  /** The subnet it used, if any. */
  readonly subnet: string | null;
  /** Clock ms when this node's grace timer reclaims it; null when no timer runs here. */
  readonly reclaimAt: number | null;
  /** Already condemned (by an operator or the grace period); its heirs take the slots. */
  readonly condemned: boolean;
}

export interface SubnetLeasesOptions {
  readonly space: LeaseSpace;
  /** The same list (in any order) on every seed node; other nodes may have it too or leave it out. */
  readonly seeds?: readonly string[];
  readonly membership: MembershipPort;
  readonly store: LeaseStateStore;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: LeaseLogger;
  /** Automatic reclaim of a dead node's slots, default 24 h. */
  readonly reclaimGraceMs?: number;
  /** How long to wait for a donor's reply, default 5 s. */
  readonly requestTimeoutMs?: number;
  /** Backoff between rounds of asking, default 1 s doubling to 30 s. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** How long a seed with no saved state waits to hear the cluster, default 10 s. */
  readonly bootstrapQuietMs?: number;
  /** How often the same waiting reason is logged again, default 60 s. */
  readonly waitLogEveryMs?: number;
}

/** The production defaults of SubnetLeasesOptions' timings. */
export const LEASE_DEFAULTS: LeaseTimings = Object.freeze({
  reclaimGraceMs: 24 * 3600_000,
  requestTimeoutMs: 5_000,
  retryMinMs: 1_000,
  retryMaxMs: 30_000,
  bootstrapQuietMs: 10_000,
  waitLogEveryMs: 60_000,
});

export type LeaseTimings = Required<
  Pick<
    SubnetLeasesOptions,
    "reclaimGraceMs" | "requestTimeoutMs" | "retryMinMs" | "retryMaxMs" | "bootstrapQuietMs" | "waitLogEveryMs"
  >
>;

export interface LeaseStats {
  /** Remote states refused (inconsistent, other seeds, malformed). */
  refusedStates: number;
  /** Own slots that a merge gave to another node (reclaimed while alive, or a rolled-back state). */
  slotsTakenFromUs: number;
  slotsGiven: number;
  slotsReclaimed: number;
}

export type LeaseEvents = {
  /** This node got a subnet (after start, or after losing one). */
  lease: [Lease];
  /** This node's subnet was taken by the cluster (see LEASE_LOST). */
  lost: [Lease];
  /** The ring's leases changed. */
  peers: [readonly PeerLease[]];
  /** For the gossip delegate: a message to broadcast (ring changes, reclaim notices). */
  announce: [LeaseMessage];
  inconsistency: [WeftError, readonly Conflict[]];
};

type Source = "gossip" | "full";

export class SubnetLeases extends EventEmitter<LeaseEvents> {
  readonly name: string;
  readonly stats: LeaseStats = { refusedStates: 0, slotsTakenFromUs: 0, slotsGiven: 0, slotsReclaimed: 0 };
  private readonly opts: Required<Omit<SubnetLeasesOptions, "seeds">> & { seeds: readonly string[] | undefined };
  /** The saved ring: what gossip, peers() and the lease see. Only commit() replaces it. */
  private ring: Ring;
  private current: Lease | null = null;
  /** The seed division, held back while a fresh node listens for the cluster's ring. */
  private pendingSeeds: Ring | null = null;
  private queue: Promise<void> = Promise.resolve();
  private started = false;
  private ready = false;
  private stopped = false;
  private waiters: Array<{ resolve: (l: Lease) => void; reject: (e: Error) => void }> = [];
  /** Nodes this node considers gone for good, and why. */
  private readonly condemned = new Map<string, "operator" | "grace period">();
  /** Automatic reclaims waiting for their grace period: the timer and when it fires (clock ms). */
  private readonly graceTimers = new Map<string, { timer: TimerHandle; at: number }>();
  private readonly timers = new Set<TimerHandle>();
  private pending: { id: number; to: string; timer: TimerHandle } | null = null;
  /** Transfers this node made that the receiver has not yet shown it knows (see deliverGift). */
  private readonly gifts = new Map<string, { spans: SlotSpan[]; timer: TimerHandle | null; delay: number }>();
  private nextRequestId: number;
  private readonly askedThisRound = new Set<string>();
  private retryTimer: TimerHandle | null = null;
  private retryDelay: number;
  private lastProbeAt = -Infinity;
  private acquireQueued = false;
  private lastWait: { code: string; at: number } | null = null;
  private lastReason: string | null = null;
  /** The last failed lease work (a save to a full disk), until a save succeeds. */
  private lastFailure: string | null = null;
  private lastPeersKey = "";

  constructor(options: SubnetLeasesOptions) {
    super();
    // The timings last: an option given as undefined means the default, never "none".
    this.opts = { ...options, ...withDefaults(LEASE_DEFAULTS, options), seeds: options.seeds };
    this.name = options.membership.localNode().name;
    this.ring = Ring.unknown(options.space.slotCount);
    this.retryDelay = this.opts.retryMinMs;
    this.nextRequestId = Math.floor(this.opts.random.next() * 0x7fffffff);
  }

  /** Reads the saved state (or starts from the seed list) and starts getting a subnet. */
  async start(): Promise<void> {
    if (this.started) throw new WeftError("LEASE_ALREADY_STARTED", "SubnetLeases.start() was called twice");
    this.started = true;
    try {
      await this.load();
    } catch (err) {
      this.stopped = true; // never let a later change overwrite a state file we could not read
      throw err;
    }
    // Until now messages were dropped: there was no saved state to answer from.
    this.ready = true;
    this.adoptLease();
    this.kickAcquire();
  }

  private async load(): Promise<void> {
    const { space, seeds, store } = this.opts;
    const saved = await store.load();
    const configured = seeds === undefined ? null : Ring.seeded(space.slotCount, seeds);
    this.ring = Ring.unknown(space.slotCount, configured?.seeds ?? null);
    if (saved) {
      if (saved.fingerprint !== space.fingerprint || saved.node !== this.name) {
        throw new WeftError(
          "LEASE_STATE_MISMATCH",
          `the saved lease state belongs to node ${saved.node} on "${saved.network}", but this is node ${this.name} on "${space.describe()}". ` +
            `Changing the network or the node name needs a new state dir (and the old node reclaimed)`,
        );
      }
      const loaded = this.ring.merge(saved.ring);
      if (!loaded.ok && loaded.error.code === "LEASE_RING_MISMATCH") {
        throw new WeftError(
          "LEASE_STATE_MISMATCH",
          `cannot use the saved lease state: ${loaded.error.message}; the seed list must never change`,
        );
      }
      if (!loaded.ok)
        throw new WeftError(
          "LEASE_STATE_CORRUPT",
          `the saved lease state is not a valid ring: ${loaded.error.message}`,
        );
    }
    if (configured && this.ring.knownCount() < space.slotCount) {
      this.pendingSeeds = configured;
      this.opts.log.info(
        { code: "LEASE_BOOTSTRAP", seeds: configured.seeds, waitMs: this.opts.bootstrapQuietMs },
        `no complete saved ring: listening ${this.opts.bootstrapQuietMs} ms for the cluster's ring before starting from the seed division`,
      );
      this.setTimer(this.opts.bootstrapQuietMs, () => void this.enqueue(() => this.adoptSeedDivision()));
    }
  }

  /** Nobody told us the ring within bootstrapQuietMs: a cold start, take the seed division. */
  private async adoptSeedDivision(): Promise<void> {
    if (!this.pendingSeeds) return;
    const next = this.ring.clone();
    const merged = next.merge(this.pendingSeeds.state());
    if (!merged.ok) return this.refuse(merged.error, merged.conflicts);
    this.opts.log.info(
      { code: "LEASE_BOOTSTRAP" },
      "heard no complete ring from any peer: starting from the seed division (cold start)",
    );
    try {
      await this.commit(next, []);
    } catch (err) {
      // Kept until saved: a failed save (a full disk) is retried with backoff, not forgotten.
      this.setTimer(this.retryDelay, () => void this.enqueue(() => this.adoptSeedDivision()));
      throw err;
    }
    this.pendingSeeds = null;
  }

  /** Resolves when this node holds a subnet (at once if it already does). */
  lease(): Promise<Lease> {
    if (this.current) return Promise.resolve(this.current);
    if (this.stopped) return Promise.reject(stoppedError());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  get space(): LeaseSpace {
    return this.opts.space;
  }

  /** Resolves once the work queued so far is done (e.g. merging the ring a join brought in). */
  settled(): Promise<void> {
    return this.queue;
  }

  /** This node's subnet, or null while it has none. */
  currentLease(): Lease | null {
    return this.current;
  }

  /** Why this node has no subnet yet (the last wait or failure), or null. */
  waitReason(): string | null {
    return this.current ? null : (this.lastFailure ?? this.lastReason);
  }

  /** Every node's subnet as this node's ring says (dead nodes included until reclaimed). */
  peers(): PeerLease[] {
    return this.ring
      .allLeases()
      .map(({ slot, owner }) => ({ node: owner, slot, subnet: this.opts.space.subnetOf(slot) }));
  }

  /** The saved ring, for push-pull. */
  ringState(): RingState {
    return this.ring.state();
  }

  /**
   * An operator's decision that `node` is gone for good: its slots go to their heirs. Refused
   * while membership sees the node alive or suspect. See the risks at the top of this file.
   */
  async reclaim(node: string): Promise<ReclaimReport> {
    if (!this.ready || this.stopped)
      throw new WeftError("LEASE_NOT_RUNNING", "reclaim needs a started, running SubnetLeases");
    if (node === this.name)
      throw new WeftError("LEASE_RECLAIM_SELF", "a node cannot reclaim itself; run reclaim on another node");
    if (this.isMember(node)) {
      throw new WeftError(
        "LEASE_RECLAIM_ALIVE",
        `${node} is alive or suspect in membership; reclaim only a node that is gone for good (stop it first)`,
      );
    }
    if (this.countOwned(node) === 0) {
      throw new WeftError(
        "LEASE_RECLAIM_UNKNOWN",
        `${node} owns no subnet in this node's view of the ring: nothing to reclaim (weft status lists the reserved ones)`,
      );
    }
    let report: ReclaimReport | undefined;
    await this.enqueue(async () => {
      this.condemned.set(node, "operator");
      const taken = await this.reclaimAsHeir(true);
      const remaining = this.ring.state().runs.filter((r) => r.owner === node);
      const heirs = new Set<string>();
      for (const r of remaining) {
        const heir = this.ring.ownerOf((r.start + this.ring.slotCount - 1) % this.ring.slotCount);
        if (heir !== null && heir !== this.name && heir !== node) heirs.add(heir);
      }
      this.emit("announce", { kind: "reclaim", node });
      const notice = this.encode({ kind: "reclaim", node });
      for (const heir of heirs) this.opts.membership.request(heir, notice).catch(() => undefined);
      report = { node, takenHere: taken, remaining: remaining.reduce((n, r) => n + r.count, 0), notified: [...heirs] };
    });
    return report!;
  }

  /** Stops timers and work; pending lease() calls reject with LEASE_STOPPED. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) this.opts.clock.cancel(t);
    this.timers.clear();
    this.graceTimers.clear();
    this.gifts.clear();
    this.pending = null;
    this.retryTimer = null;
    await this.queue;
    for (const w of this.waiters.splice(0)) w.reject(stoppedError());
  }

  // ---- called by the gossip delegate ----

  /** A ring state from gossip (a delta, re-broadcast if it teaches us something) or a full one. */
  mergeRemote(state: RingState, source: Source): void {
    if (this.ready) void this.enqueue(() => this.merge(state, source));
  }

  /** A message that needs no answer: a broadcast (or a one-way send). */
  handleMessage(from: string, msg: LeaseMessage): void {
    if (msg.kind === "state") this.mergeRemote(msg.ring, "gossip");
    else void this.answer(from, msg);
  }

  /**
   * A message sent with MembershipPort.request; what this returns goes back on the same stream, so
   * the sender gets it even when this node does not know the sender (e.g. it restarted without a
   * join list and nobody has pushed state to it yet). A request is answered with this node's whole
   * ring after any transfer is saved; a ring state (a transfer delivered again) with this node's
   * view of those slots after merging it, which tells the giver whether it arrived.
   */
  async answer(from: string, msg: LeaseMessage): Promise<LeaseMessage | undefined> {
    if (!this.ready) return undefined; // nothing to answer with yet; the sender tries again
    let reply: LeaseMessage | undefined;
    const run = (task: () => Promise<void>): Promise<void> => this.enqueue(task).catch(() => undefined); // logged by enqueue
    switch (msg.kind) {
      case "request":
        await run(async () => {
          reply = await this.answerRequest(from, msg.id);
        });
        return reply;
      case "state":
        await run(() => this.merge(msg.ring, "gossip"));
        return { kind: "state", ring: { seeds: this.ring.seeds, runs: this.ring.runsIn(msg.ring.runs) } };
      case "reply":
        await run(() => this.takeReply(from, msg.id, msg.granted, msg.ring));
        return undefined;
      case "reclaim":
        await run(() => this.takeReclaimNotice(from, msg.node));
        return undefined;
    }
  }

  /** Membership sees the node alive (joined, back, refuted): no reclaim for it. */
  memberAlive(node: string): void {
    const grace = this.graceTimers.get(node);
    if (grace) this.cancelTimer(grace.timer);
    this.graceTimers.delete(node);
    if (this.condemned.delete(node)) {
      this.opts.log.warn(
        { code: "LEASE_CONDEMNED_NODE_BACK", node },
        `${node} was to be reclaimed but is alive again; slots already taken stay with their heirs and it will get a new subnet`,
      );
    }
    this.kickAcquire();
  }

  /** Membership declared the node dead or it left: reclaim its slots after the grace period. */
  memberGone(node: string): void {
    if (node === this.name || this.graceTimers.has(node) || this.stopped) return;
    const owned = this.ring
      .state()
      .runs.filter((r) => r.owner === node)
      .reduce((n, r) => n + r.count, 0);
    if (owned > 0) {
      this.opts.log.info(
        { code: "LEASE_NODE_GONE", node, slots: owned, graceMs: this.opts.reclaimGraceMs },
        `${node} is gone; its ${owned} subnet slot(s) will be reclaimed after ${this.opts.reclaimGraceMs} ms unless it returns`,
      );
    }
    const timer = this.setTimer(this.opts.reclaimGraceMs, () => {
      this.graceTimers.delete(node);
      if (this.isMember(node)) return;
      void this.enqueue(async () => {
        this.condemned.set(node, "grace period");
        await this.reclaimAsHeir(false);
      });
    });
    this.graceTimers.set(node, { timer, at: this.opts.clock.now() + this.opts.reclaimGraceMs });
  }

  /** The timings in force (defaults filled in). */
  get settings(): LeaseTimings {
    const { reclaimGraceMs, requestTimeoutMs, retryMinMs, retryMaxMs, bootstrapQuietMs, waitLogEveryMs } = this.opts;
    return { reclaimGraceMs, requestTimeoutMs, retryMinMs, retryMaxMs, bootstrapQuietMs, waitLogEveryMs };
  }

  /**
   * Slots this view keeps for nodes that are not alive or suspect in membership: what each holds
   * and when this node's grace timer hands it to the heirs (null: no timer here, it waits for an
   * operator's reclaim or for membership to declare the node gone).
   */
  reservations(): Reservation[] {
    const live = new Set([this.name, ...this.otherMembers().map((m) => m.name)]);
    const owned = new Map<string, number>();
    for (const r of this.ring.state().runs)
      if (!live.has(r.owner)) owned.set(r.owner, (owned.get(r.owner) ?? 0) + r.count);
    return [...owned]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([node, slots]) => {
        const leased = this.ring.leasesOf(node);
        return {
          node,
          slots,
          subnet: leased.length > 0 ? this.opts.space.subnetOf(leased[0]) : null,
          reclaimAt: this.graceTimers.get(node)?.at ?? null,
          condemned: this.condemned.has(node),
        };
      });
  }

  // ---- the protocol ----

  private async merge(state: RingState, source: Source): Promise<void> {
    const next = this.ring.clone();
    const result = next.merge(state);
    if (!result.ok) {
      this.refuse(result.error, result.conflicts);
      return this.resolveForks(result.conflicts);
    }
    if (result.changed.length === 0) return;
    this.noteSlotsTaken(result.changed);
    const extra = this.freeExtraLeases(next);
    const learnt = source === "gossip" ? next.runsIn(result.changed) : [];
    await this.commit(next, [...learnt, ...extra]);
  }

  private refuse(error: WeftError, conflicts: readonly Conflict[]): void {
    this.stats.refusedStates++;
    this.opts.log.error({ code: error.code, conflicts: conflicts.slice(0, 5) }, error.message);
    this.emit("inconsistency", error, conflicts);
  }

  /**
   * Ring rule 5: of the forked slots, settle those that name this node (as owner in either
   * history) by writing the winner at version + 1. Bystanders wait for the named nodes; once their
   * new versions spread, every view agrees. If this node loses its subnet so, it says LEASE_LOST.
   */
  private async resolveForks(conflicts: readonly Conflict[]): Promise<void> {
    const mine = conflicts.filter((c) => c.mine.owner === this.name || c.theirs.owner === this.name);
    if (mine.length === 0) return;
    const next = this.ring.clone();
    const delta = mine.flatMap((c) => next.settleFork(c, c.mine.version, forkWinner(c.mine, c.theirs)));
    if (delta.length === 0) return;
    this.opts.log.warn(
      {
        code: "LEASE_FORK_SETTLED",
        slots: mine
          .slice(0, 5)
          .map((c) => ({ start: c.start, count: c.count, winner: forkWinner(c.mine, c.theirs).owner })),
      },
      `settled ${mine.length} slot(s) that two histories gave different owners: the leased one (or the smaller name) keeps each, at a new version every node takes`,
    );
    this.noteSlotsTaken(
      mine.map((c) => ({ start: c.start, count: c.count, before: c.mine, after: forkWinner(c.mine, c.theirs) })),
    );
    await this.commit(next, delta);
  }

  /** Gives the asker slots if it has none here (saved first), and says so with the whole ring:
   *  an asker that has slots in our view but still asks never learnt of them, and learns now. */
  private async answerRequest(from: string, id: number): Promise<LeaseMessage> {
    const next = this.ring.clone();
    const span = this.donation(next, from);
    if (span) {
      const delta = next.transfer(this.name, span, from);
      await this.commit(next, delta);
      this.stats.slotsGiven += span.count;
      this.opts.log.info({ code: "LEASE_GAVE", to: from, slots: span }, `gave ${span.count} subnet slot(s) to ${from}`);
      this.trackGift(from, span);
    }
    return { kind: "reply", id, granted: span !== undefined, ring: this.ring.state() };
  }

  /**
   * A committed transfer must reach its receiver, whatever was lost: the reply (a broken stream,
   * a timeout), the broadcast (a giver that knows no members, as a restarted node without a join
   * list), or the receiver's own save (a full disk). So the giver delivers it again, with backoff,
   * as a ring state the receiver answers with its view of those slots, until that view has them
   * at the transfer's version or newer, or the slots are no longer the receiver's here (given on,
   * reclaimed). Held in memory: after a restart of the giver, the receiver's asking again (it has
   * no subnet) and push-pull carry the saved transfer instead.
   */
  private trackGift(to: string, span: SlotSpan): void {
    const gift = this.gifts.get(to) ?? { spans: [], timer: null, delay: this.opts.retryMinMs };
    gift.spans.push(span);
    this.gifts.set(to, gift);
    if (!gift.timer) gift.timer = this.setTimer(gift.delay, () => void this.deliverGift(to));
  }

  private async deliverGift(to: string): Promise<void> {
    const gift = this.gifts.get(to);
    if (!gift) return;
    gift.timer = null;
    const given = this.ring.runsIn(gift.spans).filter((r) => r.owner === to);
    if (given.length === 0) {
      this.gifts.delete(to);
      return;
    }
    let shown: RingRun[] | undefined;
    try {
      const answer = await this.opts.membership.request(
        to,
        this.encode({ kind: "state", ring: { seeds: this.ring.seeds, runs: given } }),
      );
      const decoded = answer && decodeMessage(this.opts.space.fingerprint, answer);
      if (decoded && decoded.kind === "state") shown = [...decoded.ring.runs];
    } catch {
      // unreachable or unknown to membership for now: try again later
    }
    if (this.stopped || this.gifts.get(to) !== gift) return;
    if (shown && covers(shown, given)) {
      this.gifts.delete(to);
      return;
    }
    gift.delay = Math.min(gift.delay * 2, this.opts.retryMaxMs);
    gift.timer = this.setTimer(gift.delay, () => void this.deliverGift(to));
  }

  /** Which of our free slots to give `asker`: the upper half of our largest free run, keeping
   *  one slot for ourselves while we have no lease. Nothing if the asker already has slots. */
  private donation(ring: Ring, asker: string): SlotSpan | undefined {
    if (ring.leasesOf(asker).length > 0 || ring.freeSpansOf(asker).length > 0) return undefined;
    const spans = ring.freeSpansOf(this.name);
    if (this.current === null && spans.length > 0) {
      const first = spans.shift()!;
      if (first.count > 1) spans.unshift({ start: first.start + 1, count: first.count - 1 });
    }
    const largest = spans.reduce<SlotSpan | undefined>(
      (best, s) => (best === undefined || s.count > best.count ? s : best),
      undefined,
    );
    if (!largest) return undefined;
    const count = Math.ceil(largest.count / 2);
    return { start: largest.start + largest.count - count, count };
  }

  private async takeReply(from: string, id: number, granted: boolean, ring: RingState): Promise<void> {
    if (this.pending && this.pending.id === id && this.pending.to === from) {
      this.cancelTimer(this.pending.timer);
      this.pending = null;
      if (!granted) this.askedThisRound.add(from);
    }
    await this.merge(ring, "full");
    this.kickAcquire();
  }

  private async takeReclaimNotice(from: string, node: string): Promise<void> {
    if (node === this.name) {
      this.opts.log.error(
        { code: "LEASE_RECLAIM_OF_LIVE_NODE", by: from },
        `${from} says an operator reclaimed this node, but it is running: refusing; stop this node or undo the decision`,
      );
      return;
    }
    if (this.isMember(node)) {
      this.opts.log.warn(
        { code: "LEASE_RECLAIM_REFUSED_ALIVE", node, by: from },
        `not reclaiming ${node} as ${from} asked: it is alive or suspect here`,
      );
      return;
    }
    this.condemned.set(node, "operator");
    await this.reclaimAsHeir(false);
  }

  /** Takes over condemned nodes' runs that follow our slots. Returns how many slots. */
  private async reclaimAsHeir(takeOrphans: boolean): Promise<number> {
    // While the seed division is held back the ring is incomplete: do not judge who is heir.
    if (this.condemned.size === 0 || this.pendingSeeds) return 0;
    const next = this.ring.clone();
    const before = new Map([...this.condemned.keys()].map((n) => [n, this.countOwned(n)]));
    const delta = next.reclaim(this.name, new Set(this.condemned.keys()), takeOrphans);
    if (delta.length === 0) return 0;
    await this.commit(next, delta);
    const taken = delta.reduce((n, r) => n + r.count, 0);
    this.stats.slotsReclaimed += taken;
    for (const [node, had] of before) {
      const took = had - this.countOwned(node);
      if (took > 0) {
        this.opts.log.warn(
          { code: "LEASE_RECLAIMED", node, slots: took, reason: this.condemned.get(node) },
          `took over ${took} subnet slot(s) of ${node} (${this.condemned.get(node)}); if ${node} is in fact alive behind a partition, it loses its subnet when the partition heals`,
        );
      }
    }
    return taken;
  }

  private kickAcquire(): void {
    if (this.current || this.acquireQueued || this.stopped || !this.ready) return;
    this.acquireQueued = true;
    void this.enqueue(() => this.acquire());
  }

  private async acquire(): Promise<void> {
    this.acquireQueued = false;
    if (this.current || this.stopped) return;
    const own = this.ring.freeSpansOf(this.name);
    if (own.length > 0) {
      const next = this.ring.clone();
      await this.commit(next, next.setLeased(this.name, own[0].start, true));
      return;
    }
    if (this.pending) return;
    const donor = this.pickDonor();
    if (donor) return this.ask(donor);
    this.explainWait();
    this.askedThisRound.clear();
    const now = this.opts.clock.now();
    const members = this.otherMembers();
    if (members.length > 0 && now - this.lastProbeAt >= this.retryDelay) {
      // Our view may be stale: ask anyone, whose reply carries its ring (and maybe a grant).
      this.lastProbeAt = now;
      this.ask(members[Math.floor(this.opts.random.next() * members.length)].name);
    }
    this.scheduleRetry();
  }

  /** A reachable owner of free slots not yet asked this round: alive before suspect, most free first. */
  private pickDonor(): string | undefined {
    const members = new Map(this.otherMembers().map((m) => [m.name, m]));
    const candidates = [...this.ring.freeCounts()]
      .filter(([n]) => members.has(n) && !this.askedThisRound.has(n))
      .map(([n, free]) => ({
        n,
        free,
        suspect: members.get(n)!.state === "suspect" ? 1 : 0,
        tie: this.opts.random.next(),
      }));
    candidates.sort((a, b) => a.suspect - b.suspect || b.free - a.free || a.tie - b.tie);
    return candidates[0]?.n;
  }

  private ask(to: string): void {
    const id = (this.nextRequestId = (this.nextRequestId + 1) >>> 0);
    this.askedThisRound.add(to);
    const timer = this.setTimer(this.opts.requestTimeoutMs, () => {
      if (this.pending?.id !== id) return;
      this.pending = null;
      this.kickAcquire();
    });
    this.pending = { id, to, timer };
    const failed = (): void => {
      if (this.pending?.id !== id) return;
      this.cancelTimer(timer);
      this.pending = null;
      this.kickAcquire();
    };
    // The reply comes back on the request's own stream (see answer()).
    this.opts.membership
      .request(to, this.encode({ kind: "request", id }))
      .then((bytes) => {
        const reply = bytes && decodeMessage(this.opts.space.fingerprint, bytes);
        if (reply?.kind !== "reply" || reply.id !== id) return failed();
        void this.enqueue(() => this.takeReply(to, reply.id, reply.granted, reply.ring));
      })
      .catch(failed);
  }

  /** Logs why this node has no subnet yet, once per reason and then every waitLogEveryMs. */
  private explainWait(): void {
    const ownersOfFree = [...this.ring.freeCounts()].filter(([n]) => n !== this.name);
    let code: string;
    let msg: string;
    const detail: Record<string, unknown> = {};
    const known = this.ring.knownCount();
    if (known < this.ring.slotCount && ownersOfFree.length === 0) {
      code = "LEASE_WAITING_FOR_RING";
      msg = `no subnet yet: this node knows the owners of only ${known} of ${this.ring.slotCount} subnets, none free; waiting to hear the ring from a member`;
    } else if (ownersOfFree.length === 0) {
      code = "LEASE_WAITING_NO_FREE_SLOT";
      msg = `no subnet yet: every subnet of ${this.opts.space.describe()} is in use; waiting until one is reclaimed`;
    } else {
      code = "LEASE_WAITING_FOR_OWNER";
      detail.owners = ownersOfFree.map(([n, free]) => ({ node: n, free }));
      msg =
        `no subnet yet: the free subnets are owned by ${ownersOfFree.map(([n]) => n).join(", ")}, none of which answered ` +
        `(partitioned or down); waiting. Ownership is never claimed: they must come back, or be reclaimed`;
    }
    const now = this.opts.clock.now();
    if (this.lastWait?.code === code && now - this.lastWait.at < this.opts.waitLogEveryMs) return;
    this.lastWait = { code, at: now };
    this.lastReason = msg;
    this.opts.log.warn({ code, ...detail, retryMs: this.retryDelay }, msg);
  }

  private scheduleRetry(): void {
    if (this.retryTimer) return;
    this.retryTimer = this.setTimer(this.retryDelay, () => {
      this.retryTimer = null;
      this.kickAcquire();
    });
    this.retryDelay = Math.min(this.retryDelay * 2, this.opts.retryMaxMs);
  }

  /** Saves `next`, then makes it the ring everyone sees and announces `delta`. */
  private async commit(next: Ring, delta: readonly RingRun[]): Promise<void> {
    const leases = next.leasesOf(this.name);
    await this.opts.store.save({
      node: this.name,
      fingerprint: this.opts.space.fingerprint,
      network: this.opts.space.describe(),
      lease: leases.length > 0 ? this.opts.space.subnetOf(leases[0]) : null,
      ring: next.state(),
    });
    this.ring = next;
    this.lastFailure = null;
    // A peer's complete ring supersedes the held-back seed division.
    if (this.pendingSeeds && next.knownCount() === next.slotCount) this.pendingSeeds = null;
    if (delta.length > 0) this.emit("announce", { kind: "state", ring: { seeds: next.seeds, runs: delta } });
    this.adoptLease();
    const peers = this.peers();
    const key = JSON.stringify(peers);
    if (key !== this.lastPeersKey) {
      this.lastPeersKey = key;
      this.emit("peers", peers);
    }
    if (this.condemned.size > 0) void this.enqueue(() => this.reclaimAsHeir(false).then(() => undefined));
    this.kickAcquire();
  }

  /** Brings `current` in line with the ring: keeps, loses or adopts this node's leased slot. */
  private adoptLease(): void {
    const slots = this.ring.leasesOf(this.name);
    const previous = this.current;
    if (previous && slots.includes(previous.slot)) return;
    if (previous) {
      this.opts.log.error(
        { code: "LEASE_LOST", subnet: previous.subnet },
        `lost subnet ${previous.subnet}: the cluster gave it to another node (this node was reclaimed while alive, or its state was restored from an old copy); getting a new one`,
      );
      this.current = null;
      this.opts.membership.updateNode();
      this.emit("lost", previous);
    }
    if (slots.length === 0) return;
    this.current = { slot: slots[0], subnet: this.opts.space.subnetOf(slots[0]) };
    this.retryDelay = this.opts.retryMinMs;
    this.lastWait = null;
    this.opts.log.info(
      { code: "LEASE_ACQUIRED", subnet: this.current.subnet },
      `this node's subnet is ${this.current.subnet}`,
    );
    this.opts.membership.updateNode();
    this.emit("lease", this.current);
    for (const w of this.waiters.splice(0)) w.resolve(this.current);
  }

  /** A merge can show two leased slots of ours (an old one the cluster remembers after our state
   *  was lost, and the current one): give up all but the one in use, as their owner. */
  private freeExtraLeases(next: Ring): RingRun[] {
    const mine = next.leasesOf(this.name);
    if (mine.length < 2) return [];
    const keep = this.current && mine.includes(this.current.slot) ? this.current.slot : mine[0];
    return mine.filter((s) => s !== keep).flatMap((s) => next.setLeased(this.name, s, false));
  }

  private noteSlotsTaken(changed: readonly SlotChange[]): void {
    const taken = changed.filter((c) => c.before.owner === this.name && c.after.owner !== this.name);
    if (taken.length === 0) return;
    const count = taken.reduce((n, c) => n + c.count, 0);
    this.stats.slotsTakenFromUs += count;
    this.opts.log.warn(
      {
        code: "LEASE_SLOTS_TAKEN",
        slots: taken
          .slice(0, 10)
          .map((c) => ({ start: c.start, count: c.count, to: c.after.owner, version: c.after.version })),
      },
      `the cluster moved ${count} of this node's slot(s) to other nodes (reclaimed while this node was unreachable, or this node's state was rolled back); accepting`,
    );
  }

  private otherMembers(): NodeView[] {
    return this.opts.membership
      .members()
      .filter((m) => m.name !== this.name && (m.state === "alive" || m.state === "suspect"));
  }

  private isMember(node: string): boolean {
    return this.otherMembers().some((m) => m.name === node);
  }

  private countOwned(node: string): number {
    return this.ring
      .state()
      .runs.filter((r) => r.owner === node)
      .reduce((n, r) => n + r.count, 0);
  }

  private encode(msg: LeaseMessage): Uint8Array {
    return encodeMessage(this.opts.space.fingerprint, msg);
  }

  private enqueue(task: () => Promise<void> | void): Promise<void> {
    const run = this.queue.then(() => (this.stopped ? undefined : task()));
    this.queue = run.catch((err: unknown) => {
      const code = err instanceof WeftError ? err.code : "LEASE_INTERNAL";
      this.opts.log.error({ code, err }, `lease work failed: ${(err as Error).message}`);
      if (!this.current) {
        this.lastFailure = `${(err as Error).message} (retrying in ${this.retryDelay / 1000} s)`;
        this.scheduleRetry();
      }
    });
    return run;
  }

  private setTimer(ms: number, fn: () => void): TimerHandle {
    const handle = this.opts.clock.setTimer(ms, () => {
      this.timers.delete(handle);
      if (!this.stopped) fn();
    });
    this.timers.add(handle);
    return handle;
  }

  private cancelTimer(handle: TimerHandle): void {
    this.opts.clock.cancel(handle);
    this.timers.delete(handle);
  }
}

/** Whether `shown` (runs in slot order) has every slot of `given` at its version or newer. */
function covers(shown: readonly RingRun[], given: readonly RingRun[]): boolean {
  return given.every((g) => {
    let at = g.start;
    const end = g.start + g.count;
    for (const r of shown) {
      if (r.start + r.count <= at) continue;
      if (r.start > at || r.version < g.version) return false;
      at = r.start + r.count;
      if (at >= end) return true;
    }
    return false;
  });
}

function stoppedError(): WeftError {
  return new WeftError("LEASE_STOPPED", "subnet leasing was stopped before this node got a subnet");
}
