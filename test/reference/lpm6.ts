// Reference IPv6 route table, the plain way: a map of rules and longest-prefix match by scanning
// all of them, with bigint addresses. Results are named like the IPv4 reference's (lpm.ts).
import { prefixMask6 } from "../../src/net/ipv6.js";
import type { RouteResult } from "./lpm.js";

export interface Rule6 {
  addr: bigint;
  len: number;
  nh: number;
}

export interface Route6Limits {
  maxRules: number;
  maxNextHops: number;
}

const key = (addr: bigint, len: number) => `${addr}/${len}`;

export class ReferenceRouteTable6 {
  private readonly rules = new Map<string, Rule6>();

  constructor(readonly limits: Route6Limits) {}

  get count(): number {
    return this.rules.size;
  }

  /** Rules longer than len. */
  countLongerThan(len: number): number {
    let n = 0;
    for (const r of this.rules.values()) if (r.len > len) n++;
    return n;
  }

  insert(addr: bigint, len: number, nh: number): RouteResult {
    const bad = this.checkPrefix(addr, len) ?? this.checkNextHop(nh);
    if (bad) return bad;
    if (this.rules.has(key(addr, len))) return "exists";
    return this.add(addr, len, nh);
  }

  replace(addr: bigint, len: number, nh: number): RouteResult {
    const bad = this.checkPrefix(addr, len) ?? this.checkNextHop(nh);
    if (bad) return bad;
    const rule = this.rules.get(key(addr, len));
    if (!rule) return this.add(addr, len, nh);
    rule.nh = nh;
    return "ok";
  }

  delete(addr: bigint, len: number): RouteResult {
    return this.checkPrefix(addr, len) ?? (this.rules.delete(key(addr, len)) ? "ok" : "not-found");
  }

  get(addr: bigint, len: number): number | RouteResult {
    return this.checkPrefix(addr, len) ?? this.rules.get(key(addr, len))?.nh ?? "not-found";
  }

  /** Next hop of the longest rule covering addr, or -1. */
  lookup(addr: bigint): number {
    let best = -1;
    let bestLen = -1;
    for (const rule of this.rules.values()) {
      if (rule.len > bestLen && (addr & prefixMask6(rule.len)) === rule.addr) {
        best = rule.nh;
        bestLen = rule.len;
      }
    }
    return best;
  }

  private add(addr: bigint, len: number, nh: number): RouteResult {
    if (this.rules.size >= this.limits.maxRules) return "full-rules";
    this.rules.set(key(addr, len), { addr, len, nh });
    return "ok";
  }

  private checkPrefix(addr: bigint, len: number): RouteResult | undefined {
    if (!Number.isInteger(len) || len < 0 || len > 128) return "bad-length";
    return (addr & ~prefixMask6(len)) !== 0n ? "bad-prefix" : undefined;
  }

  private checkNextHop(nh: number): RouteResult | undefined {
    return Number.isInteger(nh) && nh >= 0 && nh < this.limits.maxNextHops ? undefined : "bad-next-hop";
  }
}

/** A uniform 128-bit number from four u32 draws. */
export function random128(next: () => number): bigint {
  return (BigInt(next()) << 96n) | (BigInt(next()) << 64n) | (BigInt(next()) << 32n) | BigInt(next());
}

/**
 * count distinct rules: lengths uniform over 0..128, addresses and next hops uniform (a repeated
 * rule is redrawn, so the few short prefixes run out). Shared by the tests and the benchmarks.
 */
export function randomRules6(count: number, maxNextHops: number, next: () => number): Rule6[] {
  const seen = new Set<string>();
  const rules: Rule6[] = [];
  while (rules.length < count) {
    const len = next() % 129;
    const addr = random128(next) & prefixMask6(len);
    if (seen.has(key(addr, len))) continue;
    seen.add(key(addr, len));
    rules.push({ addr, len, nh: next() % maxNextHops });
  }
  return rules;
}
