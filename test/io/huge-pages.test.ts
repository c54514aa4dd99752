// The addon's memoryAdviseHugePages (native/src/memory.cc) on a real shared Wasm memory: it
// advises exactly the whole 2 MiB pages inside the range it is given, checks its arguments, and
// where the kernel has transparent huge pages the range is then backed by them (/proc/self/smaps).
// An IPv6 route table built in an advised range answers as the reference does; the dataplane's
// allocator (src/dataplane/huge-pages.ts) puts tables there and says so.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { anonHugePageBytes } from "../../bench/micro/hugepages.js";
import { routeTableAllocator } from "../../src/dataplane/huge-pages.js";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable6 } from "../../src/hotpath/route-table6.js";
import { native } from "../../src/io/native.js";
import { prefixMask6, writeIpv6 } from "../../src/net/ipv6.js";
import { random32 } from "../reference/lpm.js";
import { ReferenceRouteTable6, random128, randomRules6 } from "../reference/lpm6.js";

const HUGE = native.HUGE_PAGE_BYTES;
/** THP in `always` or `madvise` mode: advised ranges get huge pages on their first touch. */
const thp = !/\[never\]/.test(readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8"));

/** A new hot-path memory with a region of bytesOf(hp) bytes at `at`, 2 MiB-aligned in its offsets. */
function memoryWith(bytesOf: (hp: HotPath) => number): { hp: HotPath; arena: Arena; at: number; bytes: number } {
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  const bytes = Math.ceil(bytesOf(hp) / HUGE) * HUGE;
  return { hp, arena, at: arena.alloc(bytes, HUGE), bytes };
}

describe("memoryAdviseHugePages", () => {
  it("is 2 MiB", () => expect(HUGE).toBe(2 << 20));

  it("advises the whole huge pages inside the range, and nothing when none fits", () => {
    const { hp, at } = memoryWith(() => 8 * HUGE);
    // The addon aligns addresses, not offsets (the buffer need not start on a huge page).
    const r = native.memoryAdviseHugePages(hp.bytes(), at + 100, 5 * HUGE, false);
    expect(r.address % HUGE).toBe(0);
    expect(r.offset).toBeGreaterThanOrEqual(at + 100);
    expect(r.offset + r.bytes).toBeLessThanOrEqual(at + 100 + 5 * HUGE);
    expect(r.bytes % HUGE).toBe(0);
    expect(r.bytes).toBeGreaterThanOrEqual(4 * HUGE);
    expect(native.memoryAdviseHugePages(hp.bytes(), at + 1, HUGE, false).bytes).toBe(0);
    expect(native.memoryAdviseHugePages(hp.bytes(), at, 0, false).bytes).toBe(0);
  });

  it("checks its arguments", () => {
    const { hp } = memoryWith(() => HUGE);
    const buf = hp.bytes();
    expect(() => native.memoryAdviseHugePages(new Int32Array(4) as never, 0, 4, false)).toThrow(TypeError);
    expect(() => native.memoryAdviseHugePages(buf, buf.length + 1, 0, false)).toThrow(RangeError);
    expect(() => native.memoryAdviseHugePages(buf, 64, buf.length, false)).toThrow(RangeError);
    expect(() => native.memoryAdviseHugePages(buf, 0, 64, 1 as never)).toThrow(TypeError);
  });

  // Without THP (enabled = never) the addon throws; CI machines must have it.
  it.runIf(thp || process.env.CI === "true")("backs an advised range with huge pages once it is touched", () => {
    const { hp, at } = memoryWith(() => 6 * HUGE);
    const r = native.memoryAdviseHugePages(hp.bytes(), at, 6 * HUGE, false);
    expect(r.bytes).toBeGreaterThanOrEqual(5 * HUGE);
    hp.bytes().fill(1, r.offset, r.offset + r.bytes);
    // The kernel may find no free 2 MiB page for some faults (fragmentation): most, not all.
    expect(anonHugePageBytes(r.address, r.bytes)).toBeGreaterThanOrEqual(r.bytes / 2);
    // MADV_COLLAPSE on pages already faulted in: best effort, reported and never thrown.
    const c = native.memoryAdviseHugePages(hp.bytes(), at, 6 * HUGE, true);
    expect(c.collapseErrno === undefined || c.collapseErrno < 0).toBe(true);
  });

  it("leaves a route table built in an advised range exact", () => {
    const limits = { maxRules: 20_000, maxNextHops: 256 };
    const { hp, arena, at, bytes } = memoryWith((h) => h.fn.route6TableSize(limits.maxRules, limits.maxNextHops));
    expect(native.memoryAdviseHugePages(hp.bytes(), at, bytes, false).bytes).toBeGreaterThan(0);
    expect(hp.fn.route6TableInit(at, limits.maxRules, limits.maxNextHops)).toBe(0);
    const ref = new ReferenceRouteTable6(limits);
    const next = random32(0x7a9e);
    const rules = randomRules6(limits.maxRules, limits.maxNextHops, next);
    const scratch = arena.alloc(16);
    for (const r of rules) {
      writeIpv6(hp.bytes(), scratch, r.addr);
      expect(hp.fn.route6Insert(at, scratch, r.len, r.nh)).toBe(0);
      ref.insert(r.addr, r.len, r.nh);
    }
    const n = 256;
    const addrs = Array.from({ length: n }, (_, i) => {
      if (i % 2 === 0) return random128(next);
      const r = rules[next() % rules.length];
      return r.addr | (random128(next) & ~prefixMask6(r.len) & ((1n << 128n) - 1n));
    });
    const inAt = arena.alloc(n * 16);
    const outAt = arena.alloc(n * 4);
    addrs.forEach((a, i) => writeIpv6(hp.bytes(), inAt + i * 16, a));
    hp.fn.route6LookupBatch(at, inAt, outAt, n);
    expect([...new Int32Array(hp.memory.buffer, outAt, n)]).toEqual(addrs.map((a) => ref.lookup(a)));
  });
});

describe("routeTableAllocator", () => {
  it("puts tables on advised whole huge pages, or leaves them to the arena", () => {
    const hp = new HotPath(createHotPathMemory());
    const arena = new Arena(hp);
    const huge = routeTableAllocator(hp, arena, true);
    const table = new RouteTable6(hp, arena, { maxRules: 1000, maxNextHops: 16 }, huge.alloc);
    expect(table.base % HUGE).toBe(0);
    expect(huge.state.reason).toBeUndefined();
    // The table's 1 MiB of records and more: at least one whole huge page (the buffer may not start on one).
    expect(huge.state.advisedBytes).toBeGreaterThanOrEqual(HUGE);
    table.insert({ addr: 0x20010002000080010000000000000000n, len: 64 }, 3);
    expect(table.lookup(0x20010002000080010000000000000001n)).toBe(3);
    const plain = routeTableAllocator(hp, arena, false);
    new RouteTable6(hp, arena, { maxRules: 1000, maxNextHops: 16 }, plain.alloc);
    expect(plain.state).toEqual({ advisedBytes: 0 });
  });
});
