// Do transparent huge pages speed up the large LPM tables? The same 100k-prefix IPv4 (DIR-24-8,
// 64 MiB tbl24) and IPv6 (trie, ~12 MiB) tables are built twice, each in a hot-path memory of its
// own: once on 4 KiB pages, once in a range advised MADV_HUGEPAGE (native memoryAdviseHugePages)
// before the table is filled, so its pages fault in as 2 MiB ones where the kernel has them.
// Lookups of addresses inside the prefixes, batches of 64 and 256; A and B alternate in this one
// process and are timed by its CPU time (wall clock swings with the machine's other work), medians.
// First, as background, the latency of dependent reads by working-set size on either kind of page.
// Not in `npm run bench:micro` (it builds four large tables): `node dist/bench/micro/hugepages.js`.
// ARCHITECTURE.md ("IPv6 route table") has the figures and why the dataplane does not advise.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { native } from "../../src/io/native.js";
import { prefixMask6, writeIpv6 } from "../../src/net/ipv6.js";
import { random32, randomRules } from "../../test/reference/lpm.js";
import { random128, randomRules6 } from "../../test/reference/lpm6.js";

const POOL = 1 << 20;
const PREFIXES = 100_000;
const MAX_NEXT_HOPS = 4096;
const TBL8_GROUPS = 65536;
const ALL = (1n << 128n) - 1n;

/** Bytes of AnonHugePages that /proc/self/smaps shows in the mappings overlapping [address, address + bytes). */
export function anonHugePageBytes(address: number, bytes: number): number {
  let total = 0;
  let inside = false;
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      inside = parseInt(range[1], 16) < address + bytes && parseInt(range[2], 16) > address;
    } else if (inside && line.startsWith("AnonHugePages:")) {
      total += Number(line.split(/\s+/)[1]) * 1024;
    }
  }
  return total;
}

interface Table {
  /** One batch lookup of `batch` addresses of the pool from index `at`. */
  lookup(batch: number, at: number): void;
  /** MiB of the table's range that smaps shows on huge pages (advised tables only). */
  hugeMiB: number;
}

/** A hot path whose table region [base, base + bytes) is 2 MiB-aligned and, with `huge`, advised. */
function region(
  huge: boolean,
  bytesOf: (hp: HotPath) => number,
): { hp: HotPath; arena: Arena; base: number; advise: () => number } {
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  const size = Math.ceil(bytesOf(hp) / native.HUGE_PAGE_BYTES) * native.HUGE_PAGE_BYTES;
  const base = arena.alloc(size, native.HUGE_PAGE_BYTES);
  const advised = huge ? native.memoryAdviseHugePages(hp.bytes(), base, size, false) : undefined;
  const advise = () => (advised ? anonHugePageBytes(advised.address, advised.bytes) / 2 ** 20 : 0);
  return { hp, arena, base, advise };
}

function ipv4Table(huge: boolean): Table {
  const { hp, arena, base, advise } = region(huge, (h) => h.fn.routeTableSize(TBL8_GROUPS, PREFIXES, MAX_NEXT_HOPS));
  hp.fn.routeTableInit(base, TBL8_GROUPS, PREFIXES, MAX_NEXT_HOPS);
  const next = random32(PREFIXES);
  const rules = randomRules(PREFIXES, MAX_NEXT_HOPS, next);
  for (const r of rules) if (hp.fn.routeInsert(base, r.addr, r.len, r.nh) !== 0) throw new Error("setup: insert");
  const pool = arena.alloc(POOL * 4);
  const addrs = new Uint32Array(hp.memory.buffer, pool, POOL);
  for (let i = 0; i < POOL; i++) {
    const r = rules[next() % rules.length];
    addrs[i] = (r.addr | (r.len === 0 ? next() : next() & (0xffffffff >>> r.len))) >>> 0;
  }
  const out = arena.alloc(256 * 4);
  return { lookup: (batch, at) => hp.fn.routeLookupBatch(base, pool + at * 4, out, batch), hugeMiB: advise() };
}

function ipv6Table(huge: boolean): Table {
  const { hp, arena, base, advise } = region(huge, (h) => h.fn.route6TableSize(PREFIXES, MAX_NEXT_HOPS));
  hp.fn.route6TableInit(base, PREFIXES, MAX_NEXT_HOPS);
  const next = random32(PREFIXES);
  const rules = randomRules6(PREFIXES, MAX_NEXT_HOPS, next);
  const scratch = arena.alloc(16);
  for (const r of rules) {
    writeIpv6(hp.bytes(), scratch, r.addr);
    if (hp.fn.route6Insert(base, scratch, r.len, r.nh) !== 0) throw new Error("setup: insert");
  }
  const pool = arena.alloc(POOL * 16);
  const bytes = hp.bytes();
  for (let i = 0; i < POOL; i++) {
    const r = rules[next() % rules.length];
    writeIpv6(bytes, pool + i * 16, r.addr | (random128(next) & ~prefixMask6(r.len) & ALL));
  }
  const out = arena.alloc(256 * 4);
  return { lookup: (batch, at) => hp.fn.route6LookupBatch(base, pool + at * 16, out, batch), hugeMiB: advise() };
}

/** Lookups per second of `calls` batch calls, by the process's CPU time. */
function rate(t: Table, batch: number, calls: number): number {
  let at = 0;
  const start = process.cpuUsage();
  for (let i = 0; i < calls; i++) {
    t.lookup(batch, at);
    at = (at + batch) & (POOL - 1);
  }
  const used = process.cpuUsage(start);
  return (calls * batch) / ((used.user + used.system) / 1e6);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/**
 * Nanoseconds per dependent read (a random cyclic chase over 64-byte lines) in a working set of
 * `mib` MiB of a shared Wasm memory, on 4 KiB pages or advised huge ones: where the machine's
 * caches end, and what a TLB miss adds to a miss.
 */
function chaseNs(mib: number, huge: boolean, reads: number): number {
  const memory = createHotPathMemory();
  const bytes = mib << 20;
  memory.grow(Math.ceil((bytes + 2 * native.HUGE_PAGE_BYTES) / 65536));
  const buf = new Uint8Array(memory.buffer);
  const at = native.HUGE_PAGE_BYTES;
  if (huge) native.memoryAdviseHugePages(buf, at, bytes, false);
  const words = new Uint32Array(memory.buffer, at, bytes / 4);
  const lines = bytes / 64;
  const order = new Uint32Array(lines).map((_, i) => i);
  const next = random32(mib);
  for (let i = lines - 1; i > 0; i--) {
    const j = next() % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  for (let i = 0; i < lines; i++) words[order[i] * 16] = order[(i + 1) % lines] * 16;
  let p = 0;
  const start = process.cpuUsage();
  for (let i = 0; i < reads; i++) p = words[p];
  const used = process.cpuUsage(start);
  return ((used.user + used.system) * 1000) / reads + (p & 0);
}

export function hugePageBenchmarks(rounds = 7): void {
  console.log("Dependent random reads (ns each, median of 5) by working set, on 4 KiB / huge pages:");
  for (const mib of [1, 2, 4, 12, 64]) {
    const small: number[] = [];
    const huge: number[] = [];
    for (let i = 0; i < 5; i++) {
      small.push(chaseNs(mib, false, 2e6));
      huge.push(chaseNs(mib, true, 2e6));
    }
    console.log(`  ${String(mib).padStart(2)} MiB: ${median(small).toFixed(0)} / ${median(huge).toFixed(0)}`);
  }
  console.log("LPM tables on 4 KiB pages (A) and on transparent huge pages (B), 100k prefixes, addresses inside them;");
  console.log(`  CPU-time medians of ${rounds} alternating rounds, M lookups/s`);
  for (const [family, build] of [
    ["IPv4", ipv4Table],
    ["IPv6", ipv6Table],
  ] as const) {
    const a = build(false);
    const b = build(true);
    console.log(`${family}: ${b.hugeMiB} MiB of B's table on huge pages`);
    for (const batch of [64, 256]) {
      const calls = Math.round(2e6 / batch);
      rate(a, batch, calls >> 2);
      rate(b, batch, calls >> 2);
      const ra: number[] = [];
      const rb: number[] = [];
      for (let i = 0; i < rounds; i++) {
        ra.push(rate(a, batch, calls));
        rb.push(rate(b, batch, calls));
      }
      const [ma, mb] = [median(ra) / 1e6, median(rb) / 1e6];
      console.log(
        `  batch ${batch}: 4 KiB ${ma.toFixed(1)}, huge ${mb.toFixed(1)}, huge / 4 KiB ${(mb / ma).toFixed(2)}`,
      );
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) hugePageBenchmarks();
