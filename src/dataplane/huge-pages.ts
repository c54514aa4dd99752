// The dataplane's route tables on transparent huge pages. A lookup is a chain of dependent reads
// spread over the table (IPv4's tbl24 alone is 64 MiB), and on 4 KiB pages each may also miss the
// TLB. With THP in `madvise` mode (the common default) the kernel backs memory with 2 MiB pages
// only where it was advised, so the tables are placed on whole 2 MiB pages of the hot-path memory
// and advised before they are filled (native memoryAdviseHugePages). Measured in
// bench/micro/hugepages.ts: IPv4's 100k-prefix table 1.04–1.16× faster, IPv6's about the same
// (ARCHITECTURE.md, "IPv6 route table"). Where the kernel refuses, tables stay on 4 KiB pages.
import { errorMessage } from "../errors.js";
import type { Arena } from "../hotpath/arena.js";
import type { HotPath } from "../hotpath/module.js";
import { native } from "../io/native.js";

export interface HugePageState {
  /** Bytes of route tables advised MADV_HUGEPAGE (0: all on 4 KiB pages). */
  advisedBytes: number;
  /** Why they are not advised (absent when they are, or when huge pages were not asked for). */
  reason?: string;
}

/**
 * An allocator for the route tables (RouteTable, RouteTable6): with `huge`, regions on whole
 * 2 MiB pages, advised before anything touches them; `state` says what happened.
 */
export function routeTableAllocator(
  hp: HotPath,
  arena: Arena,
  huge: boolean,
): { alloc: (bytes: number, alignment: number) => number; state: HugePageState } {
  const state: HugePageState = { advisedBytes: 0 };
  if (!huge) return { alloc: (bytes, alignment) => arena.alloc(bytes, alignment), state };
  const page = native.HUGE_PAGE_BYTES;
  const alloc = (bytes: number, alignment: number): number => {
    const size = Math.ceil(bytes / page) * page;
    const at = arena.alloc(size, Math.max(alignment, page));
    if (state.reason !== undefined) return at;
    try {
      state.advisedBytes += native.memoryAdviseHugePages(hp.bytes(), at, size, false).bytes;
    } catch (error) {
      state.reason = `madvise(MADV_HUGEPAGE) refused (${errorMessage(error)})`;
    }
    return at;
  };
  return { alloc, state };
}
