// What the kernel backends (vxlan, host-gw) share, like flannel's RouteNetwork: the peers they
// were given, and one loop that makes the kernel match them. Every change — setPeer, removePeer,
// reconcile, stop — is a round of that loop: plan each peer's entries (or find it unreachable),
// read what the kernel has, write the difference (converge.ts). Rounds run one at a time, and
// calls made meanwhile are gathered into the next round, so a thousand setPeer calls cost a few
// iproute2 calls. A round for some peers touches only those peers' entries (a restarted agent
// that kept its device does not lose the routes of peers it has not heard of yet); reconcile's
// round covers everything the backend owns and removes what no peer wants.
import type { Logger } from "pino";
import { WeftError } from "../errors.js";
import {
  addPeerEntries,
  applyChanges,
  changedKeys,
  diffEntries,
  emptyEntrySets,
  peerEntryKeys,
  type EntrySets,
  type PeerEntries,
} from "../kernel/converge.js";
import { lookupRoutes, readEntries, type RouteEntry } from "../kernel/entries.js";
import { SerialQueue } from "../util/serial.js";
import { familyOf, formatAddr, formatAnyPrefix, overlaps, type IpAddr } from "../net/ip.js";
import {
  type Backend,
  type BackendAnnouncement,
  type BackendContext,
  type BackendCounters,
  type BackendPeer,
  type BackendType,
  KernelStats,
} from "./backend.js";
import { followUnderlay } from "./underlay-name.js";
import { announcementProblem, overlapProblem, UnreachablePeers, vtepMacProblem } from "./unreachable.js";

interface Round {
  /** Peers set or removed since the last round. */
  names: Set<string>;
  /** Re-plan every peer and remove every owned entry no peer wants (reconcile). */
  full: boolean;
}

export abstract class KernelBackend implements Backend {
  abstract readonly mtu: number;
  protected readonly logger: Logger;
  private readonly unreachable: UnreachablePeers;
  /** The peers as the agent last gave them, in the order they first came (first lease wins an overlap). */
  private readonly peers = new Map<string, BackendPeer>();
  /** Each reachable peer's entries as last written. */
  private readonly written = new Map<string, PeerEntries>();
  private readonly stats = new KernelStats();
  /** The round calls are gathered into until it starts, and when it is done. */
  private pending?: { round: Round; done: Promise<void> };
  private readonly rounds = new SerialQueue();
  private state: "new" | "running" | "stopped" = "new";
  /** reportFailed told the owner: this backend cannot go on. */
  private failed = false;

  protected constructor(
    readonly type: BackendType,
    protected readonly ctx: BackendContext,
  ) {
    this.logger = ctx.logger.child({ backend: type });
    this.unreachable = new UnreachablePeers(this.logger);
  }

  /** What this node announces; also what peers are checked against. */
  protected abstract announcement(): BackendAnnouncement;
  /** Creates what the backend needs before any peer (devices); start() undoes it on failure. */
  protected abstract setUp(): Promise<void>;
  /** Removes what setUp created. */
  protected abstract tearDown(): Promise<void>;
  // `iface` below is the underlay interface's name as a round took it: one name for the whole round,
  // though another backend (the other family's, the agent's sweep) may follow a rename meanwhile.
  /** Creates or repairs the devices (at start and in reconcile) over the underlay interface `iface`. */
  protected abstract ensureDevices(iface: string): Promise<void>;
  /** Entries for peers already found compatible, or why one cannot be reached. */
  protected abstract plan(peers: BackendPeer[], iface: string): Promise<Map<string, PeerEntries | string>>;
  /** Whether a route to a destination in the pod network is one this backend writes. */
  protected abstract ownsRoute(r: RouteEntry, iface: string): boolean;
  /** The device whose neighbour and FDB entries all belong to this backend, if any. */
  protected abstract readonly entryDevice?: string;

  async start(): Promise<BackendAnnouncement> {
    if (this.state !== "new")
      throw new WeftError("BACKEND_STATE", `the ${this.type} backend was already started; create a new one`);
    try {
      await followUnderlay(this.ctx.kernel, this.ctx.underlay, this.logger);
      await this.setUp();
    } catch (err) {
      await this.tearDown().catch((e) => this.logger.error({ err: e }, "cleanup after a failed start failed too"));
      throw err;
    }
    this.state = "running";
    const a = this.announcement();
    this.logger.info({ ...a, mtu: this.mtu }, `${this.type} backend started`);
    return a;
  }

  setPeer(peer: BackendPeer): Promise<void> {
    if (this.state === "running") this.peers.set(peer.name, peer);
    return this.request([peer.name], false);
  }

  removePeer(name: string): Promise<void> {
    if (this.state === "running") this.peers.delete(name);
    return this.request([name], false);
  }

  reconcile(): Promise<void> {
    return this.request([], true);
  }

  async stop(keep: boolean): Promise<void> {
    if (this.state !== "running") {
      this.state = "stopped";
      return;
    }
    this.state = "stopped"; // refuses new calls; rounds already asked for still run
    await this.rounds.idle();
    if (keep) {
      this.logger.info("backend stopped; kernel state kept for the next start");
      return;
    }
    const names = [...this.peers.keys(), ...this.written.keys()];
    this.peers.clear();
    // Every entry removed in flannel's reverse order (routes off the device too), then the devices.
    try {
      await this.runRound({ names: new Set(names), full: true }, true);
    } finally {
      await this.tearDown();
    }
    this.logger.info("backend stopped; its devices and entries are removed");
  }

  counters(): BackendCounters {
    return { ...this.stats.counters(), peersUnreachable: this.unreachable.count };
  }

  /**
   * A running backend cannot go on (a device reconcile cannot make again): its owner is told once
   * (ctx.onFailed) and replaces it, as a userspace backend whose TUN device is gone. At start the
   * error only fails the start.
   */
  protected reportFailed(err: Error): void {
    if (this.state !== "running" || this.failed) return;
    this.failed = true;
    this.ctx.onFailed?.(err);
  }

  /** Why each peer cannot be reached directly on the underlay interface (host-gw, DirectRouting); undefined when it can. */
  protected async directReachProblems(peers: BackendPeer[], iface: string): Promise<Array<string | undefined>> {
    const found = await lookupRoutes(
      this.ctx.kernel,
      peers.map((p) => p.underlay),
    );
    return found.map((r, i) => {
      const addr = formatAddr(peers[i].underlay);
      if ("error" in r) return `no route to its underlay address ${addr} (${r.error})`;
      if (r.local) return `its underlay address ${addr} is this host's own`;
      if (r.gateway !== undefined)
        return `${addr} is reached through gateway ${formatAddr(r.gateway)}, not directly on ${iface}`;
      if (r.dev !== iface) return `${addr} is reached through ${r.dev}, not the underlay interface ${iface}`;
      return undefined;
    });
  }

  private request(names: string[], full: boolean): Promise<void> {
    if (this.state !== "running") {
      return Promise.reject(
        new WeftError(
          "BACKEND_NOT_RUNNING",
          `the ${this.type} backend is ${this.state === "new" ? "not started" : "stopped"}; start a new one`,
        ),
      );
    }
    if (!this.pending) {
      const round: Round = { names: new Set(), full: false };
      const done = this.rounds.run(async () => {
        if (this.pending?.round === round) this.pending = undefined; // later calls go to the next round
        try {
          await this.runRound(round, false);
        } catch (err) {
          this.stats.refused();
          this.logger.error(
            { err },
            this.failed
              ? "a kernel programming round failed, and the backend cannot go on: it is to be replaced"
              : "a kernel programming round failed; the next round or reconcile tries again",
          );
          throw err;
        }
      });
      this.pending = { round, done };
    }
    const { round, done } = this.pending;
    for (const n of names) round.names.add(n);
    round.full ||= full;
    return done;
  }

  /** One round; `teardown` (from stop) leaves the devices alone and counts nothing as drift. */
  private async runRound(round: Round, teardown: boolean): Promise<void> {
    const { kernel } = this.ctx;
    const full = round.full;
    // The underlay's name, which devices, routes and commands carry, is looked up anew in full
    // rounds (reconcile, stop), as the devices are.
    if (full) await followUnderlay(kernel, this.ctx.underlay, this.logger);
    const iface = this.ctx.underlay.iface;
    // Devices are checked in full rounds only (reconcile), which keeps a round for one peer to a
    // few iproute2 calls; a full round puts back everything a re-created device lost.
    if (full && !teardown) await this.ensureDevices(iface);
    // The peers as the round starts, or in a full round once the devices are checked (taken
    // before, a peer set meanwhile had its kept entries removed as no peer's, put back a round
    // later). Any other round awaits nothing before this: a peer removed after it is the next
    // round's (its entries are in that round's scope only while `written` still has them).
    const peers = new Map(this.peers);
    for (const name of round.names) if (!peers.has(name)) this.unreachable.forget(name);
    const planned = await this.planPeers(
      full ? [...peers.values()] : [...round.names].flatMap((n) => peers.get(n) ?? []),
      [...peers.values()],
      iface,
    );
    // The peers this round is about: those named, and those whose entries changed (a full round
    // re-plans everyone), and those no longer peers whose entries are still written (removed during
    // a full round's device check: the call is the next round's, the removal this one's). Keys of
    // their old and new entries are in scope; any other entry the round has to fix had drifted.
    const changing = new Set(round.names);
    for (const name of this.written.keys()) if (!peers.has(name)) changing.add(name);
    for (const [name, entries] of planned) if (!sameEntries(this.written.get(name), entries)) changing.add(name);
    const scope = new Set<string>();
    for (const name of changing)
      for (const e of [this.written.get(name), planned.get(name)]) if (e) peerEntryKeys(e).forEach((k) => scope.add(k));

    // Wanted: the new plans, and for every other peer what was last written (so a key that one
    // peer leaves and another takes in the same round is not removed).
    const want = emptyEntrySets();
    for (const [name, entries] of this.written)
      if (!planned.has(name) && peers.has(name)) addPeerEntries(want, entries);
    for (const entries of planned.values()) if (entries) addPeerEntries(want, entries);

    const have = await this.readOwned(iface);
    // A peer set while this round planned or read has entries it cannot tell from no peer's (kept
    // over a restart): a full round then touches only its scope and leaves the rest to the next
    // round, which that setPeer has queued, made full. One set once the kernel is read is too late:
    // its kept entries may be removed (counted as drift) and put back by its own round.
    const gained = [...this.peers.keys()].some((name) => !peers.has(name));
    if (full && gained && this.pending) this.pending.round.full = true;
    const changes = diffEntries(want, have, full && !gained ? undefined : (kind, key) => scope.has(`${kind} ${key}`));
    const failures = await applyChanges(kernel, changes);

    for (const name of this.written.keys()) if (!peers.has(name)) this.written.delete(name);
    for (const [name, entries] of planned) entries ? this.written.set(name, entries) : this.written.delete(name);

    const keys = changedKeys(changes);
    this.stats.done(keys.length, failures.length);
    for (const f of failures)
      this.logger.error(
        { command: f.command },
        // No reconcile follows a stop's round: what it could not remove stays unless its device goes.
        teardown
          ? `the kernel refused \`${f.command}\` while the backend stopped: ${f.message}; it stays unless the device it is on goes with the backend: remove it by hand`
          : `the kernel refused \`${f.command}\`: ${f.message}; reconcile will try again`,
      );
    const drift = teardown ? [] : keys.filter((k) => !scope.has(k));
    if (drift.length > 0) {
      this.stats.driftRepairs += drift.length;
      this.logger.warn(
        { repaired: drift.slice(0, 10), count: drift.length },
        `repaired ${drift.length} kernel entries that had drifted`,
      );
    }
  }

  /** Checks announcements and overlaps (against those before in `order`), then asks the backend; records who is unreachable. */
  private async planPeers(
    peers: BackendPeer[],
    order: BackendPeer[],
    iface: string,
  ): Promise<Map<string, PeerEntries | undefined>> {
    const own = this.announcement();
    const problems = new Map<string, string>();
    for (const p of peers) {
      const before = order.slice(0, order.indexOf(p));
      const reason =
        announcementProblem(own, this.ctx, p) ?? overlapProblem(p, before) ?? vtepMacProblem(own, p, before);
      if (reason) problems.set(p.name, reason);
    }
    const fine = peers.filter((p) => !problems.has(p.name));
    const plans = fine.length > 0 ? await this.plan(fine, iface) : new Map<string, PeerEntries | string>();
    const result = new Map<string, PeerEntries | undefined>();
    for (const p of peers) {
      const plan = problems.get(p.name) ?? plans.get(p.name);
      this.unreachable.note(p, typeof plan === "string" ? plan : undefined);
      result.set(p.name, typeof plan === "string" ? undefined : plan);
    }
    return result;
  }

  private async readOwned(iface: string): Promise<EntrySets> {
    const { routes, neighs, fdbs } = await readEntries(this.ctx.kernel, this.ctx.network, this.entryDevice);
    return {
      // Into this node's own subnet only those via a gateway (no peer may want one: a route of a
      // peer that held it, kept over a crash, would take the pods' traffic from cni0's); those
      // without are the kernel's for the device's own address (flannel-v6's /128).
      routes: routes.filter(
        (r) => this.ownsRoute(r, iface) && (r.gateway !== undefined || !overlaps(r.dst, this.ctx.subnet)),
      ),
      neighs: neighs.filter((n) => n.permanent),
      fdbs: fdbs.filter((f) => f.permanent),
    };
  }
}

function sameEntries(a: PeerEntries | undefined, b: PeerEntries | undefined): boolean {
  // IPv6 addresses are bigints, which JSON has no form for.
  const text = (e: PeerEntries | undefined) =>
    JSON.stringify(e, (_, v: unknown) => (typeof v === "bigint" ? `${v}n` : v));
  return text(a) === text(b);
}

/** This node's underlay address of the backend's family (--public-ip or --public-ipv6). */
export function underlayAddr(ctx: BackendContext): IpAddr {
  const addr = familyOf(ctx.subnet.addr) === 4 ? ctx.underlay.addr : ctx.underlay.addr6;
  if (addr === undefined) {
    throw new WeftError(
      "BACKEND_NO_UNDERLAY_ADDRESS",
      `${ctx.underlay.iface} has no IPv${familyOf(ctx.subnet.addr)} underlay address for the ${formatAnyPrefix(ctx.subnet)} lease; give the interface one, or pass --public-ip / --public-ipv6`,
    );
  }
  return addr;
}
