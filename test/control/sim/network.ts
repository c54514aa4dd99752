// In-memory network and per-host clocks for the simulator. Hosts are addresses; each host runs at
// most one transport at a time (a restart attaches a new one). Packets suffer the configured
// delay, loss, duplication and reordering; exchanges (the stream transport) are reliable but
// delayed, time out across a partition, and are refused by a host that is down. A slow host has
// its timers stretched and handles everything it receives late, as a CPU-starved process does.
import type { Addr, Clock, TimerHandle, Transport } from "../../../src/control/runtime.js";
import { WeftError } from "../../../src/errors.js";
import type { SeededRandom } from "./random.js";
import type { ScheduledEvent, Scheduler } from "./scheduler.js";

export interface LinkConditions {
  /** One-way delay, uniform in [min, max]. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Probability a packet is lost. */
  loss: number;
  /** Probability a packet is delivered twice (the copy with its own delay). */
  duplicate: number;
  /** Probability a packet is held back up to reorderDelayMs more, so later ones overtake it. */
  reorder: number;
  reorderDelayMs: number;
}

export const DEFAULT_CONDITIONS: LinkConditions = {
  minDelayMs: 1,
  maxDelayMs: 10,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  reorderDelayMs: 50,
};

export interface HostOptions {
  /** Timers of this host fire this many times later than asked (1 = normal). */
  timerStretch?: number;
  /** Every timer of this host fires this much later still (a busy event loop's lag). */
  timerLateMs?: number;
  /** Everything this host receives is handled this much later. */
  inboundDelayMs?: number;
}

export interface NetworkStats {
  packetsSent: number;
  packetsLost: number;
  packetsDuplicated: number;
  packetsBlocked: number;
  exchanges: number;
}

const key = (a: Addr): string => `${a.host}:${a.port}`;
/** One key for a pair of hosts, either way round. */
const pairKey = (a: Addr, b: Addr): string => [key(a), key(b)].sort().join(" ");

/** A simulated machine: its clock, its slowness, whether it is up. */
export class SimHost {
  /** Bumped on crash: timers and replies of the previous run never fire. */
  epoch = 0;
  transport?: SimTransport;
  readonly clock: SimClock;

  constructor(
    readonly addr: Addr,
    readonly scheduler: Scheduler,
    public options: Required<HostOptions>,
  ) {
    this.clock = new SimClock(this);
  }
}

export class SimClock implements Clock {
  private nextId = 1;
  private readonly pending = new Map<number, ScheduledEvent>();

  constructor(private readonly host: SimHost) {}

  now(): number {
    return this.host.scheduler.now();
  }

  /** How far the host's wall clock was stepped (NTP) since its start: wallNow() only. */
  wallStepMs = 0;

  wallNow(): number {
    return this.host.scheduler.now() + this.wallStepMs;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const id = this.nextId++;
    const epoch = this.host.epoch;
    const ev = this.host.scheduler.schedule(ms * this.host.options.timerStretch + this.host.options.timerLateMs, () => {
      this.pending.delete(id);
      if (this.host.epoch === epoch) fn();
    });
    this.pending.set(id, ev);
    return { id };
  }

  cancel(handle: TimerHandle): void {
    const ev = this.pending.get(handle.id);
    if (!ev) return;
    ev.cancelled = true;
    this.pending.delete(handle.id);
  }
}

/** Sees every frame sent (before loss), e.g. to capture frames for a replay attack. */
export type Tap = (kind: "packet" | "request", from: Addr, to: Addr, frame: Uint8Array) => void;

/** Decides per datagram whether it is delivered (false: dropped, counted as blocked), e.g. to
 *  play an older agent that refuses a frame kind it does not know. */
export type PacketFilter = (from: Addr, to: Addr, frame: Uint8Array) => boolean;

export class SimNetwork {
  conditions: LinkConditions;
  tap?: Tap;
  filter?: PacketFilter;
  readonly stats: NetworkStats = {
    packetsSent: 0,
    packetsLost: 0,
    packetsDuplicated: 0,
    packetsBlocked: 0,
    exchanges: 0,
  };
  private readonly hosts = new Map<string, SimHost>();
  /** Host key → partition group; hosts in different groups cannot reach each other. */
  private groups = new Map<string, number>();
  /** Pairs of hosts (pairKey) that cannot reach each other. */
  private readonly cuts = new Set<string>();

  constructor(
    readonly scheduler: Scheduler,
    private readonly random: SeededRandom,
    conditions: Partial<LinkConditions> = {},
  ) {
    this.conditions = { ...DEFAULT_CONDITIONS, ...conditions };
  }

  host(addr: Addr, options: HostOptions = {}): SimHost {
    const k = key(addr);
    let h = this.hosts.get(k);
    if (!h) {
      h = new SimHost(addr, this.scheduler, { timerStretch: 1, timerLateMs: 0, inboundDelayMs: 0, ...options });
      this.hosts.set(k, h);
    }
    return h;
  }

  /** A fresh transport on the host (the previous one, if any, must be closed or crashed). */
  attach(host: SimHost): SimTransport {
    const t = new SimTransport(this, host);
    host.transport = t;
    return t;
  }

  /** The host stops dead: no timers, no replies, no transport; packets to it are lost. */
  crash(host: SimHost): void {
    host.epoch++;
    host.transport?.markClosed();
    host.transport = undefined;
  }

  /** Splits the network: hosts of different groups cannot reach each other; unlisted hosts form one more group. */
  partition(...groups: Addr[][]): void {
    this.groups = new Map();
    groups.forEach((g, i) => g.forEach((a) => this.groups.set(key(a), i + 1)));
  }

  /** The two hosts cannot reach each other (packets or streams), whoever else they reach: a
   *  link down between them alone, which a partition into groups cannot express. */
  cut(a: Addr, b: Addr): void {
    this.cuts.add(pairKey(a, b));
  }

  /** Undoes the partition and every cut. */
  heal(): void {
    this.groups = new Map();
    this.cuts.clear();
  }

  reachable(a: Addr, b: Addr): boolean {
    return (this.groups.get(key(a)) ?? 0) === (this.groups.get(key(b)) ?? 0) && !this.cuts.has(pairKey(a, b));
  }

  /** Delivers a datagram as the link conditions allow. */
  sendPacket(from: Addr, to: Addr, frame: Uint8Array): void {
    const c = this.conditions;
    this.stats.packetsSent++;
    this.tap?.("packet", from, to, frame);
    if (!this.reachable(from, to) || (this.filter && !this.filter(from, to, frame))) {
      this.stats.packetsBlocked++;
      return;
    }
    if (this.random.next() < c.loss) {
      this.stats.packetsLost++;
      return;
    }
    const copies = this.random.next() < c.duplicate ? 2 : 1;
    if (copies === 2) this.stats.packetsDuplicated++;
    for (let i = 0; i < copies; i++) {
      let delay = this.delay();
      if (this.random.next() < c.reorder) delay += this.random.next() * c.reorderDelayMs;
      this.deliver(to, delay, (t) => t.receivePacket(from, frame));
    }
  }

  /** A reliable request/response with delays both ways; see the class comment for failures. */
  exchange(caller: SimHost, to: Addr, frame: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    this.stats.exchanges++;
    this.tap?.("request", caller.addr, to, frame);
    return new Promise((resolve, reject) => {
      const epoch = caller.epoch;
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled || caller.epoch !== epoch) return;
        settled = true;
        caller.clock.cancel(timer);
        fn();
      };
      const timer = caller.clock.setTimer(timeoutMs, () =>
        settle(() => reject(new WeftError("TRANSPORT_TIMEOUT", `no answer from ${key(to)} in ${timeoutMs} ms`))),
      );
      if (!this.reachable(caller.addr, to)) return;
      const back = (fn: () => void): void => {
        if (this.reachable(caller.addr, to)) this.deliverTo(caller, this.delay(), fn);
      };
      const target = this.hosts.get(key(to));
      this.scheduler.schedule(this.delay() + (target?.options.inboundDelayMs ?? 0), () => {
        const t = this.hosts.get(key(to))?.transport;
        if (!t || t.closed) {
          back(() => settle(() => reject(new WeftError("TRANSPORT_REFUSED", `nothing listens on ${key(to)}`))));
          return;
        }
        const targetEpoch = t.host.epoch;
        t.receiveExchange(caller.addr, frame).then(
          (reply) => {
            if (t.host.epoch === targetEpoch) back(() => settle(() => resolve(reply)));
          },
          () => {
            if (t.host.epoch === targetEpoch)
              back(() => settle(() => reject(new WeftError("TRANSPORT_CLOSED", `${key(to)} closed the stream`))));
          },
        );
      });
    });
  }

  /** An attacker on the wire: delivers `frame` to `to` as if from `from`, after the minimum delay, without loss. */
  inject(from: Addr, to: Addr, frame: Uint8Array): void {
    this.deliver(to, this.conditions.minDelayMs, (t) => t.receivePacket(from, frame));
  }

  private delay(): number {
    const c = this.conditions;
    return c.minDelayMs + this.random.next() * (c.maxDelayMs - c.minDelayMs);
  }

  private deliver(to: Addr, delay: number, fn: (t: SimTransport) => void): void {
    const host = this.hosts.get(key(to));
    if (!host) return;
    this.scheduler.schedule(delay + host.options.inboundDelayMs, () => {
      const t = host.transport;
      if (t && !t.closed) fn(t);
    });
  }

  /** Runs fn on the host after delay (plus its inbound delay) if it has not crashed meanwhile. */
  private deliverTo(host: SimHost, delay: number, fn: () => void): void {
    const epoch = host.epoch;
    this.scheduler.schedule(delay + host.options.inboundDelayMs, () => {
      if (host.epoch === epoch) fn();
    });
  }
}

export class SimTransport implements Transport {
  closed = false;
  private packetHandler?: (from: Addr, frame: Uint8Array) => void;
  private exchangeHandler?: (from: Addr, frame: Uint8Array) => Promise<Uint8Array>;

  constructor(
    private readonly net: SimNetwork,
    readonly host: SimHost,
  ) {}

  get local(): Addr {
    return this.host.addr;
  }

  sendPacket(to: Addr, frame: Uint8Array): void {
    if (!this.closed) this.net.sendPacket(this.host.addr, to, frame);
  }

  exchange(to: Addr, frame: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new WeftError("TRANSPORT_CLOSED", "transport closed"));
    return this.net.exchange(this.host, to, frame, timeoutMs);
  }

  onPacket(handler: (from: Addr, frame: Uint8Array) => void): void {
    this.packetHandler = handler;
  }

  onExchange(handler: (from: Addr, frame: Uint8Array) => Promise<Uint8Array>): void {
    this.exchangeHandler = handler;
  }

  async close(): Promise<void> {
    this.markClosed();
  }

  markClosed(): void {
    this.closed = true;
  }

  receivePacket(from: Addr, frame: Uint8Array): void {
    this.packetHandler?.(from, frame);
  }

  receiveExchange(from: Addr, frame: Uint8Array): Promise<Uint8Array> {
    if (!this.exchangeHandler) return Promise.reject(new WeftError("TRANSPORT_REFUSED", "no handler"));
    try {
      return this.exchangeHandler(from, frame);
    } catch (err) {
      return Promise.reject(err);
    }
  }
}
