// TUN queues: one fd per queue of a device (IFF_TUN | IFF_NO_PI), non-blocking and close-on-exec.
// With multiQueue each queue pair of the dataplane owns one queue of the same device; with vnetHdr a 12-byte
// virtio_net_hdr rides in the slot bytes [OFF-12, OFF) of every packet read or written, so the
// packet itself stays at OFF where the hot path expects it. A TunQueue is the dataplane's
// PacketQueue (batch-io.ts); the control thread opens and owns it, a worker borrows it (lend()).
import type { PacketQueue } from "./batch-io.js";
import { FdHandle } from "./fd-handle.js";
import { atMostMaxBatch, native } from "./native.js";

export interface TunOptions {
  /** IFF_MULTI_QUEUE: open the same name again for each further queue. */
  readonly multiQueue?: boolean;
  /** IFF_VNET_HDR with TUNSETVNETHDRSZ 12 (the virtio v1 layout), for segmentation offloads. */
  readonly vnetHdr?: boolean;
}

/** TUNSETOFFLOAD flags: what this queue's reader can take unsegmented or unchecksummed. */
export const TUN_OFFLOAD = {
  CSUM: native.TUN_F_CSUM,
  TSO4: native.TUN_F_TSO4,
  TSO6: native.TUN_F_TSO6,
  USO4: native.TUN_F_USO4,
  USO6: native.TUN_F_USO6,
} as const;

/** A TUN queue as plain data, to hand to a worker thread (structured clone); see TunQueue.borrow. */
export interface LentTunQueue {
  fd: number;
  name: string;
  vnetHdr: boolean;
}

export class TunQueue extends FdHandle implements PacketQueue {
  private readonly header: 0 | 12;

  private constructor(
    fd: number,
    readonly name: string,
    readonly vnetHdr: boolean,
    borrowed = false,
  ) {
    super(fd, "TUN queue", borrowed);
    this.header = vnetHdr ? native.VNET_HDR_BYTES : 0;
  }

  /** This queue as plain data for another thread, which borrows it; this handle stays the owner. */
  lend(): LentTunQueue {
    return { fd: this.fd, name: this.name, vnetHdr: this.vnetHdr };
  }

  /** The queue a lender handed over: usable until its owner closes it; close() leaves the fd open. */
  static borrow(lent: LentTunQueue): TunQueue {
    return new TunQueue(lent.fd, lent.name, lent.vnetHdr, true);
  }

  /**
   * Creates device `name` in the calling thread's network namespace, or attaches to it (a new
   * queue when multiQueue). Throws EPERM without CAP_NET_ADMIN, EBUSY when a single-queue device
   * is taken, EINVAL when the device exists with other flags.
   */
  static open(name: string, options: TunOptions = {}): TunQueue {
    const vnetHdr = options.vnetHdr ?? false;
    const { fd, name: actual } = native.tunOpen(name, options.multiQueue ?? false, vnetHdr);
    return new TunQueue(fd, actual, vnetHdr);
  }

  /** `count` queues of one multi-queue device; on failure the queues opened so far are closed. */
  static openQueues(name: string, count: number, options: Omit<TunOptions, "multiQueue"> = {}): TunQueue[] {
    const queues: TunQueue[] = [];
    try {
      for (let i = 0; i < count; i++) queues.push(TunQueue.open(name, { ...options, multiQueue: true }));
    } catch (error) {
      for (const q of queues) q.close();
      throw error;
    }
    return queues;
  }

  /** Reads up to `count` packets (one syscall each, one native call in all); see PacketQueue. */
  read(buf: Uint8Array, descs: Int32Array, first: number, count: number): number {
    return native.tunRead(this.fd, buf, descs, first, atMostMaxBatch(count), this.header);
  }

  write(buf: Uint8Array, descs: Int32Array, first: number, count: number): number {
    return native.tunWrite(this.fd, buf, descs, first, atMostMaxBatch(count), this.header);
  }

  /** TUNSETOFFLOAD with TUN_OFFLOAD flags (USO4 and USO6 only as a pair); needs vnetHdr for anything but 0. */
  setOffload(flags: number): void {
    native.tunSetOffload(this.fd, flags);
  }

  /**
   * Makes `program` (eBPF socket-filter instructions, steering.ts) pick the queue of every packet
   * the device sends, for all its queues, in place of the device's flow table. Throws EPERM without
   * CAP_BPF, EINVAL (or ENOTTY) on a kernel without TUN steering, or the verifier's refusal.
   */
  setSteeringProgram(program: Uint8Array): void {
    native.tunSetSteeringProgram(this.fd, program);
  }
}
