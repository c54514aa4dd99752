// Reference IPv6 route table, the plain way (lpm.ts's PrefixRuleTable over bigint addresses).
import { prefixMask6 } from "../../src/net/ipv6.js";
import { distinctRules, PrefixRuleTable, type PrefixFamily } from "./lpm.js";

export interface Rule6 {
  addr: bigint;
  len: number;
  nh: number;
}

export interface Route6Limits {
  maxRules: number;
  maxNextHops: number;
}

const IPV6: PrefixFamily<bigint> = {
  maxLen: 128,
  network: (addr, len) => addr & prefixMask6(len),
  hostBits: (addr, len) => (addr & ~prefixMask6(len)) !== 0n,
};

/** The IPv6 reference: no capacity rule but the rule count. */
export class ReferenceRouteTable6 extends PrefixRuleTable<bigint> {
  constructor(limits: Route6Limits) {
    super(IPV6, limits);
  }

  /** Rules longer than len (the Wasm trie holds a node for each at most, plus branches). */
  countLongerThan(len: number): number {
    return this.list().filter((r) => r.len > len).length;
  }

  /** /16s with 1..most rules longer than /16 (the Wasm table answers each with range leaves). */
  sixteensWithLongRules(most: number): number {
    const perSixteen = new Map<bigint, number>();
    for (const r of this.list())
      if (r.len > 16) perSixteen.set(r.addr >> 112n, (perSixteen.get(r.addr >> 112n) ?? 0) + 1);
    return [...perSixteen.values()].filter((n) => n <= most).length;
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
  return distinctRules(count, maxNextHops, next, () => {
    const len = next() % 129;
    return { addr: random128(next) & prefixMask6(len), len };
  });
}
