// Reference route tables, written the plain way: a list of rules, and longest-prefix match by
// scanning all of them (PrefixRuleTable, for either family; lpm6.ts is the IPv6 one). The IPv4
// one also states the Wasm table's capacity rules (rule count, and one tbl8 group per /24 holding
// a prefix longer than /24) so that full-table answers can be compared.
import { prefixMask } from "../../src/net/ipv4.js";

/** Outcome of a table operation: the Wasm ROUTE_OK / ROUTE_ERR_* names, lower-case with dashes. */
export type RouteResult =
  | "ok"
  | "exists"
  | "not-found"
  | "bad-prefix"
  | "bad-length"
  | "bad-next-hop"
  | "full-rules"
  | "full-tbl8";

export interface RouteLimits {
  tbl8Groups: number;
  maxRules: number;
  maxNextHops: number;
}

export interface Rule {
  /** Network address, unsigned. */
  addr: number;
  len: number;
  nh: number;
}

const key = (addr: number | bigint, len: number) => `${addr}/${len}`;

/** What a family's table needs of its addresses. */
export interface PrefixFamily<A extends number | bigint> {
  readonly maxLen: number;
  /** `addr` with the bits past `len` cleared. */
  network(addr: A, len: number): A;
  /** Whether `addr` has bits set past `len`. */
  hostBits(addr: A, len: number): boolean;
}

/** The rules of one address family and longest-prefix match over them, by scanning; the IPv4 and
 *  IPv6 references add only their own capacity rules. */
export class PrefixRuleTable<A extends number | bigint> {
  private readonly rules = new Map<string, { addr: A; len: number; nh: number }>();

  constructor(
    private readonly family: PrefixFamily<A>,
    readonly limits: { maxRules: number; maxNextHops: number },
  ) {}

  get count(): number {
    return this.rules.size;
  }

  /** The rules, in insertion order. */
  list(): Array<{ addr: A; len: number; nh: number }> {
    return [...this.rules.values()];
  }

  insert(addr: A, len: number, nh: number): RouteResult {
    const bad = this.checkPrefix(addr, len) ?? this.checkNextHop(nh);
    if (bad) return bad;
    if (this.rules.has(key(addr, len))) return "exists";
    return this.add(addr, len, nh);
  }

  /** Sets the rule's next hop, adding the rule if it is absent (`ip route replace`). */
  replace(addr: A, len: number, nh: number): RouteResult {
    const bad = this.checkPrefix(addr, len) ?? this.checkNextHop(nh);
    if (bad) return bad;
    const rule = this.rules.get(key(addr, len));
    if (!rule) return this.add(addr, len, nh);
    rule.nh = nh;
    return "ok";
  }

  delete(addr: A, len: number): RouteResult {
    const bad = this.checkPrefix(addr, len);
    if (bad) return bad;
    if (!this.rules.delete(key(addr, len))) return "not-found";
    this.removed(addr, len);
    return "ok";
  }

  /** Next hop of the exact rule, or why there is none. */
  get(addr: A, len: number): number | RouteResult {
    return this.checkPrefix(addr, len) ?? this.rules.get(key(addr, len))?.nh ?? "not-found";
  }

  /** Next hop of the longest rule covering addr, or -1. */
  lookup(addr: A): number {
    let best = -1;
    let bestLen = -1;
    for (const rule of this.rules.values()) {
      if (rule.len > bestLen && this.family.network(addr, rule.len) === rule.addr) {
        best = rule.nh;
        bestLen = rule.len;
      }
    }
    return best;
  }

  /** Whether a new rule fits besides the rule count (undefined: it does). */
  protected full(_addr: A, _len: number): RouteResult | undefined {
    return undefined;
  }

  protected added(_addr: A, _len: number): void {}

  protected removed(_addr: A, _len: number): void {}

  private add(addr: A, len: number, nh: number): RouteResult {
    if (this.rules.size >= this.limits.maxRules) return "full-rules";
    const full = this.full(addr, len);
    if (full) return full;
    this.rules.set(key(addr, len), { addr, len, nh });
    this.added(addr, len);
    return "ok";
  }

  private checkPrefix(addr: A, len: number): RouteResult | undefined {
    if (!Number.isInteger(len) || len < 0 || len > this.family.maxLen) return "bad-length";
    return this.family.hostBits(addr, len) ? "bad-prefix" : undefined;
  }

  private checkNextHop(nh: number): RouteResult | undefined {
    return Number.isInteger(nh) && nh >= 0 && nh < this.limits.maxNextHops ? undefined : "bad-next-hop";
  }
}

const IPV4: PrefixFamily<number> = {
  maxLen: 32,
  network: (addr, len) => (addr & prefixMask(len)) >>> 0,
  hostBits: (addr, len) => (addr & ~prefixMask(len)) !== 0,
};

/** The IPv4 reference, with the Wasm table's tbl8 rule. */
export class ReferenceRouteTable extends PrefixRuleTable<number> {
  /** Rules longer than /24 per /24 (addr >>> 8): each such /24 needs its own tbl8 group. */
  private readonly longRules = new Map<number, number>();

  constructor(override readonly limits: RouteLimits) {
    super(IPV4, limits);
  }

  protected override full(addr: number, len: number): RouteResult | undefined {
    if (len > 24 && !this.longRules.has(addr >>> 8) && this.longRules.size >= this.limits.tbl8Groups)
      return "full-tbl8";
    return undefined;
  }

  protected override added(addr: number, len: number): void {
    if (len > 24) this.countLong(addr, +1);
  }

  protected override removed(addr: number, len: number): void {
    if (len > 24) this.countLong(addr, -1);
  }

  private countLong(addr: number, change: number): void {
    const n = (this.longRules.get(addr >>> 8) ?? 0) + change;
    if (n === 0) this.longRules.delete(addr >>> 8);
    else this.longRules.set(addr >>> 8, n);
  }
}

// Random route sets, shared by the large tests and the benchmarks so that both mean the same thing
// by "N random prefixes".

/** Deterministic pseudo-random u32s (mulberry32): a run can be replayed from its seed. */
export function random32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (z ^ (z >>> 14)) >>> 0;
  };
}

/** `count` distinct rules, each drawn by `draw` (a repeated rule is drawn again), with next hops
 *  uniform below maxNextHops. */
export function distinctRules<A extends number | bigint>(
  count: number,
  maxNextHops: number,
  next: () => number,
  draw: () => { addr: A; len: number },
): Array<{ addr: A; len: number; nh: number }> {
  const seen = new Set<string>();
  const rules: Array<{ addr: A; len: number; nh: number }> = [];
  while (rules.length < count) {
    const { addr, len } = draw();
    if (seen.has(key(addr, len))) continue;
    seen.add(key(addr, len));
    rules.push({ addr, len, nh: next() % maxNextHops });
  }
  return rules;
}

/**
 * count distinct rules: lengths drawn uniformly over 0..32, addresses and next hops uniform. A draw
 * that repeats a rule is redrawn, so the short lengths, which have few prefixes, run out (for 100k
 * rules every prefix of length <= 9 is in) and the longer ones take their share: about 38% of
 * 100k rules are longer than /24.
 */
export function randomRules(count: number, maxNextHops: number, next: () => number): Rule[] {
  return distinctRules(count, maxNextHops, next, () => {
    const len = next() % 33;
    return { addr: (next() & prefixMask(len)) >>> 0, len };
  });
}
