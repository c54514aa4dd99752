// The Wasm route table (assembly/route/) against the linear-scan reference (test/reference/lpm.ts):
// random operation sequences on overlapping prefixes of every length, compared after every step on
// return codes, exact gets, counts, single and batch lookups and the seqlock generation; then
// 100,000 prefixes, capacity limits, next-hop records and a reader thread racing a writer.
import fc from "fast-check";
import { Worker } from "node:worker_threads";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { prefixMask } from "../../src/net/ipv4.js";
import { projectFile } from "../../src/paths.js";
import { ReferenceRouteTable, random32, randomRules, type RouteLimits } from "../reference/lpm.js";
import {
  routeOpArb,
  runDifferential as differential,
  type Prefix as RoutePrefix,
  type RouteOp,
} from "../support/route-differential.js";
import { routeResults } from "../support/route-results.js";

const hp = new HotPath(createHotPathMemory());
const arena = new Arena(hp);
const wasm = hp.fn;

/** Wasm code -> result name, from the module's ROUTE_OK / ROUTE_ERR_* exports. */
const result = routeResults(hp);

/** Room for batch lookups, shared by all tables. */
const MAX_PROBES = 4096;
const probeIn = arena.alloc(MAX_PROBES * 4);
const probeOut = arena.alloc(MAX_PROBES * 4);

/** A Wasm table with the reference's interface (results as names). */
class WasmRouteTable {
  readonly t: number;

  constructor(readonly limits: RouteLimits) {
    const bytes = wasm.routeTableSize(limits.tbl8Groups, limits.maxRules, limits.maxNextHops);
    this.t = arena.alloc(bytes, hp.constant("ROUTE_TABLE_ALIGN"));
    this.reset();
  }

  reset(): void {
    const code = wasm.routeTableInit(this.t, this.limits.tbl8Groups, this.limits.maxRules, this.limits.maxNextHops);
    expect(result(code)).toBe("ok");
  }

  insert = (addr: number, len: number, nh: number) => result(wasm.routeInsert(this.t, addr, len, nh));
  replace = (addr: number, len: number, nh: number) => result(wasm.routeReplace(this.t, addr, len, nh));
  delete = (addr: number, len: number) => result(wasm.routeDelete(this.t, addr, len));
  get = (addr: number, len: number) => {
    const r = wasm.routeGet(this.t, addr, len);
    return r >= 0 ? r : result(r);
  };
  lookup = (addr: number) => wasm.routeLookup(this.t, addr);
  get count(): number {
    return wasm.routeCount(this.t);
  }
  generation = () => wasm.routeReadBegin(this.t);
  unchangedSince = (gen: number) => wasm.routeReadValid(this.t, gen) === 1;

  lookupBatch(addrs: number[]): number[] {
    new Uint32Array(hp.memory.buffer, probeIn, addrs.length).set(addrs);
    wasm.routeLookupBatch(this.t, probeIn, probeOut, addrs.length);
    return [...new Int32Array(hp.memory.buffer, probeOut, addrs.length)];
  }
}

type Prefix = RoutePrefix<number>;

const network = (addr: number, len: number): Prefix => ({ addr: (addr & prefixMask(len)) >>> 0, len });
const lastAddress = (p: Prefix) => (p.addr | ~prefixMask(p.len)) >>> 0;

/** Addresses where answers change: both ends of each prefix and their outside neighbours. */
function boundaries(prefixes: Prefix[]): number[] {
  return prefixes.flatMap((p) => [p.addr, lastAddress(p), (p.addr - 1) >>> 0, (lastAddress(p) + 1) >>> 0]);
}

// Addresses cluster near a few anchors so that prefixes overlap, nest and share /24s; the anchors
// include both ends of the address space.
const ANCHORS = [0x00000000, 0x0a000000, 0x0a0001f0, 0x0a0100ff, 0xc0a80100, 0x7fffff80, 0x80000000, 0xffffff00];
const addressArb = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(...ANCHORS), fc.integer({ min: 0, max: 0x3ff }))
      .map(([a, off]) => (a + off) >>> 0),
  },
  { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
);
// Mostly lengths around /24 (tbl8 groups appear, fill and fold back); short prefixes rewrite up to
// 2^24 tbl24 entries each, so they come less often.
const lengthArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 22, max: 32 }) },
  { weight: 3, arbitrary: fc.integer({ min: 8, max: 21 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) },
);
const prefixArb = fc.oneof(
  { weight: 30, arbitrary: fc.tuple(addressArb, lengthArb).map(([a, len]) => network(a, len)) },
  { weight: 1, arbitrary: fc.constant(network(0, 0)) }, // the default route
);

const opArb = (maxNextHops: number) =>
  routeOpArb(maxNextHops, { addr: fc.oneof(addressArb, fc.nat({ max: 0xffffffff })), maxLen: 32 });

/** The differential run against a fresh reference (test/support/route-differential.ts). */
const runDifferential = (wt: WasmRouteTable, pool: Prefix[], ops: RouteOp<number>[], probes: number[]) =>
  differential(wt, new ReferenceRouteTable(wt.limits), pool, ops, probes);

describe("route table against the linear-scan reference", () => {
  // Small capacities, so that full-rules and full-tbl8 come up in random runs.
  const small = new WasmRouteTable({ tbl8Groups: 3, maxRules: 12, maxNextHops: 8 });

  it("agrees on random operation sequences over overlapping prefixes of all lengths", () => {
    fc.assert(
      fc.property(
        fc.array(prefixArb, { minLength: 1, maxLength: 16 }),
        fc.array(opArb(small.limits.maxNextHops), { maxLength: 40 }),
        fc.array(addressArb, { maxLength: 16 }),
        (pool, ops, extra) => runDifferential(small, pool, ops, [...boundaries(pool), ...extra]),
      ),
      { numRuns: 150 },
    );
  });

  it("agrees while one /24 fills with /25../32 prefixes, its group folds back and is reused", () => {
    // One group only: a long prefix in a second /24 fits exactly when the first /24 holds none.
    const one = new WasmRouteTable({ tbl8Groups: 1, maxRules: 400, maxNextHops: 16 });
    const home = 0x0a010200;
    const other = 0x0a010300;
    const inHome = fc
      .tuple(fc.integer({ min: 24, max: 32 }), fc.nat({ max: 255 }))
      .map(([len, h]) => network(home + h, len));
    const covering = fc.constantFrom(network(home, 8), network(home, 16), network(home, 23));
    const inOther = fc
      .tuple(fc.integer({ min: 25, max: 32 }), fc.nat({ max: 255 }))
      .map(([len, h]) => network(other + h, len));
    const prefix = fc.oneof(
      { weight: 12, arbitrary: inHome },
      { weight: 1, arbitrary: covering },
      { weight: 1, arbitrary: inOther },
    );
    const op = fc.oneof(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant("insert" as const), p: prefix, nh: fc.nat({ max: 15 }) }) },
      {
        weight: 1,
        arbitrary: fc.record({ kind: fc.constant("replace" as const), p: prefix, nh: fc.nat({ max: 15 }) }),
      },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant("delete" as const), p: prefix }) },
    );
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 50, maxLength: 250 }),
        fc.array(fc.nat({ max: 255 }), { maxLength: 8 }),
        (ops, hosts) => {
          // Each op's prefix joins the pool, so exact gets cover all of them.
          const pool = ops.map((o) => o.p);
          const indexed: RouteOp<number>[] = ops.map((o, at) =>
            o.kind === "delete" ? { kind: o.kind, at } : { kind: o.kind, at, nh: o.nh },
          );
          // Every address of the /24, and around it and the other /24.
          const probes = [
            ...Array.from({ length: 256 }, (_, h) => home + h),
            home - 1,
            home + 256,
            ...hosts.map((h) => other + h),
          ];
          runDifferential(one, pool, indexed, probes);
        },
      ),
      { numRuns: 12 },
    );
  });
});

describe("route table at scale", () => {
  it("holds 100,000 random prefixes of lengths 0..32 and agrees with the reference", () => {
    const limits = { tbl8Groups: 65536, maxRules: 100_000, maxNextHops: 4096 };
    const wt = new WasmRouteTable(limits);
    const ref = new ReferenceRouteTable(limits);
    const next = random32(0x5eed);
    const rules = randomRules(limits.maxRules, limits.maxNextHops, next);
    // Compared as whole arrays: one expect per step keeps the test fast.
    expect(rules.map((r) => wt.insert(r.addr, r.len, r.nh))).toEqual(rules.map((r) => ref.insert(r.addr, r.len, r.nh)));
    let absent = network(next(), 32);
    while (ref.get(absent.addr, absent.len) !== "not-found") absent = network(next(), 32);
    expect(wt.insert(absent.addr, 32, 0)).toBe("full-rules");
    expect(ref.insert(absent.addr, 32, 0)).toBe("full-rules");
    const compare = () => {
      const present = ref.list();
      expect(wt.count).toBe(ref.count);
      expect(present.map((r) => wt.get(r.addr, r.len))).toEqual(present.map((r) => r.nh));
      // A linear-scan lookup costs 100k steps: a sample of boundaries plus uniform addresses.
      const probes = [...boundaries(present.filter((_, i) => i % 2000 === 0)), ...Array.from({ length: 100 }, next)];
      const want = probes.map((a) => ref.lookup(a));
      expect(probes.map(wt.lookup)).toEqual(want);
      expect(wt.lookupBatch(probes)).toEqual(want);
    };
    compare();
    const half = rules.filter((_, i) => i % 2 === 0);
    expect(half.map((r) => wt.delete(r.addr, r.len))).toEqual(half.map((r) => ref.delete(r.addr, r.len)));
    expect(half.map((r) => wt.get(r.addr, r.len))).toEqual(half.map(() => "not-found"));
    compare();
    const rest = ref.list();
    expect(rest.map((r) => wt.delete(r.addr, r.len))).toEqual(rest.map(() => "ok"));
    expect(wt.count).toBe(0);
    expect(wt.lookupBatch(Array.from({ length: 1000 }, next)).every((nh) => nh === -1)).toBe(true);
  });
});

describe("route table limits and errors", () => {
  it("rejects inserts beyond capacity and leaves the table unchanged", () => {
    const wt = new WasmRouteTable({ tbl8Groups: 2, maxRules: 5, maxNextHops: 4 });
    const a = 0x0a000000;
    const b = 0x0a000100;
    const c = 0x0a000200;
    for (const [addr, len] of [
      [a, 25],
      [a + 128, 26],
      [b, 32],
      [0, 0],
    ])
      expect(wt.insert(addr, len, 1)).toBe("ok");
    const probes = [a, a + 128, a + 200, b, b + 1, c, 0xffffffff];
    const before = { gen: wt.generation(), answers: wt.lookupBatch(probes) };
    expect(wt.insert(c, 25, 2)).toBe("full-tbl8"); // a third /24 with a long prefix
    expect(wt.replace(c, 25, 2)).toBe("full-tbl8");
    expect(wt.insert(c, 24, 2)).toBe("ok"); // needs no group
    expect(wt.insert(c + 64, 26, 2)).toBe("full-rules");
    expect(wt.replace(a, 25, 3)).toBe("ok"); // an existing rule needs no room
    expect(wt.delete(c, 24)).toBe("ok");
    expect(wt.replace(a, 25, 1)).toBe("ok");
    expect(wt.lookupBatch(probes)).toEqual(before.answers);
    expect(wt.generation()).toBe(before.gen + 8); // four successful mutations, no failed one counted
    // Once /24 a holds no long prefix, its group folds back and c can have it.
    expect(wt.delete(a, 25)).toBe("ok");
    expect(wt.insert(c, 25, 2)).toBe("full-tbl8");
    expect(wt.delete(a + 128, 26)).toBe("ok");
    expect(wt.insert(c, 25, 2)).toBe("ok");
    expect(wt.lookupBatch([a, c, c + 128])).toEqual([1, 2, 1]);
  });

  it("refuses regions it cannot use", () => {
    const size = wasm.routeTableSize(1, 1, 1);
    expect(size).toBeGreaterThan(64 << 20);
    for (const bad of [
      [(1 << 20) + 1, 1, 1],
      [1, 0, 1],
      [1, (1 << 22) + 1, 1],
      [1, 1, 0],
      [1, 1, (1 << 24) + 1],
    ]) {
      expect(wasm.routeTableSize(bad[0], bad[1], bad[2]), JSON.stringify(bad)).toBe(0);
    }
    const badRegion = hp.constant("ROUTE_ERR_BAD_REGION");
    const t = arena.alloc(size + 64, hp.constant("ROUTE_TABLE_ALIGN"));
    expect(wasm.routeTableInit(t + 4, 1, 1, 1)).toBe(badRegion); // misaligned
    expect(wasm.routeTableInit(t, (1 << 20) + 1, 1, 1)).toBe(badRegion);
    const end = hp.memory.buffer.byteLength;
    expect(wasm.routeTableInit(end - 64, 1, 1, 1)).toBe(badRegion); // reaches past memory
    expect(result(wasm.routeTableInit(t, 1, 1, 1))).toBe("ok");
  });
});

describe("next-hop records", () => {
  const limits = { tbl8Groups: 1, maxRules: 4, maxNextHops: 8 };
  const wt = new WasmRouteTable(limits);

  /** The record bytes, and the bytes just around the record array (which must never change). */
  const record = (i: number) =>
    new Uint8Array(hp.memory.buffer.slice(wasm.nextHopPtr(wt.t, i), wasm.nextHopPtr(wt.t, i) + 16));
  const around = () => [record(-1), record(limits.maxNextHops)];

  it("stores underlay address, port and MAC in the documented layout", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: limits.maxNextHops - 1 }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffff }),
        fc.uint8Array({ minLength: 6, maxLength: 6 }),
        (i, ip, port, mac) => {
          const gen = wt.generation();
          const macLo = ((mac[2] << 24) | (mac[3] << 16) | (mac[4] << 8) | mac[5]) >>> 0;
          expect(result(wasm.nextHopSet(wt.t, i, ip, port, (mac[0] << 8) | mac[1], macLo))).toBe("ok");
          const r = record(i);
          const view = new DataView(r.buffer);
          expect(view.getUint32(hp.constant("NEXT_HOP_UNDERLAY"), true)).toBe(ip);
          expect(view.getUint16(hp.constant("NEXT_HOP_PORT"), true)).toBe(port);
          expect([...r.subarray(hp.constant("NEXT_HOP_MAC"), hp.constant("NEXT_HOP_MAC") + 6)]).toEqual([...mac]);
          expect(view.getUint32(hp.constant("NEXT_HOP_FLAGS"), true)).toBe(hp.constant("NEXT_HOP_VALID"));
          expect(wt.generation()).toBe(gen + 2);
          expect(result(wasm.nextHopClear(wt.t, i))).toBe("ok");
          expect(record(i).every((byte) => byte === 0)).toBe(true);
          expect(wt.generation()).toBe(gen + 4);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("rejects indices and fields out of range without writing anything", () => {
    const outside = around();
    const gen = wt.generation();
    const badIndex = hp.constant("ROUTE_ERR_BAD_NEXT_HOP");
    const badField = hp.constant("ROUTE_ERR_BAD_FIELD");
    for (const i of [-1, limits.maxNextHops, limits.maxNextHops + 1, 0x7fffffff, -0x80000000]) {
      expect(wasm.nextHopSet(wt.t, i, 1, 2, 3, 4)).toBe(badIndex);
      expect(wasm.nextHopClear(wt.t, i)).toBe(badIndex);
    }
    expect(wasm.nextHopSet(wt.t, 0, 1, 0x10000, 3, 4)).toBe(badField);
    expect(wasm.nextHopSet(wt.t, 0, 1, 2, 0x10000, 4)).toBe(badField);
    expect(record(0).every((byte) => byte === 0)).toBe(true);
    expect(around()).toEqual(outside);
    expect(wt.generation()).toBe(gen);
    // Routes refuse next hops the table has no record for.
    expect(wt.insert(0x0a000000, 8, limits.maxNextHops)).toBe("bad-next-hop");
    expect(wt.insert(0x0a000000, 8, -1)).toBe("bad-next-hop");
  });
});

describe("publication to reader threads", () => {
  it("gives a reader racing a writer only whole snapshots (seqlock)", async () => {
    // The writer flips one /8 between next hops 1 and 2: each flip rewrites 65,536 tbl24 entries,
    // so a reader seeing a half-done flip would find both next hops in one batch.
    const wt = new WasmRouteTable({ tbl8Groups: 4, maxRules: 8, maxNextHops: 4 });
    const net = 0x0a000000;
    expect(wt.insert(net, 8, 1)).toBe("ok");
    // Long batches spread over the whole /8, so that flips often start while a batch runs.
    const n = MAX_PROBES;
    const addrs = arena.alloc(n * 4);
    const out = arena.alloc(n * 4);
    new Uint32Array(hp.memory.buffer, addrs, n).set(Array.from({ length: n }, (_, i) => net + i * 4096 + (i & 4095)));
    // [0] stop flag (writer -> reader), [1] batches done (reader -> writer)
    const control = arena.alloc(8);
    const reader = new Worker(
      `const { workerData, parentPort } = require("node:worker_threads");
       const { module, memory, t, addrs, out, n, control } = workerData;
       const { routeLookupBatch } = new WebAssembly.Instance(module, { env: { memory } }).exports;
       const ctl = new Int32Array(memory.buffer, control, 2);
       const seen = new Set();
       let mixed = 0;
       while (Atomics.load(ctl, 0) === 0) {
         routeLookupBatch(t, addrs, out, n);
         const r = new Int32Array(memory.buffer, out, n);
         seen.add(r[0]);
         if (r.some((x) => x !== r[0])) mixed++;
         Atomics.add(ctl, 1, 1);
       }
       parentPort.postMessage({ mixed, seen: [...seen] });`,
      {
        eval: true,
        workerData: {
          module: new WebAssembly.Module(readFileSync(projectFile("build", "weft.wasm"))),
          memory: hp.memory,
          t: wt.t,
          addrs,
          out,
          n,
          control,
        },
      },
    );
    const report = new Promise<{ mixed: number; seen: number[] }>((resolve, reject) => {
      reader.once("message", resolve);
      reader.once("error", reject);
    });
    const ctl = new Int32Array(hp.memory.buffer, control, 2);
    // Each flip waits for one more reader batch, so the reader keeps up. Bounded in time too (on a
    // loaded machine the two threads may rarely run at once), but a run cut short by the deadline
    // before 100 flips raced too little to show anything, and fails.
    const deadline = Date.now() + 10_000;
    let flips = 0;
    while (flips < 400 && Date.now() < deadline) {
      const batches = Atomics.load(ctl, 1);
      expect(wt.replace(net, 8, 2 - (++flips & 1))).toBe("ok");
      while (Atomics.load(ctl, 1) === batches && Date.now() < deadline);
    }
    Atomics.store(ctl, 0, 1);
    const { mixed, seen } = await report;
    await reader.terminate();
    expect(flips).toBeGreaterThanOrEqual(100);
    expect(mixed).toBe(0);
    expect(seen.sort()).toEqual([1, 2]); // the reader did see the writer's flips
  });
});
