// A dataplane worker, run to completion as in DPDK or VPP: it serves one or more queue pairs (a TUN
// queue and the UDP socket beside it, borrowed from the control thread, which opened them) and
// loops — batch read, one hot-path call for the whole batch, batch send — in both directions and
// over its pairs in turn, sleeping in the addon's wait when idle. Each received packet is written on
// the TUN queue paired with the socket it came from, so the kernel steers the replies of that flow
// back to that pair. Runs as a piscina task that lasts as long as the dataplane; it returns when
// the stop word is set. Offloads are not a path of their own: the queue and socket carry vnet
// headers and GSO/GRO segments behind the I/O seam (src/io/batch-io.ts), and the hot path's one
// call per direction treats a plain packet as a single segment.
import { workerData } from "piscina";
import { BUILD } from "../build-id.js";
import { WeftError } from "../errors.js";
import { HotPath, type HotPathFunctions } from "../hotpath/module.js";
import type { DatagramBind, PacketQueue } from "../io/batch-io.js";
import {
  BATCH_DONE_MASK,
  BATCH_ERRNO_UNIT,
  BATCH_FAILED_MASK,
  BATCH_FAILED_SHIFT,
  batchDone,
  batchFailed,
  native,
} from "../io/native.js";
import { TunQueue } from "../io/tun.js";
import { UdpSocket } from "../io/udp.js";
import { WAIT_SLEPT, WAIT_SPUN, WAIT_WOKEN, waitReadable } from "../io/wait.js";
import { CoDel } from "./codel.js";
import {
  errorData,
  IO_COUNTER,
  IO_COUNTER_SLOTS,
  IO_ERRNO,
  IO_SERVING,
  type QueueTask,
  type TaskEnd,
  type WorkerShared,
} from "./queue-task.js";

/**
 * An idle worker sleeps until a packet comes or its waker is signalled (-1: no timeout): stop(),
 * or the process's exit event (dataplane.ts), sets the stop word first. Waking ten times a second
 * to look at it cost an idle dataplane some 0.3% of a core.
 */
const IDLE_WAIT_MS = -1;
/** Rounds (a batch per ready fd each) before the loop looks at the stop word and sleeps again. */
const ROUNDS = 64;
/**
 * With the flow queue, TUN reads per batch sent (each up to a batch, while they come back full and
 * no sparse flow waits): up to 256 packets per send, a quarter of the flow queue's TUN ring, so a ping
 * waits in it for reads, not behind a ring-full of flood being sent, and the flood's excess is dropped by the
 * flow queue at the head of the fattest flow instead of at the ring's tail for every flow alike.
 */
const READS_PER_SEND = 16;

/** TUN read errors in a row after which a worker gives up to its supervisor (see TunReader). */
const READ_ERRORS_IN_A_ROW = 64;

/**
 * A worker's start with its flow queue `fq` (read into `txDescs`, counters at `ioCounters`): one
 * that replaces a dead one finds what it held still there, unless the dead one died inside a call
 * that changes the queue (fqCut): its lists may then be half updated (slots lost for good, a packet
 * sent twice), so the queue is laid out afresh and what it held counts in flowQueueDrops. What the
 * dead one held outside the queue is lost and counted (fqTakeOver): packets read and not queued yet,
 * or taken out and not through the hot path yet, in flowQueueDrops; sends and TUN writes not made
 * yet, in sendShortfall and tunWriteShortfall. Returns whether packets are held.
 */
export function takeOverFlowQueue(fn: HotPathFunctions, fq: number, txDescs: number, ioCounters: number): boolean {
  const at = (slot: number) => ioCounters + slot * 8;
  fn.fqTakeOver(fq, txDescs, at(IO_COUNTER.sendShortfall), at(IO_COUNTER.tunWriteShortfall));
  return fn.fqBacklog(fq) > 0;
}

/** A batched write: a TUN queue's or a socket's (batch-io.ts), returning a batch result. */
export type Write = (buf: Uint8Array, descs: Int32Array, first: number, count: number) => number;

/** Where a drain counts: io's slots for its errors, shortfall and last errno, and its word in `held`. */
export interface DrainSlots {
  errors: number;
  shortfall: number;
  errno: number;
  toDo: number;
}

/** The BigInts 0..BATCH_FAILED_MASK: a batch's failed packets are added to a counter without a call (see drainer). */
const FAILED = Array.from({ length: BATCH_FAILED_MASK + 1 }, (_, i) => BigInt(i));
const GSO_TOO_BIG = native.UDP_SEND_GSO_TOO_BIG;

/**
 * The worker's drain over `buf`, with counters `io` and the words `held` (see serve): it writes
 * descriptors [first, first+count) with batched `write` calls. What the kernel refuses is reported
 * in the result (a send's train at once, a TUN write's packets) and counted in io[errors], with
 * its errno in io[errno]; a bad descriptor, which throws (ERR_OUT_OF_RANGE), is skipped and counted
 * the same way. Any other throw is the queue's (closed, its device deleted) and would come again for
 * every descriptor: it counts once in io[errors] and ends the drain. What is not written then, or
 * cannot be (queue full), is counted in io[shortfall] and dropped. held[toDo] follows what is
 * still to write.
 */
export function drainer(buf: Uint8Array, io: BigUint64Array, held: Int32Array) {
  return (write: Write, descs: Int32Array, first: number, count: number, slots: DrainSlots) => {
    let done = 0;
    while (done < count) {
      try {
        const r = write(buf, descs, first + done, count - done);
        // No call between the write's return and these stores (a terminate lands at a call or the
        // loop's back edge; the successor's accounting reads io and held): the result is read
        // inline, and a BigInt comes from FAILED. The errors first: were a terminate to land
        // between them, failed packets would count twice (errors, and shortfall through held), never
        // be lost.
        const n = r & BATCH_DONE_MASK;
        const failed = (r >>> BATCH_FAILED_SHIFT) & BATCH_FAILED_MASK;
        if (failed > 0) io[slots.errors] += FAILED[failed];
        held[slots.toDo] = count - done - n;
        if (failed > 0) io[slots.errno] = BigInt(Math.floor(r / BATCH_ERRNO_UNIT));
        if (n === 0) break;
        done += n;
      } catch (error) {
        io[slots.errors]++;
        done++;
        held[slots.toDo] = count - done;
        const { errno, code } = error as NodeJS.ErrnoException;
        if (errno !== undefined) io[slots.errno] = BigInt(-errno);
        if (code !== "ERR_OUT_OF_RANGE") break;
      }
    }
    if (done < count) {
      // Made before the stores, as above: a terminate at this call counts the rest through held.
      const rest = BigInt(count - done);
      io[slots.shortfall] += rest;
      held[slots.toDo] = 0;
    }
  };
}

/**
 * A worker's TUN reads into `descs` over `buf`. A failed read counts in io's tunReadErrors and
 * reads nothing (a throw killed the worker, restarted forever), or, after the batch's first packet,
 * ends the batch with the packets read (the kernel dropped the one it failed); a deleted device
 * (EBADFD) sets `gone`, which ends the worker's loop (after the round under way). An error that
 * comes back read after read (the queue stays readable) would spin the thread: past
 * READ_ERRORS_IN_A_ROW it is thrown, for the supervisor's restart with its backoff and log line.
 */
export class TunReader {
  /** The error's message once the device is deleted. */
  gone: string | undefined;
  private errorsInARow = 0;

  constructor(
    private readonly buf: Uint8Array,
    private readonly descs: Int32Array,
    private readonly io: BigUint64Array,
  ) {}

  /** Reads up to `count` packets from `tun` into descriptors 0..; the packets read. */
  read(tun: PacketQueue, count: number): number {
    try {
      const r = tun.read(this.buf, this.descs, 0, count);
      // A failed read after good ones: one error in a row.
      this.errorsInARow = batchFailed(r);
      if (this.errorsInARow > 0) this.io[IO_COUNTER.tunReadErrors]++;
      return batchDone(r);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EBADFD") this.gone = (error as Error).message;
      else {
        this.io[IO_COUNTER.tunReadErrors]++;
        if (++this.errorsInARow >= READ_ERRORS_IN_A_ROW) throw error;
      }
      return 0;
    }
  }
}

/** A worker's task: what ended it (TaskEnd), a failure included, which it returns rather than throws. */
export default function runWorker(task: QueueTask): TaskEnd {
  try {
    return serve(task);
  } catch (error) {
    return { worker: task.worker, died: errorData(error) };
  }
}

/**
 * The hot path's module the main thread compiled, once this thread's code is the main thread's
 * build: piscina starts a thread from the files on disk, which an install (npm install -g) may have
 * replaced under the running agent, and new code over the old memory layout would forward wrongly
 * with no error.
 */
function mainModule(): WebAssembly.Module {
  const shared = workerData as WorkerShared | undefined;
  const own = BUILD.id;
  if (shared?.build !== own)
    throw new WeftError(
      "DATAPLANE_WORKER_BUILD_MISMATCH",
      `this dataplane worker thread loaded weft build ${own} from disk, the running agent is build ${shared?.build ?? "(none given)"}: weft was installed anew under the running agent, and mixed builds would forward wrongly, so this worker's queue pairs stay down; restart the agent (systemctl restart weft) to run the new build`,
    );
  return shared.module;
}

/**
 * Serves the task's pairs until the stop word is set, or until its TUN device is deleted
 * (`tunGone`): its queues will read nothing again, and a restarted worker would fail the same way.
 */
function serve(task: QueueTask): TaskEnd {
  const hp = new HotPath(task.memory, mainModule());
  const { fn } = hp;
  const mem = task.memory.buffer;
  const buf = new Uint8Array(mem);
  const fields = hp.constant("DESC_BYTES") >> 2;
  const descView = (at: number, count: number) => new Int32Array(mem, at, count * fields);
  const { tx, rx, results: out, busyPollUs, queueDelayUs } = task;
  // Each pair's I/O, context and receive-queue state (codel.ts: the sojourn limit is per socket).
  // `more`: the TUN side has more for the next round — its last read filled its batch, or the flow
  // queue still holds packets after reading it (then the loop must not sleep).
  const borrowed = task.pairs.map((p) => ({ ctx: p.ctx, tun: TunQueue.borrow(p.tun), udp: UdpSocket.borrow(p.udp) }));
  // wait()'s bit 2i is pair i's TUN queue, bit 2i+1 its socket.
  const watch = borrowed.flatMap((p) => [p.tun.fd, p.udp.fd]);
  const pairs = borrowed.map((p) => {
    const tun: PacketQueue = p.tun;
    const bind: DatagramBind = p.udp;
    return { ctx: p.ctx, tun, bind, codel: new CoDel(rx.size), more: false };
  });
  type Pair = (typeof pairs)[number];
  const fdBits = (1 << watch.length) - 1;
  const format = hp.wireFormat(task.format);
  const vnet = pairs[0].tun.vnetHdr ? 1 : 0;
  const readDescs = descView(tx.descs, tx.size);
  const sendDescs = descView(out.sendDescs, out.sendMax);
  const recvDescs = descView(rx.descs, rx.size);
  const writeDescs = descView(out.writeDescs, out.writeMax);
  const io = new BigUint64Array(mem, task.ioCounters, IO_COUNTER_SLOTS);
  const stop = new Int32Array(mem, task.stopWord, 1);
  // The ICMP error bucket's clock: ms, truncated to u32 by the store (the bucket takes the wrap).
  const icmpClock = new Uint32Array(mem, task.icmpBucket + hp.constant("ICMP_BUCKET_NOW"), 1);
  if (task.nice !== 0) native.threadNice(task.nice);

  const fq = task.flowQueue;
  /**
   * Words in the flow queue's header where the worker keeps what it holds outside the queue — the
   * packets fqDequeue handed out (OUT, written by it) until the hot path has them, then the sends
   * and TUN writes still to make — for the worker after it to count if it dies (takeOverFlowQueue).
   * Each is stored right after the call that changes it returns, with no call or loop between
   * (where a terminate lands), so that the count is exact. Without a flow queue, words nobody reads.
   */
  const [OUT, SENDS, WRITES] = ["FQ_OUT", "FQ_SENDS", "FQ_WRITES"].map((c) => hp.constant(c) >> 2);
  const held = fq !== 0 ? new Int32Array(mem, fq, WRITES + 1) : new Int32Array(WRITES + 1);
  const drain = drainer(buf, io, held);
  const sendSlots: DrainSlots = {
    errors: IO_COUNTER.sendErrors,
    shortfall: IO_COUNTER.sendShortfall,
    errno: IO_ERRNO.send,
    toDo: SENDS,
  };
  const replySlots: DrainSlots = {
    errors: IO_COUNTER.tunWriteErrors,
    shortfall: IO_COUNTER.tunWriteShortfall,
    errno: IO_ERRNO.tunWrite,
    toDo: WRITES,
  };
  // The pair being served: where the drains below write.
  let at = pairs[0];
  // Sends whose GSO message the kernel refused as too big for the path (UDP_SEND_GSO_TOO_BIG).
  let gsoTooBig = 0;
  const toSocket: Write = (b, d, first, count) => {
    const r = at.bind.send(b, d, first, count);
    if (r & GSO_TOO_BIG) gsoTooBig++;
    return r;
  };
  const toTun: Write = (b, d, first, count) => at.tun.write(b, d, first, count);

  // Datagrams dropped for waiting too long (codel.ts).
  let stale = 0;

  const reader = new TunReader(buf, readDescs, io);
  // What a dead worker held is sent at once, not left until the next packet comes. (Whichever pair
  // sends it, the wire is the same.)
  if (fq !== 0 && takeOverFlowQueue(fn, fq, tx.descs, task.ioCounters)) pairs[0].more = true;
  io[IO_SERVING] = 1n;
  /**
   * Reads pair p's TUN queue into the flow queue, then takes one batch out of it in its order; the
   * count taken. The flow queue is the worker's, across its pairs: what p sends may have been read
   * from another pair's ring, and counts in p's context (the wire is the same).
   */
  const throughFlowQueue = (p: Pair) => {
    let full = false;
    for (let reads = 0; reads < READS_PER_SEND; reads++) {
      const k = fn.fqPrepare(fq, tx.descs, tx.size);
      const n = reader.read(p.tun, k);
      fn.fqEnqueue(fq, tx.descs, k, n);
      full = n === k;
      // A sparse flow's packet is sent at once: reading the rest of the ring first would delay it.
      if (!full || fn.fqSparseWaiting(fq)) break;
    }
    const m = fn.fqDequeue(fq, tx.descs, tx.size);
    p.more = full || fn.fqBacklog(fq) > 0;
    return m;
  };
  // One direction each: a batch read, one hot-path call, the batch written; the packet count read.
  const fromTun = (p: Pair) => {
    at = p;
    let n: number;
    if (fq !== 0) n = throughFlowQueue(p);
    else {
      fn.batchInit(tx.descs, tx.size, tx.slots, tx.stride);
      n = reader.read(p.tun, tx.size);
      p.more = n === tx.size;
    }
    if (n === 0) return 0;
    icmpClock[0] = performance.now();
    const r = fn.encapBatch(p.ctx, tx.descs, n, format, vnet, out.sendDescs, out.segments, out.segmentStride);
    const sends = r & 0xffff;
    const replies = r >>> 16;
    held[SENDS] = sends;
    held[WRITES] = replies;
    held[OUT] = 0;
    if (sends > 0) drain(toSocket, sendDescs, 0, sends, sendSlots);
    if (replies > 0) drain(toTun, sendDescs, sends, replies, replySlots);
    return n;
  };
  // Returns the datagrams read, dropped stale ones included (a full batch means: read again).
  const fromNet = (p: Pair) => {
    at = p;
    fn.batchInit(rx.descs, rx.size, rx.slots, rx.stride);
    const drop = p.codel.dropping;
    const r = p.bind.recv(buf, recvDescs, 0, rx.size, queueDelayUs, drop);
    const n = r & 0xffff;
    const late = r >>> 16;
    // Counted in datagrams (a GRO receive holds up to 64); CoDel and a full batch go by receives.
    if (drop) stale += Math.floor(r / 2 ** 32);
    if (queueDelayUs > 0) p.codel.observe(n, late, performance.now());
    if (n > 0) {
      const writes = fn.decapBatch(
        p.ctx,
        rx.descs,
        n,
        format,
        vnet,
        out.scratch,
        out.writeDescs,
        out.writeMax,
        out.moved,
        out.movedCap,
      );
      held[WRITES] = writes;
      if (writes > 0) drain(toTun, writeDescs, 0, writes, replySlots);
    }
    return drop ? n + late : n;
  };

  // Batch counts are kept in plain numbers and added to the shared u64 counters before each wait:
  // a BigInt increment per batch would allocate, and garbage collection pauses show in latency.
  let tunBatches = 0;
  let udpBatches = 0;
  // Busy polling only right after traffic: an idle queue sleeps at once, so idle costs nothing.
  // The budget adapts as NAPI's and DPDK's adaptive modes do: a spin that caught a packet restores
  // the whole budget, one that ran out halves it, down to an eighth, so a queue whose traffic comes
  // in sparse bursts (a request every few ms on the far side of a round trip) spins little.
  let active = false;
  let spinBudget = busyPollUs;
  const spinFloor = busyPollUs >> 3;
  const rxFull = rx.size;
  /** The TUN bits of the pairs whose queues have more for the next round. */
  const tunMore = () => {
    let bits = 0;
    for (let i = 0; i < pairs.length; i++) if (pairs[i].more) bits |= 1 << (2 * i);
    return bits;
  };
  while (Atomics.load(stop, 0) === 0 && reader.gone === undefined) {
    if (tunBatches > 0 || udpBatches > 0) {
      io[IO_COUNTER.tunBatches] += BigInt(tunBatches);
      io[IO_COUNTER.udpBatches] += BigInt(udpBatches);
      // Rare: a shared counter's read-modify-write only when there is something to add.
      if (stale > 0) io[IO_COUNTER.queueDelayDrops] += BigInt(stale);
      if (gsoTooBig > 0) io[IO_COUNTER.udpGsoTooBig] += BigInt(gsoTooBig);
      tunBatches = udpBatches = stale = gsoTooBig = 0;
    }
    // Packets held in the flow queue or a full ring are sent without sleeping first.
    const more = tunMore();
    const woke = waitReadable(watch, task.wakeFd, more !== 0 ? 0 : IDLE_WAIT_MS, active ? spinBudget : 0);
    if (woke & WAIT_SPUN) spinBudget = busyPollUs;
    else if (woke & WAIT_SLEPT) spinBudget = Math.max(spinFloor, spinBudget >> 1);
    if (woke & WAIT_WOKEN) native.wakerDrain(task.wakeFd);
    active = false;
    // Read only what poll() found readable, and again only while batches come back full: a short
    // batch ended at EAGAIN, so that queue is empty and one more read would be a wasted syscall.
    // Each round serves every ready fd one batch, and a round that leaves full ones looks again
    // (poll without waiting) for fds that became readable meanwhile, so a flood on one fd delays
    // another fd's packets by a round, never by a full ring or receive queue.
    let ready = (woke & fdBits) | more;
    for (let round = 0; round < ROUNDS && ready !== 0 && Atomics.load(stop, 0) === 0; round++) {
      let next = 0;
      for (let i = 0; i < pairs.length; i++) {
        const bits = (ready >>> (2 * i)) & 3;
        if (bits === 0) continue;
        const p = pairs[i];
        const read = bits & 1 ? fromTun(p) : 0;
        const received = bits & 2 ? fromNet(p) : 0;
        if (read > 0) tunBatches++;
        if (received > 0) udpBatches++;
        if (read > 0 || received > 0) active = true;
        next |= ((p.more ? 1 : 0) | (received === rxFull ? 2 : 0)) << (2 * i);
      }
      ready = next === 0 ? 0 : next | (waitReadable(watch, -1, 0) & fdBits);
    }
  }
  return { worker: task.worker, ...(reader.gone !== undefined && { tunGone: reader.gone }) };
}
