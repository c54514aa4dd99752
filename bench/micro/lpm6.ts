// IPv6 LPM route table microbenchmarks, beside the IPv4 ones (lpm.ts): route6LookupBatch lookups
// per second with 10k and 100k prefixes, batches of 64 and 256, against the linear-scan reference.
// Tables: "random" (distinct prefixes, lengths uniform over 0..128, randomRules6, seeded) and
// "pods" (/64s of 2001:2:0:8000::/49, as an IPv6 pod network leases them).
// Addresses looked up: "uniform" over all of IPv6, or "inside prefixes" (a random rule, a random
// address in it). Each call takes the next batch of a 2^20-address pool (16 MiB).
// Runs in `npm run bench:micro`, or alone: `node dist/bench/micro/lpm6.js`.
import { pathToFileURL } from "node:url";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable6 } from "../../src/hotpath/route-table6.js";
import { parseIpv6, prefixMask6, writeIpv6 } from "../../src/net/ipv6.js";
import { random32 } from "../../test/reference/lpm.js";
import { ReferenceRouteTable6, random128, randomRules6, type Rule6 } from "../../test/reference/lpm6.js";
import { runMicroSuite, type MicroCase, type MicroResult } from "./suite.js";

const POOL = 1 << 20;
const MAX_NEXT_HOPS = 4096;
const ALL = (1n << 128n) - 1n;

type Workload = "uniform" | "inside prefixes";
type Shape = "random" | "pods";

/** n distinct pod /64s of 2001:2:0:8000::/49 (also for lpm6-ab.ts). */
export function podRules(count: number, next: () => number): Rule6[] {
  const net = parseIpv6("2001:2:0:8000::");
  const seen = new Set<bigint>();
  const rules: Rule6[] = [];
  while (rules.length < count) {
    const slot = (BigInt(next() & 0x7fff) << 32n) | BigInt(next()); // 2^47 /64s... of which the /49 has 2^15
    const addr = net | ((slot & 0x7fffn) << 64n);
    if (seen.has(addr)) continue;
    seen.add(addr);
    rules.push({ addr, len: 64, nh: next() % MAX_NEXT_HOPS });
  }
  return rules;
}

function addressPool(rules: Rule6[], workload: Workload, next: () => number): bigint[] {
  return Array.from({ length: POOL }, () => {
    if (workload === "uniform") return random128(next);
    const r = rules[next() % rules.length];
    return r.addr | (random128(next) & ~prefixMask6(r.len) & ALL);
  });
}

function suite(hp: HotPath, arena: Arena, shape: Shape, prefixes: number): { title: string; cases: MicroCase[] } {
  const next = random32(prefixes + (shape === "pods" ? 1 : 0));
  const rules = shape === "random" ? randomRules6(prefixes, MAX_NEXT_HOPS, next) : podRules(prefixes, next);
  const table = new RouteTable6(hp, arena, { maxRules: prefixes, maxNextHops: MAX_NEXT_HOPS });
  const reference = new ReferenceRouteTable6({ maxRules: prefixes, maxNextHops: MAX_NEXT_HOPS });
  for (const r of rules) {
    table.insert(r, r.nh);
    reference.insert(r.addr, r.len, r.nh);
  }
  const out = arena.alloc(256 * 4);
  const result: MicroCase[] = [];
  for (const workload of ["uniform", "inside prefixes"] as const) {
    const addrs = addressPool(rules, workload, next);
    const pool = arena.alloc(POOL * 16);
    const bytes = hp.bytes();
    addrs.forEach((a, i) => writeIpv6(bytes, pool + i * 16, a));
    // Sanity: the figures must measure correct answers.
    hp.fn.route6LookupBatch(table.base, pool, out, 256);
    const got = new Int32Array(hp.memory.buffer, out, 256);
    addrs.slice(0, 256).forEach((a, i) => {
      if (got[i] !== reference.lookup(a))
        throw new Error(`benchmark setup: lookup of ${a} gave ${got[i]}, reference ${reference.lookup(a)}`);
    });
    for (const batch of [64, 256]) {
      let at = 0;
      result.push({
        name: `wasm ${prefixes / 1000}k ${shape}, ${workload}, batch ${batch}`,
        perCall: batch,
        unit: "lookups",
        fn: () => {
          hp.fn.route6LookupBatch(table.base, pool + at * 16, out, batch);
          at = (at + batch) & (POOL - 1);
        },
      });
    }
    if (prefixes === 10_000 && shape === "random") {
      let at = 0;
      result.push({
        name: `reference ${prefixes / 1000}k ${shape}, ${workload}, batch 64`,
        perCall: 64,
        unit: "lookups",
        fn: () => {
          for (let i = 0; i < 64; i++) reference.lookup(addrs[at + i]);
          at = (at + 64) & (POOL - 1);
        },
      });
    }
  }
  const what = shape === "random" ? "random prefixes (lengths uniform 0..128)" : "pod /64s of 2001:2:0:8000::/49";
  // Memory: the region is sized for the worst case; the trie nodes are what this table uses of it.
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  const region = hp.fn.route6TableSize(prefixes, MAX_NEXT_HOPS);
  const nodes = hp.fn.route6Nodes(table.base);
  const leaves = hp.fn.route6Leaves(table.base);
  const unusedLeaves = Math.min(prefixes, 65536) + 1 - leaves;
  const used =
    region -
    (2 * prefixes + 1 - nodes) * hp.constant("ROUTE6_NODE_BYTES") -
    unusedLeaves * hp.constant("ROUTE6_LEAF_BYTES");
  return {
    title:
      `IPv6 LPM route table, ${prefixes / 1000}k ${what}; ${nodes} trie nodes, ${leaves} range leaves, ` +
      `${mib(used)} of ${mib(region)} MiB in use`,
    cases: result,
  };
}

export function lpm6Benchmarks(maxTime?: number): MicroResult[] {
  console.log(
    'IPv6 LPM workloads: "random" prefixes distinct with lengths uniform over 0..128, or "pods" (/64s of one /49);\n' +
      '  lookups of "uniform" addresses (all of IPv6) or "inside prefixes"; each call looks up the next batch of a\n' +
      "  2^20-address pool; the reference scans all rules per address.",
  );
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  const runs: Array<[Shape, number]> = [
    ["random", 10_000],
    ["random", 100_000],
    ["pods", 10_000],
  ];
  return runs.flatMap(([shape, prefixes]) => {
    const { title, cases } = suite(hp, arena, shape, prefixes);
    return runMicroSuite(title, cases, { maxTime });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) lpm6Benchmarks();
