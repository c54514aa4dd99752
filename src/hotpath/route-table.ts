// The route table (assembly/route/) seen from TypeScript: the control side's writer API. Routes
// map IPv4 prefixes to next-hop indices; next hops say where a peer is (underlay address, UDP
// port, VTEP MAC). Every change is published to the worker threads by the table's seqlock.
import { WeftError } from "../errors.js";
import { formatPrefix, macHalves, type Ipv4Prefix } from "../net/ipv4.js";
import type { Arena } from "./arena.js";
import type { HotPath } from "./module.js";

export interface RouteTableSize {
  /** tbl8 groups: one per /24 that holds prefixes longer than /24. */
  tbl8Groups: number;
  maxRules: number;
  maxNextHops: number;
}

export interface NextHopRecord {
  /** Underlay IPv4 address (number). */
  ip: number;
  port: number;
  /** VTEP MAC, 6 bytes (VXLAN); zeros for the udp backend. */
  mac: Uint8Array;
}

export const DEFAULT_ROUTE_TABLE_SIZE: RouteTableSize = { tbl8Groups: 1024, maxRules: 16384, maxNextHops: 4096 };

export class RouteTable {
  /** Offset of the table in hot-path memory (for contexts). */
  readonly base: number;
  private readonly check: RouteStatusCheck;

  constructor(
    private readonly hp: HotPath,
    arena: Arena,
    size: RouteTableSize = DEFAULT_ROUTE_TABLE_SIZE,
    /** Where the table's region comes from (the dataplane puts it on huge pages); default the arena. */
    alloc: (bytes: number, alignment: number) => number = (bytes, alignment) => arena.alloc(bytes, alignment),
  ) {
    const bytes = hp.fn.routeTableSize(size.tbl8Groups, size.maxRules, size.maxNextHops);
    if (bytes <= 0) {
      throw new WeftError("HOTPATH_ROUTE_TABLE_SIZE", `route table sizes out of range: ${JSON.stringify(size)}`);
    }
    this.base = alloc(bytes, hp.constant("ROUTE_TABLE_ALIGN"));
    this.check = routeStatusCheck(hp, "route table");
    this.check(hp.fn.routeTableInit(this.base, size.tbl8Groups, size.maxRules, size.maxNextHops), "init");
  }

  insert(p: Ipv4Prefix, nextHop: number): void {
    this.check(this.hp.fn.routeInsert(this.base, p.addr, p.len, nextHop), `insert ${formatPrefix(p)}`);
  }

  replace(p: Ipv4Prefix, nextHop: number): void {
    this.check(this.hp.fn.routeReplace(this.base, p.addr, p.len, nextHop), `replace ${formatPrefix(p)}`);
  }

  delete(p: Ipv4Prefix): void {
    this.check(this.hp.fn.routeDelete(this.base, p.addr, p.len), `delete ${formatPrefix(p)}`);
  }

  /** Exact match: the next hop of this very prefix, or undefined. */
  get(p: Ipv4Prefix): number | undefined {
    const r = this.hp.fn.routeGet(this.base, p.addr, p.len);
    return r < 0 ? undefined : r;
  }

  /** Longest-prefix match: next hop for an address, or undefined. */
  lookup(addr: number): number | undefined {
    const r = this.hp.fn.routeLookup(this.base, addr);
    return r < 0 ? undefined : r;
  }

  get count(): number {
    return this.hp.fn.routeCount(this.base);
  }

  setNextHop(i: number, nh: NextHopRecord): void {
    const r = this.hp.fn.nextHopSet(this.base, i, nh.ip, nh.port, ...macHalves(nh.mac));
    this.check(r, `set next hop ${i}`);
  }

  clearNextHop(i: number): void {
    this.check(this.hp.fn.nextHopClear(this.base, i), `clear next hop ${i}`);
  }
}

/** Throws a route-table call's status, when below zero, as HOTPATH_<its ROUTE_ERR_ name>, saying what failed. */
export type RouteStatusCheck = (status: number, what: string) => void;

/** The status check of `table` (its name in messages); both families share the codes of assembly/route/codes.ts. */
export function routeStatusCheck(hp: HotPath, table: string): RouteStatusCheck {
  const names = new Map<number, `ROUTE_ERR_${string}`>();
  for (const name of [
    "ROUTE_ERR_NOT_FOUND",
    "ROUTE_ERR_EXISTS",
    "ROUTE_ERR_BAD_PREFIX",
    "ROUTE_ERR_BAD_LENGTH",
    "ROUTE_ERR_BAD_NEXT_HOP",
    "ROUTE_ERR_FULL_RULES",
    "ROUTE_ERR_FULL_TBL8",
    "ROUTE_ERR_BAD_FIELD",
    "ROUTE_ERR_BAD_REGION",
  ] as const) {
    names.set(hp.constant(name), name);
  }
  return (status, what) => {
    if (status >= 0) return;
    const name = names.get(status) ?? (`ROUTE_ERR_${status}` as const);
    throw new WeftError(
      `HOTPATH_${name}`,
      `${table}: ${what} failed with ${name} (meanings in assembly/route/codes.ts)`,
    );
  };
}
