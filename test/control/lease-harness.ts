// Test doubles for the lease tests: a virtual clock, seeded randomness, a recording logger, an
// in-memory state store, and a small message bus standing in for gossip membership (members,
// reliable sends, piggybacked broadcasts, push-pull) with delay, loss, duplication, partitions,
// crashes and restarts. Deterministic for a given seed. Nodes are built by the agent's own
// createLeaseLayer, so they run with the production defaults unless a test says otherwise.
import { createLeaseLayer } from "../../src/control/control-plane.js";
import type { SubnetLeases } from "../../src/control/lease/subnet-leases.js";
import type { LeaseLogger, LeaseTimings, MembershipPort } from "../../src/control/lease/types.js";
import type { LeaseDelegate } from "../../src/control/lease/delegate.js";
import type { Ipv6SubnetSpace, LeaseSpace, SubnetSpace } from "../../src/control/lease/slots.js";
import type { LeaseStateStore, PersistedLeaseState } from "../../src/control/lease/store.js";
import type { NodeView } from "../../src/control/gossip/delegate.js";
import type { Clock, Random, TimerHandle } from "../../src/control/runtime.js";

export class VirtualClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers: Array<{ at: number; id: number; fn: () => void }> = [];

  now(): number {
    return this.t;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const id = ++this.seq;
    this.timers.push({ at: this.t + Math.max(0, ms), id, fn });
    return { id };
  }

  cancel(handle: TimerHandle): void {
    this.timers = this.timers.filter((x) => x.id !== handle.id);
  }

  /** Runs timers in time order up to `until` (ms since start), letting promise chains settle
   *  after each, and calls `afterEach` after each one. */
  async runUntil(until: number, afterEach: () => void = () => undefined): Promise<void> {
    for (;;) {
      await settle();
      afterEach();
      let next: { at: number; id: number; fn: () => void } | undefined;
      for (const x of this.timers) if (!next || x.at < next.at || (x.at === next.at && x.id < next.id)) next = x;
      if (!next || next.at > until) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.t = next.at;
      next.fn();
    }
    this.t = Math.max(this.t, until);
  }
}

/** Lets every already-resolved promise chain run (in-memory stores never really wait). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** mulberry32: small, seedable, good enough to shuffle a simulation. */
export class SeededRandom implements Random {
  constructor(private state: number) {}

  next(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

export interface LogLine {
  level: "info" | "warn" | "error";
  obj: Record<string, unknown>;
  msg: string;
}

export class RecordingLog implements LeaseLogger {
  readonly lines: LogLine[] = [];
  info(obj: object, msg: string): void {
    this.lines.push({ level: "info", obj: obj as Record<string, unknown>, msg });
  }
  warn(obj: object, msg: string): void {
    this.lines.push({ level: "warn", obj: obj as Record<string, unknown>, msg });
  }
  error(obj: object, msg: string): void {
    this.lines.push({ level: "error", obj: obj as Record<string, unknown>, msg });
  }
  codes(): string[] {
    return this.lines.map((l) => String(l.obj.code));
  }
  withCode(code: string): LogLine[] {
    return this.lines.filter((l) => l.obj.code === code);
  }
}

/** Keeps the last saved state, like a state dir that survives the process. */
export class MemoryStore implements LeaseStateStore {
  saved: PersistedLeaseState | null = null;
  saves = 0;
  async load(): Promise<PersistedLeaseState | null> {
    return this.saved;
  }
  async save(state: PersistedLeaseState): Promise<void> {
    this.saved = structuredClone(state);
    this.saves++;
  }
}

export interface BusOptions {
  seed: number;
  /** Probability that a packet (broadcast, push-pull half, reliable send) is lost. */
  loss: number;
  /** Probability that a gossip packet is delivered twice. */
  duplicate: number;
  minDelayMs: number;
  maxDelayMs: number;
  gossipEveryMs: number;
  pushPullEveryMs: number;
}

export const DEFAULT_BUS: BusOptions = {
  seed: 1,
  loss: 0,
  duplicate: 0,
  minDelayMs: 1,
  maxDelayMs: 50,
  gossipEveryMs: 200,
  pushPullEveryMs: 3_000,
};

/** A node's seed list (none: it learns the ring from peers) and timings other than the defaults. */
export type SimNodeOptions = { seeds?: readonly string[] } & Partial<LeaseTimings>;

/** One simulated node: its lease layer, delegate, store (kept across restarts) and membership port. */
export class SimNode implements MembershipPort {
  up = false;
  /** One lease layer per address family of the bus (IPv4 first), as a dual-stack agent has. */
  families: SubnetLeases[] = [];
  delegate!: LeaseDelegate;
  readonly log = new RecordingLog();
  /** One store per family, kept across restarts. */
  readonly stores: MemoryStore[];
  /** Bumped on every restart, so that timers of a previous life do nothing. */
  life = 0;

  constructor(
    readonly bus: Bus,
    readonly name: string,
    readonly extra: SimNodeOptions,
  ) {
    this.stores = bus.spaces.map(() => new MemoryStore());
  }

  /** The first family's lease layer and store. */
  get leases(): SubnetLeases {
    return this.families[0];
  }

  get store(): MemoryStore {
    return this.stores[0];
  }

  localNode(): { name: string } {
    return { name: this.name };
  }

  members(): NodeView[] {
    return this.bus.reachableFrom(this.name).map((n) => view(n.name, "alive"));
  }

  request(to: string, msg: Uint8Array): Promise<Uint8Array | undefined> {
    return this.bus.request(this, to, msg);
  }

  updateNode(): void {}
}

function view(name: string, state: NodeView["state"]): NodeView {
  return { name, host: "sim", port: 0, incarnation: 0, state, meta: new Uint8Array(0) };
}

export class Bus {
  readonly clock = new VirtualClock();
  readonly random: SeededRandom;
  readonly nodes = new Map<string, SimNode>();
  /** Node -> partition group; nodes talk only within a group. */
  private readonly group = new Map<string, number>();

  /** The address families' spaces, each leased on its own ring. */
  readonly spaces: readonly LeaseSpace[];

  constructor(
    space: LeaseSpace | readonly LeaseSpace[],
    readonly o: BusOptions = DEFAULT_BUS,
  ) {
    this.spaces = Array.isArray(space) ? space : [space as LeaseSpace];
    this.random = new SeededRandom(o.seed);
  }

  get space(): LeaseSpace {
    return this.spaces[0];
  }

  add(name: string, extra: SimNodeOptions = {}): SimNode {
    const node = new SimNode(this, name, extra);
    this.nodes.set(name, node);
    this.group.set(name, 0);
    return node;
  }

  /** Starts (or restarts, with its saved state) a node and its gossip timers. */
  async start(node: SimNode): Promise<void> {
    node.life++;
    node.up = true;
    const { seeds, ...timings } = node.extra;
    // A short bootstrap wait keeps simulated cold starts brief; every other timing is production's.
    const layer = createLeaseLayer(
      {
        space: this.spaces[0] as SubnetSpace,
        space6: this.spaces[1] as Ipv6SubnetSpace | undefined,
        seeds: seeds ?? [],
        lease: { bootstrapQuietMs: 2_000, ...timings },
      },
      {
        membership: node,
        store: node.stores[0],
        store6: node.stores[1],
        clock: this.clock,
        random: new SeededRandom(this.o.seed * 31 + node.life * 7 + node.name.length),
        log: node.log,
      },
    );
    node.families = layer.families;
    node.delegate = layer.delegate;
    for (const l of node.families) await l.start();
    const life = node.life;
    const every = (ms: number, fn: () => void): void => {
      const tick = (): void => {
        if (!node.up || node.life !== life) return;
        fn();
        this.clock.setTimer(ms, tick);
      };
      this.clock.setTimer(this.random.next() * ms, tick);
    };
    every(this.o.gossipEveryMs, () => this.gossip(node));
    every(this.o.pushPullEveryMs, () => this.pushPull(node));
    // Membership: the others see it join, it sees them, and joining does a push-pull.
    for (const peer of this.reachableFrom(node.name)) {
      peer.delegate.notifyJoin(view(node.name, "alive"));
      node.delegate.notifyJoin(view(peer.name, "alive"));
    }
    this.pushPull(node);
  }

  /** Kills the node: no more sends, timers or state changes; its store keeps what it saved. */
  async crash(node: SimNode): Promise<void> {
    const peers = this.reachableFrom(node.name);
    node.up = false;
    for (const l of node.families) await l.stop();
    for (const peer of peers) peer.delegate.notifyLeave(view(node.name, "dead"));
  }

  /** Splits the cluster: each list becomes a group that only talks within itself. */
  partition(...groups: string[][]): void {
    const before = this.pairs();
    groups.forEach((g, i) => g.forEach((n) => this.group.set(n, i + 1)));
    this.announceReachability(before);
  }

  heal(): void {
    const before = this.pairs();
    for (const n of this.group.keys()) this.group.set(n, 0);
    this.announceReachability(before);
  }

  reachableFrom(name: string): SimNode[] {
    const g = this.group.get(name);
    return [...this.nodes.values()].filter((n) => n.up && n.name !== name && this.group.get(n.name) === g);
  }

  upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.up);
  }

  /** A stream exchange: the request or its answer may be lost (loss applies to each half). */
  request(from: SimNode, to: string, msg: Uint8Array): Promise<Uint8Array | undefined> {
    const life = from.life;
    return new Promise((resolve, reject) => {
      const target = this.nodes.get(to);
      const ok = (): boolean => (target?.up ?? false) && from.up && from.life === life && this.linked(from.name, to);
      if (!ok() || this.random.next() < this.o.loss) {
        this.clock.setTimer(this.delay(), () => reject(new Error(`cannot reach ${to}`)));
        return;
      }
      this.clock.setTimer(this.delay(), () => {
        if (!ok()) return reject(new Error(`lost connection to ${to}`));
        const targetLife = target!.life;
        void target!.delegate.answerMsg(from.name, msg).then((answer) => {
          const lost = this.random.next() < this.o.loss;
          this.clock.setTimer(this.delay(), () => {
            if (lost || !ok() || target!.life !== targetLife) reject(new Error(`lost connection to ${to}`));
            else resolve(answer);
          });
        });
      });
    });
  }

  private gossip(node: SimNode): void {
    const peers = this.shuffle(this.reachableFrom(node.name)).slice(0, 3);
    for (const peer of peers) {
      const batch = node.delegate.getBroadcasts(2, 1400);
      for (const msg of batch) this.packet(node, peer, () => peer.delegate.notifyMsg(node.name, msg));
    }
  }

  private pushPull(node: SimNode): void {
    const peer = this.shuffle(this.reachableFrom(node.name))[0];
    if (!peer) return;
    const mine = node.delegate.localState();
    this.packet(node, peer, () => {
      const theirs = peer.delegate.localState();
      peer.delegate.mergeRemoteState(mine);
      this.packet(peer, node, () => node.delegate.mergeRemoteState(theirs));
    });
  }

  /** Delivers after a random delay unless lost, the link broke or either side restarted. */
  private packet(from: SimNode, to: SimNode, deliver: () => void): void {
    if (this.random.next() < this.o.loss) return;
    const [fl, tl] = [from.life, to.life];
    const copies = this.random.next() < this.o.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      this.clock.setTimer(this.delay(), () => {
        if (from.up && to.up && from.life === fl && to.life === tl && this.linked(from.name, to.name)) deliver();
      });
    }
  }

  private linked(a: string, b: string): boolean {
    return this.group.get(a) === this.group.get(b);
  }

  private delay(): number {
    return this.o.minDelayMs + this.random.next() * (this.o.maxDelayMs - this.o.minDelayMs);
  }

  private shuffle<T>(xs: T[]): T[] {
    const out = [...xs];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.random.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  private pairs(): Set<string> {
    const out = new Set<string>();
    for (const a of this.upNodes()) for (const b of this.reachableFrom(a.name)) out.add(`${a.name}\u0000${b.name}`);
    return out;
  }

  /** Membership's view of a partition: unreachable members are declared dead, and rejoin on heal. */
  private announceReachability(before: Set<string>): void {
    const after = this.pairs();
    for (const pair of before) {
      if (after.has(pair)) continue;
      const [a, b] = pair.split("\u0000");
      this.nodes.get(a)!.delegate.notifyLeave(view(b, "dead"));
    }
    for (const pair of after) {
      if (before.has(pair)) continue;
      const [a, b] = pair.split("\u0000");
      this.nodes.get(a)!.delegate.notifyJoin(view(b, "alive"));
    }
  }
}
