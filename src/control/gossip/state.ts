// The membership table and SWIM's state rules: alive, suspect, dead, left; incarnations and
// refutation; Lifeguard suspicion; tombstones.
//
// Precedence. A record is (incarnation, state) and only moves forward:
//   - a higher incarnation wins; at equal incarnation alive < suspect < dead < left;
//   - dead or left is final for its incarnation: it yields only to alive at a higher incarnation,
//     and only the node itself issues a higher incarnation (by refuting, or by restarting: a
//     restarted node starts at the wall-clock second, see initialIncarnation, and if that is not
//     enough it learns its old record from its join push-pull and refutes above it).
// Replay and stale gossip therefore cannot resurrect a dead node or roll a record back: an old
// message carries an incarnation the node has already issued, which is at most the one in its
// tombstone, and a tombstone (kept tombstoneRetentionMs, far longer than any retransmission or
// partition we tolerate) beats it. Tombstones travel in push-pull with their age, so a joiner
// learns them too and every copy expires at about the same time.
import type { Clock, Random } from "../runtime.js";
import type { MemberlistConfig } from "./config.js";
import type { EventDelegate, MemberState, NodeView } from "./delegate.js";
import { encodeMessage, type Message, type NodeState } from "./messages.js";
import type { Awareness } from "./awareness.js";
import type { TransmitLimitedQueue } from "./broadcast.js";
import { ProbeRing } from "./schedule.js";
import { Suspicion, suspicionBounds } from "./suspicion.js";
import { contain, type GossipCounters, type GossipLogger } from "./observability.js";

/** A member's entry in the membership table (not its gossip record, which is `meta`: src/control/node-record.ts). */
export interface MemberEntry {
  readonly name: string;
  host: string;
  port: number;
  incarnation: number;
  state: MemberState;
  meta: Uint8Array;
  /** clock.now() when state last changed (tombstone age, gossip-to-the-dead window). */
  stateChangedAt: number;
  /** clock.now() when this node last took any change to the record (a catch-up sends these). */
  updatedAt: number;
  /** clock.now() when this node last took a change to the record as news (gossip, a pull reply, a
   *  known member's change in a push-pull); -Infinity while it knows the record only from a peer's
   *  full state, where its age is unknown. Pull answers offer news only (see newsWithin). */
  newsAt: number;
  /** The protocol version this run of the member speaks, as far as this node knows (0: unknown,
   *  treated as 1). Learned from version-2 records (alive2, pullReply2, pushPull2 carry it),
   *  from a pushPull2 answer, or set to 1 when the member refused one (Memberlist.pushPull). A
   *  new incarnation told without it (a restart may be an older agent) makes it unknown again. */
  vsn: number;
}

type Alive = Extract<Message, { kind: "alive" }> | Extract<Message, { kind: "alive2" }>;
type Suspect = Extract<Message, { kind: "suspect" }>;
type Dead = Extract<Message, { kind: "dead" }>;

/** A restarted node's first incarnation: the wall-clock second, above anything it issued in an
 *  earlier run unless it refuted more than once a second on average (then refutation catches up). */
export function initialIncarnation(wallClockMs: number): number {
  return Math.max(1, Math.floor(wallClockMs / 1000));
}

/** What a "dead" message says: the node's own word is a graceful leave, anyone else's a death. */
function verdictOf(d: Dead): MemberState {
  return d.from === d.node ? "left" : "dead";
}

export function isLive(state: MemberState): boolean {
  return state === "alive" || state === "suspect";
}

export interface MembershipDeps {
  readonly config: MemberlistConfig;
  readonly clock: Clock;
  readonly random: Random;
  readonly self: {
    readonly host: string;
    readonly port: number;
    readonly meta: Uint8Array;
    readonly incarnation: number;
  };
  readonly broadcasts: TransmitLimitedQueue;
  readonly awareness: Awareness;
  readonly counters: GossipCounters;
  readonly logger: GossipLogger;
  readonly events?: EventDelegate;
  /** A last probe of a member whose suspicion ran out; answered = it acked (see suspicionExpired). */
  readonly lastCheck: (target: MemberEntry, done: (answered: boolean) => void) => void;
  /** A live record of this node's name at another address reached us (see Memberlist.checkName). */
  readonly nameClaimed?: (claim: { readonly host: string; readonly port: number }) => void;
  /** This node took a change to a record (the join-wave meter, pull.ts). */
  readonly changed?: () => void;
}

export class Membership {
  private readonly records = new Map<string, MemberEntry>();
  /** The same records in an array, for uniform random picks; listIndex maps name → position. */
  private readonly list: MemberEntry[] = [];
  private readonly listIndex = new Map<string, number>();
  /** randomNodes' scratch space, reused so that a call allocates only what it returns (it may
   *  still hold records since removed: no more than the table once held). */
  private readonly eligible: MemberEntry[] = [];
  /** "host:port" → the record last inserted or moved there (which protocol a packet's receiver speaks). */
  private readonly byAddress = new Map<string, MemberEntry>();
  private readonly suspicions = new Map<string, Suspicion>();
  private readonly counts: Record<MemberState, number> = { alive: 0, suspect: 0, dead: 0, left: 0 };
  /** Live members and this node, in the order every node probes them (see schedule.ts). */
  private readonly ring = new ProbeRing();
  /** Deaths and leaves taken here lately, oldest first (see recentDeaths). */
  private readonly deaths: { readonly msg: Dead; readonly at: number }[] = [];
  /** Probes since tombstones were last reaped (once per list length, as a round used to). */
  private probesSinceReap = 0;
  private leaving = false;
  private readonly me: MemberEntry;

  constructor(private readonly deps: MembershipDeps) {
    const { config, self, clock } = deps;
    this.me = {
      name: config.name,
      host: self.host,
      port: self.port,
      incarnation: self.incarnation,
      state: "alive",
      meta: self.meta,
      stateChangedAt: clock.now(),
      updatedAt: clock.now(),
      newsAt: clock.now(),
      vsn: config.protocolVersion,
    };
    this.insert(this.me);
    this.broadcast(this.aliveMessage(this.me));
    this.notify("join", this.me);
  }

  local(): MemberEntry {
    return this.me;
  }

  get(name: string): MemberEntry | undefined {
    return this.records.get(name);
  }

  /** Alive and suspect members, this node included (the N of every log N scaling). */
  liveCount(): number {
    return this.counts.alive + this.counts.suspect;
  }

  deadCount(): number {
    return this.counts.dead;
  }

  views(includeTombstones: boolean): NodeView[] {
    const out: NodeView[] = [];
    for (const r of this.list) if (includeTombstones || isLive(r.state)) out.push(view(r));
    return out;
  }

  /** Every record for push-pull, tombstones with their age. */
  states(): NodeState[] {
    const now = this.deps.clock.now();
    return this.list.map((r) => nodeState(r, now));
  }

  /** The records this node took a change to in the last windowMs (a catch-up's answer). */
  statesSince(windowMs: number): NodeState[] {
    const now = this.deps.clock.now();
    const out: NodeState[] = [];
    for (const r of this.list) if (now - r.updatedAt <= windowMs) out.push(nodeState(r, now));
    return out;
  }

  /** The records this node took a change to in the last windowMs (a delta pull's digest and answer). */
  changedWithin(windowMs: number): MemberEntry[] {
    const since = this.deps.clock.now() - windowMs;
    return this.list.filter((r) => r.updatedAt >= since);
  }

  /**
   * The records this node took as news in the last windowMs, oldest first (a delta pull's answer).
   * Not what it took from a peer's full state: a member that joined lately took all ~N records
   * then, so by changedWithin it would offer each puller hundreds it holds (outside the puller's
   * digest, which covers only its own recent changes), oldest first, and fill its reply with them
   * before the few the puller lacks (ARCHITECTURE.md, "Pull answers: news only").
   */
  newsWithin(windowMs: number): MemberEntry[] {
    const since = this.deps.clock.now() - windowMs;
    return this.list.filter((r) => r.newsAt >= since).sort((a, b) => a.newsAt - b.newsAt);
  }

  /** A pull reply's records: live ones only; deaths and suspicions travel by gossip and probes. */
  mergePulled(nodes: readonly NodeState[]): void {
    const counters = this.deps.counters.protocol;
    for (const n of nodes) {
      if (n.state !== "alive") continue;
      counters.pulledRecords++;
      const cur = n.name === this.me.name ? this.me : this.records.get(n.name);
      if (cur && cur.incarnation >= n.incarnation) counters.pulledKnown++;
      this.applyAlive(aliveOf(n), "pull");
    }
  }

  /**
   * How the record came: as news (gossip, gossiped on in full), in a peer's full state (gossiped
   * on a few times, see mergeRemote), or in a pull reply (not gossiped on: whoever else lacks it
   * pulls it too, pull.ts).
   */
  applyAlive(a: Alive, via: "news" | "state" | "pull" = "news"): void {
    if (a.node === this.me.name) {
      if (a.host !== this.me.host || a.port !== this.me.port) {
        // Another node uses our name (it joined through a member that did not know us). Refuting
        // would make the two outbid each other forever: keep our record, and let the members
        // decide which of the two keeps the name (Memberlist.checkName); the other stops.
        this.deps.counters.protocol.nameConflicts++;
        this.deps.logger.warn(
          { node: a.node, mine: `${this.me.host}:${this.me.port}`, claimed: `${a.host}:${a.port}` },
          "another node claims this node's name; give every node a unique name",
        );
        this.deps.nameClaimed?.({ host: a.host, port: a.port });
        return;
      }
      const same =
        a.incarnation === this.me.incarnation &&
        a.host === this.me.host &&
        a.port === this.me.port &&
        equalBytes(a.meta, this.me.meta);
      // Someone holds a newer or different record of us (an earlier run of this node): refute it.
      if (a.incarnation >= this.me.incarnation && !same && !this.leaving) this.refute(a.incarnation);
      return;
    }
    const cur = this.records.get(a.node);
    if (!cur) {
      const rec: MemberEntry = {
        name: a.node,
        host: a.host,
        port: a.port,
        incarnation: a.incarnation,
        state: "alive",
        meta: a.meta,
        stateChangedAt: this.deps.clock.now(),
        updatedAt: this.deps.clock.now(),
        newsAt: via === "state" ? -Infinity : this.deps.clock.now(),
        vsn: vsnOf(a),
      };
      this.insert(rec);
      if (via !== "pull") this.broadcast(a, undefined, via === "state");
      this.notify("join", rec);
      return;
    }
    if (a.incarnation <= cur.incarnation) {
      // The same run, told by someone who knows its version: learn it (nothing else changes).
      if (a.incarnation === cur.incarnation && cur.host === a.host && cur.port === a.port && vsnOf(a) > cur.vsn)
        cur.vsn = vsnOf(a);
      return;
    }
    if (isLive(cur.state) && (cur.host !== a.host || cur.port !== a.port)) {
      // Two live nodes claim one name; keep the one we know until it dies (memberlist does the same).
      this.deps.counters.protocol.nameConflicts++;
      this.deps.logger.warn(
        { node: a.node, known: `${cur.host}:${cur.port}`, claimed: `${a.host}:${a.port}` },
        "two nodes use one name; give every node a unique name",
      );
      return;
    }
    const wasLive = isLive(cur.state);
    const changed = cur.host !== a.host || cur.port !== a.port || !equalBytes(cur.meta, a.meta);
    this.cancelSuspicion(a.node);
    cur.incarnation = a.incarnation;
    cur.vsn = vsnOf(a);
    this.moveTo(cur, a.host, a.port);
    cur.meta = a.meta;
    this.touch(cur);
    this.setState(cur, "alive");
    if (via !== "pull") this.broadcast(a);
    if (!wasLive) this.notify("join", cur);
    else if (changed) this.notify("update", cur);
  }

  applySuspect(s: Suspect): void {
    if (s.node === this.me.name) return this.accused(s.incarnation);
    const cur = this.records.get(s.node);
    if (!cur || s.incarnation < cur.incarnation || !isLive(cur.state)) return;
    if (cur.state === "suspect" && s.incarnation === cur.incarnation) {
      // Another member's independent suspicion: shortens our timer; re-gossip so others count it.
      if (this.suspicions.get(s.node)?.confirm(s.from)) this.broadcast(s);
      return;
    }
    this.cancelSuspicion(s.node);
    this.setIncarnation(cur, s.incarnation);
    this.touch(cur);
    this.setState(cur, "suspect");
    this.startSuspicion(cur, s.from);
    this.broadcast(s);
    this.notify("suspect", cur);
  }

  /** Lifeguard's timer, scaled by the live count, started by `from` (who never confirms). */
  private startSuspicion(rec: MemberEntry, from: string): void {
    const { config, clock } = this.deps;
    const b = suspicionBounds(
      config.suspicionMult,
      config.suspicionMaxTimeoutMult,
      config.suspicionConfirmations,
      this.liveCount(),
      config.probeIntervalMs,
    );
    // The last probe takes one probe interval and ends when the suspicion runs out.
    const lead = Math.min(b.minMs, config.probeIntervalMs);
    const bounds = { minMs: b.minMs - lead, maxMs: b.maxMs - lead, k: b.k };
    const { name, incarnation } = rec;
    this.cancelSuspicion(name);
    this.suspicions.set(name, new Suspicion(clock, from, bounds, () => this.suspicionExpired(name, incarnation)));
  }

  applyDead(d: Dead): void {
    if (d.node === this.me.name && !this.leaving) return this.accused(d.incarnation);
    const cur = this.records.get(d.node);
    if (!cur || d.incarnation < cur.incarnation) return;
    const next = verdictOf(d);
    // Dead is final for its incarnation; only left (the node's own word) still upgrades it.
    if (cur.state === "left" || (cur.state === "dead" && next === "dead")) return;
    const wasLive = isLive(cur.state);
    this.cancelSuspicion(d.node);
    this.setIncarnation(cur, d.incarnation);
    this.touch(cur);
    this.setState(cur, next);
    this.deaths.push({ msg: d, at: cur.updatedAt });
    this.broadcast(d);
    this.notify(wasLive ? "leave" : "update", cur);
  }

  /**
   * The newest deaths and leaves (at most `max`) taken here in the last windowMs that still stand.
   * They ride on every ping and ack (FailureDetector), so a member the gossip of a death missed — a
   * lost packet, or just the luck of random targets — hears it from whoever it probes or is probed
   * by within a probe interval, rather than when its own suspicion runs out seconds later. A leave
   * rides too: a member that missed it would otherwise suspect the silent leaver and declare it
   * dead (a 10-node simulation with no loss did, on a rare draw of gossip targets).
   */
  recentDeaths(windowMs: number, max: number): Dead[] {
    const since = this.deps.clock.now() - windowMs;
    while (this.deaths.length > 0 && this.deaths[0].at < since) this.deaths.shift();
    const out: Dead[] = [];
    for (let i = this.deaths.length - 1; i >= 0 && out.length < max; i--) {
      const d = this.deaths[i].msg;
      const cur = this.records.get(d.node);
      if (cur?.state === verdictOf(d) && cur.incarnation === d.incarnation) out.push(d);
    }
    return out;
  }

  /**
   * Merges a peer's full state (push-pull). A remote "dead" only makes us suspect the node
   * (memberlist's rule): the peer may be on the other side of a partition, and the node gets the
   * chance to refute. Records we have never seen that are already tombstones are kept as such.
   * Members we did not know yet, other than the peer itself, are gossiped on only a few times and
   * after fresher news: the peer knew them, so most of the cluster does (a joiner learning 1,000
   * members would otherwise put 1,000 stale broadcasts ahead of real news). Changes to members we
   * knew, such as refutations after a partition, are gossiped in full. (Not gossiping them on
   * at all after a join saved a tenth of a 1,000-node join wave's bytes, but 24 nodes joining
   * one seed at once no longer converged without anti-entropy.)
   */
  mergeRemote(nodes: readonly NodeState[], peer: string): void {
    const self = this.me.name;
    for (const n of nodes) {
      const known = this.records.has(n.name);
      if (!known && (n.state === "dead" || n.state === "left")) {
        this.insertTombstone(n);
        continue;
      }
      switch (n.state) {
        case "alive":
          this.applyAlive(aliveOf(n), !known && n.name !== peer ? "state" : "news");
          break;
        case "left":
          this.applyDead({ kind: "dead", node: n.name, incarnation: n.incarnation, from: n.name });
          break;
        case "suspect":
          if (!known) this.applyAlive(aliveOf(n), n.name !== peer ? "state" : "news");
          this.applySuspect({ kind: "suspect", node: n.name, incarnation: n.incarnation, from: self });
          break;
        case "dead":
          this.applySuspect({ kind: "suspect", node: n.name, incarnation: n.incarnation, from: self });
          break;
      }
    }
  }

  /**
   * The failure detector got no ack in a whole probe round. A member we already suspect gets our
   * confirmation (as memberlist does): each failed probe by another member is independent
   * evidence, and it is what brings a crashed member's suspicion down to the minimum, since with
   * fast gossip most probers have heard of the suspicion before they probe.
   *
   * The helpers that nacked (`nackers`) pinged the member from where they are in the same round
   * and heard nothing either: independent witnesses, so they confirm our suspicion here (not
   * gossiped: the accusation stays ours). Without them our timer waited for the next probers'
   * failures, one a second, and a slot whose prober had crashed as well (1% crashing at once)
   * added a second to the death (1,000 simulated nodes: 3 of 50 crashes took 4 s instead of 3
   * from suspicion to death). A healthy member's helpers reach it and ack (no suspicion at all),
   * and an accuser too slow to hear its own acks in time hears the nacks late too, so they do not
   * count.
   */
  suspectByProbe(name: string, incarnation: number, nackers: Iterable<string> = []): void {
    const cur = this.records.get(name);
    if (!cur || !isLive(cur.state) || cur.incarnation !== incarnation) return;
    if (cur.state === "alive") this.deps.counters.protocol.suspicionsRaised++;
    this.applySuspect({ kind: "suspect", node: name, incarnation, from: this.me.name });
    const suspicion = this.suspicions.get(name);
    for (const n of nackers) suspicion?.confirm(n);
  }

  /** New local meta (Memberlist.updateNode): a higher incarnation makes it win everywhere. */
  setLocalMeta(meta: Uint8Array): void {
    // Once leaving, an alive would replace the "left" in the broadcast queue (same key): the leave
    // would end unsent, and peers would find the node dead by suspicion instead of left.
    if (this.leaving) return;
    this.me.incarnation++;
    this.me.meta = meta;
    this.touch(this.me);
    this.broadcast(this.aliveMessage(this.me));
    this.notify("update", this.me);
  }

  /** Marks this node left and broadcasts it; onSent runs once the broadcast has gone out its
   *  retransmit limit (or at once when nobody is there to tell). */
  leave(onSent: () => void): void {
    this.leaving = true;
    const anyoneElse = this.liveCount() > 1;
    this.touch(this.me);
    this.setState(this.me, "left");
    this.broadcast(
      { kind: "dead", node: this.me.name, incarnation: this.me.incarnation, from: this.me.name },
      anyoneElse ? onSent : undefined,
    );
    if (!anyoneElse) onSent();
  }

  /** The member to probe in this probe slot (see schedule.ts); now and then reaps old tombstones. */
  nextProbeTarget(slot: number): MemberEntry | undefined {
    if (++this.probesSinceReap >= this.list.length) {
      this.probesSinceReap = 0;
      this.reapTombstones();
    }
    const name = this.ring.target(this.me.name, slot);
    return name === undefined ? undefined : this.records.get(name);
  }

  /** The protocol version the live member at `addr` speaks, as far as known (0: unknown). */
  versionAt(addr: { readonly host: string; readonly port: number }): number {
    const rec = this.byAddress.get(`${addr.host}:${addr.port}`);
    return rec && isLive(rec.state) ? rec.vsn : 0;
  }

  /** The live member at `addr` refused protocol version 2 (Memberlist.pushPull): it speaks 1. */
  refusedVersion2(addr: { readonly host: string; readonly port: number }): void {
    const rec = this.byAddress.get(`${addr.host}:${addr.port}`);
    if (rec && isLive(rec.state) && rec !== this.me) rec.vsn = 1;
  }

  /**
   * Up to k distinct records passing accept, drawn uniformly: a partial Fisher–Yates shuffle of
   * the eligible records. memberlist's kRandomNodes makes at most 3n random draws instead, and
   * so may find fewer than exist: in a cluster of three, the one indirect-probe helper was missed
   * 2.6% of probes ((2/3)^9), and each such failed probe raised the prober's health score. The
   * eligible records go in a scratch array kept between calls (this runs every probe and gossip
   * tick): O(n) time, and only the k picked are allocated.
   */
  randomNodes(k: number, accept: (r: MemberEntry) => boolean): MemberEntry[] {
    const pool = this.eligible;
    let n = 0;
    for (const r of this.list) if (accept(r)) pool[n++] = r;
    const take = Math.min(k, n);
    for (let i = 0; i < take; i++) {
      const j = i + Math.floor(this.deps.random.next() * (n - i));
      const r = pool[j];
      pool[j] = pool[i];
      pool[i] = r;
    }
    return pool.slice(0, take);
  }

  stop(): void {
    for (const s of this.suspicions.values()) s.cancel();
    this.suspicions.clear();
  }

  /**
   * The suspicion is one probe interval from running out without a refutation. Before declaring
   * the member dead, probe it once more (with the accusation): if it answers, it is alive but its
   * refutation has not reached us (lost, or it missed the suspicion), so the suspicion starts over
   * instead. This last check is weft's addition to memberlist; it runs within the timeout (see
   * startSuspicion), so it adds no detection time.
   */
  private suspicionExpired(name: string, incarnation: number): void {
    this.suspicions.delete(name);
    const stillSuspect = (): MemberEntry | undefined => {
      const cur = this.records.get(name);
      return cur && cur.state === "suspect" && cur.incarnation === incarnation ? cur : undefined;
    };
    const cur = stillSuspect();
    if (!cur) return;
    this.deps.lastCheck(cur, (answered) => {
      const rec = stillSuspect();
      if (!rec) return;
      if (answered) {
        this.deps.counters.protocol.lastChecksAnswered++;
        this.startSuspicion(rec, this.me.name);
        return;
      }
      this.deps.counters.protocol.deathsDeclared++;
      this.deps.logger.info(
        { node: name, incarnation },
        "suspicion timed out and a last probe failed; declaring member dead",
      );
      this.applyDead({ kind: "dead", node: name, incarnation, from: this.me.name });
    });
  }

  /**
   * Someone suspects us or declares us dead. At our current incarnation (or above): refute. At an
   * older one we already refuted, but the accuser missed it: queue our current record again, so
   * it rides back on the ack to the accuser's probe (Lifeguard's buddy system puts the accusation
   * first in the probe packet) and reaches whoever else missed it.
   */
  private accused(incarnation: number): void {
    if (this.leaving) return;
    if (incarnation >= this.me.incarnation) this.refute(incarnation);
    else this.broadcast(this.aliveMessage(this.me));
  }

  private refute(accusedIncarnation: number): void {
    this.me.incarnation = Math.max(this.me.incarnation, accusedIncarnation) + 1;
    this.touch(this.me);
    this.broadcast(this.aliveMessage(this.me));
    // Being suspected is a hint that we are the slow one (Lifeguard).
    this.deps.awareness.applyDelta(1);
    this.deps.counters.protocol.refutations++;
  }

  private insertTombstone(n: NodeState): void {
    const rec: MemberEntry = {
      name: n.name,
      host: n.host,
      port: n.port,
      incarnation: n.incarnation,
      state: n.state,
      meta: n.meta,
      stateChangedAt: this.deps.clock.now() - Math.min(n.stateAgeMs, this.deps.config.tombstoneRetentionMs),
      updatedAt: this.deps.clock.now(),
      newsAt: -Infinity,
      vsn: 0,
    };
    this.insert(rec);
  }

  private insert(rec: MemberEntry): void {
    this.deps.changed?.();
    this.records.set(rec.name, rec);
    this.listIndex.set(rec.name, this.list.length);
    this.list.push(rec);
    this.byAddress.set(`${rec.host}:${rec.port}`, rec);
    this.counts[rec.state]++;
    if (isLive(rec.state)) this.ring.add(rec.name);
  }

  private reapTombstones(): void {
    const now = this.deps.clock.now();
    const retention = this.deps.config.tombstoneRetentionMs;
    for (const rec of [...this.list]) {
      if (isLive(rec.state) || rec === this.me || now - rec.stateChangedAt <= retention) continue;
      const at = this.listIndex.get(rec.name)!;
      const last = this.list.pop()!;
      if (last !== rec) {
        this.list[at] = last;
        this.listIndex.set(last.name, at);
      }
      this.listIndex.delete(rec.name);
      this.records.delete(rec.name);
      const at2 = `${rec.host}:${rec.port}`;
      if (this.byAddress.get(at2) === rec) this.byAddress.delete(at2);
      this.counts[rec.state]--;
    }
  }

  private moveTo(rec: MemberEntry, host: string, port: number): void {
    const from = `${rec.host}:${rec.port}`;
    if (this.byAddress.get(from) === rec) this.byAddress.delete(from);
    rec.host = host;
    rec.port = port;
    this.byAddress.set(`${host}:${port}`, rec);
  }

  /** A higher incarnation told without a version (suspect, dead) may be a restart as an older agent. */
  private setIncarnation(rec: MemberEntry, incarnation: number): void {
    if (incarnation > rec.incarnation) rec.vsn = 0;
    rec.incarnation = incarnation;
  }

  private setState(rec: MemberEntry, state: MemberState): void {
    if (rec.state === state) return;
    this.counts[rec.state]--;
    this.counts[state]++;
    // This node stays on the ring until it is gone, so the others' slots stay as they were.
    if (isLive(state)) this.ring.add(rec.name);
    else if (rec !== this.me) this.ring.remove(rec.name);
    rec.state = state;
    rec.stateChangedAt = this.deps.clock.now();
    rec.updatedAt = rec.stateChangedAt;
    rec.newsAt = rec.stateChangedAt;
  }

  /** Marks a record as changed here now (catch-ups and pulls send what changed lately). */
  private touch(rec: MemberEntry): void {
    rec.updatedAt = this.deps.clock.now();
    rec.newsAt = rec.updatedAt;
    this.deps.changed?.();
  }

  private cancelSuspicion(name: string): void {
    this.suspicions.get(name)?.cancel();
    this.suspicions.delete(name);
  }

  private aliveMessage(r: MemberEntry): Alive {
    return { kind: "alive", node: r.name, incarnation: r.incarnation, host: r.host, port: r.port, meta: r.meta };
  }

  private broadcast(m: Alive | Suspect | Dead, onDone?: () => void, alreadyKnown = false): void {
    // An "alive" goes as alive2 to members that speak version 2, with what we know of the
    // subject's version (so it spreads with the record), and as "alive" to the others.
    let payload = encodeMessage(m);
    let compact: Uint8Array | undefined;
    if (m.kind === "alive" || m.kind === "alive2") {
      const vsn = this.records.get(m.node)?.vsn ?? vsnOf(m);
      const { node, incarnation, host, port, meta } = m;
      payload = encodeMessage({ kind: "alive", node, incarnation, host, port, meta });
      if (this.deps.config.protocolVersion >= 2)
        compact = encodeMessage({ kind: "alive2", node, incarnation, host, port, meta, vsn });
    }
    // Deaths are rare and every second counts (crash → dead everywhere): they may ride on every
    // packet of a gossip round (broadcast.ts, gossipOncePerRound), as all news did before.
    this.deps.broadcasts.enqueue({
      key: m.node,
      payload,
      compact,
      onDone,
      alreadyKnown,
      joinNews: (m.kind === "alive" || m.kind === "alive2") && m.node !== this.me.name,
      urgent: m.kind === "dead",
    });
  }

  private notify(what: "join" | "update" | "leave" | "suspect", rec: MemberEntry): void {
    const events = this.deps.events;
    if (!events) return;
    const v = view(rec);
    contain(this.deps.counters, this.deps.logger, `events.${what}`, () => {
      if (what === "join") events.notifyJoin(v);
      else if (what === "update") events.notifyUpdate(v);
      else if (what === "leave") events.notifyLeave(v);
      else events.notifySuspect?.(v);
    });
  }
}

/** A record's "alive" message, with its version when the record came in version 2. */
function aliveOf(n: NodeState): Alive {
  const { name: node, incarnation, host, port, meta } = n;
  return n.vsn === undefined
    ? { kind: "alive", node, incarnation, host, port, meta }
    : { kind: "alive2", node, incarnation, host, port, meta, vsn: n.vsn };
}

const vsnOf = (a: Alive): number => (a.kind === "alive2" ? a.vsn : 0);

export function nodeState(r: MemberEntry, now: number): NodeState {
  return {
    vsn: r.vsn,
    name: r.name,
    host: r.host,
    port: r.port,
    incarnation: r.incarnation,
    state: r.state,
    meta: r.meta,
    stateAgeMs: isLive(r.state) ? 0 : Math.max(0, Math.round(now - r.stateChangedAt)),
  };
}

/** A snapshot of a record for the layers above (records themselves keep changing). */
export function view(r: MemberEntry): NodeView {
  return { name: r.name, host: r.host, port: r.port, incarnation: r.incarnation, state: r.state, meta: r.meta };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
