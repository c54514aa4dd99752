// SWIM failure detector with Lifeguard. One round per probe interval: ping the next member; no
// ack within the probe timeout → ask `indirectChecks` members to ping it for us (they nack if
// they hear nothing, which tells us they are alive and our own path is fine) and try a stream
// ping; still no ack at the end of the round → suspect it. Interval and timeout are stretched by
// the local health score, and missed nacks raise that score (LHA-Probe). A probe to a suspected
// member carries the suspicion (Lifeguard's buddy system).
import type { Addr, Clock, Random } from "../runtime.js";
import type { Awareness } from "./awareness.js";
import type { MemberlistConfig } from "./config.js";
import type { Message } from "./messages.js";
import type { Wire } from "./net.js";
import type { GossipCounters, GossipLogger } from "./observability.js";
import type { Membership, NodeRecord } from "./state.js";
import { Timers } from "./timers.js";

type Ping = Extract<Message, { kind: "ping" }>;
type IndirectPing = Extract<Message, { kind: "indirectPing" }>;

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
  onAck(): void;
  onNack(): void;
}

export class FailureDetector {
  private readonly timers: Timers;
  /** Outstanding pings (ours and those we forward) by sequence number. */
  private readonly waiters = new Map<number, AckWaiter>();
  private seq = 0;
  private running = false;

  constructor(private readonly deps: FailureDetectorDeps) {
    this.timers = new Timers(deps.clock);
  }

  start(): void {
    this.running = true;
    // Random stagger, so that nodes started together do not probe in lockstep.
    this.timers.after(Math.floor(this.deps.random.next() * this.deps.config.probeIntervalMs), () => this.round());
  }

  stop(): void {
    this.running = false;
    this.timers.cancelAll();
    this.waiters.clear();
  }

  onPing(from: Addr, ping: Ping): void {
    if (ping.target !== this.deps.config.name) {
      this.deps.counters.dropped.misdirected++;
      return;
    }
    this.deps.wire.send(from, [{ kind: "ack", seq: ping.seq }]);
  }

  /** Stream ping (the fallback over TCP): the reply is the ack. */
  answerStreamPing(ping: Ping): Message {
    if (ping.target !== this.deps.config.name) {
      this.deps.counters.dropped.misdirected++;
      throw new Error(`ping for ${ping.target} reached ${this.deps.config.name}`);
    }
    return { kind: "ack", seq: ping.seq };
  }

  onIndirectPing(from: Addr, req: IndirectPing): void {
    const seq = this.nextSeq();
    const { probeTimeoutMs } = this.deps.config;
    let answered = false;
    const nackTimer = req.wantNack
      ? this.timers.after(probeTimeoutMs, () => {
          if (!answered) this.deps.wire.send(from, [{ kind: "nack", seq: req.seq }]);
        })
      : undefined;
    this.waiters.set(seq, {
      onAck: () => {
        if (answered) return;
        answered = true;
        this.timers.cancel(nackTimer);
        this.deps.wire.send(from, [{ kind: "ack", seq: req.seq }]);
      },
      onNack: () => {},
    });
    this.timers.after(probeTimeoutMs, () => this.waiters.delete(seq));
    this.deps.wire.send({ host: req.host, port: req.port }, [{ kind: "ping", seq, target: req.target }]);
  }

  onAck(seq: number): void {
    this.waiters.get(seq)?.onAck();
  }

  onNack(seq: number): void {
    this.waiters.get(seq)?.onNack();
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % 0x1_0000_0000;
    return this.seq;
  }

  private round(): void {
    if (!this.running) return;
    const { awareness, config, membership } = this.deps;
    const interval = awareness.scale(config.probeIntervalMs);
    const target = membership.nextProbeTarget();
    if (!target) {
      this.timers.after(interval, () => this.round());
      return;
    }
    this.probe(target, interval, awareness.scale(config.probeTimeoutMs));
  }

  private probe(target: NodeRecord, interval: number, timeout: number): void {
    const { wire, counters, config, membership, awareness } = this.deps;
    const seq = this.nextSeq();
    // Snapshot: if the target refutes meanwhile, a late suspicion at the old incarnation is void.
    const { name, incarnation } = target;
    const addr = { host: target.host, port: target.port };
    let acked = false;
    let nacks = 0;
    let expectedNacks = 0;
    this.waiters.set(seq, { onAck: () => (acked = true), onNack: () => nacks++ });
    counters.protocol.probes++;
    const ping: Message = { kind: "ping", seq, target: name };
    // Lifeguard's buddy system: a suspected member hears of it with the probe itself and can refute
    // at once, instead of waiting for the suspicion to reach it by chance through gossip.
    const buddy: Message = { kind: "suspect", node: name, incarnation, from: config.name };
    wire.send(addr, target.state === "suspect" ? [ping, buddy] : [ping]);

    const indirect = this.timers.after(timeout, () => {
      if (acked) return;
      const self = config.name;
      const helpers = membership.randomNodes(config.indirectChecks, (r) => r.state === "alive" && r.name !== self && r.name !== name);
      expectedNacks = helpers.length;
      for (const h of helpers) {
        wire.send({ host: h.host, port: h.port }, [
          { kind: "indirectPing", seq, target: name, host: addr.host, port: addr.port, wantNack: true },
        ]);
      }
      if (config.tcpPingFallback && interval > timeout) {
        wire.request(addr, { kind: "ping", seq, target: name }, interval - timeout).then(
          (reply) => {
            if (reply.message.kind === "ack" && reply.message.seq === seq && !acked) {
              acked = true;
              counters.protocol.tcpFallbackAcks++;
            }
          },
          () => {},
        );
      }
    });

    this.timers.after(interval, () => {
      this.timers.cancel(indirect);
      this.waiters.delete(seq);
      if (acked) {
        awareness.applyDelta(-1);
      } else {
        // Helpers that did not even nack suggest our own links or CPU are the problem.
        awareness.applyDelta(expectedNacks > 0 ? expectedNacks - nacks : 1);
        counters.protocol.probeFailures++;
        membership.suspectByProbe(name, incarnation);
      }
      this.round();
    });
  }
}
