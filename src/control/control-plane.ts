// The control plane as the agent uses it: gossip membership (SWIM + Lifeguard, encrypted) and the
// subnet lease ring riding on it, plus each node's record (lease and backend announcement).
// It answers two questions for the agent — "what is my subnet?" and "who are my peers, where,
// with which backend?" — and says when the second answer changes. Each enabled address family
// (IPv4, IPv6, or both for dual-stack) leases its subnet on a ring of its own, and each peer's
// record carries its IPv6 underlay address and IPv6 announcement when IPv6 is on. Gossip itself
// runs over one family: IPv4 unless IPv4 is off (the transport is bound to an IPv6 address then).
import { lookup } from "node:dns/promises";
import { EventEmitter } from "node:events";
import { isIP, isIPv6 } from "node:net";
import type { Logger } from "pino";
import type { BackendPeer } from "../backends/backend.js";
import { isWeftError, WeftError } from "../errors.js";
import { parseIpv4, parsePrefix, type Ipv4Prefix } from "../net/ipv4.js";
import { formatIpv6, isIpv4Mapped, parseIpv6, parsePrefix6, type Ipv6Prefix } from "../net/ipv6.js";
import type { BroadcastTarget } from "./gossip/broadcast.js";
import { makeConfig, type MemberlistConfig, type ProfileName } from "./gossip/config.js";
import type { Delegate, EventDelegate, NodeView } from "./gossip/delegate.js";
import type { Keyring } from "./gossip/keyring.js";
import { Memberlist } from "./gossip/memberlist.js";
import type { GossipCounters } from "./gossip/observability.js";
import { Joiner, type JoinStatus, type JoinTiming } from "./join.js";
import { SubnetLeases } from "./lease/subnet-leases.js";
import type { Lease, LeaseLogger, LeaseTimings, MembershipPort, ReclaimReport, Reservation } from "./lease/types.js";
import { encodeLeaseMeta, LeaseDelegate } from "./lease/delegate.js";
import type { Ipv6SubnetSpace, SubnetSpace } from "./lease/slots.js";
import { FileLeaseStore, type LeaseStateStore } from "./lease/store.js";
import {
  decodeNodeRecord,
  encodeNodeRecord,
  NO_BACKEND,
  type Announced,
  type LastAnnounced,
  type NodeRecord,
} from "./node-record.js";
import type { Addr, Clock, Random, Transport } from "./runtime.js";
import { FileMemberStore, SavedMembers, type MemberStore } from "./saved-members.js";
import { RealClock, realRandom } from "./transport/real-clock.js";
import { UdpTcpTransport } from "./transport/udp-tcp.js";

/** What the control plane is told; anything left out (or undefined) takes the production default. */
export interface ControlPlaneOptions {
  name: string;
  /** Gossip addresses of nodes to join (none: start a new cluster); a host may be a DNS name. */
  join: Addr[];
  /** Initial owners of the subnet space (see src/control/lease): the same list on every seed;
   *  empty on a node that learns the ring from its peers. */
  seeds: readonly string[];
  /** The IPv4 network's space; undefined when IPv4 is off (IPv6-only). */
  space?: SubnetSpace;
  /** The IPv6 network's space when IPv6 is on (leased on a ring of its own). */
  space6?: Ipv6SubnetSpace;
  /** This node's IPv6 underlay address when IPv6 is on (--public-ipv6; IPv4-mapped when IPv6 rides the IPv4 underlay), for its record. */
  underlay6?: bigint;
  /** Gossip timing profile (default lan). */
  profile?: ProfileName;
  /** Overrides of the profile's settings (tests and the simulator). */
  gossip?: Partial<MemberlistConfig>;
  /** Overrides of the lease layer's timings, e.g. reclaimGraceMs (default 24 h). */
  lease?: Partial<LeaseTimings>;
  joinTiming?: Partial<JoinTiming>;
}

/** The outside world: real sockets, clock and disk in the agent; simulated ones in tests. */
export interface ControlPlaneDeps {
  clock: Clock;
  transport: Transport;
  random: Random;
  keyring: Keyring;
  /** The IPv4 ring's store (needed while IPv4 is on). */
  store?: LeaseStateStore;
  /** The IPv6 ring's store (needed while IPv6 is on). */
  store6?: LeaseStateStore;
  /** Where members' addresses are kept for the next start (none: a restart has its join list alone). */
  members?: MemberStore;
  logger: Logger;
  /** Addresses for a join target's host (default: the system resolver, every record). */
  resolve?: (host: string) => Promise<string[]>;
}

/** The settings in force, defaults filled in (`weft status` shows them). */
export interface ControlPlaneSettings {
  profile: ProfileName;
  gossip: Pick<
    MemberlistConfig,
    "probeIntervalMs" | "probeTimeoutMs" | "suspicionMult" | "pushPullIntervalMs" | "tombstoneRetentionMs"
  >;
  lease: LeaseTimings;
}

export type ControlPlaneEvents = {
  /** Members, leases or backend announcements changed: peers() may answer differently. */
  change: [];
  /** The ring gave this node's subnet to another node: stop using it at once. */
  lost: [Lease];
  /** This node must not run (its name is taken by a live node elsewhere). */
  fatal: [Error];
};

/**
 * Built in dependency order, so nothing is used before it exists: the lease layer (it needs only
 * this object's name and, once started, membership), its gossip adapter, then the memberlist with
 * this object as its delegate: memberlist calls nodeMeta and notifyJoin while it is being built.
 */
export class ControlPlane extends EventEmitter<ControlPlaneEvents> implements Delegate, EventDelegate, MembershipPort {
  /** The first enabled family's lease layer (IPv4's, or IPv6's on an IPv6-only node): the one
   *  whose settings `weft status` shows and whose merge the agent waits for after joining. */
  readonly leases: SubnetLeases;
  /** The IPv4 ring's lease layer, unless IPv4 is off. */
  readonly leases4?: SubnetLeases;
  /** The IPv6 ring's lease layer, when IPv6 is on. */
  readonly leases6?: SubnetLeases;
  /** Every enabled family's lease layer, IPv4 first. */
  readonly families: readonly SubnetLeases[];
  readonly memberlist: Memberlist;
  private readonly leaseDelegate: LeaseDelegate;
  private readonly joiner: Joiner;
  /** Stops telling the joiner of new gossip keys. */
  private readonly unwatchKeys: () => void;
  private readonly savedMembers?: SavedMembers;
  private readonly profile: ProfileName;
  private readonly log: Logger;
  private announcement?: Announced;
  private announcement6?: Announced;
  /** The last backend announcement of each family, shown to older agents while it is down (node-record.ts). */
  private readonly lastAnnounced: LastAnnounced = {};
  /** Each live peer's record as peers() last saw it, with its last backend announcements (peerRecords). */
  private readonly announced = new Map<string, NodeRecord>();
  /**
   * Each live member's run as this node tells them apart: a new number when it joins (first seen,
   * or back after it left or died) and when its record loses every backend announcement (a new
   * process before its backend runs). `fresh`: its last record had none. Gone at a leave.
   */
  private readonly runs = new Map<string, { run: number; fresh: boolean }>();
  private lastRun = 0;

  constructor(
    private readonly opts: ControlPlaneOptions,
    private readonly deps: ControlPlaneDeps,
  ) {
    super();
    this.log = deps.logger;
    this.profile = opts.profile ?? "lan";
    const leaseLog = deps.logger.child({ layer: "lease" });
    const { families, leases4, leases6, delegate } = createLeaseLayer(opts, {
      membership: this,
      store: deps.store,
      store6: deps.store6,
      clock: deps.clock,
      random: deps.random,
      log: leaseLog,
    });
    this.families = families;
    this.leases = families[0];
    this.leases4 = leases4;
    this.leases6 = leases6;
    this.leaseDelegate = delegate;
    for (const l of families) {
      l.on("peers", () => this.emit("change"));
      l.on("lost", (lost) => this.emit("lost", lost));
    }
    this.memberlist = new Memberlist(makeConfig(this.profile, opts.name, opts.gossip), {
      clock: deps.clock,
      transport: deps.transport,
      random: deps.random,
      keyring: deps.keyring,
      delegate: this,
      events: this,
      logger: deps.logger.child({ layer: "gossip" }),
      // Lost after joining; the joiner tells the owner (fatal), as for a conflict a join finds.
      onNameLost: (err) => this.joiner.nameConflict(err),
    });
    const family = isIPv6(deps.transport.local.host) ? 6 : 4;
    this.joiner = new Joiner(
      opts.join,
      {
        clock: deps.clock,
        random: deps.random,
        // Gossip runs over one family, so a name resolves to that family's records only (AAAA over
        // IPv6). An IPv6 literal is written as the sockets report addresses, so this node's own
        // address in a shared join list is recognised however it was spelt.
        resolve:
          deps.resolve ??
          ((host) =>
            isIP(host)
              ? Promise.resolve([isIPv6(host) ? formatIpv6(parseIpv6(host)) : host])
              : lookup(host, { all: true, family }).then((r) => r.map((a) => a.address))),
        join: (addrs, rejoin) => this.memberlist.join(addrs, rejoin),
        saved: () => this.savedMembers?.current() ?? [],
        othersAlive: () => this.memberlist.numMembers() - 1,
        nameHeld: () => this.memberlist.nameIsHeld(),
        self: deps.transport.local,
        log: deps.logger.child({ layer: "join" }),
        // Revoked first, synchronously: the owner's stop takes a few awaits, and the lease layer
        // must not give, take or settle slots meanwhile under a name that is another node's.
        nameTaken: (err) => {
          for (const l of this.families) l.revoke();
          this.emit("fatal", err);
        },
        // Only now may the lease layer take, ask for or give slots (a taken name must not).
        reached: () => {
          for (const l of this.families) l.admit();
        },
      },
      opts.joinTiming,
    );
    // Keys taken from the key file (SIGHUP, while starting too) may be what every round lacked.
    this.unwatchKeys = deps.keyring.onReplaced(() => this.joiner.keysChanged());
    if (deps.members)
      this.savedMembers = new SavedMembers({
        store: deps.members,
        clock: deps.clock,
        random: deps.random,
        members: () => this.memberlist.allMembers(),
        self: opts.name,
        log: deps.logger.child({ layer: "join" }),
      });
  }

  /** The agent's control plane: binds gossip on the underlay (an IPv4 or IPv6 address), keeps
   *  each family's lease ring in stateDir. */
  static async start(
    opts: ControlPlaneOptions & {
      bindAddr: string;
      gossipPort: number;
      stateDir: string;
      keyring: Keyring;
      logger: Logger;
    },
  ): Promise<ControlPlane> {
    const transport = await UdpTcpTransport.open({
      host: opts.bindAddr,
      port: opts.gossipPort,
      logger: opts.logger.child({ layer: "transport" }),
    });
    const plane = new ControlPlane(opts, {
      clock: new RealClock(),
      transport,
      random: realRandom,
      keyring: opts.keyring,
      ...(opts.space && { store: new FileLeaseStore(opts.stateDir, 4, opts.logger.child({ layer: "lease" })) }),
      ...(opts.space6 && { store6: new FileLeaseStore(opts.stateDir, 6, opts.logger.child({ layer: "lease" })) }),
      members: new FileMemberStore(opts.stateDir),
      logger: opts.logger,
    });
    try {
      await plane.start();
    } catch (err) {
      await plane.stop(false);
      throw err;
    }
    return plane;
  }

  /** Loads the saved lease state (learning the ring from then on), then joins its list and the
   *  members saved at its last run (retrying in the background); leasing starts once it reached
   *  its cluster. */
  async start(): Promise<void> {
    for (const l of this.families) await l.start();
    await this.savedMembers?.load();
    this.joiner.start();
    this.savedMembers?.start();
  }

  /** Resolves once a round a join target answered has settled, its ring merged (with an empty or
   *  self-only join list: at once, or once the first round to the saved members ended), so lease()
   *  then tells a subnet the cluster took away while this node was down; rejects on a name conflict. */
  async reachedCluster(): Promise<void> {
    await this.joiner.reached();
    for (const l of this.families) await l.settled();
  }

  /** Whether this node reached its cluster: false while a non-empty join list answered nothing yet. */
  hasReachedCluster(): boolean {
    return this.joiner.hasReached();
  }

  joinStatus(): JoinStatus {
    return this.joiner.status();
  }

  settings(): ControlPlaneSettings {
    const { probeIntervalMs, probeTimeoutMs, suspicionMult, pushPullIntervalMs, tombstoneRetentionMs } = makeConfig(
      this.profile,
      this.opts.name,
      this.opts.gossip,
    );
    return {
      profile: this.profile,
      gossip: { probeIntervalMs, probeTimeoutMs, suspicionMult, pushPullIntervalMs, tombstoneRetentionMs },
      lease: this.leases.settings,
    };
  }

  /** Subnets kept for members that are dead or gone, and when each is reclaimed (clock ms); with
   *  two families, each reservation once per ring (the IPv6 one's subnet is an IPv6 prefix). */
  reservations(): Reservation[] {
    return this.families.flatMap((l) => l.reservations());
  }

  /** Resolves once this node holds an IPv4 subnet (waits, and logs why, while it cannot get one). */
  async lease(): Promise<Ipv4Prefix> {
    if (!this.leases4)
      throw new WeftError("LEASE_NOT_RUNNING", "this node leases no IPv4 subnets (EnableIPv4 is false)");
    const l: Lease = await this.leases4.lease();
    return parsePrefix(l.subnet);
  }

  /** Why this node lacks a subnet of some family yet, for /readyz and `weft status`; null once it has all. */
  leaseWaitReason(): string | null {
    for (const l of this.families) {
      const why = l.waitReason();
      if (why !== null) return this.families.length > 1 ? `IPv${l.space.family}: ${why}` : why;
    }
    return null;
  }

  /** Resolves once this node holds an IPv6 subnet (EnableIPv6 only). */
  async lease6(): Promise<Ipv6Prefix> {
    if (!this.leases6) throw new WeftError("LEASE_NOT_RUNNING", "this node leases no IPv6 subnets (EnableIPv6 is off)");
    return parsePrefix6((await this.leases6.lease()).subnet);
  }

  /** Publishes what this node's backend instances announce (IPv4's, IPv6's; either is absent
   *  while that family is off or its backend has not run yet, NO_BACKEND while it is down) in its
   *  gossip record. */
  announce(a: Announced | undefined, a6?: Announced): void {
    this.announcement = a;
    this.announcement6 = a6;
    if (a && a !== NO_BACKEND) this.lastAnnounced.v4 = a;
    if (a6 && a6 !== NO_BACKEND) this.lastAnnounced.v6 = a6;
    this.memberlist.updateNode();
  }

  /** Live peers that hold an IPv4 lease and have announced an IPv4 backend that is not down (none while IPv4 is off). */
  peers(): BackendPeer<Ipv4Prefix, number>[] {
    if (!this.leases4) return [];
    const leased = leasesByNode(this.leases4);
    const out: BackendPeer<Ipv4Prefix, number>[] = [];
    for (const [m, record] of this.peerRecords()) {
      const subnet = routedSubnet(leased.get(m.name), record.subnet);
      if (!subnet || !record.backend || record.backend === NO_BACKEND) continue;
      out.push({
        name: m.name,
        run: this.runs.get(m.name)?.run,
        subnet: parsePrefix(subnet),
        underlay: parseIpv4(m.host),
        backend: record.backend,
      });
    }
    return out;
  }

  /** Live peers that hold an IPv6 lease and announced an IPv6 backend that is not down (none while IPv6 is off). */
  peers6(): BackendPeer<Ipv6Prefix, bigint>[] {
    if (!this.leases6) return [];
    const leased = leasesByNode(this.leases6);
    const out: BackendPeer<Ipv6Prefix, bigint>[] = [];
    for (const [m, record] of this.peerRecords()) {
      const subnet = routedSubnet(leased.get(m.name), record.subnet6);
      if (!subnet || !record.backend6 || record.backend6 === NO_BACKEND || record.underlay6 === undefined) continue;
      try {
        out.push({
          name: m.name,
          run: this.runs.get(m.name)?.run,
          subnet: parsePrefix6(subnet),
          underlay: parseIpv6(record.underlay6),
          backend: record.backend6,
        });
      } catch {
        // a record with a malformed address: not a peer we can route to
      }
    }
    return out;
  }

  /**
   * The other live members with their records, each backend announcement the last one the member
   * made: a record without one (its agent restarted, with --keep-on-exit, before its backend is
   * up again) keeps the peer on the previous one, as flannel's lease keeps
   * its backend data while flanneld restarts, so that a restart does not take the routes away.
   * A new announcement replaces it, NO_BACKEND too (a restart then keeps the member without one);
   * a member no longer live is forgotten.
   */
  private peerRecords(): Array<[NodeView, NodeRecord]> {
    const out: Array<[NodeView, NodeRecord]> = [];
    const live = new Set<string>();
    for (const m of this.memberlist.members()) {
      const record = decodeNodeRecord(m.meta);
      if (m.name === this.opts.name || !record) continue;
      live.add(m.name);
      const last = this.announced.get(m.name);
      const now: NodeRecord = {
        ...record,
        backend: record.backend ?? last?.backend,
        ...(record.backend6 || last?.backend6
          ? { backend6: record.backend6 ?? last?.backend6, underlay6: record.underlay6 ?? last?.underlay6 }
          : {}),
      };
      this.announced.set(m.name, now);
      out.push([m, now]);
    }
    for (const name of this.announced.keys()) if (!live.has(name)) this.announced.delete(name);
    return out;
  }

  /** Alive and suspect members, this one included (the lease layer's MembershipPort). */
  members(): NodeView[] {
    return this.memberlist.members();
  }

  /** Every member the gossip layer knows, dead and left ones included. */
  allMembers(): NodeView[] {
    return this.memberlist.allMembers();
  }

  gossipCounters(): GossipCounters {
    return this.memberlist.counters();
  }

  /** The gossip transport's counters (connections refused at the limits, oversize frames...). */
  transportCounters(): Readonly<Record<string, number>> {
    return { ...this.deps.transport.stats };
  }

  /** Hands a dead node's subnets back in every family's ring; the report is the first ring's that
   *  held some (a node that owns nothing in one ring but something in another is still reclaimed there).
   *  Not atomic across the rings, but repeatable: a ring that failed (a full disk) changed nothing
   *  and the command run again skips a ring with nothing left of the node (LEASE_RECLAIM_UNKNOWN)
   *  or reclaims there again, so the error after a ring that did reclaim says so and to rerun. */
  async reclaim(node: string): Promise<ReclaimReport> {
    const reports: ReclaimReport[] = [];
    let refusal: unknown;
    for (const l of this.families) {
      try {
        reports.push(await l.reclaim(node));
      } catch (err) {
        const done = `its IPv4 subnet slots were reclaimed, its IPv${l.space.family} ones not`;
        // Back in membership after an earlier ring reclaimed it: say what was done.
        if (reports.length > 0 && isWeftError(err, "LEASE_RECLAIM_ALIVE"))
          throw new WeftError(
            "LEASE_RECLAIM_ALIVE",
            `${node} came back in membership during its reclaim: ${done}; it gets a new IPv4 subnet`,
          );
        if (isWeftError(err, "LEASE_RECLAIM_UNKNOWN")) {
          refusal = err;
          continue;
        }
        // A failure after an earlier ring reclaimed (a full disk): what was done, and to run again.
        if (reports.length > 0 && err instanceof WeftError)
          throw new WeftError(err.code, `${node}: ${done}: ${err.message}; then run weft reclaim ${node} again`, {
            cause: err,
          });
        // Alive or self: the same answer in every ring, so the first one stands.
        throw err;
      }
    }
    if (reports.length === 0) throw refusal;
    return reports[0];
  }

  /**
   * Graceful: tell the cluster we leave (so peers drop our routes at once), then stop. The lease
   * layers stop first, while gossip runs: their work under way (a subnet just taken goes into this
   * node's record) ends on a running memberlist, and its broadcasts go out with the leave. Once
   * stopped they take no more work from gossip, so gossip can stop after them.
   */
  async stop(leave: boolean): Promise<void> {
    this.unwatchKeys();
    this.joiner.stop();
    await this.savedMembers?.stop();
    for (const l of this.families) await l.stop();
    // Not once the name was found taken, even while this stop ran (a fatal stop came after it): a
    // leave in this name would tell the cluster that the other node left.
    if (leave && this.joiner.status().state !== "name-conflict")
      await this.memberlist.leave(2000).catch(() => undefined);
    await this.memberlist.shutdown();
    await this.deps.transport.close();
  }

  // ---- memberlist's Delegate and EventDelegate: the node record here, the ring in the lease layer ----

  nodeMeta(limit: number): Uint8Array {
    // Positions are per family, IPv4 first: an IPv6-only node writes null for IPv4.
    const subnet = (l: SubnetLeases | undefined) => l?.currentLease()?.subnet ?? null;
    const meta = encodeLeaseMeta(subnet(this.leases4), ...(this.leases6 ? [subnet(this.leases6)] : []));
    // An IPv4-mapped underlay (no IPv6 underlay address) keeps its ::ffff: in the record, which
    // formatIpv6 leaves out, so that peers parse it as the IPv6 address it stands for.
    const u6 = this.opts.underlay6;
    const v6 =
      u6 !== undefined
        ? { underlay: `${isIpv4Mapped(u6) ? "::ffff:" : ""}${formatIpv6(u6)}`, backend: this.announcement6 }
        : undefined;
    const record = encodeNodeRecord(meta, this.announcement, v6, this.lastAnnounced);
    if (record.length > limit) {
      // Cannot happen with a sane config (a record is under 100 bytes); say so rather than truncate.
      this.log.error(
        { code: "NODE_RECORD_TOO_BIG", bytes: record.length, limit },
        "node record does not fit the gossip meta limit",
      );
      return new Uint8Array(0);
    }
    return record;
  }

  notifyMsg(from: string, msg: Uint8Array): void {
    this.leaseDelegate.notifyMsg(from, msg);
  }

  answerMsg(from: string, msg: Uint8Array): Promise<Uint8Array | undefined> {
    return this.leaseDelegate.answerMsg(from, msg);
  }

  getBroadcasts(overhead: number, limit: number, to?: BroadcastTarget): Uint8Array[] {
    return this.leaseDelegate.getBroadcasts(overhead, limit, to);
  }

  localState(): Uint8Array {
    return this.leaseDelegate.localState();
  }

  mergeRemoteState(state: Uint8Array): void {
    this.leaseDelegate.mergeRemoteState(state);
  }

  /** Notes `node`'s record: a new run at a join, or once its record no longer announces any backend. */
  private noteRun(node: NodeView, joined: boolean): void {
    // A dead node reported left later comes as an update: no run of a member not live.
    if (node.state !== "alive" && node.state !== "suspect") return;
    const record = decodeNodeRecord(node.meta);
    const fresh = !record?.backend && !record?.backend6;
    const known = this.runs.get(node.name);
    if (joined || !known || (fresh && !known.fresh)) this.runs.set(node.name, { run: ++this.lastRun, fresh });
    else known.fresh = fresh;
  }

  notifyJoin(node: NodeView): void {
    this.noteRun(node, true);
    this.leaseDelegate.notifyJoin(node);
    // Memberlist tells of this node itself while it is being built, before the joiner exists.
    this.joiner?.memberJoined();
    this.emit("change");
  }

  notifyUpdate(node: NodeView): void {
    this.noteRun(node, false);
    this.leaseDelegate.notifyUpdate(node);
    this.emit("change");
  }

  notifyLeave(node: NodeView): void {
    this.runs.delete(node.name);
    this.leaseDelegate.notifyLeave(node);
    this.joiner.memberGone();
    this.emit("change");
  }

  // ---- the lease layer's view of membership ----

  localNode(): { readonly name: string } {
    return { name: this.opts.name };
  }

  request(name: string, msg: Uint8Array): Promise<Uint8Array | undefined> {
    return this.memberlist.request(name, msg);
  }

  updateNode(): void {
    this.memberlist.updateNode();
  }
}

/** The lease layer's settings: the same code and defaults for the agent and the simulators. */
export type LeaseLayerOptions = Pick<ControlPlaneOptions, "space" | "space6" | "seeds" | "lease">;

/** Builds the lease layer (SubnetLeases, one per enabled family, and their gossip adapter) with the production defaults. */
export function createLeaseLayer(
  opts: LeaseLayerOptions,
  deps: {
    membership: MembershipPort;
    store?: LeaseStateStore;
    store6?: LeaseStateStore;
    clock: Clock;
    random: Random;
    log: LeaseLogger;
  },
): { families: SubnetLeases[]; leases4?: SubnetLeases; leases6?: SubnetLeases; delegate: LeaseDelegate } {
  const seeds = opts.seeds.length > 0 ? opts.seeds : undefined;
  const { store, store6, ...common } = deps;
  const ring = (space: SubnetSpace | Ipv6SubnetSpace, s: LeaseStateStore | undefined): SubnetLeases => {
    if (!s)
      throw new WeftError("LEASE_NOT_RUNNING", `the IPv${space.family} network needs a store of its own for its ring`);
    return new SubnetLeases({ ...opts.lease, space, seeds, ...common, store: s });
  };
  const leases4 = opts.space && ring(opts.space, store);
  const leases6 = opts.space6 && ring(opts.space6, store6);
  const families = [leases4, leases6].filter((l): l is SubnetLeases => l !== undefined);
  if (families.length === 0)
    throw new WeftError("LEASE_NOT_RUNNING", "no address family is enabled: set EnableIPv4 or EnableIPv6");
  return { families, leases4, leases6, delegate: new LeaseDelegate(families, deps.membership, deps.log) };
}

/** Each node's leased subnets in this ring view. */
function leasesByNode(leases: SubnetLeases): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const p of leases.peers()) out.set(p.node, [...(out.get(p.node) ?? []), p.subnet]);
  return out;
}

/**
 * The subnet routed to a peer: the one this view says it leases. A view can show two (an old one
 * and the new one, while a fork after a heal is unsettled); then the one the peer's own record
 * names, or none if it names neither: the other is free, or another node's by now, and a route to
 * it would send that node's pods' traffic to the wrong host (routing both would too). Before,
 * the higher slot won, so a bystander could route the old subnet and drop the route to the new.
 */
function routedSubnet(leased: readonly string[] | undefined, announced: string | null | undefined): string | undefined {
  if (!leased || leased.length === 0) return undefined;
  if (leased.length === 1) return leased[0];
  return leased.find((s) => s === announced);
}
