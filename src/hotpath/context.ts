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

/**
 * The per-peer counter arrays' layout, as assembly/batch.ts stores them: one record of
 * PEER_COUNTER_BYTES per next hop, packets then bytes (u64 each). JS reads it only here.
 */
function peerWords(hp: HotPath): number {
  return hp.constant("PEER_COUNTER_BYTES") / 8;
}
function peerAt(v: ArrayLike<bigint>, i: number, words: number): PeerCounters {
  return { packets: v[i * words], bytes: v[i * words + 1] };
}

/** Per-peer counters of next hops [0, slots) summed over contexts (add), for /status. */
export class PeerCounterSums {
  private readonly words: number;
  private readonly tx: bigint[];
  private readonly rx: bigint[];

  constructor(hp: HotPath, slots: number) {
    this.words = peerWords(hp);
    this.tx = new Array<bigint>(slots * this.words).fill(0n);
    this.rx = new Array<bigint>(slots * this.words).fill(0n);
  }

  /**
   * Adds a context's counters, each array read front to back into one running sum per word: reading
   * a peer's record in every context in turn (a view per peer and context) took 230–700 ms of the
   * main thread at 256 pairs × 4,096 peers, this 40–220 ms (2 shared, loaded cores). Each u64 is
   * read whole, so never torn.
   */
  add(ctx: DataplaneContext): void {
    for (const [sums, v] of [
      [this.tx, ctx.peerViews.tx],
      [this.rx, ctx.peerViews.rx],
    ] as const)
      for (let i = 0; i < sums.length; i++) sums[i] += v[i];
  }

  /** The sums of next hop i: sent (tx) and received (rx). */
  get(i: number): { tx: PeerCounters; rx: PeerCounters } {
    return { tx: peerAt(this.tx, i, this.words), rx: peerAt(this.rx, i, this.words) };
  }
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
  /** The per-peer counter arrays (peerTx, peerRx), viewed once: /status reads them on every call. */
  readonly peerViews: { tx: BigUint64Array; rx: BigUint64Array };
  private readonly peerSlots: number;
  /** u64 words per peer record (peerWords). */
  private readonly peerWords: number;
  /** The counter blocks and verdict names, read by every /status and /metrics scrape. */
  private readonly views: { tx: BigUint64Array; rx: BigUint64Array };
  private readonly names: string[];

  constructor(
    private readonly hp: HotPath,
    arena: Arena,
    opts: ContextOptions,
  ) {
    const blockBytes = hp.constant("COUNTER_BLOCK_BYTES");
    this.ptr = arena.alloc(hp.constant("CTX_BYTES"));
    this.countersTx = arena.alloc(blockBytes);
    this.countersRx = arena.alloc(blockBytes);
    this.peerSlots = opts.peerSlots;
    this.peerWords = peerWords(hp);
    const peerWordCount = opts.peerSlots * this.peerWords;
    this.peerTx = opts.peerSlots ? arena.alloc(peerWordCount * 8) : 0;
    this.peerRx = opts.peerSlots ? arena.alloc(peerWordCount * 8) : 0;
    this.icmpBucket = opts.icmpBucket ?? icmpBucket(hp, arena);
    // The memory is shared: a view stays valid when it grows.
    const view = (at: number, words: number) => new BigUint64Array(hp.memory.buffer, at, words);
    const slots = hp.constant("COUNTER_SLOTS");
    this.views = { tx: view(this.countersTx, slots), rx: view(this.countersRx, slots) };
    this.peerViews = { tx: view(this.peerTx, peerWordCount), rx: view(this.peerRx, peerWordCount) };
    this.names = hp.verdictNames();
    for (const v of [this.views.tx, this.views.rx, this.peerViews.tx, this.peerViews.rx]) v.fill(0n);
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
    this.assertPeer(i);
    return { tx: peerAt(this.peerViews.tx, i, this.peerWords), rx: peerAt(this.peerViews.rx, i, this.peerWords) };
  }

  /** Zeroes peer i's counters, for a next hop given to a new peer: a fresh slot, which nothing is
   *  routed to yet, or (the table full) a new run's own slot, whose batches still being counted
   *  land after the zeroing. */
  resetPeer(i: number): void {
    this.assertPeer(i);
    const words = this.peerWords;
    for (const v of [this.peerViews.tx, this.peerViews.rx]) v.fill(0n, i * words, (i + 1) * words);
  }

  private assertPeer(i: number): void {
    if (i < 0 || i >= this.peerSlots) throw new RangeError(`no per-peer counters for next hop ${i}`);
  }

  tx(): DirectionCounters {
    return this.read(this.views.tx);
  }

  rx(): DirectionCounters {
    return this.read(this.views.rx);
  }

  private read(view: BigUint64Array): DirectionCounters {
    const packets: Record<string, bigint> = {};
    this.names.forEach((name, code) => (packets[name] = view[code]));
    return {
      packets,
      bytesForwarded: view[this.hp.constant("COUNTER_BYTES_FORWARDED")],
      offloadSegments: view[this.hp.constant("COUNTER_OFFLOAD_SEGMENTS")],
      checksumTrusted: view[this.hp.constant("COUNTER_CSUM_TRUSTED")],
    };
  }
}
