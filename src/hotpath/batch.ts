// A batch: descriptors plus the packet slots they point into, both in hot-path memory. The I/O
// addon reads into and writes from it; one hot-path call processes it whole.
import type { Arena } from "./arena.js";
import type { HotPath } from "./module.js";

export class PacketBatch {
  /** Offset of the descriptor array. */
  readonly descs: number;
  /** Offset of the first slot. */
  readonly slots: number;
  private readonly descBytes: number;

  constructor(
    private readonly hp: HotPath,
    arena: Arena,
    /** Number of descriptors and slots. */
    readonly size: number,
    /** Bytes per slot, headroom included. */
    readonly stride: number,
  ) {
    const max = hp.constant("MAX_BATCH");
    if (size < 1 || size > max) throw new RangeError(`batch size must be 1..${max}, got ${size}`);
    this.descBytes = hp.constant("DESC_BYTES");
    this.descs = arena.alloc(size * this.descBytes);
    this.slots = arena.alloc(size * stride);
  }

  /** Points every descriptor at its slot again (processing moves OFF): once before each read. */
  reset(): void {
    this.hp.fn.batchInit(this.descs, this.size, this.slots, this.stride);
  }

  /** The descriptors as i32 fields (8 per packet), a view over the shared memory. */
  descView(): Int32Array {
    return new Int32Array(this.hp.memory.buffer, this.descs, this.size * (this.descBytes >> 2));
  }
}
