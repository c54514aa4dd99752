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
} as const;
export const IO_COUNTER_SLOTS = 8;
