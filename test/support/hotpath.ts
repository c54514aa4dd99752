// A hot path set up the way a worker has it (shared memory, route table, context, one batch),
// with helpers that load packets into the batch and read results back by slot.
import { Arena } from "../../src/hotpath/arena.js";
import { PacketBatch } from "../../src/hotpath/batch.js";
import { DataplaneContext } from "../../src/hotpath/context.js";
import { HotPath, createHotPathMemory } from "../../src/hotpath/module.js";
import { RouteTable, type RouteTableSize } from "../../src/hotpath/route-table.js";
import { RouteTable6 } from "../../src/hotpath/route-table6.js";
import { RefIcmpBucket } from "../reference/icmp-rate.js";

export interface Rig {
  hp: HotPath;
  arena: Arena;
  routes: RouteTable;
  /** With `ipv6` only. */
  routes6?: RouteTable6;
  ctx: DataplaneContext;
  batch: PacketBatch;
  verdicts: string[];
}

export function makeRig(opts: {
  vni: number;
  mac: Uint8Array;
  size?: RouteTableSize;
  batchSize?: number;
  stride?: number;
  antiSpoof?: boolean;
  /** The TUN device takes USO (the context's CTX_FLAG_USO). */
  uso?: boolean;
  /** Route IPv6 too, with this IPv6 tunnel address. */
  ipv6?: { localAddr: bigint };
}): Rig {
  const hp = new HotPath(createHotPathMemory());
  const arena = new Arena(hp);
  const routes = new RouteTable(hp, arena, opts.size ?? { tbl8Groups: 64, maxRules: 1024, maxNextHops: 256 });
  const routes6 = opts.ipv6 ? new RouteTable6(hp, arena, { maxRules: 1024, maxNextHops: 256 }) : undefined;
  const ctx = new DataplaneContext(hp, arena, {
    routes: routes.base,
    vni: opts.vni,
    mac: opts.mac,
    antiSpoof: opts.antiSpoof ?? false,
    uso: opts.uso,
    peerSlots: 256,
    ipv6: routes6 && opts.ipv6 ? { routes: routes6.base, localAddr: opts.ipv6.localAddr } : undefined,
  });
  const batch = new PacketBatch(hp, arena, opts.batchSize ?? 64, opts.stride ?? 2048);
  return { hp, arena, routes, routes6, ctx, batch, verdicts: hp.verdictNames() };
}

/** A descriptor after a hot-path call, with its verdict by name. */
export interface SlotResult {
  slot: number;
  verdict: string;
  bytes: Uint8Array;
  addr: number;
  port: number;
  aux: number;
}

/** Copies packets into the batch; `from` sets each descriptor's ADDR, as a socket receive would. */
export function loadBatch(rig: Rig, packets: Uint8Array[], from?: number[]): void {
  rig.batch.load(packets);
  if (from) {
    const d = rig.batch.descView();
    const stride = rig.hp.constant("DESC_BYTES") >> 2;
    from.forEach((a, i) => (d[i * stride + (rig.hp.constant("DESC_ADDR") >> 2)] = a));
  }
}

export function readBatch(rig: Rig, n: number): SlotResult[] {
  return rig.batch.read(n).map((r) => ({
    slot: r.slot,
    verdict: rig.verdicts[r.verdict],
    bytes: r.bytes,
    addr: r.addr,
    port: r.port,
    aux: r.aux,
  }));
}

/**
 * The send path without offloads on the rig's batch of n packets, results in place: sends |
 * replies << 16 (the single-segment case of encapBatch).
 */
export function encapInPlace(rig: Rig, format: "vxlan" | "udp", n: number): number {
  const { hp, ctx, batch } = rig;
  return hp.fn.encapBatch(ctx.ptr, batch.descs, n, hp.wireFormat(format), 0, batch.descs, 0, 0);
}

/**
 * The clock of the rig's ICMP error bucket (ms, u32) as a worker sets it before each send batch,
 * and a reference bucket that reads the same clock.
 */
export function icmpClock(rig: Rig) {
  const ref = new RefIcmpBucket();
  const clock = new Uint32Array(rig.hp.memory.buffer, rig.ctx.icmpBucket + rig.hp.constant("ICMP_BUCKET_NOW"), 1);
  return {
    /** Moves the clock `ms` on (modulo 2^32: a large `ms` moves it back). */
    advance(ms: number): void {
      clock[0] += ms;
    },
    /** The reference results of the next batch, `ms` after the one before, after the rate limit. */
    limit<T extends { verdict: string }>(results: T[], ms: number) {
      clock[0] += ms;
      return ref.limit(results, clock[0]);
    },
  };
}

/** The receive path without offloads on the rig's batch of n datagrams, in place: the packets to write. */
export function decapInPlace(rig: Rig, format: "vxlan" | "udp", n: number): number {
  const { hp, ctx, batch } = rig;
  return hp.fn.decapBatch(ctx.ptr, batch.descs, n, hp.wireFormat(format), 0, 0, batch.descs, batch.size, 0, 0);
}
