// What the control thread hands a dataplane worker for one queue: the shared hot-path memory and
// where in it this queue's context and batches are, plus the fds it owns. Plain data, so it
// crosses to the worker thread by structured clone (the shared memory is shared, not copied).

export type WireFormat = "vxlan" | "udp";

export interface BatchRegion {
  descs: number;
  slots: number;
  size: number;
  stride: number;
}

/**
 * Where a queue's offload regions are (assembly/packet/offload-send.ts, offload-receive.ts); the
 * tx and rx batches then have few, 64 KiB slots for super-packets and GRO batches.
 */
export interface OffloadRegions {
  /** Send descriptors (tx.size * OFFLOAD_MAX_TRAINS) and one segment slot per TUN read slot. */
  txOutDescs: number;
  txOut: number;
  txOutStride: number;
  /** MAX_BATCH scratch descriptors, outMax TUN write descriptors and cap bytes for moved packets. */
  rxScratch: number;
  rxOutDescs: number;
  rxOutMax: number;
  rxOut: number;
  rxOutCap: number;
}

export interface QueueTask {
  queue: number;
  format: WireFormat;
  memory: WebAssembly.Memory;
  /** Dataplane context (assembly/context.ts) of this queue. */
  ctx: number;
  tx: BatchRegion;
  rx: BatchRegion;
  /** This queue's I/O counters (IO_COUNTER_* u64 slots) and the pool-wide stop word (i32). */
  ioCounters: number;
  stopWord: number;
  tunFd: number;
  udpFd: number;
  wakeFd: number;
  /** Microseconds to poll without sleeping after a batch moved packets (0: sleep at once). */
  busyPollUs: number;
  /** Datagrams that waited longer than this in the socket's queue are dropped (0: no limit). */
  queueDelayUs: number;
  /** The worker thread's nice value (0: the process's). */
  nice: number;
  /** Set when the TUN queue has vnet headers with TSO and the socket UDP GSO/GRO. */
  offload?: OffloadRegions;
}

/** The worker's own counters, beside the hot path's verdict counters. */
export const IO_COUNTER = {
  /** Batches read from the TUN device / from the socket. */
  tunBatches: 0,
  udpBatches: 1,
  /** Packets the socket or TUN device would not take (buffer full) and that were dropped. */
  sendShortfall: 2,
  tunWriteShortfall: 3,
  /** Packets whose send failed with an error (e.g. unreachable underlay), skipped. */
  sendErrors: 4,
  tunWriteErrors: 5,
  /** Datagrams dropped at the head of the socket's queue for waiting longer than the target. */
  queueDelayDrops: 6,
} as const;
export const IO_COUNTER_SLOTS = 8;
