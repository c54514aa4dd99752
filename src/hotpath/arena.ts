// Regions of the shared hot-path memory: route table, contexts, counters, descriptors, packet
// slots. Laid out once by one thread when a dataplane is set up and never freed, so a bump
// pointer is all it takes; the memory grows as regions are added.
import { WeftError } from "../errors.js";
import type { HotPath } from "./module.js";

const PAGE = 65536;

export class Arena {
  private top: number;

  constructor(private readonly hp: HotPath) {
    this.top = align(hp.heapBase(), 64);
  }

  /** Reserves `bytes` bytes aligned to `alignment` (a power of two) and returns their offset. */
  alloc(bytes: number, alignment = 64): number {
    const start = align(this.top, alignment);
    const end = start + bytes;
    const have = this.hp.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.hp.memory.grow(Math.ceil((end - have) / PAGE));
      } catch (cause) {
        throw new WeftError(
          "HOTPATH_OUT_OF_MEMORY",
          `the hot-path memory cannot grow to ${end} bytes; use smaller tables or fewer slots`,
          { cause },
        );
      }
    }
    this.top = end;
    return start;
  }
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a; // offsets reach 2^32: no 32-bit bit tricks
}
