// Whole control planes (the agent's ControlPlane: memberlist, lease ring, joining) in the
// simulator, built exactly as the agent builds them but over the simulated network and clock,
// with an in-memory state store that survives restarts. Every log line is kept, so tests can
// assert what was said (and that nothing was said at error level).
import { pino, type Logger } from "pino";
import { ControlPlane, type ControlPlaneOptions } from "../../../src/control/control-plane.js";
import { Keyring } from "../../../src/control/gossip/keyring.js";
import type { Ipv6SubnetSpace, SubnetSpace } from "../../../src/control/lease/slots.js";
import { parseIpv6 } from "../../../src/net/ipv6.js";
import type { Addr } from "../../../src/control/runtime.js";
import { MemoryStore } from "../lease-harness.js";
import { CLUSTER_KEY } from "./cluster.js";
import { SimNetwork, type SimHost } from "./network.js";
import { SeededRandom } from "./random.js";
import { Scheduler } from "./scheduler.js";

export interface LogRecord {
  level: number;
  node: string;
  code?: string;
  msg: string;
  [k: string]: unknown;
}

export interface PlaneNode {
  readonly name: string;
  readonly host: SimHost;
  readonly store: MemoryStore;
  plane?: ControlPlane;
  runs: number;
}

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
  private readonly logger: Logger;
  private nextHost = 1;

  /** `space`: the IPv4 network; with `space6` instead (an IPv6-only cluster) hosts get IPv6
   *  addresses (2001:2::x) and each node's store holds its IPv6 ring. */
  constructor(
    readonly space: SubnetSpace | undefined,
    seed: number,
    readonly space6?: Ipv6SubnetSpace,
  ) {
    this.random = new SeededRandom(seed);
    this.net = new SimNetwork(this.scheduler, this.random.fork("network"));
    this.logger = pino(
      { level: "info" },
      { write: (line: string) => void this.logs.push(JSON.parse(line) as LogRecord) },
    );
  }

  /** A host for `name` at the next 198.18.0.x address (2001:2::x without IPv4), not started;
   *  `store`: its state dir. */
  add(name: string, store = new MemoryStore()): PlaneNode {
    const host = this.net.host({
      host: this.space ? `198.18.0.${this.nextHost++}` : `2001:2::${(this.nextHost++).toString(16)}`,
      port: 7946,
    });
    const node: PlaneNode = { name, host, store, runs: 0 };
    this.nodes.set(`${name}@${host.addr.host}`, node);
    return node;
  }

  node(name: string): PlaneNode {
    const found = [...this.nodes.values()].filter((n) => n.name === name);
    if (found.length !== 1) throw new Error(`${found.length} nodes named ${name}`);
    return found[0];
  }

  /** Starts (or restarts, with its saved ring) the node's control plane; only `name`, `join`,
   *  `seeds` and `space` are set unless the test says more: everything else is the agent's default. */
  async start(
    node: PlaneNode,
    opts: Partial<ControlPlaneOptions> & { join: Addr[]; seeds: string[] },
  ): Promise<ControlPlane> {
    node.runs++;
    const plane = new ControlPlane(
      {
        name: node.name,
        space: this.space,
        space6: this.space6,
        ...(!this.space && { underlay6: parseIpv6(node.host.addr.host) }),
        ...opts,
      },
      {
        clock: node.host.clock,
        transport: this.net.attach(node.host),
        random: this.random.fork(`${node.name}@${node.host.addr.host}#${node.runs}`),
        keyring: new Keyring(CLUSTER_KEY),
        ...(this.space ? { store: node.store } : { store6: node.store }),
        logger: this.logger.child({ node: node.name }),
        resolve: async (host) => {
          const addrs =
            this.dns.get(host) ?? (/^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(":") ? [host] : undefined);
          if (!addrs) throw Object.assign(new Error(`${host} does not resolve`), { code: "ENOTFOUND" });
          return addrs;
        },
      },
    );
    node.plane = plane;
    await plane.start();
    return plane;
  }

  /** The host stops dead (its saved ring stays). */
  crash(node: PlaneNode): void {
    this.net.crash(node.host);
    node.plane = undefined;
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

  errors(): LogRecord[] {
    return this.logs.filter((l) => l.level >= ERROR_LEVEL);
  }
}
