// Acquiring: how a node without a subnet gets one. A free slot of its own is leased at once;
// otherwise it asks a reachable owner of free slots (alive before suspect, most free first) to
// transfer some, one request at a time, each owner once per round. When nobody is left to ask it
// logs why (LEASE_WAITING_*), asks a random member (whose reply carries its ring: our view may be
// stale) and tries again with backoff (retryMinMs doubling to retryMaxMs). It never claims.
import type { NodeView } from "../gossip/delegate.js";
import type { TimerHandle } from "../runtime.js";
import type { LeaseCore } from "./core.js";
import type { RingState } from "./ring.js";
import { decodeMessage } from "./wire.js";

export class LeaseAcquirer {
  /** The request in flight: to whom, its id, its timeout. */
  private pending: { id: number; to: string; timer: TimerHandle } | null = null;
  private nextRequestId: number;
  private readonly askedThisRound = new Set<string>();
  /** Owners asked this round that answered with a plain ack: running, but not giving yet (not
   *  admitted, or still loading its state), rather than partitioned or down. */
  private readonly notYetThisRound = new Set<string>();
  /** Owners asked this round that replied without a grant: running and admitted, but they could
   *  not save the transfer (a full disk), or keep their last free slot while they have no subnet. */
  private readonly declinedThisRound = new Set<string>();
  private retryTimer: TimerHandle | null = null;
  private delay: number;
  private lastProbeAt = -Infinity;
  private queued = false;
  private lastWait: { code: string; at: number } | null = null;
  private lastReason: string | null = null;
  /** The last failed lease work (a save to a full disk), until a save succeeds. */
  private lastFailure: string | null = null;

  constructor(private readonly core: LeaseCore) {
    this.delay = core.opts.retryMinMs;
    this.nextRequestId = Math.floor(core.opts.random.next() * 0x7fffffff);
  }

  /** The backoff in force: the wait before the next round of asking. */
  get retryDelay(): number {
    return this.delay;
  }

  /** Why this node has no subnet yet (the last failure, else the last wait), or null. */
  waitReason(): string | null {
    return this.lastFailure ?? this.lastReason;
  }

  /** Queues a round unless this node has a subnet, a round is queued, or the layer is not running
   *  or not admitted. */
  kick(): void {
    const { core } = this;
    if (core.current || this.queued || core.stopped || !core.ready || !core.admitted) return;
    this.queued = true;
    void core.enqueue(() => this.acquire());
  }

  /** This node has a subnet: the next loss starts from the shortest backoff. */
  leased(): void {
    this.delay = this.core.opts.retryMinMs;
    this.lastWait = null;
  }

  /** A save succeeded. */
  saved(): void {
    this.lastFailure = null;
  }

  /** Lease work failed while this node has no subnet: say so, and try again after the backoff. */
  failed(message: string): void {
    this.lastFailure = `${message} (retrying in ${this.delay / 1000} s)`;
    this.scheduleRetry();
  }

  /** A donor's reply (on the request's stream, or as a message): merge its ring, then go on. */
  async takeReply(from: string, id: number, granted: boolean, ring: RingState): Promise<void> {
    if (this.pending && this.pending.id === id && this.pending.to === from) {
      this.core.cancel(this.pending.timer);
      this.pending = null;
      if (!granted) {
        this.askedThisRound.add(from);
        this.declinedThisRound.add(from);
      }
    }
    await this.core.merge(ring, "full");
    this.kick();
  }

  stop(): void {
    this.pending = null;
    this.retryTimer = null;
  }

  private async acquire(): Promise<void> {
    const { core } = this;
    this.queued = false;
    if (core.current || core.stopped || !core.admitted) return; // revoked meanwhile
    const own = core.usable(core.ring.freeSpansOf(core.name));
    if (own.length > 0) {
      const next = core.ring.clone();
      await core.commit(next, next.setLeased(core.name, own[0].start, true));
      return;
    }
    if (this.pending) return;
    const donor = this.pickDonor();
    if (donor) return this.ask(donor);
    this.explainWait();
    this.askedThisRound.clear();
    this.notYetThisRound.clear();
    this.declinedThisRound.clear();
    const now = core.opts.clock.now();
    const members = core.otherMembers();
    if (members.length > 0 && now - this.lastProbeAt >= this.delay) {
      // Our view may be stale: ask anyone, whose reply carries its ring (and maybe a grant).
      this.lastProbeAt = now;
      this.ask(members[Math.floor(core.opts.random.next() * members.length)].name);
    }
    this.scheduleRetry();
  }

  /** A reachable owner of free slots not yet asked this round: alive before suspect, most free first. */
  private pickDonor(): string | undefined {
    const members = new Map<string, NodeView>(this.core.otherMembers().map((m) => [m.name, m]));
    const candidates = [...this.core.ring.freeCounts()]
      .filter(([n]) => members.has(n) && !this.askedThisRound.has(n))
      .map(([n, free]) => ({
        n,
        free,
        suspect: members.get(n)!.state === "suspect" ? 1 : 0,
        tie: this.core.opts.random.next(),
      }));
    candidates.sort((a, b) => a.suspect - b.suspect || b.free - a.free || a.tie - b.tie);
    return candidates[0]?.n;
  }

  private ask(to: string): void {
    const { core } = this;
    const id = (this.nextRequestId = (this.nextRequestId + 1) >>> 0);
    this.askedThisRound.add(to);
    const timer = core.after(core.opts.requestTimeoutMs, () => {
      if (this.pending?.id !== id) return;
      this.pending = null;
      this.kick();
    });
    this.pending = { id, to, timer };
    const failed = (): void => {
      if (this.pending?.id !== id) return;
      core.cancel(timer);
      this.pending = null;
      this.kick();
    };
    // The reply comes back on the request's own stream (see SubnetLeases.answer).
    core.opts.membership
      .request(to, core.encode({ kind: "request", id }))
      .then((bytes) => {
        // A plain ack: the owner runs but gives nothing yet (a version that answers "not yet" so).
        if (bytes === undefined) this.notYetThisRound.add(to);
        const reply = bytes && decodeMessage(core.opts.space.fingerprint, bytes);
        if (reply?.kind !== "reply" || reply.id !== id) return failed();
        void core.enqueue(() => this.takeReply(to, reply.id, reply.granted, reply.ring));
      })
      .catch(failed);
  }

  /** Logs why this node has no subnet yet, once per reason and then every waitLogEveryMs. */
  private explainWait(): void {
    const { core } = this;
    const ring = core.ring;
    const ownersOfFree = [...ring.freeCounts()].filter(([n]) => n !== core.name);
    let code: string;
    let msg: string;
    const detail: Record<string, unknown> = {};
    const known = ring.knownCount();
    if (known < ring.slotCount && ownersOfFree.length === 0) {
      code = "LEASE_WAITING_FOR_RING";
      msg = `no subnet yet: this node knows the owners of only ${known} of ${ring.slotCount} subnets, none free; waiting to hear the ring from a member`;
    } else if (ownersOfFree.length === 0) {
      code = "LEASE_WAITING_NO_FREE_SLOT";
      msg = `no subnet yet: every subnet of ${core.opts.space.describe()} is in use; waiting until one is reclaimed`;
    } else {
      code = "LEASE_WAITING_FOR_OWNER";
      const declined = ownersOfFree.filter(([n]) => this.declinedThisRound.has(n)).map(([n]) => n);
      const notYet = ownersOfFree.filter(([n]) => this.notYetThisRound.has(n) && !declined.includes(n)).map(([n]) => n);
      const silent = ownersOfFree.filter(([n]) => !declined.includes(n) && !notYet.includes(n)).map(([n]) => n);
      detail.owners = ownersOfFree.map(([n, free]) => ({
        node: n,
        free,
        ...(notYet.includes(n) && { notYet: true }),
        ...(declined.includes(n) && { declined: true }),
      }));
      msg =
        `no subnet yet: the free subnets are owned by ${ownersOfFree.map(([n]) => n).join(", ")}, none of which gave any: ` +
        [
          declined.length > 0 &&
            `${declined.join(", ")} answered that it gave none (it could not save the transfer, e.g. a full disk, which its log says; or, logging nothing, it keeps its last free slot while it has no subnet, has no free slot left in its view, or its view gives this node slots already)`,
          notYet.length > 0 &&
            `${notYet.join(", ")} answered that it gives none yet (not joined its cluster yet, or starting)`,
          silent.length > 0 && `${silent.join(", ")} did not answer (partitioned or down)`,
        ]
          .filter(Boolean)
          .join("; ") +
        "; waiting. Ownership is never claimed: they must come back, or be reclaimed";
    }
    const now = core.opts.clock.now();
    if (this.lastWait?.code === code && now - this.lastWait.at < core.opts.waitLogEveryMs) return;
    this.lastWait = { code, at: now };
    this.lastReason = msg;
    core.opts.log.warn({ code, ...detail, retryMs: this.delay }, msg);
  }

  private scheduleRetry(): void {
    if (this.retryTimer) return;
    this.retryTimer = this.core.after(this.delay, () => {
      this.retryTimer = null;
      this.kick();
    });
    this.delay = Math.min(this.delay * 2, this.core.opts.retryMaxMs);
  }
}
