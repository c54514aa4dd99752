// The public membership object: SWIM + Lifeguard over an encrypted transport, modelled on
// HashiCorp memberlist. It runs from construction until leave() or shutdown(): a failure-detector
// round every probe interval, gossip of queued broadcasts every gossip interval, push-pull
// anti-entropy with one random member, and reconnect attempts to dead members' addresses.
import { pino } from "pino";
import type { Addr, Clock, Random, Transport } from "../runtime.js";
import { Awareness } from "./awareness.js";
import { retransmitLimit, TransmitLimitedQueue } from "./broadcast.js";
import { validateConfig, type MemberlistConfig } from "./config.js";
import type { Delegate, EventDelegate, NodeView } from "./delegate.js";
import { isWeftError, WeftError } from "../../errors.js";
import { formatHostPort } from "../../net/ip.js";
import type { Keyring } from "./keyring.js";
import { encodeMessage, framedSize, type Envelope, type Message, type NodeState } from "./messages.js";
import { BROADCAST_OVERHEAD, Wire, type Request } from "./net.js";
import { contain, newCounters, type GossipCounters, type GossipLogger } from "./observability.js";
import { FailureDetector } from "./probe.js";
import { DeltaPull } from "./pull.js";
import { WaveMeter, waveRetransmitLimit } from "./wave.js";
import { initialIncarnation, isLive, Membership, nodeState, view } from "./state.js";
import { suspicionBounds } from "./suspicion.js";
import { Timers } from "../timers.js";

export interface MemberlistDeps {
  /** now() must be wall-clock aligned milliseconds (the restart incarnation is derived from it). */
  readonly clock: Clock;
  readonly transport: Transport;
  readonly random: Random;
  /** Shared with whoever rotates keys: install/use/remove take effect on the next frame. */
  readonly keyring: Keyring;
  readonly delegate?: Delegate;
  readonly events?: EventDelegate;
  readonly logger?: GossipLogger;
  /** Called once when this node lost its name to a live node at another address after joining
   *  (GOSSIP_NAME_CONFLICT, see checkName): it must stop without leaving. */
  readonly onNameLost?: (err: WeftError) => void;
}

/** Push-pull runs less often in big clusters: ×(ceil(log2 N − log2 32) + 1) above 32 (memberlist). */
export function pushPullInterval(baseMs: number, liveCount: number): number {
  if (liveCount <= 32) return baseMs;
  return baseMs * (Math.ceil(Math.log2(liveCount) - Math.log2(32)) + 1);
}

/** The window a join asks of its seeds other than the first (see join): just their latest news. */
const JOIN_INTRO_WINDOW_MS = 1;

/** What a user message costs in an envelope besides its payload: bin header + array, kind, bin header. */
const USER_MESSAGE_OVERHEAD = BROADCAST_OVERHEAD + 5;
const EMPTY = new Uint8Array(0);

/** A live record of this node's name elsewhere, as a join target reported it (see Memberlist.join). */
interface HeldName {
  readonly record: NodeState;
  /** How many live members the first report listed (the bound's cluster size). */
  readonly live: number;
  readonly since: number;
  /** When a round last reported it: see showsHeldGone. */
  readonly reportedAt: number;
  /** The targets that reported it: name → the address its answer listed it at (else the one it
   *  answered from), which a member that lists it there knew it by (see showsHeldGone). */
  readonly reporters: ReadonlyMap<string, Reporter>;
  /** The live members the reports listed (name → host:port), the record aside: their cluster, as
   *  the reporters knew it. */
  readonly fellows: ReadonlyMap<string, string>;
}

/** Where a reporter's answer listed it, at which incarnation (none: it did not list itself). */
interface Reporter extends Addr {
  readonly incarnation?: number;
}

/** A join target's answer: the live record of this node's name at another address it listed, or
 *  whether its state shows a held record gone (see showsHeldGone; its state was merged). */
type JoinAnswer =
  | {
      readonly sender: string;
      readonly at: Reporter;
      readonly record: NodeState;
      readonly live: number;
      readonly nodes: readonly NodeState[];
    }
  | { readonly sender: string; readonly record?: undefined; readonly heldGone: boolean };

export class Memberlist {
  private readonly config: MemberlistConfig;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly transport: Transport;
  private readonly delegate?: Delegate;
  private readonly logger: GossipLogger;
  private readonly stats: GossipCounters = newCounters();
  private readonly awareness: Awareness;
  private readonly broadcasts: TransmitLimitedQueue;
  private readonly membership: Membership;
  private readonly wire: Wire;
  private readonly detector: FailureDetector;
  private readonly wave: WaveMeter;
  private readonly pull: DeltaPull;
  private readonly timers: Timers;
  private running = true;
  private joinSyncPending = false;
  private readonly onNameLost?: (err: WeftError) => void;
  /** When the last name check started (clock ms); one runs at a time, at most one per 10 probes. */
  private nameCheckAt = -Infinity;
  private nameLost = false;
  /** A live record of this node's name at another address that a join target reported, when
   *  first (see nameHeld), and the targets that reported it; kept until a full answer shows it
   *  gone (see showsHeldGone), so a round in which the targets that know it are silent (a
   *  timeout, not an answer) neither admits this node nor restarts the bound, nor ends it. */
  private heldName?: HeldName;

  constructor(config: MemberlistConfig, deps: MemberlistDeps) {
    this.config = validateConfig(config);
    this.clock = deps.clock;
    this.random = deps.random;
    this.transport = deps.transport;
    this.delegate = deps.delegate;
    this.logger = deps.logger ?? pino({ level: "silent" });
    this.timers = new Timers(deps.clock);
    this.awareness = new Awareness(this.config.awarenessMaxMultiplier);
    this.wave = new WaveMeter(deps.clock, this.config.pullWindowMs, this.config.waveChanges);
    this.broadcasts = new TransmitLimitedQueue(
      (b) =>
        b.joinNews && this.wave.inWave() && this.pull.answering()
          ? waveRetransmitLimit(this.config.waveRetransmitMult, this.membership.liveCount())
          : retransmitLimit(this.config.retransmitMult, this.membership.liveCount()),
      this.config.maxQueuedBroadcasts,
      this.config.gossipOncePerRound,
    );
    const advertise = this.config.advertise ?? deps.transport.local;
    this.membership = new Membership({
      config: this.config,
      clock: deps.clock,
      random: deps.random,
      self: {
        host: advertise.host,
        port: advertise.port,
        meta: this.readMeta(),
        incarnation: initialIncarnation(deps.clock.now()),
      },
      broadcasts: this.broadcasts,
      awareness: this.awareness,
      counters: this.stats,
      logger: this.logger,
      events: deps.events,
      lastCheck: (target, done) => this.detector.confirm(target, done),
      nameClaimed: (claim) => void this.checkName(claim),
      changed: () => this.wave.note(),
    });
    this.onNameLost = deps.onNameLost;
    this.wire = new Wire({
      config: this.config,
      clock: deps.clock,
      transport: deps.transport,
      keyring: deps.keyring,
      counters: this.stats,
      logger: this.logger,
      piggyback: (to, overhead, budget) => this.piggyback(to, overhead, budget),
    });
    this.detector = new FailureDetector({
      config: this.config,
      clock: deps.clock,
      random: deps.random,
      membership: this.membership,
      awareness: this.awareness,
      wire: this.wire,
      counters: this.stats,
      logger: this.logger,
    });
    this.pull = new DeltaPull({
      config: this.config,
      clock: deps.clock,
      random: deps.random,
      membership: this.membership,
      wire: this.wire,
      wave: this.wave,
    });
    this.wire.onPacket((from, envelope) => this.onPacket(from, envelope));
    this.wire.onRequest((request) => this.onRequest(request));
    this.detector.start();
    this.every(this.config.gossipIntervalMs, () => this.gossip());
    this.every(
      () => pushPullInterval(this.config.pushPullIntervalMs, this.membership.liveCount()),
      () => this.antiEntropy(),
    );
    this.every(this.config.reconnectIntervalMs, () => this.reconnect());
    if (this.config.pullIntervalMs > 0) this.every(this.config.pullIntervalMs, () => this.pull.tick());
  }

  /**
   * Push-pull with each seed (join = true); resolves to how many answered (0: none, retry later).
   * Rejects with GOSSIP_NAME_CONFLICT when a seed knows a live member of this node's name at another
   * address that answers to it: the name is taken, and this node must not take part (memberlist
   * refuses it too); with GOSSIP_NAME_HELD when nothing there answers (see nameHeld), in every
   * round that reports it again, until a full answer shows it gone (see showsHeldGone; meanwhile
   * nameIsHeld, also after rounds that brought no such answer). addressKept: this node has been
   * a member at its present address (a rejoin), so such a record is not its own from before a
   * restart: the name is taken whether or not it answers.
   */
  async join(seeds: readonly Addr[], addressKept = false): Promise<number> {
    this.assertRunning();
    // With delta pulls, one seed's full state is enough: the others get a catch-up of a short
    // window, so they learn of us (and spread our record) without sending theirs whole, which was
    // most of a join wave's push-pull bytes. If the first seed fails, one that answered the
    // catch-up is asked in full.
    const introMs = this.config.pullIntervalMs > 0 ? JOIN_INTRO_WINDOW_MS : 0;
    const results = await Promise.allSettled(seeds.map((seed, i) => this.pushPull(seed, true, i === 0 ? 0 : introMs)));
    // Which answer carries a target's full state (every one without delta pulls; a catch-up leaves
    // out records that did not change, so its silence on the name proves nothing).
    let full = introMs > 0 ? 0 : undefined;
    if (introMs > 0 && results[0]?.status === "rejected") {
      full = results.findIndex((r) => r.status === "fulfilled");
      if (full > 0) results[full] = (await Promise.allSettled([this.pushPull(seeds[full], true)]))[0];
    }
    for (const [i, r] of results.entries()) {
      if (r.status === "rejected") this.logger.debug({ seed: seeds[i], err: r.reason }, "join: seed did not answer");
    }
    const answers = results.map((r) => (r.status === "fulfilled" ? r.value : undefined));
    const reports = answers.filter((a) => a?.record !== undefined);
    const reported = reports[0];
    if (reported?.record) {
      this.heldName = {
        record: reported.record,
        live: reported.live,
        since: this.heldName?.since ?? this.clock.now(),
        reportedAt: this.clock.now(),
        reporters: new Map([...(this.heldName?.reporters ?? []), ...reports.map((a) => [a!.sender, a!.at] as const)]),
        fellows: new Map([
          ...(this.heldName?.fellows ?? []),
          // Live ones only: a tombstone's node may have restarted into another cluster since.
          ...reports.flatMap((a) =>
            a!.nodes
              .filter((n) => isLive(n.state) && n.name !== reported.record.name)
              .map((n) => [n.name, formatHostPort(n.host, n.port)] as const),
          ),
        ]),
      };
    } else if (answers.some((a, i) => a?.record === undefined && a?.heldGone && (full === undefined || i === full))) {
      this.heldName = undefined;
    }
    // Only a round that reports the record again can show it outlived the bound: one in which
    // nothing answers (a restarted node's seeds still booting) is no evidence, and its old
    // address was pinged already. Such a round resolves as a failed one (nameIsHeld still true),
    // so the joiner backs off as for any round nobody answered.
    if (this.heldName && reported) throw await this.nameHeld(this.heldName, addressKept);
    return results.filter((r) => r.status === "fulfilled").length;
  }

  /** A join target reported a live record of this node's name elsewhere, and no full answer has shown
   *  it gone since (see showsHeldGone): members met meanwhile do not make this node joined. */
  nameIsHeld(): boolean {
    return this.heldName !== undefined;
  }

  /** Graceful leave: broadcast "left", wait until it went out (at most timeoutMs), then stop. */
  async leave(timeoutMs: number): Promise<void> {
    if (!this.running) return;
    await new Promise<void>((resolve) => {
      const timer = this.clock.setTimer(timeoutMs, resolve);
      this.membership.leave(() => {
        this.clock.cancel(timer);
        resolve();
      });
    });
    await this.shutdown();
  }

  /** Stops at once, telling nobody (peers will detect it as failed), and closes the transport. */
  async shutdown(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.detector.stop();
    this.timers.cancelAll();
    this.membership.stop();
    this.broadcasts.clear();
    await this.transport.close();
  }

  /** Alive and suspect members, this node included. */
  members(): NodeView[] {
    return this.membership.views(false);
  }

  /** How many members are alive or suspect, this node included (cheap; members() copies). */
  numMembers(): number {
    return this.membership.liveCount();
  }

  /** Every record, dead and left tombstones included. */
  allMembers(): NodeView[] {
    return this.membership.views(true);
  }

  localNode(): NodeView {
    return view(this.membership.local());
  }

  /** Re-reads delegate.nodeMeta and spreads it under a higher incarnation. */
  updateNode(): void {
    this.assertRunning();
    this.membership.setLocalMeta(this.readMeta());
  }

  /** One UDP packet to a member, no retries (delegate.notifyMsg on arrival, if it arrives). */
  sendBestEffort(name: string, msg: Uint8Array): void {
    this.assertRunning();
    this.wire.send(this.addressOf(name), [{ kind: "user", payload: msg }], false);
  }

  /** A stream exchange with a member; resolves once its delegate has taken the message. */
  async sendReliable(name: string, msg: Uint8Array): Promise<void> {
    await this.request(name, msg);
  }

  /**
   * A stream exchange with a member whose delegate may answer (Delegate.answerMsg) on the same
   * stream: resolves to the answer, or undefined for a plain ack. The answer does not depend on
   * the member knowing this node (a restarted node without a join list knows nobody yet).
   */
  async request(name: string, msg: Uint8Array): Promise<Uint8Array | undefined> {
    this.assertRunning();
    const reply = await this.wire.request(
      this.addressOf(name),
      { kind: "user", payload: msg },
      this.config.tcpTimeoutMs,
    );
    if (reply.message.kind === "user") return reply.message.payload;
    if (reply.message.kind !== "ack")
      throw new WeftError("GOSSIP_BAD_RESPONSE", `${name} answered ${reply.message.kind} to a reliable message`);
    return undefined;
  }

  /** A copy of the counters, as a plain object. */
  counters(): GossipCounters {
    return structuredClone(this.stats);
  }

  /** Lifeguard local health score (0 = healthy); timeouts are stretched by score + 1. */
  healthScore(): number {
    return this.awareness.score();
  }

  private addressOf(name: string): Addr {
    const rec = this.membership.get(name);
    if (!rec) throw new WeftError("GOSSIP_NODE_UNKNOWN", `no member named ${name}; check members()`);
    return { host: rec.host, port: rec.port };
  }

  private assertRunning(): void {
    if (!this.running) throw new WeftError("GOSSIP_NOT_RUNNING", "this memberlist was shut down; create a new one");
  }

  private readMeta(): Uint8Array {
    const meta = this.delegate?.nodeMeta(this.config.maxMetaBytes) ?? EMPTY;
    if (meta.length > this.config.maxMetaBytes) {
      throw new WeftError(
        "GOSSIP_META_TOO_BIG",
        `node meta is ${meta.length} bytes, over maxMetaBytes ${this.config.maxMetaBytes}`,
      );
    }
    return meta;
  }

  /** A periodic task with a random first delay (nodes started together do not run in lockstep). */
  private every(intervalMs: number | (() => number), task: () => void): void {
    const next = typeof intervalMs === "number" ? () => intervalMs : intervalMs;
    const run = (): void => {
      if (!this.running) return;
      task();
      this.timers.after(next(), run);
    };
    this.timers.after(Math.floor(this.random.next() * next()), run);
  }

  /** Our broadcasts first (compact to a member known to speak version 2), then the layer above's,
   *  wrapped as user messages. */
  private piggyback(to: Addr, overhead: number, budget: number): Uint8Array[] {
    const target = { id: `${to.host}:${to.port}`, peers: this.membership.liveCount() - 1 };
    const out = this.broadcasts.take(overhead, budget, this.speaksCompact(to), target);
    if (!this.delegate) return out;
    let left = budget;
    for (const m of out) left -= m.length + overhead;
    if (left <= USER_MESSAGE_OVERHEAD) return out;
    for (const payload of this.delegate.getBroadcasts(USER_MESSAGE_OVERHEAD, left, target)) {
      const encoded = encodeMessage({ kind: "user", payload });
      if (framedSize(encoded.length) > left) break;
      left -= framedSize(encoded.length);
      out.push(encoded);
    }
    return out;
  }

  /** Whether the member at `to` is known to speak protocol version 2, and so may be sent its kinds. */
  private speaksCompact(to: Addr): boolean {
    return this.config.protocolVersion >= 2 && this.membership.versionAt(to) >= 2;
  }

  private gossip(): void {
    this.broadcasts.beginRound();
    const now = this.clock.now();
    const self = this.config.name;
    const targets = this.membership.randomNodes(
      this.config.gossipNodes,
      (r) =>
        r.name !== self &&
        (isLive(r.state) || (r.state === "dead" && now - r.stateChangedAt < this.config.gossipToTheDeadMs)),
    );
    for (const t of targets) this.wire.send({ host: t.host, port: t.port }, []);
  }

  private antiEntropy(): void {
    const self = this.config.name;
    const [peer] = this.membership.randomNodes(1, (r) => r.state === "alive" && r.name !== self);
    if (!peer) return;
    this.pushPull({ host: peer.host, port: peer.port }, false).catch((err) =>
      this.logger.debug({ err, peer: peer.name }, "push-pull failed"),
    );
  }

  /**
   * Serf's reconnect: try one dead member's address, with probability dead/live so the cluster
   * as a whole retries each dead member about once an interval. After a partition heals, this
   * is what brings the two sides back together (each learns the other's refutations).
   */
  private reconnect(): void {
    const dead = this.membership.deadCount();
    if (dead === 0 || this.random.next() >= dead / this.membership.liveCount()) return;
    const [peer] = this.membership.randomNodes(1, (r) => r.state === "dead");
    if (!peer) return;
    this.pushPull({ host: peer.host, port: peer.port }, false).catch((err) =>
      this.logger.debug({ err, peer: peer.name }, "reconnect failed"),
    );
  }

  /**
   * catchUpMs: a catch-up of that window (see catchUpRequest) rather than a full exchange. In
   * protocol version 2 (compact records) unless the peer is known to speak only 1: a peer that
   * does not know pushPull2 refuses it (closes the stream), so the exchange is made again in
   * version 1 and the peer is noted as speaking 1 (unless known to speak 2). That refusal is how two members first learn
   * each other's version; from then on it travels with the records. A join's reply that lists a
   * live record of this node's name at another address is not merged: that record (and how many
   * live members the reply listed) is returned for join to judge; any other, whether it shows a
   * held one gone.
   */
  private async pushPull(peer: Addr, join: boolean, catchUpMs = 0): Promise<JoinAnswer | undefined> {
    const started = this.clock.now();
    const message = catchUpMs > 0 ? this.catchUpRequest(catchUpMs) : this.pushPullMessage(join);
    const known = this.membership.versionAt(peer);
    const tryCompact = this.config.protocolVersion >= 2 && known !== 1;
    let reply: Request;
    try {
      reply = await this.wire.request(
        peer,
        tryCompact ? { ...message, kind: "pushPull2" } : message,
        this.config.tcpTimeoutMs,
      );
    } catch (err) {
      // A refusal closes the stream (a reset may show as a failed connection); a timeout is no refusal.
      const refused = isWeftError(err, "TRANSPORT_CLOSED") || isWeftError(err, "TRANSPORT_CONNECT_FAILED");
      // A member whose records say it speaks 2 never refuses it: its stream was closed for another
      // reason (its transport evicting unfinished requests under a flood), and falling back would
      // note it as speaking 1.
      if (!tryCompact || !refused || known >= 2) throw err;
      reply = await this.wire.request(peer, message, this.config.tcpTimeoutMs);
    }
    if (reply.message.kind !== "pushPull" && reply.message.kind !== "pushPull2")
      throw new WeftError("GOSSIP_BAD_RESPONSE", `push-pull answered with ${reply.message.kind}`);
    if (!this.running) return;
    if (join) {
      const me = this.membership.local();
      const record = reply.message.nodes.find(
        (n) => n.name === me.name && isLive(n.state) && (n.host !== me.host || n.port !== me.port),
      );
      if (record) {
        const self = reply.message.nodes.find((n) => n.name === reply.sender);
        const at = self ? { host: self.host, port: self.port, incarnation: self.incarnation } : reply.from;
        const { nodes } = reply.message;
        return { sender: reply.sender, at, record, live: nodes.filter((n) => isLive(n.state)).length, nodes };
      }
    }
    const heldGone = join && this.showsHeldGone(reply.message.nodes, reply.sender);
    this.membership.mergeRemote(reply.message.nodes, reply.sender);
    // A version-1 answer to a version-1 request (after a refusal): note it once the peer's record exists.
    if (reply.message.kind === "pushPull" && tryCompact) this.membership.refusedVersion2(peer);
    this.mergeUserState(reply.message.userState, join && catchUpMs === 0);
    if (join && catchUpMs === 0) this.pull.joined();
    if (join) this.scheduleJoinSync(started);
    return join ? { sender: reply.sender, heldGone } : undefined;
  }

  /**
   * Whether a join target's full state without the held record (see join) shows it gone: it lists
   * the record as dead or left, at its address and incarnation or a later one (an older one is a
   * death the record's node refuted, news that did not reach this target yet); or it comes from a
   * target that reported it (by name, every full state lists its sender: moved or restarted, it
   * has declared the record dead and maybe reaped it, or answers with what it merged since); or it
   * lists such a target at the address it reported from (a member of its cluster, which knows it
   * alive, or dead: it had the record too, whose tombstone our join may have replaced there); or,
   * from a member a report listed live at the address it lists itself at (one of their cluster),
   * lists such a target elsewhere at a later incarnation than reported (it moved since: restarted
   * on a new address, which members take only above the record they held, the node refuting
   * above it if its wall-clock start is not; one not above is news from before the report, or
   * another node's). The answer by name and the last count only if it also lists another live
   * member of the reports where they listed it (unless they listed none): a reporter restarted
   * and not yet rejoined knows only itself, while its cluster still holds the record. Only within
   * the bound (see heldWindowMs) since a round last reported the record: by then its cluster has
   * declared it dead if nothing answered there, and one with a live node behind it would have
   * been reported again and refused (see nameHeld). Without the limit, a reporter whose fellows
   * all moved or left, and whose answer no longer lists the record, held the name for good. Past
   * it the answer must still list a member but its sender and this node, in any state: a reporter
   * restarted and still alone (its cluster unreachable, maybe holding a live node of the name)
   * knows none.
   * Not any other: a member that never knew the record (one met meanwhile, alone or in another
   * cluster, and saved, maybe knowing an unrelated node of a reporter's name, at any incarnation)
   * would admit a second live node of the name.
   */
  private showsHeldGone(nodes: readonly NodeState[], sender: string): boolean {
    const held = this.heldName;
    if (!held) return false;
    const { record, reporters, fellows } = held;
    const settled = this.clock.now() - held.reportedAt > this.heldWindowMs(held.live);
    const self = nodes.find((n) => n.name === sender);
    const fellow = self !== undefined && fellows.get(sender) === formatHostPort(self.host, self.port);
    const listed = new Map(nodes.filter((n) => isLive(n.state)).map((n) => [n.name, formatHostPort(n.host, n.port)]));
    // The answer is the state of the reports' cluster: it lists another of its live members where
    // they did (a reporter restarted and not yet rejoined lists only itself), if they listed one;
    // past the bound, where they may have moved or left, any member but the sender and the joiner.
    const inCluster = (reporter: string) => {
      const others = [...fellows].filter(([name]) => name !== sender && name !== reporter);
      if (others.length === 0) return true;
      if (settled) return nodes.some((n) => n.name !== sender && n.name !== record.name);
      return others.some(([name, at]) => listed.get(name) === at);
    };
    return nodes.some((n) => {
      if (n.name === record.name)
        return (
          n.host === record.host && n.port === record.port && !isLive(n.state) && n.incarnation >= record.incarnation
        );
      const at = reporters.get(n.name);
      if (at === undefined) return false;
      if (n.name === sender) return inCluster(sender);
      if (n.host === at.host && n.port === at.port) return true;
      return fellow && at.incarnation !== undefined && n.incarnation > at.incarnation && inCluster(n.name);
    });
  }

  /**
   * A join target knows a live record of this node's name at another address. A node there that
   * answers to the name holds it: GOSSIP_NAME_CONFLICT at once. Silent, the record is most likely
   * this node's own from before a restart on a new address (DHCP, a rescheduled VM): the members
   * keep it until they declare it dead, in a suspicion window (18 s in a cluster of three, about
   * 5 s in larger ones on the lan profile), and refusing to start meanwhile made a restart under
   * systemd loop until then. So it is GOSSIP_NAME_HELD, which the joiner retries, until a window
   * (the longest suspicion for this cluster size, plus the probes that start it) has passed
   * since it first came, by a round that reports it again: a record that outlives it has a node
   * behind it that this one cannot reach, and the name is taken after all. Rejoining (addressKept), the record cannot be this
   * node's own: taken at once.
   */
  private async nameHeld(held: HeldName, addressKept: boolean): Promise<WeftError> {
    const { record: other, live, since } = held;
    const me = this.membership.local();
    const at = formatHostPort(other.host, other.port);
    const self = formatHostPort(me.host, me.port);
    const taken = (message: string) => {
      this.stats.protocol.nameConflicts++;
      return new WeftError("GOSSIP_NAME_CONFLICT", message);
    };
    if (addressKept) {
      return taken(
        `the members hold a live record of the node name ${me.name} at ${at}, while this node has been a member at ${self} since it joined: another node uses this name. Give every node a unique name (--node-name)`,
      );
    }
    if (await this.detector.answersAs({ host: other.host, port: other.port }, me.name)) {
      return taken(
        `the node name ${me.name} is already used by a live node at ${at}, which answers to it (this node is ${self}); give every node a unique name (--node-name)`,
      );
    }
    const windowMs = this.heldWindowMs(live);
    const heldMs = this.clock.now() - since;
    if (heldMs > windowMs) {
      return taken(
        `the members still hold a live record of the node name ${me.name} at ${at} (this node is ${self}), though nothing there has answered to it from here for ${Math.round(heldMs / 1000)} s, longer than they take to declare a silent node dead: another node uses this name where this one cannot reach it. Give every node a unique name (--node-name)`,
      );
    }
    return new WeftError(
      "GOSSIP_NAME_HELD",
      `the members hold a live record of this node's name ${me.name} at ${at} (this node is ${self}), and nothing there answers to it: most likely this node's previous address. The join is retried until they declare that record dead, which they do within ${Math.ceil(windowMs / 1000)} s of its first report`,
    );
  }

  /** How long members of a cluster of `live` take at most to declare a silent member dead: the
   *  longest suspicion, and before it the probe rounds that start it (the one that fails and the
   *  one before: the member may have just been probed), each stretched at worst by the prober's
   *  health score. */
  private heldWindowMs(live: number): number {
    const c = this.config;
    return (
      suspicionBounds(c.suspicionMult, c.suspicionMaxTimeoutMult, c.suspicionConfirmations, live, c.probeIntervalMs)
        .maxMs +
      2 * c.awarenessMaxMultiplier * c.probeIntervalMs
    );
  }

  /**
   * Two live nodes use this node's name (the other joined through a member that did not know this
   * one). As Serf does, the members decide: up to 5 of them (not the claimant) are asked, by
   * push-pull, which address they know for the name. If more name the other address than ours
   * (on a tie: if ours is the greater address), this node lost: it reports GOSSIP_NAME_CONFLICT and its owner stops it without leaving, so the
   * name, and the subnet the ring holds for it, stay with the node the cluster knows. Usually that
   * is the one that was there first: members keep the record they know while it lives.
   */
  private async checkName(claim: Addr): Promise<void> {
    const now = this.clock.now();
    if (!this.running || this.nameLost || now - this.nameCheckAt < 10 * this.config.probeIntervalMs) return;
    this.nameCheckAt = now;
    const me = this.membership.local();
    const voters = this.membership.randomNodes(
      5,
      (r) => r.name !== me.name && r.state === "alive" && !(r.host === claim.host && r.port === claim.port),
    );
    let ours = 0;
    let theirs = 0;
    await Promise.all(
      voters.map(async (v) => {
        try {
          const reply = await this.wire.request(
            { host: v.host, port: v.port },
            this.pushPullMessage(false),
            this.config.tcpTimeoutMs,
          );
          if (reply.message.kind !== "pushPull") return;
          const known = reply.message.nodes.find((n) => n.name === me.name && isLive(n.state));
          if (known) known.host === me.host && known.port === me.port ? ours++ : theirs++;
        } catch {
          // no vote
        }
      }),
    );
    // A tie (e.g. no member but the two of them) goes by address, which both sides compare alike.
    const lost = theirs > ours || (theirs === ours && `${me.host}:${me.port}` > `${claim.host}:${claim.port}`);
    if (!this.running || !lost) {
      if (this.running)
        this.logger.warn(
          { node: me.name, claimed: `${claim.host}:${claim.port}`, ours, theirs },
          "name conflict: the members keep this node; the other must stop",
        );
      return;
    }
    this.nameLost = true;
    this.stats.protocol.nameConflicts++;
    this.onNameLost?.(
      new WeftError(
        "GOSSIP_NAME_CONFLICT",
        `the node name ${me.name} is used by a live node at ${claim.host}:${claim.port} that ${theirs} of ${ours + theirs} member(s) asked know under it ` +
          `(this node is ${me.host}:${me.port}); this node stops. Give every node a unique name (--node-name)`,
      ),
    );
  }

  /**
   * One more push-pull with a random member, a little after joining: a catch-up. A member that
   * joined at about the same time, after our seeds answered, may have spread its news before most
   * members knew us (gossip goes only to known members): we would miss it until anti-entropy,
   * minutes away at 1,000 nodes. Two retransmission periods later our own record has spread, so
   * news from then on reaches us, and this exchange picks up what raced with the join. Only that
   * is asked for: what the member took in since two retransmission periods before our join
   * began (news older than that had reached our seeds). A full state each way, as before, cost
   * 1,000 records per joiner and most of a join wave's traffic (ARCHITECTURE.md).
   */
  private scheduleJoinSync(joinStartedAt: number): void {
    if (this.joinSyncPending) return;
    this.joinSyncPending = true;
    const { retransmitMult, gossipIntervalMs, gossipNodes } = this.config;
    const sendingMs = (retransmitLimit(retransmitMult, this.membership.liveCount()) * gossipIntervalMs) / gossipNodes;
    this.timers.after(Math.ceil(2 * sendingMs), () => {
      this.joinSyncPending = false;
      // In a wave, delta pulls already ask for what raced with the join, every pullIntervalMs.
      if (this.config.pullIntervalMs > 0 && this.wave.inWave()) return;
      const [peer] = this.membership.randomNodes(1, (r) => r.state === "alive" && r.name !== this.config.name);
      if (!peer) return;
      const windowMs = Math.ceil(this.clock.now() - joinStartedAt + 2 * sendingMs);
      this.pushPull({ host: peer.host, port: peer.port }, false, windowMs).catch((err) =>
        this.logger.debug({ err, peer: peer.name }, "catch-up push-pull failed"),
      );
    });
  }

  /**
   * A push-pull that asks only for the records the peer changed in the last windowMs. It carries
   * this node's own record alone, with windowMs as its age: a live record's age is otherwise
   * always 0 and, before catch-ups existed, read only for tombstones, so an older peer merges our
   * record and answers with its whole state, and a mixed cluster still works (a catch-up then
   * costs what the full follow-up did).
   */
  private catchUpRequest(windowMs: number): Extract<Message, { kind: "pushPull" }> {
    const me = this.membership.local();
    return {
      kind: "pushPull",
      join: false,
      nodes: [{ ...nodeState(me, this.clock.now()), stateAgeMs: Math.max(1, windowMs) }],
      userState: this.delegate?.localState(false) ?? EMPTY,
    };
  }

  private pushPullMessage(join: boolean, nodes = this.membership.states()): Extract<Message, { kind: "pushPull" }> {
    return {
      kind: "pushPull",
      join,
      nodes,
      userState: this.delegate?.localState(join) ?? EMPTY,
    };
  }

  private mergeUserState(state: Uint8Array, join: boolean): void {
    if (!this.delegate || state.length === 0) return;
    contain(this.stats, this.logger, "delegate.mergeRemoteState", () => this.delegate!.mergeRemoteState(state, join));
  }

  private onPacket(from: Addr, envelope: Envelope): void {
    if (!this.running) return;
    let requests = 0;
    for (const { message: m } of envelope.messages) {
      if ((m.kind === "ping" || m.kind === "indirectPing" || m.kind === "pull") && requests++ > 0) {
        this.stats.dropped.extraRequest++;
        continue;
      }
      switch (m.kind) {
        case "ping":
          this.detector.onPing(from, envelope.sender, m);
          break;
        case "indirectPing":
          this.detector.onIndirectPing(from, envelope.sender, m);
          break;
        case "ack":
          this.detector.onAck(m.seq, envelope.sender);
          break;
        case "nack":
          this.detector.onNack(m.seq, envelope.sender);
          break;
        case "alive":
        case "alive2":
          this.membership.applyAlive(m);
          break;
        case "suspect":
          this.membership.applySuspect(m);
          break;
        case "dead":
          this.membership.applyDead(m);
          break;
        case "user":
          this.deliver(envelope.sender, m.payload);
          break;
        case "pull":
          this.pull.answer(envelope.sender, m);
          break;
        case "pullReply":
        case "pullReply2":
          this.pull.answered(envelope.sender);
          this.membership.mergePulled(m.nodes);
          break;
        case "pushPull":
        case "pushPull2":
          this.stats.dropped.unexpected++;
          break;
      }
    }
  }

  private async onRequest({ sender, message: m }: Request): Promise<Message> {
    this.assertRunning();
    switch (m.kind) {
      case "pushPull":
      case "pushPull2": {
        // Answer with our state as it was before the merge (no point echoing the peer's back); to
        // a catch-up (see catchUpRequest), with only what changed here within its window.
        const own = m.nodes.find((n) => n.name === sender);
        const catchUpMs = !m.join && own && isLive(own.state) ? own.stateAgeMs : 0;
        // A sender using the name of a live member at another address learns of it from our reply
        // (our full state, even to a catch-up) and stops; nothing it says is taken in meanwhile
        // (its lease ring least of all).
        const known = this.membership.get(sender);
        const conflict = own && known && isLive(known.state) && (known.host !== own.host || known.port !== own.port);
        const v1 =
          catchUpMs > 0 && !conflict
            ? this.pushPullMessage(false, this.membership.statesSince(catchUpMs))
            : this.pushPullMessage(m.join);
        // In version 2 our own record always goes along, so the asker learns our version with it.
        const me = this.membership.local();
        const reply: Message =
          m.kind === "pushPull2"
            ? {
                ...v1,
                kind: "pushPull2",
                nodes: v1.nodes.some((n) => n.name === me.name)
                  ? v1.nodes
                  : [...v1.nodes, nodeState(me, this.clock.now())],
              }
            : v1;
        if (conflict) {
          this.stats.protocol.nameConflicts++;
          this.logger.warn(
            { node: sender, known: `${known.host}:${known.port}`, claimed: `${own.host}:${own.port}` },
            "refused push-pull from a node using a live member's name at another address (a second node of that name, or the member restarted there before it was declared dead, which retries until then)",
          );
          return reply;
        }
        this.membership.mergeRemote(m.nodes, sender);
        this.mergeUserState(m.userState, m.join);
        return reply;
      }
      case "ping":
        return this.detector.answerStreamPing(m);
      case "user": {
        const answer = await this.answer(sender, m.payload);
        return answer ? { kind: "user", payload: answer } : { kind: "ack", seq: 0 };
      }
      default:
        this.stats.dropped.unexpected++;
        throw new WeftError("GOSSIP_FRAME_REFUSED", `${m.kind} is not a stream request`);
    }
  }

  /** A stream message: the delegate's answer if it gives one, else delivered as any message. */
  private async answer(sender: string, payload: Uint8Array): Promise<Uint8Array | undefined> {
    const delegate = this.delegate;
    if (!delegate?.answerMsg) {
      this.deliver(sender, payload);
      return undefined;
    }
    try {
      return await delegate.answerMsg(sender, payload);
    } catch (err) {
      this.stats.protocol.handlerErrors++;
      this.logger.error({ err, in: "delegate.answerMsg" }, "handler threw; contained, membership state is unaffected");
      return undefined;
    }
  }

  private deliver(sender: string, payload: Uint8Array): void {
    if (!this.delegate) return;
    contain(this.stats, this.logger, "delegate.notifyMsg", () => this.delegate!.notifyMsg(sender, payload));
  }
}
