// Runs N Memberlists in the simulator: add, join, crash, restart, leave, partition; checks the
// membership invariants after every event (see invariants.ts). Everything derives from one seed;
// a failure message names it so the run can be replayed.
import { makeConfig, type MemberlistConfig, type ProfileName } from "../../../src/control/gossip/config.js";
import type { Delegate, EventDelegate, NodeView } from "../../../src/control/gossip/delegate.js";
import { Keyring } from "../../../src/control/gossip/keyring.js";
import { Memberlist } from "../../../src/control/gossip/memberlist.js";
import type { Logger } from "pino";
import type { Addr } from "../../../src/control/runtime.js";
import { MembershipInvariants } from "./invariants.js";
import { SimNetwork, type HostOptions, type LinkConditions, type SimHost } from "./network.js";
import { SeededRandom } from "./random.js";
import { Scheduler } from "./scheduler.js";

export interface ClusterOptions {
  seed: number;
  profile?: ProfileName;
  config?: Partial<MemberlistConfig>;
  conditions?: Partial<LinkConditions>;
  /** Check the membership invariants after every event (default true; the benchmark turns it off). */
  checkInvariants?: boolean;
  /** For debugging a seed: every node logs here (with its name). */
  logger?: Logger;
}

export interface NodeOptions extends HostOptions {
  keyring?: Keyring;
  /** Delegate.nodeMeta bytes (default: the name, so meta convergence is checkable). */
  meta?: Uint8Array;
  config?: Partial<MemberlistConfig>;
  /** Extra event delegate (e.g. the benchmark's recorder). */
  events?: EventDelegate;
}

/** One simulated node: its host (address, clock, slowness) and its current Memberlist run. */
export class SimNode {
  memberlist?: Memberlist;
  /** Instances started on this host so far (restarts included). */
  runs = 0;
  crashed = false;
  /** leave() has begun (it may still be sending its "left" broadcast). */
  leaving = false;
  left = false;
  meta: Uint8Array;

  constructor(
    readonly name: string,
    readonly host: SimHost,
    readonly options: NodeOptions,
    public keyring: Keyring,
  ) {
    this.meta = options.meta ?? new TextEncoder().encode(name);
  }

  get addr(): Addr {
    return this.host.addr;
  }

  /** Running: started, not crashed, not left. */
  get live(): boolean {
    return !!this.memberlist && !this.crashed && !this.left;
  }

  ml(): Memberlist {
    if (!this.memberlist) throw new Error(`${this.name} is not running`);
    return this.memberlist;
  }
}

export const CLUSTER_KEY = new Uint8Array(32).fill(7);

export class SimCluster {
  readonly scheduler = new Scheduler();
  readonly random: SeededRandom;
  readonly net: SimNetwork;
  readonly nodes = new Map<string, SimNode>();
  readonly invariants: MembershipInvariants;

  constructor(readonly options: ClusterOptions) {
    this.random = new SeededRandom(options.seed);
    this.net = new SimNetwork(this.scheduler, this.random.fork("network"), options.conditions);
    this.invariants = new MembershipInvariants(this);
    if (options.checkInvariants ?? true) this.scheduler.addCheck(() => this.invariants.check());
  }

  /** Adds and starts a node at 198.18.x.y:7946 (x.y from the node index). */
  add(name: string, options: NodeOptions = {}): SimNode {
    const i = this.nodes.size + 1;
    const host = this.net.host({ host: `198.18.${i >> 8}.${i & 255}`, port: 7946 }, options);
    const node = new SimNode(name, host, options, options.keyring ?? new Keyring(CLUSTER_KEY));
    this.nodes.set(name, node);
    this.start(node);
    return node;
  }

  /** Adds n nodes named prefix0..prefix(n-1). */
  addMany(n: number, prefix = "n", options: NodeOptions = {}): SimNode[] {
    return Array.from({ length: n }, (_, i) => this.add(`${prefix}${i}`, options));
  }

  node(name: string): SimNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  liveNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.live);
  }

  /** Every node in `names` (default: all live) joins through the given seeds; runs until joins settle. */
  async join(names: string[], seeds: string[], maxMs = 15_000): Promise<number[]> {
    const seedAddrs = seeds.map((s) => this.node(s).addr);
    const pending = names.map((n) => this.node(n).ml().join(seedAddrs));
    let results: number[] | undefined;
    void Promise.all(pending).then((r) => (results = r));
    await this.scheduler.runUntilTrue(() => results !== undefined, maxMs);
    if (!results) throw new Error(`${this.describe()}: joins did not finish in ${maxMs} ms`);
    return results;
  }

  crash(name: string): void {
    const node = this.node(name);
    node.crashed = true;
    this.net.crash(node.host);
  }

  /** A new run of a crashed (or left) node on the same address, same name, key and meta. */
  restart(name: string): SimNode {
    const node = this.node(name);
    if (node.live) throw new Error(`${name} is still running`);
    node.crashed = false;
    node.leaving = false;
    node.left = false;
    this.start(node);
    return node;
  }

  /** Graceful leave; resolves when the node has stopped. `meanwhile` runs once the leave began. */
  async leave(name: string, timeoutMs = 5000, meanwhile?: (ml: Memberlist) => void): Promise<void> {
    const node = this.node(name);
    let done = false;
    node.leaving = true;
    void node
      .ml()
      .leave(timeoutMs)
      .then(() => (done = true));
    meanwhile?.(node.ml());
    await this.scheduler.runUntilTrue(() => done, timeoutMs + 1000, 10);
    if (!done) throw new Error(`${this.describe()}: leave of ${name} did not finish`);
    node.left = true;
  }

  partition(...groups: string[][]): void {
    this.net.partition(...groups.map((g) => g.map((n) => this.node(n).addr)));
  }

  heal(): void {
    this.net.heal();
  }

  runFor(ms: number): Promise<void> {
    return this.scheduler.runFor(ms);
  }

  runUntil(pred: () => boolean, maxMs: number, stepMs = 100): Promise<boolean> {
    return this.scheduler.runUntilTrue(pred, maxMs, stepMs);
  }

  /** Every live node sees exactly the live nodes as alive, with their current meta. */
  converged(): boolean {
    const live = this.liveNodes();
    const expected = new Map(live.map((n) => [n.name, n.meta]));
    return live.every((n) => {
      const seen = n.ml().members();
      return (
        seen.length === expected.size &&
        seen.every((v) => v.state === "alive" && sameBytes(expected.get(v.name), v.meta))
      );
    });
  }

  /** Every live node lists every live node (alive or suspect): nobody is missing or dead. */
  everyoneKnown(): boolean {
    const live = this.liveNodes();
    return live.every((n) => {
      const seen = new Set(
        n
          .ml()
          .members()
          .map((v) => v.name),
      );
      return seen.size === live.length && live.every((o) => seen.has(o.name));
    });
  }

  /** How `observer` currently sees `subject` (undefined: unknown). */
  view(observer: string, subject: string): NodeView | undefined {
    return this.node(observer)
      .ml()
      .allMembers()
      .find((v) => v.name === subject);
  }

  describe(): string {
    return `seed ${this.options.seed} at t=${this.scheduler.elapsed()} ms`;
  }

  private start(node: SimNode): void {
    const name = node.name;
    const config = makeConfig(this.options.profile ?? "lan", name, { ...this.options.config, ...node.options.config });
    const delegate: Delegate = {
      nodeMeta: () => node.meta,
      notifyMsg: () => {},
      getBroadcasts: () => [],
      localState: () => new Uint8Array(0),
      mergeRemoteState: () => {},
    };
    node.runs++;
    node.memberlist = new Memberlist(config, {
      clock: node.host.clock,
      transport: this.net.attach(node.host),
      random: this.random.fork(`${name}#${node.runs}`),
      keyring: node.keyring,
      delegate,
      events: node.options.events,
      logger: this.options.logger?.child({ node: name, run: node.runs }),
    });
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return !!a && a.length === b.length && a.every((v, i) => v === b[i]);
}
