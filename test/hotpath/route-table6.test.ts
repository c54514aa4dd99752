// The Wasm IPv6 route table (assembly/route6/) against the linear-scan reference
// (test/reference/lpm6.ts): random operation sequences on nested prefixes of every length 0..128,
// and on prefixes crowded into one /16 (the trie's splits and splices), compared after every step
// on return codes, exact gets, counts, single and batch lookups, the seqlock generation and the
// trie's node count (bounded by twice the long rules, all given back when they go); updates
// interleaved with batch lookups on a table large enough for the batch's level passes; then
// 100,000 random prefixes, capacity, and the next-hop record layout.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Arena } from "../../src/hotpath/arena.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable6 } from "../../src/hotpath/route-table6.js";
import { parseIpv6, parsePrefix6, prefixMask6, readIpv6, writeIpv6 } from "../../src/net/ipv6.js";
import { random32 } from "../reference/lpm.js";
import { ReferenceRouteTable6, random128, randomRules6, type Route6Limits } from "../reference/lpm6.js";
import { applyOp, routeOpArb, runDifferential, type Prefix } from "../support/route-differential.js";
import { routeResults } from "../support/route-results.js";

const hp = new HotPath(createHotPathMemory());
const arena = new Arena(hp);
const wasm = hp.fn;

/** Wasm code -> result name, from the module's ROUTE_OK / ROUTE_ERR_* exports. */
const result = routeResults(hp);

const MAX_PROBES = 4096;
const LEAF_RULES = hp.constant("ROUTE6_LEAF_RULES");
const scratch = arena.alloc(16, 16);
const probeIn = arena.alloc(MAX_PROBES * 16);
const probeOut = arena.alloc(MAX_PROBES * 4);
const ALL = (1n << 128n) - 1n;

/** A Wasm IPv6 table with the reference's interface (results as names). */
class WasmRouteTable6 {
  readonly t: number;

  constructor(readonly limits: Route6Limits) {
    this.t = arena.alloc(wasm.route6TableSize(limits.maxRules, limits.maxNextHops), hp.constant("ROUTE6_TABLE_ALIGN"));
    this.reset();
  }

  reset(): void {
    expect(result(wasm.route6TableInit(this.t, this.limits.maxRules, this.limits.maxNextHops))).toBe("ok");
  }

  private put(a: bigint): number {
    writeIpv6(hp.bytes(), scratch, a & ALL);
    return scratch;
  }

  insert = (a: bigint, len: number, nh: number) => result(wasm.route6Insert(this.t, this.put(a), len, nh));
  replace = (a: bigint, len: number, nh: number) => result(wasm.route6Replace(this.t, this.put(a), len, nh));
  delete = (a: bigint, len: number) => result(wasm.route6Delete(this.t, this.put(a), len));
  get = (a: bigint, len: number) => {
    const r = wasm.route6Get(this.t, this.put(a), len);
    return r >= 0 ? r : result(r);
  };
  lookup = (a: bigint) => wasm.route6Lookup(this.t, this.put(a));
  get count(): number {
    return wasm.route6Count(this.t);
  }
  get nodes(): number {
    return wasm.route6Nodes(this.t);
  }
  get leaves(): number {
    return wasm.route6Leaves(this.t);
  }
  generation = () => wasm.routeReadBegin(this.t);
  unchangedSince = (gen: number) => wasm.routeReadValid(this.t, gen) === 1;

  lookupBatch(addrs: bigint[]): number[] {
    addrs.forEach((a, i) => writeIpv6(hp.bytes(), probeIn + i * 16, a));
    wasm.route6LookupBatch(this.t, probeIn, probeOut, addrs.length);
    return [...new Int32Array(hp.memory.buffer, probeOut, addrs.length)];
  }
}

type Prefix6 = Prefix<bigint>;

const network = (addr: bigint, len: number): Prefix6 => ({ addr: addr & prefixMask6(len), len });
const lastAddress = (p: Prefix6) => p.addr | (~prefixMask6(p.len) & ALL);
const boundaries = (ps: Prefix6[]) =>
  ps.flatMap((p) => [p.addr, lastAddress(p), (p.addr - 1n) & ALL, (lastAddress(p) + 1n) & ALL]);

// Anchors make prefixes nest and share /16s: the pod range, both ends of the space, a /16 edge.
const ANCHORS = [
  "2001:2:0:8000::",
  "2001:2::",
  "2001:2:0:8001::",
  "::",
  "ffff:ffff:ffff:ffff::",
  "2001:ffff::",
  "fe80::",
].map(parseIpv6);
const bit = fc.integer({ min: 0, max: 127 }).map((b) => 1n << BigInt(b));
const addressArb = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(...ANCHORS), fc.array(bit, { maxLength: 3 }))
      .map(([a, bits]) => bits.reduce((x, b) => x ^ b, a)),
  },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: ALL }) },
);
// Lengths around the short table's edge (16), the pod lengths and the full range.
const lengthArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 20 }) },
  { weight: 3, arbitrary: fc.constantFrom(48, 49, 56, 63, 64, 65, 96, 127, 128) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 128 }) },
);
const prefixArb = fc.tuple(addressArb, lengthArb).map(([a, len]) => network(a, len));

function agreesOnOperationSequences(
  table: WasmRouteTable6,
  prefixes: fc.Arbitrary<Prefix6>,
  addresses: fc.Arbitrary<bigint>,
  poolSize: number,
): void {
  fc.assert(
    fc.property(
      fc.array(prefixes, { minLength: 1, maxLength: poolSize }),
      fc.array(routeOpArb(table.limits.maxNextHops, { addr: addresses, maxLen: 128 }), { maxLength: 40 }),
      fc.array(addresses, { maxLength: 16 }),
      (pool, ops, extra) => {
        const ref = new ReferenceRouteTable6(table.limits);
        runDifferential(table, ref, pool, ops, [...boundaries(pool), ...extra], () => {
          // Every node holds a rule longer than /16 or branches: fewer than twice those rules, none without.
          expect(table.nodes).toBeLessThanOrEqual(Math.max(0, 2 * ref.countLongerThan(16) - 1));
          // One leaf (or pair) for each /16 with few long rules, and old ones given back.
          expect(table.leaves).toBe(ref.sixteensWithLongRules(LEAF_RULES));
        });
      },
    ),
    { numRuns: 200 },
  );
}

// One /16 (2001::/16), lengths past it: nodes split where prefixes part and are spliced out again.
const crowdedAddressArb = fc
  .tuple(fc.constantFrom(parseIpv6("2001:2:0:8000::"), parseIpv6("2001:2::")), fc.array(bit, { maxLength: 4 }))
  .map(([a, bits]) => bits.reduce((x, b) => x ^ (b < 1n << 112n ? b : 0n), a));
const crowdedLengthArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 17, max: 128 }) },
  { weight: 2, arbitrary: fc.constantFrom(17, 20, 21, 48, 49, 52, 60, 61, 64, 124, 125, 128) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 16 }) },
);
const crowdedPrefixArb = fc.tuple(crowdedAddressArb, crowdedLengthArb).map(([a, len]) => network(a, len));

describe("IPv6 route table against the linear-scan reference", () => {
  const small = new WasmRouteTable6({ maxRules: 12, maxNextHops: 8 });
  const crowded = new WasmRouteTable6({ maxRules: 24, maxNextHops: 8 });

  it("agrees on random operation sequences over nested prefixes of all lengths", () => {
    agreesOnOperationSequences(small, prefixArb, addressArb, 16);
  });

  it("agrees on random operation sequences over prefixes crowded into one /16", () => {
    agreesOnOperationSequences(crowded, crowdedPrefixArb, crowdedAddressArb, 32);
  });

  it("agrees with updates interleaved with batch lookups on a table past the batch's in-cache size", () => {
    // The batch walks large tables level by level across its addresses; small ones as single lookups.
    const limits = { maxRules: 9000, maxNextHops: 4096 };
    const wt = new WasmRouteTable6(limits);
    const ref = new ReferenceRouteTable6(limits);
    const next = random32(0x1b6);
    const base = randomRules6(8000, limits.maxNextHops, next);
    for (const r of base) expect(wt.insert(r.addr, r.len, r.nh)).toBe(ref.insert(r.addr, r.len, r.nh));
    expect(wt.nodes * hp.constant("ROUTE6_NODE_BYTES")).toBeGreaterThan(hp.constant("ROUTE6_CACHED_BYTES"));
    // Most of its /16s have one rule or two, answered by leaves; the crowded one by its trie.
    expect(wt.leaves).toBe(ref.sixteensWithLongRules(LEAF_RULES));
    expect(wt.leaves).toBeGreaterThan(5000);
    const uniform = Array.from({ length: 2000 }, () => random128(next));
    fc.assert(
      fc.property(
        fc.array(crowdedPrefixArb, { minLength: 1, maxLength: 16 }),
        fc.array(routeOpArb(limits.maxNextHops, { addr: crowdedAddressArb, maxLen: 128 }), { maxLength: 12 }),
        (pool, ops) => {
          const probes = [...boundaries(pool), ...uniform.slice(0, 200), ...boundaries(base.slice(0, 50))];
          for (const op of ops) {
            expect(applyOp(wt, op, pool)).toEqual(applyOp(ref, op, pool));
            // The batch against the single lookups (another code path) on many addresses,
            // and against the reference (a scan of 8,000 rules per address) on the pool's edges.
            expect(wt.lookupBatch(probes)).toEqual(probes.map(wt.lookup));
            const edges = boundaries(pool);
            expect(wt.lookupBatch(edges)).toEqual(edges.map((a) => ref.lookup(a)));
          }
          for (const p of pool) expect(wt.delete(p.addr, p.len)).toEqual(ref.delete(p.addr, p.len));
          expect(wt.count).toBe(ref.count);
        },
      ),
      { numRuns: 25 },
    );
    // Everything the runs added is gone again: the trie is back to the base rules' nodes or fewer.
    expect(wt.nodes).toBeLessThanOrEqual(2 * ref.countLongerThan(16));
  });
});

describe("IPv6 route table: a /16 moving between its trie, a pair of leaves and a leaf", () => {
  it("answers as the reference at every range edge while its long rules come and go one by one", () => {
    const limits = { maxRules: 32, maxNextHops: 64 };
    const wt = new WasmRouteTable6(limits);
    const ref = new ReferenceRouteTable6(limits);
    const next = random32(0x1eaf);
    // Nested and disjoint rules of one /16, up to /128, under a /16 and a /0.
    const sixteen = parseIpv6("2001:2::");
    const rules = [
      { addr: 0n, len: 0 },
      { addr: sixteen, len: 16 },
      ...Array.from({ length: 10 }, () => {
        const len = 17 + (next() % 112);
        return network(sixteen | (random128(next) & ((1n << 112n) - 1n)), len);
      }),
      network(sixteen, 128),
      network(sixteen | ((1n << 112n) - 1n), 128),
      network(sixteen, 17),
      network(sixteen | (1n << 111n), 17),
    ].map((p, i) => ({ ...p, nh: i }));
    const probes = () => [
      ...boundaries(rules),
      ...Array.from({ length: 64 }, () => sixteen | (random128(next) >> 16n)),
    ];
    const agree = () => {
      const at = probes();
      const want = at.map((a) => ref.lookup(a));
      expect(at.map(wt.lookup)).toEqual(want);
      expect(wt.lookupBatch(at)).toEqual(want);
      expect(wt.leaves).toBe(ref.sixteensWithLongRules(LEAF_RULES));
    };
    for (const r of rules) {
      expect(wt.insert(r.addr, r.len, r.nh)).toBe(ref.insert(r.addr, r.len, r.nh));
      agree();
    }
    for (const r of rules) {
      expect(wt.replace(r.addr, r.len, (r.nh + 7) % 64)).toBe(ref.replace(r.addr, r.len, (r.nh + 7) % 64));
      agree();
    }
    for (const r of [...rules].reverse()) {
      expect(wt.delete(r.addr, r.len)).toBe(ref.delete(r.addr, r.len));
      agree();
    }
    expect(wt.leaves).toBe(0);
  });
});

describe("IPv6 route table at scale", () => {
  it("holds 100,000 random prefixes of lengths 0..128 and agrees with the reference", () => {
    const limits = { maxRules: 100_000, maxNextHops: 4096 };
    const wt = new WasmRouteTable6(limits);
    const ref = new ReferenceRouteTable6(limits);
    const next = random32(0x6eed);
    const rules = randomRules6(limits.maxRules, limits.maxNextHops, next);
    expect(rules.map((r) => wt.insert(r.addr, r.len, r.nh))).toEqual(rules.map((r) => ref.insert(r.addr, r.len, r.nh)));
    expect(wt.insert(random128(next), 128, 0)).toBe("full-rules");
    const compare = (present: Prefix6[]) => {
      expect(wt.count).toBe(ref.count);
      expect(wt.leaves).toBe(ref.sixteensWithLongRules(LEAF_RULES));
      // A linear-scan lookup costs 100k steps: a sample of boundaries plus uniform addresses.
      const probes = [
        ...boundaries(present.filter((_, i) => i % 2000 === 0)),
        ...Array.from({ length: 100 }, () => random128(next)),
      ];
      const want = probes.map((a) => ref.lookup(a));
      expect(probes.map(wt.lookup)).toEqual(want);
      expect(wt.lookupBatch(probes)).toEqual(want);
    };
    compare(rules);
    expect(rules.map((r) => wt.get(r.addr, r.len))).toEqual(rules.map((r) => r.nh));
    const half = rules.filter((_, i) => i % 2 === 0);
    expect(half.map((r) => wt.delete(r.addr, r.len))).toEqual(half.map((r) => ref.delete(r.addr, r.len)));
    compare(rules.filter((_, i) => i % 2 === 1));
    const rest = rules.filter((_, i) => i % 2 === 1);
    expect(rest.map((r) => wt.delete(r.addr, r.len))).toEqual(rest.map(() => "ok"));
    expect(wt.count).toBe(0);
    expect(wt.lookupBatch(Array.from({ length: 1000 }, () => random128(next))).every((nh) => nh === -1)).toBe(true);
  });
});

describe("IPv6 route table limits and records", () => {
  it("refuses regions and sizes it cannot use", () => {
    for (const [r, n] of [
      [0, 1],
      [(1 << 22) + 1, 1],
      [1, 0],
      [1, (1 << 24) + 1],
    ])
      expect(wasm.route6TableSize(r, n)).toBe(0);
    const size = wasm.route6TableSize(4, 4);
    const t = arena.alloc(size + 64, 64);
    expect(wasm.route6TableInit(t + 4, 4, 4)).toBe(hp.constant("ROUTE_ERR_BAD_REGION")); // misaligned
    expect(wasm.route6TableInit(hp.memory.buffer.byteLength - 64, 4, 4)).toBe(hp.constant("ROUTE_ERR_BAD_REGION"));
    expect(result(wasm.route6TableInit(t, 4, 4))).toBe("ok");
  });

  it("stores the 16-byte underlay, port and MAC of a next hop; the wrapper maps addresses and errors", () => {
    const table = new RouteTable6(hp, arena, { maxRules: 8, maxNextHops: 4 });
    const mac = Uint8Array.from([0x02, 0x42, 0xc6, 0x12, 0x00, 0x02]);
    table.setNextHop(3, { ip: parseIpv6("2001:2::2"), port: 8472, mac });
    const rec = wasm.nextHop6Ptr(table.base, 3);
    const bytes = hp.bytes();
    expect(readIpv6(bytes, rec + hp.constant("NEXT_HOP6_UNDERLAY"))).toBe(parseIpv6("2001:2::2"));
    expect(new DataView(hp.memory.buffer).getUint16(rec + hp.constant("NEXT_HOP6_PORT"), true)).toBe(8472);
    expect([...bytes.subarray(rec + hp.constant("NEXT_HOP6_MAC"), rec + hp.constant("NEXT_HOP6_MAC") + 6)]).toEqual([
      ...mac,
    ]);
    expect(new DataView(hp.memory.buffer).getUint32(rec + hp.constant("NEXT_HOP6_FLAGS"), true)).toBe(
      hp.constant("NEXT_HOP_VALID"),
    );
    table.insert(parsePrefix6("2001:2:0:8002::/64"), 3);
    expect(table.lookup(parseIpv6("2001:2:0:8002::5"))).toBe(3);
    expect(table.lookup(parseIpv6("2001:2:0:8003::5"))).toBeUndefined();
    expect(() => table.insert(parsePrefix6("2001:2:0:8002::/64"), 3)).toThrow(/ROUTE_ERR_EXISTS/);
    expect(() => table.setNextHop(4, { ip: 1n, port: 1, mac })).toThrow(/ROUTE_ERR_BAD_NEXT_HOP/);
    table.clearNextHop(3);
    expect(bytes.subarray(rec, rec + 32).every((b) => b === 0)).toBe(true);
    table.delete(parsePrefix6("2001:2:0:8002::/64"));
    expect(table.count).toBe(0);
  });
});
