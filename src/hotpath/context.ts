// A dataplane context (assembly/context.ts) with its two counter blocks, and reading the counters
// back by verdict name.
import { macHalves } from "../net/ipv4.js";
import { writeIpv6 } from "../net/ipv6.js";
import type { Arena } from "./arena.js";
import type { HotPath } from "./module.js";

export interface ContextOptions {
  /** Route table offset (RouteTable.base). */
  routes: number;
  vni: number;
  /** This node's VTEP MAC, 6 bytes. */
  mac: Uint8Array;
  /** Drop received packets whose inner source is not in the sending peer's subnet. */
  antiSpoof: boolean;
  /**
   * The TUN device takes UDP super-packets (USO): received UDP datagrams of one flow are merged
   * like TCP segments. Default false.
   */
  uso?: boolean;
  /** Next-hop indices to keep per-peer counters for (0: none). */
  peerSlots: number;
  /**
   * Route IPv6 too: the IPv6 route table (RouteTable6.base) and this node's IPv6 tunnel address,
   * source of its ICMPv6 errors. Without it IPv6 packets are dropped (IPV6_UNROUTED). A peer's
   * next hop has the same index in both tables, so its counters cover both families.
   */
  ipv6?: { routes: number; localAddr: bigint };
  /**
   * The ICMP error bucket (icmpBucket()) of the worker that serves this context, shared by all of
   * its contexts so the rate limit is per worker. Default: one of the context's own.
   */
  icmpBucket?: number;
}

/** A full ICMP error bucket (assembly/packet/icmp-rate.ts): one per worker. */
export function icmpBucket(hp: HotPath, arena: Arena): number {
  const b = arena.alloc(hp.constant("ICMP_BUCKET_BYTES"));
  hp.fn.icmpBucketInit(b);
  return b;
}

/** Packets and bytes forwarded to or from one peer (by next-hop index). */
export interface PeerCounters {
  packets: bigint;
  bytes: bigint;
}

/** Packets per verdict name plus forwarded bytes, for one direction. */
export interface DirectionCounters {
  packets: Record<string, bigint>;
  bytesForwarded: bigint;
  /** Offloads: datagrams cut from super-packets (tx) or merged into super-packets (rx). */
  offloadSegments: bigint;
  /**
   * rx: packets of UDP GRO receives (outer checksum verified by the kernel) merged or handed to
   * the TUN device with NEEDS_CSUM without our own checksum check.
   */
  checksumTrusted: bigint;
}

export class DataplaneContext {
  readonly ptr: number;
  readonly countersTx: number;
  readonly countersRx: number;
  readonly peerTx: number;
  readonly peerRx: number;
  /** The ICMP error bucket; its worker writes ICMP_BUCKET_NOW before each send batch. */
  readonly icmpBucket: number;
  private readonly slots: number;
  private readonly peerSlots: number;

  constructor(
    private readonly hp: HotPath,
    arena: Arena,
    opts: ContextOptions,
  ) {
    this.slots = hp.constant("COUNTER_SLOTS");
    const blockBytes = hp.constant("COUNTER_BLOCK_BYTES");
    this.ptr = arena.alloc(hp.constant("CTX_BYTES"));
    this.countersTx = arena.alloc(blockBytes);
    this.countersRx = arena.alloc(blockBytes);
    this.peerSlots = opts.peerSlots;
    const peerBytes = opts.peerSlots * hp.constant("PEER_COUNTER_BYTES");
    this.peerTx = opts.peerSlots ? arena.alloc(peerBytes) : 0;
    this.peerRx = opts.peerSlots ? arena.alloc(peerBytes) : 0;
    this.icmpBucket = opts.icmpBucket ?? icmpBucket(hp, arena);
    const mem = hp.bytes();
    mem.fill(0, this.countersTx, this.countersTx + blockBytes);
    mem.fill(0, this.countersRx, this.countersRx + blockBytes);
    if (opts.peerSlots) {
      mem.fill(0, this.peerTx, this.peerTx + peerBytes);
      mem.fill(0, this.peerRx, this.peerRx + peerBytes);
    }
    hp.fn.contextInit(
      this.ptr,
      opts.routes,
      this.countersTx,
      this.countersRx,
      opts.vni,
      ...macHalves(opts.mac),
      (opts.antiSpoof ? hp.constant("CTX_FLAG_ANTI_SPOOF") : 0) | (opts.uso ? hp.constant("CTX_FLAG_USO") : 0),
      this.icmpBucket,
    );
    hp.fn.contextSetPeerCounters(this.ptr, this.peerTx, this.peerRx, opts.peerSlots);
    if (opts.ipv6) {
      // The address passes through the context's own bytes: contextSetIpv6 copies it into place.
      const at = this.ptr + hp.constant("CTX_LOCAL_ADDR6");
      writeIpv6(hp.bytes(), at, opts.ipv6.localAddr);
      hp.fn.contextSetIpv6(this.ptr, opts.ipv6.routes, at);
    }
  }

  /** Counters of peer (next hop) i: sent (tx) and received (rx). */
  peer(i: number): { tx: PeerCounters; rx: PeerCounters } {
    if (i < 0 || i >= this.peerSlots) throw new RangeError(`no per-peer counters for next hop ${i}`);
    const at = (base: number) => {
      const v = new BigUint64Array(this.hp.memory.buffer, base + i * this.hp.constant("PEER_COUNTER_BYTES"), 2);
      return { packets: v[0], bytes: v[1] };
    };
    return { tx: at(this.peerTx), rx: at(this.peerRx) };
  }

  /** Zeroes peer i's counters, for a next hop given to a new peer (nothing is routed to it yet). */
  resetPeer(i: number): void {
    if (i < 0 || i >= this.peerSlots) throw new RangeError(`no per-peer counters for next hop ${i}`);
    const bytes = this.hp.constant("PEER_COUNTER_BYTES");
    for (const base of [this.peerTx, this.peerRx]) this.hp.bytes().fill(0, base + i * bytes, base + (i + 1) * bytes);
  }

  tx(): DirectionCounters {
    return this.read(this.countersTx);
  }

  rx(): DirectionCounters {
    return this.read(this.countersRx);
  }

  private read(block: number): DirectionCounters {
    const view = new BigUint64Array(this.hp.memory.buffer, block, this.slots);
    const names = this.hp.verdictNames();
    const packets: Record<string, bigint> = {};
    names.forEach((name, code) => (packets[name] = view[code]));
    return {
      packets,
      bytesForwarded: view[this.hp.constant("COUNTER_BYTES_FORWARDED")],
      offloadSegments: view[this.hp.constant("COUNTER_OFFLOAD_SEGMENTS")],
      checksumTrusted: view[this.hp.constant("COUNTER_CSUM_TRUSTED")],
    };
  }
}
