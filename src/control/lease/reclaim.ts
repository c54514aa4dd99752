// Reclaiming: a dead node's slots pass to their heirs (ring.ts rule 4: the owner of the slot just
// before each run, so reclaimers never compete) only by an explicit decision:
//  - reclaim(node): an operator says the node is gone for good. Refused while membership sees it
//    alive, also when its turn on the serial queue comes. The heirs take its slots; a notice is broadcast (and sent to each heir) so that heirs
//    on other nodes act too. Risk: if the node is in fact alive behind a partition, or its last
//    transfers have not spread yet, two nodes can use one subnet until the partition heals (the
//    node then loses its lease, LEASE_LOST, and conflicts are reported as LEASE_INCONSISTENT).
//  - after a grace period (default 24 h, flannel's lease TTL) since membership declared the node
//    dead or gone. Same risk if a node stays alive but partitioned for longer than the grace
//    period. The period counts from when this node first knew the node gone, saved with the ring
//    (`gone`, wall-clock time) when first known, so a restarted heir goes on counting: when its
//    timer ran in memory only, a heir restarting more often than the grace period (a daily
//    rollout, a crash loop) started it again each time and never handed the slots back. Wall
//    time, as the monotonic clock does not survive a restart (and the heir's down time counts,
//    as a crash loop's lives may be short), but counted on the monotonic clock while running and
//    saved again as wall time when the wall clock stepped (checked every CLOCK_CHECK_MS, and at
//    each commit): a start saved while the clock was behind (a boot without RTC, NTP correcting
//    it later) would otherwise reclaim at once after the next restart. A saved start later than
//    the wall clock is pulled back to it at the start and saved, or each restart would count a
//    whole grace period again. Only a step while the heir is down (or within a check) moves the
//    count: back, no more than a whole grace period from the restart; forward, shorter by the
//    step. Entries go once their node owns nothing and has no timer. A saved time
//    is for one death: membership's incarnation of the node is saved with it, and a later
//    incarnation (the node came back, then died again) starts the count again, as does any sign
//    of life (activeWhileGone). A heir that was down when the node died counts from when it
//    learns of the death (later, safer): no node's clock is compared with another's.
//    A node that learns of the death only as a tombstone in a peer's state (it restarted, or
//    joined after the death) is never told of it, and it may be the heir (a donation can make a
//    newcomer heir of the dead node's run): it starts the timer when a ring state names a node
//    its membership holds as dead or left (ownersGone). Before, only the nodes that saw the death
//    ran a timer, and if none of them was heir when it fired the slots stayed the dead node's.
//    Tombstones are reaped (tombstoneRetentionMs, 24 h): a heir restarting after that learns of
//    no death at all, and the slots stayed reserved for good. So an owner that a push-pull's ring
//    names, that ran (a run past version 1), and that membership does not know at all (the
//    push-pull's members were merged just before) is gone too, from when first noticed. A node
//    alive but not known yet (its join still spreading) is safe: the grace period, and its alive
//    record cancels the timer (memberAlive).
//    Ranges owned only by dead nodes with no live heir (e.g. the whole ring of a lone dead seed)
//    are left alone by the automatic path; reclaim(node) takes them.
// A seed that never came up was never declared dead, so its share stays unused until reclaimed
// by the command.
// A verdict is never older than the last sign of life: a node gone in membership that asks for
// slots, or that a ring change names as the owner of a version this view had not seen, was alive
// later than this view knew: after membership lost it (behind a partition now healed), or just
// before, its last change spreading late (its reclaim then waits one more grace period). Its
// condemnation is dropped and its grace period starts over (activeWhileGone); an operator's
// verdict yields only to the node's own request. Without this, a reclaimer that had not yet heard
// the node was back took the slots it had just given it, and gave them to the next asker too.
// A sign of life is the node's, not one ring's: a dual-stack node's counts in both (SubnetLeases
// emits it, the gossip delegate passes it to the other family's reclaimer).
// A reclaimed node that was alive uses its subnet until it hears of the reclaim: the heir hands
// that slot out last (usable), until the ring shows the node leasing another one, or the slot is no
// longer the heir's. The marks are saved with the ring, in the same save as the reclaim that makes
// them (and each later commit saves those still standing), so a restarted heir keeps them.
import { WeftError } from "../../errors.js";
import type { TimerHandle } from "../runtime.js";
import type { SeedBootstrap } from "./bootstrap.js";
import type { LeaseCore } from "./core.js";
import type { Ring, RingRun, SlotSpan } from "./ring.js";
import type { GoneNode, VacatedSlot } from "./store.js";
import type { ReclaimReport, Reservation } from "./types.js";

/** How often a running heir checks whether the wall clock stepped since it saved its deaths'
 *  starts (see the top of this file), and the step that makes it save them again. */
const CLOCK_CHECK_MS = 60_000;
const CLOCK_SLACK_MS = 1_000;

/** A death whose grace period this node counts: membership's incarnation of the node (absent when
 *  it gave none) and since when it counts, on the monotonic clock (clock.now()). */
interface Death {
  readonly incarnation?: number;
  readonly start: number;
}

export class Reclaimer {
  /** Nodes this node considers gone for good, and why. */
  private readonly condemned = new Map<string, "operator" | "grace period">();
  /** Automatic reclaims waiting for their grace period: the timer and when it fires (clock ms). */
  private readonly graceTimers = new Map<string, { timer: TimerHandle; at: number }>();
  /** Slots this node reclaimed that were a condemned node's subnet → that node (see the top); the
   *  marks saved with the ring in force. */
  private vacated = new Map<number, string>();
  /** Since when this node knows each dead node gone, for its grace period: kept while the node
   *  owns slots or its timer runs, saved with the ring for the nodes that still own slots. */
  private gone = new Map<string, Death>();
  /** wallNow() - now() when `gone` was last saved: how its monotonic starts became wall times. */
  private savedOffset = 0;
  /** A save of the deaths queued and not started yet: deaths heard meanwhile ride on it (each one
   *  saved the ring: K slot owners dying together were K fsyncs). */
  private deathsSaveQueued = false;
  private clockCheck: TimerHandle | undefined;

  constructor(
    private readonly core: LeaseCore,
    private readonly bootstrap: SeedBootstrap,
  ) {}

  /** An operator's decision (see the top of this file). */
  async reclaim(node: string): Promise<ReclaimReport> {
    const { core } = this;
    if (!core.ready || core.stopped)
      throw new WeftError("LEASE_NOT_RUNNING", "reclaim needs a started, running SubnetLeases");
    if (!core.admitted)
      throw new WeftError(
        "LEASE_NOT_ADMITTED",
        "this node has not reached its cluster yet (weft status: join): run reclaim on a node that has, or once this one has",
      );
    if (node === core.name)
      throw new WeftError("LEASE_RECLAIM_SELF", "a node cannot reclaim itself; run reclaim on another node");
    if (core.isMember(node)) {
      throw new WeftError(
        "LEASE_RECLAIM_ALIVE",
        `${node} is alive or suspect in membership; reclaim only a node that is gone for good (stop it first)`,
      );
    }
    if (core.ring.ownedBy(node) === 0) {
      throw new WeftError(
        "LEASE_RECLAIM_UNKNOWN",
        `${node} owns no subnet in this node's view of the ring: nothing to reclaim (weft status lists the reserved ones)`,
      );
    }
    let report: ReclaimReport | undefined;
    let back = false;
    let revoked = false;
    await core.enqueue(async () => {
      // Asked again on the queue: membership may have seen the node back while earlier work ran.
      if (core.isMember(node)) {
        back = true;
        return;
      }
      const verdict = this.condemned.get(node);
      const deadline = this.graceTimers.get(node)?.at;
      this.condemnByOperator(node);
      let taken: number;
      try {
        taken = await this.reclaimAsHeir(true);
      } catch (err) {
        // Not saved, so not made, as the error says: the operator's verdict goes too (the reclaim
        // pass after the next commit took the slots on it, and without the notice to the other
        // heirs), and what stood before it stands again: a verdict of the grace period, or its
        // timer with the deadline it had (the node is still gone).
        this.condemned.delete(node);
        if (verdict) this.condemned.set(node, verdict);
        else this.memberGone(node, deadline);
        throw err;
      }
      // Revoked while the reclaim was saved (the name is another node's): no notice goes out for it,
      // and the operator hears that, not of a reclaim made.
      if (!core.admitted) {
        revoked = true;
        return;
      }
      const ring = core.ring;
      const remaining = ring.state().runs.filter((r) => r.owner === node);
      const heirs = new Set<string>();
      for (const r of remaining) {
        const heir = ring.ownerOf((r.start + ring.slotCount - 1) % ring.slotCount);
        if (heir !== null && heir !== core.name && heir !== node) heirs.add(heir);
      }
      core.announce({ kind: "reclaim", node });
      const notice = core.encode({ kind: "reclaim", node });
      for (const heir of heirs) core.opts.membership.request(heir, notice).catch(() => undefined);
      report = { node, takenHere: taken, remaining: remaining.reduce((n, r) => n + r.count, 0), notified: [...heirs] };
    });
    if (revoked)
      throw new WeftError(
        "LEASE_NOT_ADMITTED",
        `this node's name turned out to be another node's while the reclaim of ${node} was saved (here only: no other node was told, and this node stops): run reclaim on another node`,
      );
    if (back)
      throw new WeftError(
        "LEASE_RECLAIM_ALIVE",
        `${node} came back in membership before its reclaim ran: nothing was reclaimed; stop it first`,
      );
    // The queue skips tasks once stopped: a stop() that overtook the verdict leaves no report.
    if (!report)
      throw new WeftError(
        "LEASE_NOT_RUNNING",
        `subnet leasing stopped before reclaiming ${node}; nothing was reclaimed`,
      );
    return report;
  }

  /** Another node's operator reclaimed `node`: take what follows our slots, unless it lives here. */
  async takeNotice(from: string, node: string): Promise<void> {
    const { core } = this;
    if (node === core.name) {
      core.opts.log.error(
        { code: "LEASE_RECLAIM_OF_LIVE_NODE", by: from },
        `${from} says an operator reclaimed this node, but it is running: this node loses its subnet if it lies in the slots the heirs take (LEASE_LOST), and then leases a new one; check the network between this node and ${from}, which saw it gone`,
      );
      return;
    }
    if (core.isMember(node)) {
      core.opts.log.warn(
        { code: "LEASE_RECLAIM_REFUSED_ALIVE", node, by: from },
        `not reclaiming ${node} as ${from} asked: it is alive or suspect here`,
      );
      return;
    }
    this.condemnByOperator(node);
    await this.reclaimAsHeir(false);
  }

  /** An operator's verdict: it replaces a pending grace period (whose verdict would be weaker). */
  private condemnByOperator(node: string): void {
    this.dropGrace(node);
    this.condemned.set(node, "operator");
  }

  /** Cancels `node`'s pending grace period, if any: its verdict, once queued, then finds no entry. */
  private dropGrace(node: string): void {
    const grace = this.graceTimers.get(node);
    if (grace) this.core.cancel(grace.timer);
    this.graceTimers.delete(node);
  }

  /** Membership sees the node alive (joined, back, refuted): no reclaim for it. */
  memberAlive(node: string): void {
    this.dropGrace(node);
    this.gone.delete(node);
    if (this.condemned.delete(node)) {
      this.core.opts.log.warn(
        { code: "LEASE_CONDEMNED_NODE_BACK", node },
        `${node} was to be reclaimed but is alive again; slots already taken stay with their heirs and it will get a new subnet`,
      );
    }
  }

  /**
   * A sign that `node`, gone in membership, was alive later than this view knew (see the top of
   * this file): no reclaim on the old verdict; the grace period starts over. `direct`: the node
   * itself asked; only that undoes an operator's verdict (a ring change may be its last act,
   * spread late).
   */
  activeWhileGone(node: string, sign: string, direct: boolean): void {
    if ((!this.graceTimers.has(node) && !this.condemned.has(node)) || this.core.isMember(node)) return;
    if (!direct && this.condemned.get(node) === "operator") return;
    this.dropGrace(node);
    this.condemned.delete(node);
    this.gone.delete(node);
    this.core.opts.log.warn(
      { code: "LEASE_GONE_NODE_ACTIVE", node, sign },
      `${node} is gone in membership but ${sign}: not reclaiming it on that verdict; its grace period starts over`,
    );
    this.memberGone(node);
  }

  /** Membership declared the node dead or it left: reclaim its slots after the grace period (or
   *  at `at`, clock ms, a deadline set before). Nothing if a verdict stands: a dead node reported
   *  again as left must not start a grace period whose verdict would replace an operator's. */
  memberGone(node: string, at?: number): void {
    const { core } = this;
    if (node === core.name || this.graceTimers.has(node) || this.condemned.has(node) || core.stopped) return;
    const graceMs = at === undefined ? this.graceLeft(node) : Math.max(0, at - core.opts.clock.now());
    const owned = core.ring.ownedBy(node);
    if (owned > 0) {
      core.opts.log.info(
        { code: "LEASE_NODE_GONE", node, slots: owned, graceMs },
        `${node} is gone; its ${owned} subnet slot(s) will be reclaimed after ${graceMs} ms unless it returns`,
      );
    }
    const grace = {
      at: core.opts.clock.now() + graceMs,
      timer: core.after(graceMs, () => {
        // The entry stays until the verdict runs on the serial queue: a sign of life or membership
        // seeing the node queued before it (a request, a merge) replaces or removes the entry, and
        // the verdict is then void.
        void core.enqueue(async () => {
          if (this.graceTimers.get(node) !== grace) return;
          this.graceTimers.delete(node);
          if (core.isMember(node)) return;
          this.condemned.set(node, "grace period");
          await this.reclaimAsHeir(false);
        });
      }),
    };
    this.graceTimers.set(node, grace);
  }

  /** What is left of `node`'s grace period: from its saved time (see the top of this file), or a
   *  whole one from now, saved (on the serial queue) for a later start. */
  private graceLeft(node: string): number {
    const { core } = this;
    const grace = core.opts.reclaimGraceMs;
    const now = core.opts.clock.now();
    const incarnation = core.opts.membership.allMembers().find((m) => m.name === node)?.incarnation;
    const saved = this.gone.get(node);
    if (saved && !(incarnation !== undefined && saved.incarnation !== undefined && incarnation > saved.incarnation))
      return Math.max(0, saved.start + grace - now);
    this.gone.set(node, { start: now, ...(incarnation !== undefined && { incarnation }) });
    this.watchClock();
    // Only for a node that owns slots: the commit that gives it some saves it (1,000 deaths of
    // nodes owning nothing were 1,000 saves of the ring). Not before start() loaded the saved
    // state, which this save would replace: restore() saves it then.
    if (core.ready && core.ring.ownedBy(node) > 0) this.saveDeaths();
    return grace;
  }

  /** Saves the deaths with the ring in force, on the serial queue: at most one such save waits
   *  (it reads `gone` when its turn comes), so any give queued after a death is saved after it. */
  private saveDeaths(): void {
    if (this.deathsSaveQueued) return;
    this.deathsSaveQueued = true;
    void this.core.enqueue(() => {
      this.deathsSaveQueued = false;
      return this.core.commit(this.core.ring, []);
    });
  }

  /** The gone nodes to save with `next`: those that still own slots in it, each start as wall time
   *  now (so a wall-clock step since the last save moves it with the clock), and the offset that
   *  made them wall times, for adopt() once they are saved (not before: a failed save left the
   *  step counted as saved, and no later check saved it again). */
  goneIn(next: Ring): { nodes: GoneNode[]; offset: number } {
    const { clock } = this.core.opts;
    const offset = clock.wallNow() - clock.now();
    const owned = next.ownedCounts();
    const nodes = [...this.gone]
      .filter(([node]) => (owned.get(node) ?? 0) > 0)
      .map(([node, d]) => ({
        node,
        since: Math.floor(d.start + offset),
        ...(d.incarnation !== undefined && { incarnation: d.incarnation }),
      }));
    return { nodes, offset };
  }

  /** While deaths are counted: saves their starts again when the wall clock stepped since the last
   *  save (see the top of this file). */
  private watchClock(): void {
    if (this.clockCheck || this.gone.size === 0) return;
    const { core } = this;
    this.clockCheck = core.after(CLOCK_CHECK_MS, () => {
      this.clockCheck = undefined;
      const offset = core.opts.clock.wallNow() - core.opts.clock.now();
      if (core.ready && Math.abs(offset - this.savedOffset) > CLOCK_SLACK_MS && this.goneIn(core.ring).nodes.length > 0)
        this.saveDeaths();
      this.watchClock();
    });
  }

  /** Owners of `runs` (a ring state) with no timer or verdict here yet start their grace period
   *  (see the top of this file) if membership knows them only as dead or left, or, in a push-pull's
   *  ring (whose members were merged just before), if it does not know them at all and they ran
   *  (a run of theirs past version 1; a seed that never came up owns only its share, version 1). */
  ownersGone(runs: readonly RingRun[], pushPull: boolean): void {
    const { core } = this;
    const untimed = new Set(
      runs.map((r) => r.owner).filter((n) => n !== core.name && !this.graceTimers.has(n) && !this.condemned.has(n)),
    );
    if (untimed.size === 0) return;
    const known = core.memberStates();
    for (const node of untimed) {
      const state = known.get(node);
      if (state === "dead" || state === "left") this.memberGone(node);
    }
    if (!pushPull) return;
    for (const r of runs) if (r.version > 1 && untimed.has(r.owner) && !known.has(r.owner)) this.memberGone(r.owner);
  }

  /** After every commit: a change may have made this node heir of a condemned node's run. */
  committed(): void {
    // A death is kept while its node owns slots or its timer runs: an entry left after its slots
    // were reclaimed was counted again for the node's next death that membership gave no
    // incarnation for (a push-pull's ring naming a node come back under its name, before its
    // alive record), and its new subnet reclaimed at once.
    const owned = this.core.ring.ownedCounts();
    for (const node of this.gone.keys()) if (!this.graceTimers.has(node) && !owned.has(node)) this.gone.delete(node);
    if (this.condemned.size > 0) void this.core.enqueue(() => this.reclaimAsHeir(false).then(() => undefined));
  }

  /**
   * Slots this view keeps for nodes that are not alive or suspect in membership: what each holds
   * and when this node's grace timer hands it to the heirs (null: no timer here, it waits for an
   * operator's reclaim or for membership to declare the node gone).
   */
  reservations(): Reservation[] {
    const { core } = this;
    const { clock } = core.opts;
    const live = new Set([core.name, ...core.otherMembers().map((m) => m.name)]);
    const leases = core.ring.leasesByOwner();
    return [...core.ring.ownedCounts()]
      .filter(([node]) => !live.has(node))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([node, slots]) => {
        const leased = leases.get(node);
        const at = this.graceTimers.get(node)?.at;
        return {
          node,
          slots,
          subnet: leased ? core.opts.space.subnetOf(leased[0]) : null,
          // The timer counts on the monotonic clock; shown as wall time (NTP steps since start moved that).
          reclaimAt: at === undefined ? null : clock.wallNow() + (at - clock.now()),
          condemned: this.condemned.has(node),
        };
      });
  }

  stop(): void {
    this.graceTimers.clear();
    this.clockCheck = undefined;
  }

  /** The marks to save with `next`: ours and `fresh` ones, less those `next` makes void: a slot no
   *  longer ours to give, or whose old user leases another slot. */
  standing(next: Ring, fresh: readonly VacatedSlot[] = []): VacatedSlot[] {
    const marks = new Map([...this.vacated, ...fresh.map((v) => [v.slot, v.node] as const)]);
    if (marks.size === 0) return [];
    const leases = next.leasesByOwner();
    return [...marks]
      .filter(
        ([slot, node]) => next.ownerOf(slot) === this.core.name && (leases.get(node) ?? []).every((s) => s === slot),
      )
      .map(([slot, node]) => ({ slot, node }));
  }

  /** The marks saved with the ring now in force (by a commit, or loaded at start), and the offset
   *  its deaths were saved with (goneIn). */
  adopt(marks: readonly VacatedSlot[], offset: number): void {
    this.vacated = new Map(marks.map((v) => [v.slot, v.node]));
    this.savedOffset = offset;
  }

  /** The saved marks and gone nodes after a restart (slots outside the ring are dropped). A grace
   *  period membership started before this (a death it heard of first) is counted again from the
   *  saved time. A saved start later than the wall clock (it was ahead then, or is behind now) is
   *  pulled back to now: kept, each restart would count a whole grace period again. What the file
   *  lacks (a death heard of first, a start pulled back) is saved once started. */
  restore(saved: readonly VacatedSlot[], gone: readonly GoneNode[]): void {
    const { core } = this;
    const ring = core.ring;
    const { clock } = core.opts;
    const now = clock.now();
    const wall = clock.wallNow();
    // The file's starts are read as of this offset (below): what it holds is saved with it.
    this.adopt(
      this.standing(
        ring,
        saved.filter((v) => v.slot < ring.slotCount),
      ),
      wall - now,
    );
    const early = [...this.gone.keys()];
    const loaded = gone.map((g): [string, Death] => [
      g.node,
      { start: now - Math.max(0, wall - g.since), ...(g.incarnation !== undefined && { incarnation: g.incarnation }) },
    ]);
    this.gone = new Map([...this.gone, ...loaded]);
    for (const node of early) {
      if (!this.graceTimers.has(node)) continue;
      this.dropGrace(node);
      this.memberGone(node);
    }
    const file = new Map(gone.map((g) => [g.node, g.since]));
    const differs = this.goneIn(ring).nodes.some(
      (g) => Math.abs(g.since - (file.get(g.node) ?? Number.NaN)) > 1 || !file.has(g.node),
    );
    // start() sets ready before the queue runs this.
    if (differs) this.saveDeaths();
    this.watchClock();
  }

  /** `spans` (free slots of this node's) less the vacated subnets; `spans` itself if nothing is
   *  taken out or nothing else is left. */
  usable(spans: SlotSpan[]): SlotSpan[] {
    if (this.vacated.size === 0) return spans;
    const holes = [...this.vacated.keys()].sort((a, b) => a - b);
    const out: SlotSpan[] = [];
    for (const span of spans) {
      let start = span.start;
      const end = span.start + span.count;
      for (const hole of holes) {
        if (hole < start || hole >= end) continue;
        if (hole > start) out.push({ start, count: hole - start });
        start = hole + 1;
      }
      if (end > start) out.push({ start, count: end - start });
    }
    return out.length > 0 ? out : spans;
  }

  /** Takes over condemned nodes' runs that follow our slots. Returns how many slots. A condemned
   *  node that owns nothing and that membership no longer knows (its tombstone reaped) is
   *  forgotten, with its death (`gone`): the list grew with every node that ever died, and every commit paid for it. Known
   *  to membership, the verdict still counts: its request is a sign of life (activeWhileGone), and
   *  an operator's takes a late ring change naming it. One that turns up owning slots again is
   *  judged anew: ownersGone starts its grace period, later and safer. */
  private async reclaimAsHeir(takeOrphans: boolean): Promise<number> {
    const { core } = this;
    // While the seed division is held back the ring is incomplete: do not judge who is heir. Before
    // admission nothing is taken: the verdicts wait for it (SubnetLeases.takeOwn).
    if (this.condemned.size === 0 || this.bootstrap.holdingSeeds || !core.admitted) return 0;
    const condemned = new Set(this.condemned.keys());
    const before = core.ring;
    const next = before.clone();
    const subnets = before
      .allLeases()
      .filter((l) => condemned.has(l.owner))
      .map(({ slot, owner }) => ({ slot, node: owner }));
    const delta = next.reclaim(core.name, condemned, takeOrphans);
    const taken = delta.reduce((n, r) => n + r.count, 0);
    if (taken > 0) {
      // The subnets taken here are marked in the same save as the reclaim.
      await core.commit(next, delta, { vacated: this.standing(next, subnets) });
      core.stats.slotsReclaimed += taken;
      this.logTaken(condemned, before, next);
    }
    // Once, after the pass: a node emptied by it goes at once, as does one that owned nothing.
    this.forget();
    return taken;
  }

  /** LEASE_RECLAIMED for each condemned node that owned slots in `before` and fewer in `after`. */
  private logTaken(condemned: ReadonlySet<string>, before: Ring, after: Ring): void {
    const { core } = this;
    for (const node of condemned) {
      const took = before.ownedBy(node) - after.ownedBy(node);
      if (took > 0) {
        core.opts.log.warn(
          { code: "LEASE_RECLAIMED", node, slots: took, reason: this.condemned.get(node) },
          `took over ${took} subnet slot(s) of ${node} (${this.condemned.get(node)}); if ${node} is in fact alive behind a partition, it loses its subnet when the partition heals`,
        );
      }
    }
  }

  /** Drops the verdicts on nodes that own nothing in the saved ring and are unknown to membership. */
  private forget(): void {
    const known = this.core.memberStates();
    for (const node of this.condemned.keys()) {
      if (this.core.ring.ownedBy(node) > 0 || known.has(node)) continue;
      this.condemned.delete(node);
      this.gone.delete(node);
    }
  }
}
