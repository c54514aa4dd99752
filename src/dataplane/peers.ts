// Peers as the userspace dataplane knows them: each peer gets a next-hop index (a record with its
// underlay address, UDP port and VTEP MAC) and a route for its subnet to that index. The control
// side changes them while workers forward; the route table's seqlock publishes each change whole.
// A dataplane carries one family, so its peers are all IPv4 (RouteTable) or all IPv6 (RouteTable6).
import { WeftError } from "../errors.js";
import { formatAnyPrefix, overlaps, type IpAddr, type IpPrefix } from "../net/ip.js";

export interface DataplanePeer {
  /** Node name, the peer's identity. */
  name: string;
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

const record = (peer: DataplanePeer) => ({ ip: peer.underlay, port: peer.port, mac: peer.vtepMac ?? NO_MAC });

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

  constructor(
    private readonly routes: PeerRoutes,
    slots: number,
    /** Called with a next hop before it is given to a new peer: its per-peer counters start at 0. */
    private readonly assigned: (nextHop: number) => void,
  ) {
    // Lowest indices first, so per-peer counters stay dense.
    this.free = Array.from({ length: slots }, (_, i) => slots - 1 - i);
  }

  /** Adds a peer or updates it (new address, MAC or subnet). */
  set(peer: DataplanePeer): void {
    const old = this.byName.get(peer.name);
    for (const [name, e] of this.byName) {
      if (name !== peer.name && overlaps(e.peer.subnet, peer.subnet)) {
        throw new WeftError(
          "DATAPLANE_SUBNET_OVERLAP",
          `peer ${peer.name}'s subnet ${formatAnyPrefix(peer.subnet)} overlaps ${name}'s ${formatAnyPrefix(e.peer.subnet)}; the lease layer must never allow this`,
        );
      }
    }
    const nextHop = old ? old.nextHop : this.free.pop();
    if (nextHop === undefined)
      throw new WeftError(
        "DATAPLANE_PEERS_FULL",
        `no next-hop slot left for peer ${peer.name}; start the dataplane with more peer slots`,
      );
    // A freed slot still holds its last peer's counts, which the new peer must not inherit.
    if (!old) this.assigned(nextHop);
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
      if (old) {
        this.routes.setNextHop(nextHop, record(old.peer));
        if (moved) this.routes.replace(old.peer.subnet, nextHop);
      } else {
        this.routes.clearNextHop(nextHop);
        this.free.push(nextHop);
      }
      throw err;
    }
    this.byName.set(peer.name, { peer, nextHop });
  }

  /** Removes a peer: its route first, so no packet is steered to a cleared record, then the record. */
  remove(name: string): boolean {
    const e = this.byName.get(name);
    if (!e) return false;
    this.routes.delete(e.peer.subnet);
    this.routes.clearNextHop(e.nextHop);
    this.byName.delete(name);
    this.free.push(e.nextHop);
    return true;
  }

  list(): Array<DataplanePeer & { nextHop: number }> {
    return [...this.byName.values()].map((e) => ({ ...e.peer, nextHop: e.nextHop }));
  }
}
