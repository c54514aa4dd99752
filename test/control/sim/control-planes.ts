// The simulator's nodes: whole control planes (the agent's ControlPlane: memberlist, lease rings,
// joining), built exactly as the agent builds them — same constructor, same defaults — but over
// the simulated network and clock, with in-memory state stores that survive restarts. After every
// event the membership and lease invariants (invariants.ts) are checked. Every log line is kept,
// so tests can assert what was said (and that nothing was said at error level). Everything
// derives from one seed.
import { pino } from "pino";
import { ControlPlane, type ControlPlaneOptions } from "../../../src/control/control-plane.js";
import { Keyring } from "../../../src/control/gossip/keyring.js";
import type { Memberlist } from "../../../src/control/gossip/memberlist.js";
import type { Ipv6SubnetSpace, LeaseSpace, SubnetSpace } from "../../../src/control/lease/slots.js";
import { decodeMessageFor } from "../../../src/control/lease/wire.js";
import type { Addr } from "../../../src/control/runtime.js";
import { parseIpv6 } from "../../../src/net/ipv6.js";
import { CLUSTER_KEY } from "./cluster.js";
import { LeaseInvariants, MembershipInvariants } from "./invariants.js";
import { MemoryMembers, MemoryStore } from "./doubles.js";
import { SimNetwork, type LinkConditions, type SimHost } from "./network.js";
import { SeededRandom } from "./random.js";
import { Scheduler } from "./scheduler.js";

export interface LogRecord {
  level: number;
  /** The node that logged it (a line's own `node` field names the node it is about). */
  from: string;
  code?: string;
  msg: string;
  [k: string]: unknown;
}

export type PlaneStartOptions = Partial<ControlPlaneOptions> & { join: Addr[]; seeds: readonly string[] };

/** One simulated node: a host, its state dir (a store per address family, IPv4 first) and its
 *  current control plane. */
export class PlaneNode {
  plane?: ControlPlane;
  /** Control planes started on this host so far (restarts included). */
  runs = 0;
  /** What it was last started with (restart() uses it again). */
  startOptions?: PlaneStartOptions;
  /** Its control plane is stopping (stop()): it may see itself left. */
  stopping = false;
  /** The members' addresses its state dir keeps. */
  readonly members = new MemoryMembers();
  /** The gossip key its key file holds (each start reads it). */
  key: Uint8Array = CLUSTER_KEY;
  /** The keyring of its current run (replace() is what a SIGHUP's reload of the key file does). */
  keyring?: Keyring;
  /** The slots (per family) its current run held once started (from its saved state), undefined
   *  until then. */
  heldAtStart?: Array<number | undefined>;
  /** Nodes its current run asked for slots before it reached its cluster (invariant 6). */
  askedBeforeReach: string[] = [];
  /** Log codes of writes for its name (WRITES_FOR_NAME) its current run made before reaching. */
  wroteBeforeReach: string[] = [];
  private reachedThisRun = false;

  /** Its current run has not reached its cluster yet. Once it has, it may still lose its name
   *  (a duplicate that slipped in: the members decide), so this stays false for the run. */
  get unreached(): boolean {
    if (this.plane?.hasReachedCluster()) this.reachedThisRun = true;
    return this.plane !== undefined && !this.reachedThisRun;
  }

  /** A new run starts: nothing held, reached, asked nor written yet. */
  started(plane: ControlPlane): void {
    this.plane = plane;
    this.heldAtStart = undefined;
    this.askedBeforeReach = [];
    this.wroteBeforeReach = [];
    this.reachedThisRun = false;
  }

  constructor(
    readonly name: string,
    readonly host: SimHost,
    readonly stores: MemoryStore[],
  ) {}

  /** The first family's store. */
  get store(): MemoryStore {
    return this.stores[0];
  }
}

export interface SimOptions {
  conditions?: Partial<LinkConditions>;
  /** Check the membership invariants after every event (default true; off where two processes
   *  share a name on purpose). The lease invariants are always checked unless `sim.checkLeases`
   *  is set to false (the documented risk of reclaiming a node alive behind a partition). */
  checkMembership?: boolean;
}

/** What a lease layer logs when it writes for its name without being asked: none of them before
 *  it reached its cluster (invariant 6). */
const WRITES_FOR_NAME = new Set(["LEASE_FORK_SETTLED", "LEASE_EXTRA_FREED"]);

/** pino's numeric levels: 40 warn, 50 error. */
export const ERROR_LEVEL = 50;

export class SimControlPlanes {
  readonly scheduler = new Scheduler();
  readonly random: SeededRandom;
  readonly net: SimNetwork;
  readonly nodes = new Map<string, PlaneNode>();
  readonly logs: LogRecord[] = [];
  /** Host names the simulated resolver knows (a name may stand for several addresses). */
  readonly dns = new Map<string, string[]>();
  /** The enabled families' spaces, IPv4 first. */
  readonly spaces: readonly LeaseSpace[];
  /** Nodes an operator reclaimed (gone for good): the lease invariants ignore their saved state. */
  readonly gone = new Set<string>();
  checkLeases = true;
  private readonly membership?: MembershipInvariants;
  private nextHost = 1;

  /** `space`: the IPv4 network (hosts get 198.18.0.x); without it (IPv6-only, `space6` only)
   *  hosts get IPv6 addresses (2001:2::x); with both, dual-stack gossiping over IPv4. */
  constructor(
    readonly space: SubnetSpace | undefined,
    readonly seed: number,
    readonly space6?: Ipv6SubnetSpace,
    options: SimOptions = {},
  ) {
    this.spaces = [space, space6].filter((s): s is SubnetSpace | Ipv6SubnetSpace => s !== undefined);
    this.random = new SeededRandom(seed);
    this.net = new SimNetwork(this.scheduler, this.random.fork("network"), options.conditions);
    if (options.checkMembership ?? true) {
      const membership = (this.membership = new MembershipInvariants({
        liveNodes: () =>
          this.live().map((n) => ({
            name: n.name,
            runs: n.runs,
            leaving: n.stopping,
            ml: (): Memberlist => n.plane.memberlist,
          })),
        describe: () => this.describe(),
      }));
      this.scheduler.addCheck(() => membership.check());
    }
    const leases = new LeaseInvariants({
      spaces: this.spaces,
      gone: this.gone,
      leaseNodes: () =>
        [...this.nodes.values()].map((n) => ({
          name: n.name,
          families: n.plane?.families,
          stores: n.stores,
          ...(n.unreached && {
            unreached: { held: n.heldAtStart, asked: n.askedBeforeReach, wrote: n.wroteBeforeReach },
          }),
        })),
      describe: () => this.describe(),
    });
    this.scheduler.addCheck(() => {
      if (this.checkLeases) leases.check();
    });
  }

  /** A host for `name` at the next address, not started; `store`: its (first family's) state dir. */
  add(name: string, store = new MemoryStore()): PlaneNode {
    const host = this.net.host({
      host: this.space ? `198.18.0.${this.nextHost++}` : `2001:2::${(this.nextHost++).toString(16)}`,
      port: 7946,
    });
    const node = new PlaneNode(name, host, [store, ...this.spaces.slice(1).map(() => new MemoryStore())]);
    this.nodes.set(`${name}@${host.addr.host}`, node);
    return node;
  }

  node(name: string): PlaneNode {
    const found = [...this.nodes.values()].filter((n) => n.name === name);
    if (found.length !== 1) throw new Error(`${found.length} nodes named ${name}`);
    return found[0];
  }

  /** Starts (or restarts, with its saved rings) the node's control plane; only `name`, `join`,
   *  `seeds` and the spaces are set unless the test says more: everything else is the agent's default. */
  async start(node: PlaneNode, opts: PlaneStartOptions): Promise<ControlPlane> {
    node.runs++;
    node.startOptions = opts;
    const [store, store6] = this.space ? node.stores : [undefined, node.stores[0]];
    node.keyring = new Keyring(node.key);
    const plane = new ControlPlane(
      {
        name: node.name,
        space: this.space,
        space6: this.space6,
        ...(this.space6 && {
          underlay6: this.space
            ? parseIpv6(`2001:2::${node.host.addr.host.split(".")[3]}`)
            : parseIpv6(node.host.addr.host),
        }),
        ...opts,
      },
      {
        clock: node.host.clock,
        transport: this.net.attach(node.host),
        random: this.random.fork(`${node.name}@${node.host.addr.host}#${node.runs}`),
        keyring: node.keyring,
        store,
        store6,
        members: node.members,
        // Its own logger (the lines still go to this.logs): what it logs is told apart from a
        // node of the same name's, for invariant 6.
        logger: pino(
          { level: "info", base: { from: node.name } },
          {
            write: (line: string) => {
              const record = JSON.parse(line) as LogRecord;
              this.logs.push(record);
              if (record.code && WRITES_FOR_NAME.has(record.code) && node.unreached)
                node.wroteBeforeReach.push(record.code);
            },
          },
        ),
        resolve: async (host) => {
          const addrs =
            this.dns.get(host) ?? (/^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(":") ? [host] : undefined);
          if (!addrs) throw Object.assign(new Error(`${host} does not resolve`), { code: "ENOTFOUND" });
          return addrs;
        },
      },
    );
    node.started(plane);
    // The lease layer asks through its MembershipPort, the plane: note each ask made before reaching.
    const request = plane.request.bind(plane);
    plane.request = (to, msg) => {
      const fingerprints = this.spaces.map((s) => s.fingerprint);
      if (node.unreached && decodeMessageFor(fingerprints, msg).message.kind === "request")
        node.askedBeforeReach.push(to);
      return request(to, msg);
    };
    await plane.start();
    node.heldAtStart = plane.families.map((l) => l.currentLease()?.slot);
    // A start is an event: what it issued counts even if the node crashes before the next one.
    this.membership?.check();
    return plane;
  }

  /** Starts a crashed node again with its saved state and the options it last had. */
  restart(node: PlaneNode): Promise<ControlPlane> {
    if (!node.startOptions) throw new Error(`${node.name} was never started`);
    return this.start(node, node.startOptions);
  }

  /** Stops the node's control plane as the agent does (with a graceful leave, or without); the
   *  caller runs the simulation meanwhile. Checked as a live node until its stop is done. */
  async stop(node: PlaneNode, leave: boolean): Promise<void> {
    if (!node.plane) throw new Error(`${node.name} is not running`);
    node.stopping = true;
    try {
      await node.plane.stop(leave);
    } finally {
      node.stopping = false;
      node.plane = undefined;
    }
  }

  /** The host stops dead (its saved rings stay). */
  crash(node: PlaneNode): void {
    this.net.crash(node.host);
    node.plane = undefined;
  }

  /** Splits the network by node names: each list only talks within itself. */
  partition(...groups: string[][]): void {
    this.net.partition(...groups.map((g) => g.map((name) => this.node(name).host.addr)));
  }

  heal(): void {
    this.net.heal();
  }

  live(): Array<PlaneNode & { plane: ControlPlane }> {
    return [...this.nodes.values()].filter((n): n is PlaneNode & { plane: ControlPlane } => n.plane !== undefined);
  }

  runFor(ms: number): Promise<void> {
    return this.scheduler.runFor(ms);
  }

  runUntil(pred: () => boolean, maxMs: number, stepMs = 500): Promise<boolean> {
    return this.scheduler.runUntilTrue(pred, maxMs, stepMs);
  }

  /** Every live node holds a subnet in every family, no two the same; every view of each ring is
   *  identical and says each live node holds the subnet it uses. */
  agreed(): boolean {
    const live = this.live();
    return this.spaces.every((_, f) => {
      const leases = live.map((n) => n.plane.families[f].currentLease()?.subnet);
      if (leases.some((l) => l === undefined) || new Set(leases).size !== live.length) return false;
      if (new Set(live.map((n) => JSON.stringify(n.plane.families[f].ringState()))).size !== 1) return false;
      const ring = new Map(live[0].plane.families[f].peers().map((p) => [p.node, p.subnet]));
      return live.every((n) => ring.get(n.name) === n.plane.families[f].currentLease()?.subnet);
    });
  }

  errors(): LogRecord[] {
    return this.logs.filter((l) => l.level >= ERROR_LEVEL);
  }

  /** The codes `name` logged, in order. */
  codes(name: string): string[] {
    return this.logs.filter((l) => l.from === name && l.code !== undefined).map((l) => l.code!);
  }

  /** What `name` logged with `code`. */
  withCode(name: string, code: string): LogRecord[] {
    return this.logs.filter((l) => l.from === name && l.code === code);
  }

  describe(): string {
    return `seed ${this.seed}, t=${this.scheduler.elapsed()} ms`;
  }
}
