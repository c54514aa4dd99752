// Joining the cluster as memberlist's users expect from Consul's retry_join: the join list is
// tried until at least one target answers, with capped exponential backoff and jitter (so nodes
// booted together do not retry in lockstep), each failed round logged once and briefly. DNS names
// in the list are resolved again on every attempt, and a name may stand for several addresses.
// Whenever this node has no alive member left (a long partition, or every peer restarted on new
// addresses), it goes back to the list. A target that knows a live node of this node's name at
// another address that answers to it ends it all: the name is taken (GOSSIP_NAME_CONFLICT), and
// retrying cannot help; one that does not answer is likely this node's own from before a restart
// on a new address, and is retried until the members declare it dead (GOSSIP_NAME_HELD): every
// round fails so, whoever else answered, until an answer shows that record gone (Memberlist:
// dead there in a full answer, or a full answer without it from a target that reported it, from
// a member listing such a target at its address, or from a member the reports listed that lists
// one moved at its reported incarnation or later), soon after a round that reports it, at the
// growing backoff (capped at heldRetryMaxMs) after one that brought no such news.
// Rejoining, such a record cannot be this node's own: the name is taken.
// The members saved at the last run (saved-members.ts) are tried with the list, so a node whose list
// is empty or names only itself (the first node) gets back to its cluster after a restart. Such a
// node waits for that first round alone (so it serves nothing from its saved ring before merging
// the cluster's), then runs standalone if none answered, retrying them until a member is alive.
import { isWeftError } from "../errors.js";
import { formatHostPort } from "../net/ip.js";
import { withDefaults } from "./options.js";
import type { Addr, Clock, Random, TimerHandle } from "./runtime.js";
import { MEMBERS_KEPT } from "./saved-members.js";

export interface JoinTiming {
  /** First retry delay; doubles each failed round up to retryMaxMs. */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** retryMaxMs while this node's name is held (no answer showed the record gone since a report). */
  readonly heldRetryMaxMs: number;
  /** Each delay is shortened by up to this fraction, at random. */
  readonly jitter: number;
}

/** Failed rounds to saved members alone (an empty or self-only list) logged at warn; later ones at debug. */
export const QUIET_AFTER_ROUNDS = 3;

/** While held, GOSSIP_JOIN_NAME_HELD at warn at most this often, other rounds at debug: a node held
 *  for good (its whole old cluster gone) retries every few seconds until restarted. */
export const HELD_WARN_EVERY_MS = 30_000;

// Held: the members declare a dead node's record dead within a window of half a minute (lan; longer on
// wan), after which this node should join soon rather than up to 30 s later; a round every 5 s is
// still a fifth of the short retry's rate (it had been one a second), and its line a warning that
// something is wrong.
export const JOIN_DEFAULTS: JoinTiming = Object.freeze({
  retryMinMs: 1_000,
  retryMaxMs: 30_000,
  heldRetryMaxMs: 5_000,
  jitter: 0.25,
});

export interface JoinLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface JoinerDeps {
  readonly clock: Clock;
  readonly random: Random;
  /** Addresses of a host name or literal (several for a DNS name with several records). */
  readonly resolve: (host: string) => Promise<string[]>;
  /** One join round (memberlist's push-pull with each address); resolves to how many answered,
   *  once every address answered or timed out (a silent one holds it for tcpTimeoutMs). rejoin:
   *  this node was a member at its address, so a live record of its name elsewhere is another's. */
  readonly join: (addrs: Addr[], rejoin: boolean) => Promise<number>;
  /** The members' addresses saved for a restart, as they stand now (those that left are out). */
  readonly saved?: () => readonly Addr[];
  /** Alive or suspect members other than this node. */
  readonly othersAlive: () => number;
  /** A target reported a live record of this node's name elsewhere, not yet gone (Memberlist.nameIsHeld). */
  readonly nameHeld: () => boolean;
  /** This node's gossip address, left out of the list (a list shared by every node names it too). */
  readonly self: Addr;
  readonly log: JoinLogger;
  /** The name is taken (at the first join, a rejoin, or later): the owner must stop this node. */
  readonly nameTaken: (err: Error) => void;
  /** This node reached its cluster, or has none to reach (hasReached turned true), before the
   *  reached() waiters hear it; again after each rejoin. */
  readonly reached: () => void;
}

/** Where joining stands, for `weft status` and readiness. */
export type JoinState =
  /** The join list is empty, or names only this node, and no saved member answered the first
   *  round (or is left to try when rejoining): it starts a cluster of its own (retrying the saved
   *  members meanwhile, if any). */
  | "standalone"
  /** No target has answered yet, or the targets hold a live record of this node's name at a silent
   *  address (GOSSIP_JOIN_NAME_HELD): retrying (or, with saved members, the first round is under way). */
  | "joining"
  /** At least one target answered. */
  | "joined"
  /** Joined before, but no alive member is left: retrying the list. */
  | "rejoining"
  /** A target knows a live node of this name at another address; this node must not run. */
  | "name-conflict";

export interface JoinStatus {
  readonly state: JoinState;
  readonly targets: readonly string[];
  /** Rounds tried since the last success (or the start). */
  readonly failedRounds: number;
  readonly lastError?: string;
  /** Wall-clock ms of the next round while retrying. */
  readonly nextAttemptAt?: number;
  /** Wall-clock ms of the last successful join. */
  readonly joinedAt?: number;
}

export class Joiner {
  private readonly timing: JoinTiming;
  private state: JoinState;
  private failedRounds = 0;
  private lastError?: string;
  private nextAttemptAt?: number;
  private joinedAt?: number;
  private timer?: TimerHandle;
  private running = false;
  /** The keys changed while a round ran (see keysChanged): the next one comes at once. */
  private keysChangedInRound = false;
  private stopped = false;
  private readonly reachedWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private fatal?: Error;
  /** The saved addresses asked since the name was last not held (up to MEMBERS_KEPT): asked
   *  while it is held if nobody else is left to ask, or the last round brought no news (see round). */
  private savedAsked: readonly Addr[] = [];
  /** The last report of this node's name held elsewhere, failedRounds then (the rounds with no
   *  news since back off from there, growing from the first), and when the first of this hold came. */
  private heldReport?: { message: string; round: number; since: number };
  /** When GOSSIP_JOIN_NAME_HELD last came at warn in this hold (see HELD_WARN_EVERY_MS). */
  private heldWarnedAt?: number;

  constructor(
    private readonly targets: readonly Addr[],
    private readonly deps: JoinerDeps,
    timing: Partial<JoinTiming> = {},
  ) {
    this.timing = withDefaults(JOIN_DEFAULTS, timing);
    this.state = targets.length === 0 ? "standalone" : "joining";
  }

  /** Starts the first round at once (with no targets, only if members were saved). */
  start(): void {
    if (this.targets.length === 0 && this.saved().length === 0) return this.alone();
    this.state = "joining";
    this.attempt();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) this.deps.clock.cancel(this.timer);
    this.timer = undefined;
  }

  /** Resolves once a round a target answered has settled, or once it is standalone (at once
   *  without saved members, else after the first round); rejects on a name conflict. Not at the
   *  first answer: another address of the same round may still report the name taken, and a node
   *  reached leases, programs its subnet and writes subnet.env. */
  reached(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.state !== "joining") return Promise.resolve();
    return new Promise((resolve, reject) => this.reachedWaiters.push({ resolve, reject }));
  }

  /** Has this node reached its cluster (or has it none to reach)? */
  hasReached(): boolean {
    return this.state === "standalone" || this.state === "joined" || this.state === "rejoining";
  }

  status(): JoinStatus {
    // Kept on the monotonic clock; shown as wall time (NTP steps since the start moved that).
    const { clock } = this.deps;
    const wall = (t: number) => clock.wallNow() + (t - clock.now());
    return {
      state: this.state,
      targets: this.targets.map((t) => formatHostPort(t.host, t.port)),
      failedRounds: this.failedRounds,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      ...(this.nextAttemptAt !== undefined ? { nextAttemptAt: wall(this.nextAttemptAt) } : {}),
      ...(this.joinedAt !== undefined ? { joinedAt: wall(this.joinedAt) } : {}),
    };
  }

  /** A member reached this node (it joined us): while joining and waiting out a backoff, run a
   *  round now rather than stay unreached (unadmitted) until the next one, up to retryMaxMs away. A
   *  full round: its targets may still report the name taken. */
  memberJoined(): void {
    if (this.state !== "joining" || this.deps.othersAlive() === 0) return;
    this.roundNow();
  }

  /** The gossip keys changed (the key file read again): rounds may have failed for want of them
   *  (a node restarted with the file of before a rotation), so a round waiting out its backoff,
   *  up to retryMaxMs, runs now, and one under way is followed at once. The rounds' count, and
   *  so the backoff after this one and the quiet and warn rules, go on as they stood. */
  keysChanged(): void {
    if (this.running) this.keysChangedInRound = true;
    else this.roundNow();
  }

  /** The round waiting out a backoff, if any, now. */
  private roundNow(): void {
    if (!this.timer) return;
    this.deps.clock.cancel(this.timer);
    this.timer = undefined;
    this.attempt();
  }

  /** Membership lost a member: with nobody alive left, go back to the join list. */
  memberGone(): void {
    if (this.state !== "joined" || this.stopped || this.deps.othersAlive() > 0) return;
    this.state = "rejoining";
    this.failedRounds = 0;
    const saved = this.saved().length;
    const from = [this.targets.length > 0 && "the join list", saved > 0 && `${saved} saved member address(es)`];
    this.deps.log.warn(
      { code: "GOSSIP_REJOINING", targets: this.status().targets, saved },
      from.some(Boolean)
        ? `no alive member left: joining again from ${from.filter(Boolean).join(" and ")}`
        : "no alive member left, and no join target or saved member to try: waiting for a member to reach this node",
    );
    this.attempt();
  }

  private attempt(): void {
    if (this.stopped || this.running) return;
    this.running = true;
    this.nextAttemptAt = undefined;
    void this.round().finally(() => {
      this.running = false;
      if (this.keysChangedInRound) {
        this.keysChangedInRound = false;
        this.roundNow();
      }
    });
  }

  private async round(): Promise<void> {
    const failures: string[] = [];
    const addrs: Addr[] = [];
    const seen = new Set<string>();
    // Join-list entries standing for another node (or failing to resolve): with none, the list is
    // empty or every target is this node (a one-node cluster given its own address, as a shared
    // list of control-plane addresses is on a single control-plane node), whatever was saved.
    let listed = 0;
    const saved = this.saved();
    this.keepAsked(saved);
    const resolveAll = async (entries: Array<{ t: Addr; fromList: boolean }>) => {
      const resolved = await Promise.all(
        entries.map(async ({ t, fromList }) => {
          try {
            const hosts = (await this.deps.resolve(t.host)).filter(
              (host) => host !== this.deps.self.host || t.port !== this.deps.self.port,
            );
            if (fromList) listed += hosts.length;
            return hosts.map((host) => ({ host, port: t.port }));
          } catch (err) {
            if (fromList) listed++;
            failures.push(`${t.host}: ${(err as { code?: string }).code ?? (err as Error).message}`);
            return [];
          }
        }),
      );
      // In the order given, the list before the saved members: the first address is asked for the
      // full state (memberlist.join), as before members were saved.
      for (const a of resolved.flat()) {
        const key = formatHostPort(a.host, a.port);
        if (!seen.has(key)) addrs.push(a);
        seen.add(key);
      }
    };
    await resolveAll([
      ...this.targets.map((t) => ({ t, fromList: true })),
      ...saved.map((t) => ({ t, fromList: false })),
    ]);
    // Held with nobody left to ask, or after a round that brought no news (a --join entry that
    // never answers, a member met meanwhile that never knew the record): meeting a member drops
    // the saved members it does not hold (stillSaved), and they may be all this node has to learn
    // that its old record died. Not after a round that reported it: a dead one, dropped on
    // purpose, would hold every such short retry for tcpTimeoutMs.
    const noNews = this.heldReport !== undefined && this.heldReport.round < this.failedRounds;
    if ((addrs.length === 0 || noNews) && this.deps.nameHeld())
      await resolveAll(this.savedAsked.map((t) => ({ t, fromList: false })));
    if (this.stopped) return;
    const alone = listed === 0;
    // Nobody to reach at all (at the start, or rejoining once every saved member left). Not while
    // a report of this node's name elsewhere stands: standing alone would admit a double.
    if (addrs.length === 0 && failures.length === 0) {
      if (!this.deps.nameHeld()) return this.alone();
      failures.push("no join target is left to ask whether this node's name is still held elsewhere");
    }
    let answered = 0;
    try {
      if (addrs.length > 0) answered = await this.deps.join(addrs, this.state === "rejoining");
    } catch (err) {
      if (isWeftError(err, "GOSSIP_NAME_CONFLICT")) return this.nameConflict(err as Error);
      if (isWeftError(err, "GOSSIP_NAME_HELD")) return this.nameHeld(err as Error);
      failures.push((err as Error).message);
    }
    if (this.stopped) return;
    // Members may have found us meanwhile (they join us too): then there is nothing to retry. With
    // none alive, those that answered are gone again before the round settled (memberGone waits
    // for "joined"): retry.
    // Not while a target's report of this node's name elsewhere stands: those members may be ones
    // that did not know the record (a round whose targets all failed to resolve asks nobody).
    if (this.deps.othersAlive() > 0 && !this.deps.nameHeld()) return this.joined(answered, addrs.length);
    // Only saved members were tried, and none answered: run standalone, retrying them meanwhile.
    const held = this.deps.nameHeld();
    // A hold that cleared without joining: the rounds count afresh (those of a node alone, say).
    if (!held && this.heldReport) {
      this.failedRounds = 0;
      this.clearHold();
    }
    if (alone && this.state === "joining" && !held) this.alone();
    this.failedRounds++;
    // Held, but no target answered to report the record again or show it gone: no news, so
    // the growing backoff of a failed round, not the short retry of one that reported it; capped
    // lower, so the node joins soon once the record is declared dead (not below retryMinMs, nor above retryMaxMs).
    const { retryMinMs, retryMaxMs, heldRetryMaxMs } = this.timing;
    const delay = held
      ? this.backoff(
          this.failedRounds - (this.heldReport?.round ?? 0),
          Math.min(retryMaxMs, Math.max(retryMinMs, heldRetryMaxMs)),
        )
      : this.backoff();
    const outcome =
      addrs.length === 0 && failures.length > 0
        ? failures.join("; ")
        : `${answered > 0 ? `${answered} of ${addrs.length} address(es) answered, but ${held ? "none showed the record gone (only a member that knew it can)" : "their members are gone again"}` : `none of ${addrs.length} address(es) answered`}${failures.length ? ` (${failures.join("; ")})` : ""}`;
    const report = this.heldReport;
    this.lastError = held
      ? `${outcome}; still held${report ? ` (first reported ${Math.round((this.deps.clock.now() - report.since) / 1000)} s ago)` : ""}: ${report?.message ?? "a target reported this node's name live elsewhere"}`
      : outcome;
    // Saved members alone may be gone for good (replaced nodes): a few lines, then quiet, as the
    // node runs alone meanwhile. Not a held one: it is not ready, so it keeps warning, though
    // not with every round (HELD_WARN_EVERY_MS).
    const lone = alone && !held;
    const quiet = held ? !this.heldWarnDue() : lone && this.failedRounds > QUIET_AFTER_ROUNDS;
    const last = lone && this.failedRounds === QUIET_AFTER_ROUNDS ? "; further retries are logged at debug" : "";
    let code = "GOSSIP_JOIN_RETRY";
    if (held) code = "GOSSIP_JOIN_NAME_HELD";
    this.deps.log[quiet ? "debug" : "warn"](
      { code, round: this.failedRounds, retryInMs: Math.round(delay) },
      `join: ${this.lastError}; retrying in ${(delay / 1000).toFixed(1)} s${last}`,
    );
    this.retryIn(delay);
  }

  /** The next round after delay ms. */
  private retryIn(delay: number): void {
    this.nextAttemptAt = this.deps.clock.now() + delay;
    this.timer = this.deps.clock.setTimer(delay, () => {
      this.timer = undefined;
      this.attempt();
    });
  }

  private joined(answered: number, tried: number): void {
    this.deps.log.info(
      { code: "GOSSIP_JOINED", answered, tried, failedRounds: this.failedRounds },
      answered > 0
        ? `joined the cluster (${answered} of ${tried} join address(es) answered)`
        : "joined the cluster (a member reached this node first)",
    );
    this.state = "joined";
    this.failedRounds = 0;
    this.clearHold();
    this.lastError = undefined;
    this.joinedAt = this.deps.clock.now();
    this.deps.reached();
    for (const w of this.reachedWaiters.splice(0)) w.resolve();
  }

  private alone(): void {
    if (this.targets.length > 0)
      this.deps.log.info(
        { code: "GOSSIP_JOIN_SELF_ONLY", targets: this.status().targets },
        "every join target is this node itself: it starts the cluster, and the others join it",
      );
    this.state = "standalone";
    this.deps.reached();
    for (const w of this.reachedWaiters.splice(0)) w.resolve();
  }

  /**
   * A target holds a live record of this node's name at a silent address, most likely this node's
   * own before it restarted on a new one (Memberlist.nameHeld): the round failed, whoever else
   * answered, and members alive here do not count as joined. Retried after the shortest backoff,
   * not a growing one, so that the node joins soon after the members declare that record dead;
   * Memberlist bounds the wait in rounds that report the record again (then the name is taken
   * after all: GOSSIP_NAME_CONFLICT). Rounds no target answers leave it held (joining, not
   * ready), and back off as failed ones (round).
   */
  private nameHeld(err: Error): void {
    if (this.stopped) return;
    this.failedRounds++;
    this.lastError = err.message;
    this.heldReport = {
      message: err.message,
      round: this.failedRounds,
      since: this.heldReport?.since ?? this.deps.clock.now(),
    };
    const delay = this.backoff(1);
    this.deps.log[this.heldWarnDue() ? "warn" : "debug"](
      { code: "GOSSIP_JOIN_NAME_HELD", round: this.failedRounds, retryInMs: Math.round(delay) },
      `join: ${err.message}; retrying in ${(delay / 1000).toFixed(1)} s`,
    );
    this.retryIn(delay);
  }

  /** The name is taken (found at join, or later by Memberlist.checkName): no more joining. */
  nameConflict(err: Error): void {
    this.stop();
    this.state = "name-conflict";
    this.fatal = err;
    this.deps.log.error({ code: "GOSSIP_NAME_CONFLICT" }, err.message);
    for (const w of this.reachedWaiters.splice(0)) w.reject(err);
    // Told apart from the waiters: a rejoin's conflict has none (they were resolved at the first join).
    this.deps.nameTaken(err);
  }

  /** Whether this held round's line comes at warn (the first of the hold, then one per
   *  HELD_WARN_EVERY_MS), noting it if so. */
  private heldWarnDue(): boolean {
    const now = this.deps.clock.now();
    if (this.heldWarnedAt !== undefined && now - this.heldWarnedAt < HELD_WARN_EVERY_MS) return false;
    this.heldWarnedAt = now;
    return true;
  }

  private clearHold(): void {
    this.heldReport = undefined;
    this.heldWarnedAt = undefined;
  }

  private saved(): readonly Addr[] {
    return this.deps.saved?.() ?? [];
  }

  /** Saved addresses asked since the name was last not held, the newest first, up to MEMBERS_KEPT. */
  private keepAsked(saved: readonly Addr[]): void {
    const kept = this.deps.nameHeld() ? [...saved, ...this.savedAsked] : saved;
    const byKey = new Map(kept.map((a) => [formatHostPort(a.host, a.port), a]));
    this.savedAsked = [...byKey.values()].slice(0, MEMBERS_KEPT);
  }

  /** Capped exponential backoff after `round` failed rounds, shortened by up to `jitter` at random. */
  private backoff(round = this.failedRounds, maxMs = this.timing.retryMaxMs): number {
    const { retryMinMs, jitter } = this.timing;
    const base = Math.min(maxMs, retryMinMs * 2 ** Math.min(round - 1, 30));
    return base * (1 - jitter * this.deps.random.next());
  }
}
