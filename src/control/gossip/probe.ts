// SWIM failure detector with Lifeguard. One round per probe interval: ping the next member; no
// ack within the probe timeout → ask `indirectChecks` members to ping it for us (they nack if
// they hear nothing, which tells us they are alive and our own path is fine) and try a stream
// ping; still no ack at the end of the round → suspect it. Interval and timeout are stretched by
// the local health score, and missed nacks raise that score (LHA-Probe). A probe to a suspected
// member carries the suspicion (Lifeguard's buddy system).
import type { Addr, Clock, Random } from "../runtime.js";
import type { Awareness } from "./awareness.js";
import { WeftError } from "../../errors.js";
import type { MemberlistConfig } from "./config.js";
import { encodeMessage, framedSize, type Message } from "./messages.js";
import type { Wire } from "./net.js";
import type { GossipCounters, GossipLogger } from "./observability.js";
import type { Membership, MemberEntry } from "./state.js";
import { Timers } from "../timers.js";
import { probePhase, probeSlot, sinceProbeTime, untilProbeTime } from "./schedule.js";

type Ping = Extract<Message, { kind: "ping" }>;

/** Most deaths and leaves one ping or ack carries. */
const RECENT_DEATHS_PER_PACKET = 16;
type IndirectPing = Extract<Message, { kind: "indirectPing" }>;

/**
 * How long a helper waits for the target's ack before it nacks. The prober sends its indirect
 * pings at the probe timeout and counts nacks at the end of the probe interval, so a nack sent a
 * whole probe timeout after the request (as memberlist does) reaches it only after the count: with
 * the LAN profile's 500 / 1,000 ms, always, by the two hops' delay. Every failed probe then looked
 * like three missed nacks, and the prober's own health score jumped to 3: it stretched its next
 * probes to 4 s, so the members after the crashed one on the probe ring were probed late and
 * its suspicion confirmed late (1,000 simulated nodes: a crash took up to 8 s to be known dead
 * everywhere). Four fifths of the window leave the rest for the hops there and back.
 */
export function nackWaitMs(config: Pick<MemberlistConfig, "probeIntervalMs" | "probeTimeoutMs">): number {
  return Math.min(config.probeTimeoutMs, Math.floor(((config.probeIntervalMs - config.probeTimeoutMs) * 4) / 5));
}

/**
 * The shortest a late round's probe may be with a probe timeout of `timeout` (stretched by
 * health): the indirect pings go out at the timeout and the helpers nack nackWaitMs later, plus
 * half of what the unstretched interval leaves after that for the two hops (LAN: 500 + 400 + 50 ms).
 * At most the stretched interval, as that leaves at least as much after the nacks.
 */
function shortestProbeMs(
  config: Pick<MemberlistConfig, "probeIntervalMs" | "probeTimeoutMs">,
  timeout: number,
): number {
  const nack = nackWaitMs(config);
  return timeout + nack + (config.probeIntervalMs - config.probeTimeoutMs - nack) / 2;
}

export interface FailureDetectorDeps {
  readonly config: MemberlistConfig;
  readonly clock: Clock;
  readonly random: Random;
  readonly membership: Membership;
  readonly awareness: Awareness;
  readonly wire: Wire;
  readonly counters: GossipCounters;
  readonly logger: GossipLogger;
}

interface AckWaiter {
  /** `from` is the envelope's sender: a waiter takes acks only from those it expects them from. */
  onAck(from: string): void;
  onNack(from: string): void;
}

export class FailureDetector {
  private readonly timers: Timers;
  /** Outstanding pings (ours and those we forward) by sequence number. */
  private readonly waiters = new Map<number, AckWaiter>();
  /** Starts anywhere in the 32-bit space, so that acks captured from an earlier run of this node,
   *  replayed at this one, do not match its probes (from 0, every run used the same numbers). */
  private seq: number;
  private running = false;
  /** Where in each probe slot this node probes (schedule.ts). */
  private readonly phase: number;

  constructor(private readonly deps: FailureDetectorDeps) {
    this.timers = new Timers(deps.clock);
    this.seq = Math.floor(deps.random.next() * 0x1_0000_0000);
    this.phase = deps.config.probePhaseFromName ? probePhase(deps.config.name) : deps.random.next();
  }

  start(): void {
    this.running = true;
    this.nextRound();
  }

  /** At this node's next probe time (its phase of the slot, see schedule.ts): at once when that is
   *  now, as when a probe of a whole unstretched interval just ended. */
  private nextRound(): void {
    const { clock, config } = this.deps;
    this.timers.after(untilProbeTime(clock.now(), config.probeIntervalMs, this.phase), () => this.round());
  }

  stop(): void {
    this.running = false;
    this.timers.cancelAll();
    this.waiters.clear();
  }

  /**
   * Acks a ping. Broadcasts ride along only when the ping came from the address we know for its
   * sender: a captured ping replayed with a forged source address then gets a bare ack (smaller
   * than the ping), so replays cannot be used to reflect full packets at a third party.
   */
  onPing(from: Addr, sender: string, ping: Ping): void {
    if (ping.target !== this.deps.config.name) {
      this.deps.counters.dropped.misdirected++;
      return;
    }
    const piggyback = this.fromKnownAddress(from, sender);
    const ack: Message = { kind: "ack", seq: ping.seq };
    this.deps.wire.send(from, piggyback ? [ack, ...this.recentDeaths()] : [ack], piggyback);
  }

  /** Whether a packet came from the address we know for its sender (its source is not authenticated). */
  private fromKnownAddress(from: Addr, sender: string): boolean {
    const known = this.deps.membership.get(sender);
    return !!known && known.host === from.host && known.port === from.port;
  }

  /** Stream ping (the fallback over TCP): the reply is the ack. */
  answerStreamPing(ping: Ping): Message {
    if (ping.target !== this.deps.config.name) {
      this.deps.counters.dropped.misdirected++;
      throw new WeftError("GOSSIP_FRAME_REFUSED", `ping for ${ping.target} reached ${this.deps.config.name}`);
    }
    return { kind: "ack", seq: ping.seq };
  }

  /** Pings `req.target` for the sender and relays its ack (or, asked to, a nack); with broadcasts
   *  only to the sender's known address, as onPing answers, so a replay reflects bare replies. */
  onIndirectPing(from: Addr, sender: string, req: IndirectPing): void {
    const seq = this.nextSeq();
    const { probeTimeoutMs } = this.deps.config;
    const piggyback = this.fromKnownAddress(from, sender);
    let answered = false;
    const nackTimer = req.wantNack
      ? this.timers.after(nackWaitMs(this.deps.config), () => {
          if (!answered) this.deps.wire.send(from, [{ kind: "nack", seq: req.seq }], piggyback);
        })
      : undefined;
    this.waiters.set(seq, {
      onAck: (acker) => {
        if (answered || acker !== req.target) return;
        answered = true;
        this.timers.cancel(nackTimer);
        this.deps.wire.send(from, [{ kind: "ack", seq: req.seq }], piggyback);
      },
      onNack: () => {},
    });
    this.timers.after(probeTimeoutMs, () => this.waiters.delete(seq));
    this.deps.wire.send({ host: req.host, port: req.port }, [{ kind: "ping", seq, target: req.target }]);
  }

  /** An ack; `from` is the envelope's sender. */
  onAck(seq: number, from: string): void {
    this.waiters.get(seq)?.onAck(from);
  }

  /** A helper's nack; `from` is the envelope's sender. */
  onNack(seq: number, from: string): void {
    this.waiters.get(seq)?.onNack(from);
  }

  /** Deaths and leaves of the last two probe intervals (each member pings and is pinged at least
   *  once in them), in at most a quarter of a packet, so gossip keeps the rest. */
  private recentDeaths(): Message[] {
    const { membership, config, wire } = this.deps;
    let room = wire.packetBudget() / 4;
    const out: Message[] = [];
    for (const d of membership.recentDeaths(2 * config.probeIntervalMs, RECENT_DEATHS_PER_PACKET)) {
      room -= framedSize(encodeMessage(d).length);
      if (room < 0) break;
      out.push(d);
    }
    return out;
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % 0x1_0000_0000;
    return this.seq;
  }

  /**
   * A last probe of a member whose suspicion ran out, before it is declared dead: with the
   * accusation first (buddy system), so a member that is alive but missed the suspicion, or whose
   * refutation got lost, refutes on the ack. answered: some ack came back within a probe interval.
   */
  confirm(target: MemberEntry, done: (answered: boolean) => void): void {
    const { awareness, config } = this.deps;
    this.deps.counters.protocol.lastChecks++;
    this.probe(target, awareness.scale(config.probeIntervalMs), awareness.scale(config.probeTimeoutMs), (r) =>
      done(r.acked),
    );
  }

  /**
   * Whether a node named `name` answers at `addr` (a stream ping, so no broadcasts go with it): the
   * join asks this of the address of a live record of its own name (Memberlist.nameHeld), to tell
   * a node that holds the name from this node's previous run. A connect, a handshake and a reply
   * take longer than a probe timeout on a loaded host, and a slow duplicate taken for a silent
   * record would be refused only at the bound: a probe interval, at least 2 s, within the stream timeout.
   */
  answersAs(addr: Addr, name: string): Promise<boolean> {
    const { probeIntervalMs, tcpTimeoutMs } = this.deps.config;
    return this.streamPing(addr, name, this.nextSeq(), Math.min(tcpTimeoutMs, Math.max(2000, probeIntervalMs)));
  }

  /** A ping over a stream: whether `name` acks it from `addr` within timeoutMs. */
  private streamPing(addr: Addr, name: string, seq: number, timeoutMs: number): Promise<boolean> {
    return this.deps.wire.request(addr, { kind: "ping", seq, target: name }, timeoutMs).then(
      (reply) => reply.message.kind === "ack" && reply.message.seq === seq && reply.sender === name,
      () => false,
    );
  }

  private round(): void {
    if (!this.running) return;
    const { awareness, config, membership, counters } = this.deps;
    const now = this.deps.clock.now();
    const target = membership.nextProbeTarget(probeSlot(now, config.probeIntervalMs, this.phase));
    // A round that started late (timer delay) is shortened to end on time, so the node keeps its
    // phase; but never below the time the helpers' nacks need (shortestProbeMs): a round that
    // ended before them counted each as missed. What that leaves of the lateness, the next rounds
    // take up, each starting at once while under a quarter interval behind, but each by at most
    // interval − shortestProbeMs (50 ms with LAN): under steady lag over that per round, the node
    // falls a quarter interval behind and skips a slot.
    const since = sinceProbeTime(now, config.probeIntervalMs, this.phase);
    const behind = since <= config.probeIntervalMs / 4 ? since : 0;
    const timeout = awareness.scale(config.probeTimeoutMs);
    const full = awareness.scale(config.probeIntervalMs);
    if (!target) {
      this.timers.after(full - behind, () => this.round());
      return;
    }
    const interval = Math.max(full - behind, shortestProbeMs(config, timeout));
    const { name, incarnation } = target;
    counters.protocol.probes++;
    this.probe(target, interval, timeout, ({ acked, asked, nackers }) => {
      if (acked) {
        awareness.applyDelta(-1);
      } else {
        // Helpers that did not even nack suggest our own links or CPU are the problem.
        awareness.applyDelta(asked.size > 0 ? asked.size - nackers.size : 1);
        counters.protocol.probeFailures++;
        // At the incarnation of the probe's start: if the target refuted meanwhile, this is void.
        membership.suspectByProbe(name, incarnation, nackers);
        this.tellAccused(name, incarnation);
      }
      this.nextRound();
    });
  }

  /**
   * The prober that raised a suspicion sends it straight to the accused too, so a member that is
   * only slow can refute at once. Gossip reaches it only by the luck of random targets, and the
   * next probe (the buddy system) may come from a prober that has not heard of the suspicion yet:
   * in the simulator (5% loss, one node 10× slower, 6 nodes) both missed, the refutation came
   * 46 ms after the suspicion ran out, and the slow node was declared dead. One packet per failed
   * probe, without broadcasts: to a crashed member it is lost, and it must not use up this
   * round's one send of the suspicion itself (broadcast.ts).
   */
  private tellAccused(name: string, incarnation: number): void {
    const cur = this.deps.membership.get(name);
    if (cur?.state !== "suspect" || cur.incarnation !== incarnation) return;
    const suspect: Message = { kind: "suspect", node: cur.name, incarnation, from: this.deps.config.name };
    this.deps.wire.send({ host: cur.host, port: cur.port }, [suspect], false);
  }

  /** Direct ping; after `timeout` indirect pings and a stream ping; the outcome after `interval`. */
  private probe(target: MemberEntry, interval: number, timeout: number, done: (r: ProbeResult) => void): void {
    const { wire, counters, config, membership } = this.deps;
    const seq = this.nextSeq();
    const { name, incarnation } = target;
    const addr = { host: target.host, port: target.port };
    const result: ProbeResult = { acked: false, asked: new Set(), nackers: new Set() };
    // Acks count from the target or a helper we asked (relaying), and nacks only from those
    // helpers, each once (a duplicated packet is not a second witness).
    this.waiters.set(seq, {
      onAck: (from) => {
        if (from === name || result.asked.has(from)) result.acked = true;
      },
      onNack: (from) => result.asked.has(from) && result.nackers.add(from),
    });
    const ping: Message = { kind: "ping", seq, target: name };
    // Lifeguard's buddy system: a suspected member hears of it with the probe itself and can refute
    // at once, instead of waiting for the suspicion to reach it by chance through gossip. The
    // suspicion goes first, so the refutation is already queued when the ack is built and rides
    // back on it to us, the suspecting prober.
    const buddy: Message = { kind: "suspect", node: name, incarnation, from: config.name };
    wire.send(addr, [...(target.state === "suspect" ? [buddy, ping] : [ping]), ...this.recentDeaths()]);

    const indirect = this.timers.after(timeout, () => {
      if (result.acked) return;
      const self = config.name;
      const helpers = membership.randomNodes(
        config.indirectChecks,
        (r) => r.state === "alive" && r.name !== self && r.name !== name,
      );
      for (const h of helpers) {
        result.asked.add(h.name);
        wire.send({ host: h.host, port: h.port }, [
          { kind: "indirectPing", seq, target: name, host: addr.host, port: addr.port, wantNack: true },
        ]);
      }
      if (config.tcpPingFallback && interval > timeout) {
        void this.streamPing(addr, name, seq, interval - timeout).then((acked) => {
          if (acked && !result.acked) {
            result.acked = true;
            counters.protocol.tcpFallbackAcks++;
          }
        });
      }
    });

    this.timers.after(interval, () => {
      this.timers.cancel(indirect);
      this.waiters.delete(seq);
      done(result);
    });
  }
}

interface ProbeResult {
  acked: boolean;
  /** Helpers asked to ping indirectly; each owes us an ack or a nack. */
  asked: Set<string>;
  /** Helpers that could not reach the target either: independent witnesses of its failure. */
  nackers: Set<string>;
}
