// The node side of subnet leasing, the coordinator of its concerns: bootstrap from the seed list
// or the saved state (bootstrap.ts), get a subnet (acquire.ts), give slots to members that ask
// (donate.ts) and deliver those transfers until acknowledged (transfer-resend.ts), reclaim dead
// nodes' slots (reclaim.ts). This file holds what they share: the saved ring and this node's
// lease, merging what gossip brings, settling forks, and the one way to change the ring.
//
// Order of effects, which the safety argument in ring.ts relies on: every change is made on a
// copy of the ring, saved to the state store, and only then becomes the ring that gossip, peers()
// and the lease see. Changes run one at a time (a SerialQueue), so a donor never hands the same
// slot to two askers and a half-saved change is never visible.
//
// Partitions: each side keeps what it owns. A node that needs a subnet and cannot reach an owner
// of free slots waits, logs why (LEASE_WAITING_*) and retries with backoff; it never claims.
//
// Admission: until the node has reached its cluster under its name (admit(): its join round
// settled with no name conflict) it only learns the ring: it merges and saves what it hears, and
// keeps the subnet its own saved state gives it unless the ring took it away, but takes no other,
// asks nobody for slots, gives none, and writes nothing for its name (forks, extra leases,
// reclaims). A node of a taken name otherwise acted for the name's owner before its conflict
// came in: it asked a member that did not know the name yet for slots, and wasted them (issue 14).
// A name lost after joining revokes the admission for good (revoke()).
import { EventEmitter } from "node:events";
import { WeftError } from "../../errors.js";
import type { NodeView } from "../gossip/delegate.js";
import { withDefaults } from "../options.js";
import type { TimerHandle } from "../runtime.js";
import { Timers } from "../timers.js";
import { SerialQueue } from "../../util/serial.js";
import { LeaseAcquirer } from "./acquire.js";
import { SeedBootstrap } from "./bootstrap.js";
import type { CommitSaved, LeaseCore, RingSource } from "./core.js";
import { ASKED, SlotDonor } from "./donate.js";
import { Reclaimer } from "./reclaim.js";
import { forkWinner, Ring, type Conflict, type RingRun, type RingState, type SlotChange } from "./ring.js";
import type { LeaseSpace } from "./slots.js";
import { TransferResender } from "./transfer-resend.js";
import {
  LEASE_DEFAULTS,
  type Lease,
  type LeaseEvents,
  type LeaseStats,
  type LeaseTimings,
  type PeerLease,
  type ReclaimReport,
  type Reservation,
  type ResolvedLeaseOptions,
  type SubnetLeasesOptions,
} from "./types.js";
import { encodeMessage, type LeaseMessage } from "./wire.js";

export class SubnetLeases extends EventEmitter<LeaseEvents> {
  readonly name: string;
  readonly stats: LeaseStats = { refusedStates: 0, slotsTakenFromUs: 0, slotsGiven: 0, slotsReclaimed: 0 };
  private readonly opts: ResolvedLeaseOptions;
  /** The saved ring: what gossip, peers() and the lease see. Only commit() replaces it. */
  private ring: Ring;
  private current: Lease | null = null;
  private readonly serial = new SerialQueue();
  private readonly timers: Timers;
  private started = false;
  private ready = false;
  private admitted = false;
  /** The name was taken (revoke()): never admitted again. */
  private revoked = false;
  /** The ring when revoke() came: what others are shown from then on (see ringShown). */
  private ringAtRevoke: Ring | undefined;
  private stopped = false;
  private waiters: Array<{ resolve: (l: Lease) => void; reject: (e: Error) => void }> = [];
  private lastPeersKey = "";
  /** What the concern modules see of this coordinator. */
  private readonly core: LeaseCore;
  private readonly bootstrap: SeedBootstrap;
  private readonly acquirer: LeaseAcquirer;
  private readonly resend: TransferResender;
  private readonly donor: SlotDonor;
  private readonly reclaimer: Reclaimer;

  constructor(options: SubnetLeasesOptions) {
    super();
    // The timings last: an option given as undefined means the default, never "none".
    this.opts = { ...options, ...withDefaults(LEASE_DEFAULTS, options), seeds: options.seeds };
    this.name = options.membership.localNode().name;
    this.ring = Ring.unknown(options.space.slotCount);
    this.timers = new Timers(options.clock);
    this.core = this.makeCore();
    this.acquirer = new LeaseAcquirer(this.core);
    this.bootstrap = new SeedBootstrap(this.core, () => this.acquirer.retryDelay);
    this.resend = new TransferResender(this.core);
    this.reclaimer = new Reclaimer(this.core, this.bootstrap);
    this.donor = new SlotDonor(this.core, this.resend);
  }

  /** Reads the saved state (or starts from the seed list); getting a subnet starts once admitted. */
  async start(): Promise<void> {
    if (this.started) throw new WeftError("LEASE_ALREADY_STARTED", "SubnetLeases.start() was called twice");
    this.started = true;
    let savedLease: string | null;
    try {
      const { ring, saved } = await this.bootstrap.load();
      this.ring = ring;
      savedLease = saved?.lease ?? null;
      this.resend.restore(saved?.transfers ?? []);
      this.reclaimer.restore(saved?.vacated ?? [], saved?.gone ?? []);
    } catch (err) {
      this.stopped = true; // never let a later change overwrite a state file we could not read
      throw err;
    }
    // Until now messages were dropped: there was no saved state to answer from.
    this.ready = true;
    this.adoptLease(savedLease);
    if (this.admitted) this.takeOwn();
  }

  /** This node reached its cluster under its name (see Admission at the top): it may now lease,
   *  ask for and give slots. Once; a later call does nothing. */
  admit(): void {
    if (this.admitted || this.revoked) return;
    this.admitted = true;
    if (this.ready) this.takeOwn();
  }

  /** This node's name turned out taken (after it joined): from now on it acts as before admission,
   *  for good, also in work already queued; its owner stops it next, which takes a few awaits, in
   *  which it must not give, take or settle slots under a name that is another node's. */
  revoke(): void {
    this.ringAtRevoke ??= this.ring;
    this.revoked = true;
    this.admitted = false;
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
    return this.serial.idle();
  }

  /** This node's subnet, or null while it has none. */
  currentLease(): Lease | null {
    return this.current;
  }

  /** Why this node has no subnet yet (the last wait or failure), or null. */
  waitReason(): string | null {
    return this.current ? null : this.acquirer.waitReason();
  }

  /** Every node's subnet as this node's ring says (dead nodes included until reclaimed). */
  peers(): PeerLease[] {
    return this.ring
      .allLeases()
      .map(({ slot, owner }) => ({ node: owner, slot, subnet: this.opts.space.subnetOf(slot) }));
  }

  /** The saved ring, for push-pull. */
  ringState(): RingState {
    return this.ringShown().state();
  }

  /** The ring others may see: once revoked, as it was then, as a change saved across revoke()
   *  was made under a name that is another node's (not announced, see commit) and the stop that
   *  comes next takes a few awaits. */
  private ringShown(): Ring {
    return this.ringAtRevoke ?? this.ring;
  }

  /**
   * An operator's decision that `node` is gone for good: its slots go to their heirs. Refused
   * while membership sees the node alive or suspect. See the risks in reclaim.ts.
   */
  reclaim(node: string): Promise<ReclaimReport> {
    return this.reclaimer.reclaim(node);
  }

  /** Stops timers and work; pending lease() calls reject with LEASE_STOPPED. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timers.cancelAll();
    this.reclaimer.stop();
    this.resend.stop();
    this.acquirer.stop();
    await this.serial.idle();
    for (const w of this.waiters.splice(0)) w.reject(stoppedError());
  }

  // ---- called by the gossip delegate ----

  /** A ring state from gossip (a delta, re-broadcast if it teaches us something) or a full one. */
  mergeRemote(state: RingState, source: RingSource): void {
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
        // Nothing given before admission; the asker goes on to another owner. It asked itself,
        // though: a sign of life the reclaimer (and the other family's) must hear.
        if (!this.admitted) {
          this.core.activeWhileGone(from, ASKED, true);
          return undefined;
        }
        try {
          await this.enqueue(async () => {
            // Checked again when its turn comes: revoke() may have come meanwhile.
            if (this.admitted) reply = await this.donor.answerRequest(from, msg.id);
          });
        } catch {
          // Its save failed (logged by enqueue; a full disk): none given, said with the ring as it
          // stands, not with the plain ack of a node not admitted yet, so the asker's wait tells
          // the two apart.
          if (this.admitted) return { kind: "reply", id: msg.id, granted: false, ring: this.ring.state() };
        }
        return reply;
      case "state": {
        await run(() => this.merge(msg.ring, "gossip"));
        const shown = this.ringShown();
        return { kind: "state", ring: { seeds: shown.seeds, runs: shown.runsIn(msg.ring.runs) } };
      }
      case "reply":
        await run(() => this.acquirer.takeReply(from, msg.id, msg.granted, msg.ring));
        return undefined;
      case "reclaim":
        await run(() => this.reclaimer.takeNotice(from, msg.node));
        return undefined;
    }
  }

  /** Membership sees the node alive (joined, back, refuted): no reclaim for it. */
  memberAlive(node: string): void {
    this.reclaimer.memberAlive(node);
    this.acquirer.kick();
  }

  /** Membership declared the node dead or it left: reclaim its slots after the grace period. */
  memberGone(node: string): void {
    this.reclaimer.memberGone(node);
  }

  /** The other family's ring saw a sign of life of `node` (the signOfLife event there). */
  signOfLifeElsewhere(node: string, sign: string, direct: boolean): void {
    this.reclaimer.activeWhileGone(node, sign, direct);
  }

  /** The timings in force (defaults filled in). */
  get settings(): LeaseTimings {
    const { reclaimGraceMs, requestTimeoutMs, retryMinMs, retryMaxMs, bootstrapQuietMs, waitLogEveryMs } = this.opts;
    return { reclaimGraceMs, requestTimeoutMs, retryMinMs, retryMaxMs, bootstrapQuietMs, waitLogEveryMs };
  }

  /** Slots this view keeps for nodes not alive or suspect in membership (see Reclaimer.reservations). */
  reservations(): Reservation[] {
    return this.reclaimer.reservations();
  }

  // ---- the shared ring ----

  private makeCore(): LeaseCore {
    const self = this;
    return {
      name: this.name,
      opts: this.opts,
      stats: this.stats,
      get ring() {
        return self.ring;
      },
      get current() {
        return self.current;
      },
      get ready() {
        return self.ready;
      },
      get admitted() {
        return self.admitted;
      },
      get stopped() {
        return self.stopped;
      },
      commit: (next, delta, saved) => this.commit(next, delta, saved),
      refuse: (error, conflicts) => this.refuse(error, conflicts),
      merge: (state, source) => this.merge(state, source),
      enqueue: (task) => this.enqueue(task),
      announce: (msg) => this.emit("announce", msg),
      kickAcquire: () => this.acquirer.kick(),
      activeWhileGone: (node, sign, direct) => {
        this.reclaimer.activeWhileGone(node, sign, direct);
        this.emit("signOfLife", node, sign, direct);
      },
      usable: (spans) => this.reclaimer.usable(spans),
      after: (ms, fn) => this.after(ms, fn),
      cancel: (handle) => this.timers.cancel(handle),
      otherMembers: () => this.otherMembers(),
      isMember: (node) => this.otherMembers().some((m) => m.name === node),
      memberStates: () => new Map(this.opts.membership.allMembers().map((m) => [m.name, m.state])),
      encode: (msg) => encodeMessage(this.opts.space.fingerprint, msg),
    };
  }

  private async merge(state: RingState, source: RingSource): Promise<void> {
    const next = this.ring.clone();
    const result = next.merge(state);
    if (!result.ok) {
      this.refuse(result.error, result.conflicts);
      return this.resolveForks(result.conflicts);
    }
    if (result.changed.length > 0) {
      this.noteSlotsTaken(result.changed);
      // Whoever a new version names as owner was alive when it was written (it wrote it, asked for it,
      // or wrote the lease that won a fork).
      this.signsOfLife(result.changed.map((c) => c.after.owner));
      const extra = this.admitted ? this.freeExtraLeases(next) : [];
      const learnt = source === "gossip" ? next.runsIn(result.changed) : [];
      await this.commit(next, [...learnt, ...extra]);
    }
    // After the signs of life: an owner this view knows only as a tombstone did not write these runs.
    this.reclaimer.ownersGone(state.runs, source === "push-pull");
  }

  /** Ring states newer than this view name these owners (Reclaimer.activeWhileGone). */
  private signsOfLife(owners: readonly (string | null)[]): void {
    for (const owner of new Set(owners))
      if (owner !== null && owner !== this.name)
        this.core.activeWhileGone(owner, "a ring change newer than this view names it", false);
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
    // Before admission a bystander: the other history's owner settles them.
    if (mine.length === 0 || !this.admitted) return;
    // The other history's owners acted where this view did not know it (before the commit below:
    // its reclaim pass must not take back a slot just settled in favour of a node condemned by a
    // grace period; an operator's verdict stands).
    this.signsOfLife(mine.map((c) => c.theirs.owner));
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

  /** Saves `next` with the transfers still to be acknowledged and the vacated subnets (in the same
   *  save as the change, so a crash cannot keep the change without them), then makes it the ring
   *  everyone sees and announces `delta`. */
  private async commit(next: Ring, delta: readonly RingRun[], saved: CommitSaved = {}): Promise<void> {
    const { transfers = this.resend.saved(), vacated = this.reclaimer.standing(next) } = saved;
    // The lease in use while the ring still shows it leased: before admission a merge can leave an
    // older lease of ours beside it (freeExtraLeases), and a restart adopts the saved one.
    const leases = next.leasesOf(this.name);
    const inUse = this.current && leases.includes(this.current.slot) ? this.current.slot : leases[0];
    const gone = this.reclaimer.goneIn(next);
    const wasAdmitted = this.admitted;
    await this.opts.store.save({
      node: this.name,
      fingerprint: this.opts.space.fingerprint,
      network: this.opts.space.describe(),
      lease: inUse !== undefined ? this.opts.space.subnetOf(inUse) : null,
      ring: next.state(),
      transfers,
      vacated,
      gone: gone.nodes,
    });
    this.ring = next;
    this.reclaimer.adopt(vacated, gone.offset);
    this.acquirer.saved();
    this.bootstrap.committed(next);
    // Revoked during the save (one fsync): what it wrote for the name, now another node's, is not
    // announced. On disk it stays; the stop comes next.
    if (delta.length > 0 && !(wasAdmitted && this.revoked))
      this.emit("announce", { kind: "state", ring: { seeds: next.seeds, runs: delta } });
    this.adoptLease();
    const peers = this.peers();
    const key = JSON.stringify(peers);
    if (key !== this.lastPeersKey) {
      this.lastPeersKey = key;
      this.emit("peers", peers);
    }
    this.reclaimer.committed();
    this.acquirer.kick();
  }

  /** Brings `current` in line with the ring: keeps, loses or adopts this node's leased slot; adopts
   *  one only once admitted, or at start (`saved`: the lease its saved state names, preferred while
   *  the ring shows it leased by this node, as the pods kept across the restart use it). */
  private adoptLease(saved?: string | null): void {
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
    if (slots.length === 0 || !(this.admitted || saved !== undefined)) return;
    const slot = slots.find((s) => this.opts.space.subnetOf(s) === saved) ?? slots[0];
    this.current = { slot, subnet: this.opts.space.subnetOf(slot) };
    this.acquirer.leased();
    this.opts.log.info(
      { code: "LEASE_ACQUIRED", subnet: this.current.subnet },
      `this node's subnet is ${this.current.subnet}`,
    );
    this.opts.membership.updateNode();
    this.emit("lease", this.current);
    for (const w of this.waiters.splice(0)) w.resolve(this.current);
  }

  /** Admitted and loaded: frees the extra leases a merge left, takes this node's subnet or gets
   *  one, and takes what condemned nodes left it as heir. */
  private takeOwn(): void {
    void this.enqueue(async () => {
      if (!this.admitted) return; // revoked meanwhile
      const next = this.ring.clone();
      const extra = this.freeExtraLeases(next);
      if (extra.length > 0) return this.commit(next, extra); // which does the rest
      this.adoptLease();
      this.reclaimer.committed();
      this.acquirer.kick();
    });
  }

  /** A merge can show two leased slots of ours (an old one the cluster remembers after our state
   *  was lost, and the current one): give up all but the one in use, as their owner. */
  private freeExtraLeases(next: Ring): RingRun[] {
    const mine = next.leasesOf(this.name);
    if (mine.length < 2) return [];
    const keep = this.current && mine.includes(this.current.slot) ? this.current.slot : mine[0];
    const extra = mine.filter((s) => s !== keep);
    this.opts.log.info(
      {
        code: "LEASE_EXTRA_FREED",
        kept: this.opts.space.subnetOf(keep),
        freed: extra.map((s) => this.opts.space.subnetOf(s)),
      },
      `the cluster showed ${extra.length} more subnet(s) leased by this node than the one in use (from before its state was lost or restored); freeing them`,
    );
    return extra.flatMap((s) => next.setLeased(this.name, s, false));
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

  /** One task at a time. Error policy: a failure is logged here and goes to whoever waits for the
   *  task; while this node has no subnet the acquirer says why and tries again after its backoff. */
  private enqueue(task: () => Promise<void> | void): Promise<void> {
    const run = this.serial.run(() => (this.stopped ? undefined : task()));
    run.catch((err: unknown) => {
      const code = err instanceof WeftError ? err.code : "LEASE_INTERNAL";
      this.opts.log.error({ code, err }, `lease work failed: ${(err as Error).message}`);
      if (!this.current) this.acquirer.failed((err as Error).message);
    });
    return run;
  }

  private after(ms: number, fn: () => void): TimerHandle {
    return this.timers.after(ms, () => {
      if (!this.stopped) fn();
    });
  }
}

function stoppedError(): WeftError {
  return new WeftError("LEASE_STOPPED", "subnet leasing was stopped before this node got a subnet");
}
