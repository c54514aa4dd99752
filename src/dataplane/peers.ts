// Peers as the userspace dataplane knows them: each peer gets a next-hop index (a record with its
// underlay address, UDP port and VTEP MAC) and a route for its subnet to that index. The control
// side changes them while workers forward; the route table's seqlock publishes each change whole.
// A dataplane carries one family, so its peers are all IPv4 (RouteTable) or all IPv6 (RouteTable6).
import { WeftError } from "../errors.js";
import type { RouteTableSize } from "../hotpath/route-table.js";
import { formatAnyPrefix, type IpAddr, type IpPrefix } from "../net/ip.js";
import { prefixMask } from "../net/ipv4.js";
import { prefixMask6 } from "../net/ipv6.js";

export interface DataplanePeer {
  /** Node name, the peer's identity. */
  name: string;
  /** Which run of the node: another one is a new peer of the name, counted from 0 on a slot of its own. */
  run?: number;
  /** The peer's subnet, of the dataplane's family. */
  subnet: IpPrefix;
  /** Underlay address: IPv4 as a number, IPv6 as a bigint (an IPv6 dataplane's next hops take either). */
  underlay: IpAddr;
  /** UDP port the peer receives on. */
  port: number;
  /** VTEP MAC (wasm-vxlan); ignored by the udp format. */
  vtepMac?: Uint8Array;
}

interface Entry {
  peer: DataplanePeer;
  nextHop: number;
}

const NO_MAC = new Uint8Array(6);

/** The addresses a prefix covers, first to last: numbers for IPv4, bigints for IPv6. */
interface Span {
  first: IpAddr;
  last: IpAddr;
  name: string;
}

function span(p: IpPrefix, name: string): Span {
  if (typeof p.addr === "bigint") {
    const first = p.addr & prefixMask6(p.len);
    return { first, last: first + (1n << BigInt(128 - p.len)) - 1n, name };
  }
  const first = (p.addr & prefixMask(p.len)) >>> 0;
  return { first, last: first + 2 ** (32 - p.len) - 1, name };
}

const record = (peer: DataplanePeer) => ({ ip: peer.underlay, port: peer.port, mac: peer.vtepMac ?? NO_MAC });

/**
 * An IPv4 route table for `maxPeers` peers. Each peer's subnet is one rule (a moved peer's old one
 * goes before its new one comes), and a subnet longer than /24 takes a tbl8 group (1 KiB) for its
 * /24: the lease ring spreads small subnets over a wide network, so each peer may have a /24 of its
 * own, and the table must hold a group per peer (4 MiB at 4,096 peers, beside the 64 MiB tbl24).
 */
export function peerRouteTableSize(maxPeers: number): RouteTableSize {
  return { tbl8Groups: maxPeers, maxRules: maxPeers * 2, maxNextHops: maxPeers };
}

/** What the peer table needs of a route table: RouteTable (IPv4) or RouteTable6. */
export interface PeerRoutes {
  setNextHop(i: number, nh: { ip: IpAddr; port: number; mac: Uint8Array }): void;
  clearNextHop(i: number): void;
  replace(p: IpPrefix, nextHop: number): void;
  delete(p: IpPrefix): void;
}

export class PeerTable {
  private readonly byName = new Map<string, Entry>();
  private readonly free: number[];
  /**
   * The peers' subnets in address order. They never overlap (set() refuses that), so a full sync
   * checks each peer against its neighbour here, not against every other peer.
   */
  private readonly spans: Span[] = [];

  constructor(
    private readonly routes: PeerRoutes,
    slots: number,
    /** Called with a next hop before it is given to a new peer: its per-peer counters start at 0. */
    private readonly assigned: (nextHop: number) => void,
  ) {
    // A queue: lowest indices first, so per-peer counters stay dense, and a freed index goes to the
    // back, so that it rests while the others are used: a worker may still be counting a batch
    // resolved to its old peer, which a new peer given it at once would inherit.
    this.free = Array.from({ length: slots }, (_, i) => i);
  }

  /**
   * Adds a peer or updates it (new address, MAC or subnet). Another run of it is set as a new peer
   * on a fresh slot, its route moved there at once, so it counts from 0 and never loses its route;
   * its old slot is freed (reused and zeroed in place only when no slot is free: then a batch a
   * worker is still counting for the old run lands after the zeroing, in the new run's counts).
   */
  set(peer: DataplanePeer): void {
    const old = this.byName.get(peer.name);
    const mine = span(peer.subnet, peer.name);
    const other = this.overlapping(mine);
    if (other)
      throw new WeftError(
        "DATAPLANE_SUBNET_OVERLAP",
        `peer ${peer.name}'s subnet ${formatAnyPrefix(peer.subnet)} overlaps ${other.name}'s ${formatAnyPrefix(this.byName.get(other.name)!.peer.subnet)}; one of the two leases is stale, reclaim it`,
      );
    const reborn = old !== undefined && old.peer.run !== peer.run;
    const nextHop = old && (!reborn || this.free.length === 0) ? old.nextHop : this.free.shift();
    if (nextHop === undefined)
      throw new WeftError(
        "DATAPLANE_PEERS_FULL",
        `no next-hop slot left for peer ${peer.name}: the dataplane holds ${this.byName.size} peers, its most; it gets the slot of the next peer that leaves`,
      );
    // A freed slot still holds its last peer's counts, which the new peer must not inherit.
    if (!old || reborn) this.assigned(nextHop);
    const fresh = nextHop !== old?.nextHop;
    const moved = old && (old.peer.subnet.addr !== peer.subnet.addr || old.peer.subnet.len !== peer.subnet.len);
    try {
      // Next hop first, then the route to it: a reader never finds a route to an empty record.
      this.routes.setNextHop(nextHop, record(peer));
      if (moved) this.routes.delete(old.peer.subnet);
      this.routes.replace(peer.subnet, nextHop);
    } catch (err) {
      // A full route table: leave everything as it was, or the slot leaks and a moved peer's entry
      // names a route that is gone (its every later set or remove would fail). The old route goes
      // back into the room its delete just freed.
      if (fresh) {
        this.routes.clearNextHop(nextHop);
        this.free.unshift(nextHop);
      }
      if (old) {
        if (!fresh) this.routes.setNextHop(nextHop, record(old.peer));
        if (moved) this.routes.replace(old.peer.subnet, old.nextHop);
      }
      throw err;
    }
    // A new run's route goes to its fresh slot first. The old slot's record stays valid until the
    // slot is given again (setNextHop above overwrites it): a worker that looked it up before the
    // route moved still sends that batch, to the old run's address, rather than dropping it.
    if (old && fresh) this.free.push(old.nextHop);
    if (old) this.spans.splice(this.spanIndex(old.peer), 1);
    this.spans.splice(this.after(mine.first), 0, mine);
    this.byName.set(peer.name, { peer, nextHop });
  }

  /** Removes a peer: its route first, so no packet is steered to a cleared record, then the record. */
  remove(name: string): boolean {
    const e = this.byName.get(name);
    if (!e) return false;
    this.routes.delete(e.peer.subnet);
    this.routes.clearNextHop(e.nextHop);
    this.spans.splice(this.spanIndex(e.peer), 1);
    this.byName.delete(name);
    this.free.push(e.nextHop);
    return true;
  }

  /** Another peer's subnet that `s` overlaps, if any. */
  private overlapping(s: Span): Span | undefined {
    // Of the subnets that start at or before s's last address, the last one reaches furthest
    // (they are disjoint); skipping s's own peer, the one before it.
    let i = this.after(s.last) - 1;
    if (i >= 0 && this.spans[i].name === s.name) i--;
    return i >= 0 && this.spans[i].last >= s.first ? this.spans[i] : undefined;
  }

  /** Index of the first subnet that starts after `addr`. */
  private after(addr: IpAddr): number {
    let [lo, hi] = [0, this.spans.length];
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.spans[mid].first <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of a peer's subnet (it starts where no other does). */
  private spanIndex(peer: DataplanePeer): number {
    return this.after(span(peer.subnet, peer.name).first) - 1;
  }

  list(): Array<DataplanePeer & { nextHop: number }> {
    return [...this.byName.values()].map((e) => ({ ...e.peer, nextHop: e.nextHop }));
  }
}
