// What the control thread hands a dataplane worker: the shared hot-path memory and where in it the
// worker's batches and result regions are, plus the queue pairs it serves (a TUN queue, the socket
// beside it and their context), which the control thread lends the worker. Plain data, so it crosses to the worker thread by structured clone (the
// shared memory is shared, not copied).
import { type ErrorCode, WeftError } from "../errors.js";
import type { LentTunQueue } from "../io/tun.js";
import type { LentUdpSocket } from "../io/udp.js";

export type WireFormat = "vxlan" | "udp";

export interface BatchRegion {
  descs: number;
  slots: number;
  size: number;
  stride: number;
}

/**
 * Where the hot path puts a queue's results (encapBatch, decapBatch: assembly/packet/offload-send.ts,
 * offload-receive.ts). With offloads these are regions of their own: a super-packet becomes several
 * sends, GRO batches become coalesced packets. Without, every packet is a single segment and
 * results stay in place: the send and write descriptors are the tx and rx batches' own, and the
 * other regions are empty (0).
 */
export interface ResultRegions {
  /** Descriptors for sendmmsg (sendMax of them) and one segment slot per TUN read slot. */
  sendDescs: number;
  sendMax: number;
  segments: number;
  segmentStride: number;
  /** MAX_BATCH scratch descriptors, writeMax TUN write descriptors and movedCap bytes for packets that move. */
  scratch: number;
  writeDescs: number;
  writeMax: number;
  moved: number;
  movedCap: number;
}

/**
 * A TUN queue and the socket paired with it. A datagram received on the socket is written on the
 * TUN queue, so the kernel steers the flow's replies back to that queue; both directions of a flow
 * stay on one pair, and its packets never wait in another flow's ring or receive queue.
 */
export interface QueuePair {
  /** Dataplane context (assembly/context.ts) of this pair: its routes view and counters. */
  ctx: number;
  tun: LentTunQueue;
  udp: LentUdpSocket;
}

export interface QueueTask {
  /** The worker's index (for logs). */
  worker: number;
  format: WireFormat;
  memory: WebAssembly.Memory;
  /** The pairs this worker serves in turn, one batch each per round. */
  pairs: QueuePair[];
  tx: BatchRegion;
  rx: BatchRegion;
  results: ResultRegions;
  /** This worker's I/O counters (IO_COUNTER_* u64 slots) and the pool-wide stop word (i32). */
  ioCounters: number;
  stopWord: number;
  wakeFd: number;
  /** Microseconds to poll without sleeping after a batch moved packets (0: sleep at once). */
  busyPollUs: number;
  /** Datagrams that waited longer than this in the socket's queue are dropped (0: no limit). */
  queueDelayUs: number;
  /** The worker thread's nice value (0: the process's). */
  nice: number;
  /**
   * The send path's flow queue (assembly/packet/flow-queue.ts), laid out over the tx batch's
   * slots, or 0 for none: TUN packets are then sent in the order read, one read per send batch.
   */
  flowQueue: number;
  /**
   * The worker's ICMP error bucket (assembly/packet/icmp-rate.ts), shared by its pairs' contexts:
   * the worker writes its clock into it before each send batch.
   */
  icmpBucket: number;
}

/**
 * What every thread of the pool gets from the main thread (piscina's workerData): the hot path's
 * module it compiled, which the thread instantiates rather than build/weft.wasm, and the id of its
 * build (build-id.ts), which the thread's own must equal.
 */
export interface WorkerShared {
  build: string;
  module: WebAssembly.Module;
}

/** The worker's own counters, beside the hot path's verdict counters. */
export const IO_COUNTER = {
  /** Batches read from the TUN device / from the socket. */
  tunBatches: 0,
  udpBatches: 1,
  /**
   * Packets the socket or TUN device would not take (buffer full) and that were dropped, those a
   * drain left after the first once its queue was closed or device deleted (drainer: the first
   * counts in sendErrors, tunWriteErrors), or that a worker with a flow queue died before sending
   * (counted by the next one: takeOverFlowQueue).
   */
  sendShortfall: 2,
  tunWriteShortfall: 3,
  /**
   * Packets whose send failed with an error (e.g. unreachable underlay; a refused train counts each),
   * skipped; and a drain's first packet once its socket or queue closed or its device went.
   */
  sendErrors: 4,
  tunWriteErrors: 5,
  /** Datagrams dropped at the head of the socket's queue for waiting longer than the target. */
  queueDelayDrops: 6,
  /**
   * TUN packets dropped at the head of the fattest flow of the send path's flow queue, held by a
   * worker that died inside a call that changes it, or read or taken out of it by a worker that
   * died before the hot path had them (written by Wasm: fqEnqueue, fqReset, fqTakeOver).
   */
  flowQueueDrops: 7,
  /** TUN reads that failed with an error (not a deleted device, which ends the worker), each losing its packet. */
  tunReadErrors: 8,
  /**
   * Sends in which the kernel refused a UDP GSO message as larger than the path's MTU (EINVAL,
   * EMSGSIZE: the underlay's MTU was lowered, a route's locked mtu, a PMTU exception), so that its
   * datagrams went again one by one; nothing is lost, but each such batch pays the refused send.
   */
  udpGsoTooBig: 9,
} as const;
/**
 * Beside the counters, not summed with them: the errno of the worker's last refused send and TUN
 * write (0: none yet), for why sendErrors and tunWriteErrors grow (counters(): lastErrno).
 */
export const IO_ERRNO = { send: 10, tunWrite: 11 } as const;
/**
 * 1 while the worker's task serves its pairs: set by the worker once it is set up, cleared by the
 * supervisor when the task ends. A worker whose thread cannot start, or whose task dies before it
 * is set up, never sets it (counters(): workersDown).
 */
export const IO_SERVING = 12;
export const IO_COUNTER_SLOTS = 13;

/**
 * How a worker's task ended: the stop word was set; its TUN device was deleted (`tunGone`, the read
 * error's message); or it failed (`died`). A thrown error would cross to the supervisor without its
 * code (structured clone keeps an Error's message and stack, not its own fields), so the worker
 * returns it as data, and the supervisor makes it an error again (reviveError).
 */
export interface TaskEnd {
  worker: number;
  tunGone?: string;
  died?: ErrorData;
}

/** An error as plain data: its own fields are `code`, a WeftError's `detail`, a system error's `errno` and `syscall`. */
export interface ErrorData {
  name: string;
  message: string;
  stack?: string;
  fields: Record<string, string | number | boolean>;
}

export function errorData(error: unknown): ErrorData {
  if (!(error instanceof Error)) return { name: "Error", message: String(error), fields: {} };
  // Only plain values: anything else could not be cloned, and the worker's result would be lost.
  const fields: ErrorData["fields"] = {};
  for (const [k, v] of Object.entries(error))
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") fields[k] = v;
  return { name: error.name, message: error.message, stack: error.stack, fields };
}

/** The error errorData() described, a WeftError again if it was one. */
export function reviveError(d: ErrorData): Error {
  const err =
    d.name === "WeftError"
      ? new WeftError(d.fields.code as ErrorCode, d.message)
      : Object.assign(new Error(d.message), { name: d.name });
  Object.assign(err, d.fields);
  if (d.stack !== undefined) err.stack = d.stack;
  return err;
}
