// The route table tests' differential procedure, for either family: random operations on a pool
// of prefixes (and raw, mostly invalid, arguments) run on the Wasm table and the reference side by
// side, compared after every step on return codes, exact gets, counts, single and batch lookups
// and the seqlock generation; then every rule is deleted again, comparing, which leaves the table
// empty for the next run.
import fc from "fast-check";
import { expect } from "vitest";
import type { RouteResult } from "../reference/lpm.js";

export interface Prefix<A> {
  addr: A;
  len: number;
}

export type RouteOp<A> =
  | { kind: "insert" | "replace"; at: number; nh: number }
  | { kind: "delete" | "get"; at: number }
  // Arbitrary arguments, mostly invalid: bad lengths, host bits, next hops out of range.
  | { kind: "raw-insert" | "raw-replace"; addr: A; len: number; nh: number }
  | { kind: "raw-delete" | "raw-get"; addr: A; len: number };

/** What both tables answer, results as names. */
export interface ComparedTable<A> {
  insert(addr: A, len: number, nh: number): RouteResult;
  replace(addr: A, len: number, nh: number): RouteResult;
  delete(addr: A, len: number): RouteResult;
  get(addr: A, len: number): number | RouteResult;
  lookup(addr: A): number;
  readonly count: number;
}

export interface WasmTable<A> extends ComparedTable<A> {
  readonly limits: { maxNextHops: number };
  reset(): void;
  lookupBatch(addrs: A[]): number[];
  generation(): number;
  unchangedSince(gen: number): boolean;
}

/** Operations on a pool of prefixes (indexed modulo its size) and raw ones with `raw`'s addresses. */
export function routeOpArb<A>(
  maxNextHops: number,
  raw: { addr: fc.Arbitrary<A>; maxLen: number },
): fc.Arbitrary<RouteOp<A>> {
  const at = fc.nat({ max: 1000 });
  const nh = fc.integer({ min: 0, max: maxNextHops - 1 });
  const args = {
    addr: raw.addr,
    len: fc.integer({ min: -2, max: raw.maxLen + 2 }),
    nh: fc.integer({ min: -2, max: maxNextHops + 1 }),
  };
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant("insert" as const), at, nh }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("replace" as const), at, nh }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("delete" as const), at }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("get" as const), at }) },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constantFrom("raw-insert" as const, "raw-replace" as const), ...args }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constantFrom("raw-delete" as const, "raw-get" as const),
        addr: args.addr,
        len: args.len,
      }),
    },
  );
}

/** Applies op to a table; pool-indexed ops pick their prefix from the pool. */
export function applyOp<A>(table: ComparedTable<A>, op: RouteOp<A>, pool: Prefix<A>[]): number | RouteResult {
  switch (op.kind) {
    case "insert":
    case "replace": {
      const p = pool[op.at % pool.length];
      return table[op.kind](p.addr, p.len, op.nh);
    }
    case "delete":
    case "get": {
      const p = pool[op.at % pool.length];
      return table[op.kind](p.addr, p.len);
    }
    case "raw-insert":
    case "raw-replace":
      return table[op.kind === "raw-insert" ? "insert" : "replace"](op.addr, op.len, op.nh);
    case "raw-delete":
    case "raw-get":
      return table[op.kind === "raw-delete" ? "delete" : "get"](op.addr, op.len);
  }
}

/** Everything observable must agree: count, every pool rule's get, lookups single and batched. */
export function expectSame<A>(wt: WasmTable<A>, ref: ComparedTable<A>, pool: Prefix<A>[], probes: A[]): void {
  expect(wt.count).toBe(ref.count);
  for (const p of pool) expect(wt.get(p.addr, p.len), `get ${p.addr}/${p.len}`).toEqual(ref.get(p.addr, p.len));
  const want = probes.map((a) => ref.lookup(a));
  expect(
    probes.map((a) => wt.lookup(a)),
    "lookup",
  ).toEqual(want);
  expect(wt.lookupBatch(probes), "lookupBatch").toEqual(want);
}

/**
 * Runs ops on `wt` and a fresh reference side by side, comparing after each (and running the
 * table's own `afterStep` check); then deletes every rule.
 */
export function runDifferential<A>(
  wt: WasmTable<A>,
  ref: ComparedTable<A> & { list(): Prefix<A>[] },
  pool: Prefix<A>[],
  ops: RouteOp<A>[],
  probes: A[],
  afterStep?: () => void,
): void {
  if (wt.count !== 0) wt.reset(); // a failed (shrinking) run may have left rules behind
  const step = (op: RouteOp<A>) => {
    const before = wt.generation();
    const got = applyOp(wt, op, pool);
    expect(
      got,
      JSON.stringify(op, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)),
    ).toEqual(applyOp(ref, op, pool));
    const mutated = got === "ok" && op.kind !== "get" && op.kind !== "raw-get";
    // Even (no writer inside), and moved on exactly by the mutations.
    expect(wt.unchangedSince(before)).toBe(!mutated);
    expect(wt.generation()).toBe((before + (mutated ? 2 : 0)) >>> 0);
    expectSame(wt, ref, pool, probes);
    afterStep?.();
  };
  ops.forEach(step);
  for (const r of ref.list()) step({ kind: "raw-delete", addr: r.addr, len: r.len });
  expect(wt.count).toBe(0);
}
