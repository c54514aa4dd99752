// A dataplane worker, run to completion as in DPDK or VPP: it owns one TUN queue and one UDP
// socket and loops — batch read, one hot-path call for the whole batch, batch send — in both
// directions, sleeping in the addon's wait when idle. Each received packet is written on this
// worker's own TUN queue, so the kernel steers the replies of that flow back to this queue.
// Runs as a piscina task that lasts as long as the dataplane; it returns when the stop word is set.
// With offloads (task.offload), the TUN queue carries a vnet header in front of every packet, reads
// may be 64 KiB super-packets that the hot path segments into UDP GSO sends, and receives may be
// UDP GRO batches that it coalesces into super-packets for the TUN device: the same loop, other
// hot-path calls and descriptor arrays.
import { HotPath } from "../hotpath/module.js";
import { native } from "../io/native.js";
import { WAIT_WOKEN, waitReadable } from "../io/wait.js";
import { CoDel } from "./codel.js";
import { IO_COUNTER, IO_COUNTER_SLOTS, type QueueTask } from "./queue-task.js";

/** Longest sleep between looks at the stop word when no packet and no wake-up arrives. */
const IDLE_WAIT_MS = 100;
/** Batches per direction before the loop looks at the stop word again. */
const ROUNDS = 64;

export default function runQueue(task: QueueTask): { queue: number } {
  const hp = new HotPath(task.memory);
  const mem = task.memory.buffer;
  const buf = new Uint8Array(mem);
  const fields = hp.constant("DESC_BYTES") >> 2;
  const txDescs = new Int32Array(mem, task.tx.descs, task.tx.size * fields);
  const rxDescs = new Int32Array(mem, task.rx.descs, task.rx.size * fields);
  const io = new BigUint64Array(mem, task.ioCounters, IO_COUNTER_SLOTS);
  const stop = new Int32Array(mem, task.stopWord, 1);
  const { fn } = hp;
  const vxlan = task.format === "vxlan";
  const { tunFd, udpFd, wakeFd, ctx, offload, busyPollUs, queueDelayUs } = task;
  const header = offload ? native.VNET_HDR_BYTES : 0;
  const maxBatch = hp.constant("MAX_BATCH");
  const watch = [tunFd, udpFd];
  if (task.nice !== 0) native.threadNice(task.nice);

  type Write = (descs: Int32Array, first: number, count: number) => number;
  const toSocket: Write = (descs, first, count) => native.udpSend(udpFd, buf, descs, first, count);
  const toTun: Write = (descs, first, count) => native.tunWrite(tunFd, buf, descs, first, Math.min(count, maxBatch), header);
  /**
   * Writes descriptors [first, first+count) with batched `write` calls, skipping a packet the
   * kernel refuses; what cannot be written (queue full) is counted as a shortfall and dropped.
   */
  const drain = (write: Write, descs: Int32Array, first: number, count: number, errors: number, shortfall: number) => {
    let done = 0;
    while (done < count) {
      try {
        const n = write(descs, first + done, count - done);
        if (n === 0) break;
        done += n;
      } catch {
        io[errors]++;
        done++;
      }
    }
    if (done < count) io[shortfall] += BigInt(count - done);
  };
  const send = (descs: Int32Array, first: number, count: number) => drain(toSocket, descs, first, count, IO_COUNTER.sendErrors, IO_COUNTER.sendShortfall);
  const writeTun = (descs: Int32Array, first: number, count: number) => drain(toTun, descs, first, count, IO_COUNTER.tunWriteErrors, IO_COUNTER.tunWriteShortfall);

  // The hot-path calls and where their results are: without offloads in place in the batch read;
  // with offloads in separate descriptor arrays (segment trains out, coalesced packets in).
  let encap: (n: number) => number;
  let decap: (n: number) => number;
  let sends: Int32Array;
  let writes: Int32Array;
  if (offload) {
    const encapBatch = vxlan ? fn.vxlanEncapOffloadBatch : fn.udpEncapOffloadBatch;
    const decapBatch = vxlan ? fn.vxlanDecapOffloadBatch : fn.udpDecapOffloadBatch;
    encap = (n) => encapBatch(ctx, task.tx.descs, n, offload.txOutDescs, offload.txOut, offload.txOutStride);
    decap = (n) => decapBatch(ctx, task.rx.descs, n, offload.rxScratch, offload.rxOutDescs, offload.rxOutMax, offload.rxOut, offload.rxOutCap);
    sends = new Int32Array(mem, offload.txOutDescs, task.tx.size * hp.constant("OFFLOAD_MAX_TRAINS") * fields);
    writes = new Int32Array(mem, offload.rxOutDescs, offload.rxOutMax * fields);
  } else {
    const encapBatch = vxlan ? fn.vxlanEncapBatch : fn.udpEncapBatch;
    const decapBatch = vxlan ? fn.vxlanDecapBatch : fn.udpDecapBatch;
    encap = (n) => encapBatch(ctx, task.tx.descs, n);
    decap = (n) => decapBatch(ctx, task.rx.descs, n);
    sends = txDescs;
    writes = rxDescs;
  }

  // Datagrams dropped for waiting too long, and when to drop them (codel.ts).
  let stale = 0;
  const codel = new CoDel(task.rx.size);

  // One direction each: a batch read, one hot-path call, the batch written; the packet count read.
  const fromTun = () => {
    fn.batchInit(task.tx.descs, task.tx.size, task.tx.slots, task.tx.stride);
    const n = native.tunRead(tunFd, buf, txDescs, 0, task.tx.size, header);
    if (n === 0) return 0;
    const r = encap(n);
    const forward = r & 0xffff;
    const replies = r >>> 16;
    if (forward > 0) send(sends, 0, forward);
    if (replies > 0) writeTun(sends, forward, replies);
    return n;
  };
  // Returns the datagrams read, dropped stale ones included (a full batch means: read again).
  const fromNet = () => {
    fn.batchInit(task.rx.descs, task.rx.size, task.rx.slots, task.rx.stride);
    const drop = codel.dropping;
    const r = native.udpRecv(udpFd, buf, rxDescs, 0, task.rx.size, queueDelayUs, drop);
    const n = r & 0xffff;
    const late = r >>> 16;
    if (drop) stale += late;
    if (queueDelayUs > 0) codel.observe(n, late, performance.now());
    if (n > 0) {
      const forward = decap(n);
      if (forward > 0) writeTun(writes, 0, forward);
    }
    return drop ? n + late : n;
  };

  // Batch counts are kept in plain numbers and added to the shared u64 counters before each wait:
  // a BigInt increment per batch would allocate, and garbage collection pauses show in latency.
  let tunBatches = 0;
  let udpBatches = 0;
  // Busy polling only right after traffic: an idle queue sleeps at once, so idle costs nothing.
  let active = false;
  const txFull = task.tx.size;
  const rxFull = task.rx.size;
  while (Atomics.load(stop, 0) === 0) {
    if (tunBatches > 0 || udpBatches > 0) {
      io[IO_COUNTER.tunBatches] += BigInt(tunBatches);
      io[IO_COUNTER.udpBatches] += BigInt(udpBatches);
      io[IO_COUNTER.queueDelayDrops] += BigInt(stale);
      tunBatches = udpBatches = stale = 0;
    }
    let ready = waitReadable(watch, wakeFd, IDLE_WAIT_MS, active ? busyPollUs : 0);
    if (ready & WAIT_WOKEN) native.wakerDrain(wakeFd);
    active = false;
    // Read only what poll() found readable, and again only while batches come back full: a short
    // batch ended at EAGAIN, so that queue is empty and one more read would be a wasted syscall.
    for (let round = 0; round < ROUNDS && (ready & 3) !== 0 && Atomics.load(stop, 0) === 0; round++) {
      const tx = ready & 1 ? fromTun() : 0;
      const rx = ready & 2 ? fromNet() : 0;
      if (tx > 0) tunBatches++;
      if (rx > 0) udpBatches++;
      if (tx > 0 || rx > 0) active = true;
      ready = (tx === txFull ? 1 : 0) | (rx === rxFull ? 2 : 0);
    }
  }
  return { queue: task.queue };
}
