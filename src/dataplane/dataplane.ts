// weft's userspace dataplane (backends `wasm-vxlan` and `udp`): a multi-queue TUN device and one
// SO_REUSEPORT UDP socket per TUN queue (a queue pair), a piscina pool with one long-running task
// per worker (worker.ts), each serving one or more pairs, and the shared hot-path memory holding
// the route table, the per-pair contexts, the per-worker batches and counters. The control thread
// changes peers while workers forward; a worker that dies is replaced and its pairs resume. One
// dataplane carries one address family, as flannel runs one VXLAN device per family: an IPv6 one
// (wasm-vxlan only) has its own TUN device with IPv6 on, an IPv6 route table, and IPv6 sockets on
// the IPv6 underlay address.
import { randomInt } from "node:crypto";
import { once } from "node:events";
import { Piscina } from "piscina";
import type { Logger } from "pino";
import { BUILD } from "../build-id.js";
import { isWeftError, WeftError } from "../errors.js";
import { Arena } from "../hotpath/arena.js";
import { PacketBatch } from "../hotpath/batch.js";
import { DataplaneContext, type DirectionCounters, icmpBucket, PeerCounterSums } from "../hotpath/context.js";
import { HotPath, createHotPathMemory, hotPathModule } from "../hotpath/module.js";
import { RouteTable } from "../hotpath/route-table.js";
import type { TunQueue } from "../io/tun.js";
import { LinkStats } from "../io/link-stats.js";
import { errnoName } from "../io/native.js";
import { UdpSocket } from "../io/udp.js";
import { Waker } from "../io/wait.js";
import type { Kernel } from "../kernel/iproute.js";
import { familyOf, formatAddr, type IpAddr, type IpPrefix } from "../net/ip.js";
import { ipv4Mapped } from "../net/ipv6.js";
import { RouteTable6 } from "../hotpath/route-table6.js";
import { projectFile } from "../paths.js";
import {
  DEFAULT_BUSY_POLL_US,
  DEFAULT_FLOW_QUEUE,
  DEFAULT_QUEUE_DELAY_US,
  DEFAULT_QUEUES_PER_WORKER,
  WORKER_MAX_PAIRS,
  defaultWorkers,
  TUN_MAX_QUEUES,
} from "./defaults.js";
import { PeerTable, peerRouteTableSize, type DataplanePeer } from "./peers.js";
import { innerFlowSteering, tunFlowSteering } from "./steering.js";
import { routeTableAllocator, type HugePageState } from "./huge-pages.js";
import { openFirstSocket, openTunQueues, type OffloadState } from "./offload.js";
import {
  IO_COUNTER,
  IO_COUNTER_SLOTS,
  IO_ERRNO,
  IO_SERVING,
  type QueuePair,
  type QueueTask,
  reviveError,
  type ResultRegions,
  type WorkerShared,
  type TaskEnd,
  type WireFormat,
} from "./queue-task.js";

export interface UserspaceDataplaneOptions {
  format: WireFormat;
  /** TUN device name (e.g. weft0). */
  tunName: string;
  /** MTU of the TUN device: underlay MTU - 50 (vxlan over IPv4), - 70 (over IPv6) or - 28 (udp). */
  mtu: number;
  /**
   * The pods' MTU (FLANNEL_MTU), where above `mtu`: over an IPv6 underlay 20 bytes more. A segment
   * the kernel sizes wrong comes to the TUN device at up to this (tunGsoMaxSegs). Default `mtu`.
   */
  podMtu?: number;
  /**
   * The whole pod network; its route goes to the TUN device. Its family is the dataplane's: an
   * IPv6 network (vxlan format only) routes IPv6 pods.
   */
  network: IpPrefix;
  /** This node's subnet; its network address is the TUN device's address and the ICMP (ICMPv6) source. */
  subnet: IpPrefix;
  /** Underlay address and UDP port to receive on (8472 vxlan, 8285 udp); an IPv6 address opens IPv6 sockets. */
  listenAddr: IpAddr;
  port: number;
  vni: number;
  /** This node's VTEP MAC (vxlan). */
  vtepMac: Uint8Array;
  /** Worker threads. Default: defaultWorkers(). */
  workers?: number;
  /**
   * Queue pairs (a TUN queue and its socket) each worker serves in turn, 1..WORKER_MAX_PAIRS.
   * Flows spread over all pairs, so with more pairs than workers a flood fills its own pair's ring
   * and receive queue, not those of the flows beside it. Default DEFAULT_QUEUES_PER_WORKER, fewer
   * where workers × that would pass the TUN driver's 256 queues (more than 64 workers).
   */
  queuesPerWorker?: number;
  /** Most peers at once. Default 4096. */
  maxPeers?: number;
  /** Packets per batch (1..256). Default 64. */
  batchSize?: number;
  antiSpoof?: boolean;
  /**
   * Segmentation offloads (TSO super-packets through the TUN device, UDP GSO/GRO, segmenting and
   * coalescing in Wasm) when the kernel has them; the wire format is the same. Default true.
   */
  offloads?: boolean;
  /**
   * Microseconds a worker keeps polling without sleeping after a batch moved packets (see
   * worker.ts). Default DEFAULT_BUSY_POLL_US; 0 sleeps at once. Idle queues never spin.
   */
  busyPollUs?: number;
  /**
   * Longest a datagram may wait in a socket's receive queue, in microseconds; older ones are dropped
   * at the head, so that latency under overload stays bounded. Default DEFAULT_QUEUE_DELAY_US; 0
   * for no limit.
   */
  queueDelayUs?: number;
  /** Nice value of the worker threads (default 0). */
  nice?: number;
  /**
   * The send path's flow queue (assembly/packet/flow-queue.ts): a worker reads its TUN queue
   * faster than it sends, into per-flow queues served sparse flows first, and drops a flood's
   * excess itself (weft_dataplane_queue_drops_total{reason="flow-queue"}). Default DEFAULT_FLOW_QUEUE.
   */
  flowQueue?: boolean;
  /**
   * Packets each TUN queue holds (the device's txqueuelen). Default TUN_TXQUEUELEN_OFFLOADS with
   * offloads (TUN_TXQUEUELEN_FLOW_QUEUE with the flow queue), TUN_TXQUEUELEN without.
   */
  tunQueueLen?: number;
  /**
   * With offloads, datagrams other than TCP's super-packets are batched too: runs of single
   * datagrams to one peer leave as UDP GSO trains (UdpSocket.trains), and received UDP datagrams of
   * one flow are merged into USO super-packets for the TUN device (assembly/packet/udp-coalesce.ts,
   * where the kernel has USO). Default true; false only to measure what it gains.
   */
  udpBatching?: boolean;
  /**
   * With several queue pairs, the TUN device picks each packet's queue by weft's flow hash (an eBPF
   * program, steering.ts), the one the sockets' reuseport program uses, instead of its own flow
   * table. Default true; where the kernel refuses the program the device keeps its flow table (the
   * reason is in counters() and the log); false only to measure what it gains.
   */
  tunSteering?: boolean;
  /**
   * Route tables on transparent huge pages (huge-pages.ts), where the kernel has them. Default
   * true; without them they stay on 4 KiB pages (the reason is in counters() and the log).
   */
  hugePages?: boolean;
  /**
   * Called once when the running dataplane stops carrying traffic by itself and cannot recover in
   * place, the error's code saying why: its TUN device was deleted (DATAPLANE_TUN_GONE: its queues
   * read nothing again), a worker died WORKER_DEATHS_TO_FAIL times in a row
   * (DATAPLANE_WORKER_CRASH_LOOP: a restart does not cure the cause), or a worker thread could not
   * start (DATAPLANE_WORKER_START_FAILED: piscina replaces no dead thread after that, and a thread
   * a new task starts fails the same way, so a dead worker's task waits for ever). The owner stops it and starts a new one (the agent restarts the backend's
   * lane, the node not ready meanwhile). Not called for a stop().
   */
  onFailed?: (err: WeftError) => void;
  logger?: Logger;
}

export interface DataplaneCounters {
  tx: DirectionCounters;
  rx: DirectionCounters;
  /**
   * Per peer, summed over every pair: only when asked (counters({ peers: true }), for /status),
   * since it reads pairs × peers slots, which no metric uses.
   */
  peers?: Record<string, { txPackets: bigint; txBytes: bigint; rxPackets: bigint; rxBytes: bigint }>;
  io: Record<keyof typeof IO_COUNTER, bigint>;
  /**
   * Per worker, the errno of its last refused send and TUN write by name ("EHOSTUNREACH"): why
   * io.sendErrors and io.tunWriteErrors grow. A worker's entry is {} until it has one.
   */
  lastErrno: Array<{ send?: string; tunWrite?: string }>;
  /**
   * Packets forwarded through each queue pair, both directions: how evenly flows spread. Pair q is
   * served by worker q mod workers.
   */
  perQueue: Array<{ tx: bigint; rx: bigint }>;
  /**
   * Packets the kernel dropped at the TUN device's rings before a worker read them (its tx_dropped:
   * the ring of txqueuelen packets was full). The first place a flood loses packets on the sending
   * host, and where TCP finds the dataplane's limit (tun_net_xmit orphans each skb, so the pods'
   * small-queue limit does not hold a stream back). Absent when /proc/net/dev could not be read.
   */
  tunRingDrops?: bigint;
  workerRestarts: number;
  /**
   * Workers not serving their queue pairs now (dead and waiting for a restart, or restarted and not
   * set up yet, or on a thread that could not start): their pairs' flows go nowhere meanwhile.
   */
  workersDown: number;
  /** Whether offloads are in force, with what, or why not. */
  offload: OffloadState;
  /** Who picks the TUN queue a sent packet waits in, and why not our program where it is not. */
  tunSteering: TunSteeringState;
  /** How much of the route table is on huge pages, or why none. */
  routeTablePages: HugePageState;
  /** Size of the shared hot-path memory (route table, contexts, counters, packet slots). */
  memoryBytes: number;
}

/**
 * The counters of DataplaneCounters that only grow. The agent carries a stopped dataplane's (its
 * backend swapped or replaced) into the next one's (withTotals), so that none falls for the life of
 * the process, as Prometheus counters must not and `weft status` readers expect.
 */
export type DataplaneTotals = Pick<DataplaneCounters, "tx" | "rx" | "peers" | "io" | "tunRingDrops" | "workerRestarts">;

/** Sums of each key of a and b (a key of one alone counts as 0 in the other); a less b with sign -1n. */
function addEach<T extends Record<string, bigint>>(a: T, b: Partial<T>, sign = 1n): T {
  const sums: Record<string, bigint> = { ...a };
  for (const [k, v] of Object.entries(b)) sums[k] = (sums[k] ?? 0n) + sign * (v ?? 0n);
  return sums as T;
}

function addDirection(a: DirectionCounters, b: DirectionCounters, sign = 1n): DirectionCounters {
  return {
    packets: addEach(a.packets, b.packets, sign),
    bytesForwarded: a.bytesForwarded + sign * b.bytesForwarded,
    offloadSegments: a.offloadSegments + sign * b.offloadSegments,
    checksumTrusted: a.checksumTrusted + sign * b.checksumTrusted,
  };
}

/**
 * The lane's sum of stopped dataplanes (`base`) with one more stopped dataplane's totals (`d`)
 * added. Nothing of `base` goes: a peer `d` lacks (not set in it yet, or its table cleared by a
 * stop within a failed start) keeps its count, and so do TUN ring drops `d` could not read.
 */
export function addTotals(base: DataplaneTotals | undefined, d: DataplaneTotals): DataplaneTotals {
  const { tx, rx, io, tunRingDrops, workerRestarts } = d;
  const peers = { ...base?.peers };
  for (const [name, p] of Object.entries(d.peers ?? {})) peers[name] = addEach(p, peers[name] ?? {});
  const noDrops = tunRingDrops === undefined && base?.tunRingDrops === undefined;
  if (!base) return { tx, rx, peers, io, ...(!noDrops && { tunRingDrops }), workerRestarts };
  return {
    tx: addDirection(tx, base.tx),
    rx: addDirection(rx, base.rx),
    peers,
    io: addEach(io, base.io),
    ...(!noDrops && { tunRingDrops: (tunRingDrops ?? 0n) + (base.tunRingDrops ?? 0n) }),
    workerRestarts: workerRestarts + base.workerRestarts,
  };
}

/**
 * `d` with the totals of stopped dataplanes (`base`) added, for display. Per peer by name, for the
 * peers `d` has: a peer gone is shown no more, as the running dataplane's table drops it.
 */
export function withTotals<T extends DataplaneTotals>(d: T, base: DataplaneTotals | undefined): T {
  return base ? combine(d, base, 1n) : d;
}

/**
 * What one dataplane counted from its read `then` to its later read `now`: the agent's read of a
 * retired backend after its stop less the one before, which the totals have already.
 */
export function totalsSince<T extends DataplaneTotals>(now: T, then: DataplaneTotals): T {
  return combine(now, then, -1n);
}

/**
 * `base` with what one dataplane counted from its read `then` (in `base` already) to `now` added.
 * A peer of `then` that `base` no longer holds was forgotten meanwhile (it left while the backend
 * stopped: keepPeerTotals): it is not brought back, to start a node that takes its name from 0.
 */
export function addTotalsSince(
  base: DataplaneTotals | undefined,
  now: DataplaneTotals,
  then: DataplaneTotals,
): DataplaneTotals {
  const since = totalsSince(now, then);
  const peers =
    since.peers && Object.entries(since.peers).filter(([name]) => !then.peers?.[name] || base?.peers?.[name]);
  return addTotals(base, { ...since, peers: peers && Object.fromEntries(peers) });
}

/** `d` with `other` added (sign 1n) or taken away (-1n), for `d`'s peers and counters only. */
function combine<T extends DataplaneTotals>(d: T, other: DataplaneTotals, sign: bigint): T {
  const peers = d.peers && {
    peers: Object.fromEntries(
      Object.entries(d.peers).map(([name, p]) => [name, addEach(p, other.peers?.[name] ?? {}, sign)]),
    ),
  };
  return {
    ...d,
    tx: addDirection(d.tx, other.tx, sign),
    rx: addDirection(d.rx, other.rx, sign),
    ...peers,
    io: addEach(d.io, other.io, sign),
    // Absent while the running device's stats cannot be read: no sample rather than the old sum alone.
    ...(d.tunRingDrops !== undefined && { tunRingDrops: d.tunRingDrops + sign * (other.tunRingDrops ?? 0n) }),
    workerRestarts: d.workerRestarts + Number(sign) * other.workerRestarts,
  };
}

export interface TunSteeringState {
  /**
   * "program": weft's flow hash, as on receive, so a flow never moves between pairs; "flow-table":
   * the device's own (it follows the queue a flow was last written on, and its boot-seeded hash
   * once that entry ages out after 3 s); "single-queue": one pair, nothing to pick.
   */
  by: "program" | "flow-table" | "single-queue";
  /** Why not "program", where it could have been. */
  reason?: string;
}

interface Pair {
  ctx: DataplaneContext;
  tun: TunQueue;
  udp: UdpSocket;
}

interface Worker {
  task: QueueTask;
  pairs: Pair[];
  waker: Waker;
  /** The worker's I/O counters (task.ioCounters), viewed once for counters(). */
  io: BigUint64Array;
  running?: Promise<void>;
  /** Deaths since the worker's last healthy run (see WORKER_DEATHS_TO_FAIL). */
  deathsInARow: number;
}

/** Slot bytes: headroom + the largest frame the TUN MTU allows + encapsulation, rounded up. */
const SLOT_BYTES = 2048;
/**
 * What a slot holds besides a packet of the TUN MTU: the headroom in front (native.HEADROOM, where
 * encapsulation headers and ICMP errors are written) and, in a received VXLAN datagram, the VXLAN
 * and inner Ethernet headers in front of the packet (VXLAN_ENCAP_HEADER_BYTES in assembly/packet/vxlan-header.ts).
 */
const SLOT_BYTES_BESIDES_PACKET = 64 + 22;
/** The largest TUN MTU the slots hold; a jumbo underlay gets pods of this MTU (the backend clamps). */
export const DATAPLANE_MAX_MTU = SLOT_BYTES - SLOT_BYTES_BESIDES_PACKET;
/**
 * With offloads, slots hold a 64 KiB super-packet or GRO batch (plus headroom): fewer of them,
 * about 5 MiB per worker in all. Each TUN read is a syscall of its own anyway, so 16 per send batch
 * lose little; the receive batch keeps 32 for peers that send single datagrams (kernel vxlan).
 */
const BIG_SLOT_BYTES = 65536 + 64;
const OFFLOAD_TX_BATCH = 16;
/**
 * With the flow queue, the tx slots are a pool of this many batches: one to read into, the rest
 * held (fqEnqueue drops the fattest flow's oldest above that).
 */
const FLOW_QUEUE_POOL_BATCHES = 4;
const OFFLOAD_RX_BATCH = 32;
/**
 * A segmented super-packet: up to 64 KiB of payload plus per-segment headers, for as many
 * segments as the TUN device's gso_max_segs lets through (tunGsoMaxSegs; tcp-segment.ts drops what
 * does not fit as OFFLOAD_SIZE).
 */
export const SEGMENT_SLOT_BYTES = 96 * 1024;

/**
 * The TUN device's gso_max_segs: the most segments a segment slot holds whatever the headers. Each
 * segment goes out behind the encapsulation header (VXLAN and inner Ethernet; none for flannel's
 * udp) and is at most the pods' MTU: the kernel keeps it within the device's MTU only where it
 * parses the headers right; a forwarding kernel reads an IPv6 destination options header as TCP's
 * (header length 0 where its options are zeros) and lets through segments of the pod's MTU, 20
 * bytes over the device's over an IPv6 underlay. So a segment takes at most that header plus the
 * larger MTU: 66 at 1450. A flat 128 held headers of at most 234 bytes; IPv6 destination options of
 * a few hundred bytes shrink the MSS until a 64 KB super-packet has more segments than that, and
 * every one was dropped. A slot of 128 full segments at the largest MTU (248 KiB) would take 2.6
 * times the memory for a rare shape; fewer segments only make the kernel's TCP send smaller
 * super-packets (or the kernel cut a pod's itself). At most OFFLOAD_MAX_SEGMENTS (2 trains) at a
 * low MTU. Neither MTU rises above the one set here (the TUN MTU only follows the underlay down).
 */
export function tunGsoMaxSegs(hp: HotPath, format: WireFormat, tunMtu: number, podMtu: number): number {
  const header = format === "vxlan" ? hp.constant("VXLAN_ENCAP_HEADER_BYTES") : 0;
  const segment = header + Math.max(tunMtu, podMtu);
  return Math.min(hp.constant("OFFLOAD_MAX_SEGMENTS"), Math.floor(SEGMENT_SLOT_BYTES / segment));
}
/**
 * Packets the kernel queues for the workers on each TUN queue (the device's ring: the TUN driver
 * drops when it is full and never holds packets back in a qdisc). Without offloads each entry is
 * one packet, and the default 500 overflowed while a worker sent a batch (TCP paid in
 * retransmits). With offloads TCP arrives in super-packets of up to 64 KB. The driver orphans each
 * skb it queues, so the pods' small-queue limit does not hold a stream back, only its window: a
 * ring of 32 overflows under TCP (tunRingDrops), one of 256 did not, yet TCP ran no faster with
 * it, since the workers' CPU bounds its rate (ARCHITECTURE.md, "A shorter TUN ring"). So a short
 * ring costs TCP retransmits but no throughput, while it bounds how long a flood of datagrams can
 * make every other packet wait (the TUN ring has no timestamps to drop by age, as the sockets do).
 */
const TUN_TXQUEUELEN = 5000;
/**
 * With offloads and without the flow queue, 32: a ping beside a flood waits behind at most 32
 * datagrams or super-packets.
 * Against 256 (`bench:e2e --tun-queue`, two interleaved runs of 5 rounds, AMD EPYC): ping under
 * load p50 3.57 → 0.53 and 2.33 → 1.47 ms, p99 35.2 → 7.7 and 26.8 → 18.4 ms, with TCP (1 and 4
 * streams) and UDP 1400 B no lower (ARCHITECTURE.md, "A shorter TUN ring").
 */
const TUN_TXQUEUELEN_OFFLOADS = 32;

/** Waits before a dead worker's task runs again: doubling from min to max, back to min after a healthy run. */
const SUPERVISE_BACKOFF_MS = { min: 10, max: 1000, healthyRun: 60_000 };
/**
 * Deaths in a row (each within healthyRun of its start) after which the dataplane reports itself
 * failed (onFailed). A cause a restart cures (a thread killed, a rare trap) leaves a healthy run
 * behind; at the 8th death the backoff has reached its longest, after 7 restarts and 1.3 s of
 * waits, and a worker that died every time since forwards nothing most of the time while the node
 * looked ready. A new dataplane (device, sockets, memory, threads) may cure what a restart could
 * not, and the owner marks the node not ready while it starts one.
 */
const WORKER_DEATHS_TO_FAIL = 8;
/**
 * The flow queue reads ahead from the ring while reads come back full and drops a flood's excess
 * itself (at the head of the fattest flow), so its ring is long: what a ring drops at its tail
 * falls on every flow in it, and a worker off its CPU for a few milliseconds lets a flood fill 256
 * packets (at 100 kpps). With every flow on one pair, 256 → 1,024 → 2,048 (5 rounds): pings lost
 * 2.3–10.3% → 0–0.3% → 0% per round, p99 7.2 → 9.0 → 8.2 ms, TCP the same (ARCHITECTURE.md,
 * "Queues"). The cost is memory the kernel holds for the ring when a worker falls behind: some
 * 2 MB per queue of 1,400-byte datagrams, up to 64 MB of 64 KB super-packets (TCP's window keeps
 * a stream to tcp_wmem's 4 MB).
 */
const TUN_TXQUEUELEN_FLOW_QUEUE = 1024;
/** Without offloads every packet is a single segment: results stay in the batches they were read into. */
function inPlaceResults(tx: PacketBatch, rx: PacketBatch): ResultRegions {
  return {
    sendDescs: tx.descs,
    sendMax: tx.size,
    segments: 0,
    segmentStride: 0,
    scratch: 0,
    writeDescs: rx.descs,
    writeMax: rx.size,
    moved: 0,
    movedCap: 0,
  };
}

export class UserspaceDataplane {
  readonly workers: number;
  private readonly family: 4 | 6;
  private readonly hp: HotPath;
  private readonly peers: PeerTable;
  private readonly workerTasks: Worker[] = [];
  private pairs: Pair[] = [];
  private readonly stopWord: Int32Array;
  private readonly offload: OffloadState;
  private readonly tunSteering: TunSteeringState;
  private readonly routeTablePages: HugePageState;
  private pool?: Piscina;
  private restarts = 0;
  /** The TUN device's counters, opened where the device was created (link-stats.ts). */
  private tunStats?: LinkStats;
  /** The TUN ring's drops read as the stop closed the device: what counters() says since. */
  private closedRingDrops?: bigint;
  private stopping = false;
  /** onFailed was called. */
  private failed = false;
  /**
   * The pool failed to start a thread: piscina replaces no dead thread after that (a task given to
   * it starts one, which fails the same way), so the task waits in its queue for ever, and stop()
   * must not wait for it.
   */
  private poolBroken = false;
  /** The first stop()'s work, which every later stop() waits for. */
  private stopped?: Promise<void>;

  /**
   * Builds the shared memory and opens the TUN queues and sockets in the calling thread's network
   * namespace (synchronous, so a caller can wrap it in withNetns). Nothing runs until start().
   */
  constructor(private readonly opts: UserspaceDataplaneOptions) {
    this.workers = opts.workers ?? defaultWorkers();
    // The TUN driver takes at most TUN_MAX_QUEUES queues: a many-core host gets fewer pairs per worker.
    const perWorker =
      opts.queuesPerWorker ??
      Math.max(1, Math.min(DEFAULT_QUEUES_PER_WORKER, Math.floor(TUN_MAX_QUEUES / this.workers)));
    if (!Number.isInteger(perWorker) || perWorker < 1 || perWorker > WORKER_MAX_PAIRS)
      throw new WeftError(
        "DATAPLANE_QUEUES",
        `${perWorker} queues per worker: give a whole number from 1 to ${WORKER_MAX_PAIRS}`,
      );
    const pairCount = this.workers * perWorker;
    if (pairCount > TUN_MAX_QUEUES)
      throw new WeftError(
        "DATAPLANE_QUEUES",
        `${this.workers} workers × ${perWorker} queues per worker = ${pairCount} TUN queues, above the kernel's ${TUN_MAX_QUEUES}: give fewer workers or queues per worker`,
      );
    const maxPeers = opts.maxPeers ?? 4096;
    const batch = opts.batchSize ?? 64;
    if (opts.mtu > DATAPLANE_MAX_MTU)
      throw new WeftError(
        "DATAPLANE_MTU",
        `MTU ${opts.mtu} does not fit the ${SLOT_BYTES}-byte packet slots; use an MTU of at most ${DATAPLANE_MAX_MTU}`,
      );
    this.family = familyOf(opts.subnet.addr);
    if (this.family === 6 && opts.format !== "vxlan")
      throw new WeftError(
        "DATAPLANE_FAMILY",
        "flannel's udp format carries IPv4 only: route IPv6 with the vxlan format",
      );
    this.hp = new HotPath(createHotPathMemory());
    const arena = new Arena(this.hp);
    const tables = routeTableAllocator(this.hp, arena, opts.hugePages ?? true);
    this.routeTablePages = tables.state;
    // One table, of the dataplane's family: an IPv6 dataplane has no IPv4 table (its 64 MiB tbl24
    // would never be read; contexts without one give IPv4 packets no route).
    const routes =
      this.family === 4
        ? new RouteTable(this.hp, arena, peerRouteTableSize(maxPeers), tables.alloc)
        : new RouteTable6(this.hp, arena, peerRouteTableSize(maxPeers), tables.alloc);
    this.peers = new PeerTable(routes, maxPeers, (nextHop) => {
      for (const q of this.pairs) q.ctx.resetPeer(nextHop);
    });
    const stopAt = arena.alloc(4);
    this.stopWord = new Int32Array(this.hp.memory.buffer, stopAt, 1);
    const queueDelayUs = opts.queueDelayUs ?? DEFAULT_QUEUE_DELAY_US;
    const withFlowQueue = opts.flowQueue ?? DEFAULT_FLOW_QUEUE;
    const udpOptions = { address: opts.listenAddr, port: opts.port, reusePort: true, rcvbuf: 4 << 20, sndbuf: 4 << 20 };
    const first = openFirstSocket(udpOptions, opts.offloads ?? true);
    let tuns: TunQueue[] = [];
    const sockets = [first.socket];
    const wakers: Waker[] = [];
    try {
      const tun = openTunQueues(opts.tunName, pairCount, first.gro);
      tuns = tun.tuns;
      try {
        this.tunStats = LinkStats.open(tuns[0].name);
      } catch (err) {
        // Only a counter: the dataplane runs without it, and says so.
        opts.logger?.warn({ err }, "the TUN ring's drops will not be counted (tunRingDrops stays absent)");
      }
      const enabled = first.gro && tun.flags.length > 0;
      if (first.gro && !enabled) {
        // Without vnet headers every receive must be one datagram: GRO batches are taken apart only
        // on the offload path, so the socket that took UDP_GRO is opened again without it.
        sockets[0].close();
        sockets[0] = UdpSocket.open(udpOptions);
      }
      this.offload = { enabled, tun: tun.flags, udpGro: enabled, udpGsoRefused: 0, reason: first.reason ?? tun.reason };
      // Sockets join the reuseport group in pair order, which is the index the steering program
      // returns (steering.ts).
      for (let q = 1; q < pairCount; q++) sockets.push(UdpSocket.open({ ...udpOptions, gro: enabled }));
      // One ICMP error bucket per worker: errors are limited per worker, as Linux limits them per host.
      const icmpBuckets = Array.from({ length: this.workers }, () => icmpBucket(this.hp, arena));
      const pairs = sockets.map((udp, q): Pair => {
        if (queueDelayUs > 0) udp.enableTimestamps();
        udp.trains = enabled && (opts.udpBatching ?? true);
        const ctx = new DataplaneContext(this.hp, arena, {
          routes: routes instanceof RouteTable ? routes.base : 0,
          vni: opts.vni,
          mac: opts.vtepMac,
          antiSpoof: opts.antiSpoof ?? true,
          // USO4 and USO6 come as a pair (offload.ts).
          uso: enabled && tun.flags.includes("USO4") && (opts.udpBatching ?? true),
          peerSlots: maxPeers,
          icmpBucket: icmpBuckets[q % this.workers],
          ipv6:
            routes instanceof RouteTable6 ? { routes: routes.base, localAddr: opts.subnet.addr as bigint } : undefined,
        });
        return { ctx, tun: tuns[q], udp };
      });
      for (let w = 0; w < this.workers; w++) {
        const txSize = enabled ? OFFLOAD_TX_BATCH : batch;
        const txSlots = withFlowQueue ? txSize * FLOW_QUEUE_POOL_BATCHES : txSize;
        const tx = new PacketBatch(this.hp, arena, txSize, enabled ? BIG_SLOT_BYTES : SLOT_BYTES, txSlots);
        const rx = enabled
          ? new PacketBatch(this.hp, arena, OFFLOAD_RX_BATCH, BIG_SLOT_BYTES)
          : new PacketBatch(this.hp, arena, batch, SLOT_BYTES);
        const ioCounters = arena.alloc(IO_COUNTER_SLOTS * 8);
        this.hp.bytes().fill(0, ioCounters, ioCounters + IO_COUNTER_SLOTS * 8);
        const flowQueue = withFlowQueue ? this.flowQueue(arena, tx, txSlots, ioCounters, opts.mtu) : 0;
        // Worker w serves pairs w, w + workers, …: with one pair per worker, pair w.
        const mine = pairs.filter((_, q) => q % this.workers === w);
        const waker = Waker.open();
        wakers.push(waker);
        const region = (b: PacketBatch) => ({ descs: b.descs, slots: b.slots, size: b.size, stride: b.stride });
        this.workerTasks.push({
          pairs: mine,
          waker,
          io: new BigUint64Array(this.hp.memory.buffer, ioCounters, IO_COUNTER_SLOTS),
          deathsInARow: 0,
          task: {
            worker: w,
            format: opts.format,
            memory: this.hp.memory,
            pairs: mine.map((p): QueuePair => ({ ctx: p.ctx.ptr, tun: p.tun.lend(), udp: p.udp.lend() })),
            tx: region(tx),
            rx: region(rx),
            results: enabled ? this.offloadResults(arena, tx, rx) : inPlaceResults(tx, rx),
            ioCounters,
            stopWord: stopAt,
            busyPollUs: opts.busyPollUs ?? DEFAULT_BUSY_POLL_US,
            queueDelayUs,
            nice: opts.nice ?? 0,
            flowQueue,
            icmpBucket: icmpBuckets[w],
            wakeFd: waker.fd,
          },
        });
      }
      this.pairs = pairs;
      this.tunSteering = { by: "single-queue" };
      if (pairCount > 1) {
        sockets[0].setReuseportProgram(innerFlowSteering(opts.format, pairCount, this.family));
        this.tunSteering = steerTunQueues(tuns[0], pairCount, this.family, opts.tunSteering ?? true);
      }
    } catch (error) {
      for (const u of sockets) u.close();
      for (const w of wakers) w.close();
      this.workerTasks.length = 0;
      this.tunStats?.close();
      for (const t of tuns) t.close();
      throw error;
    }
  }

  /**
   * A flow queue over the tx batch's `slots` slots: it holds up to all but one batch of them, so
   * that a read always has a batch of free slots; its drops count in the worker's flowQueueDrops.
   */
  private flowQueue(arena: Arena, tx: PacketBatch, slots: number, ioCounters: number, mtu: number): number {
    const { fn } = this.hp;
    const at = arena.alloc(fn.fqSize(slots));
    // A quantum of one full-sized frame per round, as fq_codel's default (MTU + Ethernet header);
    // a random hash seed per queue, as fq_codel's perturbation.
    const seed = randomInt(2 ** 32);
    fn.fqInit(
      at,
      slots,
      tx.slots,
      tx.stride,
      slots - tx.size,
      mtu + 14,
      ioCounters + IO_COUNTER.flowQueueDrops * 8,
      seed,
    );
    return at;
  }

  /** The result regions of one queue's batches with offloads (see ResultRegions). */
  private offloadResults(arena: Arena, tx: PacketBatch, rx: PacketBatch): ResultRegions {
    const descBytes = this.hp.constant("DESC_BYTES");
    const sendMax = tx.size * this.hp.constant("OFFLOAD_MAX_TRAINS");
    const writeMax = rx.size * this.hp.constant("GRO_MAX_SEGMENTS");
    // Merged packets take less room than their segments did; only flannel udp datagrams that move
    // grow, by their vnet header: room for all of that plus one super-packet being built.
    const movedCap = rx.size * rx.stride + writeMax * 16 + BIG_SLOT_BYTES;
    return {
      sendDescs: arena.alloc(sendMax * descBytes),
      sendMax,
      segments: arena.alloc(tx.size * SEGMENT_SLOT_BYTES),
      segmentStride: SEGMENT_SLOT_BYTES,
      scratch: arena.alloc(this.hp.constant("MAX_BATCH") * descBytes),
      writeDescs: arena.alloc(writeMax * descBytes),
      writeMax,
      moved: arena.alloc(movedCap),
      movedCap,
    };
  }

  private defaultTunQueueLen(): number {
    if (!this.offload.enabled) return TUN_TXQUEUELEN;
    return (this.opts.flowQueue ?? DEFAULT_FLOW_QUEUE) ? TUN_TXQUEUELEN_FLOW_QUEUE : TUN_TXQUEUELEN_OFFLOADS;
  }

  /** Brings the TUN device up with its address and MTU (through `kernel`) and starts the workers. */
  async start(kernel: Kernel): Promise<void> {
    const { tunName, mtu, subnet, network } = this.opts;
    this.assertNotStopped();
    try {
      // Like flannel's udp backend: the device holds the subnet's network address with the whole
      // network's prefix length, so the kernel routes every other subnet of the network to it.
      // IPv6: no duplicate address detection (nobody else is on a TUN device to answer it).
      // With offloads, super-packets of at most the segments a segment slot holds (tunGsoMaxSegs):
      // the kernel cuts a larger one (a small MSS, large IPv6 extension headers) itself.
      const segs = this.offload.enabled
        ? ` gso_max_segs ${tunGsoMaxSegs(this.hp, this.opts.format, mtu, this.opts.podMtu ?? mtu)}`
        : "";
      await kernel.ipBatch([
        `link set ${tunName} mtu ${mtu} txqueuelen ${this.opts.tunQueueLen ?? this.defaultTunQueueLen()}${segs}`,
        `addr add ${formatAddr(subnet.addr)}/${network.len} dev ${tunName}${this.family === 6 ? " nodad" : ""}`,
        `link set ${tunName} up`,
      ]);
    } catch (err) {
      // A stop() meanwhile closed the device under the commands: that stop is what to report.
      this.assertNotStopped();
      throw err;
    }
    // A stop() that came while the commands ran has closed the device (with its address) and
    // sockets: no workers may start on them, nor a pool that nothing would destroy.
    this.assertNotStopped();
    this.pool = new Piscina({
      filename: projectFile("dist", "src", "dataplane", "worker.js"),
      minThreads: this.workers,
      maxThreads: this.workers,
      idleTimeout: Number.POSITIVE_INFINITY,
      // Threads run the module this thread compiled and check their build against this one's: the
      // files on disk may be a newer install by the time a thread (re)starts.
      workerData: { build: BUILD.id, module: hotPathModule() } satisfies WorkerShared,
    });
    // Without a listener, piscina's 'error' (a thread that failed to start while it had no task)
    // is an uncaught exception: the whole agent would exit.
    this.pool.on("error", (err: Error) => this.onPoolError(err));
    for (const w of this.workerTasks) w.running = this.supervise(w);
    runningDataplanes.add(this);
    for (const [q, p] of this.pairs.entries())
      void p.udp
        .whenGsoRefused()
        .then(
          (refused) =>
            refused &&
            this.opts.logger?.warn(
              { pair: q },
              "the kernel refused a UDP GSO send (EIO: an IPsec/xfrm policy on the underlay route, or a device without TX checksum offload before Linux 6.11); this socket sends single datagrams from now on, at some cost in throughput",
            ),
        );
    const log = {
      workers: this.workers,
      format: this.opts.format,
      tun: tunName,
      offload: this.offload,
      tunSteering: this.tunSteering,
      routeTablePages: this.routeTablePages,
    };
    if (this.tunSteering.reason && this.opts.tunSteering !== false)
      this.opts.logger?.warn(
        { tunSteering: this.tunSteering },
        "the TUN device keeps its own flow table: a one-way flow may move to another queue pair after 3 s",
      );
    if (this.routeTablePages.reason)
      this.opts.logger?.warn(
        { routeTablePages: this.routeTablePages },
        "route tables stay on 4 KiB pages; lookups in large tables will be a little slower",
      );
    if (this.offload.enabled || this.opts.offloads === false)
      this.opts.logger?.info(log, "userspace dataplane started");
    else
      this.opts.logger?.warn(
        log,
        "userspace dataplane started without segmentation offloads; throughput will be lower",
      );
  }

  /**
   * Adds or updates a peer of the dataplane's family; reaches every worker at once (shared route
   * table). An IPv6 dataplane takes an IPv4 underlay too (as ::ffff:a.b.c.d), sent from its
   * IPv6 sockets when they are bound to "::", or from IPv4 sockets (IPv6 over the IPv4 underlay).
   */
  setPeer(peer: DataplanePeer): void {
    if (familyOf(peer.subnet.addr) !== this.family)
      throw new WeftError(
        "DATAPLANE_FAMILY",
        `peer ${peer.name}'s subnet is IPv${familyOf(peer.subnet.addr)}, this dataplane carries IPv${this.family}; give it to the dataplane of its family`,
      );
    const mapped = this.family === 6 && typeof peer.underlay === "number";
    this.peers.set(mapped ? { ...peer, underlay: ipv4Mapped(peer.underlay as number) } : peer);
  }

  removePeer(name: string): boolean {
    return this.peers.remove(name);
  }

  listPeers(): Array<DataplanePeer & { nextHop: number }> {
    return this.peers.list();
  }

  /** Terminates every worker thread as a crash would (for tests); the supervisor runs their tasks again. */
  async killWorkers(): Promise<number> {
    const exits = (this.pool?.threads ?? []).map((t) => t.terminate());
    // A thread asleep in poll() is terminated only once it returns to JavaScript: wake it.
    for (const w of this.workerTasks) w.waker.signal();
    await Promise.all(exits);
    return exits.length;
  }

  /** One I/O counter summed over the workers, without building all of counters(). */
  ioCounter(name: keyof typeof IO_COUNTER): bigint {
    return this.workerTasks.reduce((n, w) => n + w.io[IO_COUNTER[name]], 0n);
  }

  counters(opts: { peers?: boolean } = {}): DataplaneCounters {
    const perPair = this.pairs.map((q) => ({ tx: q.ctx.tx(), rx: q.ctx.rx() }));
    const sumDir = (dir: "tx" | "rx"): DirectionCounters =>
      perPair
        .map((c) => c[dir])
        .reduce((a, b) => addDirection(a, b), {
          packets: {},
          bytesForwarded: 0n,
          offloadSegments: 0n,
          checksumTrusted: 0n,
        });
    const io = {} as DataplaneCounters["io"];
    for (const name of Object.keys(IO_COUNTER) as Array<keyof typeof IO_COUNTER>) io[name] = this.ioCounter(name);
    const lastErrno = this.workerTasks.map((w) => {
      const named = Object.entries(IO_ERRNO).flatMap(([op, slot]) =>
        w.io[slot] === 0n ? [] : [[op, errnoName(Number(w.io[slot]))]],
      );
      return Object.fromEntries(named) as DataplaneCounters["lastErrno"][number];
    });
    const perQueue = perPair.map((c) => ({ tx: c.tx.packets.FORWARD, rx: c.rx.packets.FORWARD }));
    const ringDrops = this.tunStats ? BigInt(this.tunStats.txDropped()) : this.closedRingDrops;
    return {
      tx: sumDir("tx"),
      rx: sumDir("rx"),
      ...(opts.peers && { peers: this.peerCounters() }),
      io,
      lastErrno,
      perQueue,
      ...(ringDrops !== undefined && { tunRingDrops: ringDrops }),
      workerRestarts: this.restarts,
      workersDown: this.workerTasks.filter((w) => w.io[IO_SERVING] === 0n).length,
      offload: {
        ...this.offload,
        tun: [...this.offload.tun],
        udpGsoRefused: this.pairs.filter((p) => p.udp.gsoRefused).length,
      },
      tunSteering: { ...this.tunSteering },
      routeTablePages: { ...this.routeTablePages },
      memoryBytes: this.hp.memory.buffer.byteLength,
    };
  }

  private peerCounters(): NonNullable<DataplaneCounters["peers"]> {
    const list = this.peers.list();
    const sums = new PeerCounterSums(
      this.hp,
      list.reduce((m, p) => Math.max(m, p.nextHop + 1), 0),
    );
    for (const q of this.pairs) sums.add(q.ctx);
    const peers: NonNullable<DataplaneCounters["peers"]> = {};
    for (const p of list) {
      const { tx, rx } = sums.get(p.nextHop);
      peers[p.name] = { txPackets: tx.packets, txBytes: tx.bytes, rxPackets: rx.packets, rxBytes: rx.bytes };
    }
    return peers;
  }

  /**
   * Stops the workers (the waker ends their wait, they see the stop word and return), closes the
   * TUN device and sockets. A second call resolves when the first one's work is done; a start()
   * still pending rejects with DATAPLANE_STOPPED.
   */
  stop(): Promise<void> {
    this.stopped ??= this.close();
    return this.stopped;
  }

  private async close(): Promise<void> {
    this.stopping = true;
    this.signalStop();
    try {
      const running = Promise.all(this.workerTasks.map((w) => w.running));
      // A pool that failed to start a thread never runs a task given to it since: destroying it
      // rejects them. Otherwise the workers return by themselves, each at the end of its batch.
      if (this.pool && !this.poolBroken) await Promise.race([running, once(this.pool, "error")]);
      await this.pool?.destroy();
      await running;
    } finally {
      // Whatever the pool did: sockets left open stay in their reuseport group, which a new
      // backend's sockets on the same port would join.
      this.closeIo();
    }
    this.opts.logger?.info("userspace dataplane stopped");
  }

  private assertNotStopped(): void {
    if (this.stopping)
      throw new WeftError(
        "DATAPLANE_STOPPED",
        "the dataplane was stopped before it finished starting (its device and sockets are closed); create a new one to start again",
      );
  }

  /** Sets the stop word and wakes every worker, which then returns from its task. */
  signalStop(): void {
    runningDataplanes.delete(this);
    Atomics.store(this.stopWord, 0, 1);
    for (const w of this.workerTasks) w.waker.signal();
  }

  /** Runs a worker's task; when it fails (exception, trap, killed thread) runs it again. */
  private async supervise(w: Worker): Promise<void> {
    let backoff = SUPERVISE_BACKOFF_MS.min;
    while (!this.stopping) {
      const began = performance.now();
      let err: Error;
      try {
        const end: TaskEnd = await this.pool!.run(w.task);
        w.io[IO_SERVING] = 0n;
        if (end.died === undefined) {
          if (end.tunGone !== undefined && !this.stopping) this.onTunGone(w, end.tunGone);
          return;
        }
        err = reviveError(end.died);
        if (isWeftError(err, "DATAPLANE_WORKER_BUILD_MISMATCH")) {
          if (!this.stopping) this.onBuildMismatch(w, err);
          return;
        }
      } catch (error) {
        // The thread itself died (terminated, out of memory): piscina's error.
        w.io[IO_SERVING] = 0n;
        err = error as Error;
      }
      if (this.stopping) return;
      this.restarts++;
      // A worker that ran well for a while starts from the shortest wait again: otherwise, after
      // a few deaths spread over days, every later one would stall its queue pairs for a second.
      if (performance.now() - began > SUPERVISE_BACKOFF_MS.healthyRun) {
        backoff = SUPERVISE_BACKOFF_MS.min;
        w.deathsInARow = 0;
      }
      w.deathsInARow++;
      const cause = (err as NodeJS.ErrnoException).code ?? err.name;
      this.opts.logger?.warn(
        { code: "DATAPLANE_WORKER_DIED", worker: w.task.worker, err, retryInMs: backoff },
        `dataplane worker died (${cause}); its queue pairs forward nothing until it restarts: if this repeats, err says why (a system error's code and what to do; a RuntimeError, ERR_* or another weft code is a bug: report it with this line)`,
      );
      if (w.deathsInARow === WORKER_DEATHS_TO_FAIL) this.onCrashLoop(w, cause);
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, SUPERVISE_BACKOFF_MS.max);
    }
  }

  private onTunGone(w: Worker, tunGone: string): void {
    const err = new WeftError(
      "DATAPLANE_TUN_GONE",
      `the TUN device ${this.opts.tunName} was deleted under the dataplane (${tunGone}); its queues stopped: stop this dataplane and start a new one (the agent does so itself)`,
    );
    this.opts.logger?.error({ worker: w.task.worker, err }, "dataplane worker ended: its TUN device is gone");
    // Every worker ends so; the owner hears it once.
    this.fail(err);
  }

  /** A restart would run the other build again: the worker stays down, the owner is told once. */
  private onBuildMismatch(w: Worker, err: WeftError): void {
    if (this.failed)
      this.opts.logger?.debug({ worker: w.task.worker, err }, "dataplane worker refused to start (again)");
    else this.opts.logger?.error({ worker: w.task.worker, err }, "dataplane worker refused to start");
    this.fail(err);
  }

  /** Restarts go on (with the longest wait) until the owner stops the dataplane. */
  private onCrashLoop(w: Worker, cause: string): void {
    const err = new WeftError(
      "DATAPLANE_WORKER_CRASH_LOOP",
      `dataplane worker ${w.task.worker} died ${WORKER_DEATHS_TO_FAIL} times in a row (${cause}; each DATAPLANE_WORKER_DIED line says why): its queue pairs forward nothing; stop this dataplane and start a new one (the agent does so itself, not ready meanwhile), and fix the cause if it dies again`,
    );
    this.opts.logger?.error({ worker: w.task.worker, err }, "dataplane worker keeps dying");
    this.fail(err);
  }

  /** piscina's 'error': a thread that failed to start (its task, if any, failed with the error
   *  instead). Each supervisor retry starts another, which fails too: logged at error once. */
  private onPoolError(cause: Error): void {
    this.poolBroken = true;
    if (this.stopping) return;
    const err = new WeftError(
      "DATAPLANE_WORKER_START_FAILED",
      `a dataplane worker thread failed to start (${(cause as NodeJS.ErrnoException).code ?? cause.message}; cause says why: a process or thread limit, dist/ removed under the running agent) and a dead thread is not replaced after that, so a dead worker's queue pairs stay down: stop this dataplane and start a new one (the agent does so itself, not ready meanwhile)`,
      { cause },
    );
    if (this.failed) this.opts.logger?.debug({ err }, "dataplane worker thread failed to start (again)");
    else this.opts.logger?.error({ err }, "dataplane worker thread failed to start");
    this.fail(err);
  }

  /** Tells the owner, once, that this dataplane stopped carrying traffic. */
  private fail(err: WeftError): void {
    if (this.failed) return;
    this.failed = true;
    this.opts.onFailed?.(err);
  }

  private closeIo(): void {
    try {
      // Closed with the device, its last count kept: a stopped dataplane's counters stay readable
      // (the agent's final read of a retired backend), drops while its workers stopped included.
      if (this.tunStats) this.closedRingDrops = BigInt(this.tunStats.txDropped());
    } catch {
      // Only a counter, as when LinkStats fails to open: the ring drops go absent, and the close
      // goes on (a throw failed the stop, or replaced a failed start's error).
    } finally {
      this.tunStats?.close();
      this.tunStats = undefined;
      for (const p of this.pairs) {
        p.tun.close();
        p.udp.close();
      }
      for (const w of this.workerTasks) w.waker.close();
    }
  }
}

/**
 * Dataplanes whose workers may be asleep. An idle worker sleeps in poll() without a timeout, and
 * Node joins worker threads at exit, which cannot interrupt a system call: a process that exits
 * without stop() (process.exit, an uncaught exception) would hang. So the exit event, which comes
 * before the join, wakes them.
 */
const runningDataplanes = new Set<UserspaceDataplane>();
process.on("exit", () => {
  for (const dp of runningDataplanes) {
    try {
      dp.signalStop();
    } catch {
      // A waker already closed: that dataplane's workers are gone; wake the others.
    }
  }
});

/** Hands the TUN device's queue choice to weft's flow hash, or says why it stays the device's own. */
function steerTunQueues(tun: TunQueue, queues: number, family: 4 | 6, want: boolean): TunSteeringState {
  if (!want) return { by: "flow-table", reason: "disabled by the tunSteering option" };
  try {
    tun.setSteeringProgram(tunFlowSteering(queues, family));
    return { by: "program" };
  } catch (error) {
    // An old kernel (before 4.16), one without bpf(), or a process without CAP_BPF (Linux ≥ 5.8)
    // or CAP_SYS_ADMIN: the device's flow table still keeps request/response flows on one pair;
    // only one-way flows may move. Anything but the kernel's refusal is a bug, and thrown.
    if (!(error instanceof Error && "syscall" in error)) throw error;
    return { by: "flow-table", reason: error.message };
  }
}
