// The control plane as the agent uses it: gossip membership (SWIM + Lifeguard, encrypted) and the
// subnet lease ring riding on it, plus each node's record (lease and backend announcement).
// It answers two questions for the agent — "what is my subnet?" and "who are my peers, where,
// with which backend?" — and says when the second answer changes.
import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import type { BackendAnnouncement } from "../backends/backend.js";
import { parseIpv4, parsePrefix, type Ipv4Prefix } from "../net/ipv4.js";
import { makeConfig, type ProfileName } from "./gossip/config.js";
import type { Delegate, EventDelegate, NodeView } from "./gossip/delegate.js";
import type { Keyring } from "./gossip/keyring.js";
import { Memberlist } from "./gossip/memberlist.js";
import type { GossipCounters } from "./gossip/observability.js";
import { SubnetLeases, type Lease, type ReclaimReport } from "./lease/allocator.js";
import { encodeLeaseMeta, LeaseDelegate } from "./lease/delegate.js";
import type { SubnetSpace } from "./lease/slots.js";
import { FileLeaseStore } from "./lease/store.js";
import { decodeNodeRecord, encodeNodeRecord } from "./node-record.js";
import type { Addr } from "./runtime.js";
import { RealClock, realRandom } from "./transport/real-clock.js";
import { UdpTcpTransport } from "./transport/udp-tcp.js";

export interface ControlPlaneOptions {
  name: string;
  /** Underlay address to bind gossip to and to advertise (peers send pod traffic here too). */
  bindAddr: string;
  gossipPort: number;
  /** Gossip addresses of nodes to join (none: start a new cluster). */
  join: Addr[];
  /** Initial owners of the subnet space (see src/control/lease): the same list on every seed. */
  seeds: string[];
  space: SubnetSpace;
  keyring: Keyring;
  stateDir: string;
  profile?: ProfileName;
  logger: Logger;
  reclaimGraceMs?: number;
}

export interface Peer {
  name: string;
  subnet: Ipv4Prefix;
  underlay: number;
  backend: BackendAnnouncement;
}

export type ControlPlaneEvents = { change: [] };

export class ControlPlane extends EventEmitter<ControlPlaneEvents> {
  private announcement?: BackendAnnouncement;

  private constructor(
    private readonly opts: ControlPlaneOptions,
    readonly members: Memberlist,
    readonly leases: SubnetLeases,
    private readonly transport: UdpTcpTransport,
  ) {
    super();
  }

  /** Binds gossip, loads the saved lease state, starts leasing and joins the given nodes. */
  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const clock = new RealClock();
    const transport = await UdpTcpTransport.open({ host: opts.bindAddr, port: opts.gossipPort });
    let plane: ControlPlane | undefined;
    // The delegate and the lease layer need each other and the memberlist: wire them late.
    const hooks: Delegate & EventDelegate = {
      // Memberlist asks for the record while it is being built, before the lease layer exists.
      nodeMeta: (limit) => (plane ? plane.nodeMeta(limit) : encodeNodeRecord(encodeLeaseMeta(null), undefined)),
      notifyMsg: (from, msg) => leaseDelegate.notifyMsg(from, msg),
      getBroadcasts: (overhead, limit) => leaseDelegate.getBroadcasts(overhead, limit),
      localState: () => leaseDelegate.localState(),
      mergeRemoteState: (state) => leaseDelegate.mergeRemoteState(state),
      notifyJoin: (n) => (leaseDelegate.notifyJoin(n), plane?.emit("change")),
      notifyUpdate: (n) => (leaseDelegate.notifyUpdate(n), plane?.emit("change")),
      notifyLeave: (n) => (leaseDelegate.notifyLeave(n), plane?.emit("change")),
    };
    const members = new Memberlist(makeConfig(opts.profile ?? "lan", opts.name), {
      clock, transport, random: realRandom, keyring: opts.keyring, delegate: hooks, events: hooks,
      logger: opts.logger.child({ layer: "gossip" }),
    });
    const leases = new SubnetLeases({
      space: opts.space, seeds: opts.seeds, membership: members, store: new FileLeaseStore(opts.stateDir),
      clock, random: realRandom, log: opts.logger.child({ layer: "lease" }), reclaimGraceMs: opts.reclaimGraceMs,
    });
    const leaseDelegate = new LeaseDelegate(leases, members, opts.logger.child({ layer: "lease" }));
    plane = new ControlPlane(opts, members, leases, transport);
    leases.on("peers", () => plane!.emit("change"));
    await leases.start();
    if (opts.join.length > 0) {
      const answered = await members.join(opts.join);
      opts.logger.info({ join: opts.join, answered }, answered > 0 ? "joined the cluster" : "no seed answered yet; gossip keeps trying");
    }
    return plane;
  }

  /** Resolves once this node holds a subnet (waits, and logs why, while it cannot get one). */
  async lease(): Promise<Ipv4Prefix> {
    const l: Lease = await this.leases.lease();
    return parsePrefix(l.subnet);
  }

  /** Why this node has no subnet yet, for /readyz and `weft status`; null once it has one. */
  leaseWaitReason(): string | null {
    return this.leases.waitReason();
  }

  /** Publishes this node's backend data in its gossip record. */
  announce(a: BackendAnnouncement): void {
    this.announcement = a;
    this.members.updateNode();
  }

  /** Live peers that hold a lease and have announced a backend. */
  peers(): Peer[] {
    const leased = new Map(this.leases.peers().map((p) => [p.node, p.subnet]));
    const out: Peer[] = [];
    for (const m of this.members.members()) {
      if (m.name === this.opts.name) continue;
      const subnet = leased.get(m.name);
      const record = decodeNodeRecord(m.meta);
      if (!subnet || !record?.backend) continue;
      out.push({ name: m.name, subnet: parsePrefix(subnet), underlay: parseIpv4(m.host), backend: record.backend });
    }
    return out;
  }

  /** Every member the gossip layer knows, dead and left ones included. */
  allMembers(): NodeView[] {
    return this.members.allMembers();
  }

  gossipCounters(): GossipCounters {
    return this.members.counters();
  }

  reclaim(node: string): Promise<ReclaimReport> {
    return this.leases.reclaim(node);
  }

  /** Graceful: tell the cluster we leave (so peers drop our routes at once), then stop. */
  async stop(leave: boolean): Promise<void> {
    if (leave) await this.members.leave(2000).catch(() => undefined);
    await this.members.shutdown();
    await this.leases.stop();
    await this.transport.close();
  }

  private nodeMeta(limit: number): Uint8Array {
    const record = encodeNodeRecord(encodeLeaseMeta(this.leases.currentLease()?.subnet ?? null), this.announcement);
    if (record.length > limit) {
      // Cannot happen with a sane config (a record is under 100 bytes); say so rather than truncate.
      this.opts.logger.error({ code: "NODE_RECORD_TOO_BIG", bytes: record.length, limit }, "node record does not fit the gossip meta limit");
      return new Uint8Array(0);
    }
    return record;
  }
}
