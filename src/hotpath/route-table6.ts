// The IPv6 route table (assembly/route6/) seen from TypeScript: the control side's writer API, as
// RouteTable (route-table.ts) is for IPv4. Prefixes and addresses are bigints (src/net/ipv6.ts);
// they cross into Wasm as 16 bytes in a scratch slot of the hot-path memory. Next hops hold a
// 16-byte underlay address (an IPv4 underlay as ::ffff:a.b.c.d), port and VTEP MAC.
import { WeftError } from "../errors.js";
import { macHalves } from "../net/ipv4.js";
import { formatPrefix6, writeIpv6, type Ipv6Prefix } from "../net/ipv6.js";
import type { Arena } from "./arena.js";
import type { HotPath } from "./module.js";
import { routeStatusCheck, type RouteStatusCheck } from "./route-table.js";

export interface RouteTable6Size {
  maxRules: number;
  maxNextHops: number;
}

export interface NextHop6Record {
  /** Underlay address: IPv6, or IPv4 mapped (::ffff:a.b.c.d). */
  ip: bigint;
  port: number;
  /** VTEP MAC, 6 bytes. */
  mac: Uint8Array;
}

export const DEFAULT_ROUTE_TABLE6_SIZE: RouteTable6Size = { maxRules: 16384, maxNextHops: 4096 };

export class RouteTable6 {
  /** Offset of the table in hot-path memory (for contexts). */
  readonly base: number;
  /** 16 bytes where addresses are written for the module to read. */
  private readonly scratch: number;
  private readonly check: RouteStatusCheck;

  constructor(
    private readonly hp: HotPath,
    arena: Arena,
    size: RouteTable6Size = DEFAULT_ROUTE_TABLE6_SIZE,
    /** Where the table's region comes from (the dataplane puts it on huge pages); default the arena. */
    alloc: (bytes: number, alignment: number) => number = (bytes, alignment) => arena.alloc(bytes, alignment),
  ) {
    const bytes = hp.fn.route6TableSize(size.maxRules, size.maxNextHops);
    if (bytes <= 0) {
      throw new WeftError(
        "HOTPATH_ROUTE_TABLE_SIZE",
        `IPv6 route table sizes out of range: ${JSON.stringify(size)} (rules 1..2^22, next hops 1..2^24)`,
      );
    }
    this.base = alloc(bytes, hp.constant("ROUTE6_TABLE_ALIGN"));
    this.scratch = arena.alloc(16, 16);
    this.check = routeStatusCheck(hp, "IPv6 route table");
    this.check(hp.fn.route6TableInit(this.base, size.maxRules, size.maxNextHops), "init");
  }

  insert(p: Ipv6Prefix, nextHop: number): void {
    this.check(this.hp.fn.route6Insert(this.base, this.put(p.addr), p.len, nextHop), `insert ${formatPrefix6(p)}`);
  }

  replace(p: Ipv6Prefix, nextHop: number): void {
    this.check(this.hp.fn.route6Replace(this.base, this.put(p.addr), p.len, nextHop), `replace ${formatPrefix6(p)}`);
  }

  delete(p: Ipv6Prefix): void {
    this.check(this.hp.fn.route6Delete(this.base, this.put(p.addr), p.len), `delete ${formatPrefix6(p)}`);
  }

  /** Exact match: the next hop of this very prefix, or undefined. */
  get(p: Ipv6Prefix): number | undefined {
    const r = this.hp.fn.route6Get(this.base, this.put(p.addr), p.len);
    return r < 0 ? undefined : r;
  }

  /** Longest-prefix match: next hop for an address, or undefined. */
  lookup(addr: bigint): number | undefined {
    const r = this.hp.fn.route6Lookup(this.base, this.put(addr));
    return r < 0 ? undefined : r;
  }

  get count(): number {
    return this.hp.fn.route6Count(this.base);
  }

  setNextHop(i: number, nh: NextHop6Record): void {
    this.check(
      this.hp.fn.nextHop6Set(this.base, i, this.put(nh.ip), nh.port, ...macHalves(nh.mac)),
      `set next hop ${i}`,
    );
  }

  clearNextHop(i: number): void {
    this.check(this.hp.fn.nextHop6Clear(this.base, i), `clear next hop ${i}`);
  }

  private put(addr: bigint): number {
    writeIpv6(this.hp.bytes(), this.scratch, addr);
    return this.scratch;
  }
}
