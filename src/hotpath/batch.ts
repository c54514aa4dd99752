// A batch: descriptors plus the packet slots they point into, both in hot-path memory. The I/O
// addon reads into and writes from it; one hot-path call processes it whole. `load` and `read`
// copy packets in and out from JavaScript: for tests, benchmarks and tools, never the hot path.
import type { Arena } from "./arena.js";
import type { HotPath } from "./module.js";

/** What one descriptor holds after a hot-path call. */
export interface DescriptorView {
  /** The slot the descriptor points into (descriptors are reordered by verdict). */
  slot: number;
  /** Verdict code (names: HotPath.verdictNames). */
  verdict: number;
  bytes: Uint8Array;
  addr: number;
  port: number;
  aux: number;
}

export class PacketBatch {
  /** Offset of the descriptor array. */
  readonly descs: number;
  /** Offset of the first slot. */
  readonly slots: number;
  private readonly f: {
    stride: number;
    off: number;
    len: number;
    addr: number;
    port: number;
    verdict: number;
    aux: number;
  };

  constructor(
    private readonly hp: HotPath,
    arena: Arena,
    /** Number of descriptors and slots. */
    readonly size: number,
    /** Bytes per slot, headroom included. */
    readonly stride: number,
    /** Packet slots, at least `size` (more for a flow queue's pool, which reads into any of them). */
    readonly slotCount = size,
  ) {
    const max = hp.constant("MAX_BATCH");
    if (size < 1 || size > max) throw new RangeError(`batch size must be 1..${max}, got ${size}`);
    const at = (name: string) => hp.constant(name) >> 2;
    this.f = {
      stride: at("DESC_BYTES"),
      off: at("DESC_OFF"),
      len: at("DESC_LEN"),
      addr: at("DESC_ADDR"),
      port: at("DESC_PORT"),
      verdict: at("DESC_VERDICT"),
      aux: at("DESC_AUX"),
    };
    this.descs = arena.alloc(size * hp.constant("DESC_BYTES"));
    if (slotCount < size) throw new RangeError(`${slotCount} slots for a batch of ${size}`);
    this.slots = arena.alloc(slotCount * stride);
  }

  /** Points every descriptor at its slot again (processing moves OFF): once before each read. */
  reset(): void {
    this.hp.fn.batchInit(this.descs, this.size, this.slots, this.stride);
  }

  /** The descriptors as i32 fields, a view over the shared memory. */
  descView(): Int32Array {
    return new Int32Array(this.hp.memory.buffer, this.descs, this.size * this.f.stride);
  }

  /** Resets the batch and copies packets into its slots, as a read would. */
  load(packets: Uint8Array[]): void {
    if (packets.length > this.size) throw new RangeError(`${packets.length} packets for a batch of ${this.size}`);
    this.reset();
    const d = this.descView();
    const mem = this.hp.bytes();
    const room = this.stride - this.hp.constant("HEADROOM");
    packets.forEach((p, i) => {
      if (p.length > room) throw new RangeError(`packet of ${p.length} bytes for slots of ${room}`);
      mem.set(p, d[i * this.f.stride + this.f.off]);
      d[i * this.f.stride + this.f.len] = p.length;
    });
  }

  /** Copies out the first n descriptors and their packets. */
  read(n: number): DescriptorView[] {
    const d = this.descView();
    const mem = this.hp.bytes();
    const out: DescriptorView[] = [];
    for (let i = 0; i < n; i++) {
      const at = i * this.f.stride;
      const off = d[at + this.f.off];
      out.push({
        slot: Math.floor((off - this.slots) / this.stride),
        verdict: d[at + this.f.verdict],
        bytes: mem.slice(off, off + Math.max(0, d[at + this.f.len])),
        addr: d[at + this.f.addr] >>> 0,
        port: d[at + this.f.port],
        aux: d[at + this.f.aux],
      });
    }
    return out;
  }
}
