// LPM route table microbenchmarks: routeLookupBatch lookups per second with 10k and 100k random
// prefixes, batches of 64 and 256, against the linear-scan TypeScript reference.
// Prefixes: distinct, lengths uniform over 0..32, addresses uniform (randomRules, seeded).
// Addresses looked up, two workloads: uniform over all of IPv4 (mostly one tbl24 read; the reads
// spread over the whole 64 MiB tbl24), and drawn inside the inserted prefixes (a random rule, a
// random address in it: about a quarter go through a tbl8 group). Each call takes the next batch
// from a pool of 2^20 addresses (4 MiB), so no batch finds the previous one's entries in cache.
// Runs in `npm run bench:micro`, or alone: `node dist/bench/micro/lpm.js`.
import { pathToFileURL } from "node:url";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { ReferenceRouteTable, random32, randomRules, type Rule } from "../../test/reference/lpm.js";
import { runMicroSuite, type MicroCase, type MicroResult } from "./suite.js";

const POOL = 1 << 20;
const MAX_NEXT_HOPS = 4096;
/** Enough tbl8 groups for 100k rules: about 38% are longer than /24, nearly all in distinct /24s. */
const TBL8_GROUPS = 65536;

type Workload = "uniform" | "inside prefixes";

function addressPool(rules: Rule[], workload: Workload, next: () => number): Uint32Array {
  const pool = new Uint32Array(POOL);
  for (let i = 0; i < POOL; i++) {
    if (workload === "uniform") {
      pool[i] = next();
    } else {
      const r = rules[next() % rules.length];
      const host = r.len === 0 ? next() : next() & (0xffffffff >>> r.len);
      pool[i] = (r.addr | host) >>> 0;
    }
  }
  return pool;
}

function suite(hp: HotPath, arena: Arena, prefixes: number): { title: string; cases: MicroCase[] } {
  const next = random32(prefixes);
  const rules = randomRules(prefixes, MAX_NEXT_HOPS, next);
  const long = rules.filter((r) => r.len > 24).length / prefixes;
  const t = arena.alloc(hp.fn.routeTableSize(TBL8_GROUPS, prefixes, MAX_NEXT_HOPS));
  hp.fn.routeTableInit(t, TBL8_GROUPS, prefixes, MAX_NEXT_HOPS);
  const reference = new ReferenceRouteTable({
    tbl8Groups: TBL8_GROUPS,
    maxRules: prefixes,
    maxNextHops: MAX_NEXT_HOPS,
  });
  for (const r of rules) {
    const code = hp.fn.routeInsert(t, r.addr, r.len, r.nh);
    if (code !== 0 || reference.insert(r.addr, r.len, r.nh) !== "ok")
      throw new Error(`benchmark setup: insert failed with ${code}`);
  }
  const out = arena.alloc(256 * 4);
  const result: MicroCase[] = [];
  for (const workload of ["uniform", "inside prefixes"] as const) {
    const addrs = addressPool(rules, workload, next);
    const pool = arena.alloc(POOL * 4);
    new Uint32Array(hp.memory.buffer, pool, POOL).set(addrs);
    // Sanity: the figures must measure correct answers.
    hp.fn.routeLookupBatch(t, pool, out, 256);
    const got = new Int32Array(hp.memory.buffer, out, 256);
    addrs.subarray(0, 256).forEach((a, i) => {
      if (got[i] !== reference.lookup(a))
        throw new Error(`benchmark setup: lookup of ${a} gave ${got[i]}, reference ${reference.lookup(a)}`);
    });
    for (const batch of [64, 256]) {
      let at = 0;
      result.push({
        name: `wasm ${prefixes / 1000}k prefixes, ${workload}, batch ${batch}`,
        perCall: batch,
        unit: "lookups",
        fn: () => {
          hp.fn.routeLookupBatch(t, pool + at * 4, out, batch);
          at = (at + batch) & (POOL - 1);
        },
      });
    }
    if (prefixes === 100_000 && workload === "uniform") {
      let at = 0;
      result.push({
        name: `wasm ${prefixes / 1000}k prefixes, ${workload}, one call per address`,
        perCall: 64,
        unit: "lookups",
        fn: () => {
          for (let i = 0; i < 64; i++) hp.fn.routeLookup(t, addrs[at + i]);
          at = (at + 64) & (POOL - 1);
        },
      });
    }
    if (prefixes === 10_000) {
      // The reference scans every rule per address: 10k rules are plenty to compare.
      let at = 0;
      result.push({
        name: `reference ${prefixes / 1000}k prefixes, ${workload}, batch 64`,
        perCall: 64,
        unit: "lookups",
        fn: () => {
          for (let i = 0; i < 64; i++) reference.lookup(addrs[at + i]);
          at = (at + 64) & (POOL - 1);
        },
      });
    }
  }
  const title = `LPM route table, ${prefixes / 1000}k random prefixes (lengths uniform 0..32, ${(long * 100).toFixed(0)}% longer than /24)`;
  return { title, cases: result };
}

export function lpmBenchmarks(maxTime?: number): MicroResult[] {
  console.log(
    "LPM workloads: prefixes distinct, lengths uniform over 0..32 (a repeated rule is redrawn), addresses uniform;\n" +
      '  lookups of "uniform" addresses (all of IPv4) or "inside prefixes" (a random inserted prefix, a random address in it);\n' +
      "  each call looks up the next batch of a 2^20-address pool; the reference scans all rules per address.",
  );
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  return [10_000, 100_000].flatMap((prefixes) => {
    const { title, cases } = suite(hp, arena, prefixes);
    return runMicroSuite(title, cases, { maxTime });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) lpmBenchmarks();
